//! `[upstream] plan_cache`: the clients' unnamed statements run from statements the proxy prepares
//! on the upstream connection (so PostgreSQL's plan cache applies), with the results a client gets
//! without the cache: after DDL between executions (another session's `ALTER TABLE`, a view
//! replaced), under another `search_path`, beyond the statement cap, after `DEALLOCATE ALL`.
//! Not for: the named statements of transaction mode (pooling.rs).

use maschera_tests::clients::python;
use maschera_tests::pg::PgServer;
use maschera_tests::{Proxy, ProxyOptions};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

/// PostgreSQL with `schema` run as the superuser, and the proxy in front with the cache on or off.
pub(super) fn served(schema: &str, plan_cache: bool, pool: &str) -> (PgServer, Proxy) {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.execute(schema).expect("schema");
    let proxy = Proxy::start(
        &pg,
        ProxyOptions {
            upstream_extra: format!("plan_cache = {plan_cache}"),
            sections: pool.to_owned(),
            ..Default::default()
        },
    )
    .expect("start the proxy");
    (pg, proxy)
}

pub(super) async fn connect(proxy: &Proxy) -> Client {
    maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect through the proxy")
}

/// The rows of `sql` run as an unnamed statement (`query_typed`: Parse, Bind, Describe, Execute,
/// Sync), every column cast to text by the caller's SQL.
pub(super) async fn unnamed(
    client: &Client,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Vec<String> {
    client
        .query_typed(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The proxy's statements on the session's connection: (count, executions by plan kind).
pub(super) async fn cached(client: &Client) -> (i64, i64) {
    let row = client
        .simple_query(
            "SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0) \
             FROM pg_prepared_statements WHERE name LIKE 'maschera_ps_%'",
        )
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &row[1] else {
        panic!("no row");
    };
    let number = |i: usize| row.get(i).unwrap().parse::<i64>().unwrap();
    (number(0), number(1))
}

pub(super) const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, name text); \
     INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 20) g; \
     CREATE VIEW v AS SELECT id, name FROM t WHERE id <= 5;";

#[tokio::test]
async fn repeated_unnamed_statements_run_from_one_prepared_statement_with_the_same_results() {
    let mut seen = Vec::new();
    for plan_cache in [false, true] {
        let (_pg, proxy) = served(TABLE, plan_cache, "");
        let client = connect(&proxy).await;
        let mut results = Vec::new();
        for low in [1, 5, 18, 0, 3, 7, 19, 10] {
            let sql = "SELECT id::text, name FROM t WHERE id > $1 ORDER BY id LIMIT 3";
            results.push(unnamed(&client, sql, &[(&low, Type::INT4)]).await);
        }
        results.push(unnamed(&client, "SELECT count(*)::text FROM v", &[]).await);
        results.push(unnamed(&client, "SELECT count(*)::text FROM v", &[]).await);
        // A write goes through the cache too, and a transaction block passes as it came.
        let insert = "INSERT INTO t VALUES ($1, 'new') RETURNING id::text";
        results.push(unnamed(&client, insert, &[(&100, Type::INT4)]).await);
        client.batch_execute("BEGIN").await.unwrap();
        results.push(unnamed(&client, insert, &[(&101, Type::INT4)]).await);
        client.batch_execute("ROLLBACK").await.unwrap();
        results.push(unnamed(&client, "SELECT count(*)::text FROM t", &[]).await);
        // The client's own named statements are its own, under their names.
        let named = client
            .prepare("SELECT name FROM t WHERE id = 4")
            .await
            .unwrap();
        let rows = client.query(&named, &[]).await.unwrap();
        results.push(vec![rows[0].get::<_, String>(0)]);
        let own = "SELECT count(*)::text FROM pg_prepared_statements \
                   WHERE name NOT LIKE 'maschera_ps_%' AND statement LIKE '%id = 4'";
        results.push(super::pooling::rows(&client, own).await.concat());
        let (statements, executions) = cached(&client).await;
        if plan_cache {
            assert_eq!(statements, 4, "one statement per text");
            assert_eq!(
                executions,
                8 + 2 + 1 + 1,
                "every autocommit execution used them"
            );
        } else {
            assert_eq!((statements, executions), (0, 0));
        }
        seen.push(results);
    }
    assert_eq!(
        seen[0], seen[1],
        "the same results with and without the cache"
    );
    assert_eq!(seen[1][0], ["10|n10", "11|n11", "12|n12"]);
    assert_eq!(seen[1][seen[1].len() - 3], ["21"]);
    assert_eq!(seen[1].last().unwrap(), &["1"]);
}

#[tokio::test]
async fn ddl_between_executions_gives_the_new_result_without_an_error() {
    let (pg, proxy) = served(TABLE, true, "");
    let client = connect(&proxy).await;
    let star = "SELECT * FROM t WHERE id = 1";
    let view = "SELECT * FROM v WHERE id = 2";
    for _ in 0..6 {
        assert_eq!(client.query_typed(star, &[]).await.unwrap()[0].len(), 2);
        assert_eq!(client.query_typed(view, &[]).await.unwrap()[0].len(), 2);
    }
    // Another session changes the result type of both statements the proxy holds.
    pg.execute(
        "ALTER TABLE t ADD COLUMN extra int DEFAULT 7; \
         CREATE OR REPLACE VIEW v AS SELECT id, name, name || '!' AS shout FROM t WHERE id <= 5;",
    )
    .unwrap();
    let row = &client.query_typed(star, &[]).await.expect("no error")[0];
    assert_eq!(row.len(), 3, "the new column is there");
    assert_eq!(row.get::<_, Option<i32>>(2), Some(7));
    let row = &client.query_typed(view, &[]).await.expect("no error")[0];
    assert_eq!(row.len(), 3);
    assert_eq!(row.get::<_, String>(2), "n2!");
    // A column type changed under an explicit column list.
    for _ in 0..3 {
        let rows = client
            .query_typed("SELECT extra FROM t WHERE id = 1", &[])
            .await;
        assert_eq!(rows.unwrap()[0].get::<_, i32>(0), 7);
    }
    pg.execute("ALTER TABLE t ALTER COLUMN extra TYPE text")
        .unwrap();
    let rows = unnamed(&client, "SELECT extra FROM t WHERE id = 1", &[]).await;
    assert_eq!(rows, ["7"]);
    pg.execute("ALTER TABLE t ALTER COLUMN extra TYPE bigint USING extra::bigint")
        .unwrap();
    let row = &client
        .query_typed("SELECT extra FROM t WHERE id = 1", &[])
        .await
        .expect("no error")[0];
    assert_eq!(row.get::<_, i64>(0), 7);
    // The client deallocates everything: the proxy's statements are prepared again.
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    assert_eq!(client.query_typed(star, &[]).await.unwrap()[0].len(), 3);
    // And one deallocated by name behind the proxy's back.
    let name = client
        .simple_query("SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT * FROM t WHERE id = 1'")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(name) = &name[1] else {
        panic!("the statement is prepared");
    };
    client
        .batch_execute(&format!("DEALLOCATE {}", name.get(0).unwrap()))
        .await
        .unwrap();
    assert_eq!(client.query_typed(star, &[]).await.unwrap()[0].len(), 3);
}

#[tokio::test]
async fn the_same_text_under_two_search_paths_reads_each_path() {
    let schema = "CREATE SCHEMA a; CREATE SCHEMA b; \
        CREATE TABLE a.t (x int); INSERT INTO a.t VALUES (1); \
        CREATE TABLE b.t (x int, y text); INSERT INTO b.t VALUES (2, 'two');";
    let (_pg, proxy) = served(schema, true, "");
    let client = connect(&proxy).await;
    for _ in 0..3 {
        client.batch_execute("SET search_path = a").await.unwrap();
        for _ in 0..6 {
            let rows = client.query_typed("SELECT * FROM t", &[]).await.unwrap();
            assert_eq!((rows[0].len(), rows[0].get::<_, i32>(0)), (1, 1));
        }
        client.batch_execute("SET search_path = b").await.unwrap();
        let row = &client
            .query_typed("SELECT * FROM t", &[])
            .await
            .expect("no error")[0];
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, String>(1)),
            (2, "two".into())
        );
    }
}

