//! Policy operations without a superuser: `maschera policy apply` run (and run again) by the tables'
//! owner with CREATEROLE on a fresh PostgreSQL 15 cluster, a clear error naming what a user lacks, a
//! migration through the proxy by the tables' owner after an apply by a superuser, the command tags a
//! schema change through the proxy answers with (those of PostgreSQL itself), and the admin connection
//! honouring `sslmode` against a PostgreSQL that accepts TLS only.

use maschera_tests::crm_proxy::{AppliedPolicy, CRM_DB, crm_password, write_crm_users};
use maschera_tests::proxy::{raw_login, read_message, start_tls_pg, write_test_certificates};
use maschera_tests::{PgServer, Proxy, ProxyOptions, examples_dir, run_maschera};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The tables' owner: a plain login (no superuser).
const OWNER: &str = "app";
const OWNER_PASSWORD: &str = "App-owner-p4ss#Zq7";
const PSEUDONYM_KEY: &str = "applyowner-test-pseudonym-key";

/// A fresh cluster with the reference CRM (`contacts` generated contacts) in database `crm`, which
/// `app` (a login with `attributes`, never superuser) owns with all its tables; and the reference
/// policy copied beside it.
pub(crate) async fn owned_crm(attributes: &str, contacts: u64) -> (PgServer, AppliedPolicy) {
    owned_crm_on(
        PgServer::start().expect("start PostgreSQL"),
        attributes,
        contacts,
    )
    .await
}

async fn owned_crm_on(pg: PgServer, attributes: &str, contacts: u64) -> (PgServer, AppliedPolicy) {
    pg.execute(&format!(
        "CREATE ROLE {OWNER} LOGIN {attributes} PASSWORD '{OWNER_PASSWORD}'"
    ))
    .expect("create the owner");
    pg.execute(&format!("CREATE DATABASE {CRM_DB} OWNER {OWNER}"))
        .expect("create the database");
    let client = maschera_tests::connect(&owner_uri(&pg))
        .await
        .expect("connect as the owner");
    let options = maschera::ops::crm::CrmOptions {
        contacts,
        seed: 1,
        ..Default::default()
    };
    maschera::ops::crm::load(&client, &options)
        .await
        .expect("load the CRM as the owner");
    let applied = AppliedPolicy {
        policy: pg.dir().join("policy.toml"),
        credentials: pg.dir().join("logins.toml"),
    };
    std::fs::copy(examples_dir().join("crm/policy.toml"), &applied.policy).expect("copy policy");
    (pg, applied)
}

pub(crate) fn owner_uri(pg: &PgServer) -> String {
    pg.uri_as(OWNER, OWNER_PASSWORD, CRM_DB)
}

/// `maschera policy apply` of `applied` with `--upstream upstream`.
pub(crate) fn apply(applied: &AppliedPolicy, upstream: &str) -> Output {
    Command::new(maschera_tests::maschera_bin())
        .args(["policy", "apply"])
        .arg(&applied.policy)
        .args(["--upstream", upstream, "--credentials"])
        .arg(&applied.credentials)
        .env("MASCHERA_PSEUDONYM_KEY", PSEUDONYM_KEY)
        .output()
        .expect("run maschera policy apply")
}

