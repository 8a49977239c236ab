//! The end-user integrations a CRM team drops in (`integrations/`: maschera-token, maschera-django,
//! maschera-sqlalchemy, installed with pip from their folders by `integrations/install` into
//! `target/integrations-venv`): their own pytest suites against a real PostgreSQL, and the reference
//! CRM's Django models, SQLAlchemy sessions and node-postgres calls (maschera-pg) served through ONE
//! application login to sam (sales, north) and tom (support), alternating on one connection. The
//! drivers are in `tests/compat/end_user/`.
//! Not for: the proxy's verification of tokens or its routes as such (the end_user tests).

use crate::compat::{Pass, Refused, check, run_client};
use maschera::net::scram::Verifier;
use maschera_tests::crm::load_crm;
use maschera_tests::crm_proxy::{
    CRM_DB, CRM_PSEUDONYM_KEY, apply_edited_policy, crm_password, write_crm_users,
};
use maschera_tests::{PgServer, Proxy, access_log_records, access_log_section};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Contacts the generator writes.
const CONTACTS: u64 = 200;

/// The application login's password.
const APP_PASSWORD: &str = "Crm-app-p4ss#Wq8!zR";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The integrations' virtualenv (MASCHERA_INTEGRATIONS_VENV names another).
fn venv() -> PathBuf {
    let venv = std::env::var_os("MASCHERA_INTEGRATIONS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/integrations-venv"));
    assert!(
        venv.join("bin/pytest").exists(),
        "{} is missing: run integrations/install (.ci/run does)",
        venv.display()
    );
    venv
}

