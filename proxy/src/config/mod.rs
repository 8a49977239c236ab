//! The proxy's configuration file (TOML): what `maschera serve --config FILE` reads.
//! Every option is documented on its field; unknown keys are errors that name the key, and relative
//! paths are relative to the folder of the configuration file.
//! Not for: acting on the options (each module reads the section it needs).

pub mod end_users;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::net::upstream_settings::{UpstreamConfig, UpstreamTlsMode};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on for PostgreSQL clients, e.g. `"0.0.0.0:6432"`.
    pub listen: String,
    /// TLS towards clients.
    #[serde(default)]
    pub tls: ClientTls,
    /// The PostgreSQL server the proxy forwards to.
    pub upstream: UpstreamConfig,
    /// The proxy's own users (SCRAM verifiers, roles, attributes).
    pub users: UsersConfig,
    /// Client authentication: time limit and lockout after failed attempts.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Connection and message limits, shutdown.
    #[serde(default)]
    pub limits: Limits,
    /// Prometheus metrics and health endpoint (off when the section is absent).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Operational logs.
    #[serde(default)]
    pub log: LogConfig,
    /// The policy the proxy enforces in `[upstream] database` (without it and without
    /// `[databases.<name>]` every user gets the databases unchanged).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// More served databases, each with its own policy, credentials and login prefix (see
    /// `routing`). `[upstream] database` with `[policy]` is the first entry.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The access log: see `proxy/src/audit/README.md` (off when the section is absent); statements
    /// of restricted roles and policy reloads are recorded in it.
    #[serde(default)]
    pub audit: Option<crate::audit::AuditConfig>,
    /// Retention on a schedule (off when the section is absent).
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// End users behind application logins: the keys that sign their tokens (see `end_user`; off
    /// when the section is absent).
    #[serde(default)]
    pub end_users: Option<crate::config::end_users::EndUserConfig>,
    /// Session or transaction pooling of upstream connections (see `pool::config`).
    #[serde(default)]
    pub pool: crate::pool::PoolConfig,
}

/// `[tls]`: TLS towards clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// `"required"`: plaintext clients are refused (SQLSTATE 28000); `"optional"`: clients choose;
    /// `"off"`: SSLRequest is answered `N` and direct TLS is refused. Default `"off"`.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM file with the certificate chain (leaf first). Required unless `mode = "off"`.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Required unless `mode = "off"`.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    Required,
    Optional,
    #[default]
    Off,
}

/// `[users]`: the proxy's users file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    /// TOML file written by `maschera user add`.
    pub file: PathBuf,
}

