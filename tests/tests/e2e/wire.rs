//! The proxy core with real clients: psql, pgbench, tokio-postgres and psycopg through `maschera serve`
//! in front of a private PostgreSQL; TLS on both sides, SCRAM login, lockout, cancel, limits, shutdown.

use bytes::BytesMut;
use maschera_tests::proxy::write_test_certificates;
use maschera_tests::{
    PgServer, PgServerOptions, Proxy, ProxyOptions, Ran, SUPERUSER, TEST_PASSWORD, TEST_USER,
    pg_and_proxy, psql_tuples,
};
use postgres_protocol::message::frontend;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

fn start() -> (PgServer, Proxy) {
    pg_and_proxy(ProxyOptions::default())
}

/// Runs a PostgreSQL client program (psql, pgbench) from the server's folder.
fn client_program(pg: &PgServer, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(pg.bin_dir().join(program))
        .args(args)
        .envs(env.iter().copied())
        .env("PGCONNECT_TIMEOUT", "20")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn psql_ok(conninfo: &str, args: &[&str]) -> String {
    psql_tuples(conninfo, args).ok_stdout(&format!("psql {args:?}"))
}

#[tokio::test]
async fn psql_runs_multi_statement_queries_copy_both_ways_and_describe() {
    let (_pg, proxy) = start();
    let uri = proxy.uri("postgres");
    assert_eq!(psql_ok(&uri, &["-c", "select 1; select 2"]), "1\n2\n");
    psql_ok(
        &uri,
        &[
            "-c",
            "create table people (id int primary key, name text, note text)",
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let rows: String = (1..=20000)
        .map(|i| format!("{i},name {i},\"note, with comma {i}\"\n"))
        .collect();
    std::fs::write(&input, &rows).unwrap();
    let copy_in = format!("\\copy people from '{}' csv", input.display());
    psql_ok(&uri, &["-c", &copy_in]);
    assert_eq!(
        psql_ok(&uri, &["-c", "select count(*) from people"]),
        "20000\n"
    );

    let output = dir.path().join("out.csv");
    let copy_out = format!(
        "\\copy (select * from people order by id) to '{}' csv",
        output.display()
    );
    psql_ok(&uri, &["-c", &copy_out]);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        rows,
        "COPY TO returns what COPY FROM stored"
    );

    let described = psql_ok(&uri, &["-c", "\\d people"]);
    assert!(
        described.contains("name|text"),
        "\\d shows the columns: {described}"
    );
    assert!(
        described.contains("id|integer||not null|"),
        "\\d shows the key column: {described}"
    );

    let Ran {
        ok, stderr: err, ..
    } = psql_tuples(&uri, &["-c", "select 1/0"]);
    assert!(
        !ok && err.contains("division by zero"),
        "errors pass through: {err}"
    );
    assert_eq!(
        psql_ok(&uri, &["-c", "select 'still serving'"]),
        "still serving\n"
    );
}

#[tokio::test]
async fn pgbench_runs_simple_extended_and_prepared_without_failed_transactions() {
    pgbench_through(ProxyOptions::default());
}

/// pgbench's `-M prepared` in transaction mode: its named statements are prepared on whichever
/// pooled connection serves each transaction (4 clients on pools of 2 connections).
#[tokio::test]
async fn pgbench_runs_simple_extended_and_prepared_in_transaction_mode() {
    pgbench_through(ProxyOptions {
        sections: "[pool]\nmode = \"transaction\"\nsize = 2\n".into(),
        ..Default::default()
    });
}

/// pgbench's default script, 4 clients × 250 transactions in each protocol through a proxy with
/// `options`: no failed transaction.
fn pgbench_through(options: ProxyOptions) {
    let (pg, proxy) = pg_and_proxy(options);
    let direct = pg.uri("postgres");
    let init = client_program(&pg, "pgbench", &["-i", "-q", "-s", "1", &direct], &[]);
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = client_program(
            &pg,
            "pgbench",
            &[
                "-M",
                mode,
                "-t",
                "250",
                "-c",
                "4",
                "-j",
                "2",
                &proxy.uri("postgres"),
            ],
            &[],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pgbench -M {mode}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} reports failures: {stdout}"
        );
        let processed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert_eq!(
            processed, 1000,
            "pgbench -M {mode} processed every transaction: {stdout}"
        );
        let tps = stdout
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or_default();
        eprintln!("pgbench -M {mode} through the proxy: {processed} transactions, {tps}");
    }
}

