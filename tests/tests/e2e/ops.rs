//! Operations: session limits per user and per role (53300 at login, before PostgreSQL is asked),
//! the statement rate per user, operational logs that hold no statement text or literal even at
//! `trace`, refusals seen at info, in the metrics by role and SQLSTATE and in PostgreSQL's own log
//! with their SQLSTATE and message, and the demo's private files and its PostgreSQL that does not
//! outlive it (SIGKILL).

use crate::demo::{Demo, processes_naming, send};
use crate::wire::http_get;
use maschera_tests::{Fixture, PgServer, PgServerOptions, Proxy, ProxyOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const PASSWORD: &str = "ops-test-Passw0rd!x";

fn user(name: &str, role: &str) -> (String, String, String) {
    (name.into(), PASSWORD.into(), role.into())
}

/// The SQLSTATE and message of a failed connection or statement.
fn db_error(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an error from the server: {err}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

async fn login(proxy: &Proxy, name: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &proxy.uri_as(name, PASSWORD, "postgres"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The proxy in front of `pg` with `users` (all with [`PASSWORD`]) and these `[limits]` lines.
fn proxy_with(pg: &PgServer, users: &[(&str, &str)], limits: &str) -> Proxy {
    let users = users.iter().map(|(name, role)| user(name, role)).collect();
    let options = ProxyOptions {
        users,
        limits: limits.into(),
        ..ProxyOptions::default()
    };
    Proxy::start(pg, options).unwrap()
}

/// `count` sessions of `name`, each of which must log in.
async fn logins(proxy: &Proxy, name: &str, count: usize) -> Vec<Client> {
    let mut sessions = Vec::new();
    for _ in 0..count {
        sessions.push(login(proxy, name).await.unwrap());
    }
    sessions
}

/// Whether `log` has `word` as a whole word.
fn names(log: &str, word: &str) -> bool {
    log.split(|c: char| !c.is_alphanumeric()).any(|w| w == word)
}

async fn refused_login(proxy: &Proxy, name: &str) -> (String, String) {
    match login(proxy, name).await {
        Ok(_) => panic!("{name} logged in beyond the limit"),
        Err(err) => db_error(&err),
    }
}

/// Sessions PostgreSQL holds for the proxy's login (the superuser) now, besides this one.
fn upstream_sessions(pg: &PgServer) -> i64 {
    pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND pid <> pg_backend_pid()",
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test]
async fn sessions_beyond_the_limits_of_a_user_or_a_role_get_53300_before_postgres_is_asked() {
    let pg = PgServer::start().unwrap();
    let users = [("alice", "sales"), ("bob", "sales"), ("dora", "dpo")];
    let limits = "max_sessions_per_user = 3\nmax_sessions_per_role = 5";
    let proxy = proxy_with(&pg, &users, limits);
    let mut alice = logins(&proxy, "alice", 3).await;
    let (code, message) = refused_login(&proxy, "alice").await;
    assert_eq!(code, "53300");
    assert_eq!(
        message,
        "too many connections for user \"alice\" (limit 3, [limits] max_sessions_per_user)"
    );
    let bob = logins(&proxy, "bob", 2).await;
    let (code, message) = refused_login(&proxy, "bob").await;
    assert_eq!(code, "53300");
    assert_eq!(
        message,
        "too many connections for role \"sales\" (limit 5, [limits] max_sessions_per_role)"
    );
    // Another role keeps its room, and the refused logins never reached PostgreSQL.
    let dora = login(&proxy, "dora").await.unwrap();
    assert_eq!(upstream_sessions(&pg), 6);
    // A session that ends gives its place back.
    drop(alice.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        match login(&proxy, "alice").await {
            Ok(client) => break client,
            Err(err) if Instant::now() < deadline => {
                assert_eq!(db_error(&err).0, "53300");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("alice's place did not come back: {err}"),
        }
    };
    let one: i32 = again.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let log = proxy.log();
    assert!(log.contains("login refused by a session limit"), "{log}");
    assert!(
        !names(&log, "alice") && !names(&log, "bob"),
        "user names in the log:\n{log}"
    );
    drop((bob, dora));
}

#[tokio::test]
async fn by_default_one_user_gets_half_of_postgres_and_others_keep_room() {
    // 20 slots, 3 of them reserved for superusers: 8 per user, 12 per role.
    let pg = PgServer::start_with(PgServerOptions {
        settings: vec!["max_connections = 20".into()],
        ..PgServerOptions::default()
    })
    .unwrap();
    let proxy = proxy_with(&pg, &[("alice", "sales"), ("dora", "dpo")], "");
    let _alice = logins(&proxy, "alice", 8).await;
    let (code, message) = refused_login(&proxy, "alice").await;
    assert_eq!(code, "53300");
    assert!(
        message.contains("(limit 8, [limits] max_sessions_per_user)"),
        "{message}"
    );
    let _dora = logins(&proxy, "dora", 4).await;
}

#[tokio::test]
async fn statements_beyond_the_rate_of_a_user_get_53300_and_the_session_goes_on() {
    let pg = PgServer::start().unwrap();
    let limits = "max_statements_per_second_per_user = 3";
    let proxy = proxy_with(&pg, &[("alice", "sales")], limits);
    let client = login(&proxy, "alice").await.unwrap();
    let mut refused = None;
    for _ in 0..10 {
        if let Err(err) = client.simple_query("SELECT 1").await {
            refused = Some(db_error(&err));
            break;
        }
    }
    let (code, message) = refused.expect("10 statements at once within a rate of 3 per second");
    assert_eq!(code, "53300");
    assert_eq!(
        message,
        "too many statements per second for this user (limit 3, [limits] max_statements_per_second_per_user)"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// Distinctive literals; none may appear in the proxy's log.
const LITERAL: &str = "zqlit";

#[tokio::test]
async fn trace_logs_hold_no_statement_text_or_literal_of_any_role() {
    let crm = Fixture::crm(50)
        .config(|proxy| proxy.log_level = "trace".into())
        .start()
        .await
        .unwrap();
    let sam = maschera_tests::connect(&crm.uri("sam")).await.unwrap();
    let dora = maschera_tests::connect(&crm.uri("dora")).await.unwrap();
    sam.simple_query(&format!(
        "SELECT count(*) FROM contacts WHERE email = '{LITERAL}-simple@example.invalid'"
    ))
    .await
    .unwrap();
    sam.query(
        "SELECT count(*) FROM contacts WHERE last_name = $1",
        &[&format!("{LITERAL}-param")],
    )
    .await
    .unwrap();
    let refused = sam
        .simple_query(&format!(
            "SELECT * FROM health_records WHERE notes = '{LITERAL}-refused'"
        ))
        .await
        .unwrap_err();
    assert_eq!(db_error(&refused).0, "42501");
    let unparsable = sam
        .simple_query(&format!("SELECT '{LITERAL}-unparsable' '{LITERAL}-x' FROM"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&unparsable).0, "0A000");
    dora.simple_query(&format!("SELECT '{LITERAL}-unrestricted@example.invalid'"))
        .await
        .unwrap();
    dora.query("SELECT $1::text", &[&format!("{LITERAL}-dora-param")])
        .await
        .unwrap();
    let failed = dora
        .simple_query(&format!("SELECT '{LITERAL}-cast'::int"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&failed).0, "22P02");
    drop((sam, dora));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = crm.proxy.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the proxy did not log at trace:\n{log}"
    );
    assert!(log.contains("statement refused"), "{log}");
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(LITERAL)).collect();
    assert!(
        leaks.is_empty(),
        "literals in the log:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test]
async fn a_refusal_is_logged_at_info_counted_by_role_and_sqlstate_and_postgres_logs_its_sqlstate() {
    let crm = Fixture::crm(50)
        .pg(|pg| pg.settings = vec!["log_error_verbosity = verbose".into()])
        .config(|proxy| {
            proxy.log_level = "info".into();
            proxy.metrics = true;
        })
        .start()
        .await
        .unwrap();
    let sam = maschera_tests::connect(&crm.uri("sam")).await.unwrap();
    let refused = sam
        .simple_query("SELECT * FROM health_records")
        .await
        .unwrap_err();
    let (code, message) = db_error(&refused);
    assert_eq!(code, "42501");
    assert!(message.contains("health_records"), "{message}");
    // In a transaction the refusal aborts it, as any error does.
    sam.batch_execute("BEGIN").await.unwrap();
    let refused = sam
        .simple_query("SELECT notes FROM health_records")
        .await
        .unwrap_err();
    assert_eq!(db_error(&refused), (code.clone(), message.clone()));
    let aborted = sam.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&aborted).0, "25P02");
    sam.batch_execute("ROLLBACK").await.unwrap();
    let one: i32 = sam.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    let log = crm.proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("statement refused"))
        .unwrap_or_else(|| panic!("no refusal at info:\n{log}"));
    for part in [
        " INFO ",
        "session{id=",
        "role=\"sales\"",
        "sqlstate=\"42501\"",
        "health_records",
    ] {
        assert!(line.contains(part), "{part} missing in: {line}");
    }
    // Who it was is in the access log, by the session's id; user names stay out of this log.
    assert!(!names(&log, "sam"), "a user name in the log:\n{log}");

    let metrics = http_get(crm.proxy.metrics_port().unwrap(), "/metrics").await;
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("maschera_refusals_total{")
                && l.contains("reason=\"statement\"")
                && l.contains("role=\"sales\"")
                && l.contains("sqlstate=\"42501\"")
        })
        .unwrap_or_else(|| panic!("no refusal counter by role and SQLSTATE:\n{metrics}"));
    assert!(counted.ends_with(" 2"), "{counted}");

    let server_log = std::fs::read_to_string(crm.pg.dir().join("server.log")).unwrap();
    assert!(
        server_log.contains(&format!("ERROR:  42501: {message}")),
        "PostgreSQL's log does not show the refusal:\n{server_log}"
    );
    assert!(
        !server_log.contains("syntax error"),
        "PostgreSQL's log shows a syntax error:\n{server_log}"
    );

    // Refused in the extended protocol: PostgreSQL runs the same raise through Parse/Bind/Execute
    // and logs the refusal's SQLSTATE and message, never a syntax error; the client sees one error
    // for its statement and the session goes on.
    let refused = sam
        .query(
            "SELECT condition FROM health_records WHERE id = $1",
            &[&1i64],
        )
        .await
        .unwrap_err();
    let (code, message) = db_error(&refused);
    assert_eq!(code, "42501");
    let prepared = sam.prepare("SELECT notes FROM health_records").await;
    assert_eq!(db_error(&prepared.unwrap_err()).0, "42501");
    let one: i32 = sam
        .query_one("SELECT $1::int", &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    let server_log = std::fs::read_to_string(crm.pg.dir().join("server.log")).unwrap();
    assert!(
        server_log.contains(&format!("ERROR:  42501: {message}")),
        "PostgreSQL's log does not show the extended-protocol refusal:\n{server_log}"
    );
    assert!(
        !server_log.contains("syntax error"),
        "PostgreSQL's log shows a syntax error:\n{server_log}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The upstream port of the demo's PostgreSQL, from its superuser URI.
fn port_of(uri: &str) -> u16 {
    let after_host = uri.rsplit_once(':').unwrap().1;
    after_host.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn demo_keeps_its_secrets_private_serves_300_sessions_of_one_user_and_dies_with_sigkill() {
    let mut demo = Demo::start();
    let dir = demo.dir().to_path_buf();
    assert_eq!(
        mode(&dir),
        0o700,
        "the demo folder (also PostgreSQL's socket directory)"
    );
    assert!(
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".s.PGSQL.")),
        "the socket is in the demo folder"
    );
    for secret in [
        "pwfile",
        "maschera.toml",
        "users.toml",
        "credentials.toml",
        "tls-key.pem",
        "audit.key",
        "audit-signing.key",
    ] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }

    // A few hundred sessions of one user are not refused.
    let uri = demo.user("sam").uri.clone();
    let mut sessions = Vec::new();
    for _ in 0..30 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let uri = uri.clone();
                tokio::spawn(async move { maschera_tests::connect(&uri).await })
            })
            .collect();
        for client in batch {
            sessions.push(client.await.unwrap().expect("a session of sam"));
        }
    }
    let one: i32 = sessions[299]
        .query_one("SELECT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    drop(sessions);

    let port = port_of(&demo.facts.upstream);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    send(&demo.child, libc::SIGKILL);
    let _ = demo.child.wait();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let running = processes_naming(&dir);
        let accepting = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if running.is_empty() && !accepting && !dir.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "15 s after SIGKILL: processes {running:?}, PostgreSQL accepting: {accepting}, folder left: {}",
            dir.exists()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
