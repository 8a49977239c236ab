//! The access log from the outside: logs written through `maschera::audit::AuditLog` (in process, or by
//! the `audit-writer` load generator killed with SIGKILL or run against a file size limit), then read
//! with the real `maschera audit keygen/verify/search/report` commands; and the PostgreSQL sink against
//! a private PostgreSQL.

use maschera::audit::{
    AuditConfig, AuditLog, ColumnAction, ColumnTouched, Event, EventKind, Outcome, TableTouched,
};
use maschera_tests::{PgServer, maschera_bin};
use policy::access::{Category, TableName};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
    Command::new(maschera_bin())
        .args(args)
        .output()
        .expect("run maschera")
}

/// Runs `maschera` and returns its standard output, failing the test if it did not succeed.
fn maschera_ok(args: &[&str]) -> String {
    let out = maschera(args);
    assert!(
        out.status.success(),
        "maschera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
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
    let out = setup.verify();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("whole: 8 records in 1 files"),
        "{}",
        stdout(&out)
    );
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
    let out = setup.verify();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unsealed tail, not a broken chain: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("unsealed tail"), "{}", stdout(&out));

    // The next start links the crashed file; a clean stop seals the whole log.
    let status = writer(&setup, &["--tasks", "1", "--count", "3"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let out = setup.verify();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("stopped uncleanly"),
        "{}",
        stdout(&out)
    );
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
