//! Unit tests of two write rules over the reference CRM fixture: a column the role reads redacted
//! may be set in a new row but never changed, and with `cascading_deletes = "refuse"` a delete or
//! key update that foreign keys would cascade past the role is refused, naming the table reached.

use super::*;
use crate::access::{CascadingDeletes, ForeignKey, ForeignKeyAction, TableName};

fn run(access: &RoleAccess, catalog: &Catalog, sql: &str) -> Result<(), Refusal> {
    rewrite(sql, access, catalog).map(|_| ())
}

#[test]
fn a_redacted_column_may_be_inserted_and_only_written_back_by_an_update() {
    let support = fixture::role("support");
    let catalog = fixture::catalog();
    for sql in [
        "INSERT INTO interactions (contact_id, channel, notes) VALUES (1, 'call', 'call me on +39 333 1234567')",
        "INSERT INTO tickets (contact_id, subject, body, status) VALUES (1, 'Help', 'write to a@b.it', 'open')",
        "UPDATE tickets SET status = 'closed' WHERE id = 1",
    ] {
        let sql_out = rewrite(sql, &support, &catalog)
            .unwrap_or_else(|r| panic!("{sql}: {}", r.message))
            .statements()[0]
            .sql
            .clone();
        assert!(!sql_out.contains("write_back"), "{sql_out}");
    }
    // An update of a redacted column is a write-back: the value must be the one the role reads.
    let out = rewrite(
        "UPDATE tickets SET status = 'open', subject = subject WHERE id = 1",
        &support,
        &catalog,
    )
    .expect("write-back")
    .statements()[0]
        .sql
        .clone();
    assert!(
        out.contains("subject = maschera_private.write_back(CAST(subject AS TEXT), \"tickets\".\"subject\", 'column \"subject\" of \"tickets\" is not writable"),
        "{out}"
    );
    // Interactions are insert-only for support: no update at all.
    let refusal = run(&support, &catalog, "UPDATE interactions SET notes = 'x'").unwrap_err();
    assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
}

fn crm_with_foreign_keys() -> Catalog {
    let mut catalog = fixture::catalog();
    for (child, on_delete) in [
        ("deals", ForeignKeyAction::Cascade),
        ("interactions", ForeignKeyAction::Cascade),
        ("tickets", ForeignKeyAction::Cascade),
        ("consents", ForeignKeyAction::Cascade),
        ("health_records", ForeignKeyAction::Cascade),
    ] {
        catalog.foreign_keys.push(ForeignKey {
            name: format!("{child}_contact_id_fkey"),
            table: TableName::new("public", child),
            columns: vec!["contact_id".into()],
            referenced: TableName::new("public", "contacts"),
            referenced_columns: vec!["id".into()],
            on_delete,
            on_update: ForeignKeyAction::Refuse,
        });
    }
    catalog
}

#[test]
fn cascading_deletes_past_the_role_are_refused_when_the_policy_says_so() {
    let catalog = crm_with_foreign_keys();
    let mut sales = fixture::role("sales");
    run(&sales, &catalog, "DELETE FROM contacts WHERE id = 1").expect("allowed by default");
    sales.cascading_deletes = CascadingDeletes::Refuse;
    let refusal = run(&sales, &catalog, "DELETE FROM contacts WHERE id = 1").unwrap_err();
    assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
    assert!(
        refusal
            .message
            .contains("permission denied for table public.contacts")
            && refusal.message.contains("cascade through foreign key"),
        "{}",
        refusal.message
    );
    // health_records is hidden from sales; consents and tickets it may not delete from: any of them.
    assert!(
        ["public.health_records", "public.consents", "public.tickets"]
            .iter()
            .any(|t| refusal.message.contains(&format!("into table {t}"))),
        "{}",
        refusal.message
    );
    run(&sales, &catalog, "DELETE FROM deals WHERE id = 1").expect("nothing references deals");
    run(&sales, &catalog, "UPDATE contacts SET id = 9 WHERE id = 1")
        .expect("ON UPDATE NO ACTION does not cascade");
    // A key change that cascades into a hidden table is refused like a delete.
    let mut cascading = catalog.clone();
    for fk in &mut cascading.foreign_keys {
        fk.on_update = ForeignKeyAction::Cascade;
    }
    let refusal = run(
        &sales,
        &cascading,
        "UPDATE contacts SET id = 9 WHERE id = 1",
    )
    .unwrap_err();
    assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
    assert!(
        refusal
            .message
            .contains("may not update it, because the change would cascade")
            && refusal
                .message
                .contains("into table public.health_records, which the role may not see"),
        "{}",
        refusal.message
    );
    run(
        &sales,
        &cascading,
        "UPDATE contacts SET city = 'Roma' WHERE id = 1",
    )
    .expect("a column no key references cascades nowhere");
}
