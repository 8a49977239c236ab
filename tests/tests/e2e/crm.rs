//! The reference CRM generator against a real PostgreSQL: deterministic per seed, the promised ratios,
//! unique columns, sequences past the loaded ids, a refusal to load twice, and the `crm load` command.

use maschera_tests::{PgServer, crm::load_crm, maschera_bin};
use tokio_postgres::Client;

/// One digest per table over every row in id order.
async fn checksums(client: &Client) -> Vec<Option<String>> {
    let mut sums = Vec::new();
    for table in maschera::ops::crm::table_names() {
        let sql = format!("SELECT md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM {table} t");
        sums.push(client.query_one(&sql, &[]).await.unwrap().get(0));
    }
    sums
}

async fn scalar_f64(client: &Client, sql: &str) -> f64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn same_seed_gives_identical_tables_and_another_seed_differs() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let first = load_crm(&pg, "first", 2000, 7).await.expect("load first");
    let second = load_crm(&pg, "second", 2000, 7).await.expect("load second");
    let other = load_crm(&pg, "other", 2000, 8)
        .await
        .expect("load other seed");
    assert_eq!(first, second, "same row counts");
    assert_ne!(first, other, "another seed gives other row counts");
    let a = checksums(&pg.connect("first").await.unwrap()).await;
    let b = checksums(&pg.connect("second").await.unwrap()).await;
    let c = checksums(&pg.connect("other").await.unwrap()).await;
    assert_eq!(
        a, b,
        "same seed and scale give the same data in every table"
    );
    for (i, table) in maschera::ops::crm::table_names().iter().enumerate() {
        assert_ne!(a[i], c[i], "another seed gives other {table}");
    }
}

#[tokio::test]
async fn data_has_the_promised_shape() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let stats = load_crm(&pg, "crm", 2000, 1).await.expect("load");
    let client = pg.connect("crm").await.unwrap();
    let count = |table: &str| {
        stats
            .rows
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, n)| *n as f64)
            .unwrap()
    };
    assert_eq!(count("contacts"), 2000.0);
    for (table, per_contact, tolerance) in [
        ("consents", 2.0, 0.15),
        ("deals", 1.0, 0.1),
        ("interactions", 3.0, 0.2),
        ("tickets", 0.5, 0.06),
    ] {
        let ratio = count(table) / 2000.0;
        assert!(
            (ratio - per_contact).abs() <= tolerance,
            "{table}: {ratio} per contact, expected {per_contact}"
        );
        let in_db = scalar_f64(&client, &format!("SELECT count(*)::float8 FROM {table}")).await;
        assert_eq!(
            in_db,
            count(table),
            "{table}: the reported count is what is in the database"
        );
    }
    let share = |sql: &str| {
        format!("SELECT (count(*) FILTER (WHERE {sql}))::float8 / count(*) FROM contacts c")
    };
    for (what, condition, range) in [
        (
            "an active marketing consent",
            "EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id AND k.purpose = 'marketing' \
             AND k.withdrawn_at IS NULL)",
            0.56..=0.64,
        ),
        (
            "health records",
            "EXISTS (SELECT 1 FROM health_records h WHERE h.contact_id = c.id)",
            0.03..=0.07,
        ),
        (
            "a judicial record",
            "EXISTS (SELECT 1 FROM judicial_records j WHERE j.contact_id = c.id)",
            0.004..=0.02,
        ),
    ] {
        let part = scalar_f64(&client, &share(condition)).await;
        assert!(range.contains(&part), "contacts with {what}: {part}");
    }
    let withdrawn = scalar_f64(
        &client,
        "SELECT count(*)::float8 FROM consents WHERE withdrawn_at IS NOT NULL",
    )
    .await;
    assert!(
        withdrawn > 100.0,
        "some consents are withdrawn: {withdrawn}"
    );
    for region in ["north", "centre", "south"] {
        let part = scalar_f64(&client, &share(&format!("region = '{region}'"))).await;
        assert!(part > 0.15, "region {region}: {part}");
    }
    let days = scalar_f64(
        &client,
        "SELECT count(DISTINCT to_char(birth_date, 'MM-DD'))::float8 FROM contacts",
    )
    .await;
    assert!(days >= 300.0, "birth dates over {days} days of the year");
    for column in ["email", "phone", "tax_code"] {
        let distinct = scalar_f64(
            &client,
            &format!("SELECT count(DISTINCT {column})::float8 FROM contacts"),
        )
        .await;
        assert_eq!(distinct, 2000.0, "{column} is unique and never empty");
    }
    let shaped = scalar_f64(
        &client,
        "SELECT count(*)::float8 FROM contacts WHERE phone ~ '^\\+39 3[0-9]{2} [0-9]{7}$' \
         AND tax_code ~ '^[A-Z]{6}[0-9]{2}[A-EHLMPRST][0-9]{2}[A-M][0-9]{3}[A-Z]$' AND email LIKE '%@%.%'",
    )
    .await;
    assert_eq!(
        shaped, 2000.0,
        "phones, tax codes and e-mails have their real-world shape"
    );
    let notes_with_contact_data = scalar_f64(
        &client,
        "SELECT count(*)::float8 FROM interactions WHERE notes LIKE '%@%' OR notes ~ '\\+39 [0-9]'",
    )
    .await;
    assert!(
        notes_with_contact_data > 100.0,
        "some notes quote a phone or e-mail: {notes_with_contact_data}"
    );
    // The sequences are past the loaded ids: a row inserted without an id gets a fresh one.
    for table in ["contacts", "interactions"] {
        let max = scalar_f64(&client, &format!("SELECT max(id)::float8 FROM {table}")).await;
        let next = scalar_f64(
            &client,
            &format!("SELECT nextval('{table}_id_seq')::float8"),
        )
        .await;
        assert_eq!(
            next,
            max + 1.0,
            "{table}_id_seq continues after the loaded ids"
        );
    }
}

