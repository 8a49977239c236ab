//! The database lock's cost per statement (issue 18): statements that read a filtered view and write
//! through a write trigger in one go, straight as the role's login. The triggers check the protection
//! with a guard function of their own (`maschera_private.intact_write`), because PL/pgSQL plans a
//! function's queries again whenever it is called under another `search_path` than before (the views'
//! guard runs under the caller's path, the triggers under `pg_catalog`); these tests hold that split
//! and that it guards as much as before.
//! Not for: the speed figures themselves (`bench/run --cases 2`, bench/results/dblock.md), nor the
//! other database-lock attacks (see `dblock`).

use crate::policy::{Crm, DB, ids, one, refused};

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
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(refused(&sales, INSERT_READING_A_VIEW).await, "42501");
    assert_eq!(ids(&sales, "contacts").await, [1, 3]);
    assert_eq!(ids(&sales, "interactions").await, Vec::<i64>::new());
    assert_eq!(
        owner("SELECT count(*) FROM interactions WHERE notes = 'speed'").trim(),
        "8",
        "nothing was written"
    );

    let applied = crm.apply(&crm.policy, &[]);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "re-apply: {stderr}");
    let sales = crm.connect("sales", Some("north")).await;
    sales
        .batch_execute(INSERT_READING_A_VIEW)
        .await
        .expect("insert after the re-apply");
}