/// The pytest suites of the three Python packages (signing; the Django middleware and the
/// SQLAlchemy session event against a plain PostgreSQL, which takes `maschera.end_user` as a custom
/// setting) and node's test runner on maschera-pg (signing; `withEndUser` against the same
/// PostgreSQL): all run and pass, none skipped.
#[test]
fn integration_packages_pass_their_own_tests() {
    let pg = PgServer::start().expect("PostgreSQL");
    let integrations = repo().join("integrations");
    let out = Command::new(venv().join("bin/pytest"))
        .current_dir(pg.dir())
        .args(["-q", "-p", "no:cacheprovider", "-rs"])
        .args(
            ["token", "django", "sqlalchemy"]
                .map(|package| integrations.join(package).join("tests")),
        )
        .env("MASCHERA_TEST_POSTGRES", pg.uri("postgres"))
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && summary.contains(" passed") && !summary.contains("skipped"),
        "pytest:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg_module = repo().join("tests/compat/node/node_modules/pg");
    assert!(
        pg_module.is_dir(),
        "node-postgres is not installed: run `npm ci` in tests/compat/node"
    );
    let out = Command::new("node")
        .arg("--test")
        .arg(integrations.join("node/test"))
        .env("MASCHERA_TEST_POSTGRES", pg.uri("postgres"))
        .env("MASCHERA_PG_MODULE", pg_module)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |text: &str| stdout.lines().any(|l| l == text);
    assert!(
        out.status.success()
            && line("# fail 0")
            && line("# skipped 0")
            && stdout
                .lines()
                .any(|l| l.starts_with("# pass ") && l != "# pass 0"),
        "node --test:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Django's tables and the CRM application's own role, added to the reference policy: the role
/// the application login serves while no end user is set reads users (with the password hash:
/// Django checks passwords in the application, before it knows who the user is) and keeps
/// sessions; it sees no CRM table, and the end users' roles see no Django table.
fn with_django_tables(policy: String) -> String {
    let framework = r#"
# ---- Django's tables (e2e test end_user_integrations) ----
[tables.auth_user]
columns = { username = "identifying", first_name = "identifying", last_name = "identifying", email = "contact" }
[tables.django_session.columns]
session_data = "identifying"
[tables.auth_group]
default = "read"
[tables.auth_permission]
default = "read"
[tables.auth_group_permissions]
default = "read"
[tables.auth_user_groups]
default = "read"
[tables.auth_user_user_permissions]
default = "read"
[tables.django_content_type]
default = "read"
[tables.django_migrations]
default = "read"

[roles.crm_app]
description = "The CRM application before it knows its user: login and sessions"
purpose = "Authenticate the CRM's users and keep their sessions"
lawful_basis = "Legitimate interest, GDPR Art. 6(1)(f)"
recipients = ["Management"]

[roles.crm_app.tables.auth_user]
show = ["*"]
writes = ["update"]

[roles.crm_app.tables.django_session]
show = ["session_data"]
writes = ["insert", "update", "delete"]

"#;
    let roles = "# ---------------------------------------------------------------------------------------------------\n# Roles";
    assert!(
        policy.contains(roles),
        "the reference policy's roles header"
    );
    policy
        .replacen(roles, &format!("{framework}{roles}"), 1)
        .replacen(
            "support = \"none\"\n",
            "support = \"none\"\ncrm_app = \"none\"\n",
            1,
        )
}

/// The users file: dora, sam and tom (end users, with their roles and attributes), and the
/// application login `crm` (own role crm_app) that may act for sales and support end users.
fn write_users(path: &Path) {
    write_crm_users(
        path,
        &[
            ("dora", "dpo", &[]),
            ("sam", "sales", &[("region", "north")]),
            ("tom", "support", &[]),
        ],
        4096,
    )
    .expect("users file");
    let verifier = Verifier::from_password(APP_PASSWORD, 4096).to_text();
    let mut text = std::fs::read_to_string(path).expect("users file");
    text.push_str(&format!(
        "\n[users.crm]\nrole = \"crm_app\"\nverifier = \"{verifier}\"\n\
         application = {{ roles = [\"sales\", \"support\"] }}\n"
    ));
    std::fs::write(path, text).expect("users file");
}

/// `[end_users]`: tokens of issuer `crm`, signed with the Ed25519 key (Django), the P-256 key
/// (SQLAlchemy) or the RSA key (node-postgres) that `keys.py` wrote to `dir`.
fn end_users_section(dir: &Path) -> String {
    let key = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    format!(
        "\n[end_users]\nissuer = \"crm\"\n\n\
         [[end_users.keys]]\nkid = \"crm-ed\"\nalgorithm = \"EdDSA\"\npublic_key = {}\n\n\
         [[end_users.keys]]\nkid = \"crm-es\"\nalgorithm = \"ES256\"\npublic_key = {}\n\n\
         [[end_users.keys]]\nkid = \"crm-rs\"\nalgorithm = \"RS256\"\npublic_key = {}\n",
        key("ed25519.pub.pem"),
        key("p256.pub.pem"),
        key("rsa.pub.pem")
    )
}

/// No outcome (what the application saw, refusals included) shows a token (a JWT starts `eyJ`).
fn no_token_in(outcomes: &BTreeMap<String, (String, String)>) {
    for (op, (_, detail)) in outcomes {
        assert!(!detail.contains("eyJ"), "{op} shows a token: {detail}");
    }
}

fn driver(script: &str) -> Command {
    let mut command = Command::new(venv().join("bin/python"));
    command.arg(repo().join("tests/compat/end_user").join(script));
    command
}

/// The reference CRM with Django's tables, served through the application login `crm`: Django's
/// login flow over the application's own role; sam's and tom's requests alternating on one
/// persistent Django connection, each seeing exactly what their own login sees (sam: north only,
/// clear e-mails; tom: every region, masked e-mails), their writes checked; the same with
/// SQLAlchemy sessions on one pooled connection, and with node-postgres calls on one pooled client
/// (a named statement in each call, prepared again for each end user); what was written is stored
/// as written; the access log names the application and both end users, and holds no token.
#[test]
fn django_sqlalchemy_and_node_serve_two_end_users_through_one_application_login() {
    let pg = PgServer::start().expect("PostgreSQL");
    maschera_tests::block_on(load_crm(&pg, CRM_DB, CONTACTS, 1)).expect("CRM");
    let dir = pg.dir().to_path_buf();
    let ran = driver("keys.py").arg(&dir).output().expect("keys.py");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let setup = run_client(
        {
            let mut command = driver("django_driver.py");
            command.args(["setup", &pg.uri(CRM_DB)]);
            command
        },
        "Django setup",
    );
    check("Django setup", &setup, &[("setup", Pass("users=2"))]);
    let applied = apply_edited_policy(&pg, CRM_DB, CRM_PSEUDONYM_KEY, with_django_tables)
        .expect("policy apply");
    let users = dir.join("users.toml");
    write_users(&users);
    let mut options = applied.proxy_options(CRM_DB, users);
    options.sections = end_users_section(&dir);
    options.audit = access_log_section(&dir, "integrations");
    let proxy = Proxy::start(&pg, options).expect("proxy");
    let app = proxy.uri_as("crm", APP_PASSWORD, CRM_DB);
    let own = |user: &str| proxy.uri_as(user, &crm_password(user), CRM_DB);

    let mut django = driver("django_driver.py");
    django
        .args(["serve", &app, &own("sam"), &own("tom")])
        .env("MASCHERA_END_USER_KEY_FILE", dir.join("ed25519.pem"))
        .env("MASCHERA_END_USER_KID", "crm-ed");
    let outcomes = run_client(django, "Django as sam and tom");
    check(
        "Django as sam and tom",
        &outcomes,
        &[
            ("anonymous_contacts", Refused("42501")),
            ("login_sam", Pass("status=302")),
            ("login_tom", Pass("status=302")),
            ("login_wrong_password", Pass("status=200")),
            ("alternate", Pass("requests=12")),
            (
                "sam_contacts",
                Pass("regions=['north'] same_as_own_login=True emails=clear"),
            ),
            (
                "tom_contacts",
                Pass("regions=['centre', 'north', 'south'] same_as_own_login=True emails=masked"),
            ),
            ("sam_update_own_region", Pass("city=Genova-sam")),
            ("sam_insert_other_region", Refused("42501")),
            ("sam_health_records", Refused("42501")),
            ("tom_open_ticket", Pass("subject=call me on [phone]")),
            ("tom_update_contact", Refused("42501")),
            ("anonymous_after", Refused("42501")),
            ("unknown_key", Refused("28000")),
            ("role_not_allowed", Refused("42501")),
            ("after_bad_tokens", Pass("regions=['north']")),
            ("one_connection", Pass("connections=1")),
        ],
    );

    no_token_in(&outcomes);

    let mut sqlalchemy = driver("sqlalchemy_driver.py");
    sqlalchemy
        .args([&app, &own("sam"), &own("tom")])
        .arg(dir.join("p256.pem"))
        .arg("crm-es");
    let outcomes = run_client(sqlalchemy, "SQLAlchemy as sam and tom");
    check(
        "SQLAlchemy as sam and tom",
        &outcomes,
        &[
            ("no_end_user", Refused("42501")),
            ("alternate", Pass("sessions=14")),
            (
                "sam_contacts",
                Pass("regions=['north'] same_as_own_login=True emails=clear"),
            ),
            (
                "tom_contacts",
                Pass("regions=['centre', 'north', 'south'] same_as_own_login=True emails=masked"),
            ),
            ("sam_update_own_region", Pass("city=Torino-sam")),
            ("sam_insert_other_region", Refused("42501")),
            ("tom_open_ticket", Pass("subject=write to [email]")),
            ("tom_update_contact", Refused("42501")),
            ("no_end_user_after", Refused("42501")),
            ("expired_token", Refused("28000")),
            ("other_issuer", Refused("28000")),
            ("role_not_allowed", Refused("42501")),
            ("attribute_not_allowed", Refused("42501")),
            (
                "after_bad_tokens",
                Pass("regions=['centre', 'north', 'south']"),
            ),
            ("one_connection", Pass("connections=1")),
        ],
    );
    no_token_in(&outcomes);

    let node_dir = repo().join("tests/compat/node");
    assert!(
        node_dir.join("node_modules/pg").is_dir(),
        "node-postgres is not installed: run `npm ci` in {}",
        node_dir.display()
    );
    let mut node = Command::new("node");
    node.arg(repo().join("tests/compat/end_user/node_driver.js"))
        .args([&app, &own("sam"), &own("tom")])
        .arg(dir.join("rsa.pem"))
        .arg("crm-rs");
    let outcomes = run_client(node, "node-postgres as sam and tom");
    check(
        "node-postgres as sam and tom",
        &outcomes,
        &[
            ("no_end_user", Refused("42501")),
            ("alternate", Pass("calls=12")),
            (
                "sam_contacts",
                Pass(r#"regions=["north"] same_as_own_login=true emails=clear"#),
            ),
            (
                "tom_contacts",
                Pass(r#"regions=["centre","north","south"] same_as_own_login=true emails=masked"#),
            ),
            ("sam_update_own_region", Pass("updated=1")),
            ("sam_insert_other_region", Refused("42501")),
            ("tom_update_contact", Refused("42501")),
            ("no_end_user_after", Refused("42501")),
            ("wrong_signature", Refused("28000")),
            ("after_bad_token", Pass("n=20")),
            ("one_connection", Pass("connections=1")),
        ],
    );
    no_token_in(&outcomes);

    // What was written is stored as written; nothing was written outside sam's region.
    let stored = pg
        .psql(
            CRM_DB,
            &[
                "-Atc",
                "SELECT (SELECT subject FROM tickets WHERE id = 700002) || '|' || \
                 (SELECT subject FROM tickets WHERE id = 710002) || '|' || \
                 (SELECT count(*) FROM contacts WHERE id IN (700001, 710001, 720001)) || '|' || \
                 (SELECT count(*) FROM contacts WHERE city IN ('Genova-sam', 'Torino-sam', 'Milano-sam') AND region = 'north')",
            ],
        )
        .expect("owner query");
    assert_eq!(
        stored.trim(),
        "call me on +39 333 1234567|write to a@b.it|0|3"
    );

    // The access log names the application login and each end user, and holds no token.
    let records = access_log_records(&dir.join("audit"));
    for end_user in ["sam", "tom"] {
        assert!(
            records.iter().any(|r| r["user"] == "crm"
                && r["end_user"] == end_user
                && r.to_string().contains("contacts")),
            "no record of crm acting for {end_user}"
        );
    }
    let text: String = records.iter().map(|r| r.to_string()).collect();
    assert!(!text.contains("eyJ"), "a token in the access log");
}
