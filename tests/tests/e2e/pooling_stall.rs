//! Transaction pooling with clients that prepare synchronously while other sessions of theirs hold
//! transactions open (issue 21's stall): a batch of named Parses and a Sync that comes between
//! transactions is answered by the proxy without a connection, so such a client never waits for a
//! connection its own other sessions hold. Raw protocol for the exact messages, and pgbench
//! `-M prepared` with more clients than threads (its `PQprepare` blocks the thread).

use bytes::BytesMut;
use maschera_tests::proxy::{raw_login, read_message};
use maschera_tests::{PgServer, Proxy, ProxyOptions, TEST_PASSWORD, TEST_USER, pg_and_proxy};
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A proxy in transaction mode with pools of `size` connections and a 10 s acquire timeout.
pub(crate) fn pooled(size: usize) -> (PgServer, Proxy) {
    pg_and_proxy(ProxyOptions {
        sections: format!(
            "[pool]\nmode = \"transaction\"\nsize = {size}\nacquire_timeout_seconds = 10\n"
        ),
        ..Default::default()
    })
}

pub(crate) fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
}

pub(crate) fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).unwrap();
    out
}

/// Bind of `statement` with text parameters, Execute and Sync.
pub(crate) fn run(statement: &str, params: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::bind(
        "",
        statement,
        std::iter::empty(),
        params.iter(),
        |param, buf| {
            buf.extend_from_slice(param.as_bytes());
            Ok(IsNull::No)
        },
        std::iter::empty(),
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    out
}

/// The messages up to and including ReadyForQuery: their types, the first column of each DataRow,
/// the SQLSTATE of each error, and the transaction status.
pub(crate) struct Answer {
    pub tags: String,
    pub values: Vec<String>,
    pub errors: Vec<String>,
    pub status: char,
}

pub(crate) async fn answer(stream: &mut TcpStream) -> Answer {
    let mut answer = Answer {
        tags: String::new(),
        values: Vec::new(),
        errors: Vec::new(),
        status: '?',
    };
    loop {
        let (tag, body) = read_message(stream).await;
        answer.tags.push(tag as char);
        match tag {
            b'D' => {
                let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                answer
                    .values
                    .push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            b'E' => {
                let code = body
                    .split(|b| *b == 0)
                    .find_map(|field| field.strip_prefix(b"C"))
                    .unwrap_or_default();
                answer
                    .errors
                    .push(String::from_utf8_lossy(code).into_owned());
            }
            b'Z' => {
                answer.status = body[0] as char;
                return answer;
            }
            _ => {}
        }
    }
}

/// The pool's one connection serves A's open transaction. B prepares two statements (Parse,
/// Parse, Sync: what libpq's `PQprepare` sends, one at a time) and is answered at once, not after
/// A's transaction (before the fix B waited for the connection, and a client whose thread also
/// runs A never ended A's transaction: both waited until the acquire timeout). B's Bind then waits
/// for A's COMMIT and runs the statement; the statement whose text is wrong fails where it is
/// first used, with PostgreSQL's error, and its name can be prepared again.
#[tokio::test(flavor = "multi_thread")]
async fn a_prepare_between_transactions_is_answered_while_other_clients_hold_every_connection() {
    let (_pg, proxy) = pooled(1);
    // Both log in alike (a pool per login, database and startup parameters).
    let mut a = raw_login(proxy.port(), TEST_USER, TEST_PASSWORD, "postgres").await;
    a.write_all(&query("BEGIN; SELECT 1")).await.unwrap();
    assert_eq!(answer(&mut a).await.status, 'T');

    let mut b = raw_login(proxy.port(), TEST_USER, TEST_PASSWORD, "postgres").await;
    let mut prepare = BytesMut::new();
    parse(&mut prepare, "add", "SELECT $1::int4 + 1");
    parse(&mut prepare, "typo", "SELEC 1");
    frontend::sync(&mut prepare);
    b.write_all(&prepare).await.unwrap();
    let prepared = tokio::time::timeout(Duration::from_secs(3), answer(&mut b))
        .await
        .expect("B's prepare is answered while A's transaction holds the pool's one connection");
    assert_eq!(prepared.tags, "11Z");
    assert_eq!(prepared.status, 'I');

    // B's statement needs the connection: it runs once A's transaction ends.
    b.write_all(&run("add", &["41"])).await.unwrap();
    let executed = tokio::spawn(async move {
        let executed = answer(&mut b).await;
        (b, executed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !executed.is_finished(),
        "B ran on the connection A's open transaction holds"
    );
    a.write_all(&query("COMMIT")).await.unwrap();
    assert_eq!(answer(&mut a).await.status, 'I');
    let (mut b, executed) = tokio::time::timeout(Duration::from_secs(5), executed)
        .await
        .expect("B is served once A committed")
        .unwrap();
    assert_eq!(executed.tags, "2DCZ");
    assert_eq!(executed.values, ["42"]);

    // The statement with the typo fails where it is used, as a syntax error, and ends cleanly.
    b.write_all(&run("typo", &[])).await.unwrap();
    let failed = answer(&mut b).await;
    assert_eq!((failed.tags.as_str(), failed.status), ("EZ", 'I'));
    assert_eq!(failed.errors, ["42601"]);
    let mut again = BytesMut::new();
    parse(&mut again, "typo", "SELECT 'fixed'");
    frontend::sync(&mut again);
    again.extend_from_slice(&run("typo", &[]));
    b.write_all(&again).await.unwrap();
    assert_eq!(answer(&mut b).await.tags, "1Z");
    assert_eq!(answer(&mut b).await.values, ["fixed"]);

    // A Describe of a statement prepared this way is answered by PostgreSQL.
    let mut describe = BytesMut::new();
    frontend::describe(b'S', "add", &mut describe).unwrap();
    frontend::sync(&mut describe);
    b.write_all(&describe).await.unwrap();
    assert_eq!(answer(&mut b).await.tags, "tTZ");
}

/// pgbench `-M prepared` with 4 clients on one thread and a pool of one connection: pgbench
/// prepares each statement with a blocking `PQprepare` the first time a client runs it, while the
/// thread's other clients may hold the connection inside their transaction. Every transaction
/// runs, none fails (before the fix the run stalled until the acquire timeout, then clients
/// failed with 53300).
#[tokio::test]
async fn pgbench_prepared_with_four_clients_on_one_thread_runs_on_a_pool_of_one() {
    let (pg, proxy) = pooled(1);
    let pgbench = |args: &[&str]| {
        Command::new(pg.bin_dir().join("pgbench"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let init = pgbench(&["-i", "-q", "-s", "1", &pg.uri("postgres")]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for round in 0..3 {
        let out = pgbench(&[
            "-M",
            "prepared",
            "-t",
            "50",
            "-c",
            "4",
            "-j",
            "1",
            &proxy.uri("postgres"),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("number of failed transactions: 0 "),
            "round {round}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 200/200"),
            "round {round}: {stdout}"
        );
    }
}
