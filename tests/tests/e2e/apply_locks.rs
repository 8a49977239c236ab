//! `maschera policy apply` while the application's sessions run: the order in which the apply takes
//! its locks. A restricted session locks its views before the tables and the key table under them;
//! an apply that waits for one of those views must hold nothing such a session may still ask for,
//! and in a cycle of its own making it gives up first (its `lock_timeout` is below PostgreSQL's
//! `deadlock_timeout`), so that the session's statements are never cancelled as deadlock victims.
//! Not for: what the apply creates (see `policy`, `dblock`) or who may run it (see `applyowner`).

use crate::policy::{Crm, DB};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first backend seen waiting for a relation lock, the relation it waits for, and the
/// relations it holds exclusively meanwhile (one snapshot of `pg_locks`).
const WAITING_AND_HELD: &str = "\
SELECT w.pid, w.relation::regclass::text, \
  coalesce(string_agg(DISTINCT h.relation::regclass::text, ', '), '') \
FROM pg_locks w \
LEFT JOIN pg_locks h ON h.pid = w.pid AND h.granted AND h.locktype = 'relation' \
  AND h.mode = 'AccessExclusiveLock' \
WHERE NOT w.granted AND w.locktype = 'relation' \
GROUP BY w.pid, w.relation LIMIT 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_waiting_for_a_sessions_view_holds_nothing_the_session_needs_and_gives_way() {
    let crm = Arc::new(Crm::start());
    let admin = crm.pg.connect(DB).await.expect("admin connection");
    let sales = crm.connect("sales", Some("north")).await;
    sales
        .batch_execute("BEGIN; SELECT count(*) FROM contacts")
        .await
        .expect("sales reads its contacts in an open transaction");

    let applying = crm.clone();
    let apply = tokio::task::spawn_blocking(move || applying.apply(&applying.policy, &[]));

    let deadline = Instant::now() + Duration::from_secs(30);
    let (waiting_for, held) = loop {
        assert!(
            Instant::now() < deadline,
            "the apply never waited for the sales session's view"
        );
        let row = admin
            .query_opt(WAITING_AND_HELD, &[])
            .await
            .expect("pg_locks");
        if let Some(row) = row {
            break (row.get::<_, String>(1), row.get::<_, String>(2));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        waiting_for.starts_with("maschera_sales."),
        "the apply waits for {waiting_for}, not for a view of the sales session"
    );
    let role_schemas = [
        "maschera_analyst.",
        "maschera_marketing.",
        "maschera_sales.",
        "maschera_support.",
    ];
    let outside: Vec<&str> = held
        .split(", ")
        .filter(|relation| !relation.is_empty())
        .filter(|relation| {
            !role_schemas
                .iter()
                .any(|schema| relation.starts_with(schema))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "while it waits for {waiting_for}, the apply holds {outside:?} exclusively, which the \
         sales session may still need"
    );

    // The session goes on while the apply waits: a view the apply may already hold (its drop
    // takes the schema's views one after another) and the key table under the masks.
    for sql in [
        "SELECT count(*) FROM deals",
        "SELECT count(*) FROM contacts WHERE email IS NOT NULL",
        "SELECT count(*) FROM interactions",
    ] {
        sales
            .batch_execute(sql)
            .await
            .unwrap_or_else(|err| panic!("{sql} during the apply: {err:?}"));
    }
    sales.batch_execute("COMMIT").await.expect("commit");

    let out = apply.await.expect("apply thread");
    assert!(
        out.status.success(),
        "the apply succeeds once the session ended its transaction: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = sales
        .query_one("SELECT count(*) FROM contacts", &[])
        .await
        .expect("sales reads after the apply");
    assert!(
        rows.get::<_, i64>(0) > 0,
        "sales sees its region after the apply"
    );
}
