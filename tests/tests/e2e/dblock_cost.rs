//! The database lock's per-statement functions run once per statement, not once per row (issue 18: "no
//! cost that grows with the table", per-statement constants evaluated once): the sealed attribute read
//! (`maschera_private.attribute`, an InitPlan of each filtered relation's policy) and the views' guard
//! (`maschera_private.intact`, a one-time filter), counted by PostgreSQL itself (`track_functions`)
//! while the role's login reads hundreds of rows straight, and at each execution of a prepared
//! statement past PostgreSQL's five custom plans (the cached plan the proxy's plan cache runs too).
//! Not for: the time these calls take (bench/probes/attribute_seal.py --calls, view_parts.py,
//! BENCHMARKS.md), nor whether they fail closed (`dblock`, `dblock_speed`, `plan_cache_default`).

use crate::policy::{Crm, DB, one};
use tokio_postgres::Client;

/// 500 more contacts in sam's region (ids 1001..1500), each with one interaction and one deal.
const MORE_ROWS: &str = "
INSERT INTO contacts (id, first_name, last_name, email, phone, region)
  SELECT g, 'First' || g, 'Last' || g, 'c' || g || '@example.it', '+39 300 ' || g, 'north'
  FROM generate_series(1001, 1500) g;
INSERT INTO interactions (id, contact_id, channel, notes)
  SELECT g, g, 'call', 'bulk' FROM generate_series(1001, 1500) g;
INSERT INTO deals (id, contact_id, amount, stage)
  SELECT g, g, 10.00, 'open' FROM generate_series(1001, 1500) g;
ANALYZE;
";

/// Calls of the attribute read, the views' guard and the triggers' guard this backend has counted
/// and not yet reported (PostgreSQL reports them when the session goes idle outside a transaction,
/// so two readings inside one transaction differ by what ran between them).
const CALLS: &str = "SELECT \
     coalesce(pg_stat_get_xact_function_calls('maschera_private.attribute(text)'::regprocedure), 0), \
     coalesce(pg_stat_get_xact_function_calls('maschera_private.intact(oid, oid, xid, oid)'::regprocedure), 0), \
     coalesce(pg_stat_get_xact_function_calls('maschera_private.intact_write(oid, oid, xid, oid)'::regprocedure), 0)";

async fn counters(client: &Client) -> [i64; 3] {
    let row = client.query_one(CALLS, &[]).await.expect(CALLS);
    [row.get(0), row.get(1), row.get(2)]
}

/// (attribute reads, view guards, trigger guards) that `sql` ran, and its rows, in a transaction
/// rolled back.
async fn calls(client: &Client, sql: &str) -> ([i64; 3], usize) {
    client.batch_execute("BEGIN").await.expect("begin");
    let before = counters(client).await;
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    let after = counters(client).await;
    client.batch_execute("ROLLBACK").await.expect("rollback");
    ([0, 1, 2].map(|i| after[i] - before[i]), rows)
}

#[tokio::test]
async fn the_database_locks_functions_run_once_per_statement_whatever_the_rows() {
    let crm = Crm::start();
    let owner = |sql: &str| crm.pg.psql(DB, &["-Atc", sql]).expect(sql);
    owner(MORE_ROWS);
    owner(&format!("ALTER DATABASE {DB} SET track_functions = 'pl'"));
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(
        one(&sales, "SELECT count(*)::text FROM contacts").await,
        "502",
        "sam's region: contacts 1 and 3 and the 500 added"
    );

    // (statement, rows it returns, [attribute reads, view guards, trigger guards])
    let reads: [(&str, usize, [i64; 3]); 5] = [
        (
            "SELECT id, tax_code, birth_date FROM contacts",
            502,
            [1, 1, 0],
        ),
        (
            "SELECT id, email FROM contacts WHERE region = 'north' ORDER BY id LIMIT 50",
            50,
            [1, 1, 0],
        ),
        // The interactions' filter probes the contacts of the region once per interaction; the
        // attribute inside the probe is still read once.
        ("SELECT id, notes FROM interactions", 501, [1, 1, 0]),
        // Two filtered views: one read and one guard each (deals 1 and 3 and the 500 added).
        (
            "SELECT c.id, d.amount FROM contacts c JOIN deals d ON d.contact_id = c.id",
            502,
            [2, 2, 0],
        ),
        (
            "SELECT region, count(*) FROM contacts GROUP BY region",
            1,
            [1, 1, 0],
        ),
    ];
    for (sql, rows, expected) in reads {
        assert_eq!(calls(&sales, sql).await, (expected, rows), "{sql}");
    }

    // An insert whose values read the filtered contacts: one read for the values, one in the write
    // trigger's check (the policy's WITH CHECK), the write guard once.
    let insert = "INSERT INTO interactions (contact_id, channel, notes) \
                  VALUES ((SELECT max(id) FROM contacts), 'call', 'cost') RETURNING id";
    assert_eq!(calls(&sales, insert).await, ([2, 1, 1], 1), "{insert}");

    // A prepared statement run past the five custom plans (the generic plan a driver's named statement
    // and the proxy's plan cache execute): one read and one guard per execution, none at planning.
    sales.batch_execute("BEGIN").await.expect("begin");
    let before = counters(&sales).await;
    let point = sales
        .prepare("SELECT id, tax_code FROM contacts WHERE id >= $1 ORDER BY id LIMIT 1")
        .await
        .expect("prepare");
    for _ in 0..8 {
        let rows = sales.query(&point, &[&1001_i64]).await.expect("execute");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i64>(0), 1001);
    }
    let after = counters(&sales).await;
    sales.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!([0, 1, 2].map(|i| after[i] - before[i]), [8, 8, 0]);
}