fn assert_applied(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a command that failed printed on standard error (panics if it succeeded).
fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The owners of the schemas `policy apply` made, as `schema=owner` lines.
fn schema_owners(pg: &PgServer) -> Vec<String> {
    pg.psql(
        CRM_DB,
        &[
            "-c",
            "SELECT nspname || '=' || nspowner::regrole FROM pg_namespace \
             WHERE nspname LIKE 'maschera\\_%' ORDER BY 1",
        ],
    )
    .expect("read schema owners")
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The proxy in front of `pg` with the users dora (dpo) and sam (sales, north), logging in upstream
/// as the tables' owner.
fn proxy_as_owner(pg: &PgServer, applied: &AppliedPolicy) -> Proxy {
    proxy_as_owner_with(pg, applied, |_| {})
}

/// [`proxy_as_owner`] with further options.
fn proxy_as_owner_with(
    pg: &PgServer,
    applied: &AppliedPolicy,
    configure: impl FnOnce(&mut ProxyOptions),
) -> Proxy {
    let users = pg.dir().join("users.toml");
    write_crm_users(
        &users,
        &[
            ("dora", "dpo", &[]),
            ("sam", "sales", &[("region", "north")]),
        ],
        4096,
    )
    .expect("users file");
    let mut options = ProxyOptions {
        database: CRM_DB.into(),
        users_file: Some(users),
        upstream_login: Some((OWNER.into(), OWNER_PASSWORD.into())),
        policy: applied.proxy_section(None),
        ..ProxyOptions::default()
    };
    configure(&mut options);
    Proxy::start(pg, options).expect("start the proxy")
}

/// What sam (sales, north) sees of contact 1 through the proxy: first name and tax code.
async fn sam_sees(proxy: &Proxy) -> Vec<String> {
    let sam = maschera_tests::connect(&proxy.uri_as("sam", &crm_password("sam"), CRM_DB))
        .await
        .unwrap_or_else(|err| panic!("sam connects: {err:#}\n{}", proxy.log()));
    let rows = sam
        .query(
            "SELECT first_name, tax_code, region FROM contacts ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("sam reads contacts");
    let row = &rows[0];
    (0..3)
        .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_tables_owner_with_createrole_applies_the_policy_twice_on_a_fresh_cluster() {
    let (pg, applied) = owned_crm("CREATEROLE", 40).await;
    // A table of the superuser's beside the CRM's, on which the owner has no right at all.
    pg.psql(CRM_DB, &["-c", "CREATE TABLE dba_notes (note text)"])
        .expect("a table of the superuser's");
    assert_applied(
        &apply(&applied, &owner_uri(&pg)),
        "first apply as the owner",
    );
    assert_applied(
        &apply(&applied, &owner_uri(&pg)),
        "second apply as the owner",
    );
    // Every schema it made belongs to the owner.
    let owners = schema_owners(&pg);
    assert!(!owners.is_empty());
    for line in &owners {
        assert!(line.ends_with(&format!("={OWNER}")), "{owners:?}");
    }
    // The objects work: sam sees his region's contacts with the tax code masked.
    let proxy = proxy_as_owner(&pg, &applied);
    let seen = sam_sees(&proxy).await;
    assert_eq!(seen[2], "north", "{seen:?}");
    assert!(seen[1].starts_with("************"), "{seen:?}");
    // And a third time with a changed policy (a role removed: its login is dropped by the owner).
    let text = std::fs::read_to_string(&applied.policy).unwrap();
    let start = text.find("[roles.analyst]").expect("the analyst role");
    let end = start + text[start..].find("# ----").expect("the register after it");
    let without_analyst = format!("{}{}", &text[..start], &text[end..])
        .replace("analyst = \"none (aggregate statistics only)\"\n", "");
    std::fs::write(&applied.policy, without_analyst).unwrap();
    assert_applied(
        &apply(&applied, &owner_uri(&pg)),
        "apply without the analyst role",
    );
    let analyst = pg
        .execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'maschera\\_analyst%'")
        .unwrap();
    assert_eq!(analyst.trim(), "0");
}

#[tokio::test]
async fn an_apply_by_a_user_without_the_needed_privileges_names_what_is_missing() {
    // The owner without CREATEROLE, and a clerk who owns nothing.
    let (pg, applied) = owned_crm("", 20).await;
    let err = refused(apply(&applied, &owner_uri(&pg)));
    assert!(
        err.contains("policy apply as `app` needs")
            && err.contains("CREATEROLE")
            && err.contains("ALTER ROLE app CREATEROLE"),
        "{err}"
    );
    pg.execute("CREATE ROLE clerk LOGIN CREATEROLE PASSWORD 'Clerk-p4ss#1'")
        .unwrap();
    let err = refused(apply(&applied, &pg.uri_as("clerk", "Clerk-p4ss#1", CRM_DB)));
    assert!(
        err.contains("policy apply as `clerk` needs")
            && err.contains("CREATE on database crm")
            && err.contains("the privileges of `app`, the owner of table contacts"),
        "{err}"
    );
    // Nothing was made.
    assert!(schema_owners(&pg).is_empty());
}

#[tokio::test]
async fn a_migration_through_the_proxy_by_the_tables_owner_after_a_superuser_apply() {
    // The owner has no CREATEROLE: a superuser applies, the proxy logs in as the owner.
    let (pg, applied) = owned_crm("", 40).await;
    assert_applied(&apply(&applied, &pg.uri(CRM_DB)), "apply as the superuser");
    for line in schema_owners(&pg) {
        assert!(line.ends_with(&format!("={OWNER}")), "{line}");
    }
    let proxy = proxy_as_owner(&pg, &applied);
    let dora = maschera_tests::connect(&proxy.uri_as("dora", &crm_password("dora"), CRM_DB))
        .await
        .expect("dora connects");
    dora.batch_execute("ALTER TABLE contacts ADD COLUMN nickname text")
        .await
        .expect("add a column through the proxy");
    dora.batch_execute(
        "BEGIN; ALTER TABLE contacts DROP COLUMN last_activity_at; ALTER TABLE deals ALTER COLUMN stage TYPE varchar(40); COMMIT",
    )
    .await
    .expect("a migration in a transaction through the proxy");
    proxy.wait_for_log("views recompiled after a schema change", 2);
    let seen = sam_sees(&proxy).await;
    assert_eq!(seen[2], "north", "{seen:?}");
    assert!(seen[1].starts_with("************"), "{seen:?}");
    // The rebuilt schemas are the owner's too, and a second apply by the superuser still works.
    for line in schema_owners(&pg) {
        assert!(line.ends_with(&format!("={OWNER}")), "{line}");
    }
    assert_applied(
        &apply(&applied, &pg.uri(CRM_DB)),
        "apply again as the superuser",
    );
    // An installation an earlier version applied as a superuser (its schemas the superuser's): the
    // owner, now with CREATEROLE, is told what to do; one apply as the superuser hands it over.
    pg.psql(
        CRM_DB,
        &[
            "-c",
            "ALTER SCHEMA maschera_private OWNER TO postgres; ALTER ROLE app CREATEROLE",
        ],
    )
    .unwrap();
    let err = refused(apply(&applied, &owner_uri(&pg)));
    assert!(
        err.contains("the owner of schema maschera_private")
            && err.contains("apply once as a superuser"),
        "{err}"
    );
    assert_applied(
        &apply(&applied, &pg.uri(CRM_DB)),
        "the superuser hands over",
    );
    assert_applied(&apply(&applied, &owner_uri(&pg)), "then the owner applies");
}

/// The answer to one simple Query on a raw session: each message as `<type>:<text>`, where the text
/// is a CommandComplete's tag, an error's SQLSTATE or a notice's message (the rest of the message types
/// by their letter only), up to ReadyForQuery.
async fn answer(stream: &mut tokio::net::TcpStream, sql: &str) -> Vec<String> {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).expect("query message");
    stream.write_all(&out).await.expect("send query");
    read_answer(stream).await
}

/// The messages of an answer up to ReadyForQuery, as [`answer`] shows them.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let (tag, body) = read_message(stream).await;
        let field = |code: u8| {
            body.split(|b| *b == 0)
                .find(|f| f.first() == Some(&code))
                .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                .unwrap_or_default()
        };
        let text = match tag {
            b'C' => String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned(),
            b'E' => field(b'C'),
            b'N' => field(b'M'),
            _ => String::new(),
        };
        seen.push(format!("{}:{text}", tag as char));
        if tag == b'Z' {
            return seen;
        }
    }
}

/// The answer to Parse, Bind, Execute and Sync of `sql` (unnamed statement and portal), as [`answer`].
async fn answer_extended(stream: &mut tokio::net::TcpStream, sql: &str) -> Vec<String> {
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    frontend::parse("", sql, [], &mut out).expect("parse message");
    frontend::bind(
        "",
        "",
        [],
        [],
        |_: (), _| {
            Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::Yes)
        },
        [],
        &mut out,
    )
    .map_err(|_| ())
    .expect("bind message");
    frontend::execute("", 0, &mut out).expect("execute message");
    frontend::sync(&mut out);
    stream.write_all(&out).await.expect("send");
    read_answer(stream).await
}