#[tokio::test]
async fn loading_twice_is_refused_and_changes_nothing() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, "crm", 200, 1).await.expect("first load");
    let client = pg.connect("crm").await.unwrap();
    let before = checksums(&client).await;
    let err = maschera::ops::crm::load(
        &client,
        &maschera::ops::crm::CrmOptions {
            contacts: 200,
            ..Default::default()
        },
    )
    .await
    .expect_err("a second load into the same database fails");
    assert!(
        err.to_string().contains("contacts already holds rows"),
        "{err}"
    );
    assert_eq!(
        checksums(&client).await,
        before,
        "the failed load left the data as it was"
    );
    let constraints = scalar_f64(
        &client,
        "SELECT count(*)::float8 FROM pg_constraint WHERE contype IN ('p', 'u', 'f') \
         AND connamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(
        constraints, 16.0,
        "7 primary keys, 3 unique constraints, 6 foreign keys are in place"
    );
}

#[tokio::test]
async fn crm_load_command_fills_a_database() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database("crm").unwrap();
    let out = std::process::Command::new(maschera_bin())
        .args([
            "crm",
            "load",
            "--upstream",
            &pg.uri("crm"),
            "--contacts",
            "300",
            "--seed",
            "5",
        ])
        .output()
        .expect("run maschera crm load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("contacts") && stdout.contains("300 rows"),
        "{stdout}"
    );
    let client = pg.connect("crm").await.unwrap();
    assert_eq!(
        scalar_f64(&client, "SELECT count(*)::float8 FROM contacts").await,
        300.0
    );
    // The same data as the library call with the same seed and scale.
    load_crm(&pg, "library", 300, 5).await.unwrap();
    let library = checksums(&pg.connect("library").await.unwrap()).await;
    assert_eq!(checksums(&client).await, library);
    // --no-schema on a database without the tables fails and says why.
    pg.create_database("empty").unwrap();
    let out = std::process::Command::new(maschera_bin())
        .args(["crm", "load", "--upstream", &pg.uri("empty"), "--no-schema"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("contacts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn loads_into_an_existing_schema_that_other_tables_refer_to() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema("crm").unwrap();
    pg.psql("crm", &["-c", "CREATE TABLE invoices (id int PRIMARY KEY, contact_id bigint REFERENCES contacts (id))"])
        .unwrap();
    let client = pg.connect("crm").await.unwrap();
    let options = maschera::ops::crm::CrmOptions {
        contacts: 300,
        seed: 5,
        create_schema: false,
    };
    maschera::ops::crm::load(&client, &options)
        .await
        .expect("load into the existing tables");
    load_crm(&pg, "fresh", 300, 5).await.unwrap();
    let fresh = checksums(&pg.connect("fresh").await.unwrap()).await;
    assert_eq!(
        checksums(&client).await,
        fresh,
        "the same data as a load that creates the schema"
    );
    let refs = scalar_f64(&client, "SELECT count(*)::float8 FROM pg_constraint WHERE conrelid = 'invoices'::regclass AND contype = 'f'").await;
    assert_eq!(refs, 1.0, "the other table's foreign key is untouched");
}
