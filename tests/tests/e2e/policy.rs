//! `maschera policy`: the reference policy applied by the real binary to a real PostgreSQL, then checked
//! cell by cell by connecting directly as each role's login (no proxy involved): masks, dropped columns,
//! row filters, denied tables, write rules, index use, idempotent re-apply, removal of a role, and the
//! line-precise errors of `policy check`.

use maschera_tests::{PgServer, examples_dir, maschera_bin};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio_postgres::Client;

pub(crate) const DB: &str = "crm";
const KEY: &str = "test-pseudonym-key-0123456789";

/// A handful of hand-chosen rows: contacts 1 and 3 in the north, 2 in the south, 4 in the centre;
/// active marketing consent for 1 and 4, withdrawn for 2, none for 3.
const DATA: &str = "
INSERT INTO contacts (id, first_name, last_name, email, phone, birth_date, tax_code, street_address, city, region) VALUES
 (1, 'Mario', 'Rossi', 'mario.rossi@example.it', '+39 333 1234567', '1980-05-17', 'RSSMRA80E17F205X', 'Via Roma 1', 'Milano', 'north'),
 (2, 'Giulia', 'Bianchi', 'giulia@example.it', '+39 333 7654321', '1992-11-03', 'BNCGLI92S43H501Y', 'Via Toledo 2', 'Napoli', 'south'),
 (3, 'Luca', 'Verdi', 'luca.verdi@example.it', '+39 347 5550001', '1975-01-30', 'VRDLCU75A30L219Z', 'Corso Francia 3', 'Torino', 'north'),
 (4, 'Anna', 'Neri', 'anna@example.it', '+39 320 5550002', '2000-12-31', 'NRANNA00T71H501W', 'Via Po 4', 'Roma', 'centre');
SELECT setval('contacts_id_seq', 100);
INSERT INTO consents (id, contact_id, purpose, granted_at, withdrawn_at, source) VALUES
 (1, 1, 'marketing', '2024-01-01', NULL, 'web'),
 (2, 2, 'marketing', '2024-01-01', '2024-06-01', 'web'),
 (3, 2, 'newsletter', '2024-01-01', NULL, 'web'),
 (4, 4, 'marketing', '2024-02-01', NULL, 'phone');
SELECT setval('consents_id_seq', 100);
INSERT INTO deals (id, contact_id, amount, stage) VALUES (1, 1, 1000.00, 'won'), (2, 2, 2500.50, 'open'), (3, 3, 300.00, 'lost');
SELECT setval('deals_id_seq', 100);
INSERT INTO interactions (id, contact_id, channel, notes) VALUES
 (1, 1, 'call', 'asked about pricing'), (2, 2, 'email', 'complained about invoice'), (3, 4, 'meeting', 'renewal');
SELECT setval('interactions_id_seq', 100);
INSERT INTO tickets (id, contact_id, subject, body, status) VALUES
 (1, 1, 'Login problem', 'cannot log in', 'open'), (2, 2, 'Invoice', 'wrong amount', 'closed');
SELECT setval('tickets_id_seq', 100);
INSERT INTO health_records (id, contact_id, condition, notes) VALUES (1, 2, 'asthma', 'mild');
INSERT INTO judicial_records (id, contact_id, offence, sentence_date) VALUES (1, 3, 'fraud', '2010-01-01');
";

/// A private PostgreSQL with the CRM, the data above and the reference policy applied.
pub(crate) struct Crm {
    pub(crate) pg: PgServer,
    pub(crate) policy: PathBuf,
    credentials: PathBuf,
}

