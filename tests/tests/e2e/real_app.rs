//! A second real application the project did not write, unchanged, through Maschera, on another
//! stack than Django: ihatemoney 7.2.1 from PyPI (Flask, SQLAlchemy, Alembic through Flask-Migrate,
//! SQLAlchemy-Continuum's history tables), installed by `tests/compat/ihatemoney/install` into
//! `target/ihatemoney-venv`, with the policy of `examples/ihatemoney/policy.toml`. Its migrations as
//! the owner; its pages as the restricted help desk (a row filter by the desk's currency, contact
//! e-mails masked, bill descriptions redacted), members and bills added, edited and deleted through
//! its forms and ORM, in session and in transaction pool mode; a named part of its own pytest suite
//! through the proxy with the same results as directly; and the first draft `maschera discover` makes
//! of its schema, applied, under which the application starts. The driver is
//! `tests/compat/ihatemoney/drive.py`; COMPATIBILITY.md has the table.
//! Not for: DjangoCRM (real_crm.rs), the drivers as such (compat.rs, compat_more.rs).

use crate::compat::run_client;
use crate::real_crm::{Target, direct, passed, via_proxy};
use maschera_tests::crm_proxy::{
    AppliedPolicy, CrmUser, apply_example_policy, apply_policy, write_crm_users,
};
use maschera_tests::{PgServer, Proxy, ProxyOptions, run_maschera_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The application's database, and the one its own test suite creates and drops tables in.
const DB: &str = "ihatemoney";
const TEST_DB: &str = "test_ihatemoney";

/// The proxy's users: the application's account for migrations (unrestricted) and the account of
/// the euro help desk's instance of the application (restricted to projects in EUR).
const USERS: &[CrmUser] = &[
    ("owner", "owner", &[]),
    ("desk", "helpdesk", &[("currency", "EUR")]),
];

/// The part of the application's own test suite run through the proxy and directly: its REST API
/// and its history (SQLAlchemy-Continuum) tests, 28 (budget_test.py's 60 more would add a minute
/// or two each way).
const SUITE: &[&str] = &["api_test.py", "history_test.py"];

/// The application's Python (its own virtualenv).
fn python() -> PathBuf {
    maschera_tests::clients::venv_python(
        "MASCHERA_IHATEMONEY_PYTHON",
        "ihatemoney-venv",
        "tests/compat/ihatemoney/install",
    )
}

/// Runs one step of the driver against `database` at `target`; its outcome lines by operation.
fn drive(target: &Target, database: &str, args: &[&str]) -> BTreeMap<String, (String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/ihatemoney");
    let (host, port, user, password) = target;
    let mut command = Command::new(python());
    command
        .arg("-W")
        .arg("ignore")
        .arg(dir.join("drive.py"))
        .args(args)
        .current_dir(&dir)
        .env("MASCHERA_DB_HOST", host)
        .env("MASCHERA_DB_PORT", port.to_string())
        .env("MASCHERA_DB_USER", user)
        .env("MASCHERA_DB_PASSWORD", password)
        .env("MASCHERA_DB_NAME", database);
    let what = format!("ihatemoney {} as {user}", args.join(" "));
    let started = Instant::now();
    let outcomes = run_client(command, &what);
    eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    outcomes
}

/// The help desk's work through `proxy`, with what it must see.
fn assert_help_desk(proxy: &Proxy, mode: &str) {
    let desk = drive(&via_proxy(proxy, "desk"), DB, &["restricted"]);
    // The application starts (its Alembic check reads alembic_version) and the admin logs in.
    passed(&desk, "start");
    passed(&desk, "admin_login");
    // The row filter: the euro desk's dashboard lists the project in EUR only.
    assert_eq!(passed(&desk, "dashboard"), "projects=eur-trip", "{mode}");
    // Bills: the phone number in a description redacted, the rest of the text and names shown.
    assert_eq!(
        passed(&desk, "bills"),
        "shown=Dinner, call Marco on [phone]|Train tickets|Marco Rossi",
        "{mode}"
    );
    // The project's settings form renders the contact e-mail masked.
    assert_eq!(
        passed(&desk, "project_settings"),
        "contact_email=m***@example.org",
        "{mode}"
    );
    for page in ["history", "statistics", "settle", "export"] {
        assert_eq!(passed(&desk, &format!("page:{page}")), "HTTP 200", "{mode}");
    }
    // Writes through the application's forms and ORM (SQLAlchemy-Continuum records each in the
    // version tables as the same role).
    assert_eq!(
        passed(&desk, "member_add"),
        "members=Giulia Bianchi,Luca Neri,Marco Rossi",
        "{mode}"
    );
    // A new bill's description is the desk's own text: stored as written, read back redacted.
    assert_eq!(
        passed(&desk, "bill_add"),
        "what=Museum, receipt to [email] owers=3",
        "{mode}"
    );
    assert_eq!(
        passed(&desk, "bill_edit"),
        "amount=45 payer=Giulia Bianchi owers=1",
        "{mode}"
    );
    // The redacted description written back unchanged by the edit form: the stored one is kept.
    assert_eq!(
        passed(&desk, "bill_edit_masked"),
        "amount=61 what=Dinner, call Marco on [phone]",
        "{mode}"
    );
    // Deleting a bill deletes its shares first (billowers, a table without a primary key: the
    // view's triggers find a share by all its columns).
    assert_eq!(passed(&desk, "bill_delete"), "left=2", "{mode}");
    // Luca has no bill left: the application deletes him.
    assert_eq!(
        passed(&desk, "member_remove"),
        "kept=False active=2",
        "{mode}"
    );
    // Projects are not writable for the desk: refused, naming the table.
    let (outcome, detail) = &desk["project_rename"];
    assert_eq!(outcome, "refused", "{mode}: {detail}");
    assert!(
        detail.starts_with("42501") && detail.contains("project"),
        "{mode}: {detail}"
    );
    // The other desk's project does not exist for this one: the application offers to create it.
    assert_eq!(
        passed(&desk, "other_desk"),
        "HTTP 303 hidden=True",
        "{mode}"
    );
}

#[test]
fn ihatemoney_runs_unchanged_through_maschera() {
    let started = Instant::now();
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_database(DB).expect("the application's database");
    pg.create_database(TEST_DB).expect("its tests' database");
    let users = pg.dir().join("users.toml");
    write_crm_users(&users, USERS, 4096).unwrap();
    let routing = r#"databases = ["test_*"]"#;

    // 1. Migrations (the application runs them when it starts) and two projects made through its
    //    pages, as the owner, before any policy exists.
    {
        let options = ProxyOptions {
            database: DB.into(),
            users_file: Some(users.clone()),
            upstream_extra: routing.into(),
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start(&pg, options).expect("proxy without a policy");
        let setup = drive(&via_proxy(&proxy, "owner"), DB, &["setup"]);
        assert_eq!(passed(&setup, "migrate"), "alembic at c941aaca38c2");
        assert_eq!(passed(&setup, "projects"), "projects=2 members=4");
    }

    // 2. The application's policy, applied to the migrated database.
    let applied = apply_example_policy(
        &pg,
        DB,
        "ihatemoney/policy.toml",
        "real-app-test-pseudonym-key",
    )
    .expect("policy apply");

    // 3. The help desk, in session mode and in transaction pool mode (each walk adds Luca and a
    //    bill and deletes them again).
    let mut refused = Vec::new();
    for (mode, pool) in [
        ("session", ""),
        (
            "transaction",
            "[pool]\nmode = \"transaction\"\nsize = 4\nacquire_timeout_seconds = 20\n",
        ),
    ] {
        let options = ProxyOptions {
            upstream_extra: routing.into(),
            sections: pool.into(),
            ..applied.proxy_options(DB, users.clone())
        };
        let proxy = Proxy::start(&pg, options).expect("proxy with the application's policy");
        assert_help_desk(&proxy, mode);
        refused.extend(
            proxy
                .log()
                .lines()
                .filter(|line| line.contains("statement refused"))
                .map(str::to_owned),
        );
    }

    // The stored values: the contact e-mail and the redacted description kept, the amounts stored as
    // the desk wrote them, the deleted bill gone.
    let stored = pg
        .psql(
            DB,
            &[
                "-At",
                "-c",
                "SELECT name || ' ' || contact_email FROM project WHERE id = 'eur-trip'",
                "-c",
                "SELECT string_agg(what || '=' || amount, '|' ORDER BY what) FROM bill",
            ],
        )
        .unwrap();
    assert_eq!(
        stored.trim(),
        "Eur Trip marco.rossi@example.org\n\
         Dinner, call Marco on +39 061 234 5958=61|Office lunch=30|Train tickets=45"
    );
    // SQLAlchemy-Continuum's history records each version as the application held it: the desk's
    // edit of the dinner bill wrote its description as the desk read it (redacted) into the new
    // version row, while the bill itself kept the stored text (COMPATIBILITY.md, ihatemoney).
    let history = pg
        .psql(
            DB,
            &[
                "-At",
                "-c",
                "SELECT string_agg(DISTINCT what, '|') FROM bill_version WHERE what LIKE 'Dinner%'",
            ],
        )
        .unwrap();
    assert_eq!(
        history.trim(),
        "Dinner, call Marco on +39 061 234 5958|Dinner, call Marco on [phone]"
    );
    // The proxy refused only the project's rename, nothing as not understood (0A000).
    assert!(
        refused
            .iter()
            .all(|line| line.contains("42501") && line.contains("public.project")),
        "refused:\n{}",
        refused.join("\n")
    );

    // 4. A named part of the application's own test suite (each test creates and drops its tables
    //    in test_ihatemoney): through the proxy as the owner and directly, with the same results.
    let options = ProxyOptions {
        upstream_extra: routing.into(),
        ..applied.proxy_options(DB, users.clone())
    };
    let proxy = Proxy::start(&pg, options).expect("proxy for the suite");
    let tests = |outcomes: &BTreeMap<String, (String, String)>| -> BTreeMap<String, String> {
        outcomes
            .iter()
            .filter(|(op, _)| op.starts_with("test:"))
            .map(|(op, (outcome, _))| (op.clone(), outcome.clone()))
            .collect()
    };
    let suite = [&["suite"], SUITE].concat();
    let through = tests(&drive(&via_proxy(&proxy, "owner"), TEST_DB, &suite));
    let plain = tests(&drive(&direct(&pg), TEST_DB, &suite));
    assert!(
        through.values().filter(|o| *o == "passed").count() >= 25,
        "too few tests passed: {through:?}"
    );
    assert_eq!(
        through, plain,
        "the application's tests through the proxy and directly"
    );
    eprintln!(
        "ihatemoney through Maschera: {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
}

/// A new user's first step: `maschera discover` on the application's migrated database, the draft
/// checked and applied as it is, and the application started under the draft's restricted role
/// (`reader`). Alembic's check at start finds its bookkeeping table in the role's schema (the draft
/// declares it: a table left to `unlisted_tables` is not on the login's search path, and Alembic
/// then tried to create it, refused as DDL), and the dashboard lists the projects.
#[test]
fn ihatemoney_starts_under_the_policy_discover_drafts() {
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_database(DB).expect("the application's database");
    passed(&drive(&direct(&pg), DB, &["setup"]), "projects");

    let uri = pg.uri(DB);
    let draft = pg.dir().join("draft.toml");
    let draft_arg = draft.display().to_string();
    run_maschera_ok(["discover", "--upstream", &uri, "-o", &draft_arg]);
    let text = std::fs::read_to_string(&draft).unwrap();
    assert!(text.contains("unlisted_tables = \"read\""), "{text}");
    assert!(
        text.contains("alembic_version = { default = \"read\" }"),
        "{text}"
    );
    // The project's contact e-mail and its private code's hash are found.
    assert!(
        text.contains("contact_email = { category = \"contact\""),
        "{text}"
    );
    assert!(
        text.contains("password = { category = \"secret\""),
        "{text}"
    );
    // SQLAlchemy-Continuum's copies: a reference to a person found in the copy as in its table
    // (the copy has no foreign key), and Continuum's transaction id not taken for a person's key.
    assert!(
        text.contains("payer_id = { category = \"identifying\", type = \"integer\" }  # high: copy of bill.payer_id"),
        "{text}"
    );
    assert!(!text.contains("transaction_id = { category"), "{text}");
    run_maschera_ok(["policy", "check", &draft_arg, "--upstream", &uri]);

    let applied = AppliedPolicy {
        policy: draft,
        credentials: pg.dir().join("logins.toml"),
    };
    apply_policy(&pg, DB, &applied, "real-app-draft-pseudonym-key").expect("apply the draft");
    let users = pg.dir().join("users.toml");
    write_crm_users(&users, &[("rita", "reader", &[])], 4096).unwrap();
    let proxy = Proxy::start(&pg, applied.proxy_options(DB, users)).expect("proxy with the draft");
    let reader = drive(&via_proxy(&proxy, "rita"), DB, &["dashboard"]);
    assert_eq!(passed(&reader, "start"), "started");
    passed(&reader, "admin_login");
    assert_eq!(passed(&reader, "dashboard"), "projects=eur-trip,usd-team");
}
