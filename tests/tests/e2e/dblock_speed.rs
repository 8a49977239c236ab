//! The database lock's cost per statement (issue 18): statements that read a filtered view and write
//! through a write trigger in one go, straight as the role's login. The triggers check the protection
//! with a guard function of their own (`maschera_private.intact_write`), because PL/pgSQL plans a
//! function's queries again whenever it is called under another `search_path` than before (the views'
//! guard runs under the caller's path, the triggers under `pg_catalog`); these tests hold that split
//! and that it guards as much as before. The views' guard is STABLE, a one-time filter run once per
//! execution with the executor's snapshot (never folded while planning: see
//! `maschera_policy::db_lock::INTACT_FUNCTION`), so a cached generic plan fails closed as soon as a
//! direct migration breaks the protection.
//! Not for: the speed figures themselves (`bench/run --cases 2`, bench/results/dblock.md), nor the
//! other database-lock attacks (see `dblock`).

use crate::policy::{Crm, DB, ids, one, refused, text};

/// An insert whose values read the filtered contacts view, through the interactions view's trigger.
const INSERT_READING_A_VIEW: &str = "INSERT INTO interactions (contact_id, channel, notes) \
     VALUES ((SELECT max(id) FROM contacts), 'call', 'speed')";

#[tokio::test]
async fn a_write_that_reads_a_filtered_view_is_guarded_by_the_triggers_own_function() {
    let crm = Crm::start();
    let owner = |sql: &str| crm.pg.psql(DB, &["-Atc", sql]).expect(sql);
    // Each trigger calls the write guard; the views call the read guard.
    let trigger =
        owner("SELECT pg_get_functiondef('maschera_sales.maschera_write_interactions'::regproc)");
    assert!(
        trigger.contains("maschera_private.intact_write("),
        "{trigger}"
    );
    assert!(!trigger.contains("maschera_private.intact("), "{trigger}");
    let view = owner("SELECT pg_get_viewdef('maschera_sales.contacts'::regclass)");
    assert!(view.contains("maschera_private.intact("), "{view}");

    let sales = crm.connect("sales", Some("north")).await;
    // More calls than PostgreSQL's five custom plans, alternating the two guards in each statement.
    for _ in 0..8 {
        sales
            .batch_execute(INSERT_READING_A_VIEW)
            .await
            .expect("insert inside the filter");
    }
    assert_eq!(
        one(
            &sales,
            "SELECT count(*)::text || ' ' || min(contact_id)::text FROM interactions WHERE notes = 'speed'"
        )
        .await,
        "8 3",
        "eight rows on north contact 3 (the highest north id)"
    );
    // The write guard is for the owner roles (the triggers run as them), not for the login.
    assert_eq!(
        refused(
            &sales,
            "SELECT maschera_private.intact_write(0, 0, '0'::xid, 0)"
        )
        .await,
        "42501"
    );

    // A direct migration drops the interactions' policy: the same statement is refused, reading the
    // contacts (whose policy is intact) still works.
    owner("DROP POLICY maschera_sales ON interactions");
    // The session that wrote eight rows holds the trigger's insert as a cached generic plan: its guard,
    // a one-time filter, runs again at this execution and refuses.
    assert_eq!(refused(&sales, INSERT_READING_A_VIEW).await, "42501");
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(refused(&sales, INSERT_READING_A_VIEW).await, "42501");
    assert_eq!(ids(&sales, "contacts").await, [1, 3]);
    assert_eq!(ids(&sales, "interactions").await, Vec::<i64>::new());
    assert_eq!(
        owner("SELECT count(*) FROM interactions WHERE notes = 'speed'").trim(),
        "8",
        "nothing was written"
    );

    crm.reapply();
    let sales = crm.connect("sales", Some("north")).await;
    sales
        .batch_execute(INSERT_READING_A_VIEW)
        .await
        .expect("insert after the re-apply");
}

/// The plan of `sql` as the login sees it, one line per row.
async fn plan(client: &tokio_postgres::Client, sql: &str) -> String {
    text(client, &format!("EXPLAIN (COSTS OFF) {sql}"))
        .await
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_views_guard_runs_once_per_execution_and_a_cached_plan_fails_closed_after_a_direct_migration()
 {
    let crm = Crm::start();
    let owner = |sql: &str| crm.pg.psql(DB, &["-Atc", sql]).expect(sql);
    let table_owner =
        owner("SELECT relowner::regrole FROM pg_class WHERE oid = 'contacts'::regclass");
    let page = "SELECT id FROM contacts WHERE id >= $1 ORDER BY id";
    // Each break, and what undoes it before the re-apply (which restores the rest).
    let breaks = [
        ("DROP POLICY maschera_sales ON contacts", None),
        ("ALTER TABLE contacts DISABLE ROW LEVEL SECURITY", None),
        (
            "ALTER POLICY maschera_sales ON contacts USING (true) WITH CHECK (true)",
            None,
        ),
        (
            "ALTER TABLE contacts OWNER TO maschera_sales_owner",
            Some(format!(
                "ALTER TABLE contacts OWNER TO {}",
                table_owner.trim()
            )),
        ),
        (
            "GRANT SELECT ON contacts TO maschera_sales_owner WITH GRANT OPTION",
            None,
        ),
    ];
    for (sql, undo) in breaks {
        let sales = crm.connect("sales", Some("north")).await;
        let intact = plan(&sales, "SELECT id FROM contacts WHERE id = 1").await;
        assert!(
            intact.contains("One-Time Filter: maschera_private.intact("),
            "the guard runs once per execution, with the executor's snapshot:\n{intact}"
        );
        // A prepared statement whose generic plan is cached from its first execution.
        sales
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
            .expect("set plan_cache_mode");
        let statement = sales.prepare(page).await.expect("prepare");
        let run = || async {
            sales
                .query(&statement, &[&0i64])
                .await
                .expect("run the prepared page")
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect::<Vec<i64>>()
        };
        assert_eq!(run().await, [1, 3], "before {sql}");
        assert_eq!(run().await, [1, 3], "the cached plan, before {sql}");

        owner(sql);
        assert_eq!(
            run().await,
            Vec::<i64>::new(),
            "the session's cached plan after {sql}"
        );
        let broken = plan(&sales, "SELECT id FROM contacts WHERE id = 1").await;
        assert!(
            broken.contains("One-Time Filter: maschera_private.intact("),
            "after {sql}:\n{broken}"
        );
        let fresh = crm.connect("sales", Some("north")).await;
        assert_eq!(
            ids(&fresh, "contacts").await,
            Vec::<i64>::new(),
            "after {sql}"
        );

        if let Some(undo) = undo {
            owner(&undo);
        }
        crm.reapply();
        let sales = crm.connect("sales", Some("north")).await;
        assert_eq!(
            ids(&sales, "contacts").await,
            [1, 3],
            "re-applied after {sql}"
        );
    }
}