impl Crm {
    pub(crate) fn start() -> Crm {
        let pg = PgServer::start().expect("start PostgreSQL");
        pg.create_crm_schema(DB).expect("CRM schema");
        pg.psql(DB, &["-c", DATA]).expect("CRM data");
        let credentials = pg.dir().join("logins.toml");
        let crm = Crm {
            policy: examples_dir().join("crm/policy.toml"),
            credentials,
            pg,
        };
        let out = crm.apply(&crm.policy, &[]);
        assert!(
            out.status.success(),
            "policy apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crm
    }

    pub(crate) fn apply(&self, policy: &Path, extra: &[&str]) -> Output {
        Command::new(maschera_bin())
            .args(["policy", "apply"])
            .arg(policy)
            .args(["--upstream", &self.pg.uri(DB), "--credentials"])
            .arg(&self.credentials)
            .args(extra)
            .env("MASCHERA_PSEUDONYM_KEY", KEY)
            .output()
            .expect("run maschera")
    }

    /// Applies the reference policy again (after a test broke its objects); panics with apply's stderr
    /// when it fails.
    pub(crate) fn reapply(&self) {
        let out = self.apply(&self.policy, &[]);
        assert!(
            out.status.success(),
            "re-apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn password(&self, role: &str) -> String {
        let credentials = maschera::admin::credentials::Credentials::load(&self.credentials)
            .expect("credentials file");
        let login = credentials
            .login(role)
            .unwrap_or_else(|| panic!("no login for {role}"));
        assert_eq!(login.user, format!("maschera_{role}"));
        login.password.clone()
    }

    /// Connects directly to PostgreSQL as the role's login, with `maschera.region` and its seal set at
    /// startup (as the proxy sends them).
    pub(crate) async fn connect(&self, role: &str, region: Option<&str>) -> Client {
        let mut config: tokio_postgres::Config = self
            .pg
            .uri_as(&format!("maschera_{role}"), &self.password(role), DB)
            .parse()
            .expect("uri");
        if let Some(region) = region {
            config.options(maschera_tests::seal::region_options(
                &self.pg,
                DB,
                &format!("maschera_{role}"),
                region,
            ));
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect as role login");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

pub(crate) async fn text(client: &Client, sql: &str) -> Vec<Option<String>> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, Option<String>>(0))
        .collect()
}

pub(crate) async fn one(client: &Client, sql: &str) -> String {
    let rows = text(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0].clone().unwrap_or_else(|| "NULL".into())
}

pub(crate) async fn ids(client: &Client, table: &str) -> Vec<i64> {
    client
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn columns(client: &Client, role: &str, table: &str) -> Vec<String> {
    text(
        client,
        &format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'maschera_{role}' AND table_name = '{table}' ORDER BY ordinal_position"
        ),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// The SQLSTATE of a failing statement (panics if it succeeds).
pub(crate) async fn refused(client: &Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected `{sql}` to fail"),
        Err(err) => err
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| err.to_string()),
    }
}

const ALL_CONTACT_COLUMNS: &[&str] = &[
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "tax_code",
    "street_address",
    "city",
    "region",
    "created_at",
    "last_activity_at",
];

fn without(all: &[&str], dropped: &[&str]) -> Vec<String> {
    all.iter()
        .filter(|c| !dropped.contains(c))
        .map(|c| c.to_string())
        .collect()
}

#[tokio::test]
async fn every_role_sees_exactly_its_cells_of_the_matrix() {
    let crm = Crm::start();
    let consents = [
        "id",
        "contact_id",
        "purpose",
        "granted_at",
        "withdrawn_at",
        "source",
    ];
    let deals = [
        "id",
        "contact_id",
        "amount",
        "stage",
        "created_at",
        "closed_at",
    ];
    let interactions = ["id", "contact_id", "channel", "notes", "occurred_at"];
    let tickets = [
        "id",
        "contact_id",
        "subject",
        "body",
        "status",
        "created_at",
    ];

    // sales: everything shown except birth_date (year) and tax_code (mask.last(4)).
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(
        columns(&sales, "sales", "contacts").await,
        without(ALL_CONTACT_COLUMNS, &[])
    );
    let row = "SELECT concat_ws('|', id, first_name, last_name, email, phone, birth_date, tax_code, street_address, \
               city, region) FROM contacts WHERE id = 1";
    assert_eq!(
        one(&sales, row).await,
        "1|Mario|Rossi|mario.rossi@example.it|+39 333 1234567|1980-01-01|************205X|Via Roma 1|Milano|north"
    );
    assert_eq!(
        columns(&sales, "sales", "consents").await,
        without(&consents, &[])
    );
    assert_eq!(
        columns(&sales, "sales", "deals").await,
        without(&deals, &[])
    );
    assert_eq!(
        columns(&sales, "sales", "interactions").await,
        without(&interactions, &[])
    );
    assert_eq!(
        columns(&sales, "sales", "tickets").await,
        without(&tickets, &[])
    );
    assert_eq!(
        one(&sales, "SELECT notes FROM interactions WHERE id = 1").await,
        "asked about pricing"
    );
    assert_eq!(
        one(
            &sales,
            "SELECT concat_ws('|', subject, body) FROM tickets WHERE id = 1"
        )
        .await,
        "Login problem|cannot log in"
    );
    assert_eq!(
        one(&sales, "SELECT amount::text FROM deals WHERE id = 1").await,
        "1000.00"
    );

    // marketing: phone, tax_code, street_address dropped; birth_date year; interactions without notes.
    let marketing = crm.connect("marketing", None).await;
    assert_eq!(
        columns(&marketing, "marketing", "contacts").await,
        without(
            ALL_CONTACT_COLUMNS,
            &["phone", "tax_code", "street_address"]
        )
    );
    assert_eq!(
        one(&marketing, "SELECT concat_ws('|', id, first_name, last_name, email, birth_date) FROM contacts WHERE id = 1")
            .await,
        "1|Mario|Rossi|mario.rossi@example.it|1980-01-01"
    );
    assert_eq!(
        columns(&marketing, "marketing", "consents").await,
        without(&consents, &[])
    );
    assert_eq!(
        columns(&marketing, "marketing", "interactions").await,
        without(&interactions, &["notes"])
    );

    // support: last_name initial, email and phone masked, birth_date, tax_code, street_address dropped.
    let support = crm.connect("support", None).await;
    assert_eq!(
        columns(&support, "support", "contacts").await,
        without(
            ALL_CONTACT_COLUMNS,
            &["birth_date", "tax_code", "street_address"]
        )
    );
    assert_eq!(
        one(&support, "SELECT concat_ws('|', id, first_name, last_name, email, phone, city) FROM contacts WHERE id = 1")
            .await,
        "1|Mario|R.|m***@example.it|************567|Milano"
    );
    assert_eq!(
        one(&support, "SELECT email FROM contacts WHERE id = 2").await,
        "g***@example.it"
    );
    // An empty e-mail (what Django stores for a blank field) stays empty: a form posting it back
    // must not find `***` there.
    let admin = crm.pg.connect(DB).await.unwrap();
    admin
        .batch_execute("UPDATE contacts SET email = '' WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(
        one(&support, "SELECT email FROM contacts WHERE id = 3").await,
        ""
    );
    admin
        .batch_execute("UPDATE contacts SET email = 'luca.verdi@example.it' WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(
        refused(&support, "SELECT birth_date FROM contacts").await,
        "42703",
        "a dropped column does not exist"
    );
    assert_eq!(
        columns(&support, "support", "consents").await,
        without(&consents, &[])
    );
    assert_eq!(
        columns(&support, "support", "interactions").await,
        without(&interactions, &[])
    );
    assert_eq!(
        columns(&support, "support", "tickets").await,
        without(&tickets, &[])
    );
    assert_eq!(
        one(&support, "SELECT body FROM tickets WHERE id = 2").await,
        "wrong amount"
    );

    // analyst: id pseudonym, only year of birth, contact_id pseudonym everywhere, free text dropped.
    let analyst = crm.connect("analyst", None).await;
    assert_eq!(
        columns(&analyst, "analyst", "contacts").await,
        [
            "id",
            "birth_date",
            "city",
            "region",
            "created_at",
            "last_activity_at"
        ]
    );
    assert_eq!(
        columns(&analyst, "analyst", "consents").await,
        without(&consents, &[])
    );
    assert_eq!(
        columns(&analyst, "analyst", "deals").await,
        without(&deals, &[])
    );
    assert_eq!(
        columns(&analyst, "analyst", "interactions").await,
        without(&interactions, &["notes"])
    );
    assert_eq!(
        columns(&analyst, "analyst", "tickets").await,
        without(&tickets, &["subject", "body"])
    );
    let pseudonym = one(&analyst, "SELECT id FROM contacts WHERE city = 'Milano'").await;
    assert_eq!(pseudonym.len(), 64);
    assert!(
        pseudonym
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{pseudonym}"
    );
    assert_eq!(
        one(&analyst, "SELECT pg_typeof(id)::text FROM contacts LIMIT 1").await,
        "text"
    );
    assert_eq!(
        one(
            &analyst,
            "SELECT birth_date::text FROM contacts WHERE city = 'Milano'"
        )
        .await,
        "1980-01-01"
    );
    // Keyed and deterministic: sha256(key || value), never the unkeyed hash of the id.
    let admin = crm.pg.connect(DB).await.expect("superuser");
    assert_eq!(
        one(
            &admin,
            &format!("SELECT encode(sha256(convert_to('{KEY}' || '1', 'UTF8')), 'hex')")
        )
        .await,
        pseudonym
    );
    assert_ne!(
        one(&admin, "SELECT encode(sha256('1'::bytea), 'hex')").await,
        pseudonym
    );
    // The same in every table, so joins on it still work; the child tables' own ids are pseudonyms
    // scoped by their table (`pseudonym.table`): keyed, hex, and never equal to a contact's.
    for table in ["consents", "deals", "interactions", "tickets"] {
        let row_pseudonym = one(
            &admin,
            &format!(
                "SELECT encode(sha256(convert_to('{KEY}' || 'public.{table}:' || '1', 'UTF8')), 'hex')"
            ),
        )
        .await;
        assert_ne!(row_pseudonym, pseudonym);
        let in_table = text(
            &analyst,
            &format!("SELECT contact_id FROM {table} WHERE id = '{row_pseudonym}'"),
        )
        .await;
        assert_eq!(
            in_table,
            [Some(pseudonym.clone())],
            "{table}.contact_id of contact 1"
        );
    }
    assert_eq!(
        one(&analyst, "SELECT count(*)::text FROM deals d JOIN contacts c ON c.id = d.contact_id WHERE c.city = 'Milano'")
            .await,
        "1"
    );
    let distinct = one(&analyst, "SELECT count(DISTINCT id)::text FROM contacts").await;
    assert_eq!(distinct, "4");
    // The key is in no view definition and the analyst cannot read the key table.
    let definitions = text(
        &admin,
        "SELECT definition FROM pg_views WHERE schemaname LIKE 'maschera%'",
    )
    .await;
    assert!(
        definitions.iter().flatten().all(|d| !d.contains(KEY)),
        "no key in view definitions"
    );
    assert_eq!(
        refused(&analyst, "SELECT * FROM maschera_private.keys").await,
        "42501"
    );
}

#[tokio::test]
async fn row_filters_follow_the_region_and_the_active_consent() {
    let crm = Crm::start();
    let sam = crm.connect("sales", Some("north")).await;
    assert_eq!(ids(&sam, "contacts").await, [1, 3]);
    assert_eq!(ids(&sam, "consents").await, [1]);
    assert_eq!(ids(&sam, "deals").await, [1, 3]);
    assert_eq!(ids(&sam, "interactions").await, [1]);
    assert_eq!(ids(&sam, "tickets").await, [1]);

    let sara = crm.connect("sales", Some("south")).await;
    assert_eq!(ids(&sara, "contacts").await, [2]);
    assert_eq!(ids(&sara, "consents").await, [2, 3]);
    assert_eq!(ids(&sara, "deals").await, [2]);
    assert_eq!(ids(&sara, "interactions").await, [2]);
    assert_eq!(ids(&sara, "tickets").await, [2]);

    // A predicate on a hidden row finds nothing: the filter comes first (security barrier).
    assert!(
        ids(&sara, "contacts WHERE email = 'mario.rossi@example.it'")
            .await
            .is_empty()
    );

    let no_region = crm.connect("sales", None).await;
    for table in ["contacts", "consents", "deals", "interactions", "tickets"] {
        assert!(
            ids(&no_region, table).await.is_empty(),
            "sales without a region sees no {table}"
        );
    }

    let marketing = crm.connect("marketing", None).await;
    assert_eq!(ids(&marketing, "contacts").await, [1, 4]);
    assert_eq!(ids(&marketing, "consents").await, [1, 4]);
    assert_eq!(ids(&marketing, "interactions").await, [1, 3]);

    let analyst = crm.connect("analyst", None).await;
    assert_eq!(
        one(&analyst, "SELECT count(*)::text FROM contacts").await,
        "4"
    );
    let support = crm.connect("support", None).await;
    assert_eq!(ids(&support, "contacts").await, [1, 2, 3, 4]);
    assert_eq!(ids(&support, "consents").await, [1, 2, 3, 4]);
    assert_eq!(ids(&support, "interactions").await, [1, 2, 3]);
    assert_eq!(ids(&support, "tickets").await, [1, 2]);
    // The analyst's child ids are pseudonyms: the same rows, counted.
    for (table, rows) in [("consents", "4"), ("interactions", "3"), ("tickets", "2")] {
        assert_eq!(
            one(
                &analyst,
                &format!("SELECT count(DISTINCT id)::text FROM {table}")
            )
            .await,
            rows,
            "{table}"
        );
    }
}

#[tokio::test]
async fn denied_tables_and_base_tables_are_out_of_reach() {
    let crm = Crm::start();
    let denied: &[(&str, &[&str])] = &[
        ("sales", &["health_records", "judicial_records"]),
        (
            "marketing",
            &["deals", "tickets", "health_records", "judicial_records"],
        ),
        ("support", &["deals", "health_records", "judicial_records"]),
        ("analyst", &["health_records", "judicial_records"]),
    ];
    let base = [
        "contacts",
        "consents",
        "deals",
        "interactions",
        "tickets",
        "health_records",
        "judicial_records",
    ];
    for (role, tables) in denied {
        let client = crm.connect(role, Some("north")).await;
        let views: BTreeSet<String> = text(
            &client,
            &format!("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'maschera_{role}'"),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
        for table in *tables {
            assert!(!views.contains(*table), "{role} has no view of {table}");
            assert_eq!(
                refused(&client, &format!("SELECT * FROM {table}")).await,
                "42P01",
                "{role} {table}"
            );
        }
        for table in base {
            assert_eq!(
                refused(&client, &format!("SELECT 1 FROM public.{table}")).await,
                "42501",
                "{role} public.{table}"
            );
        }
        assert_eq!(
            refused(&client, "CREATE TABLE public.mine (x int)").await,
            "42501",
            "{role} creates nothing"
        );
    }
}

#[tokio::test]
async fn write_rules_allow_exactly_what_the_reference_says() {
    let crm = Crm::start();
    const DENIED: &str = "42501";
    // A row outside the filter is refused by the table's row-level security (WITH CHECK).
    const CHECK_OPTION: &str = "42501";
    // PostgreSQL refuses writes to a masked (computed) view column before it checks privileges.
    // A masked column written with another value than the role reads: refused by the view's write trigger.
    const NOT_UPDATABLE: &str = "42501";

    let sam = crm.connect("sales", Some("north")).await;
    let inserted = sam
        .query_one(
            "INSERT INTO contacts (first_name, last_name, email, phone, region) \
             VALUES ('Paolo', 'Gialli', 'paolo@example.it', '+39 1', 'north') RETURNING id",
            &[],
        )
        .await
        .expect("sales inserts a contact of its region");
    let new_id: i64 = inserted.get(0);
    assert_eq!(new_id, 101, "the id comes from the table's sequence");
    assert_eq!(
        refused(&sam, "INSERT INTO contacts (first_name, last_name, email, phone, region) VALUES ('X', 'Y', 'x@e.it', '+2', 'south')")
            .await,
        CHECK_OPTION
    );
    assert_eq!(
        refused(&sam, "INSERT INTO contacts (first_name, last_name, email, phone, region, tax_code) VALUES ('X', 'Y', 'x@e.it', '+2', 'north', 'T')")
            .await,
        NOT_UPDATABLE,
        "tax_code is masked for sales, so not writable"
    );
    assert_eq!(
        sam.execute(
            "UPDATE contacts SET first_name = 'Mariolino' WHERE id = 1",
            &[]
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        sam.execute("UPDATE contacts SET first_name = 'X' WHERE id = 2", &[])
            .await
            .unwrap(),
        0,
        "south is invisible"
    );
    assert_eq!(
        refused(&sam, "UPDATE contacts SET region = 'south' WHERE id = 1").await,
        CHECK_OPTION
    );
    assert_eq!(
        refused(
            &sam,
            "UPDATE contacts SET birth_date = '2000-01-01' WHERE id = 1"
        )
        .await,
        NOT_UPDATABLE
    );
    sam.execute(
        "INSERT INTO deals (contact_id, amount, stage) VALUES (1, 50, 'open')",
        &[],
    )
    .await
    .expect("deal");
    assert_eq!(
        refused(
            &sam,
            "INSERT INTO deals (contact_id, amount, stage) VALUES (2, 50, 'open')"
        )
        .await,
        CHECK_OPTION
    );
    assert_eq!(
        sam.execute("UPDATE deals SET stage = 'won' WHERE id = 3", &[])
            .await
            .unwrap(),
        1
    );
    sam.execute(
        "INSERT INTO interactions (contact_id, channel, notes) VALUES (1, 'call', 'x')",
        &[],
    )
    .await
    .expect("interaction");
    assert_eq!(
        sam.execute("DELETE FROM interactions WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        sam.execute("DELETE FROM deals WHERE id = 2", &[])
            .await
            .unwrap(),
        0,
        "south is invisible"
    );
    assert_eq!(
        sam.execute(&format!("DELETE FROM contacts WHERE id = {new_id}"), &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        refused(
            &sam,
            "INSERT INTO tickets (contact_id, subject, status) VALUES (1, 's', 'open')"
        )
        .await,
        DENIED
    );
    assert_eq!(
        refused(&sam, "UPDATE tickets SET status = 'closed'").await,
        DENIED
    );
    assert_eq!(
        refused(
            &sam,
            "INSERT INTO consents (contact_id, purpose, granted_at) VALUES (1, 'marketing', now())"
        )
        .await,
        DENIED
    );
    assert_eq!(refused(&sam, "DELETE FROM consents").await, DENIED);

    let support = crm.connect("support", None).await;
    support
        .execute("INSERT INTO consents (contact_id, purpose, granted_at, source) VALUES (3, 'marketing', now(), 'phone')", &[])
        .await
        .expect("support records a consent");
    assert_eq!(
        support
            .execute("UPDATE consents SET withdrawn_at = now() WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        refused(&support, "DELETE FROM consents WHERE id = 1").await,
        DENIED
    );
    // Support reads subject and body redacted and may set them in a new row (the view's INSTEAD OF
    // INSERT trigger stores them as given); the row comes back as support sees it.
    let returned = one(
        &support,
        "INSERT INTO tickets (contact_id, subject, status) VALUES (2, 'Help: call +39 333 0000001', 'open') \
         RETURNING subject || '|' || status || '|' || (id > 100)::text",
    )
    .await;
    assert_eq!(returned, "Help: call [phone]|open|true");
    let admin = crm.pg.connect(DB).await.expect("superuser");
    assert_eq!(
        one(
            &admin,
            "SELECT subject || '|' || coalesce(body, 'NULL') FROM tickets WHERE id > 100"
        )
        .await,
        "Help: call +39 333 0000001|NULL",
        "stored as written, defaults for the rest"
    );
    assert_eq!(
        support
            .execute("UPDATE tickets SET status = 'closed' WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        refused(&support, "DELETE FROM tickets WHERE id = 1").await,
        DENIED
    );
    support
        .execute(
            "INSERT INTO interactions (contact_id, channel) VALUES (2, 'call')",
            &[],
        )
        .await
        .expect("interaction");
    // notes is redacted for support: an expression column, which PostgreSQL refuses to write (0A000)
    // before it looks at privileges.
    assert_eq!(
        refused(&support, "UPDATE interactions SET notes = 'x'").await,
        "0A000"
    );
    assert_eq!(refused(&support, "DELETE FROM interactions").await, DENIED);
    assert_eq!(
        refused(&support, "UPDATE contacts SET first_name = 'x'").await,
        DENIED
    );
    assert_eq!(
        refused(
            &support,
            "INSERT INTO contacts (first_name, city, region) VALUES ('X', 'Roma', 'north')"
        )
        .await,
        DENIED
    );

    let marketing = crm.connect("marketing", None).await;
    assert_eq!(
        refused(
            &marketing,
            "INSERT INTO consents (contact_id, purpose, granted_at) VALUES (3, 'marketing', now())"
        )
        .await,
        DENIED,
        "marketing cannot grant itself a consent"
    );
    assert_eq!(
        refused(&marketing, "UPDATE consents SET withdrawn_at = NULL").await,
        DENIED
    );
    assert_eq!(
        refused(&marketing, "UPDATE contacts SET first_name = 'x'").await,
        DENIED
    );
    assert_eq!(
        refused(&marketing, "DELETE FROM interactions").await,
        DENIED
    );

    let analyst = crm.connect("analyst", None).await;
    for sql in [
        "UPDATE contacts SET city = 'x'",
        "DELETE FROM consents",
        "UPDATE deals SET stage = 'x'",
        "INSERT INTO interactions (channel) VALUES ('call')",
        "DELETE FROM tickets",
    ] {
        assert_eq!(refused(&analyst, sql).await, DENIED, "{sql}");
    }
    let admin = crm.pg.connect(DB).await.expect("superuser");
    assert_eq!(
        one(&admin, "SELECT first_name FROM contacts WHERE id = 1").await,
        "Mariolino"
    );
    assert_eq!(
        one(&admin, "SELECT count(*)::text FROM contacts").await,
        "4"
    );
}

#[tokio::test]
async fn point_lookups_through_the_views_use_the_primary_key() {
    let crm = Crm::start();
    crm.pg
        .psql(
            DB,
            &["-c", "INSERT INTO contacts (id, first_name, last_name, email, phone, region) \
                     SELECT g, 'n', 'l', 'e' || g || '@example.it', '+' || g, (ARRAY['north','centre','south'])[g % 3 + 1] \
                     FROM generate_series(1000, 20000) g; ANALYZE"],
        )
        .expect("more contacts");
    for (role, region) in [("sales", Some("north")), ("support", None)] {
        let client = crm.connect(role, region).await;
        let plan = text(&client, "EXPLAIN SELECT * FROM contacts WHERE id = 1000").await;
        let plan = plan.into_iter().flatten().collect::<Vec<_>>().join("\n");
        assert!(
            plan.contains("Index Scan using contacts_pkey"),
            "{role}: {plan}"
        );
        assert!(!plan.contains("Seq Scan on contacts"), "{role}: {plan}");
    }
}

#[tokio::test]
async fn reapply_changes_nothing_and_a_removed_role_loses_its_login() {
    let crm = Crm::start();
    let admin = crm.pg.connect(DB).await.expect("superuser");
    let snapshot = || async {
        let mut all = Vec::new();
        for sql in [
            "SELECT schemaname || '.' || viewname || ' ' || definition FROM pg_views WHERE schemaname LIKE 'maschera%' ORDER BY 1",
            "SELECT r.rolname || ' ' || r.rolcanlogin || r.rolinherit || r.rolsuper || ' ' || \
             coalesce(r.rolconfig::text, '') || ' ' || coalesce(a.rolpassword, '') \
             FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname LIKE 'maschera%' ORDER BY 1",
            "SELECT concat_ws(' ', grantee, table_schema, table_name, privilege_type) FROM information_schema.role_table_grants \
             WHERE grantee LIKE 'maschera%' ORDER BY 1",
            "SELECT concat_ws(' ', grantee, table_schema, table_name, column_name, privilege_type) \
             FROM information_schema.column_privileges WHERE grantee LIKE 'maschera%' ORDER BY 1",
            "SELECT nspname || ' ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname LIKE 'maschera%' ORDER BY 1",
            // Every key stays (the attributes' seal key too: it rotates with --rotate only).
            "SELECT name || ' ' || encode(key, 'hex') FROM maschera_private.keys ORDER BY 1",
        ] {
            all.extend(text(&admin, sql).await.into_iter().flatten());
        }
        // A guard names the oid and row version of the policy it checks, which a re-apply renews.
        all.iter()
            .map(|line| match line.find("maschera_private.intact(") {
                Some(at) => line[..at].to_string(),
                None => line.clone(),
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot().await;
    let credentials_before = std::fs::read_to_string(&crm.credentials).unwrap();
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("maschera_support.contacts"))
    );
    let out = crm.apply(&crm.policy, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot().await, before, "a second apply changes nothing");
    assert_eq!(
        std::fs::read_to_string(&crm.credentials).unwrap(),
        credentials_before
    );
    // The old password still works.
    let marketing = crm.connect("marketing", None).await;
    assert_eq!(ids(&marketing, "contacts").await, [1, 4]);
    drop(marketing);

    // Without marketing: its schema, its login and its credentials go; the others stay.
    let text_policy = std::fs::read_to_string(&crm.policy).unwrap();
    let mut kept = String::new();
    let mut skipping = false;
    for line in text_policy.lines() {
        if line.starts_with('[') {
            skipping = line.starts_with("[roles.marketing");
        }
        // The role's statement on automated decisions (Art. 15(1)(h)) goes with it.
        if !skipping && !line.starts_with("marketing = ") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let smaller = crm.pg.dir().join("policy-without-marketing.toml");
    std::fs::write(&smaller, kept).unwrap();
    let out = crm.apply(&smaller, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let roles = text(
        &admin,
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'maschera%' ORDER BY 1",
    )
    .await;
    let roles: Vec<String> = roles.into_iter().flatten().collect();
    assert_eq!(
        roles,
        [
            "maschera_analyst",
            "maschera_analyst_owner",
            "maschera_analyst_writer",
            "maschera_sales",
            "maschera_sales_owner",
            "maschera_sales_writer",
            "maschera_support",
            "maschera_support_owner",
            "maschera_support_writer",
        ]
    );
    let schemas = text(
        &admin,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'maschera%' ORDER BY 1",
    )
    .await;
    let schemas: Vec<String> = schemas.into_iter().flatten().collect();
    assert_eq!(
        schemas,
        [
            "maschera_analyst",
            "maschera_lookup",
            "maschera_private",
            "maschera_sales",
            "maschera_support"
        ]
    );
    assert!(
        !std::fs::read_to_string(&crm.credentials)
            .unwrap()
            .contains("marketing")
    );
    let support = crm.connect("support", None).await;
    assert_eq!(ids(&support, "contacts").await, [1, 2, 3, 4]);

    // --rotate gives new passwords that work.
    let old = crm.password("support");
    let out = crm.apply(&smaller, &["--rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(crm.password("support"), old);
    let support = crm.connect("support", None).await;
    assert_eq!(ids(&support, "tickets").await, [1, 2]);
}

#[tokio::test]
async fn dry_run_prints_the_sql_without_secrets_and_changes_nothing() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema(DB).expect("CRM schema");
    let out = Command::new(maschera_bin())
        .args(["policy", "apply"])
        .arg(examples_dir().join("crm/policy.toml"))
        .args(["--upstream", &pg.uri(DB), "--dry-run", "--credentials"])
        .arg(pg.dir().join("logins.toml"))
        .env("MASCHERA_PSEUDONYM_KEY", KEY)
        .output()
        .expect("run maschera");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.starts_with("BEGIN;\n") && sql.trim_end().ends_with("COMMIT;"));
    assert!(
        sql.contains("pg_catalog.format('CREATE VIEW \"maschera_sales\".\"contacts\" AS SELECT")
    );
    assert!(sql.contains(
        "CREATE POLICY \"maschera_sales\" ON \"public\".\"contacts\" AS RESTRICTIVE FOR ALL TO \"maschera_sales_owner\" \
         USING (region = (SELECT maschera_private.attribute('maschera.region')))"
    ));
    assert!(sql.contains("GRANT DELETE ON \"maschera_sales\".\"contacts\" TO \"maschera_sales\""));
    assert!(!sql.contains(KEY), "the key is not printed");
    assert!(
        !sql.contains("SCRAM-SHA-256"),
        "no password verifier is printed"
    );
    assert!(sql.contains("'<pseudonym key, not shown>'"));
    assert!(sql.contains("'<attribute seal key, not shown>'"));
    assert!(!pg.dir().join("logins.toml").exists());
    let admin = pg.connect(DB).await.unwrap();
    assert!(
        text(
            &admin,
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'maschera%'"
        )
        .await
        .is_empty()
    );

    // A same-named login that apply did not make stops it before anything changes.
    admin
        .batch_execute("CREATE ROLE maschera_support LOGIN")
        .await
        .unwrap();
    let crm = Crm {
        policy: examples_dir().join("crm/policy.toml"),
        credentials: pg.dir().join("logins.toml"),
        pg,
    };
    let out = crm.apply(&crm.policy, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`maschera_support` already exists and was not created by maschera"),
        "{stderr}"
    );
    let schemas = text(
        &admin,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'maschera%'",
    )
    .await;
    assert!(schemas.is_empty(), "nothing changed: {schemas:?}");
    assert!(!crm.credentials.exists());
}

fn check(policy_text: &str, dir: &Path, upstream: Option<&str>) -> (bool, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, policy_text).unwrap();
    let mut cmd = Command::new(maschera_bin());
    cmd.args(["policy", "check"]).arg(&path);
    if let Some(url) = upstream {
        cmd.args(["--upstream", url]);
    }
    let out = cmd.output().expect("run maschera");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn policy_check_names_file_line_and_column_and_what_would_be_right() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema(DB).expect("CRM schema");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let file = file.display();

    let (ok, stderr) = check(
        "[tables.contacts.columns]\ntax_code = \"national_identifier\"\n\n[roles.sales.tables.contacts]\ncolumns = { tax_code = \"mask.lst(4)\" }\n",
        dir.path(),
        None,
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{file}:5:24: error: unknown action `mask.lst(4)`")),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `mask.last(4)`?"), "{stderr}");

    let (ok, stderr) = check("[roles.sales]\ndescripton = \"x\"\n", dir.path(), None);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{file}:2:1: error: unknown key `descripton`")),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `description`?"), "{stderr}");

    // Against the live database: a column that does not exist, a mask that does not fit the type,
    // a filter PostgreSQL refuses.
    let live = "[tables.contacts.columns]\nemial = \"contact\"\nbirth_date = \"identifying\"\n\
                last_activity_at = \"identifying\"\n\n[roles.sales.tables.contacts]\n\
                columns = { birth_date = \"mask.email\", last_activity_at = \"constant('never')\" }\n\
                filter = \"regoin = 'north'\"\n";
    let (ok, stderr) = check(live, dir.path(), None);
    assert!(ok, "valid without a database: {stderr}");
    let (ok, stderr) = check(live, dir.path(), Some(&pg.uri(DB)));
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{file}:2:1: error: column `emial` does not exist in table `public.contacts`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `email`?"), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:7:26: error: `mask.email` needs a text column (text, varchar, char), but the column is `date`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:8:10: error: row filter of role `sales` on `contacts` is refused"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("regoin"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:7:59: error: constant 'never' does not fit column `last_activity_at` (`timestamp with time zone`)"
        )),
        "{stderr}"
    );

    let (ok, stdout_or_err) = check(
        &std::fs::read_to_string(examples_dir().join("crm/policy.toml")).unwrap(),
        dir.path(),
        Some(&pg.uri(DB)),
    );
    assert!(
        ok,
        "the reference policy matches the reference schema: {stdout_or_err}"
    );
}

#[tokio::test]
async fn policy_explain_prints_the_rewritten_statement_or_the_refusal() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema(DB).expect("CRM schema");
    let explain = |role: &str, sql: &str| {
        let out = Command::new(maschera_bin())
            .args(["policy", "explain"])
            .arg(examples_dir().join("crm/policy.toml"))
            .args(["--role", role, "--upstream", &pg.uri(DB), sql])
            .output()
            .expect("run maschera");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = explain("support", "SELECT email FROM contacts WHERE id = 1");
    assert!(ok, "{out}");
    assert!(
        out.contains("SELECT email FROM \"maschera_support\".\"contacts\" WHERE id = 1;"),
        "{out}"
    );
    assert!(out.contains("email (contact, masked)"), "{out}");
    let (ok, out) = explain("support", "SELECT * FROM deals");
    assert!(!ok);
    assert!(
        out.starts_with("refused (42501):") && out.contains("deals"),
        "{out}"
    );
    let (ok, out) = explain("dpo", "SELECT * FROM health_records");
    assert!(ok);
    assert!(
        out.contains("unrestricted") && out.contains("SELECT * FROM health_records"),
        "{out}"
    );
}

/// The actions the reference matrix does not use, on a real PostgreSQL: their exact output, and NULL
/// staying NULL.
const PROBE_POLICY: &str = r#"
[tables.contacts.columns]
first_name = "identifying"
last_name = "identifying"
email = "contact"
phone = "contact"
tax_code = "national_identifier"
street_address = "location"
birth_date = "identifying"

[tables.deals.columns]
amount = "financial"
created_at = { type = "timestamp with time zone" }

[roles.probe.tables.contacts]
columns = { first_name = "null", last_name = "constant('n/a')", email = "hash", phone = "mask.first(3)", tax_code = "partial(2, '...', 2)", street_address = "mask.last(2)", birth_date = "month" }

[roles.probe.tables.deals]
columns = { amount = "bucket(1000)", created_at = "year" }
"#;

#[tokio::test]
async fn the_other_actions_give_their_exact_output_on_postgresql() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema(DB).expect("CRM schema");
    pg.psql(DB, &["-c", DATA]).expect("CRM data");
    pg.psql(DB, &["-c", "UPDATE contacts SET tax_code = NULL, street_address = NULL, birth_date = NULL WHERE id = 3"])
        .expect("NULLs");
    let crm = Crm {
        policy: pg.dir().join("probe.toml"),
        credentials: pg.dir().join("logins.toml"),
        pg,
    };
    std::fs::write(&crm.policy, PROBE_POLICY).unwrap();
    let out = crm.apply(&crm.policy, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = crm.connect("probe", None).await;
    let row = "SELECT concat_ws('|', id, coalesce(first_name, 'NULL'), last_name, phone, tax_code, street_address, \
               birth_date) FROM contacts WHERE id = 1";
    assert_eq!(
        one(&probe, row).await,
        "1|NULL|n/a|+39************|RS...5X|******** 1|1980-05-01"
    );
    let nulls = "SELECT concat_ws('|', tax_code IS NULL, street_address IS NULL, birth_date IS NULL) FROM contacts WHERE id = 3";
    assert_eq!(one(&probe, nulls).await, "t|t|t");
    let admin = crm.pg.connect(DB).await.unwrap();
    let expected_hash = one(
        &admin,
        "SELECT encode(sha256(key || convert_to('public.contacts.email:mario.rossi@example.it', 'UTF8')), 'hex') \
         FROM maschera_private.keys WHERE name = 'hash'",
    )
    .await;
    assert_eq!(
        one(&probe, "SELECT email FROM contacts WHERE id = 1").await,
        expected_hash
    );
    assert_eq!(expected_hash.len(), 64);
    assert_eq!(
        one(&probe, "SELECT amount::text FROM deals WHERE id = 2").await,
        "2000.00"
    );
    assert_eq!(
        one(&probe, "SELECT amount::text FROM deals WHERE id = 3").await,
        "0.00"
    );
    assert_eq!(
        one(&probe, "SELECT created_at::text FROM deals WHERE id = 1").await,
        one(
            &admin,
            "SELECT date_trunc('year', created_at)::text FROM deals WHERE id = 1"
        )
        .await
    );
    assert_eq!(
        refused(&probe, "SELECT * FROM consents").await,
        "42P01",
        "tables without a rule are denied"
    );
}

#[tokio::test]
async fn views_are_recompiled_around_a_schema_change_in_one_transaction() {
    let crm = Crm::start();
    let admin = crm.pg.connect(DB).await.expect("superuser");
    let ddl = "ALTER TABLE contacts DROP COLUMN last_activity_at";
    assert_eq!(
        refused(&admin, ddl).await,
        "2BP01",
        "PostgreSQL refuses while views depend on the column"
    );

    let text_policy = std::fs::read_to_string(&crm.policy).unwrap();
    let policy = policy::Policy::parse("policy.toml", &text_policy).unwrap();
    admin.batch_execute("BEGIN").await.unwrap();
    for step in policy::apply_sql::drop_views_steps(&policy) {
        admin.batch_execute(&step.sql).await.unwrap();
    }
    admin
        .batch_execute(ddl)
        .await
        .expect("the DDL runs once the views are gone");
    let live = maschera::admin::policy_apply::read_live_state(&admin)
        .await
        .unwrap();
    let access = policy.compile(&live.catalog).unwrap();
    for step in policy::apply_sql::recreate_views_steps(&policy, &access, &live) {
        assert!(step.secret.is_none());
        admin
            .batch_execute(&step.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", step.sql));
    }
    admin.batch_execute("COMMIT").await.unwrap();

    let support = crm.connect("support", None).await;
    assert_eq!(
        columns(&support, "support", "contacts").await,
        without(
            ALL_CONTACT_COLUMNS,
            &[
                "birth_date",
                "tax_code",
                "street_address",
                "last_activity_at"
            ]
        )
    );
    assert_eq!(
        one(&support, "SELECT email FROM contacts WHERE id = 1").await,
        "m***@example.it"
    );
    let sam = crm.connect("sales", Some("north")).await;
    assert_eq!(ids(&sam, "consents").await, [1]);
    sam.execute(
        "INSERT INTO deals (contact_id, amount, stage) VALUES (1, 5, 'open')",
        &[],
    )
    .await
    .expect("grants are back");
}