#[tokio::test]
async fn tokio_postgres_prepared_pipelined_binary_and_cancelled() {
    let (_pg, proxy) = start();
    let client = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect through the proxy");

    let add = client.prepare("select $1::int4 + $2::int4").await.unwrap();
    let row = client.query_one(&add, &[&40i32, &2i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    let named = client.prepare("select $1::text || '!'").await.unwrap();
    let (a, b, c) = tokio::join!(
        client.query_one(&named, &[&"one"]),
        client.query_one(&add, &[&1i32, &1i32]),
        client.query("select generate_series(1, 1000)", &[]),
    );
    assert_eq!(a.unwrap().get::<_, String>(0), "one!");
    assert_eq!(b.unwrap().get::<_, i32>(0), 2);
    assert_eq!(c.unwrap().len(), 1000);

    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let echoed = client
        .query_one("select $1::bytea", &[&bytes])
        .await
        .unwrap();
    assert_eq!(
        echoed.get::<_, Vec<u8>>(0),
        bytes,
        "binary parameters and results survive"
    );

    let err = client
        .query_one("select $1::int4 / 0", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    cancel_a_long_statement(client).await;
}

/// Runs `select pg_sleep(30)` on `client`, cancels it through the client's cancel token (a
/// CancelRequest to the proxy) and checks that the client sees 57014.
async fn cancel_a_long_statement(client: tokio_postgres::Client) {
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send the cancel request");
    let result = tokio::time::timeout(Duration::from_secs(25), sleeper)
        .await
        .expect("the cancelled query ends")
        .unwrap();
    let err = result.expect_err("pg_sleep was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
}

#[tokio::test]
async fn psycopg_extended_protocol_and_client_side_cursor() {
    let (_pg, proxy) = start();
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    assert conn.execute("select %s::int + 1", [41]).fetchone()[0] == 42
    conn.execute("create temp table t (id int, name text)")
    with conn.cursor() as cur:
        cur.executemany("insert into t values (%s, %s)", [(i, f"n{i}") for i in range(100)])
        cur.execute("select count(*), max(name) from t where id >= %s", [50])
        assert cur.fetchone() == (50, "n99"), "extended protocol"
    with psycopg.ClientCursor(conn) as cur:
        cur.execute("select %s || %s, %s::int * 2", ["a'b", "c", 21])
        assert cur.fetchone() == ("a'bc", 42), "client-side binding"
    with conn.transaction():
        conn.execute("insert into t values (1000, 'tx')")
    with conn.cursor(name="server_side") as cur:
        cur.execute("select id from t order by id")
        assert len(cur.fetchmany(10)) == 10
print("psycopg ok")
"#;
    // psycopg: pip install "psycopg[binary]".
    let stdout = maschera_tests::clients::python(script, &[&proxy.uri("postgres")]);
    assert!(stdout.contains("psycopg ok"), "psycopg script: {stdout}");
}

fn tls_lines(dir: &Path) -> (String, std::path::PathBuf) {
    let (ca, cert, key) = write_test_certificates(dir).expect("certificates");
    let lines = format!(
        "mode = \"required\"\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    (lines, ca)
}

#[tokio::test]
async fn tls_required_serves_sslmode_require_and_verify_full_and_refuses_plaintext() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = tls_lines(certs.path());
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        tls,
        ..Default::default()
    });
    let base = format!(
        "host=localhost port={} user={TEST_USER} password='{TEST_PASSWORD}' dbname=postgres",
        proxy.port()
    );

    let info = psql_ok(&format!("{base} sslmode=require"), &["-c", "\\conninfo"]);
    assert!(info.contains("SSL connection"), "{info}");
    let verified = format!("{base} sslmode=verify-full sslrootcert={}", ca.display());
    assert_eq!(
        psql_ok(&verified, &["-c", "select 'verified'"]),
        "verified\n"
    );

    let Ran {
        ok, stderr: err, ..
    } = psql_tuples(&format!("{base} sslmode=disable"), &["-c", "select 1"]);
    assert!(
        !ok && err.contains("requires an encrypted connection"),
        "plaintext refused clearly: {err}"
    );

    let other_ca = tempfile::tempdir().unwrap();
    let (_, wrong_ca) = tls_lines(other_ca.path());
    let Ran {
        ok, stderr: err, ..
    } = psql_tuples(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            wrong_ca.display()
        ),
        &["-c", "select 1"],
    );
    assert!(
        !ok && err.contains("SSL error"),
        "a foreign CA is not trusted: {err}"
    );
}

#[tokio::test]
async fn direct_tls_is_welcome_and_bytes_before_the_handshake_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = tls_lines(certs.path());
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        tls: tls.replace("required", "optional"),
        ..Default::default()
    });

    // Direct TLS (PostgreSQL 17 style): TLS ClientHello first, ALPN "postgresql", then the startup.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("direct TLS handshake");
    let mut out = BytesMut::new();
    frontend::startup_message([("user", TEST_USER), ("database", "postgres")], &mut out).unwrap();
    tls.write_all(&out).await.unwrap();
    let mut answer = [0u8; 9];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'R', "authentication request over direct TLS");
    assert_eq!(&answer[5..9], &10i32.to_be_bytes(), "AuthenticationSASL");

    // CVE-2021-23214: a startup message sent right behind the SSLRequest, before the handshake.
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    frontend::startup_message([("user", TEST_USER), ("database", "postgres")], &mut out).unwrap();
    tcp.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (tag, fields) = read_error(&mut tcp).await;
    assert_eq!(tag, b'E', "no TLS after injected bytes");
    assert!(
        fields.contains("08P01") && fields.contains("unencrypted data"),
        "{fields}"
    );
}

