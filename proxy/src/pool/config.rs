//! `[pool]` in the configuration file and `pool_mode` in the users file: whether a client session
//! keeps one upstream connection for its whole life (`session`, the default) or takes one per
//! transaction from a pool (`transaction`), and the pools' sizes and time limits.
//! Not for: the pools themselves (see `pool`).

use serde::Deserialize;
use std::time::Duration;

/// How client sessions get their upstream connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// One upstream connection per client session, for its whole life.
    #[default]
    Session,
    /// An upstream connection per transaction, from the pool of the session's key.
    Transaction,
}

/// `[pool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// `"session"` (default) or `"transaction"`; a user's `pool_mode` in the users file overrides
    /// it.
    #[serde(default)]
    pub mode: PoolMode,
    /// Upstream connections of one pool (one upstream login, database and set of startup
    /// parameters, the user's attributes among them). Default 20.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Idle connections a pool keeps when it closes those idle for longer than
    /// `idle_timeout_seconds`. Default 0.
    #[serde(default)]
    pub min_idle: usize,
    /// Seconds an idle pooled connection stays open. Default 600.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Seconds a client waits for a connection of its pool; then its session ends with 53300 and a
    /// message that says so. Default 30 (pgbouncer's `query_wait_timeout` is 120).
    #[serde(default = "default_acquire_timeout")]
    pub acquire_timeout_seconds: u64,
    /// Upstream connections of all pools of one login together (open, idle or in use). 0 (the
    /// default): no limit beyond `size` per pool.
    #[serde(default)]
    pub max_per_login: usize,
    /// Seconds a client of transaction mode may hold its connection inside a transaction without a
    /// statement; then its session ends with FATAL 25P03. 0 (the default): no limit.
    #[serde(default)]
    pub idle_in_transaction_timeout_seconds: u64,
    /// Prepared statements one upstream connection holds at most; preparing one more closes the
    /// one used least recently (a client that needs it again has it prepared again). 0: no limit.
    /// Default 200.
    #[serde(default = "default_statements")]
    pub prepared_statements_per_connection: usize,
}

fn default_size() -> usize {
    20
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_acquire_timeout() -> u64 {
    30
}
fn default_statements() -> usize {
    200
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::default(),
            size: default_size(),
            min_idle: 0,
            idle_timeout_seconds: default_idle_timeout(),
            acquire_timeout_seconds: default_acquire_timeout(),
            max_per_login: 0,
            idle_in_transaction_timeout_seconds: 0,
            prepared_statements_per_connection: default_statements(),
        }
    }
}

impl PoolConfig {
    /// The rules between the settings; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("[pool] size must be at least 1".into());
        }
        if self.min_idle > self.size {
            return Err("[pool] min_idle must not exceed size".into());
        }
        if self.acquire_timeout_seconds == 0 {
            return Err("[pool] acquire_timeout_seconds must be at least 1".into());
        }
        if self.max_per_login != 0 && self.max_per_login < self.size {
            return Err("[pool] max_per_login must be 0 (no limit) or at least size".into());
        }
        Ok(())
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_seconds)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// `None`: no limit.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        (self.idle_in_transaction_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.idle_in_transaction_timeout_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_rules_between_settings() {
        let config: PoolConfig = toml::from_str("").unwrap();
        assert_eq!(config.mode, PoolMode::Session);
        assert_eq!(config.size, 20);
        assert_eq!(config.prepared_statements_per_connection, 200);
        assert_eq!(config.check(), Ok(()));
        let config: PoolConfig = toml::from_str("mode = \"transaction\"\nsize = 2").unwrap();
        assert_eq!(config.mode, PoolMode::Transaction);
        let too_many_idle: PoolConfig = toml::from_str("size = 2\nmin_idle = 3").unwrap();
        assert!(too_many_idle.check().unwrap_err().contains("min_idle"));
        assert!(toml::from_str::<PoolConfig>("mode = \"statement\"").is_err());
        assert!(toml::from_str::<PoolConfig>("sise = 3").is_err());
    }
}
