//! Faults of transaction pooling (issue 21) not covered in pooling.rs: a client that vanishes in
//! the middle of an extended-protocol batch (its implicit transaction open on the backend), and a
//! PostgreSQL restart while a client waits for the pool's connection.

use crate::pooling::rows;
use crate::pooling_stall::{answer, pooled, query};
use bytes::BytesMut;
use maschera_tests::proxy::{raw_login, read_message};
use maschera_tests::{TEST_PASSWORD, TEST_USER};
use postgres_protocol::message::frontend;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Pool of one. A client runs an `INSERT` by Parse, Bind, Execute and Flush, gets its answers and
/// disconnects before the Sync: the backend holds the insert in an open implicit transaction. The
/// next client of the pool (same startup parameters) is served at once and is not in that
/// transaction: its Query sees no row (on the reused backend it would see the row, and its end
/// would commit it), and the row never appears.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_gone_mid_extended_batch_leaves_its_backend_to_nobody() {
    let (pg, proxy) = pooled(1);
    let owner = pg.connect("postgres").await.unwrap();
    owner
        .batch_execute("CREATE TABLE vanishing (id int)")
        .await
        .unwrap();

    let mut gone = raw_login(proxy.port(), TEST_USER, TEST_PASSWORD, "postgres").await;
    let mut batch = BytesMut::new();
    frontend::parse("", "INSERT INTO vanishing VALUES (1)", [], &mut batch).unwrap();
    frontend::bind(
        "",
        "",
        [],
        std::iter::empty::<&[u8]>(),
        |_, _| Ok(postgres_protocol::IsNull::No),
        [],
        &mut batch,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::execute("", 0, &mut batch).unwrap();
    frontend::flush(&mut batch);
    gone.write_all(&batch).await.unwrap();
    let mut tags = String::new();
    for _ in 0..3 {
        tags.push(read_message(&mut gone).await.0 as char);
    }
    assert_eq!(tags, "12C", "the insert ran, its implicit transaction open");
    drop(gone);

    let mut next = raw_login(proxy.port(), TEST_USER, TEST_PASSWORD, "postgres").await;
    next.write_all(&query("SELECT count(*) FROM vanishing"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), answer(&mut next))
        .await
        .expect("the next client is served");
    assert_eq!((seen.values, seen.status), (vec!["0".to_owned()], 'I'));
    assert_eq!(
        rows(&owner, "SELECT count(*) FROM vanishing").await,
        [["0"]]
    );
    let open = "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'";
    assert_eq!(rows(&owner, open).await, [["0"]]);
}

/// Pool of one held by a client's open transaction while another client waits for it; PostgreSQL
/// restarts. The holder's session ends with an error (its backend is gone with its transaction);
/// the waiter gets the pool's next connection, served after the restart, or a clean error naming
/// the cause (08006 while PostgreSQL is down, 57P01); nobody hangs, and a new client is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_restart_while_a_client_waits_for_the_pool_ends_in_service_or_clean_errors() {
    let (pg, proxy) = pooled(1);
    let holder = crate::pooling::connect(&proxy).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = crate::pooling::connect(&proxy).await;
    let waiting = tokio::spawn(async move { waiter.simple_query("SELECT 2").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the waiter waits for the pool");

    let _pg = tokio::task::spawn_blocking(move || {
        pg.stop().expect("stop PostgreSQL");
        pg.start_again().expect("start PostgreSQL again");
        pg
    })
    .await
    .unwrap();

    let waited = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter does not hang")
        .unwrap();
    eprintln!("the waiter after the restart: {waited:?}");
    if let Err(err) = &waited {
        let code = err.as_db_error().map(|e| e.code().code().to_owned());
        assert!(
            matches!(code.as_deref(), Some("08006" | "57P01")),
            "the waiter's error says why: {err:?}"
        );
    }
    let after = tokio::time::timeout(Duration::from_secs(10), holder.simple_query("SELECT 3"))
        .await
        .expect("the holder does not hang");
    assert!(
        after.is_err(),
        "the holder's transaction ended with its backend"
    );
    let fresh = crate::pooling::connect(&proxy).await;
    assert_eq!(rows(&fresh, "SELECT 5").await, [["5"]]);
}
