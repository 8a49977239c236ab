//! `[end_users]` of the configuration file: the keys that sign end-user tokens, the issuer and
//! audience they must name, how long they may live and how many bad ones a client may send.
//! Not for: verifying tokens (see `end_user::token`) or an application's bounds (see
//! `users::application`).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[end_users]`: how the proxy verifies the tokens application users send in
/// `SET maschera.end_user` (see the README's "End users behind one application login").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUserConfig {
    /// The keys that may sign tokens, chosen by the token's `kid` (several, so keys rotate).
    pub keys: Vec<KeyConfig>,
    /// The `iss` every token must carry (unchecked when absent).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` every token must carry (unchecked when absent).
    #[serde(default)]
    pub audience: Option<String>,
    /// The longest a token may live: `exp` at most this many seconds after `iat` (or after now when
    /// the token has no `iat`). Default 3600.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The longest token accepted, in bytes. Default 8192.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Bad tokens one application user may send from one client address within
    /// `failure_window_seconds`; beyond them every token is refused (SQLSTATE 53300) until the
    /// window has passed. Apart from the login lockout. 0: no limit. Default 20.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Window in which bad tokens are counted, in seconds. Default 60.
    #[serde(default = "default_failure_window")]
    pub failure_window_seconds: u64,
}

/// One key of `[[end_users.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The `kid` tokens name this key by.
    pub kid: String,
    /// `"EdDSA"` (Ed25519), `"ES256"`, `"RS256"` (with `public_key`) or `"HS256"` (with `secret_env`).
    pub algorithm: KeyAlgorithm,
    /// PEM file of the public key (EdDSA, ES256, RS256).
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// Name of the environment variable holding the shared secret (HS256).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// PEM file (PKCS#8) of the private key: only `maschera end-user token` reads it, to sign
    /// tokens for scripts, tests and the demo; the proxy never needs it.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyAlgorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

fn default_max_lifetime() -> u64 {
    3600
}
fn default_leeway() -> u64 {
    30
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_max_failures() -> u32 {
    20
}
fn default_failure_window() -> u64 {
    60
}

impl EndUserConfig {
    /// Resolves relative key files against the configuration file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for key in &mut self.keys {
            for path in [&mut key.public_key, &mut key.private_key]
                .into_iter()
                .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }

    /// The rules `Config::load` checks: each key has what its algorithm needs, `kid`s are unique.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut kids = std::collections::BTreeSet::new();
        if self.keys.is_empty() {
            anyhow::bail!("[end_users] keys: at least one key is needed");
        }
        for key in &self.keys {
            if !kids.insert(key.kid.as_str()) {
                anyhow::bail!("[end_users] keys: kid {:?} is given twice", key.kid);
            }
            let hmac = key.algorithm == KeyAlgorithm::HS256;
            if hmac != key.secret_env.is_some() || hmac == key.public_key.is_some() {
                anyhow::bail!(
                    "[end_users] key {:?}: HS256 takes secret_env, EdDSA, ES256 and RS256 take public_key",
                    key.kid
                );
            }
        }
        if self.max_lifetime_seconds == 0 || self.max_token_bytes == 0 {
            anyhow::bail!("[end_users] max_lifetime_seconds and max_token_bytes must be above 0");
        }
        Ok(())
    }
}
