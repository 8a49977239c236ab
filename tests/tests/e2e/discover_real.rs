//! Discovery as a first draft for a real schema: a Django-like application (framework tables with
//! password hashes and session data, a contact table with denormalised names, handles and postal data,
//! a history of changes in JSON) beside 200 generated business tables of booleans, counters, amounts,
//! dates and configuration JSON. The draft labels what is personal with evidence and confidence, leaves
//! the rest alone, passes `policy check`, and once applied its restricted role reads the framework tables
//! through the proxy with the password hashes NULL, its sessions usable and the history's JSON redacted.

use maschera_tests::crm::load_crm;
use maschera_tests::crm_proxy::{AppliedPolicy, apply_policy};
use maschera_tests::{PgServer, Proxy, ProxyOptions, connect, run_maschera_ok};
use tokio_postgres::Client;

const DB: &str = "app";
/// Generated business tables beside the application's own.
const GENERATED: usize = 200;

/// The Django-like application and its data.
const DJANGO: &str = "
CREATE TABLE django_content_type (id serial PRIMARY KEY, app_label varchar(100) NOT NULL,
    model varchar(100) NOT NULL);
CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255), name varchar(255),
    applied timestamptz);
CREATE TABLE auth_permission (id serial PRIMARY KEY, name varchar(255),
    content_type_id int REFERENCES django_content_type, codename varchar(100));
CREATE TABLE auth_group (id serial PRIMARY KEY, name varchar(150) UNIQUE);
CREATE TABLE auth_user (id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz,
    is_superuser boolean NOT NULL, username varchar(150) UNIQUE, first_name varchar(150),
    last_name varchar(150), email varchar(254), is_staff boolean, is_active boolean,
    date_joined timestamptz);
CREATE TABLE auth_user_groups (id bigserial PRIMARY KEY, user_id int REFERENCES auth_user,
    group_id int REFERENCES auth_group);
CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, session_data text NOT NULL,
    expire_date timestamptz NOT NULL);
CREATE TABLE django_admin_log (id serial PRIMARY KEY, action_time timestamptz, object_id text,
    object_repr varchar(200), action_flag smallint, change_message text,
    content_type_id int REFERENCES django_content_type, user_id int REFERENCES auth_user);
CREATE TABLE crm_contact (id bigserial PRIMARY KEY, first_name varchar(100), last_name varchar(100),
    full_name varchar(200), email varchar(254), skype varchar(100), zip_code varchar(20),
    city_name varchar(50), po_box varchar(50), disable_mailing boolean, was_in_touch date,
    massmail boolean, description_id int, notes_count int, owner_id int REFERENCES auth_user);
CREATE TABLE crm_history (id bigserial PRIMARY KEY, user_id int REFERENCES auth_user,
    changes jsonb, created timestamptz);
CREATE TABLE common_userprofile (id serial PRIMARY KEY, user_id int REFERENCES auth_user,
    settings jsonb, options text, language varchar(10), messages_count int, show_notes boolean,
    comment_rate numeric(5,2));
INSERT INTO django_content_type (app_label, model)
    SELECT 'app' || i, 'model' || i FROM generate_series(1, 30) i;
INSERT INTO django_migrations (app, name, applied)
    SELECT 'app' || i, '0001_initial', now() FROM generate_series(1, 30) i;
INSERT INTO auth_permission (name, content_type_id, codename)
    SELECT 'Can view model ' || i, i, 'view_model' || i FROM generate_series(1, 30) i;
INSERT INTO auth_group (name) VALUES ('managers'), ('operators');
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
    is_active, date_joined)
    SELECT 'pbkdf2_sha256$600000$salt' || i || '$hash' || md5(i::text), false, 'user' || i,
        'Name' || i, 'Surname' || i, 'user' || i || '@example.org', i < 3, true, now()
    FROM generate_series(1, 40) i;
INSERT INTO auth_user_groups (user_id, group_id) SELECT i, 1 + i % 2 FROM generate_series(1, 40) i;
INSERT INTO django_session SELECT md5(i::text), encode(('{\"_auth_user_id\":\"' || i || '\"}')::bytea,
    'base64') || ':1sig', now() + interval '1 day' FROM generate_series(1, 40) i;
