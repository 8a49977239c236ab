//! Messages that ask the parser for too much, against the reference CRM behind the real
//! `maschera serve` with its access log on (so an unrestricted user's statements are parsed too):
//! a 60,000-term sum, a 20,000-term `UNION ALL` chain, deep parentheses, deeply nested CTEs and a
//! 3.6 MB Query of 400,000 statements, from a restricted (`sam`, sales) and an unrestricted
//! (`dora`, dpo) user, through the simple and the extended protocol. Each gets its 54001/54000 (or
//! its answer where it is within the bounds), the proxy stays up, the session goes on, and another
//! user's session is answered meanwhile; a heavy message within the bounds is parsed off the session
//! threads, so another session's `SELECT 1` is answered before it finishes.
//! Not for: the bounds' arithmetic (unit tests in `policy::rewrite::limits`).

use maschera_tests::{CrmProxy, Fixture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres::Client;

/// How long an answer may take before the test calls the proxy stuck (generous: a debug build on a
/// shared machine).
const STUCK: Duration = Duration::from_secs(120);

struct Crm {
    crm: CrmProxy,
}

async fn start() -> Crm {
    let crm = Fixture::crm(60)
        .user(("sara", "sales", &[("region", "south")]))
        .access_log("parse-limits")
        .start()
        .await
        .expect("start the CRM");
    Crm { crm }
}

impl Crm {
    async fn connect(&self, user: &str) -> Client {
        maschera_tests::connect(&self.crm.uri(user))
            .await
            .expect("connect")
    }

    fn alive(&mut self) {
        let exited = self.crm.proxy.wait_exit(Duration::from_millis(1));
        assert!(exited.is_err(), "the proxy exited: {exited:?}");
    }
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Simple,
    Extended,
}

/// Runs `sql` and returns the SQLSTATE of its error, or `None` when it ran.
async fn outcome(client: &Client, sql: &str, protocol: Protocol) -> Option<String> {
    let result = match protocol {
        Protocol::Simple => client.simple_query(sql).await.map(drop),
        Protocol::Extended => client.prepare(sql).await.map(drop),
    };
    result.err().map(|err| {
        let code = err.code().map(|c| c.code().to_owned());
        let message = err.as_db_error().map(|e| e.message().to_owned());
        if let Some(message) = &message {
            assert!(message.len() < 1000, "the error repeats the statement");
        }
        code.unwrap_or_else(|| panic!("not an ErrorResponse: {err}"))
    })
}

async fn select_one(client: &Client) {
    let row = tokio::time::timeout(STUCK, client.query_one("SELECT 1", &[]))
        .await
        .expect("SELECT 1 answered")
        .expect("SELECT 1 succeeds");
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// The heavy messages: (what, text, the SQLSTATE it gets, or None when it runs). Each names a
/// policy table, so the unrestricted user's access log parses it too.
fn heavy_messages() -> Vec<(&'static str, String, Option<&'static str>)> {
    let mut cte_chain = String::from("WITH c0 AS (SELECT count(*) AS n FROM contacts)");
    for i in 1..300 {
        cte_chain.push_str(&format!(", c{i} AS (SELECT n FROM c{})", i - 1));
    }
    cte_chain.push_str(" SELECT n FROM c299");
    vec![
        (
            "a 60,000-term sum",
            format!("SELECT 1{} FROM contacts", "+1".repeat(59_999)),
            Some("54001"),
        ),
        (
            "a 20,000-term UNION ALL chain",
            format!(
                "SELECT id FROM contacts{}",
                " UNION ALL SELECT id FROM contacts".repeat(19_999)
            ),
            Some("54001"),
        ),
        (
            "10,000 nested parentheses",
            format!(
                "SELECT {}1{} FROM contacts",
                "(".repeat(10_000),
                ")".repeat(10_000)
            ),
            Some("54001"),
        ),
        (
            "1,000 nested CTEs",
            format!(
                "{}SELECT id FROM contacts{}",
                "SELECT * FROM (WITH a AS (".repeat(1_000),
                ") SELECT * FROM a) s".repeat(1_000)
            ),
            Some("54001"),
        ),
        ("a chain of 300 CTEs", cte_chain, None),
        (
            "a 3.6 MB Query of 400,000 statements",
            format!(
                "{}SELECT count(*) FROM contacts",
                "SELECT 1;".repeat(400_000)
            ),
            Some("54000"),
        ),
    ]
}

#[tokio::test]
async fn heavy_messages_are_refused_by_their_bound_for_every_role_and_protocol() {
    let mut crm = start().await;
    let bystander = crm.connect("sara").await;
    for user in ["sam", "dora"] {
        for protocol in [Protocol::Simple, Protocol::Extended] {
            let client = crm.connect(user).await;
            for (what, sql, expected) in heavy_messages() {
                let got = tokio::time::timeout(STUCK, outcome(&client, &sql, protocol))
                    .await
                    .unwrap_or_else(|_| panic!("{user} {protocol:?} {what}: no answer"));
                assert_eq!(got.as_deref(), expected, "{user} {protocol:?} {what}");
                crm.alive();
                // The session goes on, and so does another user's.
                select_one(&client).await;
                select_one(&bystander).await;
            }
        }
    }
}

#[tokio::test]
async fn refusals_name_the_bound_and_the_access_log_user_keeps_working() {
    let crm = start().await;
    let client = crm.connect("dora").await;
    let sum = format!("SELECT 1{} FROM contacts", "+1".repeat(59_999));
    let err = client.simple_query(&sum).await.unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "54001");
    assert!(db.message().contains("max_operators"), "{}", db.message());
    let many = "SELECT 1 FROM contacts;".repeat(10_001);
    let err = client.batch_execute(&many).await.unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "54000");
    assert!(db.message().contains("max_statements"), "{}", db.message());
    // Within the bounds, the same role's statements run.
    let rows = client
        .query("SELECT count(*) FROM contacts WHERE 1+1+1 = 3", &[])
        .await
        .expect("runs");
    assert_eq!(rows[0].get::<_, i64>(0), 60);
}

