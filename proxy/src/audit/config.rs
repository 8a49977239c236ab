//! The `[audit]` section of the proxy's configuration: where the log goes, how durable it is, when it
//! rotates and seals itself, where its keys come from, and the optional central sinks.
//! Not for: the rest of the proxy's configuration (the main config embeds this struct).

#![allow(unsafe_code, reason = "libc::gethostname for the log's host name")]

use crate::audit::AuditError;
use crate::audit::keys::KeySource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `record` returns once the record is on stable storage (fsync, group commit across sessions).
    #[default]
    Sync,
    /// `record` returns once the record is written to the file; fsync every `batch_interval_ms`.
    Batch,
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Folder of the log files (`audit-<first seq>.jsonl`); created if missing.
    pub dir: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    /// With `durability = "batch"`: how often the file is fsynced.
    #[serde(default = "defaults::batch_interval_ms")]
    pub batch_interval_ms: u64,
    /// No longer used (a warning says so): a group is committed when a session waits for one of its
    /// records, else after `batch_interval_ms`. Accepted so that older configurations still load.
    #[serde(default)]
    pub group_commit_us: Option<u64>,
    /// Start a new file when the current one reaches this size.
    #[serde(default = "defaults::rotate_bytes")]
    pub rotate_bytes: u64,
    /// Start a new file when the current one is this old.
    #[serde(default = "defaults::rotate_seconds")]
    pub rotate_seconds: u64,
    /// Write a signed checkpoint at least this often (0: only at rotation and shutdown) ...
    #[serde(default = "defaults::checkpoint_seconds")]
    pub checkpoint_seconds: u64,
    /// ... and after this many records (0: not by count).
    #[serde(default = "defaults::checkpoint_records")]
    pub checkpoint_records: u64,
    /// Environment variable holding the chain secret (hex), used when `key_file` is not set.
    #[serde(default = "defaults::key_env")]
    pub key_env: String,
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the checkpoint signing key (hex), used when `signing_key_file` is not set.
    #[serde(default = "defaults::signing_key_env")]
    pub signing_key_env: String,
    pub signing_key_file: Option<PathBuf>,
    /// The public verification key, for `maschera audit verify --config` (the proxy does not need it).
    pub public_key_file: Option<PathBuf>,
    /// Name of this proxy instance in the records; defaults to the host name.
    pub instance: Option<String>,
    /// Optional central store: a PostgreSQL connection string (a separate audit database).
    pub postgres_sink: Option<String>,
    /// Table of the central store, created if missing.
    #[serde(default = "defaults::postgres_table")]
    pub postgres_table: String,
    /// Optional syslog (RFC 5424) output: `udp://host:port` or `tcp://host:port`.
    pub syslog: Option<String>,
}

mod defaults {
    pub fn batch_interval_ms() -> u64 {
        200
    }

    pub fn rotate_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn rotate_seconds() -> u64 {
        24 * 3600
    }
    pub fn checkpoint_seconds() -> u64 {
        60
    }
    pub fn checkpoint_records() -> u64 {
        10_000
    }
    pub fn key_env() -> String {
        "MASCHERA_AUDIT_KEY".into()
    }
    pub fn signing_key_env() -> String {
        "MASCHERA_AUDIT_SIGNING_KEY".into()
    }
    pub fn postgres_table() -> String {
        "maschera_audit".into()
    }
}

/// The environment variable an auditor may set instead of a public key file.
pub const PUBLIC_KEY_ENV: &str = "MASCHERA_AUDIT_PUBLIC_KEY";

impl AuditConfig {
    /// `batch_interval_ms` as a duration (at least 1 ms).
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms.max(1))
    }

    /// A configuration with every default, writing to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durability: Durability::default(),
            batch_interval_ms: defaults::batch_interval_ms(),
            group_commit_us: None,
            rotate_bytes: defaults::rotate_bytes(),
            rotate_seconds: defaults::rotate_seconds(),
            checkpoint_seconds: defaults::checkpoint_seconds(),
            checkpoint_records: defaults::checkpoint_records(),
            key_env: defaults::key_env(),
            key_file: None,
            signing_key_env: defaults::signing_key_env(),
            signing_key_file: None,
            public_key_file: None,
            instance: None,
            postgres_sink: None,
            postgres_table: defaults::postgres_table(),
            syslog: None,
        }
    }

    /// Reads the `[audit]` section of a proxy configuration file; relative paths are taken from the
    /// file's folder.
    pub fn from_proxy_config(path: &Path) -> Result<Self, AuditError> {
        let bad = |why: String| AuditError::Config(format!("{}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let section = table
            .get("audit")
            .ok_or_else(|| bad("no [audit] section".into()))?;
        let mut config: AuditConfig = section
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            Some(&mut config.dir),
            config.key_file.as_mut(),
            config.signing_key_file.as_mut(),
            config.public_key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    pub fn chain_secret_source(&self) -> KeySource<'_> {
        KeySource {
            what: "audit chain secret",
            file: self.key_file.as_deref(),
            env: Some(&self.key_env),
        }
    }

    pub fn signing_key_source(&self) -> KeySource<'_> {
        KeySource {
            what: "audit signing key",
            file: self.signing_key_file.as_deref(),
            env: Some(&self.signing_key_env),
        }
    }

    pub fn public_key_source(&self) -> KeySource<'_> {
        KeySource {
            what: "audit public key",
            file: self.public_key_file.as_deref(),
            env: Some(PUBLIC_KEY_ENV),
        }
    }

    /// The instance name: configured, else the host name.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(host_name)
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok && len > 0 {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        "maschera".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_section_is_read_with_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maschera.toml");
        std::fs::write(
            &path,
            "[listen]\naddr = \"x\"\n[audit]\ndir = \"log\"\ndurability = \"batch\"\nkey_file = \"k\"\n",
        )
        .unwrap();
        let config = AuditConfig::from_proxy_config(&path).unwrap();
        assert_eq!(config.dir, dir.path().join("log"));
        assert_eq!(config.durability, Durability::Batch);
        assert_eq!(config.key_file, Some(dir.path().join("k")));
        assert_eq!(config.checkpoint_seconds, 60);
        std::fs::write(&path, "[audit]\ndir = \"log\"\ndurabilty = \"sync\"\n").unwrap();
        let err = AuditConfig::from_proxy_config(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("durabilty"), "unknown keys are refused: {err}");
    }
}