/// Reads one message and returns its type and, for an ErrorResponse, its fields as text.
async fn read_error(stream: &mut (impl AsyncReadExt + Unpin)) -> (u8, String) {
    let tag = stream.read_u8().await.expect("a message");
    if tag != b'E' {
        return (tag, String::new());
    }
    let len = stream.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await.unwrap();
    (tag, String::from_utf8_lossy(&body).replace('\0', " "))
}

async fn connect_error(uri: &str) -> tokio_postgres::Error {
    match tokio_postgres::connect(uri, tokio_postgres::NoTls).await {
        Ok(_) => panic!("login should have failed"),
        Err(err) => err,
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same_and_lockout_follows() {
    let auth = "max_failures = 3\nfailure_window_seconds = 600\nlockout_seconds = 600".to_owned();
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        auth,
        ..Default::default()
    });

    let unknown = connect_error(&proxy.uri_as("nobody", "whatever password", "postgres")).await;
    let wrong = connect_error(&proxy.uri_as(TEST_USER, "wrong password", "postgres")).await;
    assert_eq!(unknown.code(), Some(&SqlState::INVALID_PASSWORD));
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD));
    let text = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        text(&unknown).replace("nobody", "X"),
        text(&wrong).replace(TEST_USER, "X")
    );
    assert_eq!(
        text(&wrong),
        format!("password authentication failed for user \"{TEST_USER}\"")
    );

    // The right password still works, and resets nothing for the attacker below.
    maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("right password");
    for _ in 0..3 {
        let err = connect_error(&proxy.uri_as(TEST_USER, "guess", "postgres")).await;
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    }
    let locked = connect_error(&proxy.uri("postgres")).await;
    assert_eq!(
        locked.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{locked}"
    );
    assert!(text(&locked).contains("temporarily blocked"), "{locked}");
}

/// Logs in through the proxy by hand as the test user (see the harness's `raw_login`).
async fn raw_login(port: u16) -> TcpStream {
    maschera_tests::proxy::raw_login(port, TEST_USER, TEST_PASSWORD, "postgres").await
}

