//! The end-to-end test harness: a private PostgreSQL per test (initdb in a temporary folder, a free port,
//! run as the unprivileged `postgres` user when the tests run as root, stopped and removed on drop), and
//! helpers to reach it. Not for: assertions about Maschera itself; those live in `tests/tests/`.

pub mod crm;
pub mod pg;

pub use pg::{PgServer, PgServerOptions, SUPERUSER, connect, free_port, pg_bin_dir};

/// Path of the `maschera` binary built for the tests (same code as the real one). Cargo builds the
/// package's binary before its integration tests, next to the `deps/` folder holding the test binary.
pub fn maschera_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    profile_dir.join("maschera-under-test")
}

/// The folder of the repository's `examples/` (schema, policy, sample configuration).
pub fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}
