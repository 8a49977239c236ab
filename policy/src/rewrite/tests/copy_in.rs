//! `COPY ... FROM STDIN` into a role's policy view (copy_in.rs): allowed for the columns the role
//! writes as given, the name replaced by the view; refused with 42501 for a masked column, a dropped
//! one or a role that may not insert, and with 0A000 for a view PostgreSQL cannot copy into.

use super::*;

#[test]
fn copy_into_a_view_with_writable_columns_is_sent_to_the_view() {
    for (role, sql) in [
        (
            "sales",
            "COPY interactions (id, contact_id, channel) FROM STDIN",
        ),
        (
            "sales",
            "COPY interactions (id, contact_id, channel, notes) FROM STDIN WITH (FORMAT binary)",
        ),
        (
            "support",
            "COPY interactions (id, contact_id, channel) FROM STDIN (FORMAT csv)",
        ),
        // A new row's redacted text is the caller's own, as with INSERT.
        (
            "support",
            "COPY tickets (id, contact_id, subject, status) FROM STDIN",
        ),
    ] {
        let out = accepted_sql(role, sql);
        assert!(
            out.starts_with("COPY \"maschera_") && out.contains("FROM STDIN"),
            "{role} {sql}: {out}"
        );
    }
}

#[test]
fn copy_into_a_view_of_masked_or_dropped_columns_is_refused() {
    // No column list: every column of the view, the masked birth date and tax code included.
    let refusal = refused(
        "sales",
        "COPY contacts FROM STDIN",
        SqlState::InsufficientPrivilege,
        "public.contacts",
    );
    assert!(
        refusal.message.contains("birth_date"),
        "{}",
        refusal.message
    );
    refused(
        "sales",
        "COPY contacts (id, first_name, tax_code) FROM STDIN",
        SqlState::InsufficientPrivilege,
        "tax_code",
    );
    refused(
        "support",
        "COPY contacts (id, birth_date) FROM STDIN",
        SqlState::InsufficientPrivilege,
        "public.contacts",
    );
}

#[test]
fn copy_into_a_view_the_role_may_not_insert_into_is_refused() {
    refused(
        "analyst",
        "COPY interactions (channel) FROM STDIN",
        SqlState::InsufficientPrivilege,
        "may not insert into",
    );
    refused(
        "marketing",
        "COPY consents (contact_id, purpose) FROM STDIN",
        SqlState::InsufficientPrivilege,
        "public.consents",
    );
}

#[test]
fn copy_into_a_view_without_trigger_is_refused_with_the_reason() {
    // Support's consents: every column shown, no row filter: the view writes without a trigger.
    refused(
        "support",
        "COPY consents (id, contact_id, purpose) FROM STDIN",
        SqlState::FeatureNotSupported,
        "without a trigger",
    );
}
