//! Lookup for support (`lookup = [...]` in a role's table rule): on the reference CRM with a test
//! policy (the reference policy with `lookup = ["email", "phone"]` on support's contacts, a
//! region-filtered `support_north` role with `lookup = ["email"]` and a small `lookups_per_minute`,
//! and a `helpdesk` role with support's masks and no lookup), through the proxy with the simple and
//! the extended protocol and straight at the database as the roles' logins: an exact e-mail or phone
//! finds the contact and the row stays masked; ILIKE and other predicates see the masked value; a
//! filtered role finds nothing outside its filter; the login may only call the equality function
//! (no pattern, no base table); the access log records each lookup without its value; the rate limit
//! refuses with 53400; a role without `lookup` is unchanged.

use maschera_tests::crm::load_crm;
use maschera_tests::crm_proxy::{
    AppliedPolicy, CRM_DB, apply_policy, crm_password, write_crm_users,
};
use maschera_tests::{
    PgServer, Proxy, ProxyOptions, access_log_records, access_log_section, connect, examples_dir,
};
use tokio_postgres::{Client, SimpleQueryMessage};

const KEY: &str = "lookup-test-pseudonym-key-0123456789";
const CONTACTS: u64 = 300;

const SUPPORT_RULE: &str = "[roles.support.tables.contacts]
show = [\"id\", \"first_name\"]
columns = { last_name = \"mask.initial\", email = \"mask.email\", phone = \"mask.last(3)\", birth_date = \"drop\" }
";

/// The reference policy with support's lookup and the two test roles.
fn test_policy(reference: &str) -> String {
    assert!(
        reference.contains(SUPPORT_RULE),
        "the reference support rule changed"
    );
    let with_lookup = format!("{SUPPORT_RULE}lookup = [\"email\", \"phone\"]\n");
    let roles = "
[roles.support_north]
description = \"Customer support of the northern region\"
purpose = \"Answer customer requests of the region\"
lawful_basis = \"Performance of a contract, GDPR Art. 6(1)(b)\"
attributes = [\"region\"]
lookups_per_minute = 3

[roles.support_north.tables.contacts]
show = [\"id\", \"first_name\"]
columns = { last_name = \"mask.initial\", email = \"mask.email\", phone = \"mask.last(3)\", birth_date = \"drop\" }
filter = \"region = attr('region')\"
lookup = [\"email\"]

[roles.helpdesk]
description = \"Helpdesk, without lookups\"
purpose = \"Answer customer requests\"
lawful_basis = \"Performance of a contract, GDPR Art. 6(1)(b)\"

[roles.helpdesk.tables.contacts]
show = [\"id\", \"first_name\"]
columns = { last_name = \"mask.initial\", email = \"mask.email\", phone = \"mask.last(3)\", birth_date = \"drop\" }
";
    let text = reference.replace(SUPPORT_RULE, &with_lookup).replace(
        "support = \"none\"\n",
        "support = \"none\"\nsupport_north = \"none\"\nhelpdesk = \"none\"\n",
    );
    // The roles go before the register sections (a TOML table header ends the one before it).
    let register = text
        .find("\n[controller]")
        .expect("the reference policy has a [controller] section");
    format!("{}{roles}{}", &text[..register], &text[register..])
}

struct Lookup {
    pg: PgServer,
    proxy: Proxy,
    applied: AppliedPolicy,
    audit: std::path::PathBuf,
}

impl Lookup {
    async fn start() -> Lookup {
        let pg = PgServer::start().expect("start PostgreSQL");
        load_crm(&pg, CRM_DB, CONTACTS, 11).await.expect("CRM");
        let dir = pg.dir().to_path_buf();
        let applied = AppliedPolicy {
            policy: dir.join("policy.toml"),
            credentials: dir.join("logins.toml"),
        };
        let reference = std::fs::read_to_string(examples_dir().join("crm/policy.toml")).unwrap();
        std::fs::write(&applied.policy, test_policy(&reference)).unwrap();
        apply_policy(&pg, CRM_DB, &applied, KEY).expect("policy apply");
        let users = dir.join("users.toml");
        write_crm_users(
            &users,
            &[
                ("tom", "support", &[]),
                ("nora", "support_north", &[("region", "north")]),
                ("rita", "support_north", &[("region", "north")]),
                ("hal", "helpdesk", &[]),
            ],
            4096,
        )
        .expect("users");
        let proxy = Proxy::start(
            &pg,
            ProxyOptions {
                database: CRM_DB.into(),
                users_file: Some(users),
                policy: applied.proxy_section(None),
                audit: access_log_section(&dir, "lookup-test"),
                ..ProxyOptions::default()
            },
        )
        .expect("proxy");
        Lookup {
            audit: dir.join("audit"),
            pg,
            proxy,
            applied,
        }
    }

    async fn through_proxy(&self, user: &str) -> Client {
        connect(&self.proxy.uri_as(user, &crm_password(user), CRM_DB))
            .await
            .expect("connect through the proxy")
    }

    /// Straight to PostgreSQL as the role's login (no proxy).
    async fn straight(&self, role: &str) -> Client {
        let credentials =
            maschera::credentials::Credentials::load(&self.applied.credentials).unwrap();
        let login = credentials.login(role).expect("login");
        connect(&self.pg.uri_as(&login.user, &login.password, CRM_DB))
            .await
            .expect("connect as the login")
    }

    async fn owner(&self) -> Client {
        self.pg.connect(CRM_DB).await.expect("owner")
    }
}

/// Every row of `sql` (simple protocol), as text, NULL as `None`.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of an error.
fn error_of(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err}"));
    (db.code().code().to_string(), db.message().to_string())
}

async fn refusal(client: &Client, sql: &str) -> (String, String) {
    let err = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("expected `{sql}` to be refused"));
    error_of(&err)
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A contact of `region` with an e-mail and a phone that no other contact has: (id, email, phone).
async fn contact(owner: &Client, region: &str) -> (String, String, String) {
    let sql = format!(
        "SELECT id::text, email, phone FROM contacts c WHERE region = {} AND email <> '' AND phone <> '' \
         AND (SELECT count(*) FROM contacts d WHERE d.email = c.email OR d.phone = c.phone) = 1 ORDER BY id LIMIT 1",
        literal(region)
    );
    let row = rows(owner, &sql).await.remove(0);
    let [Some(id), Some(email), Some(phone)] = <[Option<String>; 3]>::try_from(row).unwrap() else {
        panic!("a contact with an e-mail and a phone");
    };
    (id, email, phone)
}

#[tokio::test]
async fn support_finds_a_contact_by_its_exact_email_or_phone_and_sees_it_masked() {
    let crm = Lookup::start().await;
    let owner = crm.owner().await;
    let (id, email, phone) = contact(&owner, "south").await;
    let masked_email = rows(
        &owner,
        &format!(
            "SELECT left(email, 1) || '***' || substr(email, strpos(email, '@')) FROM contacts WHERE id = {id}"
        ),
    )
    .await[0][0]
        .clone()
        .unwrap();
    let tom = crm.through_proxy("tom").await;

    // Simple protocol: the exact e-mail finds the one contact, whose row is masked.
    let found = rows(
        &tom,
        &format!(
            "SELECT id, email, phone FROM contacts WHERE email = {}",
            literal(&email)
        ),
    )
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0][0].as_deref(), Some(id.as_str()));
    assert_eq!(found[0][1].as_deref(), Some(masked_email.as_str()));
    assert_ne!(found[0][2].as_deref(), Some(phone.as_str()));
    assert!(
        found[0][2].as_deref().unwrap().starts_with('*'),
        "{found:?}"
    );
    // The value on the left, a qualified column, IN with another value.
    let found = rows(
        &tom,
        &format!(
            "SELECT c.id FROM contacts c WHERE {} = c.phone",
            literal(&phone)
        ),
    )
    .await;
    assert_eq!(found, vec![vec![Some(id.clone())]]);
    let found = rows(
        &tom,
        &format!(
            "SELECT id FROM contacts WHERE email IN ({}, 'nobody@example.invalid')",
            literal(&email)
        ),
    )
    .await;
    assert_eq!(found, vec![vec![Some(id.clone())]]);

    // Extended protocol ($1 bound by the client).
    let found = tom
        .query("SELECT id, email FROM contacts WHERE email = $1", &[&email])
        .await
        .expect("extended-protocol lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, i64>(0).to_string(), id);
    assert_eq!(found[0].get::<_, String>(1), masked_email);

    // Every other predicate on the column sees the masked value.
    for predicate in [
        format!("email ILIKE {}", literal(&email)),
        format!(
            "email LIKE {}",
            literal(&format!("{}%", &email[..email.find('@').unwrap()]))
        ),
        format!("lower(email) = {}", literal(&email.to_lowercase())),
    ] {
        let found = rows(&tom, &format!("SELECT id FROM contacts WHERE {predicate}")).await;
        assert!(found.is_empty(), "{predicate}: {found:?}");
    }

    // A role without `lookup` is unchanged: the exact e-mail compares with the masked value.
    let hal = crm.through_proxy("hal").await;
    let found = rows(
        &hal,
        &format!("SELECT id FROM contacts WHERE email = {}", literal(&email)),
    )
    .await;
    assert!(found.is_empty(), "{found:?}");
    let found = rows(
        &hal,
        &format!(
            "SELECT id FROM contacts WHERE email = {}",
            literal(&masked_email)
        ),
    )
    .await;
    assert!(
        found.iter().any(|r| r[0].as_deref() == Some(id.as_str())),
        "{found:?}"
    );

    // Straight as support's login: the function answers equality and nothing else.
    let login = crm.straight("support").await;
    let keys = rows(
        &login,
        &format!(
            "SELECT * FROM maschera_support.lookup_contacts_email({})",
            literal(&email)
        ),
    )
    .await;
    assert_eq!(keys, vec![vec![Some(id.clone())]]);
    for pattern in ["%", "%@%", "_%"] {
        let keys = rows(
            &login,
            &format!(
                "SELECT * FROM maschera_support.lookup_contacts_email({})",
                literal(pattern)
            ),
        )
        .await;
        assert!(keys.is_empty(), "{pattern}: {keys:?}");
    }
    let (code, message) = refusal(&login, "SELECT email FROM public.contacts").await;
    assert_eq!(code, "42501", "{message}");
    let (code, message) = refusal(
        &login,
        "ALTER FUNCTION maschera_support.lookup_contacts_email(text) SECURITY INVOKER",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    // Another role's login may not call it.
    let helpdesk = crm.straight("helpdesk").await;
    let (code, message) = refusal(
        &helpdesk,
        &format!(
            "SELECT * FROM maschera_support.lookup_contacts_email({})",
            literal(&email)
        ),
    )
    .await;
    assert_eq!(code, "42501", "{message}");

    // The access log has each lookup (who, role, table, column), never the value.
    drop(tom);
    let is_lookup = |r: &serde_json::Value| {
        r["user"] == "tom"
            && r["tables"].as_array().into_iter().flatten().any(|t| {
                t["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["action"] == "lookup")
            })
    };
    // The log is written in groups: wait for the records.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = access_log_records(&crm.audit);
        if records.iter().filter(|r| is_lookup(r)).count() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lookups: Vec<&serde_json::Value> = records.iter().filter(|r| is_lookup(r)).collect();
    assert!(lookups.len() >= 4, "{records:#?}");
    let first = lookups[0];
    assert_eq!(first["role"], "support");
    let contacts = &first["tables"][0];
    assert_eq!(contacts["table"]["name"], "contacts", "{contacts}");
    assert!(
        contacts["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "email" && c["action"] == "lookup" && c["category"] == "contact"),
        "{contacts}"
    );
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains(&email),
        "the access log holds the looked-up e-mail"
    );
    assert!(
        !text.contains(&phone),
        "the access log holds the looked-up phone"
    );
}

#[tokio::test]
async fn a_lookup_stays_inside_the_row_filter_and_is_rate_limited() {
    let crm = Lookup::start().await;
    let owner = crm.owner().await;
    let (north_id, north_email, north_phone) = contact(&owner, "north").await;
    let (_, south_email, _) = contact(&owner, "south").await;
    let nora = crm.through_proxy("nora").await;
    let lookup = |email: &str| format!("SELECT id FROM contacts WHERE email = {}", literal(email));
    assert_eq!(
        rows(&nora, &lookup(&north_email)).await,
        vec![vec![Some(north_id.clone())]]
    );
    assert!(rows(&nora, &lookup(&south_email)).await.is_empty());
    // `phone` is not a lookup column of this role: the masked value.
    let found = rows(
        &nora,
        &format!(
            "SELECT id FROM contacts WHERE phone = {}",
            literal(&north_phone)
        ),
    )
    .await;
    assert!(found.is_empty(), "{found:?}");

    // Straight as the login, the function applies the filter with the session's region.
    let login = crm.straight("support_north").await;
    let call = |email: &str| {
        format!(
            "SELECT * FROM maschera_support_north.lookup_contacts_email({})",
            literal(email)
        )
    };
    assert!(rows(&login, &call(&north_email)).await.is_empty());
    login
        .batch_execute("SET maschera.region = 'north'")
        .await
        .unwrap();
    assert_eq!(
        rows(&login, &call(&north_email)).await,
        vec![vec![Some(north_id.clone())]]
    );
    assert!(rows(&login, &call(&south_email)).await.is_empty());

    // rita: 3 lookups a minute. Two simple ones, one execution of a prepared statement...
    let rita = crm.through_proxy("rita").await;
    assert_eq!(rows(&rita, &lookup(&north_email)).await.len(), 1);
    assert!(rows(&rita, &lookup(&south_email)).await.is_empty());
    let statement = rita
        .prepare("SELECT id FROM contacts WHERE email = $1")
        .await
        .expect("prepare (no lookup taken yet)");
    assert_eq!(
        rita.query(&statement, &[&north_email]).await.unwrap().len(),
        1
    );
    // ...then each further lookup is refused with 53400, in both protocols.
    let err = rita.query(&statement, &[&north_email]).await.unwrap_err();
    let (code, message) = error_of(&err);
    assert_eq!(code, "53400", "{message}");
    assert!(
        message.contains("role support_north allows 3 lookups of masked columns per minute"),
        "{message}"
    );
    assert!(!message.contains(&north_email), "{message}");
    let (code, _) = refusal(&rita, &lookup(&north_email)).await;
    assert_eq!(code, "53400");
    // A statement without a lookup still runs, and so do other users' lookups.
    assert_eq!(
        rows(
            &rita,
            &format!("SELECT id FROM contacts WHERE id = {north_id}")
        )
        .await
        .len(),
        1
    );
    assert_eq!(rows(&nora, &lookup(&north_email)).await.len(), 1);
    // PREPARE could run a lookup uncounted: refused.
    let (code, message) = refusal(&nora, &format!("PREPARE p AS {}", lookup(&north_email))).await;
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("cannot be prepared with PREPARE"),
        "{message}"
    );
}
