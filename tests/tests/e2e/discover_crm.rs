//! `maschera discover` on a real CRM's schema: DjangoCRM (`django-crm-admin` 1.7.0, migrated by
//! `tests/compat/realcrm/drive.py setup` as in `real_crm`). The draft finds the CRM's person tables and
//! their e-mail, phone, name, birth date, city and address columns with evidence (1.7.0 has no skype,
//! zip or PO box columns); labels no boolean, number or configuration JSON free text; passes `policy
//! check --upstream` (the `crm` template's draft too); and once applied, its restricted role runs the
//! CRM's login and every list page with the same statuses as directly. Not for: the CRM's own policy
//! (`real_crm`) or discovery's detectors one by one (`discover_real`, unit tests).

use crate::discover_real::line_of;
use crate::real_crm::{DB, assert_crawl_as_direct, direct, drive, passed};
use maschera_tests::crm_proxy::{
    AppliedPolicy, CrmUser, apply_policy, crm_password, write_crm_users,
};
use maschera_tests::{PgServer, Proxy, connect, run_maschera_ok};
use std::time::Instant;

/// The proxy's users: the CRM's own account (the draft's unrestricted `dpo`, over which the CRM's
/// login checks passwords) and the account its staff's sessions use (the draft's restricted `reader`).
const USERS: &[CrmUser] = &[("owner", "dpo", &[]), ("desk", "reader", &[])];