#[tokio::test]
async fn garbage_and_oversized_frames_get_08p01_while_others_keep_working() {
    let limits = "max_frame_bytes = 1048576".to_owned();
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        limits,
        ..Default::default()
    });
    let bystander = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();

    let mut garbage = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .await
        .unwrap();
    let (tag, fields) = read_error(&mut garbage).await;
    assert!(
        tag == b'E' && fields.contains("08P01"),
        "garbage startup: {fields}"
    );

    let mut oversized = raw_login(proxy.port()).await;
    oversized
        .write_all(b"Q\x10\x00\x00\x00select")
        .await
        .unwrap();
    let (tag, fields) = read_error(&mut oversized).await;
    assert!(
        tag == b'E' && fields.contains("08P01") && fields.contains("exceeds"),
        "oversized: {fields}"
    );
    assert_eq!(
        oversized.read(&mut [0u8; 16]).await.unwrap(),
        0,
        "the connection closes"
    );

    let mut malformed = raw_login(proxy.port()).await;
    malformed.write_all(b"Q\x00\x00\x00\x02").await.unwrap();
    let (tag, fields) = read_error(&mut malformed).await;
    assert!(
        tag == b'E' && fields.contains("08P01"),
        "bad length: {fields}"
    );

    // A statement just under the limit still works; the bystander never noticed.
    let big = format!("select length('{}')", "x".repeat(1_000_000));
    let row = bystander
        .query_one(&big, &[])
        .await
        .expect("a large query under the limit");
    assert_eq!(row.get::<_, i32>(0), 1_000_000);
}

async fn upstream_login_works(host_auth: &str) {
    let pg = PgServer::start_with(PgServerOptions {
        host_auth: host_auth.into(),
        ..Default::default()
    })
    .unwrap();
    let proxy = Proxy::start(&pg, ProxyOptions::default()).unwrap();
    let client = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect through the proxy");
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        SUPERUSER,
        "upstream {host_auth} login"
    );
}

#[tokio::test]
async fn upstream_login_with_scram() {
    upstream_login_works("scram-sha-256").await;
}

#[tokio::test]
async fn upstream_login_with_md5() {
    upstream_login_works("md5").await;
}

#[tokio::test]
async fn upstream_login_with_trust() {
    upstream_login_works("trust").await;
}

#[tokio::test]
async fn upstream_tls_require_and_verify_full() {
    let certs = tempfile::Builder::new()
        .prefix("maschera-pg-certs-")
        .tempdir()
        .unwrap();
    let (ca, cert, key) = write_test_certificates(certs.path()).unwrap();
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(certs.path())
        .status();
    assert!(status.map(|s| s.success()).unwrap_or(false) || !maschera_tests::running_as_root());
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let settings = vec![
        "ssl = on".to_owned(),
        format!("ssl_cert_file = '{}'", cert.display()),
        format!("ssl_key_file = '{}'", key.display()),
    ];
    let pg = PgServer::start_with(PgServerOptions {
        settings,
        ..Default::default()
    })
    .unwrap();
    for (mode, extra) in [
        ("require", String::new()),
        ("verify-full", format!("ca_file = \"{}\"", ca.display())),
    ] {
        let options = ProxyOptions {
            upstream_tls: mode.into(),
            upstream_extra: extra,
            ..Default::default()
        };
        let proxy = Proxy::start(&pg, options).unwrap();
        let client = maschera_tests::connect(&proxy.uri("postgres"))
            .await
            .expect("connect");
        let row = client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(0),
            "upstream connection is encrypted with tls = {mode}"
        );
    }
}

#[tokio::test]
async fn connection_limit_answers_53300_and_silent_clients_time_out() {
    let options = ProxyOptions {
        limits: "max_connections = 1".into(),
        auth: "timeout_seconds = 3".into(),
        ..Default::default()
    };
    let (_pg, proxy) = pg_and_proxy(options);
    let first = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();
    let refused = connect_error(&proxy.uri("postgres")).await;
    assert_eq!(
        refused.code(),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "{refused}"
    );
    let message = refused
        .as_db_error()
        .map(|e| e.message())
        .unwrap_or_default();
    assert!(message.contains("too many"), "{message}");
    assert_eq!(
        first
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    drop(first);

    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut [0u8; 16])).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a client that sends nothing is dropped"
    );
}

#[tokio::test]
async fn sigterm_lets_the_running_statement_finish_then_exits_cleanly() {
    let (_pg, mut proxy) = pg_and_proxy(ProxyOptions::default());
    let busy = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();
    let idle = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();
    let running = tokio::spawn(async move {
        busy.query_one("select pg_sleep(2)::text, 'done'", &[])
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.signal(libc::SIGTERM);
    let row = running
        .await
        .unwrap()
        .expect("the running statement finishes");
    assert_eq!(row.get::<_, String>(1), "done");
    let err = idle
        .query_one("select 1", &[])
        .await
        .expect_err("idle sessions are closed");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        "{err}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_exit(Duration::from_secs(30));
        (status, proxy)
    })
    .await
    .unwrap();
    assert!(
        status.0.expect("the proxy exits").success(),
        "exit status 0"
    );
}

