//! `[upstream] plan_cache` on by default (session 12, issue 18): a configuration without the setting
//! caches the clients' unnamed statements and `plan_cache = false` turns it off; DDL run through the
//! proxy in the caching session itself (autocommit, inside a transaction block, rolled back) gives
//! the new result without an error; and a restricted user's cached statement over the compiled
//! views fails closed as soon as a direct migration breaks the database's protection.
//! Not for: the cache's own mechanics (plan_cache.rs), the database lock's attacks (dblock.rs).

use super::plan_cache::{TABLE, cached, connect, served, unnamed};
use maschera_tests::crm_proxy::{CRM_DB, CRM_PSEUDONYM_KEY, apply_policy};
use maschera_tests::{ProxyOptions, pg_and_proxy};

#[tokio::test]
async fn the_cache_is_on_without_a_setting_and_off_when_set_false() {
    let (pg, proxy) = pg_and_proxy(ProxyOptions::default());
    pg.execute(TABLE).expect("schema");
    let client = connect(&proxy).await;
    for _ in 0..7 {
        let rows = unnamed(&client, "SELECT name FROM t WHERE id = 4", &[]).await;
        assert_eq!(rows, ["n4"]);
    }
    assert_eq!(
        cached(&client).await,
        (1, 7),
        "one statement prepared by the proxy, run seven times"
    );

    let (_pg, proxy) = served(TABLE, false, "");
    let client = connect(&proxy).await;
    for _ in 0..7 {
        let rows = unnamed(&client, "SELECT name FROM t WHERE id = 4", &[]).await;
        assert_eq!(rows, ["n4"]);
    }
    assert_eq!(cached(&client).await, (0, 0), "nothing prepared when off");
}

/// The number of columns of `SELECT * FROM t WHERE id = 1` as an unnamed statement.
async fn width(client: &tokio_postgres::Client) -> usize {
    let rows = client
        .query_typed("SELECT * FROM t WHERE id = 1", &[])
        .await
        .expect("no error");
    rows[0].len()
}

#[tokio::test]
async fn ddl_through_the_proxy_in_the_caching_session_gives_the_new_result_without_an_error() {
    let (_pg, proxy) = pg_and_proxy(ProxyOptions::default());
    let client = connect(&proxy).await;
    client.batch_execute(TABLE).await.expect("schema");
    for _ in 0..6 {
        assert_eq!(width(&client).await, 2);
    }
    // In autocommit, through the same session.
    client
        .batch_execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7")
        .await
        .unwrap();
    assert_eq!(width(&client).await, 3);
    // Inside a transaction block (where nothing is cached) and after its commit.
    client
        .batch_execute("BEGIN; ALTER TABLE t DROP COLUMN extra")
        .await
        .unwrap();
    assert_eq!(width(&client).await, 2, "inside the block");
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(width(&client).await, 2, "after the commit");
    // A change rolled back leaves the statement as it was.
    client
        .batch_execute("BEGIN; ALTER TABLE t ADD COLUMN gone text")
        .await
        .unwrap();
    assert_eq!(width(&client).await, 3, "inside the rolled-back block");
    client.batch_execute("ROLLBACK").await.unwrap();
    for _ in 0..3 {
        assert_eq!(width(&client).await, 2, "after the rollback");
    }
    assert_eq!(cached(&client).await.0, 1, "the statement is still cached");
}

#[tokio::test]
async fn a_restricted_users_cached_statement_fails_closed_after_a_direct_migration() {
    let crm = maschera_tests::Fixture::crm(200)
        .start()
        .await
        .expect("start the CRM");
    let sam = crm.through_proxy("sam").await;
    let count = "SELECT count(*)::text FROM contacts WHERE id > $1";
    let counted = || async {
        sam.query_typed(count, &[(&0i64, tokio_postgres::types::Type::INT8)])
            .await
            .map(|rows| rows[0].get::<_, String>(0).parse::<i64>().unwrap())
    };
    let north = counted().await.expect("sam's count");
    let all = crm
        .owner()
        .await
        .query_one("SELECT count(*) FROM contacts", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(0 < north && north < all, "{north} of {all}");
    let breaks = [
        "ALTER POLICY maschera_sales ON contacts USING (true) WITH CHECK (true)",
        "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY",
        "DROP POLICY maschera_sales ON contacts",
    ];
    for sql in breaks {
        // More executions than PostgreSQL's five custom plans: a generic plan may be cached.
        for _ in 0..7 {
            assert_eq!(counted().await.expect("before"), north, "before {sql}");
        }
        crm.pg.psql(CRM_DB, &["-c", sql]).expect(sql);
        match counted().await {
            Ok(seen) => assert_eq!(seen, 0, "sam's cached statement after {sql}"),
            Err(err) => {
                let db = err.as_db_error().expect("an ErrorResponse");
                assert_eq!(db.code().code(), "42501", "{db:?}");
            }
        }
        apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("re-apply");
    }
    assert_eq!(counted().await.expect("after the re-apply"), north);
}

#[tokio::test]
async fn after_the_client_changes_client_encoding_the_same_bytes_are_read_as_the_new_text() {
    let (_pg, proxy) = pg_and_proxy(ProxyOptions::default());
    let client = connect(&proxy).await;
    // `é` is two bytes in UTF-8, which LATIN1 reads as two characters (`Ã©`).
    let sql = "SELECT length('é')::text";
    for _ in 0..6 {
        assert_eq!(unnamed(&client, sql, &[]).await, ["1"]);
    }
    client
        .batch_execute("SET client_encoding = 'LATIN1'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            unnamed(&client, sql, &[]).await,
            ["2"],
            "as PostgreSQL reads these bytes now"
        );
    }
}
