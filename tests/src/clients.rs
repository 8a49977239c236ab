//! The clients the end-to-end tests drive besides their own tokio-postgres code: the server's `psql`,
//! Python scripts (psycopg, SQLAlchemy, Django), and the simple-protocol helpers the tests share (rows
//! as text, the SQLSTATE and message of a refusal). Not for: assertions, or starting servers (see
//! [`crate::Fixture`]).

use tokio_postgres::{Client, SimpleQueryMessage};

/// What a client program printed and whether it succeeded.
#[derive(Debug)]
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// What `out` holds.
    pub fn of(out: std::process::Output) -> Ran {
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Standard output, once asserted that the program succeeded (its output is in the panic).
    pub fn ok_stdout(self, what: &str) -> String {
        assert!(self.ok, "{what} failed:\n{}{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// The flags of a psql that prints tuples only, unaligned, quietly, and stops at the first error.
pub const PSQL_TUPLES: &[&str] = &["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"];

/// Runs the PostgreSQL installation's `psql` on `conninfo` without a psqlrc (`-X`), with `args`,
/// its standard input closed and 20 seconds to connect.
pub fn psql(conninfo: &str, args: &[&str]) -> Ran {
    let bin = crate::pg_bin_dir().expect("the PostgreSQL binaries");
    Ran::of(
        std::process::Command::new(bin.join("psql"))
            .arg(conninfo)
            .arg("-X")
            .args(args)
            .env("PGCONNECT_TIMEOUT", "20")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run psql"),
    )
}

/// `psql` with [`PSQL_TUPLES`] and `args`.
pub fn psql_tuples(conninfo: &str, args: &[&str]) -> Ran {
    let mut all = PSQL_TUPLES.to_vec();
    all.extend_from_slice(args);
    psql(conninfo, &all)
}

/// Every row of `sql` (simple protocol), as text, NULL as `None`; panics on an error.
pub async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| {
        let db = e.as_db_error().map(|d| (d.code().code(), d.message()));
        panic!("{sql}: {e} {db:?}")
    });
    rows_as_text(&messages)
}

/// The rows among the messages of a simple query, as text, NULL as `None`.
pub fn rows_as_text(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
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

/// The first column of every row of `sql` that is not NULL.
pub async fn simple_column(client: &Client, sql: &str) -> Vec<String> {
    simple_rows(client, sql)
        .await
        .into_iter()
        .filter_map(|mut r| r.remove(0))
        .collect()
}

/// The SQLSTATE and message of an error that is an ErrorResponse.
pub fn error_of(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The SQLSTATE and message with which `sql` (simple protocol) is refused; panics if it runs.
pub async fn simple_refusal(client: &Client, sql: &str) -> (String, String) {
    let err = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("expected `{sql}` to be refused"));
    error_of(&err)
}

/// Runs a Python script (e.g. with psycopg) with `args`; panics unless it exits with 0, and returns
/// what it printed.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    Ran::of(out).ok_stdout("python3")
}

/// The Python of an application's own virtualenv under `target/` (`venv`, e.g. `realcrm-venv`), or the
/// one the environment variable `env_var` names; panics naming `install` (the script that makes it)
/// when it is missing.
pub fn venv_python(env_var: &str, venv: &str, install: &str) -> std::path::PathBuf {
    let python = std::env::var_os(env_var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join(venv)
                .join("bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run {install} (.ci/run does)",
        python.display()
    );
    python
}
