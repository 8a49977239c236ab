//! An application's own tables and ORM-shaped queries under a restricted role, through the proxy and
//! straight as the role's login (both locks): hidden columns kept as NULL (`dropped_columns = "null"`)
//! for an ORM that selects and writes every mapped column, framework tables read-only by default
//! (`[tables.x] default = "read"`, `unlisted_tables = "read"`), password hashes (`secret`) never shown,
//! and history JSON masked with its keys kept (`json.redact`, `json.mask`).
//! Not for: the real Django CRM (real_crm.rs) or masks in general (policy.rs, redact.rs).

use crate::policy::{one, text};
use maschera_tests::crm_proxy::{AppliedPolicy, apply_policy, crm_password, write_crm_users};
use maschera_tests::{PgServer, Proxy, connect};
use tokio_postgres::Client;

const DB: &str = "app";
const KEY: &str = "framework-test-pseudonym-key-0123456789";

/// A small application with the framework tables ORMs create (Django's users, content types and admin
/// history, Rails' schema migrations) and a history table with old and new values in JSON.
const SCHEMA: &str = r#"
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text DEFAULT 'unknown@example.org', notes text);
INSERT INTO customers (name, email, notes) VALUES ('Mario Rossi', 'mario.rossi@example.it', 'vip'), ('Anna Neri', 'anna@example.it', NULL);
CREATE TABLE auth_user (id serial PRIMARY KEY, username text NOT NULL, password text NOT NULL, email text, is_staff boolean NOT NULL DEFAULT false, last_login timestamptz);
INSERT INTO auth_user (username, password, email) VALUES ('sally', 'pbkdf2_sha256$600000$salt$c2VjcmV0aGFzaA==', 'sally@example.org');
CREATE TABLE django_content_type (id serial PRIMARY KEY, app_label text NOT NULL, model text NOT NULL);
INSERT INTO django_content_type (app_label, model) VALUES ('crm', 'customer');
CREATE TABLE schema_migrations (version text PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20240101000000');
CREATE TABLE django_admin_log (id serial PRIMARY KEY, object_id text, object_repr text, action_flag smallint NOT NULL);
INSERT INTO django_admin_log (object_id, object_repr, action_flag) VALUES ('1', 'Mario Rossi', 2);
CREATE TABLE history (id serial PRIMARY KEY, kind text NOT NULL, changes jsonb, snapshot json, message text);
INSERT INTO history (kind, message) VALUES ('contact', 'Changed email to mario.rossi@example.it');
INSERT INTO history (kind, changes, snapshot) VALUES
  ('contact', '{"email": {"old": "mario.rossi@example.it", "new": "m.rossi@example.org"}, "phone": "+39 333 1234567", "age": 42, "fields": ["email", "phone"], "note": "said \"call me\" at 10"}',
   '{"name" : "Mario Rossi", "email": "mario.rossi@example.it", "vip": true, "score": 7, "tags": ["a", ""], "empty": ""}'),
  ('internal', '{"password": "hunter2"}', '{}');
INSERT INTO history (kind, message) VALUES ('contact', '{"x": "\ud800 mario@example.it", "y": "ok"}'), ('contact', '{"x": "\q mario@example.it"}');
UPDATE history SET message = '[{"changed": {"fields": ["Email"]}}, {"added": {"object": "call +39 333 1234567", "name": "mario@example.it"}}]' WHERE id = 2;
"#;

const POLICY: &str = r#"
[settings]
# Framework tables the policy does not name (content types, schema migrations): SELECT only.
unlisted_tables = "read"

[tables.customers.columns]
name = "identifying"
email = "contact"
notes = "free_text"

[tables.auth_user]
default = "read"
columns = { username = "identifying", email = "contact", password = "secret" }

[tables.django_admin_log]
default = "read"
columns = { object_repr = "identifying" }

[tables.history.columns]
changes = { category = "contact", type = "jsonb" }
snapshot = { category = "identifying", type = "json" }
message = "free_text"

[roles.owner]
unrestricted = true

[roles.support]
# An ORM application: hidden columns stay in each view as NULL.
dropped_columns = "null"

[roles.support.tables.customers]
show = ["name"]
writes = ["insert", "update"]

# Users: every column but the password hash (`secret` is never in `*`), read only.
[roles.support.tables.auth_user]
show = ["*"]

[roles.support.tables.history]
columns = { changes = "json.redact", snapshot = "json.mask", message = "json.redact" }
filter = "kind = 'contact'"
"#;

struct App {
    pg: PgServer,
    proxy: Proxy,
    applied: AppliedPolicy,
}

impl App {
    async fn start() -> App {
        let pg = PgServer::start().expect("start PostgreSQL");
        pg.create_database(DB).expect("database");
        pg.connect(DB)
            .await
            .unwrap()
            .batch_execute(SCHEMA)
            .await
            .expect("schema");
        let dir = pg.dir().to_path_buf();
        let applied = AppliedPolicy {
            policy: dir.join("policy.toml"),
            credentials: dir.join("logins.toml"),
        };
        std::fs::write(&applied.policy, POLICY).unwrap();
        apply_policy(&pg, DB, &applied, KEY).expect("policy apply");
        let users = dir.join("users.toml");
        write_crm_users(&users, &[("desk", "support", &[])], 4096).expect("users");
        let proxy = Proxy::start(&pg, applied.proxy_options(DB, users)).expect("proxy");
        App { pg, proxy, applied }
    }

    /// The support role twice: through the proxy, and straight as its login (no proxy).
    async fn both_locks(&self) -> [(&'static str, Client); 2] {
        let proxied = connect(&self.proxy.uri_as("desk", &crm_password("desk"), DB))
            .await
            .expect("through the proxy");
        let credentials =
            maschera::admin::credentials::Credentials::load(&self.applied.credentials).unwrap();
        let login = credentials.login("support").expect("login");
        let straight = connect(&self.pg.uri_as(&login.user, &login.password, DB))
            .await
            .expect("as the login");
        [("proxy", proxied), ("login", straight)]
    }

    async fn stored(&self, sql: &str) -> String {
        one(&self.pg.connect(DB).await.unwrap(), sql).await
    }
}

/// SQLSTATE and message of a statement that must fail (simple protocol, as ORMs with client-side
/// parameters send it).
async fn refusal(client: &Client, sql: &str) -> (String, String) {
    let Err(err) = client.simple_query(sql).await else {
        panic!("`{sql}` was accepted");
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The one value of `sql`, which must be valid JSON.
async fn json_of(client: &Client, sql: &str) -> serde_json::Value {
    let text = one(client, sql).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: not JSON: {e}"))
}

/// Asserts that `sql` returns no row (a predicate on a hidden value finds nothing).
async fn finds_nothing(client: &Client, sql: &str, why: &str) {
    assert_eq!(
        text(client, sql).await,
        Vec::<Option<String>>::new(),
        "{why}: {sql}"
    );
}

async fn accepted(client: &Client, sql: &str) {
    if let Err(err) = client.simple_query(sql).await {
        panic!("`{sql}` refused: {err:?}");
    }
}

#[tokio::test]
async fn hidden_columns_as_null_keep_the_orm_shape_on_both_locks() {
    let app = App::start().await;
    for (lock, client) in app.both_locks().await {
        // Django / SQLAlchemy select every mapped column by name.
        let orm_select = "SELECT \"customers\".\"id\"::text, \"customers\".\"name\", \"customers\".\"email\", \
                          \"customers\".\"notes\" FROM \"customers\" ORDER BY \"customers\".\"id\"";
        let rows = client.query(orm_select, &[]).await.expect(lock);
        assert!(rows.len() >= 2, "{lock}");
        for row in &rows {
            let name: Option<String> = row.get(1);
            assert!(name.is_some(), "{lock}: names are shown");
            let hidden: (Option<String>, Option<String>) = (row.get(2), row.get(3));
            assert_eq!(hidden, (None, None), "{lock}: hidden columns read NULL");
        }
        let star = client
            .query("SELECT * FROM customers WHERE id = 1", &[])
            .await
            .expect(lock);
        let names: Vec<&str> = star[0].columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "name", "email", "notes"], "{lock}: SELECT *");
        // Predicates see NULL, never the stored value.
        finds_nothing(
            &client,
            "SELECT name FROM customers WHERE email = 'mario.rossi@example.it'",
            lock,
        )
        .await;
        assert_eq!(
            text(
                &client,
                "SELECT (count(*) FILTER (WHERE email IS NULL) = count(*))::text FROM customers"
            )
            .await,
            [Some("true".to_string())],
            "{lock}"
        );
        // A full-model save writes NULL back to the hidden columns: accepted, stored values kept.
        accepted(
            &client,
            &format!(
                "UPDATE \"customers\" SET \"name\" = 'Mario Rossi ({lock})', \"email\" = NULL, \"notes\" = NULL \
                 WHERE \"customers\".\"id\" = 1"
            ),
        )
        .await;
        assert_eq!(
            app.stored("SELECT name || ' ' || email || ' ' || notes FROM customers WHERE id = 1")
                .await,
            format!("Mario Rossi ({lock}) mario.rossi@example.it vip")
        );
        // `objects.create(...)`: NULL for the hidden columns, the table's default is stored.
        accepted(
            &client,
            &format!(
                "INSERT INTO \"customers\" (\"name\", \"email\", \"notes\") VALUES ('New {lock}', NULL, NULL)"
            ),
        )
        .await;
        assert_eq!(
            app.stored(&format!(
                "SELECT coalesce(email, 'NULL') || ' ' || coalesce(notes, 'NULL') FROM customers WHERE name = 'New {lock}'"
            ))
            .await,
            "unknown@example.org NULL"
        );
        // Any other value for a hidden column is refused, on update and on insert.
        for sql in [
            "UPDATE customers SET email = 'x@example.org' WHERE id = 2".to_string(),
            format!("INSERT INTO customers (name, email) VALUES ('Bad {lock}', 'x@example.org')"),
        ] {
            let (code, message) = refusal(&client, &sql).await;
            assert_eq!(code, "42501", "{lock}: {sql}: {message}");
            assert!(message.contains("email"), "{lock}: {message}");
        }
    }
    assert_eq!(
        app.stored("SELECT email FROM customers WHERE id = 2").await,
        "anna@example.it"
    );
}

#[tokio::test]
async fn framework_tables_are_read_only_hide_secrets_and_mask_json_on_both_locks() {
    let app = App::start().await;
    for (lock, client) in app.both_locks().await {
        // Users: readable (the application's pages list them), the password hash never.
        let user = client
            .query(
                "SELECT username, email, password, is_staff FROM auth_user WHERE id = 1",
                &[],
            )
            .await
            .expect(lock);
        assert_eq!(
            user[0].get::<_, Option<String>>(0).as_deref(),
            Some("sally")
        );
        assert_eq!(
            user[0].get::<_, Option<String>>(2),
            None,
            "{lock}: password hash"
        );
        let why = format!("{lock}: a predicate sees no hash");
        finds_nothing(
            &client,
            "SELECT username FROM auth_user WHERE password LIKE 'pbkdf2%'",
            &why,
        )
        .await;
        // ... and not writable: the role cannot change a hash, a flag or a user.
        // (Straight as the login, PostgreSQL refuses a write to a view's NULL column as 0A000.)
        let (code, message) =
            refusal(&client, "UPDATE auth_user SET password = 'x' WHERE id = 1").await;
        assert!(
            code == "42501" || code == "0A000",
            "{lock}: {code} {message}"
        );
        assert!(
            message.contains("auth_user") || message.contains("password"),
            "{lock}: {message}"
        );
        for sql in [
            "UPDATE auth_user SET is_staff = true WHERE id = 1",
            "UPDATE auth_user SET last_login = now() WHERE id = 1",
            "INSERT INTO auth_user (username) VALUES ('mallory')",
            "DELETE FROM auth_user",
        ] {
            let (code, message) = refusal(&client, sql).await;
            assert_eq!(code, "42501", "{lock}: {sql}: {message}");
            assert!(message.contains("auth_user"), "{lock}: {message}");
        }
        // A table with `default = "read"` and no rule of the role: read only, personal columns hidden.
        assert_eq!(
            text(
                &client,
                "SELECT object_id || '/' || coalesce(object_repr, 'NULL') FROM django_admin_log"
            )
            .await,
            [Some("1/NULL".to_string())],
            "{lock}"
        );
        let (code, message) = refusal(&client, "DELETE FROM django_admin_log").await;
        assert_eq!(code, "42501", "{lock}: {message}");
        // Tables the policy does not name: SELECT only (`unlisted_tables = "read"`).
        assert_eq!(
            one(&client, "SELECT model FROM public.django_content_type").await,
            "customer",
            "{lock}"
        );
        assert_eq!(
            one(&client, "SELECT version FROM public.schema_migrations").await,
            "20240101000000",
            "{lock}"
        );
        for sql in [
            "INSERT INTO public.django_content_type (app_label, model) VALUES ('x', 'y')",
            "UPDATE public.schema_migrations SET version = '0'",
            "DELETE FROM public.django_content_type",
        ] {
            let (code, message) = refusal(&client, sql).await;
            assert_eq!(code, "42501", "{lock}: {sql}: {message}");
            let table = if sql.contains("schema_migrations") {
                "schema_migrations"
            } else {
                "django_content_type"
            };
            assert!(message.contains(table), "{lock}: {message}");
        }
        // History JSON: valid JSON, the same keys and shape, no personal value.
        assert_eq!(
            json_of(&client, "SELECT changes::text FROM history WHERE id = 2").await,
            serde_json::json!({
                "email": {"old": "[email]", "new": "[email]"},
                "phone": "[phone]",
                "age": 42,
                "fields": ["email", "phone"],
                "note": "said \"call me\" at 10"
            }),
            "{lock}"
        );
        assert_eq!(
            json_of(&client, "SELECT snapshot::text FROM history WHERE id = 2").await,
            serde_json::json!({
                "name": "***", "email": "***", "vip": true, "score": 7, "tags": ["***", ""], "empty": ""
            }),
            "{lock}"
        );
        // Text holding JSON keeps its own layout; plain text in it is redacted whole.
        assert_eq!(
            text(&client, "SELECT message FROM history ORDER BY id").await,
            [
                Some("Changed email to [email]".to_string()),
                Some(r#"[{"changed": {"fields": ["Email"]}}, {"added": {"object": "call [phone]", "name": "[email]"}}]"#.to_string()),
                // A string JSON cannot turn into text is masked whole; an invalid escape makes the
                // value plain text, redacted whole.
                Some(r#"{"x": "***", "y": "ok"}"#.to_string()),
                Some(r#"{"x": "\q [email]"}"#.to_string()),
            ],
            "{lock}"
        );
        // JSON operators read the masked document; the row filter hides the other kind.
        assert_eq!(
            text(
                &client,
                "SELECT changes #>> '{email,old}' FROM history WHERE id = 2"
            )
            .await,
            [Some("[email]".to_string())],
            "{lock}"
        );
        finds_nothing(
            &client,
            "SELECT id::text FROM history WHERE changes::text LIKE '%mario%'",
            lock,
        )
        .await;
    }
}

#[test]
fn json_masks_need_a_json_column_and_settings_are_checked() {
    let cases = [
        (
            "changes = \"json.redact\"",
            "changes = \"json.redact\", kind = \"json.mask\"",
            "`json.mask` needs a json, jsonb or text column, but the column is `integer`",
        ),
        (
            "dropped_columns = \"null\"",
            "dropped_columns = \"nul\"",
            "unknown value `nul` for dropped_columns",
        ),
        (
            "default = \"read\"",
            "default = \"reed\"",
            "unknown value `reed` for default",
        ),
    ];
    for (from, to, expected) in cases {
        let bad = POLICY.replace(from, to).replace(
            "[tables.history.columns]",
            "[tables.history.columns]\nkind = { type = \"integer\" }",
        );
        let err = policy::Policy::parse("p.toml", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}
