//! A real CRM the project did not write, unchanged, through Maschera: DjangoCRM (`django-crm-admin`
//! 1.7.0 from PyPI, installed by `tests/compat/realcrm/install` into `target/realcrm-venv`) with the
//! policy of `examples/django-crm/policy.toml`. Its migrations and reference data as an unrestricted
//! user; its pages, the login and a contact created, edited and searched as a restricted user (sales),
//! with leads' contact data masked; a named part of its own test suite through the proxy with the same
//! results as directly. The driver is `tests/compat/realcrm/drive.py`; COMPATIBILITY.md has the table.
//! Not for: the reference CRM (compat.rs), routing as such (databases.rs).

use crate::compat::run_client;
use maschera_tests::crm_proxy::{CrmUser, apply_example_policy, crm_password, write_crm_users};
use maschera_tests::{PgServer, Proxy, ProxyOptions, SUPERUSER};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The CRM's database.
pub(crate) const DB: &str = "djcrm";

/// The proxy's users: the CRM's database account for migrations (unrestricted) and the account its
/// sales staff's sessions use (restricted; `crm_user` names the CRM user for the history filter).
const USERS: &[CrmUser] = &[
    ("owner", "admin", &[]),
    ("desk", "sales", &[("crm_user", "sally")]),
];

/// The part of the CRM's own test suite run through the proxy and directly (about 16 tests).
const SUITE: &[&str] = &[
    "tests.crm.test_contact",
    "tests.crm.test_company",
    "tests.crm.test_deal",
    "tests.common.test_userprofile",
];

/// The CRM's Python (its own virtualenv).
pub(crate) fn python() -> PathBuf {
    maschera_tests::clients::venv_python(
        "MASCHERA_REALCRM_PYTHON",
        "realcrm-venv",
        "tests/compat/realcrm/install",
    )
}

/// Where the driver connects: (host, port, user, password).
pub(crate) type Target = (String, u16, String, String);

pub(crate) fn via_proxy(proxy: &Proxy, user: &str) -> Target {
    (
        "127.0.0.1".into(),
        proxy.port(),
        user.into(),
        crm_password(user),
    )
}

pub(crate) fn direct(pg: &PgServer) -> Target {
    (
        pg.host().into(),
        pg.port(),
        SUPERUSER.into(),
        pg.password().into(),
    )
}

/// Runs one step of the driver against `target`; its outcome lines by operation.
pub(crate) fn drive(target: &Target, args: &[&str]) -> BTreeMap<String, (String, String)> {
    drive_with(target, None, args)
}

/// One step as the sales staff's account (desk), with the CRM's login (password check, last_login)
/// over the application's own account (owner): the policy hides the hashes from sales.
pub(crate) fn as_sales(proxy: &Proxy, args: &[&str]) -> BTreeMap<String, (String, String)> {
    drive_with(
        &via_proxy(proxy, "desk"),
        Some(&via_proxy(proxy, "owner")),
        args,
    )
}

/// As [`drive`], with the CRM's login over `auth` when given (realcrm_auth.py).
pub(crate) fn drive_with(
    target: &Target,
    auth: Option<&Target>,
    args: &[&str],
) -> BTreeMap<String, (String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/realcrm");
    let (host, port, user, password) = target;
    let mut command = Command::new(python());
    command
        .arg(dir.join("drive.py"))
        .args(args)
        .env("PYTHONPATH", &dir)
        .env("MASCHERA_DB_HOST", host)
        .env("MASCHERA_DB_PORT", port.to_string())
        .env("MASCHERA_DB_USER", user)
        .env("MASCHERA_DB_PASSWORD", password)
        .env("MASCHERA_DB_NAME", DB);
    if let Some((_, _, user, password)) = auth {
        command
            .env("MASCHERA_AUTH_DB_USER", user)
            .env("MASCHERA_AUTH_DB_PASSWORD", password);
    }
    let what = format!("DjangoCRM {} as {user}", args.join(" "));
    let started = Instant::now();
    let outcomes = run_client(command, &what);
    eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    outcomes
}