#[tokio::test]
async fn a_connection_holds_at_most_the_cap_of_statements() {
    let (_pg, proxy) = served(
        TABLE,
        true,
        "[pool]\nprepared_statements_per_connection = 3\n",
    );
    let client = connect(&proxy).await;
    for round in 0..3 {
        for id in 1..=6 {
            let sql = format!("SELECT name FROM t WHERE id = {id}");
            assert_eq!(
                unnamed(&client, &sql, &[]).await,
                [format!("n{id}")],
                "{round}"
            );
        }
        let (statements, _) = cached(&client).await;
        assert!((1..=3).contains(&statements), "{statements} statements");
    }
}

#[test]
fn psycopg_gets_the_same_rows_with_the_cache_across_a_schema_change() {
    let script = r#"
import sys, psycopg
out = []
for uri in sys.argv[1:2]:
    with psycopg.connect(uri, autocommit=True, prepare_threshold=None) as conn, \
         psycopg.connect(sys.argv[2], autocommit=True) as other:
        for i in range(7):
            out.append(conn.execute("SELECT * FROM t WHERE id = %s", (i,)).fetchall())
        other.execute("ALTER TABLE t ADD COLUMN IF NOT EXISTS extra int DEFAULT 7")
        out.append(conn.execute("SELECT * FROM t WHERE id = %s", (3,)).fetchall())
        other.execute("ALTER TABLE t DROP COLUMN extra")
        out.append(conn.execute("SELECT * FROM t WHERE id = %s", (4,)).fetchall())
        out.append(conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchall())
    print(repr(out))
    out = []
"#;
    let (pg, proxy) = served(TABLE, true, "");
    let direct = python(script, &[&pg.uri("postgres"), &pg.uri("postgres")]);
    let through = python(script, &[&proxy.uri("postgres"), &pg.uri("postgres")]);
    let direct = direct.replace("[(0,)]", "[(N,)]");
    let through = through.replace("[(1,)]", "[(N,)]");
    assert_eq!(direct, through, "psycopg's rows through the plan cache");
    assert!(through.contains("(3, 'n3', 7)"), "{through}");
}

