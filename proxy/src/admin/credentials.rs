//! The role-logins credentials file that `maschera policy apply` writes and the proxy reads: for each
//! restricted role of the policy, the PostgreSQL login (`maschera_<role>`) and its generated password.
//! TOML, mode 0600:
//! ```toml
//! [logins.sales]
//! user = "maschera_sales"
//! password = "..."
//! ```
//! Not for: the proxy's own users (see `users`), which never hold passwords.

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One upstream login of a policy role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// The credentials file: logins by policy role name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default)]
    pub logins: BTreeMap<String, Login>,
}

impl Credentials {
    /// Reads the file; a missing file is an empty set of logins.
    pub fn load(path: &Path) -> Result<Credentials> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("reading credentials file {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(err) => {
                Err(err).with_context(|| format!("reading credentials file {}", path.display()))
            }
        }
    }

    /// The login of policy role `role`.
    pub fn login(&self, role: &str) -> Option<&Login> {
        self.logins.get(role)
    }

    /// Writes the file atomically (a temporary file renamed over it), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# Logins of the policy roles, written by `maschera policy apply`. Keep secret (mode 0600).\n{}",
            toml::to_string(self)?
        );
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".credentials-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(path)
            .with_context(|| format!("writing credentials file {}", path.display()))?;
        Ok(())
    }
}

/// A new strong password: 32 characters from 62 letters and digits (about 190 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_credentials_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logins.toml");
        assert_eq!(Credentials::load(&path).unwrap(), Credentials::default());
        let mut creds = Credentials::default();
        creds.logins.insert(
            "sales".into(),
            Login {
                user: "maschera_sales".into(),
                password: generate_password(),
            },
        );
        creds.save(&path).unwrap();
        assert_eq!(Credentials::load(&path).unwrap(), creds);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("[logins.sales]")
        );
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, generate_password());
    }
}
