//! The access log from the outside: logs written through `maschera::audit::AuditLog` (in process, or by
//! the `audit-writer` load generator killed with SIGKILL or run against a file size limit), then read
//! with the real `maschera audit keygen/verify/search/report` commands; and the PostgreSQL sink against
//! a private PostgreSQL.

use maschera::audit::{
    AuditConfig, AuditLog, ColumnAction, ColumnTouched, Event, EventKind, Outcome, TableTouched,
};
use maschera_tests::{PgServer, run_maschera, run_maschera_ok};
use policy::access::{Category, TableName};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// A folder with fresh keys (made by `maschera audit keygen`) and a proxy config whose `[audit]`
/// section points at them and at `log/`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let out = maschera(&[
            "audit",
            "keygen",
            "--out",
            dir.path().join("keys").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = format!(
            "[audit]\ndir = \"log\"\ninstance = \"e2e\"\nkey_file = \"keys/audit.key\"\n\
             signing_key_file = \"keys/audit-signing.key\"\npublic_key_file = \"keys/audit-public.key\"\n{extra}"
        );
        std::fs::write(dir.path().join("maschera.toml"), config).unwrap();
        Setup { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("maschera.toml")
    }

    fn config(&self) -> AuditConfig {
        AuditConfig::from_proxy_config(&self.config_path()).unwrap()
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn key(&self, name: &str) -> String {
        self.dir
            .path()
            .join("keys")
            .join(name)
            .to_str()
            .unwrap()
            .to_string()
    }

    /// `maschera audit verify` with the auditor's keys (chain secret and public key, no signing key).
    fn verify(&self) -> Output {
        maschera(&[
            "audit",
            "verify",
            self.log_dir().to_str().unwrap(),
            "--key-file",
            &self.key("audit.key"),
            "--public-key",
            &self.key("audit-public.key"),
        ])
    }

    /// Runs [`Setup::verify`] and checks its exit status and that its output says `says`.
    fn assert_verify(&self, status: i32, says: &str) {
        let out = self.verify();
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(status), "{text}");
        assert!(text.contains(says), "{text}");
    }

    /// What a crash leaves (the documented contract): every record checks, records follow the last
    /// checkpoint, exit status 2.
    fn assert_unsealed_tail(&self) {
        self.assert_verify(2, "unsealed tail");
    }

    fn log_seqs(&self) -> Vec<u64> {
        let mut seqs = Vec::new();
        for file in maschera::audit::files::list_dir(&self.log_dir()).unwrap() {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    seqs.push(v["seq"].as_u64().unwrap());
                }
            }
        }
        seqs
    }
}

fn maschera(args: &[&str]) -> Output {
    run_maschera(args)
}