INSERT INTO django_admin_log (action_time, object_id, object_repr, action_flag, change_message,
    content_type_id, user_id)
    SELECT now(), i::text, 'Name' || i || ' Surname' || i, 2, '[{\"changed\": {\"fields\": [\"Email\"]}}]',
        1, 1 FROM generate_series(1, 40) i;
INSERT INTO crm_contact (first_name, last_name, full_name, email, skype, zip_code, city_name, po_box,
    disable_mailing, was_in_touch, massmail, description_id, notes_count, owner_id)
    SELECT 'Mario' || i, 'Rossi' || i, 'Mario' || i || ' Rossi' || i, 'mario' || i || '@example.org',
        'live:mario' || i, lpad((i * 37 % 99999)::text, 5, '0'), 'Milano', 'PO Box ' || i, i % 2 = 0,
        DATE '2024-01-01' + i, i % 3 = 0, i, i % 7, 1 + i % 40
    FROM generate_series(1, 300) i;
INSERT INTO crm_history (user_id, changes, created)
    SELECT 1 + i % 40, CASE WHEN i % 2 = 0
        THEN jsonb_build_object('email', jsonb_build_object('old', 'old' || i || '@example.org',
            'new', 'new' || i || '@example.org'))
        ELSE jsonb_build_object('stage', jsonb_build_object('old', 'lead', 'new', 'won')) END, now()
    FROM generate_series(1, 200) i;
INSERT INTO common_userprofile (user_id, settings, options, language, messages_count, show_notes,
    comment_rate)
    SELECT i, jsonb_build_object('theme', 'dark', 'notify_by_email', true, 'page_size', 50,
        'layout', 'two columns with a wide sidebar on the left', 'email_template', 'welcome'),
        '{\"columns\": [\"name\", \"stage\"], \"description\": \"Default list view of the deals page\"}',
        'it', i, i % 2 = 0, 1.5 FROM generate_series(1, 40) i;
";

/// 200 business tables: booleans, counters, amounts, dates, configuration JSON, codes.
fn generated_tables() -> String {
    format!(
        "DO $$ BEGIN FOR i IN 1..{GENERATED} LOOP
           EXECUTE format('CREATE TABLE biz_%s (id serial PRIMARY KEY, code text, amount numeric(12,2),
               is_enabled boolean, message_count int, has_comments boolean, subject_id int,
               valid_from date, email_sent_at timestamptz, config jsonb, description_flag boolean)', i);
           EXECUTE format('INSERT INTO biz_%s (code, amount, is_enabled, message_count, has_comments,
               subject_id, valid_from, email_sent_at, config, description_flag)
               SELECT ''C-'' || g, g * 1.25, mod(g, 2) = 0, g, mod(g, 3) = 0, g, DATE ''2024-01-01'' + g, now(),
                   jsonb_build_object(''retries'', g, ''mode'', ''fast and safe with retries'',
                       ''enabled'', true), false
               FROM generate_series(1, 20) g', i);
         END LOOP; END $$"
    )
}

/// Every row of `sql` over the extended protocol (as ORMs send it); every column is text or NULL.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let result = client.query(sql, &[]).await;
    let got = result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    got.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// The column lines of the draft for `table` (`[tables.<table>.columns]`), commented ones included.
pub(crate) fn column_lines<'a>(text: &'a str, table: &str) -> Vec<&'a str> {
    let header = format!("[tables.{table}.columns]");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// The draft's line for a column, if it proposes one (not commented out).
pub(crate) fn line_of<'a>(text: &'a str, table: &str, column: &str) -> Option<&'a str> {
    let start = format!("{column} = ");
    column_lines(text, table)
        .into_iter()
        .find(|l| l.starts_with(&start))
}

