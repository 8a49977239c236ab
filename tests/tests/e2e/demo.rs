//! `maschera demo --json` as a newcomer runs it: the one JSON line, every demo user logging in through
//! the proxy (plain and `sslmode=require`), the reference CRM behind it, and a clean stop on SIGTERM and
//! SIGINT (exit 0, no PostgreSQL left running, the temporary folder removed).

use maschera_tests::{free_port, maschera_bin};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const CONTACTS: i64 = 500;
/// Generous: the demo is ready in seconds, but the test machine is shared.
const READY_LIMIT: Duration = Duration::from_secs(180);
const EXIT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Facts {
    pub(crate) proxy: String,
    pub(crate) upstream: String,
    pub(crate) audit_log: PathBuf,
    /// The demo's configuration file.
    pub(crate) config: PathBuf,
    pub(crate) users: Vec<UserFacts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFacts {
    pub(crate) user: String,
    /// `None` for the application user `crm`.
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) application: bool,
    pub(crate) password: String,
    pub(crate) uri: String,
}

/// A running `maschera demo --json`; killed (and its folder checked) if a test fails half-way.
pub(crate) struct Demo {
    pub(crate) child: Child,
    port: u16,
    pub(crate) facts: Facts,
    stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Demo {
    pub(crate) fn start() -> Demo {
        Demo::start_with(&[])
    }

    /// The same with `extra` arguments of `maschera demo` (e.g. `--pool-mode transaction`).
    pub(crate) fn start_with(extra: &[&str]) -> Demo {
        let port = free_port();
        let stderr_dir = tempfile::tempdir().unwrap();
        let stderr = stderr_dir.path().join("demo.log");
        let args: Vec<&str> = ["--json"].iter().chain(extra).copied().collect();
        let mut child = spawn_demo(&args, CONTACTS as u64, port, &stderr);
        let lines_rx = stdout_lines(&mut child);
        let line = match lines_rx.recv_timeout(READY_LIMIT) {
            Ok(line) => line.unwrap(),
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no JSON line from maschera demo ({err}); stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let facts: Facts = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not the JSON line ({e}): {line}"));
        // Exactly one line: nothing else arrives on standard output while it serves.
        assert!(
            lines_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "more than one line on standard output"
        );
        Demo {
            child,
            port,
            facts,
            stderr,
            _stderr_dir: stderr_dir,
        }
    }

    /// The temporary folder: the one holding the access log (and PostgreSQL's data).
    pub(crate) fn dir(&self) -> &Path {
        self.facts.audit_log.parent().unwrap()
    }

    pub(crate) fn user(&self, name: &str) -> &UserFacts {
        self.facts
            .users
            .iter()
            .find(|u| u.user == name)
            .unwrap_or_else(|| panic!("no user {name} in {:?}", self.facts.users))
    }

    /// Sends `signal` and checks the clean stop: exit 0, no process started from the folder, folder gone.
    fn stop_with(mut self, signal: i32) {
        let dir = self.dir().to_path_buf();
        assert!(dir.is_dir(), "{} exists while serving", dir.display());
        assert!(
            !processes_naming(&dir).is_empty(),
            "PostgreSQL runs from {} while serving",
            dir.display()
        );
        send(&self.child, signal);
        let status = wait_exit(&mut self.child);
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "exit status {status}; stderr:\n{log}");
        assert_eq!(
            processes_naming(&dir),
            Vec::<String>::new(),
            "processes still running from {}",
            dir.display()
        );
        assert!(!dir.exists(), "{} is still on disk", dir.display());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            send(&self.child, libc::SIGTERM);
            let deadline = Instant::now() + EXIT_LIMIT;
            while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- maschera demo stderr ----\n{}\n---- end ----",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

/// Spawns `maschera demo` with `extra` arguments from an unrelated folder (the CRM and the policy are
/// built into the binary), standard error to `stderr`.
fn spawn_demo(extra: &[&str], contacts: u64, port: u16, stderr: &Path) -> Child {
    Command::new(maschera_bin())
        .arg("demo")
        .args(extra)
        .args(["--contacts", &contacts.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(stderr.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("spawn maschera demo")
}

/// The lines of the child's standard output, as they come.
fn stdout_lines(child: &mut Child) -> Receiver<std::io::Result<String>> {
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines_rx
}

pub(crate) fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of our own child process.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Waits for the exit after a signal; kills the demo and fails if it takes too long.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + EXIT_LIMIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("maschera demo still running {EXIT_LIMIT:?} after the signal");
}

/// Command lines of running processes that mention `dir`.
pub(crate) fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(cmdline);
        }
    }
    found
}

async fn connect(uri: &str) -> tokio_postgres::Client {
    maschera_tests::connect(uri)
        .await
        .unwrap_or_else(|e| panic!("connecting to {uri}: {e}"))
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("counting {table}: {e}"))
        .get(0)
}

/// psql with `sslmode=require` (the certificate is self-signed, so not verified).
fn psql_over_tls(uri: &str, sql: &str) -> String {
    let args = ["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql];
    let out = maschera_tests::psql(&format!("{uri}?sslmode=require"), &args);
    out.ok_stdout("psql over TLS").trim().to_owned()
}

#[tokio::test]
async fn demo_json_line_serves_every_user_and_sigterm_leaves_nothing() {
    let demo = Demo::start();
    let facts = &demo.facts;
    assert_eq!(
        facts.proxy,
        format!("postgres://127.0.0.1:{}/crm", demo.port)
    );
    let roles: Vec<(&str, &str)> = facts
        .users
        .iter()
        .map(|u| (u.user.as_str(), u.role.as_deref().unwrap_or("application")))
        .collect();
    assert_eq!(
        roles,
        [
            ("dora", "dpo"),
            ("sam", "sales"),
            ("sara", "sales"),
            ("mia", "marketing"),
            ("tom", "support"),
            ("ana", "analyst"),
            ("crm", "application"),
        ]
    );
    assert!(facts.config.is_file(), "{}", facts.config.display());
    for user in &facts.users {
        assert!(user.password.len() >= 20, "weak password for {}", user.user);
        assert_eq!(
            user.uri,
            format!(
                "postgres://{}:{}@127.0.0.1:{}/crm",
                user.user, user.password, demo.port
            )
        );
        let client = connect(&user.uri).await;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{} through the proxy", user.user);
    }
    let dora = connect(&demo.user("dora").uri).await;
    assert_eq!(count(&dora, "contacts").await, CONTACTS);
    let upstream = connect(&facts.upstream).await;
    assert_eq!(count(&upstream, "contacts").await, CONTACTS);
    assert!(count(&upstream, "consents").await > CONTACTS);

    let conninfo = psql_over_tls(&demo.user("sam").uri, "\\conninfo");
    assert!(
        conninfo.contains("as user \"sam\"") && conninfo.contains("SSL connection"),
        "{conninfo}"
    );
    let over_tls = psql_over_tls(&demo.user("dora").uri, "SELECT count(*) FROM contacts");
    assert_eq!(over_tls, CONTACTS.to_string());
    check_one_query_of_the_matrix_per_user(&demo, &upstream).await;
    check_the_access_log_names_the_refusal(&demo.facts.audit_log);
    drop((dora, upstream));
    demo.stop_with(libc::SIGTERM);
}

/// tom's refused `SELECT * FROM deals` is in the access log the demo named, without any value.
fn check_the_access_log_names_the_refusal(audit_log: &Path) {
    let mut records = String::new();
    for entry in std::fs::read_dir(audit_log).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            records.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    let refusal = records
        .lines()
        .find(|l| l.contains(r#""user":"tom""#) && l.contains("deals") && l.contains("refused"))
        .unwrap_or_else(|| panic!("no refusal of tom on deals in the access log:\n{records}"));
    assert!(refusal.contains("42501"), "{refusal}");
}

/// A contact of the north region with an active marketing consent, as PostgreSQL holds it.
struct Sample {
    id: i64,
    created_at: String,
    last_name: String,
    email: String,
    tax_code: String,
    birth_year: String,
}

async fn sample_contact(upstream: &tokio_postgres::Client) -> Sample {
    let row = upstream
        .query_one(
            "SELECT c.id, c.created_at::text, c.last_name, c.email, c.tax_code::text, \
                    extract(year FROM c.birth_date)::text \
             FROM contacts c WHERE c.region = 'north' AND EXISTS (SELECT 1 FROM consents k \
               WHERE k.contact_id = c.id AND k.purpose = 'marketing' AND k.withdrawn_at IS NULL) \
             ORDER BY c.id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    Sample {
        id: row.get(0),
        created_at: row.get(1),
        last_name: row.get(2),
        email: row.get(3),
        tax_code: row.get(4),
        birth_year: row.get(5),
    }
}

async fn scalar(uri: &str, sql: &str) -> i64 {
    one_row(&connect(uri).await, sql).await.get(0)
}

async fn one_row(client: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Row {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What each demo user sees, as `crm-reference.md` says, checked against the data upstream.
async fn check_one_query_of_the_matrix_per_user(demo: &Demo, upstream: &tokio_postgres::Client) {
    let sample = sample_contact(upstream).await;
    let upstream_count = |sql: &'static str| async move {
        upstream.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    };

    // dora (dpo): the special-category table, whole.
    let health = upstream_count("SELECT count(*) FROM health_records").await;
    assert!(health > 0);
    assert_eq!(
        scalar(
            &demo.user("dora").uri,
            "SELECT count(*) FROM health_records"
        )
        .await,
        health
    );

    // sam (sales, north): his region only; tax code masked but its last 4, birth date cut to the year.
    let north = upstream_count("SELECT count(*) FROM contacts WHERE region = 'north'").await;
    let sam = connect(&demo.user("sam").uri).await;
    let count: i64 = one_row(&sam, "SELECT count(*) FROM contacts").await.get(0);
    assert_eq!(count, north);
    let row = one_row(
        &sam,
        &format!(
            "SELECT tax_code::text, birth_date::text FROM contacts WHERE id = {}",
            sample.id
        ),
    )
    .await;
    let last4 = &sample.tax_code[sample.tax_code.len() - 4..];
    assert_eq!(
        row.get::<_, String>(0),
        format!("{}{last4}", "*".repeat(12))
    );
    assert_eq!(
        row.get::<_, String>(1),
        format!("{}-01-01", sample.birth_year)
    );

    // sara (sales, south): the north contact does not exist for her.
    let sara = connect(&demo.user("sara").uri).await;
    let rows = sara
        .query(
            &format!("SELECT id FROM contacts WHERE id = {}", sample.id),
            &[],
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "sara sees a north contact");

    // mia (marketing): only contacts with an active marketing consent; no phone column.
    let consenting = upstream_count(
        "SELECT count(*) FROM contacts c WHERE EXISTS (SELECT 1 FROM consents k \
         WHERE k.contact_id = c.id AND k.purpose = 'marketing' AND k.withdrawn_at IS NULL)",
    )
    .await;
    let mia = &demo.user("mia").uri;
    assert_eq!(
        scalar(mia, "SELECT count(*) FROM contacts").await,
        consenting
    );
    let no_phone = connect(mia)
        .await
        .query("SELECT phone FROM contacts LIMIT 1", &[])
        .await;
    assert!(no_phone.is_err(), "mia reads phone numbers");

    // tom (support): last name as an initial, e-mail masked; deals refused with 42501.
    let tom = connect(&demo.user("tom").uri).await;
    let row = one_row(
        &tom,
        &format!(
            "SELECT last_name, email FROM contacts WHERE id = {}",
            sample.id
        ),
    )
    .await;
    let initial = sample.last_name.chars().next().unwrap();
    assert_eq!(row.get::<_, String>(0), format!("{initial}."));
    let (local, domain) = sample.email.split_once('@').unwrap();
    let first = local.chars().next().unwrap();
    assert_eq!(row.get::<_, String>(1), format!("{first}***@{domain}"));
    let refused = tom.query("SELECT * FROM deals", &[]).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );

    // ana (analyst): the same contact, found by a column she sees, has a pseudonym for an id.
    let ana = connect(&demo.user("ana").uri).await;
    let row = one_row(
        &ana,
        &format!(
            "SELECT id::text FROM contacts WHERE created_at = '{}'",
            sample.created_at
        ),
    )
    .await;
    let pseudonym: String = row.get(0);
    assert!(
        pseudonym.len() >= 16 && pseudonym.bytes().all(|b| b.is_ascii_hexdigit()),
        "{pseudonym}"
    );
    assert_ne!(pseudonym, sample.id.to_string());
}

#[tokio::test]
async fn demo_stops_cleanly_on_sigint_with_a_client_connected() {
    let demo = Demo::start();
    let client = connect(&demo.user("tom").uri).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // The idle session stays open across the signal: the demo closes it and still stops cleanly.
    demo.stop_with(libc::SIGINT);
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
}

#[test]
fn example_configuration_is_accepted_by_the_proxy() {
    let path = maschera_tests::examples_dir().join("maschera.toml");
    let config = maschera::config::Config::load(&path)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    assert_eq!(config.listen, "0.0.0.0:6432");
    assert_eq!(config.upstream.database, "crm");
    // Every line is a key, a section or a comment: nothing is left unexplained.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut previous = "";
    for line in text.lines() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') && !line.starts_with('[') {
            assert!(
                previous.starts_with('#'),
                "no comment above `{line}` in {}",
                path.display()
            );
        }
        previous = line;
    }
}

#[test]
fn sigterm_during_set_up_stops_postgres_and_removes_the_folder() {
    let scratch = tempfile::tempdir().unwrap();
    let stderr = scratch.path().join("demo.log");
    // Big enough that the load is still running when the signal arrives.
    let mut child = spawn_demo(&["--json"], 300_000, free_port(), &stderr);
    let deadline = Instant::now() + READY_LIMIT;
    let log = loop {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        if log.contains("loading the reference CRM") {
            break log;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the demo never started loading:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let dir = log
        .split_whitespace()
        .find_map(|word| word.strip_prefix("dir="))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no dir= in the log:\n{log}"));
    assert!(dir.is_dir());
    send(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(status.success(), "exit status {status}:\n{log}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "", "no JSON line when stopped before it was ready");
    assert_eq!(processes_naming(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{} is still on disk", dir.display());
}

#[tokio::test]
async fn without_json_it_prints_psql_lines_and_a_query_that_shows_each_role() {
    let scratch = tempfile::tempdir().unwrap();
    let stderr = scratch.path().join("demo.log");
    let mut child = spawn_demo(&[], CONTACTS as u64, free_port(), &stderr);
    let lines = stdout_lines(&mut child);
    let mut text = Vec::new();
    while !text
        .last()
        .is_some_and(|l: &String| l.starts_with("Stop with Ctrl-C"))
    {
        match lines.recv_timeout(READY_LIMIT) {
            Ok(line) => text.push(line.unwrap()),
            Err(err) => {
                let _ = child.kill();
                panic!(
                    "the text ended early ({err}):\n{}\nstderr:\n{}",
                    text.join("\n"),
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
    }
    let uri_of = |user: &str| {
        text.iter()
            .find(|l| l.trim_start().starts_with(&format!("{user} ")) && l.contains("psql '"))
            .and_then(|l| l.split('\'').nth(1))
            .unwrap_or_else(|| panic!("no psql line for {user}:\n{}", text.join("\n")))
            .to_owned()
    };
    let query = text
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("SELECT * FROM contacts WHERE"))
        .unwrap_or_else(|| panic!("no query to try:\n{}", text.join("\n")))
        .to_owned();
    // What the text promises: sam, tom, ana and mia see the contact, sara does not.
    for (user, rows) in [("sam", 1), ("sara", 0), ("mia", 1), ("tom", 1), ("ana", 1)] {
        let client = connect(&uri_of(user)).await;
        let found = client
            .simple_query(&query)
            .await
            .unwrap_or_else(|e| panic!("{query} as {user}: {e}"))
            .into_iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(found, rows, "{query} as {user}");
    }
    send(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}
