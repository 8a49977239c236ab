//! The end-to-end test harness: a private PostgreSQL per test (`maschera::embedded_pg`, the same code
//! `maschera demo` uses), the binary under test, and the examples folder. Not for: assertions about
//! Maschera itself; those live in `tests/tests/`.

pub mod crm;
pub mod crm_proxy;
pub use maschera::embedded_pg as pg;
pub use maschera::embedded_pg::{
    PgServer, PgServerOptions, SUPERUSER, connect, free_port, pg_bin_dir,
};
pub mod proxy;
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

/// Makes fresh access-log keys with `maschera audit keygen --out <dir>/keys` and returns the body of an
/// `[audit]` section (without its header) that writes to `<dir>/audit` with them, as `instance`.
pub fn access_log_section(dir: &std::path::Path, instance: &str) -> String {
    let keys = dir.join("keys");
    let out = std::process::Command::new(maschera_bin())
        .args(["audit", "keygen", "--out"])
        .arg(&keys)
        .output()
        .expect("run maschera audit keygen");
    assert!(
        out.status.success(),
        "audit keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    format!(
        "dir = {}\ninstance = \"{instance}\"\nkey_file = {}\nsigning_key_file = {}\npublic_key_file = {}\n",
        path(dir.join("audit")),
        path(keys.join("audit.key")),
        path(keys.join("audit-signing.key")),
        path(keys.join("audit-public.key")),
    )
}