/// `[auth]`: client authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Seconds a client has from connecting to being authenticated; then it is dropped. Default 10.
    #[serde(default = "default_auth_timeout")]
    pub timeout_seconds: u64,
    /// Failed logins allowed per user and per client address within `failure_window_seconds` before
    /// further attempts are refused; 0 turns the protection off. Default 5.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Window in which failures are counted, in seconds. Default 300.
    #[serde(default = "default_failure_window")]
    pub failure_window_seconds: u64,
    /// How long a user or address stays locked, in seconds. Default 300.
    #[serde(default = "default_lockout")]
    pub lockout_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: default_auth_timeout(),
            max_failures: default_max_failures(),
            failure_window_seconds: default_failure_window(),
            lockout_seconds: default_lockout(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client connections served at once; more are refused with SQLSTATE 53300. Default 1000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest message a client may send, in bytes (a bigger one gets SQLSTATE 08P01 and the
    /// connection closes). COPY sends data in many small messages, so this bounds single
    /// statements and parameter sets. Default 16777216 (16 MiB).
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// On SIGTERM/SIGINT, seconds running sessions get to finish before the proxy exits. Default 30.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_seconds: u64,
    /// Threads serving sessions, each session staying on one of them. Default 0: half the cores,
    /// at least one.
    #[serde(default)]
    pub worker_threads: usize,
    /// Sessions one user may hold at once; more are refused at login with SQLSTATE 53300, before
    /// PostgreSQL is asked. 0: no limit. Default: half of the sessions PostgreSQL accepts from
    /// ordinary logins (`max_connections - superuser_reserved_connections`, read at start).
    pub max_sessions_per_user: Option<usize>,
    /// Per-user exceptions to `max_sessions_per_user` (`[limits.user_max_sessions]`, user name =
    /// sessions, 0: no limit), e.g. for an application's service login.
    #[serde(default)]
    pub user_max_sessions: std::collections::BTreeMap<String, usize>,
    /// Sessions all users of one role may hold at once (53300 beyond). 0: no limit. Default: three
    /// quarters of the sessions PostgreSQL accepts from ordinary logins.
    pub max_sessions_per_role: Option<usize>,
    /// Statements (Query and Parse messages) one user may start per second, over all its sessions,
    /// with bursts up to the same number; more are refused with SQLSTATE 53300. Default 0: no limit.
    #[serde(default)]
    pub max_statements_per_second_per_user: u32,
    /// Bounds on the work one message asks of the parser, checked before it is parsed, for every
    /// role: beyond them a statement is refused with 54000 (statements, tokens) or 54001 (the rest).
    /// Statements in one message. Default 10000.
    #[serde(default = "default_max_statements")]
    pub max_statements: usize,
    /// Tokens in one message. Default 1000000.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// The longest chain of operators in one expression (between commas; big IN lists and bulk
    /// VALUES are flat). Default 2000.
    #[serde(default = "default_max_operators")]
    pub max_operators: usize,
    /// UNION, EXCEPT and INTERSECT in one statement. Default 500.
    #[serde(default = "default_max_set_operations")]
    pub max_set_operations: usize,
    /// Named prepared statements one client session may hold at once (each costs the proxy about
    /// 1.5 KB and the backend a plan); a Parse of one more is refused with 54000 until the client
    /// closes some. 0: no bound. Default 10000.
    #[serde(default = "default_max_prepared_statements")]
    pub max_prepared_statements: usize,
    /// Depth of parentheses in one statement. Default 64.
    #[serde(default = "default_max_nesting")]
    pub max_nesting: usize,
    /// Threads that parse and rewrite statements the rewrite cache does not hold (off the session
    /// threads). Default 0: as many as cores, at least 2.
    #[serde(default)]
    pub parse_threads: usize,
    /// Parse threads one user's sessions may occupy at once. Default 0: half of them, at least 1.
    #[serde(default)]
    pub parse_threads_per_user: usize,
}

impl Limits {
    /// The parser bounds of this section.
    pub fn parse_limits(&self) -> policy::rewrite::limits::Limits {
        policy::rewrite::limits::Limits {
            max_statements: self.max_statements,
            max_tokens: self.max_tokens,
            max_operators: self.max_operators,
            max_set_operations: self.max_set_operations,
            max_nesting: self.max_nesting,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_frame_bytes: default_max_frame(),
            shutdown_timeout_seconds: default_shutdown_timeout(),
            worker_threads: 0,
            max_sessions_per_user: None,
            user_max_sessions: Default::default(),
            max_sessions_per_role: None,
            max_statements_per_second_per_user: 0,
            max_statements: default_max_statements(),
            max_prepared_statements: default_max_prepared_statements(),
            max_tokens: default_max_tokens(),
            max_operators: default_max_operators(),
            max_set_operations: default_max_set_operations(),
            max_nesting: default_max_nesting(),
            parse_threads: 0,
            parse_threads_per_user: 0,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus) and `/health`, e.g. `"127.0.0.1:9187"`.
    pub listen: String,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` or `"json"` (one object per line). Default `"text"`; `--log-format` overrides it.
    /// The level comes from `RUST_LOG` (default `info`).
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[policy]`: the policy enforced on every session (see `enforce` and `policy_state`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy file (TOML, see policy/README.md). Reloaded on SIGHUP and when it changes.
    pub file: PathBuf,
    /// The logins file `maschera policy apply --credentials FILE` wrote (the upstream login of each
    /// restricted role). Reloaded with the policy.
    pub credentials: PathBuf,
    /// How often the proxy looks whether the policy or credentials file changed, in seconds; 0 turns
    /// the polling off (SIGHUP still reloads). Default 2.
    #[serde(default = "default_policy_poll")]
    pub poll_seconds: u64,
    /// The prefix `maschera policy apply --login-prefix` gave the role logins; default `maschera_`.
    #[serde(default)]
    pub login_prefix: String,
}

/// `[databases.<name>]`: another database the proxy serves with its own policy. PostgreSQL roles are
/// shared by the databases of a cluster, so each served database of one cluster needs its own
/// `login_prefix` (and `maschera policy apply --login-prefix` with the same value).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The policy file.
    pub policy: PathBuf,
    /// The logins file `maschera policy apply --credentials FILE` wrote for this database.
    pub credentials: PathBuf,
    /// The prefix of the role logins, e.g. `"maschera_crm2_"`; default `maschera_`.
    #[serde(default)]
    pub login_prefix: String,
    /// As `[policy] poll_seconds`. Default 2.
    #[serde(default = "default_policy_poll")]
    pub poll_seconds: u64,
}

/// `[retention]`: the proxy applies the policy's retention rules on a schedule, as `maschera retention
/// run` does, over the `[upstream]` login (which must be allowed to delete and update the tables: the
/// owner account that also recreates the views after a schema change).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between runs. Default 86400 (daily).
    #[serde(default = "default_retention_interval")]
    pub interval_seconds: u64,
    /// Time of day (UTC, `"HH:MM"`) of the first run, e.g. `"03:00"`; the runs then follow every
    /// `interval_seconds`. Without it the first run is one interval after the proxy starts.
    pub at: Option<String>,
    /// The policy file with the retention rules, read again at every run. Default: `[policy] file`.
    pub policy: Option<PathBuf>,
    /// Rows of an expired table handled per transaction (their dependants go in the same one).
    /// Default 1000.
    #[serde(default = "default_retention_batch")]
    pub batch: u32,
}

impl RetentionConfig {
    /// Seconds after midnight UTC of `at`, if given.
    pub fn at_seconds(&self) -> Result<Option<u64>> {
        let Some(at) = &self.at else {
            return Ok(None);
        };
        let parsed = at
            .split_once(':')
            .and_then(|(h, m)| Some((h.parse::<u64>().ok()?, m.parse::<u64>().ok()?)))
            .filter(|&(h, m)| h < 24 && m < 60);
        match parsed {
            Some((h, m)) => Ok(Some(h * 3600 + m * 60)),
            None => bail!("[retention] at = {at:?} is not a time of day HH:MM (UTC)"),
        }
    }
}

fn default_retention_interval() -> u64 {
    86400
}
fn default_retention_batch() -> u32 {
    1000
}
fn default_policy_poll() -> u64 {
    2
}
fn default_auth_timeout() -> u64 {
    10
}
fn default_max_failures() -> u32 {
    5
}
fn default_failure_window() -> u64 {
    300
}
fn default_lockout() -> u64 {
    300
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_frame() -> usize {
    16 * 1024 * 1024
}
fn default_max_prepared_statements() -> usize {
    10_000
}

fn default_max_statements() -> usize {
    policy::rewrite::limits::Limits::DEFAULT.max_statements
}
fn default_max_tokens() -> usize {
    policy::rewrite::limits::Limits::DEFAULT.max_tokens
}
fn default_max_operators() -> usize {
    policy::rewrite::limits::Limits::DEFAULT.max_operators
}
fn default_max_set_operations() -> usize {
    policy::rewrite::limits::Limits::DEFAULT.max_set_operations
}
fn default_max_nesting() -> usize {
    policy::rewrite::limits::Limits::DEFAULT.max_nesting
}
fn default_shutdown_timeout() -> u64 {
    30
}

impl Config {
    /// Reads, checks and resolves a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("in configuration {}", path.display()))
    }

    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        config.resolve_paths(base);
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.tls.cert.iter_mut().for_each(resolve);
        self.tls.key.iter_mut().for_each(resolve);
        self.upstream.ca_file.iter_mut().for_each(resolve);
        resolve(&mut self.users.file);
        if let Some(policy) = &mut self.policy {
            resolve(&mut policy.file);
            resolve(&mut policy.credentials);
        }
        for database in self.databases.values_mut() {
            resolve(&mut database.policy);
            resolve(&mut database.credentials);
        }
        if let Some(retention) = &mut self.retention {
            retention.policy.iter_mut().for_each(resolve);
        }
        if let Some(end_users) = &mut self.end_users {
            end_users.resolve_paths(base);
        }
        if let Some(audit) = &mut self.audit {
            resolve(&mut audit.dir);
            let key_files = [
                &mut audit.key_file,
                &mut audit.signing_key_file,
                &mut audit.public_key_file,
            ];
            key_files.into_iter().flatten().for_each(resolve);
        }
    }

    fn check(&self) -> Result<()> {
        if let Some(end_users) = &self.end_users {
            end_users.check()?;
        }
        if self.tls.mode != ClientTlsMode::Off
            && (self.tls.cert.is_none() || self.tls.key.is_none())
        {
            bail!(
                "[tls] mode = {:?} needs both `cert` and `key`",
                self.tls.mode
            );
        }
        if self.upstream.password.is_some() && self.upstream.password_env.is_some() {
            bail!("[upstream] give either `password` or `password_env`, not both");
        }
        if self.limits.max_connections == 0 {
            bail!("[limits] max_connections must be at least 1");
        }
        if self.limits.max_frame_bytes < 1024 {
            bail!("[limits] max_frame_bytes must be at least 1024");
        }
        self.check_databases()?;
        self.pool.check().map_err(anyhow::Error::msg)?;
        if let Err(err) = self.limits.parse_limits().validate() {
            bail!("[limits] {err}");
        }
        if let Some(retention) = &self.retention {
            if retention.interval_seconds == 0 || retention.batch == 0 {
                bail!("[retention] interval_seconds and batch must be at least 1");
            }
            if retention.policy.is_none() && self.policy.is_none() {
                bail!(
                    "[retention] needs `policy` (the policy file) when there is no [policy] section"
                );
            }
            retention.at_seconds()?;
        }
        Ok(())
    }

    /// The served databases, each with its policy: `[upstream] database` with `[policy]`, then
    /// `[databases.<name>]`.
    pub fn served_databases(&self) -> Vec<(String, PolicyConfig)> {
        let default = self
            .policy
            .iter()
            .map(|policy| (self.upstream.database.clone(), policy.clone()));
        let more = self.databases.iter().map(|(name, db)| {
            let policy = PolicyConfig {
                file: db.policy.clone(),
                credentials: db.credentials.clone(),
                poll_seconds: db.poll_seconds,
                login_prefix: db.login_prefix.clone(),
            };
            (name.clone(), policy)
        });
        default.chain(more).collect()
    }

    fn check_databases(&self) -> Result<()> {
        if self.policy.is_some() && self.databases.contains_key(&self.upstream.database) {
            bail!(
                "database {:?} has a policy twice: in [policy] (for [upstream] database) and in [databases.{}]; keep one",
                self.upstream.database,
                self.upstream.database
            );
        }
        let mut prefixes: BTreeMap<&str, &str> = BTreeMap::new();
        let served = self.served_databases();
        for (name, policy) in &served {
            if name.is_empty() {
                bail!("[databases] a database name is empty");
            }
            let prefix = match policy.login_prefix.as_str() {
                "" => policy::model::OBJECT_PREFIX,
                prefix => prefix,
            };
            if let Some(other) = prefixes.insert(prefix, name) {
                bail!(
                    "databases {other:?} and {name:?} have the same login prefix {prefix:?}: PostgreSQL \
                     roles are shared by all databases of a cluster, so give each its own `login_prefix` \
                     (and apply its policy with the same --login-prefix)"
                );
            }
        }
        if let Some(bad) = self
            .upstream
            .databases
            .iter()
            .find(|p| p.is_empty() || p.strip_suffix('*').unwrap_or(p).contains('*'))
        {
            bail!("[upstream] databases: {bad:?} is not a database name, \"*\" or \"prefix*\"");
        }
        Ok(())
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth.timeout_seconds)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.shutdown_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:6432"
[upstream]
host = "127.0.0.1"
database = "crm"
user = "maschera"
password = "secret"
[users]
file = "users.toml"
"#;

    #[test]
    fn minimal_file_gets_defaults_and_resolved_paths() {
        let config = Config::parse(MINIMAL, Path::new("/etc/maschera")).unwrap();
        assert_eq!(config.upstream.port, 5432);
        assert_eq!(config.upstream.tls, UpstreamTlsMode::Prefer);
        assert_eq!(config.tls.mode, ClientTlsMode::Off);
        assert_eq!(config.users.file, PathBuf::from("/etc/maschera/users.toml"));
        assert_eq!(config.limits.max_frame_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn audit_section_is_the_audit_modules_own_with_resolved_paths() {
        let text = format!("{MINIMAL}\n[audit]\ndir = \"log\"\nkey_file = \"keys/chain\"\n");
        let config = Config::parse(&text, Path::new("/etc/maschera")).unwrap();
        let audit = config.audit.unwrap();
        assert_eq!(audit.dir, PathBuf::from("/etc/maschera/log"));
        assert_eq!(
            audit.key_file,
            Some(PathBuf::from("/etc/maschera/keys/chain"))
        );
        // A setting that is no longer used still loads (the log warns when it opens).
        let older = format!("{MINIMAL}\n[audit]\ndir = \"log\"\ngroup_commit_us = 500\n");
        let older = Config::parse(&older, Path::new("/"))
            .unwrap()
            .audit
            .unwrap();
        assert_eq!(older.group_commit_us, Some(500));
        let typo = format!("{MINIMAL}\n[audit]\ndir = \"log\"\ndurabilty = \"sync\"\n");
        let err = Config::parse(&typo, Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("durabilty"), "{err:#}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = format!("{MINIMAL}\n[limits]\nmax_conections = 3\n");
        let err = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("max_conections"), "{err:#}");
    }

    #[test]
    fn retention_section_defaults_resolves_and_checks() {
        let text = format!("{MINIMAL}\n[retention]\npolicy = \"policy.toml\"\nat = \"03:30\"\n");
        let retention = Config::parse(&text, Path::new("/etc/maschera"))
            .unwrap()
            .retention
            .unwrap();
        assert_eq!(retention.interval_seconds, 86400);
        assert_eq!(retention.batch, 1000);
        assert_eq!(retention.at_seconds().unwrap(), Some(3 * 3600 + 30 * 60));
        assert_eq!(
            retention.policy,
            Some(PathBuf::from("/etc/maschera/policy.toml"))
        );
        for (bad, names) in [
            ("at = \"25:00\"", "HH:MM"),
            ("interval_seconds = 0", "interval_seconds"),
            ("every = 3", "every"),
        ] {
            let text = format!("{MINIMAL}\n[retention]\npolicy = \"p.toml\"\n{bad}\n");
            let err = Config::parse(&text, Path::new("/")).unwrap_err();
            assert!(format!("{err:#}").contains(names), "{bad}: {err:#}");
        }
        let no_policy = format!("{MINIMAL}\n[retention]\n");
        let err = Config::parse(&no_policy, Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("policy"), "{err:#}");
    }

    #[test]
    fn tls_without_certificate_is_refused() {
        let text = format!("{MINIMAL}\n[tls]\nmode = \"required\"\n");
        let err = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("cert"), "{err:#}");
    }

    #[test]
    fn served_databases_are_the_default_policy_and_the_databases_sections() {
        let minimal = MINIMAL.replace(
            "database = \"crm\"",
            "database = \"crm\"\ndatabases = [\"postgres\", \"test_*\"]",
        );
        let text = format!(
            "{minimal}[policy]\nfile = \"p.toml\"\ncredentials = \"l.toml\"\n\
             [databases.crm2]\npolicy = \"p2.toml\"\ncredentials = \"l2.toml\"\nlogin_prefix = \"maschera_crm2_\"\n"
        );
        let config = Config::parse(&text, Path::new("/etc/maschera")).unwrap();
        assert_eq!(config.upstream.databases, ["postgres", "test_*"]);
        let served = config.served_databases();
        let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["crm", "crm2"]);
        assert_eq!(served[1].1.file, Path::new("/etc/maschera/p2.toml"));
        assert_eq!(served[1].1.credentials, Path::new("/etc/maschera/l2.toml"));
        assert_eq!(served[1].1.login_prefix, "maschera_crm2_");
        assert_eq!(served[1].1.poll_seconds, 2);
        // Today's files: one served database, no other allowed.
        let config = Config::parse(MINIMAL, Path::new("/")).unwrap();
        assert!(config.served_databases().is_empty() && config.upstream.databases.is_empty());
    }

    #[test]
    fn two_served_databases_need_two_login_prefixes() {
        let section = |name: &str, prefix: &str| {
            format!("[databases.{name}]\npolicy = \"p.toml\"\ncredentials = \"l.toml\"\n{prefix}")
        };
        let text = format!(
            "{MINIMAL}[policy]\nfile = \"p.toml\"\ncredentials = \"l.toml\"\n{}",
            section("crm2", "")
        );
        let err = format!("{:#}", Config::parse(&text, Path::new("/")).unwrap_err());
        assert!(err.contains("same login prefix \"maschera_\""), "{err}");
        let text = format!(
            "{MINIMAL}[policy]\nfile = \"p.toml\"\ncredentials = \"l.toml\"\n{}",
            section("crm", "login_prefix = \"m2_\"")
        );
        let err = format!("{:#}", Config::parse(&text, Path::new("/")).unwrap_err());
        assert!(err.contains("has a policy twice"), "{err}");
        let text = MINIMAL.replace(
            "database = \"crm\"",
            "database = \"crm\"\ndatabases = [\"a*b\"]",
        );
        let err = format!("{:#}", Config::parse(&text, Path::new("/")).unwrap_err());
        assert!(err.contains("\"a*b\" is not a database name"), "{err}");
    }
}
