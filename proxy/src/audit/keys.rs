//! The access log's keys: where they come from (a file or an environment variable, hex text) and how
//! new ones are made (`maschera audit keygen`).
//! Not for: using the keys (see `chain`), or the rest of the configuration.
//!
//! Three keys: the chain secret (32 random bytes; the proxy and the auditor hold it), the checkpoint
//! signing key (ed25519; only the proxy holds it) and its public verification key (anyone may hold it).

use crate::audit::AuditError;
use crate::audit::chain::erase;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use std::path::Path;

/// Where a key is read from: a file wins over the environment variable.
#[derive(Debug, Clone)]
pub struct KeySource<'a> {
    pub what: &'a str,
    pub file: Option<&'a Path>,
    pub env: Option<&'a str>,
}

/// The chain secret, erased when dropped.
pub struct ChainSecret(Vec<u8>);

impl ChainSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ChainSecret {
    fn drop(&mut self) {
        erase(&mut self.0);
    }
}

impl std::fmt::Debug for ChainSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainSecret(..)")
    }
}

/// Reads the hex text of a key from its source; `None` when neither the file nor the variable is set.
fn read_hex(source: &KeySource<'_>) -> Result<Option<Vec<u8>>, AuditError> {
    let bad = |why: String| AuditError::Key {
        what: source.what.to_string(),
        why,
    };
    let text = if let Some(file) = source.file {
        std::fs::read_to_string(file)
            .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?
    } else if let Some(var) = source.env.and_then(|name| std::env::var(name).ok()) {
        var
    } else {
        return Ok(None);
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad("is not hex text".into()))?;
    Ok(Some(bytes))
}

fn missing(source: &KeySource<'_>) -> AuditError {
    let from = match (source.file, source.env) {
        (Some(f), _) => format!("file {}", f.display()),
        (None, Some(v)) => format!("environment variable {v}"),
        (None, None) => "nowhere (no file or variable configured)".into(),
    };
    AuditError::Key {
        what: source.what.to_string(),
        why: format!("not set: looked in {from}"),
    }
}

fn exactly_32(source: &KeySource<'_>, bytes: Vec<u8>) -> Result<[u8; 32], AuditError> {
    let mut bytes = bytes;
    let out: Result<[u8; 32], _> = bytes.as_slice().try_into();
    erase(&mut bytes);
    out.map_err(|_| AuditError::Key {
        what: source.what.to_string(),
        why: "must be 32 bytes (64 hex digits)".into(),
    })
}

/// The chain secret (at least 32 bytes).
pub fn chain_secret(source: &KeySource<'_>) -> Result<ChainSecret, AuditError> {
    let bytes = read_hex(source)?.ok_or_else(|| missing(source))?;
    if bytes.len() < 32 {
        return Err(AuditError::Key {
            what: source.what.to_string(),
            why: "must be at least 32 bytes".into(),
        });
    }
    Ok(ChainSecret(bytes))
}

/// The checkpoint signing key.
pub fn signing_key(source: &KeySource<'_>) -> Result<SigningKey, AuditError> {
    let bytes = read_hex(source)?.ok_or_else(|| missing(source))?;
    let mut secret = exactly_32(source, bytes)?;
    let key = SigningKey::from_bytes(&secret);
    erase(&mut secret);
    Ok(key)
}

/// The checkpoint verification key, if its source is set.
pub fn verifying_key(source: &KeySource<'_>) -> Result<Option<VerifyingKey>, AuditError> {
    let Some(bytes) = read_hex(source)? else {
        return Ok(None);
    };
    let bytes = exactly_32(source, bytes)?;
    VerifyingKey::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| AuditError::Key {
            what: source.what.to_string(),
            why: "is not an ed25519 public key".into(),
        })
}

/// A fresh set of keys, as hex text: (chain secret, signing key, verification key).
pub fn generate() -> (String, String, String) {
    let mut rng = rand::rng();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut signing = [0u8; 32];
    rng.fill_bytes(&mut signing);
    let key = SigningKey::from_bytes(&signing);
    let out = (
        hex::encode(secret),
        hex::encode(signing),
        hex::encode(key.verifying_key().to_bytes()),
    );
    erase(&mut secret);
    erase(&mut signing);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_and_match() {
        let (secret, signing, public) = generate();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{text}\n")).unwrap();
            path
        };
        let (s, k, p) = (
            write("s", &secret),
            write("k", &signing),
            write("p", &public),
        );
        let src = |file| KeySource {
            what: "test key",
            file: Some(file),
            env: None,
        };
        assert_eq!(chain_secret(&src(&s)).unwrap().bytes().len(), 32);
        let signing = signing_key(&src(&k)).unwrap();
        assert_eq!(
            verifying_key(&src(&p)).unwrap(),
            Some(signing.verifying_key())
        );
    }

    #[test]
    fn missing_or_malformed_keys_are_errors_that_name_the_source() {
        let none = KeySource {
            what: "audit key",
            file: None,
            env: Some("MASCHERA_TEST_SURELY_UNSET"),
        };
        let err = chain_secret(&none).unwrap_err().to_string();
        assert!(err.contains("MASCHERA_TEST_SURELY_UNSET"), "{err}");
        assert!(verifying_key(&none).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        let src = KeySource {
            what: "audit key",
            file: Some(&short),
            env: None,
        };
        assert!(
            chain_secret(&src)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(signing_key(&src).is_err());
    }
}
