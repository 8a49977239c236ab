//! Memory bounds of one connection, with a real PostgreSQL and the real `maschera serve`: a huge
//! row is streamed through instead of buffered whole, a client that never reads its results makes
//! the proxy stop reading from PostgreSQL instead of buffering them, and a pipeline that never
//! sends Sync (refused statements included) piles nothing up. Each test asserts a generous bound
//! on the growth of the proxy's peak resident memory (`VmHWM` in /proc), never a timing.
//! Huge client messages are bounded by `[limits] max_frame_bytes` (see `wire`).
//! Not for: many connections at once (see `faults`).

use bytes::BytesMut;
use maschera_tests::crm_proxy::{CRM_DB, crm_password};
use maschera_tests::proxy::{raw_login, read_message};
use maschera_tests::{Fixture, PgServer, Proxy, ProxyOptions, pg_and_proxy};
use postgres_protocol::message::frontend;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How much the proxy's peak memory may grow over its memory before the test's traffic.
const GROWTH_BOUND_KIB: u64 = 64 * 1024;

fn start() -> (PgServer, Proxy) {
    pg_and_proxy(ProxyOptions::default())
}

fn assert_peak_within_bound(proxy: &Proxy, before_kib: u64, what: &str) {
    let peak = proxy.memory_kib("VmHWM");
    println!("{what}: proxy resident {before_kib} KiB before, peak {peak} KiB");
    assert!(
        peak <= before_kib + GROWTH_BOUND_KIB,
        "{what}: the proxy's peak memory grew from {before_kib} KiB to {peak} KiB"
    );
}

/// Reads messages until ReadyForQuery; returns the SQLSTATEs of the ErrorResponses on the way.
async fn read_to_ready(stream: &mut TcpStream) -> Vec<String> {
    let mut errors = Vec::new();
    loop {
        let (tag, body) = read_message(stream).await;
        match tag {
            b'E' => errors.push(
                body.split(|&b| b == 0)
                    .find_map(|field| field.strip_prefix(b"C"))
                    .map(|code| String::from_utf8_lossy(code).into_owned())
                    .unwrap_or_default(),
            ),
            b'Z' => return errors,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_200_mb_row_is_streamed_through_not_buffered() {
    let (_pg, proxy) = start();
    let client = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect");
    let before = proxy.memory_kib("VmRSS");
    let row = client
        .query_one("select repeat('x', 200000000)", &[])
        .await
        .expect("the huge row comes through");
    assert_eq!(row.get::<_, &str>(0).len(), 200_000_000);
    assert_peak_within_bound(&proxy, before, "a 200 MB row");
    // The session goes on.
    let row = client.query_one("select 1", &[]).await.expect("select 1");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn a_client_that_never_reads_makes_the_proxy_stop_reading_upstream() {
    let (pg, proxy) = start();
    let mut raw = raw_login(
        proxy.port(),
        maschera_tests::TEST_USER,
        maschera_tests::TEST_PASSWORD,
        "postgres",
    )
    .await;
    let before = proxy.memory_kib("VmRSS");
    // About 1 GB of results, never read.
    let mut query = BytesMut::new();
    frontend::query(
        "select g, repeat('x', 1000) from generate_series(1, 1000000) as g /* never read */",
        &mut query,
    )
    .unwrap();
    raw.write_all(&query).await.expect("send the query");
    // PostgreSQL ends up waiting to write to the proxy: the proxy stopped reading.
    let direct = maschera_tests::connect(&pg.uri("postgres"))
        .await
        .expect("connect directly");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let blocked = direct
            .query_one(
                "select count(*) from pg_stat_activity \
                 where query like '%never read%' and wait_event = 'ClientWrite' \
                 and pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0);
        if blocked == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL never blocked writing to the proxy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_peak_within_bound(&proxy, before, "a client that never reads");
    // Others are served meanwhile.
    let other = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("another client");
    let row = other.query_one("select 1", &[]).await.expect("select 1");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn a_pipeline_of_refused_messages_without_sync_piles_nothing_up() {
    const MESSAGES: usize = 300_000;
    let crm = Fixture::crm(20).start().await.expect("start the CRM proxy");
    let mut raw = raw_login(crm.proxy.port(), "sam", &crm_password("sam"), CRM_DB).await;
    let before = crm.proxy.memory_kib("VmRSS");
    // A Parse whose text is not UTF-8 is refused by the policy without parsing, so the pipeline
    // is cheap to send; PostgreSQL never sees it.
    let body = b"\0\xff\0\0\0";
    let mut refused = BytesMut::from(&b"P"[..]);
    refused.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    refused.extend_from_slice(body);
    let mut pipeline = BytesMut::with_capacity(refused.len() * MESSAGES + 5);
    for _ in 0..MESSAGES {
        pipeline.extend_from_slice(&refused);
    }
    raw.write_all(&pipeline).await.expect("send the pipeline");
    let mut sync = BytesMut::new();
    frontend::sync(&mut sync);
    raw.write_all(&sync).await.expect("send Sync");
    // One error for the cycle, as PostgreSQL itself answers a failed pipeline.
    let errors = read_to_ready(&mut raw).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_peak_within_bound(&crm.proxy, before, "300,000 refused messages without Sync");
    // The session goes on.
    let mut query = BytesMut::new();
    frontend::query("select count(*) from contacts", &mut query).unwrap();
    raw.write_all(&query).await.expect("send a query");
    assert_eq!(read_to_ready(&mut raw).await, Vec::<String>::new());
}