/// Runs `maschera` and returns its standard output, failing the test if it did not succeed.
fn maschera_ok(args: &[&str]) -> String {
    run_maschera_ok(args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn statement(
    user: &str,
    client: &str,
    column: &str,
    category: Category,
    action: ColumnAction,
    rows: u64,
) -> Event {
    let mut event = Event::new(EventKind::Statement);
    event.session = Some("42".into());
    event.user = Some(user.into());
    event.role = Some("support".into());
    event.client = Some(client.into());
    event.database = Some("crm".into());
    event.application_name = Some("crm-web".into());
    event.statement_kind = Some("select".into());
    event.statement = maschera::audit::normalize("SELECT email FROM customers WHERE id = 17");
    event.tables = vec![TableTouched {
        table: TableName::new("public", "customers"),
        columns: vec![ColumnTouched {
            name: column.into(),
            category: Some(category),
            action,
        }],
        row_filtered: false,
        operations: vec!["read".into()],
        categories: Vec::new(),
    }];
    event.rows = Some(rows);
    event.duration_us = Some(800);
    event
}

fn anna_reads_masked_email(rows: u64) -> Event {
    statement(
        "anna",
        "10.1.1.1:5000",
        "email",
        Category::Contact,
        ColumnAction::Masked,
        rows,
    )
}

#[tokio::test]
async fn auditors_verify_search_and_report_on_a_written_log() {
    let setup = Setup::new("");
    let log = AuditLog::open(&setup.config()).expect("open the log");
    let mut login = Event::new(EventKind::LoginOk);
    login.user = Some("anna".into());
    login.client = Some("10.1.1.1:5000".into());
    log.record(login).await.unwrap();
    log.record(anna_reads_masked_email(3)).await.unwrap();
    log.record(statement(
        "anna",
        "10.1.1.1:5000",
        "fiscal_code",
        Category::NationalIdentifier,
        ColumnAction::Shown,
        2,
    ))
    .await
    .unwrap();
    let mut refused = statement(
        "anna",
        "10.9.9.9:6000",
        "health_notes",
        Category::SpecialCategory,
        ColumnAction::Denied,
        0,
    );
    refused.outcome = Outcome::Refused {
        sqlstate: "42501".into(),
        message: Some("column health_notes is not visible to role support".into()),
    };
    refused.rows = None;
    log.record(refused).await.unwrap();
    log.record(statement(
        "bert",
        "10.2.2.2:5000",
        "email",
        Category::Contact,
        ColumnAction::Shown,
        7,
    ))
    .await
    .unwrap();
    let mut failed = Event::new(EventKind::LoginFailed);
    failed.user = Some("anna".into());
    failed.client = Some("10.9.9.9:6000".into());
    failed.outcome = Outcome::Error {
        sqlstate: "28P01".into(),
    };
    log.record(failed).await.unwrap();
    log.shutdown().await.unwrap();

    // verify: with the auditor's keys, and with the proxy's configuration.
    setup.assert_verify(0, "whole: 8 records in 1 files");
    let out = maschera(&[
        "audit",
        "verify",
        "--config",
        setup.config_path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // search: a table, JSON lines, filters.
    let config = setup.config_path();
    let config = config.to_str().unwrap();
    let text = maschera_ok(&[
        "audit",
        "search",
        "--config",
        config,
        "--user",
        "anna",
        "--category",
        "contact",
    ]);
    assert!(
        text.contains("public.customers(email:contact:masked)") && text.contains("1 records"),
        "{text}"
    );
    assert!(!text.contains("bert"), "{text}");
    let out = maschera(&[
        "audit",
        "search",
        "--log",
        setup.log_dir().to_str().unwrap(),
        "--outcome",
        "refused",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["outcome"]["sqlstate"], "42501");
    assert_eq!(
        lines[0]["statement"], "SELECT email FROM customers WHERE id = $1",
        "literals never reach the log"
    );
    let search =
        |args: &[&str]| maschera(&[&["audit", "search", "--config", config], args].concat());
    let out = search(&[
        "--table",
        "customers",
        "--column",
        "email",
        "--from",
        "2000-01-01",
        "--to",
        "2999-12-31",
    ]);
    assert!(stdout(&out).contains("2 records"), "{}", stdout(&out));
    let out = search(&["--from", "2999-01-01"]);
    assert!(stdout(&out).contains("0 records"), "{}", stdout(&out));
    let out = search(&["--category", "gossip"]);
    assert!(!out.status.success(), "an unknown category is an error");

    // report: Markdown for the DPO.
    let md = maschera_ok(&[
        "audit",
        "report",
        "--config",
        config,
        "--user",
        "anna",
        "--from",
        "2000-01-01",
        "--to",
        "2999-12-31",
    ]);
    assert!(md.starts_with("# Access report for user `anna`"), "{md}");
    assert!(md.contains("- Log verification: whole: 8 records"), "{md}");
    assert!(
        md.contains("| public.customers | contact | email | masked | 1 | 3 |"),
        "{md}"
    );
    assert!(
        md.contains("| public.customers | national_identifier | fiscal_code | shown | 1 | 2 |"),
        "{md}"
    );
    assert!(
        md.contains("Statements: 3 (2 answered, 1 refused, 0 failed)"),
        "{md}"
    );
    assert!(md.contains("Logins: 1 succeeded, 1 failed"), "{md}");
    assert!(
        md.contains("| 10.9.9.9:6000 |") && md.contains("42501") && md.contains("health_notes"),
        "{md}"
    );
    assert!(!md.contains("bert"), "{md}");

    // tampering: one changed number is found, with file, line and seq.
    let file = maschera::audit::files::list_dir(&setup.log_dir())
        .unwrap()
        .remove(0);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replacen("\"rows\":3", "\"rows\":1", 1);
    std::fs::write(&file, text).unwrap();
    let out = setup.verify();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("line 3 (seq 3): MAC does not match"),
        "{}",
        stdout(&out)
    );
}

/// Reads `acked <seq>` lines from the writer until `enough` arrived; returns them and the reader.
fn read_acks(reader: &mut impl BufRead, enough: usize) -> BTreeSet<u64> {
    let mut acked = BTreeSet::new();
    let mut line = String::new();
    while acked.len() < enough {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(seq) = line.trim().strip_prefix("acked ") {
            acked.insert(seq.parse().unwrap());
        }
    }
    acked
}

fn writer(setup: &Setup, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-writer"));
    cmd.args(["--config", setup.config_path().to_str().unwrap()])
        .args(extra);
    cmd
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    let setup = Setup::new("checkpoint_records = 100\nrotate_bytes = 200000\n");
    let mut child = writer(&setup, &["--tasks", "16"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked = read_acks(&mut reader, 3000);
    assert!(acked.len() >= 3000, "the writer acknowledged records");
    // SAFETY: kill(2) on the child's own pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    acked.extend(read_acks(&mut reader, usize::MAX));

    let in_log: BTreeSet<u64> = setup.log_seqs().into_iter().collect();
    let missing: Vec<&u64> = acked.difference(&in_log).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the log: {missing:?}"
    );
    setup.assert_unsealed_tail();

    // The next start links the crashed file; a clean stop seals the whole log.
    let status = writer(&setup, &["--tasks", "1", "--count", "3"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    setup.assert_verify(0, "stopped uncleanly");
}

#[test]
fn a_full_disk_refuses_records_instead_of_losing_them() {
    let setup = Setup::new("");
    let out = writer(
        &setup,
        &["--tasks", "4", "--count", "1000", "--fsize-limit", "30000"],
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the writer saw a refusal: {text}"
    );
    assert!(
        text.contains("error the access log cannot be written"),
        "{text}"
    );
    assert!(text.contains("healthy false"), "{text}");
    let acked: BTreeSet<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("acked "))
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(!acked.is_empty());
    let in_log: BTreeSet<u64> = setup.log_seqs().into_iter().collect();
    assert!(
        acked.is_subset(&in_log),
        "every acknowledged record is in the log"
    );
    let out = setup.verify();
    // The small shutdown checkpoint may still fit (whole) or not (unsealed tail); never broken.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "nothing broken: {}",
        stdout(&out)
    );
}

#[tokio::test]
async fn the_postgres_sink_copies_records_into_a_central_table() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let setup = Setup::new(&format!(
        "postgres_sink = \"{}\"\npostgres_table = \"access_log\"\n",
        pg.uri("audit")
    ));
    let log = AuditLog::open(&setup.config()).unwrap();
    let mut seqs = Vec::new();
    for rows in 0..5 {
        seqs.push(log.record(anna_reads_masked_email(rows)).await.unwrap());
    }
    // The audit database does not exist yet: the file has the records, the sink keeps retrying.
    assert!(log.is_healthy());
    assert!(setup.log_seqs().contains(&seqs[4]));
    pg.create_database("audit").unwrap();
    let client = pg.connect("audit").await.unwrap();
    let mut found = 0;
    for _ in 0..600 {
        if let Ok(row) = client
            .query_one(
                "SELECT count(*) FROM access_log WHERE event = 'statement' AND user_name = 'anna'",
                &[],
            )
            .await
        {
            found = row.get::<_, i64>(0);
            if found == 5 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        found, 5,
        "the five statements reached the central table once it existed"
    );
    log.shutdown().await.unwrap();
    let row = client
        .query_one(
            "SELECT instance, record->'tables'->0->'columns'->0->>'category', record->>'mac' IS NOT NULL, outcome \
             FROM access_log WHERE seq = $1",
            &[&(seqs[2] as i64)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "e2e");
    assert_eq!(row.get::<_, String>(1), "contact");
    assert!(row.get::<_, bool>(2), "the stored record keeps its MAC");
    assert_eq!(row.get::<_, String>(3), "ok");
    assert!(
        Path::new(&setup.log_dir()).is_dir(),
        "the file stays the source of truth"
    );
}

// ---------------------------------------------------------------------------------------------------
// Through the proxy: the reference CRM and policy, `maschera serve` with the access log on.
// ---------------------------------------------------------------------------------------------------

/// The reference CRM behind `maschera serve` with `[audit]` writing to `log_dir` with the keys of
/// `setup`; users `dora` (dpo) and `sam` (sales, north).
struct AuditedCrm {
    pg: PgServer,
    proxy: maschera_tests::Proxy,
    policy: PathBuf,
    options: maschera_tests::ProxyOptions,
}

impl AuditedCrm {
    async fn start(setup: &Setup, log_dir: &Path, auth: &str) -> AuditedCrm {
        let audit = format!(
            "dir = {:?}\ninstance = \"e2e-proxy\"\nkey_file = {:?}\nsigning_key_file = {:?}\ncheckpoint_seconds = 1",
            log_dir.display().to_string(),
            setup.key("audit.key"),
            setup.key("audit-signing.key"),
        );
        let crm = maschera_tests::Fixture::crm(200)
            .pseudonym_key("audit-test-pseudonym-key")
            .poll_seconds(1)
            .config(|options| {
                options.auth = auth.into();
                options.audit = audit;
            })
            .start()
            .await
            .expect("start the CRM");
        AuditedCrm {
            pg: crm.pg,
            proxy: crm.proxy,
            policy: crm.applied.policy,
            options: crm.options,
        }
    }

    fn uri(&self, user: &str, application: &str) -> String {
        let password = maschera_tests::crm_proxy::crm_password(user);
        format!(
            "{}?application_name={application}",
            self.proxy.uri_as(user, &password, "crm")
        )
    }

    async fn connect(&self, user: &str, application: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.uri(user, application), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        tokio::spawn(connection);
        client
    }
}

use maschera_tests::access_log_records as records;

/// The records matching `pick`, waiting up to 30 s for at least `count` of them.
fn wait_records(
    dir: &Path,
    count: usize,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found: Vec<_> = records(dir).into_iter().filter(|r| pick(r)).collect();
        if found.len() >= count || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The statement records of `records` with the rows, outcome, duration and detail of their `outcome`
/// record merged in (as `maschera audit search` joins them), in log order. Checks on the way that each
/// `outcome` record follows the statement record it names, of the same session, and is its only one.
fn joined(records: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut statements: Vec<serde_json::Value> = Vec::new();
    let mut by_seq = std::collections::HashMap::new();
    for record in records {
        if record["event"] == "statement" {
            by_seq.insert(record["seq"].as_u64().unwrap(), statements.len());
            statements.push(record.clone());
        } else if record["event"] == "outcome" {
            let of = record["statement_seq"]
                .as_u64()
                .expect("an outcome names its statement");
            let at = *by_seq
                .get(&of)
                .unwrap_or_else(|| panic!("{record} follows no earlier statement record"));
            let statement = &mut statements[at];
            assert_eq!(
                statement["outcome"]["result"], "unknown",
                "one outcome per statement sent: {record} for {statement}"
            );
            assert_eq!(statement["session"], record["session"], "{record}");
            for key in ["rows", "outcome", "duration_us", "detail"] {
                if !record[key].is_null() {
                    statement[key] = record[key].clone();
                }
            }
        }
    }
    statements
}

/// [`joined`] statements of the log folder, waiting up to 30 s until `done` says they are complete.
fn wait_statements(
    dir: &Path,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let statements = joined(&records(dir));
        if done(&statements) || std::time::Instant::now() > deadline {
            return statements;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn app(record: &serde_json::Value) -> &str {
    record["application_name"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_proxy_records_logins_statements_of_every_role_refusals_errors_and_reloads() {
    let setup = Setup::new("");
    let log = setup.log_dir();
    let crm = AuditedCrm::start(&setup, &log, "max_failures = 2").await;

    // Statements of a restricted role: an answered read, a refusal, an error, an extended query.
    let sam = crm.connect("sam", "kinds-sam").await;
    let rows = sam
        .simple_query("SELECT email, tax_code FROM contacts WHERE email <> 'somebody@posta.it'")
        .await
        .unwrap();
    let read_rows = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count() as u64;
    let err = sam
        .simple_query("SELECT * FROM health_records")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let err = sam
        .simple_query("SELECT id / 0 FROM contacts")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    let one = sam
        .query("SELECT first_name FROM contacts WHERE id = $1", &[&1i64])
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    sam.simple_query("SELECT 1").await.unwrap();
    // Two statements in one Query: the first fails, so PostgreSQL never runs the second.
    let batch = crm.connect("sam", "kinds-sam-batch").await;
    let err = batch
        .simple_query("SELECT id / 0 FROM contacts; SELECT email FROM contacts")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");

    // Statements of the unrestricted role: on a policy table (simple and extended), and not.
    let dora = crm.connect("dora", "kinds-dora").await;
    let all = dora
        .simple_query("SELECT id, tax_code FROM public.contacts WHERE id <= 5")
        .await
        .unwrap();
    assert!(!all.is_empty());
    dora.execute(
        "UPDATE interactions SET channel = channel WHERE id = (SELECT min(id) FROM interactions)",
        &[],
    )
    .await
    .unwrap();
    dora.simple_query("SELECT count(*) FROM pg_class")
        .await
        .unwrap();
    dora.simple_query("SELECT 'contacts' AS word")
        .await
        .unwrap();

    // A wrong password, then a lockout (max_failures = 2) of a user name.
    let wrong = format!(
        "postgres://sam:not-the-password@127.0.0.1:{}/crm",
        crm.proxy.port()
    );
    for _ in 0..2 {
        let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .err()
            .expect("a wrong password is refused");
        assert!(
            err.to_string().contains("28P01") || err.code().is_some(),
            "{err}"
        );
    }

    // A policy reload.
    let text = std::fs::read_to_string(&crm.policy).unwrap();
    std::fs::write(&crm.policy, format!("{text}\n# reviewed\n")).unwrap();

    let reloads = wait_records(&log, 1, |r| r["event"] == "policy_reload");
    assert_eq!(reloads.len(), 1, "one reload recorded");
    assert_eq!(reloads[0]["outcome"]["result"], "ok", "{}", reloads[0]);

    // Everything is in the log before the clients saw the answers; read it now.
    let all_records = records(&log);
    let text = serde_json::to_string(&all_records).unwrap();
    assert!(
        !text.contains("somebody@posta.it"),
        "a literal reached the log"
    );
    assert!(
        !text.contains("not-the-password"),
        "a password reached the log"
    );
    assert!(!text.contains(&maschera_tests::crm_proxy::crm_password("sam")));

    let logins: Vec<_> = all_records
        .iter()
        .filter(|r| r["event"] == "login_ok")
        .collect();
    let sam_login = logins
        .iter()
        .find(|r| r["user"] == "sam" && app(r) == "kinds-sam")
        .expect("sam's login");
    assert_eq!(sam_login["role"], "sales");
    assert_eq!(sam_login["database"], "crm");
    assert!(
        sam_login["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        logins
            .iter()
            .any(|r| r["user"] == "dora" && r["role"] == "dpo")
    );
    let failed: Vec<_> = all_records
        .iter()
        .filter(|r| r["event"] == "login_failed")
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|r| r["user"] == "sam"
        && r["outcome"]["sqlstate"] == "28P01"
        && r["detail"].as_str().unwrap().contains("wrong password")));
    let lockouts: Vec<_> = all_records
        .iter()
        .filter(|r| r["event"] == "lockout")
        .collect();
    assert_eq!(lockouts.len(), 1, "the second failure locks: {lockouts:?}");
    assert_eq!(lockouts[0]["user"], "sam");
    assert!(lockouts[0]["detail"].as_str().unwrap().contains("blocked"));

    let all_statements = joined(&all_records);
    let statements = |application: &str| -> Vec<&serde_json::Value> {
        all_statements
            .iter()
            .filter(|r| app(r) == application)
            .collect()
    };
    let sam_statements = statements("kinds-sam");
    assert_eq!(
        sam_statements.len(),
        4,
        "read, refusal, error, extended read; SELECT 1 touches no policy table: {sam_statements:#?}"
    );
    let read = sam_statements[0];
    assert_eq!(read["user"], "sam");
    assert_eq!(read["role"], "sales");
    assert_eq!(read["database"], "crm");
    assert_eq!(read["session"], sam_login["session"]);
    assert_eq!(read["client"], sam_login["client"]);
    assert_eq!(read["statement_kind"], "select");
    assert_eq!(read["rows"], read_rows, "{read}");
    assert_eq!(read["outcome"]["result"], "ok");
    assert!(read["duration_us"].as_u64().is_some(), "{read}");
    assert!(
        read["statement"].as_str().unwrap().contains("$1"),
        "normalized: {read}"
    );
    let columns = read["tables"][0]["columns"].to_string();
    assert!(
        columns.contains(r#""name":"tax_code""#) && columns.contains("masked"),
        "{read}"
    );
    assert!(
        read["tables"][0]["row_filtered"] == true,
        "sam sees his region only: {read}"
    );
    // As stored: how the statement ended is in its access record (the writer took that after
    // PostgreSQL answered) or, when the access record was written first with outcome `unknown`,
    // in one `outcome` record after it in the chain.
    let stored = |seq: &serde_json::Value| all_records.iter().find(|r| r["seq"] == *seq).unwrap();
    let access = stored(&read["seq"]);
    let follow_ups: Vec<_> = all_records
        .iter()
        .filter(|r| r["event"] == "outcome" && r["statement_seq"] == read["seq"])
        .collect();
    if access["outcome"]["result"] == "unknown" {
        assert!(
            access["rows"].is_null() && access["duration_us"].is_null(),
            "{access}"
        );
        let [follow_up] = follow_ups[..] else {
            panic!("one outcome record for {access}: {follow_ups:?}");
        };
        assert!(
            follow_up["seq"].as_u64() > read["seq"].as_u64(),
            "{follow_up}"
        );
        assert_eq!(follow_up["user"], "sam");
        assert!(follow_up["statement"].is_null() && follow_up["tables"].is_null());
    } else {
        assert!(follow_ups.is_empty(), "{access} and {follow_ups:?}");
        assert_eq!(access["rows"], read_rows, "{access}");
    }
    let refused = sam_statements[1];
    assert_eq!(refused["outcome"]["result"], "refused");
    assert_eq!(refused["outcome"]["sqlstate"], "42501");
    assert!(
        refused["tables"].to_string().contains("health_records"),
        "{refused}"
    );
    let error = sam_statements[2];
    assert_eq!(error["outcome"]["result"], "error");
    assert_eq!(error["outcome"]["sqlstate"], "22012");
    let extended = sam_statements[3];
    assert_eq!(extended["rows"], 1);
    assert_eq!(extended["outcome"]["result"], "ok");
    // A refusal never reached PostgreSQL: one record, no follow-up.
    assert!(
        !all_records
            .iter()
            .any(|r| r["event"] == "outcome" && r["statement_seq"] == refused["seq"])
    );
    let batch_statements = statements("kinds-sam-batch");
    assert_eq!(batch_statements.len(), 2, "{batch_statements:#?}");
    assert_eq!(batch_statements[0]["outcome"]["sqlstate"], "22012");
    let skipped = batch_statements[1];
    assert_eq!(skipped["outcome"]["result"], "error", "{skipped}");
    assert!(
        skipped["detail"].as_str().unwrap().contains("not run"),
        "{skipped}"
    );

    let dora_statements = statements("kinds-dora");
    assert_eq!(
        dora_statements.len(),
        2,
        "the read of contacts and the update of interactions; pg_class and a string literal are not \
         policy tables: {dora_statements:#?}"
    );
    let dora_read = dora_statements[0];
    assert_eq!(dora_read["role"], "dpo");
    assert_eq!(dora_read["statement_kind"], "select");
    assert_eq!(dora_read["rows"], 5);
    let tables = dora_read["tables"].to_string();
    assert!(
        tables.contains(r#""name":"contacts""#) && tables.contains("national_identifier"),
        "{dora_read}"
    );
    let dora_write = dora_statements[1];
    assert_eq!(dora_write["statement_kind"], "update");
    assert_eq!(dora_write["rows"], 1);
    assert!(dora_write["tables"].to_string().contains("interactions"));

    drop(sam);
    drop(batch);
    drop(dora);
    let out = setup.verify();
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "the chain checks while the proxy runs: {}",
        stdout(&out)
    );

    // A clean stop seals the log; `policy apply --audit-config` then records the apply in it.
    let mut crm = crm;
    crm.proxy.signal(libc::SIGTERM);
    assert!(
        crm.proxy
            .wait_exit(std::time::Duration::from_secs(30))
            .unwrap()
            .success()
    );
    let credentials = crm.pg.dir().join("logins.toml");
    let upstream = crm.pg.uri("crm");
    maschera_ok(&[
        "policy",
        "apply",
        crm.policy.to_str().unwrap(),
        "--upstream",
        &upstream,
        "--credentials",
        credentials.to_str().unwrap(),
        "--audit-config",
        setup.config_path().to_str().unwrap(),
    ]);
    let applies: Vec<_> = records(&log)
        .into_iter()
        .filter(|r| r["event"] == "policy_apply")
        .collect();
    assert_eq!(applies.len(), 1, "{applies:?}");
    let detail = applies[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("policy.toml") && detail.contains("sales"),
        "{detail}"
    );
    let out = setup.verify();
    assert_eq!(
        out.status.code(),
        Some(0),
        "proxy and apply wrote one whole chain: {}",
        stdout(&out)
    );

    // The auditors' commands join each statement with its outcome record.
    let config = setup.config_path();
    let config = config.to_str().unwrap();
    let lines: Vec<serde_json::Value> = maschera_ok(&[
        "audit", "search", "--config", config, "--user", "sam", "--json",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let found = joined(&lines);
    let sam_all: Vec<_> = all_statements
        .iter()
        .filter(|r| r["user"] == "sam")
        .collect();
    assert_eq!(found.len(), sam_all.len(), "{lines:#?}");
    for (found, expected) in found.iter().zip(&sam_all) {
        assert_eq!(
            found, *expected,
            "search --json prints both records of a statement"
        );
    }
    let table = maschera_ok(&[
        "audit",
        "search",
        "--config",
        config,
        "--user",
        "sam",
        "--outcome",
        "error",
    ]);
    assert_eq!(table.matches("statement").count(), 3, "{table}");
    assert_eq!(table.matches("error 22012").count(), 3, "{table}");
    let report = maschera_ok(&["audit", "report", "--config", config, "--user", "sam"]);
    assert!(
        report.contains("Statements: 6 (2 answered, 1 refused, 3 failed)"),
        "{report}"
    );
    assert!(report.contains("Log verification: whole"), "{report}");
}

#[tokio::test]
async fn sigkill_under_load_through_the_proxy_keeps_every_completed_statement() {
    let setup = Setup::new("");
    let log = setup.log_dir();
    let mut crm = AuditedCrm::start(&setup, &log, "").await;
    let completed = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let user = if i % 4 == 3 { "dora" } else { "sam" };
        let application = format!("load-{i}");
        let client = crm.connect(user, &application).await;
        let completed = completed.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let result = if n % 2 == 0 {
                    client
                        .query(
                            "SELECT first_name, email FROM contacts WHERE id = $1",
                            &[&(n as i64 % 50 + 1)],
                        )
                        .await
                        .map(|_| ())
                } else {
                    client
                        .simple_query("SELECT count(*) FROM interactions")
                        .await
                        .map(|_| ())
                };
                if result.is_err() {
                    return;
                }
                // The completion arrived: its record must be in the log whatever happens next.
                *completed
                    .lock()
                    .unwrap()
                    .entry(application.clone())
                    .or_insert(0u64) += 1;
            }
        }));
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let completed = completed.lock().unwrap();
        let total: u64 = completed.values().sum();
        if total >= 400 && completed.len() == 8 && completed.values().all(|n| *n >= 10) {
            break;
        }
    }
    crm.proxy.signal(libc::SIGKILL);
    crm.proxy
        .wait_exit(std::time::Duration::from_secs(10))
        .unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let completed = completed.lock().unwrap().clone();
    assert_eq!(completed.len(), 8, "every client completed statements");

    let in_log = joined(&records(&log));
    for (application, done) in &completed {
        let recorded: Vec<_> = in_log.iter().filter(|r| app(r) == application).collect();
        assert!(
            recorded.len() as u64 >= *done,
            "{application}: {done} statements completed, {} recorded",
            recorded.len()
        );
        // A statement's outcome record is queued before the client sees its completion, so before
        // the client's next access record: only the last statement of a client can lack it.
        let (last, answered) = recorded.split_last().unwrap();
        for record in answered {
            assert_eq!(record["outcome"]["result"], "ok", "{application}: {record}");
        }
        assert!(
            matches!(last["outcome"]["result"].as_str(), Some("ok" | "unknown")),
            "{last}"
        );
    }
    // The documented contract after a crash: everything checks, records follow the last checkpoint.
    setup.assert_unsealed_tail();

    // A new proxy on the same folder links the crashed file; a clean stop seals the log.
    let mut again = maschera_tests::Proxy::start(&crm.pg, crm.options.clone()).unwrap();
    again.signal(libc::SIGTERM);
    assert!(
        again
            .wait_exit(std::time::Duration::from_secs(30))
            .unwrap()
            .success()
    );
    setup.assert_verify(0, "stopped uncleanly");
}

/// A tmpfs of `kib` KiB mounted on a fresh folder (the tests run as root), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a small tmpfs needs root");
        SmallDisk { dir }
    }

    /// Fills the disk with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_under_the_proxy_refuses_personal_data_and_recovers() {
    let setup = Setup::new("");
    let disk = SmallDisk::mount(512);
    let log = disk.dir.path().join("log");
    let crm = AuditedCrm::start(&setup, &log, "").await;
    let sam = crm.connect("sam", "disk-sam").await;
    sam.simple_query("SELECT email FROM contacts WHERE id = 1")
        .await
        .unwrap();
    // Past the periodic checkpoint (checkpoint_seconds = 1), so that the next write is a statement's.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let filler = disk.fill();

    // The log file's last page may still hold a few records. Then either a statement is sent but
    // its access record cannot be written: the answer is withheld and the session ends (58030); or
    // the outcome record of an answered statement was the first that could not be written, and the
    // next statement is refused before it is sent (42501).
    let mut answered_before = 0;
    let err = loop {
        match sam
            .simple_query("SELECT email FROM contacts WHERE id = 1")
            .await
        {
            Ok(_) => answered_before += 1,
            Err(err) => break err,
        }
        assert!(answered_before < 100, "the disk never filled");
    };
    let withheld = err.code().map(|c| c.code()) == Some("58030");
    assert!(
        withheld || err.code().map(|c| c.code()) == Some("42501"),
        "{err:?}"
    );
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("access log cannot be written"),
        "{err:?}"
    );
    assert_eq!(
        sam.simple_query("SELECT 1").await.is_err(),
        withheld,
        "the session is closed after a withheld answer, not after a refusal"
    );

    // While the log is unwritable, statements on personal data are refused for every role; others run.
    let sam = crm.connect("sam", "disk-sam-2").await;
    let dora = crm.connect("dora", "disk-dora").await;
    for (who, client) in [("sam", &sam), ("dora", &dora)] {
        let err = client
            .simple_query("SELECT email FROM contacts WHERE id = 1")
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{who}: {err:?}");
        assert!(
            err.as_db_error()
                .unwrap()
                .message()
                .contains("access log cannot be written"),
            "{who}: {err:?}"
        );
        client.simple_query("SELECT 1").await.unwrap();
    }
    let err = sam
        .query("SELECT first_name FROM contacts WHERE id = $1", &[&1i64])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "extended: {err:?}");

    // Space again: the next record written makes the log healthy, and statements run again.
    std::fs::remove_file(filler).unwrap();
    let mut answered = false;
    for _ in 0..20 {
        if sam
            .simple_query("SELECT email FROM contacts WHERE id = 1")
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(answered, "the proxy recovers once the log can be written");
    // Its outcome record is not awaited: it follows within `batch_interval_ms`.
    let recovered =
        |r: &serde_json::Value| app(r) == "disk-sam-2" && r["outcome"]["result"] == "ok";
    let statements = wait_statements(&log, |all| all.iter().any(recovered));
    let sent = statements
        .iter()
        .filter(|r| app(r) == "disk-sam" && r["outcome"]["result"] != "refused")
        .count();
    assert_eq!(
        sent,
        1 + answered_before,
        "every statement answered before the disk filled has its access record, the withheld one not"
    );
    let answered: Vec<_> = statements
        .iter()
        .filter(|r| r["outcome"]["result"] == "ok")
        .collect();
    assert!(
        answered.iter().any(|r| app(r) == "disk-sam-2"),
        "the statement answered after recovery is recorded"
    );
    assert!(
        !answered.iter().any(|r| app(r) == "disk-dora"),
        "nothing of dora's was answered"
    );
    drop(crm);
}