/// Asserts that `op` passed and returns its detail.
pub(crate) fn passed<'a>(outcomes: &'a BTreeMap<String, (String, String)>, op: &str) -> &'a str {
    let (outcome, detail) = outcomes
        .get(op)
        .unwrap_or_else(|| panic!("{op}: not run ({outcomes:?})"));
    assert_eq!(outcome, "pass", "{op}: {detail}");
    detail
}

/// Crawls every list page of the CRM as the restricted sales user through `proxy` and directly on
/// `pg`: the same HTTP statuses, most pages answered 200.
pub(crate) fn assert_crawl_as_direct(proxy: &Proxy, pg: &PgServer) {
    let crawled = as_sales(proxy, &["crawl"]);
    let crawled_directly = drive(&direct(pg), &["crawl"]);
    assert_eq!(
        passed(&crawled, "crawl"),
        passed(&crawled_directly, "crawl")
    );
    assert!(
        passed(&crawled, "crawl").starts_with("HTTP 200: 3"),
        "{crawled:?}"
    );
}

/// Statements the proxy refused, as its log names them (no values: the log has none).
fn refusals(proxy: &Proxy) -> Vec<String> {
    proxy
        .log()
        .lines()
        .filter(|line| line.contains("statement refused"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn django_crm_runs_unchanged_through_maschera_for_each_role() {
    let started = Instant::now();
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_database(DB).expect("the CRM's database");
    let users = pg.dir().join("users.toml");
    write_crm_users(&users, USERS, 4096).unwrap();
    let routing = r#"databases = ["postgres", "test_*"]"#;

    // 1. Migrations and reference data as the unrestricted account, before any policy exists.
    {
        let options = ProxyOptions {
            database: DB.into(),
            users_file: Some(users.clone()),
            upstream_extra: routing.into(),
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start(&pg, options).expect("proxy without a policy");
        let setup = drive(&via_proxy(&proxy, "owner"), &["setup"]);
        for op in ["migrate", "reference_data", "users_and_rows"] {
            passed(&setup, op);
        }
    }

    // 2. The CRM's policy, applied to the migrated database.
    let applied = apply_example_policy(
        &pg,
        DB,
        "django-crm/policy.toml",
        "real-crm-test-pseudonym-key",
    )
    .expect("policy apply");
    let options = ProxyOptions {
        upstream_extra: routing.into(),
        ..applied.proxy_options(DB, users)
    };
    let proxy = Proxy::start(&pg, options).expect("proxy with the CRM's policy");

    // 3. The sales staff's account: login, pages, a contact created, edited, searched.
    let sales = as_sales(&proxy, &["restricted"]);
    for op in [
        "login",
        "page:crm_company_changelist",
        "page:crm_contact_changelist",
        "page:crm_deal_changelist",
        "page:crm_request_changelist",
        "page:crm_crmemail_changelist",
        "page:tasks_task_changelist",
        "page:tasks_memo_changelist",
        "page:lead_list_masked",
        "contact_create",
        "contact_edit",
        "contact_search",
        "contact_page",
    ] {
        passed(&sales, op);
    }
    // Every list page of the CRM as sally: the same statuses through the proxy as sales as directly.
    assert_crawl_as_direct(&proxy, &pg);
    // The admin's history: the sales user sees the entries of the CRM user it acts for only.
    // Its JSON change message keeps its shape with the e-mail inside it redacted.
    assert_eq!(
        passed(&sales, "history"),
        r#"sally: Acme Trading [{"changed": {"name": "contact", "object": "Marco Rossi <[email]>", "fields": ["Email"]}}]"#
    );
    // Framework tables: users readable without their password hashes; users, permissions and
    // migrations not writable (the CRM's login ran over its own account).
    assert_eq!(
        passed(&sales, "framework_tables"),
        "hash=none writes=42501,42501,42501 staff=True"
    );
    // Leads: contact data masked, the birth date cut to its year, as the ORM reads them.
    assert_eq!(
        passed(&sales, "lead_read"),
        "email=m***@example.org phone=*********958 birth_date=1984-01-01"
    );
    // A full-model save of a lead writes the masked values back unchanged: saved, and the stored
    // values are kept (checked below).
    assert_eq!(passed(&sales, "lead_save"), "saved");
    // The contact's and the lead's change forms posted back both work (the lead's with its masked
    // values written back; a blank e-mail stays blank under `mask.email`, so the form is valid).
    passed(&sales, "contact_page_edit");
    passed(&sales, "lead_page_edit");
    // Saving only the columns shown as stored works; the change form renders the masked values.
    passed(&sales, "lead_save_update_fields");
    passed(&sales, "lead_page");
    // The stored lead is untouched, and the contact sales saved is stored as written.
    let stored = pg
        .psql(
            DB,
            &[
                "-At",
                "-c",
                "SELECT email || ' ' || birth_date || ' ' || description FROM crm_lead",
            ],
        )
        .unwrap();
    assert_eq!(
        stored.trim(),
        "marco.rossi@example.org 1984-07-19 called back"
    );
    let contact = pg
        .psql(
            DB,
            &["-At", "-c", "SELECT email || ' ' || title FROM crm_contact"],
        )
        .unwrap();
    assert_eq!(
        contact.trim(),
        "giulia.bianchi@example.org Purchasing manager"
    );

    // 4. Migrations after the policy, through the proxy as the owner: Django drops columns with
    //    `DROP COLUMN ... CASCADE`, which drops the role's views of crm_contact and crm_lead; the proxy
    //    rebuilds them after the schema change, and the lead is still there for sales, still masked.
    let owner = via_proxy(&proxy, "owner");
    passed(
        &drive(&owner, &["migrate", "crm", "0007"]),
        "migrate:crm:0007",
    );
    passed(
        &drive(&owner, &["migrate", "crm", "latest"]),
        "migrate:crm:latest",
    );
    let mut lead = String::new();
    for _ in 0..10 {
        // The rebuild runs once the owner's session is idle; a moment later at most.
        let leads = as_sales(&proxy, &["leads"]);
        lead = leads["lead_read"].1.clone();
        if leads["lead_read"].0 == "pass" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        lead,
        "email=m***@example.org phone=*********958 birth_date=1984-01-01"
    );

    // 5. A named part of the CRM's own test suite: through the proxy (Django's runner creates
    //    test_djcrm there and runs every migration in it) and directly, with the same results.
    let tests = |outcomes: &BTreeMap<String, (String, String)>| -> BTreeMap<String, String> {
        outcomes
            .iter()
            .filter(|(op, _)| op.starts_with("test:"))
            .map(|(op, (outcome, _))| (op.clone(), outcome.clone()))
            .collect()
    };
    let through = tests(&drive(
        &via_proxy(&proxy, "owner"),
        &[&["suite"], SUITE].concat(),
    ));
    let plain = tests(&drive(&direct(&pg), &[&["suite"], SUITE].concat()));
    assert!(through.len() >= 10, "too few tests ran: {through:?}");
    assert_eq!(
        through, plain,
        "the CRM's tests through the proxy and directly"
    );

    // No statement was refused as not understood (0A000), and the lead's saves were not refused.
    let refused = refusals(&proxy);
    assert!(
        refused.iter().all(|line| !line.contains("0A000")),
        "refused as not supported:\n{}",
        refused.join("\n")
    );
    assert!(
        !refused.iter().any(|line| line.contains("public.crm_lead")),
        "a lead's save was refused:\n{}",
        refused.join("\n")
    );
    eprintln!(
        "DjangoCRM through Maschera: {:.1}s in all; refusals:\n{}",
        started.elapsed().as_secs_f64(),
        refused.join("\n")
    );
}