pub(crate) async fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_count_sessions_statements_and_bytes_and_health_follows_upstream() {
    let (pg, proxy) = pg_and_proxy(ProxyOptions {
        metrics: true,
        ..Default::default()
    });
    let port = proxy.metrics_port().unwrap();
    let client = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();
    client.simple_query("select 1; select 2").await.unwrap();
    let _ = connect_error(&proxy.uri_as(TEST_USER, "wrong password", "postgres")).await;

    let metrics = http_get(port, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for expected in [
        "maschera_connections_total",
        "maschera_sessions_active 1",
        "maschera_statements_total",
        "maschera_auth_total{result=\"failed\"} 1",
        "maschera_bytes_total{direction=\"client_to_server\"}",
        "maschera_bytes_total{direction=\"server_to_client\"}",
        "maschera_statement_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(expected),
            "/metrics lacks {expected}: {metrics}"
        );
    }
    let health = http_get(port, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(client);
    drop(pg);
    let health = http_get(port, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 503"),
        "health tells the upstream is gone: {health}"
    );
}

#[tokio::test]
async fn notifications_notices_and_large_objects_pass_through() {
    let (pg, proxy) = start();
    let uri = proxy.uri("postgres");
    let out = client_program(
        &pg,
        "psql",
        &[
            &uri,
            "-X",
            "-c",
            "LISTEN news",
            "-c",
            "NOTIFY news, 'hello'",
            "-c",
            "DO $$ BEGIN RAISE NOTICE 'careful'; END $$",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("notification \"news\" with payload \"hello\""),
        "NotificationResponse: {stdout}"
    );
    assert!(
        stderr.contains("NOTICE:  careful"),
        "NoticeResponse: {stderr}"
    );

    // \lo_import and \lo_export use the FunctionCall message.
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("blob.bin");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&original, &blob).unwrap();
    let import = format!("\\lo_import '{}'", original.display());
    let imported = psql_ok(
        &uri,
        &[
            "-c",
            &import,
            "-c",
            "select max(oid) from pg_largeobject_metadata",
        ],
    );
    let oid = imported.trim().to_owned();
    assert!(oid.parse::<u32>().is_ok(), "an OID: {imported}");
    let exported = dir.path().join("copy.bin");
    psql_ok(
        &uri,
        &["-c", &format!("\\lo_export {oid} '{}'", exported.display())],
    );
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        blob,
        "large object round trip"
    );
}

