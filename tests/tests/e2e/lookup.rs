//! Lookup for support (`lookup = [...]` in a role's table rule): on the reference CRM with a test
//! policy (the reference policy with `lookup = ["email", "phone"]` on support's contacts, a
//! region-filtered `support_north` role with `lookup = ["email"]` and a small `lookups_per_minute`,
//! and a `helpdesk` role with support's masks and no lookup), through the proxy with the simple and
//! the extended protocol and straight at the database as the roles' logins: an exact e-mail or phone
//! finds the contact and the row stays masked; ILIKE and other predicates see the masked value; a
//! filtered role finds nothing outside its filter; the login may only call the equality function
//! (no pattern, no base table); the access log records each lookup without its value; the rate limit
//! refuses with 53400; a role without `lookup` is unchanged.

use maschera_tests::clients::{
    error_of, python, simple_column, simple_refusal as refusal, simple_rows as rows,
};
use maschera_tests::crm_proxy::{CRM_DB, crm_password};
use maschera_tests::{CrmProxy, Fixture, access_log_records, run_maschera_ok};
use tokio_postgres::Client;

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

/// The CRM with [`test_policy`] applied, an access log, and the proxy serving tom (support), nora and
/// rita (support_north, region north), hal (helpdesk) and dora (dpo).
async fn start() -> CrmProxy {
    Fixture::crm(CONTACTS)
        .seed(11)
        .pseudonym_key(KEY)
        .users([
            ("tom", "support", &[][..]),
            ("nora", "support_north", &[("region", "north")]),
            ("rita", "support_north", &[("region", "north")]),
            ("hal", "helpdesk", &[]),
            ("dora", "dpo", &[]),
        ])
        .access_log("lookup-test")
        .policy(|reference| test_policy(&reference))
        .start()
        .await
        .expect("CRM behind the proxy")
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The ids of the contacts `client` finds with `predicate` (simple protocol).
async fn ids(client: &Client, predicate: &str) -> Vec<String> {
    simple_column(
        client,
        &format!("SELECT id FROM contacts WHERE {predicate}"),
    )
    .await
}

/// What the lookup function `function` returns for `value`, called straight as a login.
async fn keys(login: &Client, function: &str, value: &str) -> Vec<String> {
    simple_column(
        login,
        &format!("SELECT * FROM {function}({})", literal(value)),
    )
    .await
}

/// Whether an access-log record is a statement of `user` that looked a column up.
fn is_lookup_of(record: &serde_json::Value, user: &str) -> bool {
    record["user"] == user
        && record["tables"].as_array().into_iter().flatten().any(|t| {
            t["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["action"] == "lookup")
        })
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
    let crm = start().await;
    let owner = crm.owner().await;
    let (id, email, phone) = contact(&owner, "south").await;
    let masked = simple_column(
        &owner,
        &format!("SELECT left(email, 1) || '***' || substr(email, strpos(email, '@')) FROM contacts WHERE id = {id}"),
    )
    .await;
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
    assert_eq!(found[0][1].as_deref(), Some(masked[0].as_str()));
    let shown_phone = found[0][2].as_deref().unwrap();
    assert!(
        shown_phone != phone && shown_phone.starts_with('*'),
        "{found:?}"
    );
    // The value on the left, a qualified column, IN with another value.
    let one = vec![id.clone()];
    assert_eq!(
        ids(&tom, &format!("{} = contacts.phone", literal(&phone))).await,
        one
    );
    let listed = format!("email IN ({}, 'nobody@example.invalid')", literal(&email));
    assert_eq!(ids(&tom, &listed).await, one);

    // Extended protocol ($1 bound by the client).
    let found = tom
        .query("SELECT id, email FROM contacts WHERE email = $1", &[&email])
        .await
        .expect("extended-protocol lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, i64>(0).to_string(), id);
    assert_eq!(found[0].get::<_, String>(1), masked[0]);

    // Every other predicate on the column sees the masked value.
    let local = &email[..email.find('@').unwrap()];
    for predicate in [
        format!("email ILIKE {}", literal(&email)),
        format!("email LIKE {}", literal(&format!("{local}%"))),
        format!("lower(email) = {}", literal(&email.to_lowercase())),
    ] {
        assert!(ids(&tom, &predicate).await.is_empty(), "{predicate}");
    }

    // A role without `lookup` is unchanged: the exact e-mail compares with the masked value.
    let hal = crm.through_proxy("hal").await;
    assert!(
        ids(&hal, &format!("email = {}", literal(&email)))
            .await
            .is_empty()
    );
    let by_mask = ids(&hal, &format!("email = {}", literal(&masked[0]))).await;
    assert!(by_mask.contains(&id), "{by_mask:?}");

    // `policy explain` against the live database shows the rewrite.
    let explained = run_maschera_ok([
        std::ffi::OsStr::new("policy"),
        "explain".as_ref(),
        crm.applied.policy.as_os_str(),
        "--role".as_ref(),
        "support".as_ref(),
        "--upstream".as_ref(),
        crm.pg.uri(CRM_DB).as_ref(),
        "SELECT id FROM contacts WHERE email = 'x'".as_ref(),
    ]);
    assert!(
        explained.contains(
            "(\"contacts\".\"id\" IN (SELECT \"maschera_support\".\"lookup_contacts_email\"('x')))"
        ),
        "{explained}"
    );

    // Straight as support's login: the function answers equality and nothing else.
    let login = crm.straight("support").await;
    let function = "maschera_support.lookup_contacts_email";
    assert_eq!(keys(&login, function, &email).await, one);
    for pattern in ["%", "%@%", "_%"] {
        assert!(
            keys(&login, function, pattern).await.is_empty(),
            "{pattern}"
        );
    }
    for sql in [
        "SELECT email FROM public.contacts",
        "ALTER FUNCTION maschera_support.lookup_contacts_email(text) SECURITY INVOKER",
    ] {
        let (code, message) = refusal(&login, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    // Another role's login may not call it, and through the proxy it is no function of the role's.
    let helpdesk = crm.straight("helpdesk").await;
    let call = format!("SELECT * FROM {function}({})", literal(&email));
    for client in [&helpdesk, &tom] {
        let (code, message) = refusal(client, &call).await;
        assert_eq!(code, "42501", "{message}");
    }

    // psycopg, as a Django or SQLAlchemy application uses it: server-side binding ($1) and a
    // ClientCursor (the value inlined).
    let script = r#"
import sys, psycopg
uri, email, masked, id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with psycopg.connect(uri) as conn:
    rows = conn.execute("select id, email from contacts where email = %s", [email]).fetchall()
    assert rows == [(id, masked)], rows
    with psycopg.ClientCursor(conn) as cur:
        cur.execute("select id, email from contacts where email = %s", [email])
        assert cur.fetchall() == [(id, masked)]
        cur.execute("select id from contacts where email ilike %s", [email])
        assert cur.fetchall() == []
print("psycopg ok")
"#;
    let uri = crm.proxy.uri_as("tom", &crm_password("tom"), CRM_DB);
    let printed = python(script, &[&uri, &email, &masked[0], &id]);
    assert!(printed.contains("psycopg ok"), "{printed}");

    // The access log has each lookup (who, role, table, column), never the value.
    drop(tom);
    // The log is written in groups: wait for the records.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = access_log_records(&crm.audit_dir());
        if records.iter().filter(|r| is_lookup_of(r, "tom")).count() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lookups: Vec<&serde_json::Value> =
        records.iter().filter(|r| is_lookup_of(r, "tom")).collect();
    assert!(lookups.len() >= 4, "{records:#?}");
    assert_eq!(lookups[0]["role"], "support");
    let contacts = &lookups[0]["tables"][0];
    assert_eq!(contacts["table"]["name"], "contacts", "{contacts}");
    let columns = contacts["columns"].as_array().unwrap();
    assert!(
        columns
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
    let crm = start().await;
    let owner = crm.owner().await;
    let (north_id, north_email, north_phone) = contact(&owner, "north").await;
    let (_, south_email, _) = contact(&owner, "south").await;
    let one = vec![north_id.clone()];
    let by_email = |email: &str| format!("email = {}", literal(email));
    let nora = crm.through_proxy("nora").await;
    assert_eq!(ids(&nora, &by_email(&north_email)).await, one);
    assert!(ids(&nora, &by_email(&south_email)).await.is_empty());
    // `phone` is not a lookup column of this role: the masked value.
    let by_phone = format!("phone = {}", literal(&north_phone));
    assert!(ids(&nora, &by_phone).await.is_empty());

    // Straight as the login, the function applies the filter with the session's region.
    let login = crm.straight("support_north").await;
    let function = "maschera_support_north.lookup_contacts_email";
    assert!(keys(&login, function, &north_email).await.is_empty());
    login
        .batch_execute(&maschera_tests::seal::region_sets(
            &crm.pg,
            CRM_DB,
            "maschera_support_north",
            "north",
        ))
        .await
        .unwrap();
    assert_eq!(keys(&login, function, &north_email).await, one);
    assert!(keys(&login, function, &south_email).await.is_empty());

    // rita: 3 lookups a minute. Two simple ones, one execution of a prepared statement...
    let rita = crm.through_proxy("rita").await;
    assert_eq!(ids(&rita, &by_email(&north_email)).await, one);
    assert!(ids(&rita, &by_email(&south_email)).await.is_empty());
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
    let lookup = format!("SELECT id FROM contacts WHERE {}", by_email(&north_email));
    let (code, _) = refusal(&rita, &lookup).await;
    assert_eq!(code, "53400");
    // A statement without a lookup still runs, and so do other users' lookups.
    assert_eq!(ids(&rita, &format!("id = {north_id}")).await, one);
    assert_eq!(ids(&nora, &by_email(&north_email)).await, one);
    // PREPARE could run a lookup uncounted: refused.
    let (code, message) = refusal(&nora, &format!("PREPARE p AS {lookup}")).await;
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("cannot be prepared with PREPARE"),
        "{message}"
    );

    // A schema change through the proxy remakes the lookup functions with the views.
    let dora = crm.through_proxy("dora").await;
    dora.batch_execute("ALTER TABLE contacts ADD COLUMN nickname text")
        .await
        .expect("ALTER TABLE through the proxy");
    let tom = crm.through_proxy("tom").await;
    assert_eq!(ids(&tom, &by_email(&south_email)).await.len(), 1);
    assert_eq!(ids(&tom, &by_email(&north_email)).await, one);
}