#[tokio::test]
async fn a_django_like_schema_of_200_tables_gives_a_draft_that_works() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database(DB).unwrap();
    pg.psql(DB, &["-c", DJANGO]).expect("Django tables");
    pg.psql(DB, &["-c", &generated_tables()])
        .expect("generated tables");
    pg.psql(DB, &["-c", "ANALYZE"]).unwrap();
    let dir = pg.dir().to_path_buf();
    let applied = AppliedPolicy {
        policy: dir.join("draft.toml"),
        credentials: dir.join("logins.toml"),
    };
    let uri = pg.uri(DB);
    let draft = applied.policy.display().to_string();
    let started = std::time::Instant::now();
    run_maschera_ok(["discover", "--upstream", &uri, "-o", &draft]);
    eprintln!(
        "discover: {} tables in {:?}",
        GENERATED + 11,
        started.elapsed()
    );
    let text = std::fs::read_to_string(&applied.policy).unwrap();

    // What the issue's CRM had missed, each with its evidence and confidence.
    for (table, column, expected) in [
        ("crm_contact", "full_name", "category = \"identifying\""),
        ("crm_contact", "skype", "name matches \"skype\""),
        (
            "crm_contact",
            "zip_code",
            "name matches \"zip\"; on a table of people",
        ),
        ("crm_contact", "city_name", "category = \"location\""),
        ("crm_contact", "po_box", "name matches \"po box\""),
        (
            "crm_contact",
            "owner_id",
            "high: refers to a person in auth_user",
        ),
        ("crm_history", "changes", "category = \"contact\""),
        (
            "crm_history",
            "changes",
            "100/200 sampled JSON documents (50%) hold e-mail addresses",
        ),
        (
            "django_session",
            "session_data",
            "secret: session data or key of the framework",
        ),
        (
            "django_admin_log",
            "object_repr",
            "category = \"identifying\"",
        ),
        (
            "auth_user",
            "password",
            "# high: secret: a secret (password hash, token or key)",
        ),
        (
            "auth_user",
            "email",
            "# high: name matches \"email\"; 40/40 sampled values (100%)",
        ),
    ] {
        let line = line_of(&text, table, column)
            .unwrap_or_else(|| panic!("{table}.{column} not proposed:\n{text}"));
        assert!(line.contains(expected), "{table}.{column}: {line}");
    }
    // Every proposed line carries its confidence.
    for line in text.lines().filter(|l| l.contains(" = { category = ")) {
        assert!(
            [" # high: ", " # medium: ", " # low: "]
                .iter()
                .any(|c| line.contains(c)),
            "{line}"
        );
    }
    // Booleans, counters, amounts, business dates and configuration JSON are not personal data.
    for (table, column) in [
        ("crm_contact", "disable_mailing"),
        ("crm_contact", "was_in_touch"),
        ("crm_contact", "massmail"),
        ("crm_contact", "description_id"),
        ("crm_contact", "notes_count"),
        ("common_userprofile", "settings"),
        ("common_userprofile", "options"),
        ("common_userprofile", "messages_count"),
        ("common_userprofile", "show_notes"),
        ("common_userprofile", "comment_rate"),
        ("auth_user", "is_staff"),
    ] {
        assert_eq!(line_of(&text, table, column), None, "{table}.{column}");
    }
    for i in 1..=GENERATED {
        assert!(
            column_lines(&text, &format!("biz_{i}")).is_empty(),
            "biz_{i}:\n{}",
            column_lines(&text, &format!("biz_{i}")).join("\n")
        );
    }
    assert!(
        !text.contains("@example.org"),
        "no sampled value in the draft"
    );
    // Roles from the template, a rule for every table, nothing that locks the application out.
    assert!(text.contains("[roles.reader.tables]"), "{text}");
    // Tables with nothing personal are left to `unlisted_tables = "read"` (the base table, SELECT
    // only), listed in a comment; no role needs a rule for them.
    assert!(text.contains("unlisted_tables = \"read\""), "{text}");
    assert!(text.contains("\n# biz_7: 20 rows sampled\n"), "{text}");
    assert!(!text.contains("\nbiz_7 = "), "{text}");
    assert!(
        text.contains("\n# django_content_type: 30 rows sampled; a Django framework table\n"),
        "{text}"
    );

    run_maschera_ok(["policy", "check", &draft, "--upstream", &uri]);
    apply_policy(&pg, DB, &applied, "discover-real-pseudonym-key-0123456789").expect("apply");
    let proxy = Proxy::start(
        &pg,
        ProxyOptions {
            users: vec![("rita".into(), "rita-pw".into(), "reader".into())],
            database: DB.into(),
            policy: applied.proxy_section(None),
            ..ProxyOptions::default()
        },
    )
    .expect("proxy");
    let rita = connect(&proxy.uri_as("rita", "rita-pw", DB))
        .await
        .expect("connect as the reader");
    // What the framework reads on every request, as an ORM selects it (every column).
    for table in [
        "django_content_type",
        "auth_permission",
        "django_migrations",
        "auth_group",
        "auth_user_groups",
    ] {
        let got = rita
            .query(&format!("SELECT * FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert!(!got.is_empty(), "{table}");
    }
    let users = rows(
        &rita,
        "SELECT password, username, email, is_active::text FROM auth_user ORDER BY id",
    )
    .await;
    assert_eq!(users.len(), 40);
    for user in &users {
        assert_eq!(user[0], None, "the password hash is NULL");
        assert!(
            user[2].as_deref().is_some_and(|e| e.contains("***")),
            "{user:?}"
        );
        assert_eq!(user[3].as_deref(), Some("true"));
    }
    let sessions = rows(
        &rita,
        "SELECT session_key, session_data, expire_date::text FROM django_session",
    )
    .await;
    assert_eq!(sessions.len(), 40);
    // The application looks its sessions up by key and writes them on every request.
    assert!(
        sessions
            .iter()
            .all(|s| s[0].is_some() && s[1].is_some() && s[2].is_some())
    );
    // The history's JSON keeps its keys and shape, the e-mail addresses inside redacted.
    let history = rows(
        &rita,
        "SELECT changes::text FROM crm_history WHERE changes ? 'email' ORDER BY id LIMIT 1",
    )
    .await;
    assert_eq!(
        history[0][0].as_deref(),
        Some(r#"{"email": {"new": "[email]", "old": "[email]"}}"#)
    );
    let contacts = rows(
        &rita,
        "SELECT full_name, skype, zip_code, disable_mailing::text FROM crm_contact ORDER BY id LIMIT 1",
    )
    .await;
    assert_eq!(
        contacts,
        [vec![
            Some("M.".to_string()),
            None,
            None,
            Some("false".to_string())
        ]]
    );
    let business = rows(
        &rita,
        "SELECT count(*)::text, sum(amount)::text FROM biz_200",
    )
    .await;
    assert_eq!(
        business,
        [vec![Some("20".to_string()), Some("262.50".to_string())]]
    );
}

#[tokio::test]
async fn the_crm_template_on_the_reference_crm_passes_policy_check() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, "crm", 500, 1).await.expect("load the CRM");
    let uri = pg.uri("crm");
    // Printed to standard output this time.
    let text = run_maschera_ok(["discover", "--template=crm", "--upstream", &uri]);
    let file = pg.dir().join("crm-draft.toml");
    std::fs::write(&file, &text).unwrap();
    let file_arg = file.display().to_string();
    for role in [
        "[roles.dpo]",
        "[roles.sales.tables]",
        "[roles.support.tables]",
        "[roles.analyst.tables]",
    ] {
        assert!(text.contains(role), "{role}:\n{text}");
    }
    assert!(
        !text.contains("\nhealth_records = ")
            && text.contains("# Denied to every restricted role (no `default`, no rule)."),
        "{text}"
    );
    let support = text
        .lines()
        .skip_while(|l| *l != "[roles.support.tables]")
        .find(|l| l.starts_with("contacts = "))
        .expect("a support rule for contacts");
    assert!(
        support.contains("email = \"mask.email\"") && !support.contains("tax_code"),
        "{support}"
    );
    assert!(
        text.contains("[roles.support]") && text.contains("dropped_columns = \"null\""),
        "a column a rule leaves unsaid is NULL: {text}"
    );
    run_maschera_ok(["policy", "check", &file_arg, "--upstream", &uri]);
}