#[tokio::test]
async fn discover_drafts_a_working_policy_for_the_real_django_crm() {
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_database(DB).expect("the CRM's database");
    let setup = drive(&direct(&pg), &["setup"]);
    for op in ["migrate", "reference_data", "users_and_rows"] {
        passed(&setup, op);
    }
    pg.psql(DB, &["-c", "ANALYZE"]).unwrap();
    // DjangoCRM 1.7.0 has no skype, zip code or PO box columns (`discover_real` covers those names).
    let tables: usize = pg
        .psql(
            DB,
            &[
                "-At",
                "-c",
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            ],
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let dir = pg.dir().to_path_buf();
    let applied = AppliedPolicy {
        policy: dir.join("draft.toml"),
        credentials: dir.join("logins.toml"),
    };
    let uri = pg.uri(DB);
    let draft = applied.policy.display().to_string();
    let started = Instant::now();
    run_maschera_ok(["discover", "--upstream", &uri, "-o", &draft]);
    let took = started.elapsed();
    let text = std::fs::read_to_string(&applied.policy).unwrap();
    let count = |needle: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(needle))
            .count()
    };
    eprintln!(
        "discover on DjangoCRM: {tables} tables in {took:?}; {} lines; findings high {}, medium {}, \
         low {}, commented hints {}, secrets {}\n{text}",
        text.lines().count(),
        count("  # high: "),
        count("  # medium: "),
        count("  # low: "),
        text.lines()
            .filter(|l| l.starts_with("# ") && l.contains(" = { category = "))
            .count(),
        count("category = \"secret\""),
    );

    // The CRM's person tables and their personal columns, each with its evidence.
    for (table, column, evidence) in [
        ("crm_contact", "email", "name matches \"email\""),
        ("crm_contact", "phone", "name matches \"phone\""),
        ("crm_contact", "mobile", "name matches \"mobile\""),
        ("crm_contact", "first_name", "name matches \"first name\""),
        ("crm_contact", "last_name", "name matches \"last name\""),
        ("crm_contact", "address", "name matches \"address\""),
        ("crm_contact", "birth_date", "name matches \"birth\""),
        ("crm_lead", "email", "1/1 sampled values (100%) are e-mail"),
        (
            "crm_lead",
            "phone",
            "1/1 sampled values (100%) are phone numbers",
        ),
        ("crm_lead", "company_email", "name matches \"email\""),
        ("crm_lead", "city_name", "on a table of people"),
        ("crm_request", "email", "name matches \"email\""),
        ("crm_company", "full_name", "name matches \"full name\""),
        (
            "crm_deal",
            "contact_id",
            "high: refers to a person in crm_contact",
        ),
        (
            "django_admin_log",
            "change_message",
            "sampled JSON documents",
        ),
        ("crm_company", "email", "name matches \"email\""),
        ("auth_user", "email", "name matches \"email\""),
        ("auth_user", "password", "category = \"secret\""),
        ("django_session", "session_data", "category = \"secret\""),
    ] {
        let line = line_of(&text, table, column)
            .unwrap_or_else(|| panic!("{table}.{column} not proposed"));
        assert!(line.contains(evidence), "{table}.{column}: {line}");
        assert!(
            [" # high: ", " # medium: ", " # low: "]
                .iter()
                .any(|c| line.contains(c)),
            "{table}.{column} without a confidence: {line}"
        );
    }
    // A history whose text holds JSON, and a lead source with an `email` column holding no address,
    // are not tables of people (their keys are not personal).
    assert_eq!(line_of(&text, "django_admin_log", "id"), None);
    assert_eq!(line_of(&text, "crm_leadsource", "id"), None);
    assert_eq!(
        line_of(&text, "massmail_emailaccount", "email_imail_ssl_certfile"),
        None,
        "a certificate file's path is no e-mail address"
    );
    assert_eq!(
        line_of(&text, "crm_crmemail", "message_id"),
        None,
        "a Message-ID is no free text"
    );
    assert!(
        text.contains("# crm_leadsource: 10 rows sampled; weak hints: name (identifying), email"),
        "the lead source's hints"
    );
    // No boolean, number, date or configuration JSON is called free text (or personal at all, for
    // booleans).
    let mut free_text = Vec::new();
    let mut table = "";
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("[tables.") {
            table = header.trim_end_matches(".columns]").trim_end_matches(']');
            continue;
        }
        if line.starts_with('#') || !line.contains(" = { category = ") {
            continue;
        }
        let column = line.split(" = ").next().unwrap();
        let type_name = line
            .split("type = \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap_or("");
        assert!(type_name != "boolean", "{table}.{column} is a boolean");
        if line.contains("category = \"free_text\"") {
            free_text.push(format!("{table}.{column}"));
            assert!(
                type_name == "text" || type_name.starts_with("character"),
                "{table}.{column} ({type_name}) labelled free text"
            );
        }
    }
    eprintln!("free text: {free_text:?}");
    // Short enough to read: one line per table without findings, rules only where a role sees more
    // than a table's default (642 lines for DjangoCRM's 81 tables when this was written).
    assert!(
        text.lines().count() < 10 * tables,
        "{} lines for {tables} tables",
        text.lines().count()
    );
    assert!(text.contains("unlisted_tables = \"read\""), "Django found");

    run_maschera_ok(["policy", "check", &draft, "--upstream", &uri]);
    // The CRM template's roles (sales, support, analyst) on the same schema pass the check too.
    let crm_draft = dir.join("crm-draft.toml");
    let crm_text = run_maschera_ok(["discover", "--template=crm", "--upstream", &uri]);
    assert!(
        crm_text.contains("[roles.analyst]")
            && crm_text.contains("\ncrm_contact = { show = [\"*\"]"),
        "sales sees its customers: {crm_text}"
    );
    std::fs::write(&crm_draft, &crm_text).unwrap();
    run_maschera_ok([
        "policy",
        "check",
        &crm_draft.display().to_string(),
        "--upstream",
        &uri,
    ]);
    apply_policy(&pg, DB, &applied, "discover-crm-pseudonym-key-0123456789").expect("apply");
    let users = dir.join("users.toml");
    write_crm_users(&users, USERS, 4096).unwrap();
    let proxy = Proxy::start(&pg, applied.proxy_options(DB, users)).expect("proxy with the draft");

    // The restricted role runs the CRM: its login (the password check over the CRM's own account,
    // the session written over the restricted one) and every list page, as directly.
    assert_crawl_as_direct(&proxy, &pg);
    // The lead as the restricted role reads it: every personal value masked or NULL, in place.
    let desk = connect(&proxy.uri_as("desk", &crm_password("desk"), DB))
        .await
        .expect("connect as the restricted account");
    let lead = desk
        .query_one(
            "SELECT * FROM crm_lead WHERE company_name = 'Rossi srl'",
            &[],
        )
        .await
        .expect("the lead, every column");
    let text_of = |column: &str| lead.get::<_, Option<String>>(column);
    assert_eq!(text_of("last_name").as_deref(), Some("R."));
    assert_eq!(text_of("email").as_deref(), Some("m***@example.org"));
    assert_eq!(text_of("phone").as_deref(), Some("*********958"));
    assert_eq!(text_of("token"), None, "a secret reads NULL");
    assert_eq!(text_of("city_name"), None, "hidden: NULL in its place");
}
