//! Reading the live catalog: the rewriter's view of which tables and columns exist.

use maschera_tests::PgServer;
use policy::access::TableName;

#[tokio::test]
async fn catalog_lists_crm_tables_with_columns_in_order_and_types() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema("crm").expect("CRM schema");
    let client = pg.connect("crm").await.expect("connect");
    let catalog = maschera::admin::catalog::load(&client, &["public".to_string()])
        .await
        .expect("catalog");

    assert_eq!(
        catalog.tables.len(),
        7,
        "the seven CRM tables and nothing from pg_catalog"
    );
    let contacts = &catalog.tables[&TableName::new("public", "contacts")];
    let names: Vec<&str> = contacts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[..4], ["id", "first_name", "last_name", "email"]);
    assert_eq!(
        contacts
            .iter()
            .find(|c| c.name == "tax_code")
            .unwrap()
            .data_type,
        "character(16)"
    );
    assert_eq!(
        catalog.resolve(None, "deals"),
        Some(TableName::new("public", "deals"))
    );
    assert_eq!(catalog.resolve(Some("public"), "nope"), None);
}
