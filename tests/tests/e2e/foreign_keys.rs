//! The one reader of the live foreign keys (`maschera::admin::catalog::foreign_keys`): the rewriter's catalog
//! and the lifecycle commands (forget, subject export, retention) see the same keys, with their columns
//! in key order, their actions, and object ids that name the tables they say.

use maschera::ops::lifecycle::foreign_keys::read_foreign_keys;
use maschera_tests::PgServer;
use policy::access::{ForeignKeyAction, TableName};

#[tokio::test]
async fn foreign_keys_are_read_once_for_the_catalog_and_the_lifecycle_commands() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema("crm").expect("CRM schema");
    let client = pg.connect("crm").await.expect("connect");
    // A composite key whose order differs from the columns' order in both tables, across schemas.
    client
        .batch_execute(
            "CREATE SCHEMA archive;
             CREATE TABLE archive.pairs (a int, b int, UNIQUE (b, a));
             CREATE TABLE archive.notes (x int, y int, contact_id bigint REFERENCES public.contacts (id),
                 CONSTRAINT notes_pair FOREIGN KEY (y, x) REFERENCES archive.pairs (b, a)
                     ON DELETE SET NULL ON UPDATE CASCADE);",
        )
        .await
        .expect("extra tables");

    let live = maschera::admin::catalog::foreign_keys(&client)
        .await
        .expect("foreign keys");
    let catalog = maschera::admin::catalog::load(&client, &["public".to_string()])
        .await
        .expect("catalog");
    let keys: Vec<_> = live.iter().map(|l| l.key.clone()).collect();
    assert_eq!(
        catalog.foreign_keys, keys,
        "the catalog's keys are the reader's"
    );
    assert_eq!(keys.len(), 8, "six CRM keys and two of archive.notes");

    let pair = keys
        .iter()
        .find(|k| k.name == "notes_pair")
        .expect("the composite key");
    assert_eq!(pair.table, TableName::new("archive", "notes"));
    assert_eq!(pair.referenced, TableName::new("archive", "pairs"));
    assert_eq!(pair.columns, ["y", "x"], "columns in key order");
    assert_eq!(pair.referenced_columns, ["b", "a"]);
    assert_eq!(pair.on_delete, ForeignKeyAction::SetNull);
    assert_eq!(pair.on_update, ForeignKeyAction::Cascade);

    let lifecycle = read_foreign_keys(&client).await.expect("lifecycle keys");
    assert_eq!(lifecycle.len(), live.len());
    for (walked, read) in lifecycle.iter().zip(&live) {
        let child: u32 = client
            .query_one("SELECT to_regclass($1)::oid", &[&walked.child.display])
            .await
            .expect("child oid")
            .get(0);
        let parent: u32 = client
            .query_one("SELECT to_regclass($1)::oid", &[&walked.parent.display])
            .await
            .expect("parent oid")
            .get(0);
        assert_eq!((walked.child.oid, walked.parent.oid), (child, parent));
        assert_eq!(
            (walked.child.oid, walked.parent.oid),
            (read.table_oid, read.referenced_oid)
        );
        assert_eq!(walked.child_columns, read.key.columns);
        assert_eq!(walked.parent_columns, read.key.referenced_columns);
    }
    let notes = lifecycle
        .iter()
        .find(|k| k.child.display == "archive.notes" && k.parent.display == "archive.pairs")
        .expect("the composite key, by live table");
    assert_eq!(notes.child.sql, "\"archive\".\"notes\"");
    assert_eq!(notes.child_columns, ["y", "x"]);
}