#[tokio::test]
async fn in_transaction_mode_clients_of_a_pool_share_one_statement_and_ddl_needs_no_retry_by_them()
{
    let pool = super::pooling::pool_section(1, "");
    let (pg, proxy) = served(TABLE, true, &pool);
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let sql = "SELECT * FROM t WHERE id = 3";
    // A's named statement and B's unnamed one have the same text: one statement upstream.
    let named = a.prepare(sql).await.unwrap();
    for _ in 0..4 {
        assert_eq!(a.query(&named, &[]).await.unwrap()[0].len(), 2);
        assert_eq!(b.query_typed(sql, &[]).await.unwrap()[0].len(), 2);
    }
    let listed = "SELECT count(*)::text FROM pg_prepared_statements WHERE name LIKE 'maschera_ps_%' \
                  AND statement = 'SELECT * FROM t WHERE id = 3'";
    assert_eq!(unnamed(&b, listed, &[]).await, ["1"], "prepared once");
    pg.execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7")
        .unwrap();
    let row = &b.query_typed(sql, &[]).await.expect("no error")[0];
    assert_eq!((row.len(), row.get::<_, Option<i32>>(2)), (3, Some(7)));
}

/// sam's rows of `sql` (unnamed statements, `id` from 1 to 7) through a CRM proxy with the access
/// log, with and without the cache, and the statement records the log holds for them.
async fn sam_through_crm(plan_cache: bool, sql: &str) -> (Vec<Vec<String>>, usize) {
    let crm = maschera_tests::Fixture::crm(200)
        .access_log("plancache")
        .config(|options| options.upstream_extra = format!("plan_cache = {plan_cache}"))
        .start()
        .await
        .expect("start the CRM");
    let sam = crm.through_proxy("sam").await;
    let mut seen = Vec::new();
    for id in 1..=7i32 {
        seen.push(unnamed(&sam, sql, &[(&id, Type::INT4)]).await);
    }
    drop(sam);
    let dir = crm.audit_dir();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let logged = maschera_tests::access_log_records(&dir)
            .iter()
            .filter(|r| r["event"] == "statement" && r.to_string().contains("tax_code"))
            .count();
        if logged >= 7 || std::time::Instant::now() > deadline {
            return (seen, logged);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_restricted_user_sees_the_same_masked_rows_and_the_access_log_one_record_per_statement() {
    let sql = "SELECT id::text, tax_code, region FROM contacts WHERE id >= $1 ORDER BY id LIMIT 2";
    let (without, logged_without) = sam_through_crm(false, sql).await;
    let (with, logged_with) = sam_through_crm(true, sql).await;
    assert_eq!(without, with, "sam's rows with and without the cache");
    let masked = |row: &String| row.split('|').nth(1).is_some_and(|tax| tax.contains('*'));
    assert!(
        with.iter()
            .all(|rows| rows.len() == 2 && rows.iter().all(masked)),
        "{with:?}"
    );
    assert_eq!(
        (logged_without, logged_with),
        (7, 7),
        "one record per statement"
    );
}

/// pgjdbc with `prepareThreshold=0` (every statement unnamed), autocommit: seven lookups, a column
/// added by another session (args 3 to 5: straight on PostgreSQL), more lookups; prints each row.
const JDBC_CLIENT: &str = r#"
import java.sql.*;
import java.util.*;

public class PlanCacheClient {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", "0");
        Properties owner = new Properties();
        owner.setProperty("user", args[4]);
        owner.setProperty("password", args[5]);
        try (Connection c = DriverManager.getConnection(args[0], props);
             Connection other = DriverManager.getConnection(args[3], owner)) {
            PreparedStatement ps = c.prepareStatement("SELECT * FROM t WHERE id = ?");
            for (int round = 0; round < 9; round++) {
                if (round == 7) {
                    other.createStatement().execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7");
                }
                ps.setInt(1, round + 1);
                try (ResultSet rs = ps.executeQuery()) {
                    int n = rs.getMetaData().getColumnCount();
                    while (rs.next()) {
                        StringBuilder row = new StringBuilder();
                        for (int i = 1; i <= n; i++) row.append(rs.getString(i)).append('|');
                        System.out.println(row);
                    }
                }
            }
        }
        System.out.println("done");
    }
}
"#;

#[test]
fn pgjdbc_unnamed_statements_get_the_same_rows_across_a_schema_change() {
    let run = |pg: &PgServer, url: &str, user: &str, password: &str| {
        let dir = tempfile::tempdir().unwrap();
        let java_file = dir.path().join("PlanCacheClient.java");
        std::fs::write(&java_file, JDBC_CLIENT).unwrap();
        let direct = format!("jdbc:postgresql://127.0.0.1:{}/postgres", pg.port());
        let out = std::process::Command::new("java")
            .args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp"])
            .arg("/usr/share/java/postgresql.jar")
            .arg(&java_file)
            .args([url, user, password, &direct])
            .args([maschera_tests::pg::SUPERUSER, pg.password()])
            .output()
            .expect("java");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.ends_with("done\n"),
            "pgjdbc failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let (pg, _) = served(TABLE, false, "");
    let url = format!("jdbc:postgresql://127.0.0.1:{}/postgres", pg.port());
    let direct = run(&pg, &url, maschera_tests::pg::SUPERUSER, pg.password());
    let (pg, proxy) = served(TABLE, true, "");
    let url = format!("jdbc:postgresql://127.0.0.1:{}/postgres", proxy.port());
    let (user, password) = (maschera_tests::TEST_USER, maschera_tests::TEST_PASSWORD);
    let through = run(&pg, &url, user, password);
    assert_eq!(direct, through, "pgjdbc's rows through the plan cache");
    assert!(through.contains("8|n8|7|"), "{through}");
}

#[tokio::test]
async fn pipelined_statements_get_their_own_answers_in_order() {
    let (_pg, proxy) = served(TABLE, true, "");
    let client = std::sync::Arc::new(connect(&proxy).await);
    let sql = "SELECT name FROM t WHERE id = $1";
    // Warm: the statement is held, then twenty lookups sent before any answer (tokio-postgres
    // pipelines concurrent queries of one client), twice.
    for id in 1..=6 {
        assert_eq!(
            unnamed(&client, sql, &[(&id, Type::INT4)]).await,
            [format!("n{id}")]
        );
    }
    for _ in 0..2 {
        let mut lookups = tokio::task::JoinSet::new();
        for id in 1..=20i32 {
            let client = client.clone();
            lookups.spawn(async move {
                let rows = client.query_typed(sql, &[(&id, Type::INT4)]).await;
                assert_eq!(rows.unwrap()[0].get::<_, String>(0), format!("n{id}"));
            });
        }
        while let Some(done) = lookups.join_next().await {
            done.unwrap();
        }
    }
}