#[tokio::test]
async fn a_schema_change_through_the_proxy_answers_with_the_statements_own_command_tags() {
    let (pg, applied) = owned_crm("CREATEROLE", 20).await;
    assert_applied(&apply(&applied, &owner_uri(&pg)), "apply as the owner");
    let proxy = proxy_as_owner(&pg, &applied);
    let mut direct = raw_login(pg.port(), OWNER, OWNER_PASSWORD, CRM_DB).await;
    let mut through = raw_login(proxy.port(), "dora", &crm_password("dora"), CRM_DB).await;
    // Each change is made on both sides, with column names of its own (`zzd` direct, `zzp` through
    // the proxy), one after the other.
    let statements = [
        "ALTER TABLE contacts ADD COLUMN nick_{} text",
        "ALTER TABLE contacts ADD COLUMN a_{} int; SELECT 1; ALTER TABLE deals ADD COLUMN b_{} int",
        "BEGIN; ALTER TABLE contacts ADD COLUMN c_{} text; COMMIT",
        // The statement's own notice comes through, and its error.
        "ALTER TABLE contacts ADD COLUMN IF NOT EXISTS nick_{} text",
        "ALTER TABLE contacts ADD COLUMN nick_{} text",
    ];
    let same = |on_direct: Vec<String>, on_proxy: Vec<String>, sql: &str| {
        let on_proxy: Vec<String> = on_proxy.iter().map(|m| m.replace("zzp", "zzd")).collect();
        assert_eq!(on_proxy, on_direct, "{sql}");
    };
    for sql in statements {
        let on_direct = answer(&mut direct, &sql.replace("{}", "zzd")).await;
        let on_proxy = answer(&mut through, &sql.replace("{}", "zzp")).await;
        same(on_direct, on_proxy, sql);
    }
    // The extended protocol (a wrapped Parse runs as DO; its tag is the statement's own).
    let sql = "ALTER TABLE contacts ADD COLUMN e_{} text";
    let on_direct = answer_extended(&mut direct, &sql.replace("{}", "zzd")).await;
    assert_eq!(on_direct, ["1:", "2:", "C:ALTER TABLE", "Z:"]);
    let on_proxy = answer_extended(&mut through, &sql.replace("{}", "zzp")).await;
    same(on_direct, on_proxy, sql);
    // The views were rebuilt in each transaction and once more after it; sam still sees his rows.
    proxy.wait_for_log("views recompiled after a schema change", 1);
    let seen = sam_sees(&proxy).await;
    assert_eq!(seen[2], "north", "{seen:?}");
}

