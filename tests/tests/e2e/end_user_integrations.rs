//! The end-user integrations a CRM team drops in (`integrations/`: maschera-token, maschera-django,
//! maschera-sqlalchemy, installed with pip from their folders by `integrations/install` into
//! `target/integrations-venv`): their own pytest suites, against a real PostgreSQL.
//! Not for: the proxy's verification of tokens or its routes as such (the end_user tests).

use maschera_tests::PgServer;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The pytest suites of the three packages (signing; the Django middleware and the SQLAlchemy
/// session event against a plain PostgreSQL, which takes `maschera.end_user` as a custom setting):
/// all of them run and pass, none skipped.
#[test]
fn integration_packages_pass_their_own_tests_against_postgresql() {
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
}
