//! The `[upstream]` settings: where PostgreSQL is, how the proxy reaches it (TLS mode, CA file, time
//! limit) and the login it uses there. A leaf that `config` (which parses it as a section), `tls`,
//! `upstream` and `admin_connect` all read, so none of them depends on another for its settings.
//! Not for: parsing the rest of the configuration (see `config`) or connecting (see `upstream`).

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[upstream]`: the PostgreSQL server and the login the proxy uses there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name or IP address of PostgreSQL, or (starting with `/`) the directory of its
    /// Unix-domain socket `<host>/.s.PGSQL.<port>`, as in libpq; TLS is not used on a socket.
    pub host: String,
    /// Port of PostgreSQL. Default 5432.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// The default database: the one `[policy]` is for, and the one the proxy's own connections use
    /// (health probe, `[retention]`). Sessions go to the database the client names (see `databases`).
    pub database: String,
    /// The databases clients may name besides the served ones (`database` and `[databases.<name>]`,
    /// always allowed): names, `"*"` for any, or `"prefix*"` (e.g. `"test_*"`). Default: none, so
    /// any other name is refused with SQLSTATE 3D000 before the proxy connects upstream. Restricted
    /// roles only ever reach a served database whose policy names them.
    #[serde(default)]
    pub databases: Vec<String>,
    /// `"off"`, `"prefer"` (TLS without certificate check if the server offers it), `"require"` (TLS
    /// without certificate check), `"verify-ca"` (TLS, certificate chain checked against `ca_file` or
    /// the system roots) or `"verify-full"` (chain and host name checked). Default `"prefer"`.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// PEM file with the CA certificates trusted for `verify-ca`/`verify-full` (default: the system roots).
    pub ca_file: Option<PathBuf>,
    /// The login the proxy uses upstream.
    pub user: String,
    /// Its password, written in the file (prefer `password_env`).
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Time limit for connecting and logging in upstream, in seconds. Default 10.
    #[serde(default = "default_upstream_timeout")]
    pub connect_timeout_seconds: u64,
    /// Caches the plans of the clients' unnamed statements on the upstream connection (prepared
    /// there under a digest name, so PostgreSQL's plan cache applies; see README "Plan caching").
    /// Sessions of session mode (except those of application users, whose connections change
    /// with the end user) and of transaction mode. Default `true`.
    #[serde(default = "default_plan_cache")]
    pub plan_cache: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Off,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A PostgreSQL login: user name and password (none for `trust`).
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl UpstreamConfig {
    /// The configured login, with the password read from the file or the environment.
    pub fn login(&self) -> Result<Login> {
        let password = match (&self.password, &self.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(std::env::var(var).with_context(|| {
                format!("[upstream] password_env names `{var}`, which is not set")
            })?),
            (None, None) => None,
        };
        Ok(Login {
            user: self.user.clone(),
            password,
        })
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }
}

fn default_pg_port() -> u16 {
    5432
}

fn default_upstream_timeout() -> u64 {
    10
}

fn default_plan_cache() -> bool {
    true
}
