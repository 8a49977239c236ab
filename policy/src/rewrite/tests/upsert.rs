//! Upserts and the other statement shapes that could read, test or move a row outside a role's row
//! filter: each is refused, or rewritten so that only the role's view is reached (issue 19, items
//! 1 and 2).

use super::*;

/// Every variant the attack run used, on each writable filtered table of sales.
const UPSERTS: &[(&str, &str)] = &[
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name, email, region) VALUES (7, 'x', 'x@x.invalid', 'north') \
         ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name",
    ),
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name, email, region) VALUES (7, 'x', 'x@x.invalid', 'north') \
         ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name",
    ),
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT ON CONSTRAINT contacts_pkey DO UPDATE SET first_name = NULL",
    ),
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT (id) DO UPDATE SET first_name = 'y' WHERE contacts.email LIKE 'a%'",
    ),
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT (id) DO UPDATE SET first_name = (contacts.email::int)::text",
    ),
    (
        "public.contacts",
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT (id) DO UPDATE SET region = 'north' RETURNING *",
    ),
    (
        "public.contacts",
        "WITH up AS (INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name RETURNING id) SELECT * FROM up",
    ),
    (
        "public.contacts",
        "PREPARE up AS INSERT INTO contacts (id, first_name) VALUES ($1, 'x') \
         ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name",
    ),
    (
        "public.contacts",
        "EXPLAIN INSERT INTO contacts (id, first_name) VALUES (7, 'x') \
         ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name",
    ),
    (
        "public.deals",
        "INSERT INTO deals (id, contact_id, amount, stage) VALUES (1, 1, 1, 'a') \
         ON CONFLICT (id) DO UPDATE SET contact_id = excluded.contact_id",
    ),
    (
        "public.deals",
        "INSERT INTO deals (id, contact_id, amount, stage) VALUES (1, 1, 1, 'a') \
         ON CONFLICT (id) DO UPDATE SET stage = excluded.stage",
    ),
    (
        "public.interactions",
        "INSERT INTO interactions (id, contact_id, channel, notes) VALUES (1, 1, 'call', 'x') \
         ON CONFLICT (id) DO UPDATE SET notes = substr(interactions.notes, 1, 60) || 'x'",
    ),
];

#[test]
fn upserts_on_a_filtered_table_are_refused_naming_the_table() {
    for (table, sql) in UPSERTS {
        let refusal = refused("sales", sql, SqlState::InsufficientPrivilege, table);
        assert!(
            refusal.message.contains("ON CONFLICT DO UPDATE"),
            "{sql}: {}",
            refusal.message
        );
    }
    // The extended protocol's Parse goes through the same analysis.
    denied_naming(
        rewrite_prepared(
            "INSERT INTO contacts (id, first_name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET first_name = $2",
            &fixture::role("sales"),
            &fixture::catalog(),
        ),
        &["public.contacts"],
    );
}

/// Asserts that `decision` is a 42501 refusal whose message names each of `names`.
#[track_caller]
fn denied_naming(decision: Result<Rewritten, Refusal>, names: &[&str]) {
    let refusal = decision.expect_err("refused");
    assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
    for name in names {
        assert!(
            refusal.message.contains(name),
            "{name}: {}",
            refusal.message
        );
    }
}

#[test]
fn upserts_are_refused_where_any_column_is_not_shown_in_clear() {
    // Support's consents are unfiltered and all shown: its upsert passes. A role with a masked
    // column on the target (a copy of support with consents' contact_id pseudonymised) is refused.
    accepted(
        "support",
        "INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (1, 1, 'marketing', now()) \
         ON CONFLICT (id) DO UPDATE SET withdrawn_at = now()",
    );
    let mut role = fixture::role("support");
    let key = TableName::new("public", "consents");
    if let Some(crate::access::TableAccess::View(view)) = role.tables.get_mut(&key) {
        let column = view
            .columns
            .iter_mut()
            .find(|c| c.name == "source")
            .expect("consents.source");
        column.action = crate::access::Action::MaskInitial;
        column.writable = false;
    }
    denied_naming(
        rewrite(
            "INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (1, 1, 'marketing', now()) \
             ON CONFLICT (id) DO UPDATE SET withdrawn_at = now()",
            &role,
            &fixture::catalog(),
        ),
        &["public.consents", "in clear"],
    );
}

#[test]
fn on_conflict_do_nothing_stays_allowed() {
    for sql in [
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') ON CONFLICT (id) DO NOTHING",
        "INSERT INTO contacts (id, first_name) VALUES (7, 'x') ON CONFLICT DO NOTHING",
        "INSERT INTO deals (contact_id, amount, stage) VALUES (1, 1, 'a') ON CONFLICT ON CONSTRAINT deals_pkey DO NOTHING RETURNING id",
    ] {
        // `accepted` also checks that the statement names no base table, only the views.
        accepted("sales", sql);
    }
}

/// The rest of the class: statements that could reach a row outside the filter are either
/// rewritten onto the role's views (where the filter holds for every row they read, test, lock
/// or change) or refused.
#[test]
fn other_shapes_that_could_cross_the_filter_reach_only_the_views() {
    for sql in [
        "UPDATE deals SET stage = 'won' FROM contacts WHERE contacts.id = deals.contact_id AND contacts.email LIKE 'a%'",
        "DELETE FROM interactions USING contacts WHERE interactions.contact_id = contacts.id AND contacts.email LIKE 'a%'",
        "SELECT id FROM contacts WHERE id = 7 FOR UPDATE",
        "SELECT id FROM contacts WHERE id = 7 FOR SHARE",
        "INSERT INTO deals (contact_id, amount, stage) SELECT id, 1, 'x' FROM contacts WHERE email LIKE 'a%' RETURNING *",
        "WITH moved AS (UPDATE contacts SET region = 'south' WHERE id = 7 RETURNING *) SELECT * FROM moved",
        "WITH gone AS (DELETE FROM deals WHERE id = 7 RETURNING *) SELECT * FROM gone",
        "UPDATE contacts SET first_name = 'x' WHERE id = 7 RETURNING *",
    ] {
        accepted("sales", sql);
    }
    // MERGE matches rows of the target like an upsert: refused, never forwarded.
    let refusal = run(
        "sales",
        "MERGE INTO contacts c USING (SELECT 7 AS id) s ON c.id = s.id \
         WHEN MATCHED THEN UPDATE SET first_name = 'x' WHEN NOT MATCHED THEN DO NOTHING",
    )
    .expect_err("MERGE refused");
    assert!(
        matches!(
            refusal.sqlstate,
            SqlState::InsufficientPrivilege | SqlState::FeatureNotSupported
        ),
        "{}",
        refusal.message
    );
    // COPY FROM into a filtered table is refused (`writes_outside_the_policy_are_refused`);
    // triggers and rules are DDL.
    refused(
        "sales",
        "CREATE TRIGGER t BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION f()",
        SqlState::InsufficientPrivilege,
        "DDL",
    );
}
