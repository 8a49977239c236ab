//! Discovery against the reference CRM in a real PostgreSQL: every personal column of the reference is
//! found with the right category, false positives stay few, and the printed skeleton passes
//! `maschera policy check` against the live database.

use maschera_tests::{PgServer, crm::load_crm, run_maschera, run_maschera_ok};
use std::collections::BTreeSet;

/// "Personal data in this policy" of the reference CRM (crm-reference.md).
const REFERENCE_PERSONAL: &[(&str, &[&str])] = &[
    (
        "contacts",
        &[
            "id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "birth_date",
            "tax_code",
            "street_address",
        ],
    ),
    ("consents", &["contact_id"]),
    ("deals", &["contact_id"]),
    ("interactions", &["contact_id", "notes"]),
    ("tickets", &["contact_id", "subject", "body"]),
    (
        "health_records",
        &["id", "contact_id", "condition", "notes", "recorded_at"],
    ),
    (
        "judicial_records",
        &["id", "contact_id", "offence", "sentence_date"],
    ),
];

#[tokio::test]
async fn finds_every_personal_column_of_the_reference_crm() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, "crm", 2000, 1).await.expect("load the CRM");
    let client = pg.connect("crm").await.unwrap();
    let proposals = maschera::ops::discover::discover(&client, "public", 1000)
        .await
        .expect("discover");
    let found: BTreeSet<(String, String)> = proposals
        .iter()
        .flat_map(|p| {
            p.personal_columns()
                .into_iter()
                .map(|c| (p.sample.name.clone(), c.to_string()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = REFERENCE_PERSONAL
        .iter()
        .flat_map(|(t, cols)| cols.iter().map(|c| (t.to_string(), c.to_string())))
        .collect();
    let missed: Vec<_> = expected.difference(&found).collect();
    let false_positives: Vec<_> = found.difference(&expected).collect();
    assert!(missed.is_empty(), "missed personal columns: {missed:?}");
    assert!(
        false_positives.len() <= 2,
        "false positives: {false_positives:?}"
    );
    let category = |table: &str, column: &str| {
        let proposal = proposals
            .iter()
            .find(|p| p.sample.name == table)
            .expect("table sampled");
        proposal.whole.or_else(|| {
            proposal
                .findings
                .iter()
                .find(|f| f.column == column)
                .map(|f| f.category)
        })
    };
    use policy::access::Category::*;
    for (table, column, expected) in [
        ("contacts", "email", Contact),
        ("contacts", "phone", Contact),
        ("contacts", "tax_code", NationalIdentifier),
        ("contacts", "street_address", Location),
        ("contacts", "birth_date", Identifying),
        ("interactions", "notes", FreeText),
        ("tickets", "body", FreeText),
        ("health_records", "condition", SpecialCategory),
        ("judicial_records", "offence", Criminal),
    ] {
        assert_eq!(category(table, column), Some(expected), "{table}.{column}");
    }
}

#[tokio::test]
async fn content_alone_finds_badly_named_columns_in_any_schema() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        &["-c", "CREATE SCHEMA shop;\
          CREATE TABLE shop.customers (id int PRIMARY KEY, c1 text, c2 text, c3 text, c4 date, c5 text, \
                 c6 text, c7 jsonb, \"Odd Name\" text, status text, total numeric(10,2), created timestamptz);\
          INSERT INTO shop.customers SELECT i, 'user' || i || '@example.org', '+39 347 ' || (1000000 + i), \
                 'IT60X0542811101000000123456', DATE '1950-01-01' + (i * 211) % 18000, \
                 'Piazza Garibaldi ' || i, 'ok', \
                 CASE WHEN i % 10 = 0 THEN jsonb_build_object('note', 'call +39 333 1234567') END, \
                 '2 55 08 14 168 025 38', 'open', i * 3.5, now() - i * interval '1 day' \
          FROM generate_series(1, 300) AS i;\
          CREATE TABLE shop.products (sku text PRIMARY KEY, price numeric, stock int, updated timestamptz);\
          INSERT INTO shop.products SELECT 'SKU-' || i, i * 1.5, i, now() FROM generate_series(1, 50) AS i"],
    )
    .expect("create tables");
    let client = pg.connect("shop").await.unwrap();
    let proposals = maschera::ops::discover::discover(&client, "shop", 100)
        .await
        .expect("discover");
    let customers = proposals
        .iter()
        .find(|p| p.sample.name == "customers")
        .unwrap();
    assert_eq!(
        customers.personal_columns(),
        ["id", "c1", "c2", "c3", "c4", "c5", "c7", "Odd Name"],
        "{:?}",
        customers.findings
    );
    let products = proposals
        .iter()
        .find(|p| p.sample.name == "products")
        .unwrap();
    assert!(
        products.personal_columns().is_empty(),
        "{:?}",
        products.findings
    );
    // The skeleton names the schema and quotes odd names so that policy check accepts it.
    let file = pg.dir().join("shop.toml");
    let file_arg = file.display().to_string();
    let uri = pg.uri("shop");
    run_maschera_ok([
        "discover",
        "--upstream",
        &uri,
        "--schema",
        "shop",
        "-o",
        &file_arg,
    ]);
    let text = std::fs::read_to_string(&file).unwrap();
    run_maschera_ok(["policy", "check", &file_arg, "--upstream", &uri]);
    assert!(text.contains("schema = \"shop\""), "{text}");
}

#[tokio::test]
async fn the_printed_skeleton_passes_policy_check() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, "crm", 2000, 1).await.expect("load the CRM");
    pg.psql(
        "crm",
        &[
            "-c",
            "CREATE TABLE settings (key text PRIMARY KEY, value text)",
        ],
    )
    .unwrap();
    let file = pg.dir().join("discovered.toml");
    let file_arg = file.display().to_string();
    let uri = pg.uri("crm");
    run_maschera_ok([
        "discover",
        "--upstream",
        &uri,
        "--sample",
        "500",
        "--output",
        &file_arg,
    ]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("email = { category = \"contact\", type = \"text\" }"),
        "{text}"
    );
    assert!(text.contains("personal = \"special_category\""), "{text}");
    assert!(text.contains("settings = { default = \"read\" }"), "{text}");
    // No sampled value is ever copied into the proposal.
    let email: String = pg
        .psql("crm", &["-c", "SELECT email FROM contacts WHERE id = 1"])
        .unwrap();
    assert!(!text.contains(email.trim()), "the proposal quotes a value");
    run_maschera_ok(["policy", "check", &file_arg, "--upstream", &uri]);
}

#[tokio::test]
async fn an_empty_or_missing_schema_is_an_error() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let out = run_maschera([
        "discover",
        "--upstream",
        &pg.uri("postgres"),
        "--schema",
        "nowhere",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema \"nowhere\" has no tables"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_table_it_may_not_read_is_reported_not_fatal() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        &[
            "-c",
            "CREATE TABLE people (id int PRIMARY KEY, email text);\
          INSERT INTO people VALUES (1, 'a@example.org'), (2, 'b@example.org');\
          CREATE TABLE secret (id int PRIMARY KEY, phone text);\
          CREATE USER reader PASSWORD 'reader-pw'; GRANT SELECT ON people TO reader",
        ],
    )
    .unwrap();
    let text = run_maschera_ok([
        "discover",
        "--upstream",
        &pg.uri_as("reader", "reader-pw", "app"),
    ]);
    assert!(text.contains("email = { category = \"contact\""), "{text}");
    assert!(
        text.contains(
            "[tables.secret]\n# Not sampled (permission denied for table secret): review it by hand; \
             denied to restricted roles until you do."
        ),
        "{text}"
    );
}
