//! Writes through a restricted role's view of a table without a primary key: an ORM's association
//! table (SQLAlchemy's `db.Table` whose migrations made no key, as ihatemoney's `billowers`) under a
//! row filter, where the view's write triggers (the database lock) find a row by every column (all
//! shown as stored) instead of a key: the row deleted or updated is the one named, rows outside the
//! filter are not reached, and a row may not be moved out of it; where the rows cannot be told
//! apart (a column not shown as stored), the refusal says so.
//! Not for: the real application (real_app.rs), write-back of masked values (framework.rs, policy.rs).

use maschera_tests::crm_proxy::{AppliedPolicy, apply_policy, crm_password, write_crm_users};
use maschera_tests::{PgServer, Proxy, connect};
use tokio_postgres::Client;

const DB: &str = "app";

/// People in two groups; who owes which bill, with no primary key (nor unique constraint).
const SCHEMA: &str = "
CREATE TABLE person (id serial PRIMARY KEY, name text NOT NULL, team text NOT NULL);
CREATE TABLE bill (id serial PRIMARY KEY, what text NOT NULL);
CREATE TABLE owers (bill_id integer REFERENCES bill(id), person_id integer REFERENCES person(id));
INSERT INTO person (name, team) VALUES ('Marco Rossi', 'eur'), ('Giulia Bianchi', 'eur'), ('Anna Verdi', 'usd');
INSERT INTO bill (what) VALUES ('dinner'), ('lunch');
INSERT INTO owers VALUES (1, 1), (1, 2), (1, 3), (2, 1), (2, 3);
CREATE TABLE notes (person_id integer REFERENCES person(id), note text);
INSERT INTO notes VALUES (1, 'call +39 333 1234567');
";

const POLICY: &str = r#"
[settings]
unlisted_tables = "read"

[tables.person.columns]
name = "identifying"

[tables.owers]

[tables.notes.columns]
note = "free_text"

[roles.owner]
unrestricted = true

[roles.desk]
attributes = ["team"]

[roles.desk.tables.person]
show = ["name"]
filter = "team = attr('team')"

[roles.desk.tables.owers]
filter = "person_id IN (SELECT id FROM person WHERE team = attr('team'))"
writes = ["insert", "update", "delete"]

# No primary key and a redacted column: its rows cannot be told apart through the view.
[roles.desk.tables.notes]
columns = { note = "redact" }
filter = "person_id IN (SELECT id FROM person WHERE team = attr('team'))"
writes = ["insert", "delete"]
"#;

/// The owners' view of who owes what, as `bill:person` pairs.
async fn stored(owner: &Client) -> String {
    owner
        .query_one(
            "SELECT string_agg(bill_id || ':' || person_id, ' ' ORDER BY bill_id, person_id) FROM owers",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_filtered_table_without_a_primary_key_is_written_by_its_columns() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database(DB).expect("database");
    let owner = pg.connect(DB).await.unwrap();
    owner.batch_execute(SCHEMA).await.expect("schema");
    let dir = pg.dir().to_path_buf();
    let applied = AppliedPolicy {
        policy: dir.join("policy.toml"),
        credentials: dir.join("logins.toml"),
    };
    std::fs::write(&applied.policy, POLICY).unwrap();
    apply_policy(&pg, DB, &applied, "keyless-test-pseudonym-key-0123456789").expect("apply");
    let users = dir.join("users.toml");
    write_crm_users(&users, &[("eva", "desk", &[("team", "eur")])], 4096).expect("users");
    let proxy = Proxy::start(&pg, applied.proxy_options(DB, users)).expect("proxy");

    let proxied = connect(&proxy.uri_as("eva", &crm_password("eva"), DB))
        .await
        .expect("through the proxy");
    // The ORM's statement for taking Giulia off the dinner: by both columns, parameters bound.
    let deleted = proxied
        .execute(
            "DELETE FROM owers WHERE owers.bill_id = $1 AND owers.person_id = $2",
            &[&1i32, &2i32],
        )
        .await
        .expect("delete through the proxy");
    assert_eq!(deleted, 1);
    assert_eq!(stored(&owner).await, "1:1 1:3 2:1 2:3");
    // A row outside the filter (Anna is in the other team) is not reached: nothing deleted.
    let deleted = proxied
        .execute("DELETE FROM owers WHERE person_id = 3", &[])
        .await
        .expect("a delete outside the filter");
    assert_eq!(deleted, 0);
    // Adding Giulia back, and moving Marco's lunch share to Giulia (an update by every column).
    proxied
        .execute("INSERT INTO owers (bill_id, person_id) VALUES (1, 2)", &[])
        .await
        .expect("insert");
    let updated = proxied
        .execute(
            "UPDATE owers SET person_id = 2 WHERE bill_id = 2 AND person_id = 1",
            &[],
        )
        .await
        .expect("update");
    assert_eq!(updated, 1);
    assert_eq!(stored(&owner).await, "1:1 1:2 1:3 2:2 2:3");
    // Moving a share to someone outside the filter is refused (the row would leave the filter).
    let err = proxied
        .execute(
            "UPDATE owers SET person_id = 3 WHERE bill_id = 2 AND person_id = 2",
            &[],
        )
        .await
        .expect_err("a share moved outside the filter");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");

    // A table without a primary key whose columns the role does not all see as stored: its deletes
    // are refused, saying why (not a bare "may not delete", which the policy contradicts).
    let err = proxied
        .execute("DELETE FROM notes WHERE person_id = 1", &[])
        .await
        .expect_err("a delete from a table whose rows the view cannot tell apart");
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42501", "{err:?}");
    assert_eq!(
        db.message(),
        "policy role desk may delete from \"notes\", but its view cannot tell the rows apart: the \
         table's primary key is not shown to the role as stored (for a table without one, every column \
         must be): add a primary key, or show its columns"
    );
    let kept: i64 = owner
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}