/// A hook for the seam test: refuses any Query or Parse whose text mentions `forbidden`, and
/// records the command tags and SQLSTATEs the relay reports.
struct RefuseForbidden(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl maschera::session::SessionHook for RefuseForbidden {
    fn on_client_message(
        &mut self,
        tag: u8,
        frame: &[u8],
        _cycle: u64,
    ) -> maschera::session::Decision {
        let mentions = frame.windows(9).any(|w| w == b"forbidden");
        if matches!(tag, b'Q' | b'P') && mentions {
            maschera::session::Decision::Refuse(maschera::wire::client_error::ClientError::new(
                "42501",
                "refused by the test policy",
            ))
        } else {
            maschera::session::Decision::Forward
        }
    }

    fn on_server_event(&mut self, event: maschera::session::ServerEvent<'_>, _cycle: u64) {
        use maschera::session::ServerEvent;
        let text = match event {
            ServerEvent::CommandComplete { tag } => tag.to_owned(),
            ServerEvent::Error { sqlstate } => format!("error {sqlstate}"),
            ServerEvent::Ready { status } => format!("ready {}", status as char),
        };
        self.0.lock().unwrap().push(text);
    }
}

#[tokio::test]
async fn policy_seam_refuses_in_simple_and_extended_protocol_and_the_session_goes_on() {
    use maschera::config::{UpstreamConfig, UpstreamTlsMode};
    use maschera::net::startup::{ClientTlsSetup, Opening, negotiate};
    use maschera::net::upstream::{Login, UpstreamTarget};
    use maschera::session::{RelaySettings, relay};

    let pg = PgServer::start().unwrap();
    let config = UpstreamConfig {
        host: "127.0.0.1".into(),
        port: pg.port(),
        database: "postgres".into(),
        databases: Vec::new(),
        tls: UpstreamTlsMode::Off,
        ca_file: None,
        user: SUPERUSER.into(),
        password: Some(pg.password().into()),
        password_env: None,
        connect_timeout_seconds: 10,
        plan_cache: false,
    };
    let target = UpstreamTarget::new(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = RefuseForbidden(events.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = ClientTlsSetup {
            mode: maschera::config::ClientTlsMode::Off,
            acceptor: None,
        };
        let Ok(Opening::Session(mut client)) = negotiate(tcp, &tls).await else {
            panic!("a session")
        };
        let upstream = target
            .connect(
                &Login {
                    user: SUPERUSER.into(),
                    password: Some(config.password.clone().unwrap()),
                },
                &[],
            )
            .await
            .unwrap();
        // Trust the test client: AuthenticationOk, then the upstream's greeting, a key, ReadyForQuery.
        let mut greeting = BytesMut::from(&b"R\0\0\0\x08\0\0\0\0"[..]);
        greeting.extend_from_slice(&upstream.greeting);
        greeting.extend_from_slice(b"K\0\0\0\x0c\0\0\0\x01\0\0\0\x02");
        greeting.extend_from_slice(&maschera::wire::frame::ready_for_query(upstream.status));
        client.stream.write_all(&greeting).await.unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let settings = RelaySettings {
            max_frame: 1 << 20,
            shutdown,
            role: String::new(),
            errors: None,
        };
        let mut recorder = recorder;
        relay(
            client.stream,
            upstream.stream,
            upstream.status,
            &mut recorder,
            settings,
        )
        .await
    });

    let client =
        maschera_tests::connect(&format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres"))
            .await
            .unwrap();
    let refused = client.simple_query("select 'forbidden'").await.unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(
        refused.as_db_error().unwrap().message(),
        "refused by the test policy"
    );
    let rows = client.query("select $1::int4 + 1", &[&1i32]).await.unwrap();
    assert_eq!(
        rows[0].get::<_, i32>(0),
        2,
        "the session goes on after a simple-protocol refusal"
    );

    let refused = client
        .query("select 'forbidden', $1::int4", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    let statement = client.prepare("select $1::text").await.unwrap();
    let (a, b, c) = tokio::join!(
        client.query_one(&statement, &[&"before"]),
        client.query_one("select 'forbidden'::text", &[]),
        client.query_one(&statement, &[&"after"]),
    );
    assert_eq!(a.unwrap().get::<_, String>(0), "before");
    assert_eq!(
        b.unwrap_err().code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        c.unwrap().get::<_, String>(0),
        "after",
        "pipelined answers stay in order"
    );

    client
        .batch_execute("begin; create temp table t (x int); insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(
        client
            .query_one("select count(*) from t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    client.batch_execute("commit").await.unwrap();

    // A refusal inside a transaction block aborts it, as any PostgreSQL error would.
    client
        .batch_execute("begin; insert into t values (2)")
        .await
        .unwrap();
    let refused = client.query("select 'forbidden'", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let aborted = client.query("select 1", &[]).await.unwrap_err();
    assert_eq!(
        aborted.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{aborted}"
    );
    client.batch_execute("commit").await.unwrap();
    let count: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "the aborted transaction's insert was rolled back");
    // A refused Query message is refused whole, so BEGIN goes in a message of its own here.
    client.batch_execute("begin").await.unwrap();
    let refused = client
        .batch_execute("select 'forbidden'")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let aborted = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        aborted.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{aborted}"
    );
    client.batch_execute("rollback").await.unwrap();
    drop(client);
    server
        .await
        .unwrap()
        .expect("the relay ends cleanly when the client leaves");
    let events = events.lock().unwrap().clone();
    assert!(
        events.contains(&"SELECT 1".to_owned()),
        "observer sees CommandComplete tags: {events:?}"
    );
    assert!(events.contains(&"INSERT 0 1".to_owned()), "{events:?}");
    assert!(
        events.iter().any(|e| e == "error 42501") && events.iter().any(|e| e == "ready E"),
        "observer sees the refusal and the aborted transaction: {events:?}"
    );
    assert!(
        events.iter().any(|e| e == "ready T"),
        "observer sees the transaction status: {events:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_user_names() {
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        log: "format = \"json\"".into(),
        ..Default::default()
    });
    let client = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .unwrap();
    client.simple_query("select 1").await.unwrap();
    let _ = connect_error(&proxy.uri_as("mallory", "wrong password", "postgres")).await;
    drop(client);
    let log = proxy.log();
    assert!(log.contains("session started"), "{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(
        !log.contains(TEST_USER) && !log.contains("mallory"),
        "no user names in the log: {log}"
    );
}

#[test]
fn serve_refuses_a_configuration_with_an_unknown_key_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("maschera.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[upstream]\nhost = \"127.0.0.1\"\ndatabase = \"crm\"\nuser = \"x\"\n\
         [users]\nfile = \"users.toml\"\n[limits]\nmax_connection = 5\n",
    )
    .unwrap();
    let out = Command::new(maschera_tests::maschera_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown field `max_connection`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_that_vanishes_mid_statement_gets_its_statement_cancelled() {
    let (pg, proxy) = start();
    let (client, connection) =
        tokio_postgres::connect(&proxy.uri("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let sleeper = tokio::spawn(async move {
        client
            .simple_query("select pg_sleep(60) /* vanishing */")
            .await
    });
    let direct = pg.connect("postgres").await.unwrap();
    let vanishing = "select count(*) from pg_stat_activity where query like '%vanishing%' \
                     and state = 'active' and pid <> pg_backend_pid()";
    assert!(
        count_becomes(&direct, vanishing, 1).await,
        "the statement runs upstream"
    );
    connection.abort();
    sleeper.abort();
    let gone = count_becomes(&direct, vanishing, 0).await;
    assert!(gone, "the abandoned pg_sleep(60) was cancelled");
}

/// Whether the count `sql` returns reaches `expected` within 15 seconds (polled).
async fn count_becomes(client: &tokio_postgres::Client, sql: &str, expected: i64) -> bool {
    for _ in 0..150 {
        if client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `[upstream] host` = a socket directory: sessions of both kinds of role, the proxy's own catalog
/// connection (the policy is compiled against the catalog read over it) and cancel requests all
/// reach PostgreSQL over its Unix-domain socket.
#[tokio::test]
async fn a_socket_directory_upstream_serves_sessions_the_policy_and_cancels() {
    let crm = maschera_tests::Fixture::crm(200)
        .config(|proxy| proxy.upstream_socket = true)
        .start()
        .await
        .expect("the proxy starts with its upstream on the socket");

    let dora = maschera_tests::connect(&crm.uri("dora"))
        .await
        .expect("dora connects");
    let row = dora
        .query_one(
            "select inet_server_addr() is null, count(*) from contacts",
            &[],
        )
        .await
        .expect("dora reads the base table");
    assert!(
        row.get::<_, bool>(0),
        "PostgreSQL sees the session on its Unix-domain socket, not TCP"
    );
    let all: i64 = row.get(1);

    let sam = maschera_tests::connect(&crm.uri("sam"))
        .await
        .expect("sam connects");
    let regions = sam
        .query("select distinct region::text from contacts", &[])
        .await
        .expect("sam reads his view");
    let regions: Vec<String> = regions.iter().map(|r| r.get(0)).collect();
    assert_eq!(regions, ["north"], "sam's row filter holds over the socket");
    let seen: i64 = sam
        .query_one("select count(*) from contacts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(0 < seen && seen < all, "sam sees {seen} of {all} contacts");

    // A message far larger than the socket's buffer: the proxy's write to PostgreSQL has to wait
    // (the socket is then registered for writing too), and the session goes on as before.
    let big = "x".repeat(12 * 1024 * 1024);
    let length: i32 = dora
        .query_one("select length($1::text)", &[&big])
        .await
        .expect("a 12 MiB parameter goes through the socket")
        .get(0);
    assert_eq!(length as usize, big.len());
    let again: i64 = dora
        .query_one("select count(*) from contacts", &[])
        .await
        .expect("the session goes on after the large write")
        .get(0);
    assert_eq!(again, all);

    cancel_a_long_statement(dora).await;

    // TLS cannot be had on a socket: a configuration that requires it does not start.
    let refused = Proxy::start(
        &crm.pg,
        ProxyOptions {
            upstream_socket: true,
            upstream_tls: "require".into(),
            ..Default::default()
        },
    )
    .err()
    .expect("tls = require with a socket directory is refused");
    assert!(
        format!("{refused:#}").contains("Unix-domain socket directory"),
        "the error says why: {refused:#}"
    );
}