fn only_tls(pg: &PgServer) {
    let hba = pg.dir().join("data").join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(&hba, format!("hostnossl all all all reject\n{old}")).unwrap();
    pg.execute("SELECT pg_reload_conf()").expect("reload");
}

#[tokio::test]
async fn policy_apply_honours_sslmode_against_a_postgresql_that_requires_tls() {
    let certs = tempfile::Builder::new()
        .prefix("maschera-pg-certs-")
        .tempdir()
        .unwrap();
    let (pg, ca) = start_tls_pg(certs.path()).expect("start PostgreSQL with TLS");
    let (pg, applied) = owned_crm_on(pg, "CREATEROLE", 20).await;
    only_tls(&pg);
    let base = owner_uri(&pg);
    // Without TLS, PostgreSQL's refusal says why.
    let err = refused(apply(&applied, &format!("{base}?sslmode=disable")));
    assert!(err.contains("no encryption"), "{err}");
    assert!(schema_owners(&pg).is_empty(), "nothing was applied");
    // require (no certificate check), then verify-full against the test CA.
    assert_applied(
        &apply(&applied, &format!("{base}?sslmode=require")),
        "sslmode=require",
    );
    let verified = format!(
        "postgres://{OWNER}:{}@localhost:{}/{CRM_DB}?sslmode=verify-full&sslrootcert={}",
        OWNER_PASSWORD.replace('#', "%23"),
        pg.port(),
        ca.display()
    );
    assert_applied(&apply(&applied, &verified), "sslmode=verify-full");
    // The proxy's own connections and the access log's PostgreSQL sink over TLS too.
    pg.create_database("audit").expect("audit database");
    let folder = tempfile::tempdir().unwrap();
    let audit = format!(
        "{}postgres_sink = \"{}?sslmode=require\"\npostgres_table = \"access_log\"\n",
        maschera_tests::access_log_section(folder.path(), "tls"),
        pg.uri("audit")
    );
    let proxy = proxy_as_owner_with(&pg, &applied, |options| {
        options.upstream_tls = "require".into();
        options.audit = audit;
    });
    assert_eq!(sam_sees(&proxy).await[2], "north");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let copied = pg
            .psql(
                "audit",
                &[
                    "-c",
                    "SELECT count(*) FROM access_log WHERE user_name = 'sam'",
                ],
            )
            .unwrap_or_default();
        if copied.trim().parse::<u32>().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no record of sam in the central table:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The default (prefer) uses TLS when the server offers it, as libpq does.
    let check = run_maschera(["policy", "check"].iter().map(|s| s.to_string()).chain([
        applied.policy.display().to_string(),
        "--upstream".into(),
        base.clone(),
    ]));
    assert!(
        check.status.success(),
        "policy check with the default sslmode: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A wrong CA is refused with the TLS reason.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = write_test_certificates(other.path()).unwrap();
    let err = refused(apply(
        &applied,
        &format!(
            "{base}?sslmode=verify-ca&sslrootcert={}",
            other_ca.display()
        ),
    ));
    assert!(err.contains("TLS"), "{err}");
}

#[tokio::test]
async fn sslmode_require_against_a_postgresql_without_tls_fails_with_a_clear_error() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_database(CRM_DB).unwrap();
    let err = refused(run_maschera([
        "policy".to_string(),
        "check".into(),
        examples_dir().join("crm/policy.toml").display().to_string(),
        "--upstream".into(),
        format!("{}?sslmode=require", pg.uri(CRM_DB)),
    ]));
    assert!(
        err.contains("PostgreSQL refused TLS") && err.contains("sslmode=require"),
        "{err}"
    );
}
