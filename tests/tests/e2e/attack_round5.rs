//! Attack round 5: new classes tried as each restricted role of the reference CRM, through the proxy
//! **and** straight as the role's login (the database lock alone), each attack asserting what the
//! attacker sees. Uses round 3's harness (`attack_round3::Round`). Not for: the shapes rounds 3 and 4
//! cover (upserts, MERGE, writable CTEs, LOCK, ALTER ROLE, seals, the analyst's ordering).

use crate::attack_round3::{Path, Round};

/// Type names that the functions `policy apply` installs write without a schema (in `DECLARE`, casts,
/// `RETURNING`), each shadowed by a temporary domain whose CHECK runs the login's own code.
const SHADOWED_TYPES: &[&str] = &[
    "text",
    "bytea",
    "date",
    "xid",
    "oid",
    "int8",
    "int4",
    "bool",
    "numeric",
    "timestamptz",
    "varchar",
    "name",
    "regclass",
];

/// What a login straight creates: a function of its own in `pg_temp` that reports, as a notice, the
/// role it ran as and the value it was given whenever it runs as anyone but the login, and a domain
/// over each of [`SHADOWED_TYPES`] whose CHECK calls it.
fn shadowing_sql() -> String {
    let mut sql = String::from(
        "CREATE FUNCTION pg_temp.spy(v anyelement) RETURNS boolean LANGUAGE plpgsql AS $spy$ \
         BEGIN IF current_user <> session_user THEN \
         RAISE NOTICE 'spy ran as %: %', current_user, v; END IF; RETURN true; END $spy$;",
    );
    for ty in SHADOWED_TYPES {
        sql.push_str(&format!(
            " CREATE DOMAIN pg_temp.{ty} AS pg_catalog.{ty} CHECK (pg_temp.spy(VALUE));"
        ));
    }
    sql
}

#[tokio::test]
async fn a_login_straight_runs_no_code_of_its_own_inside_the_compiled_functions() {
    let round = Round::start().await;
    let north = round.contact_of("north").await;
    let north_count = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    let ticket = round.owner_value("SELECT min(id) FROM tickets").await;
    // Each role's reads and writes through its views: the attribute function (the sales filter),
    // the write triggers (sales' contacts, deals and interactions, support's tickets and
    // interactions), the analyst's keyed views.
    let statements: &[(&str, Vec<String>)] = &[
        (
            "sales",
            vec![
                "SELECT count(*) FROM contacts".into(),
                format!(
                    "UPDATE contacts SET first_name = first_name WHERE id = {} RETURNING tax_code",
                    north.id
                ),
                format!(
                    "UPDATE deals SET stage = stage WHERE id = {} RETURNING id",
                    north.deal
                ),
                format!(
                    "INSERT INTO interactions (contact_id, channel, notes, occurred_at) \
                     VALUES ({}, 'call', 'spy', now()) RETURNING id",
                    north.id
                ),
            ],
        ),
        (
            "support",
            vec![
                format!("UPDATE tickets SET status = status WHERE id = {ticket} RETURNING subject"),
                format!(
                    "INSERT INTO interactions (contact_id, channel, notes, occurred_at) \
                     VALUES ({}, 'call', 'spy', now()) RETURNING notes",
                    north.id
                ),
                "SELECT count(*) FROM contacts WHERE email LIKE 'a%'".into(),
            ],
        ),
        ("marketing", vec!["SELECT count(*) FROM contacts".into()]),
        (
            "analyst",
            vec!["SELECT count(*), min(id) FROM contacts".into()],
        ),
    ];
    for (role, sqls) in statements {
        let login = round.session(role, Path::Straight).await;
        let created = login.simple(&shadowing_sql()).await;
        assert!(created.error.is_none(), "{role}: {created:?}");
        login.simple("BEGIN").await;
        for sql in sqls {
            let outcome = login.simple(sql).await;
            // The login's own code ran only as the login: never as the functions' owner, the
            // writer role or the view owner (which read the keys and the stored values).
            let notices = login.notices();
            assert!(
                !notices.contains("spy ran as"),
                "{role} `{sql}`: its code ran inside a compiled function: {notices}"
            );
            assert!(outcome.error.is_none(), "{role} `{sql}`: {outcome:?}");
            assert!(!outcome.rows.is_empty(), "{role} `{sql}`: no row");
        }
        login.simple("ROLLBACK").await;
    }
    // Every function `policy apply` installs with a search path names `pg_temp`, last.
    let unsafe_paths = round
        .owner_value(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname LIKE 'maschera%' AND (p.prosecdef OR p.proconfig IS NOT NULL) \
             AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c \
             WHERE c LIKE 'search\\_path=%, pg\\_temp')",
        )
        .await;
    assert_eq!(unsafe_paths, "0");
    // The sales read went through the attribute function (its region's rows).
    let login = round.session("sales", Path::Straight).await;
    assert_eq!(
        login.simple("SELECT count(*) FROM contacts").await.ok()[0][0],
        north_count
    );
}
