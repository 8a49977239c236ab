//! Write-back by restricted roles (issue 23 item 2, issue 19's write-back rule), on both locks: through
//! the proxy (simple and extended protocol) and straight as the role's login. A masked, generalised or
//! redacted value written back unchanged keeps the stored value; a changed one is refused with 42501 and
//! a message naming the column (the trigger's or the proxy's write-back function's own text, let through
//! the error scrub); an insert may give such a column only NULL; a column the policy makes `writable`
//! stores a changed value; `ON CONFLICT DO NOTHING` through the proxy; the access record of a
//! write-back. The ORM clients of `compat` (Django, SQLAlchemy) run here straight as the logins; through
//! the proxy they run in `compat`.

use maschera_tests::crm_proxy::{CRM_DB, CRM_PSEUDONYM_KEY, apply_policy};
use maschera_tests::{CrmProxy, Fixture};
use tokio_postgres::{Client, NoTls};

const CONTACTS: u64 = 60;

async fn start() -> CrmProxy {
    Fixture::crm(CONTACTS)
        .user(("tom", "support", &[]))
        .start()
        .await
        .expect("CRM behind the proxy")
}

async fn connect(uri: &str, options: Option<&str>) -> Client {
    let mut config: tokio_postgres::Config = uri.parse().expect("uri");
    if let Some(options) = options {
        config.options(options);
    }
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Through the proxy as `user`, and straight as `role`'s login (with the region setting the proxy would
/// set): the two locks, each on its own.
async fn both_locks(crm: &CrmProxy, user: &str, role: &str) -> [(&'static str, Client); 2] {
    let credentials = maschera::admin::credentials::Credentials::load(&crm.applied.credentials)
        .expect("credentials");
    let login = credentials.login(role).expect("login");
    let region = (role == "sales")
        .then(|| maschera_tests::seal::region_options(&crm.pg, CRM_DB, &login.user, "north"));
    [
        ("proxy", connect(&crm.uri(user), None).await),
        (
            "login",
            connect(
                &crm.pg.uri_as(&login.user, &login.password, CRM_DB),
                region.as_deref(),
            )
            .await,
        ),
    ]
}

fn owner(crm: &CrmProxy, sql: &str) -> String {
    crm.pg
        .psql(CRM_DB, &["-Atc", sql])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_string()
}

async fn first(client: &Client, sql: &str) -> String {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The SQLSTATE and message of an error, asserting it is a 42501 naming `column`.
#[track_caller]
fn assert_refused_naming(
    result: Result<impl std::fmt::Debug, tokio_postgres::Error>,
    column: &str,
    what: &str,
) {
    let err = result.expect_err(what);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{what}: {err}"));
    assert_eq!(db.code().code(), "42501", "{what}: {db:?}");
    assert!(
        db.message().contains(&format!("\"{column}\"")) && db.message().contains("not writable"),
        "{what}: the message names the column: {}",
        db.message()
    );
}

/// A north contact (sam's region) with a tax code and a birth date, both masked for sales: its id and
/// its stored `tax_code|birth_date`.
fn north_contact(crm: &CrmProxy) -> (String, String) {
    let id = owner(
        crm,
        "SELECT min(id) FROM contacts WHERE region = 'north' AND tax_code IS NOT NULL AND birth_date IS NOT NULL",
    );
    let stored = owner(
        crm,
        &format!("SELECT {TAX_AND_BIRTH} FROM contacts WHERE id = {id}"),
    );
    (id, stored)
}

const TAX_AND_BIRTH: &str = "tax_code || '|' || birth_date";

/// The tax code and birth date of contact `id` as `client` reads them.
async fn read_masked(client: &Client, id: &str) -> (String, String) {
    let read = first(
        client,
        &format!("SELECT {TAX_AND_BIRTH} FROM contacts WHERE id = {id}"),
    )
    .await;
    let (tax, birth) = read.split_once('|').expect("two values");
    (tax.to_string(), birth.to_string())
}

/// A changed (generalised) birth date is refused, naming the column.
async fn refuse_a_changed_birth_date(client: &Client, id: &str, lock: &str) {
    assert_refused_naming(
        client
            .batch_execute(&format!(
                "UPDATE contacts SET birth_date = '1999-01-01' WHERE id = {id}"
            ))
            .await,
        "birth_date",
        lock,
    );
}

#[tokio::test]
async fn a_masked_value_written_back_keeps_the_stored_one_and_a_changed_one_is_refused() {
    let crm = start().await;
    let (id, stored) = north_contact(&crm);
    for (lock, client) in both_locks(&crm, "sam", "sales").await {
        let (tax, birth) = read_masked(&client, &id).await;
        assert!(
            tax.starts_with("****") && birth.ends_with("-01-01"),
            "{lock}: {tax} {birth}"
        );
        // An ORM's full save: every column, the masked ones as read (simple protocol).
        client
            .batch_execute(&format!(
                "UPDATE contacts SET first_name = 'Saved-{lock}', tax_code = '{tax}', birth_date = '{birth}', \
                 city = 'Lecco' WHERE id = {id}"
            ))
            .await
            .unwrap_or_else(|e| panic!("{lock}: write-back: {e:?}"));
        // The same through the extended protocol, with RETURNING the values as the role reads them.
        let row = client
            .query_one(
                "UPDATE contacts SET first_name = $1, tax_code = $2 WHERE id = $3::text::bigint RETURNING tax_code",
                &[&format!("Ext-{lock}"), &tax, &id],
            )
            .await
            .unwrap_or_else(|e| panic!("{lock}: extended write-back: {e:?}"));
        assert_eq!(row.get::<_, String>(0), tax, "{lock}");
        assert_eq!(
            owner(
                &crm,
                &format!(
                    "SELECT first_name || '|' || tax_code || '|' || birth_date || '|' || city FROM contacts WHERE id = {id}"
                )
            ),
            format!("Ext-{lock}|{stored}|Lecco"),
            "{lock}: the stored values are kept"
        );
        // A changed value is refused, naming the column, in both protocols.
        assert_refused_naming(
            client
                .batch_execute(&format!(
                    "UPDATE contacts SET first_name = 'No', tax_code = 'AAAAAAAAAAAAAAAA' WHERE id = {id}"
                ))
                .await,
            "tax_code",
            lock,
        );
        assert_refused_naming(
            client
                .execute(
                    "UPDATE contacts SET tax_code = $1 WHERE id = $2::text::bigint",
                    &[&"BBBBBBBBBBBBBBBB", &id],
                )
                .await,
            "tax_code",
            lock,
        );
        refuse_a_changed_birth_date(&client, &id, lock).await;
        assert_eq!(
            owner(
                &crm,
                &format!(
                    "SELECT first_name || '|' || tax_code || '|' || birth_date FROM contacts WHERE id = {id}"
                )
            ),
            format!("Ext-{lock}|{stored}"),
            "{lock}: nothing of a refused statement is stored"
        );

        // An ORM's create: every column, NULL for the masked ones; the table's defaults are stored.
        let new_id = if lock == "proxy" {
            910_001_i64
        } else {
            910_002
        };
        client
            .batch_execute(&format!(
                "INSERT INTO contacts (id, first_name, last_name, email, phone, birth_date, tax_code, street_address, city, region, created_at, last_activity_at) \
                 VALUES ({new_id}, 'New', 'Row', 'new{new_id}@example.it', '+39 {new_id}', NULL, NULL, NULL, 'Como', 'north', now(), NULL)"
            ))
            .await
            .unwrap_or_else(|e| panic!("{lock}: create: {e:?}"));
        client
            .execute(
                "INSERT INTO contacts (id, first_name, last_name, email, phone, tax_code, region) VALUES ($1, 'P', 'Q', $2, $3, $4, 'north')",
                &[&(new_id + 10), &format!("p{new_id}@example.it"), &format!("+38 {new_id}"), &None::<String>],
            )
            .await
            .unwrap_or_else(|e| panic!("{lock}: extended create: {e:?}"));
        assert_eq!(
            owner(
                &crm,
                &format!(
                    "SELECT count(*) FROM contacts WHERE id IN ({new_id}, {}) AND tax_code IS NULL AND birth_date IS NULL",
                    new_id + 10
                )
            ),
            "2",
            "{lock}"
        );
        assert_refused_naming(
            client
                .execute(
                    "INSERT INTO contacts (id, first_name, last_name, email, phone, tax_code, region) VALUES ($1, 'P', 'Q', $2, $3, $4, 'north')",
                    &[&(new_id + 20), &format!("q{new_id}@example.it"), &format!("+37 {new_id}"), &Some("CCCCCCCCCCCCCCCC".to_string())],
                )
                .await,
            "tax_code",
            lock,
        );
    }
    // The proxy refuses what it cannot wrap, before it reaches the database.
    let sam = connect(&crm.uri("sam"), None).await;
    for sql in [
        "INSERT INTO contacts (id, first_name, last_name, email, phone, tax_code, region) SELECT 1, 'a', 'b', 'c', 'd', tax_code, 'north' FROM contacts",
        "UPDATE contacts SET (first_name, tax_code) = ('a', tax_code)",
    ] {
        let err = sam.batch_execute(sql).await.expect_err(sql);
        let db = err.as_db_error().expect("db error");
        assert_eq!(db.code().code(), "42501", "{sql}");
        assert!(db.message().contains("tax_code"), "{sql}: {}", db.message());
    }
}

#[tokio::test]
async fn redacted_text_written_back_keeps_the_original_and_a_change_is_refused() {
    let crm = start().await;
    let contact = owner(&crm, "SELECT min(id) FROM contacts");
    let ticket = owner(
        &crm,
        &format!(
            "INSERT INTO tickets (id, contact_id, subject, body, status) VALUES (990001, {contact}, \
             'write to mario.rossi@example.it', 'call +39 333 1234567 today', 'open') RETURNING id"
        ),
    );
    for (lock, client) in both_locks(&crm, "tom", "support").await {
        let subject = first(
            &client,
            &format!("SELECT subject FROM tickets WHERE id = {ticket}"),
        )
        .await;
        assert_eq!(subject, "write to [email]", "{lock}");
        let body = first(
            &client,
            &format!("SELECT body FROM tickets WHERE id = {ticket}"),
        )
        .await;
        client
            .execute(
                "UPDATE tickets SET contact_id = contact_id, subject = $1, body = $2, status = $3 WHERE id = $4::text::bigint",
                &[&subject, &body, &format!("pending-{lock}"), &ticket],
            )
            .await
            .unwrap_or_else(|e| panic!("{lock}: write-back of redacted text: {e:?}"));
        assert_eq!(
            owner(
                &crm,
                &format!(
                    "SELECT subject || '|' || body || '|' || status FROM tickets WHERE id = {ticket}"
                )
            ),
            format!("write to mario.rossi@example.it|call +39 333 1234567 today|pending-{lock}"),
            "{lock}: the original text is kept"
        );
        assert_refused_naming(
            client
                .batch_execute(&format!(
                    "UPDATE tickets SET subject = 'write to [email] please' WHERE id = {ticket}"
                ))
                .await,
            "subject",
            lock,
        );
        // A new row's text is the role's own: stored as written, read redacted.
        let id = if lock == "proxy" { 990_002 } else { 990_003 };
        client
            .batch_execute(&format!(
                "INSERT INTO tickets (id, contact_id, subject, body, status) VALUES ({id}, {contact}, 'new from a@b.it', NULL, 'open')"
            ))
            .await
            .unwrap_or_else(|e| panic!("{lock}: insert: {e:?}"));
        assert_eq!(
            owner(
                &crm,
                &format!("SELECT subject FROM tickets WHERE id = {id}")
            ),
            "new from a@b.it"
        );
    }
    assert_eq!(
        owner(
            &crm,
            &format!("SELECT subject FROM tickets WHERE id = {ticket}")
        ),
        "write to mario.rossi@example.it"
    );
}

#[tokio::test]
async fn a_masked_column_the_policy_makes_writable_stores_a_changed_value() {
    let crm = start().await;
    let policy = std::fs::read_to_string(&crm.applied.policy).expect("policy");
    let rule = "columns = { birth_date = \"year\", tax_code = \"mask.last(4)\" }\n";
    assert!(policy.contains(rule));
    std::fs::write(
        &crm.applied.policy,
        policy.replacen(rule, &format!("{rule}writable = [\"tax_code\"]\n"), 1),
    )
    .expect("write policy");
    apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("apply");
    crm.proxy.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !crm.proxy.log().contains("policy reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (id, stored) = north_contact(&crm);
    let stored = stored.split_once('|').expect("two values").0.to_string();
    for (lock, client) in both_locks(&crm, "sam", "sales").await {
        let (tax, _) = read_masked(&client, &id).await;
        let new = if lock == "proxy" {
            "NEWCODE000000001"
        } else {
            "NEWCODE000000002"
        };
        // Written back as read, the stored value stays; another value is stored.
        for (value, kept) in [(tax.as_str(), stored.as_str()), (new, new)] {
            client
                .execute(
                    "UPDATE contacts SET tax_code = $1, city = 'Bergamo' WHERE id = $2::text::bigint",
                    &[&value, &id],
                )
                .await
                .unwrap_or_else(|e| panic!("{lock}: {value}: {e:?}"));
            assert_eq!(
                owner(
                    &crm,
                    &format!("SELECT tax_code FROM contacts WHERE id = {id}")
                ),
                kept,
                "{lock}: {value}"
            );
        }
        owner(
            &crm,
            &format!("UPDATE contacts SET tax_code = '{stored}' WHERE id = {id}"),
        );
        // The birth date is still only written back.
        refuse_a_changed_birth_date(&client, &id, lock).await;
    }
}

#[tokio::test]
async fn on_conflict_do_nothing_works_and_tells_only_that_a_hidden_key_exists() {
    let crm = start().await;
    let own = owner(&crm, "SELECT min(id) FROM contacts WHERE region = 'north'");
    let visible = owner(
        &crm,
        "SELECT min(i.id) FROM interactions i JOIN contacts c ON c.id = i.contact_id WHERE c.region = 'north'",
    );
    let hidden = owner(
        &crm,
        "SELECT min(i.id) FROM interactions i JOIN contacts c ON c.id = i.contact_id WHERE c.region = 'south'",
    );
    let hidden_note = owner(
        &crm,
        &format!("SELECT notes FROM interactions WHERE id = {hidden}"),
    );
    let visible_note = owner(
        &crm,
        &format!("SELECT notes FROM interactions WHERE id = {visible}"),
    );
    let sam = connect(&crm.uri("sam"), None).await;
    // A key the role sees: nothing inserted, no error, with or without a conflict target, in both
    // protocols.
    for sql in [
        format!(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ({visible}, {own}, 'call', 'dup') ON CONFLICT DO NOTHING"
        ),
        format!(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ({visible}, {own}, 'call', 'dup') ON CONFLICT (id) DO NOTHING"
        ),
    ] {
        let rows = sam
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert!(
            rows.iter()
                .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(0))),
            "{sql}: nothing inserted"
        );
    }
    let inserted = sam
        .execute(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ($1, $2, 'call', $3) ON CONFLICT (id) DO NOTHING",
            &[&visible.parse::<i64>().unwrap(), &own.parse::<i64>().unwrap(), &"dup"],
        )
        .await
        .expect("extended DO NOTHING");
    assert_eq!(inserted, 0);
    assert_eq!(
        owner(
            &crm,
            &format!("SELECT notes FROM interactions WHERE id = {visible}")
        ),
        visible_note
    );
    // A new key is inserted, RETURNING as usual.
    let rows = sam
        .query(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES (970001, $1, 'email', 'new') ON CONFLICT (id) DO NOTHING RETURNING notes",
            &[&own.parse::<i64>().unwrap()],
        )
        .await
        .expect("new key");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "new");
    // A key that exists only outside the filter: a unique violation, which tells that the key exists
    // and nothing of the row.
    let err = sam
        .batch_execute(&format!(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ({hidden}, {own}, 'call', 'probe') ON CONFLICT (id) DO NOTHING"
        ))
        .await
        .expect_err("hidden key");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "23505", "{db:?}");
    let said = format!("{db:?}");
    assert!(!said.contains(&hidden_note), "{said}");
    assert_eq!(
        owner(
            &crm,
            &format!("SELECT notes FROM interactions WHERE id = {hidden}")
        ),
        hidden_note
    );
    // Straight as the login, PostgreSQL finds no arbiter on a view with triggers: refused, nothing read.
    let [_, (_, login)] = both_locks(&crm, "sam", "sales").await;
    let err = login
        .batch_execute(&format!(
            "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ({visible}, {own}, 'call', 'dup') ON CONFLICT (id) DO NOTHING"
        ))
        .await
        .expect_err("42P10");
    assert_eq!(err.code().map(|c| c.code()), Some("42P10"));
}

