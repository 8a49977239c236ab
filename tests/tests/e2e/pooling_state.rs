//! Honest session state in transaction mode: a client's `SET` follows it only once PostgreSQL
//! committed the transaction it ran in (a rollback, an aborted transaction or `SET LOCAL` leave
//! the client's settings as they were, for it and for other clients of the pool); a rollback to a
//! savepoint after a `SET` pins the session instead of guessing; pinning goes by the statement's
//! tokens (a literal naming `TEMPORARY TABLE` pins nothing, a temporary table does).
//! Not for: the pools themselves (pooling.rs, pooling_more.rs).

use super::pooling::{connect, failure, pooled_proxy, rows};
use tokio_postgres::Client;

async fn time_zone(client: &Client) -> String {
    rows(client, "SHOW TimeZone").await[0][0].clone()
}

async fn run(client: &Client, statements: &[&str]) {
    for sql in statements {
        client.simple_query(sql).await.unwrap();
    }
}

#[tokio::test]
async fn a_set_follows_the_client_only_when_its_transaction_committed() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let original = time_zone(&b).await;
    assert_ne!(original, "Pacific/Chatham");

    // Rolled back: PostgreSQL undid it, and so does the client's state.
    run(&a, &["BEGIN", "SET TimeZone = 'Pacific/Chatham'"]).await;
    assert_eq!(time_zone(&a).await, "Pacific/Chatham");
    run(&a, &["ROLLBACK"]).await;
    assert_eq!(time_zone(&a).await, original, "a ROLLBACK undoes the SET");
    assert_eq!(time_zone(&b).await, original);

    // Aborted: COMMIT of a failed transaction answers ROLLBACK.
    run(&a, &["BEGIN", "SET TIME ZONE 'Pacific/Chatham'"]).await;
    let err = a.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(failure(&err).0, "22012");
    run(&a, &["COMMIT"]).await;
    assert_eq!(
        time_zone(&a).await,
        original,
        "an aborted transaction undoes the SET"
    );
    assert_eq!(time_zone(&b).await, original);

    // SET LOCAL never outlives its transaction.
    run(
        &a,
        &["BEGIN", "SET LOCAL TimeZone = 'Pacific/Chatham'", "COMMIT"],
    )
    .await;
    assert_eq!(
        time_zone(&a).await,
        original,
        "SET LOCAL followed the client"
    );
    assert_eq!(time_zone(&b).await, original);

    // Committed: it follows the client from connection to connection, and only that client.
    run(&a, &["BEGIN", "SET TimeZone = 'Asia/Kathmandu'", "COMMIT"]).await;
    for _ in 0..3 {
        assert_eq!(time_zone(&a).await, "Asia/Kathmandu");
        assert_eq!(time_zone(&b).await, original);
    }
    // So does a SET in autocommit, and a ROLLBACK of a later block keeps the committed one.
    run(&a, &["SET TimeZone = 'Pacific/Chatham'"]).await;
    run(&a, &["BEGIN", "SET TimeZone = 'UTC'", "ROLLBACK"]).await;
    assert_eq!(time_zone(&a).await, "Pacific/Chatham");
    assert_eq!(time_zone(&b).await, original);
}

#[tokio::test]
async fn a_rollback_to_a_savepoint_after_a_set_pins_the_session_with_its_true_value() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let original = time_zone(&b).await;
    run(
        &a,
        &[
            "BEGIN",
            "SET TimeZone = 'Asia/Kathmandu'",
            "SAVEPOINT s",
            "SET TimeZone = 'Pacific/Chatham'",
            "ROLLBACK TO SAVEPOINT s",
            "COMMIT",
        ],
    )
    .await;
    // PostgreSQL kept the first SET only; a keeps the backend that holds it.
    assert_eq!(time_zone(&a).await, "Asia/Kathmandu");
    assert_eq!(time_zone(&a).await, "Asia/Kathmandu");
    // The pool's only backend is a's until a ends: b waits, then gets 53300.
    let err = b.simple_query("SHOW TimeZone").await.unwrap_err();
    assert_eq!(failure(&err).0, "53300");
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = connect(&proxy).await;
    assert_eq!(
        time_zone(&c).await,
        original,
        "a's backend was closed, not handed on"
    );
}

/// Whether `client` shares the backend of the pool of one with `other` (`None`: `other` waited
/// and got 53300, the backend being pinned to `client`).
async fn shares_backend(client: &Client, other: &Client) -> Option<bool> {
    let pid = rows(client, "SELECT pg_backend_pid()").await;
    match other.simple_query("SELECT pg_backend_pid()").await {
        Ok(_) => Some(rows(other, "SELECT pg_backend_pid()").await == pid),
        Err(err) => {
            assert_eq!(failure(&err).0, "53300", "{err}");
            None
        }
    }
}

#[tokio::test]
async fn a_literal_naming_temporary_table_does_not_pin_and_a_temporary_table_does() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    // What pgjdbc's DatabaseMetaData.getTables sends names 'TEMPORARY TABLE' in a literal.
    let tables = rows(
        &a,
        "SELECT c.relname, CASE n.nspname ~ '^pg_' OR n.nspname = 'information_schema' \
         WHEN true THEN 'SYSTEM TABLE' ELSE CASE c.relpersistence WHEN 't' \
         THEN 'TEMPORARY TABLE' /* temp */ ELSE 'TABLE' END END AS \"temp\" \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = 'pg_class'",
    )
    .await;
    assert_eq!(tables, [["pg_class", "SYSTEM TABLE"]]);
    assert_eq!(shares_backend(&a, &b).await, Some(true), "a was pinned");
    // A temporary table pins, comments and case notwithstanding.
    a.simple_query("create /* a comment */ temporary -- another\n table mine (x int)")
        .await
        .unwrap();
    assert_eq!(shares_backend(&a, &b).await, None, "a was not pinned");
    drop(a);
    let c = connect(&proxy).await;
    let d = connect(&proxy).await;
    c.simple_query("CREATE TEMP TABLE mine (x int)")
        .await
        .unwrap();
    assert_eq!(shares_backend(&c, &d).await, None, "c was not pinned");
}