/// A message within the bounds that takes long to analyse (4,000 statements) keeps a parse
/// thread busy, not the session threads: another user's twenty `SELECT 1`, sent after it one after
/// the other, are answered before it. (Before the parse threads, the worker thread analysed it and
/// every session waited.)
#[tokio::test]
async fn a_long_analysis_does_not_stall_other_sessions() {
    let crm = start().await;
    for (heavy_user, other_user) in [("sam", "sara"), ("dora", "sara")] {
        let heavy = crm.connect(heavy_user).await;
        let other = crm.connect(other_user).await;
        // Warm the other session's statement into the cache and its connection up.
        select_one(&other).await;
        let text = format!(
            "{}SELECT * FROM health_records",
            "SELECT first_name, city FROM contacts WHERE id = 1 AND city <> 'x';".repeat(4_000)
        );
        let done = Arc::new(AtomicBool::new(false));
        let heavy_task = {
            let done = done.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = heavy.batch_execute(&text).await;
                println!(
                    "{heavy_user}: the heavy message took {:?}",
                    started.elapsed()
                );
                done.store(true, Ordering::SeqCst);
                (heavy, result)
            })
        };
        // Give the heavy message time to reach the proxy (no timing is asserted).
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Twenty round trips one after the other: had the analysis held the session threads, the
        // first would wait for it, and the heavy message's answer, which comes right after it,
        // would arrive before the last.
        for _ in 0..20 {
            select_one(&other).await;
        }
        assert!(
            !done.load(Ordering::SeqCst),
            "{heavy_user}: the heavy message finished before another session's twenty SELECT 1"
        );
        let (heavy, result) = tokio::time::timeout(STUCK, heavy_task)
            .await
            .expect("the heavy message is answered")
            .unwrap();
        let code = result
            .err()
            .and_then(|e| e.code().map(|c| c.code().to_owned()));
        match heavy_user {
            // Sales may not read health records: the whole text is refused.
            "sam" => assert_eq!(code.as_deref(), Some("42501")),
            // The DPO may: it all runs.
            _ => assert_eq!(code, None),
        }
        select_one(&heavy).await;
    }
}

/// One user's many sessions cannot occupy every parse thread: while several sessions of `sam` send
/// long analyses, another user's statement that needs parsing is answered first.
#[tokio::test]
async fn one_users_many_sessions_do_not_take_every_parse_thread() {
    let crm = start().await;
    let other = crm.connect("sara").await;
    let done = Arc::new(AtomicBool::new(false));
    let mut heavy = Vec::new();
    for _ in 0..4 {
        let client = crm.connect("sam").await;
        let done = done.clone();
        let text = format!(
            "{}SELECT 2",
            "SELECT first_name, city FROM contacts WHERE id = 1 AND city <> 'x';".repeat(4_000)
        );
        heavy.push(tokio::spawn(async move {
            let result = client.batch_execute(&text).await;
            done.store(true, Ordering::SeqCst);
            result
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Not in the rewrite cache: it needs a parse thread.
    let rows = tokio::time::timeout(
        STUCK,
        other.simple_query("SELECT count(*) FROM contacts WHERE 7 = 7"),
    )
    .await
    .expect("answered")
    .expect("runs");
    assert!(!rows.is_empty());
    // And twenty round trips more (see `a_long_analysis_does_not_stall_other_sessions`).
    for _ in 0..20 {
        select_one(&other).await;
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "a heavy message finished before the other user's statement"
    );
    for task in heavy {
        tokio::time::timeout(STUCK, task)
            .await
            .expect("answered")
            .unwrap()
            .expect("runs");
    }
}
