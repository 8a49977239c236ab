//! The end-to-end test harness: a private PostgreSQL per test (`maschera::ops::embedded_pg`, the same code
//! `maschera demo` uses), the binary under test, and the examples folder. Not for: assertions about
//! Maschera itself; those live in `tests/tests/`.

#![allow(unsafe_code, reason = "libc calls, std::env::set_var")]

pub mod clients;
pub mod crm;
pub mod crm_proxy;
pub mod fixture;
pub use clients::{PSQL_TUPLES, Ran, psql, psql_tuples};
pub use fixture::{CrmProxy, Fixture, pg_and_proxy};
pub use maschera::ops::embedded_pg as pg;
pub use maschera::ops::embedded_pg::{
    PgServer, PgServerOptions, SUPERUSER, connect, free_port, pg_bin_dir,
};
pub mod proxy;
pub mod seal;
pub use proxy::{Proxy, ProxyOptions, TEST_PASSWORD, TEST_USER};

/// Path of the `maschera` binary built for the tests (same code as the real one). Cargo builds the
/// package's binary before its integration tests, next to the `deps/` folder holding the test binary.
pub fn maschera_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile_dir.join("maschera-under-test")
}

/// The folder of the repository's `examples/` (schema, policy, sample configuration).
pub fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Runs `maschera` with `args` and returns what it printed and how it ended.
pub fn run_maschera<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_maschera_with(args, &[])
}

/// Runs `maschera` with `args` and the environment variables `env` added.
pub fn run_maschera_with<I, S>(args: I, env: &[(&str, &str)]) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(maschera_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run maschera")
}

/// Runs `maschera` with `args`, asserts that it succeeded (showing its output otherwise) and returns
/// its standard output.
pub fn run_maschera_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    Ran::of(run_maschera(&args)).ok_stdout(&format!("maschera {args:?}"))
}

/// Runs `future` to its end on a runtime of its own (for tests that are not `async`).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Makes fresh access-log keys with `maschera audit keygen --out <dir>/keys` and returns the body of an
/// `[audit]` section (without its header) that writes to `<dir>/audit` with them, as `instance`.
pub fn access_log_section(dir: &std::path::Path, instance: &str) -> String {
    let keys = dir.join("keys");
    run_maschera_ok([
        std::ffi::OsStr::new("audit"),
        "keygen".as_ref(),
        "--out".as_ref(),
        keys.as_os_str(),
    ]);
    let path = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    format!(
        "dir = {}\ninstance = \"{instance}\"\nkey_file = {}\nsigning_key_file = {}\npublic_key_file = {}\n",
        path(dir.join("audit")),
        path(keys.join("audit.key")),
        path(keys.join("audit-signing.key")),
        path(keys.join("audit-public.key")),
    )
}

/// Every record of an access-log folder, in file order.
pub fn access_log_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for file in maschera::audit::files::list_dir(dir).unwrap_or_default() {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    out
}

/// Parses CSV text with Python's csv module (an independent RFC 4180 reader) into rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut python = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv,sys,json; print(json.dumps(list(csv.reader(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write csv");
    let parsed = python.wait_with_output().expect("python3 output");
    assert!(parsed.status.success(), "python3 could not parse the CSV");
    serde_json::from_slice(&parsed.stdout).expect("json")
}

/// Whether the tests run as root (PostgreSQL then runs as the `postgres` user and files it reads
/// must be handed to it).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