#[tokio::test]
async fn a_write_back_is_recorded_as_a_write_of_the_masked_column_without_its_value() {
    let crm = Fixture::crm(CONTACTS)
        .access_log("writeback")
        .start()
        .await
        .expect("CRM behind the proxy");
    let (id, stored) = north_contact(&crm);
    let sam = connect(&crm.uri("sam"), None).await;
    let (tax, _) = read_masked(&sam, &id).await;
    sam.execute(
        "UPDATE contacts SET tax_code = $1, city = 'Pavia' WHERE id = $2::text::bigint",
        &[&tax, &id],
    )
    .await
    .expect("write-back");
    let records = maschera_tests::access_log_records(&crm.audit_dir());
    let update = records
        .iter()
        .find(|r| r["user"] == "sam" && r["statement_kind"] == "update")
        .unwrap_or_else(|| panic!("no update record: {records:#?}"));
    let table = &update["tables"][0];
    assert!(
        table["operations"].to_string().contains("update"),
        "{update}"
    );
    let columns = table["columns"].to_string();
    assert!(
        columns.contains(r#""name":"tax_code""#) && columns.contains("masked"),
        "{update}"
    );
    let all = serde_json::to_string(&records).unwrap();
    let stored_tax = stored.split_once('|').expect("two values").0;
    assert!(
        !all.contains(stored_tax) && !all.contains(&tax),
        "no value in the log"
    );
}

/// The reference CRM's Django and SQLAlchemy clients (`tests/compat/`) connected straight to PostgreSQL
/// as the role's login (the region set as the proxy would set it): the database lock alone accepts the
/// ORMs' full-model writes and refuses a changed masked value.
#[test]
fn orm_full_model_writes_straight_as_the_login() {
    let crm = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(start());
    let credentials = maschera::admin::credentials::Credentials::load(&crm.applied.credentials)
        .expect("credentials");
    let compat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compat");
    let run = |script: &str, role: &str, user: &str| {
        let login = credentials.login(role).expect("login");
        let mut command = std::process::Command::new("python3");
        command
            .current_dir(&compat)
            .arg(script)
            .arg(crm.pg.uri_as(&login.user, &login.password, CRM_DB))
            .arg(user)
            .env(
                "PGOPTIONS",
                maschera_tests::seal::region_options(&crm.pg, CRM_DB, &login.user, "north"),
            );
        crate::compat::run_client(command, &format!("{script} as {role}'s login"))
    };
    let expect = |outcomes: &std::collections::BTreeMap<String, (String, String)>,
                  what: &str,
                  expected: &[(&str, &str, &str)]| {
        for (op, outcome, detail) in expected {
            let (got, said) = outcomes
                .get(*op)
                .unwrap_or_else(|| panic!("{what}: {op} not run"));
            assert!(
                got == outcome && said.contains(detail),
                "{what}: {op}: expected {outcome} {detail}, got {got} {said}"
            );
        }
    };
    let sales = run("django/client.py", "sales", "sam");
    expect(
        &sales,
        "Django as sales' login",
        &[
            ("create_full_model", "pass", ""),
            ("create", "pass", "deals=1"),
            ("update_full_save", "pass", "tax=****"),
            ("update_changed_masked", "refused", "42501"),
        ],
    );
    let support = run("django/client.py", "support", "tom");
    expect(
        &support,
        "Django as support's login",
        &[
            (
                "support_tickets",
                "pass",
                "subject=mail me at [email] status=closed",
            ),
            ("support_ticket_changed", "refused", "42501"),
            ("support_consents", "pass", "withdrawn=True"),
            (
                "support_interactions",
                "pass",
                "notes=called back on [phone]",
            ),
        ],
    );
    let sales = run("sqlalchemy_client.py", "sales", "sam");
    expect(
        &sales,
        "SQLAlchemy as sales' login",
        &[
            ("create_full_model", "pass", ""),
            ("update_write_back", "pass", "tax=****"),
            ("update_masked_column", "refused", "42501"),
        ],
    );
    assert_eq!(
        owner(&crm, "SELECT subject FROM tickets WHERE id = 250000"),
        "mail me at t250000@example.it"
    );
}
