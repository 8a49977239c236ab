//! The proxy's users file: who may log in, with which role and attributes, and their SCRAM verifier.
//! Never a password. Not for: authentication itself (see `scram`) or lockout (see `lockout`).
//!
//! The file is TOML, one table per user:
//! ```toml
//! # Maschera users: SCRAM verifiers only, never passwords.
//! [users.sam]
//! role = "sales"
//! attributes = { region = "north" }
//! verifier = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
//! ```
//! Unknown keys are errors. Saving is atomic (temporary file in the same folder, fsync, rename) and
//! leaves the file readable by its owner only (mode 0600).

pub mod application;

use crate::net::scram::Verifier;
use crate::pool::PoolMode;
use application::Application;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// First line of every saved users file.
const HEADER: &str = "# Maschera users: SCRAM verifiers only, never passwords.\n";
/// PostgreSQL truncates identifiers longer than this; a longer user name could never log in.
const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A role of the policy, e.g. `sales`.
    pub role: String,
    /// Attributes the row filters read, e.g. `region = "north"`.
    pub attributes: BTreeMap<String, String>,
    pub verifier: Verifier,
}

/// The users file loaded in memory.
#[derive(Debug, Clone, Default)]
pub struct UserStore {
    users: BTreeMap<String, User>,
    /// The users that are applications (see `application`), by name.
    applications: BTreeMap<String, Application>,
    /// Users whose `pool_mode` overrides `[pool] mode`.
    pool_modes: BTreeMap<String, PoolMode>,
}

#[derive(Debug, Error)]
pub enum UsersError {
    #[error("users file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("users file {path}: user {user:?}: {reason}")]
    InvalidUser {
        path: PathBuf,
        user: String,
        reason: String,
    },
}

/// A user entry that breaks a rule, before it is tied to a file.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidUser(pub String);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    /// Required, except for an application user (empty: it has no role of its own).
    #[serde(default)]
    role: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    verifier: String,
    #[serde(default)]
    application: Option<Application>,
    /// `"session"` or `"transaction"`: overrides `[pool] mode` for this user.
    #[serde(default)]
    pool_mode: Option<PoolMode>,
}

impl UserStore {
    /// Reads and checks the users file; a missing file is an error.
    pub fn load(path: &Path) -> anyhow::Result<UserStore> {
        Ok(Self::read(path)?)
    }

    /// Like [`UserStore::load`], but a file that does not exist yet gives an empty store (for
    /// `maschera user add`, which creates the file).
    pub fn load_or_empty(path: &Path) -> Result<UserStore, UsersError> {
        match std::fs::metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(UserStore::default()),
            _ => Self::read(path),
        }
    }

    fn read(path: &Path) -> Result<UserStore, UsersError> {
        let io = |source| UsersError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text).map_err(|err| err.in_file(path))
    }

    /// Parses the text of a users file.
    fn parse(text: &str) -> Result<UserStore, ParseError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|err| ParseError::Syntax(err.to_string()))?;
        let mut store = UserStore::default();
        for (name, entry) in file.users {
            let invalid = |reason: String| ParseError::User {
                user: name.clone(),
                reason,
            };
            let verifier =
                Verifier::parse(&entry.verifier).map_err(|err| invalid(err.to_string()))?;
            let user = User {
                name: name.clone(),
                role: entry.role,
                attributes: entry.attributes,
                verifier,
            };
            check_user(&user, entry.application.as_ref()).map_err(|err| invalid(err.0))?;
            if let Some(application) = entry.application {
                store.applications.insert(name.clone(), application);
            }
            if let Some(mode) = entry.pool_mode {
                store.pool_modes.insert(name.clone(), mode);
            }
            store.users.insert(name, user);
        }
        Ok(store)
    }

    /// The application bounds of `name`, if it is an application user.
    pub fn application(&self, name: &str) -> Option<&Application> {
        self.applications.get(name)
    }

    /// Adds or replaces an application user (see [`UserStore::insert`]).
    pub fn insert_application(
        &mut self,
        user: User,
        application: Application,
    ) -> Result<Option<User>, InvalidUser> {
        check_user(&user, Some(&application))?;
        self.applications.insert(user.name.clone(), application);
        Ok(self.users.insert(user.name.clone(), user))
    }

    /// The user's `pool_mode`, if the file gives one.
    pub fn pool_mode(&self, name: &str) -> Option<PoolMode> {
        self.pool_modes.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// All users, ordered by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds or replaces a user after checking its name, role and attributes; returns the replaced one.
    /// An application user stays one (see [`UserStore::insert_application`]).
    pub fn insert(&mut self, user: User) -> Result<Option<User>, InvalidUser> {
        check_user(&user, self.applications.get(&user.name))?;
        Ok(self.users.insert(user.name.clone(), user))
    }

    pub fn remove(&mut self, name: &str) -> Option<User> {
        self.applications.remove(name);
        self.pool_modes.remove(name);
        self.users.remove(name)
    }

    /// The file's text: a header comment, then one table per user with its attributes inline.
    pub fn to_toml(&self) -> String {
        let mut text = HEADER.to_string();
        for user in self.users.values() {
            let attributes: Vec<String> = user
                .attributes
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_string(value)))
                .collect();
            text.push_str(&format!("\n[users.{}]\n", toml_key(&user.name)));
            if !user.role.is_empty() {
                text.push_str(&format!("role = {}\n", toml_string(&user.role)));
            }
            if !attributes.is_empty() {
                text.push_str(&format!("attributes = {{ {} }}\n", attributes.join(", ")));
            }
            let verifier = user.verifier.to_text();
            text.push_str(&format!("verifier = {}\n", toml_string(&verifier)));
            if let Some(application) = self.applications.get(&user.name) {
                let application = application.to_toml(toml_string);
                text.push_str(&format!("application = {application}\n"));
            }
            match self.pool_mode(&user.name) {
                Some(PoolMode::Session) => text.push_str("pool_mode = \"session\"\n"),
                Some(PoolMode::Transaction) => text.push_str("pool_mode = \"transaction\"\n"),
                None => {}
            }
        }
        text
    }

    /// Writes the file atomically: a temporary file (mode 0600) in the same folder, fsync, rename over
    /// `path`, fsync of the folder. A reader sees either the old file or the new one, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let io = |source| UsersError::Io {
            path: path.to_path_buf(),
            source,
        };
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".maschera-users-")
            .permissions(owner_only())
            .tempfile_in(folder)
            .map_err(io)?;
        temp.write_all(self.to_toml().as_bytes()).map_err(io)?;
        temp.as_file().sync_all().map_err(io)?;
        temp.persist(path).map_err(|err| io(err.error))?;
        std::fs::File::open(folder)
            .and_then(|dir| dir.sync_all())
            .map_err(io)
    }
}

/// A one-line TOML basic string: `"` and `\` escaped, control characters as `\uXXXX`.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A TOML key: bare when it may be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        toml_string(key)
    }
}

fn owner_only() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o600)
}

enum ParseError {
    Syntax(String),
    User { user: String, reason: String },
}

impl ParseError {
    fn in_file(self, path: &Path) -> UsersError {
        let path = path.to_path_buf();
        match self {
            ParseError::Syntax(message) => UsersError::Syntax { path, message },
            ParseError::User { user, reason } => UsersError::InvalidUser { path, user, reason },
        }
    }
}

/// The rules every user entry follows, whether read from the file or added by the CLI.
/// An application user may have no role of its own (`role` empty).
fn check_user(user: &User, application: Option<&Application>) -> Result<(), InvalidUser> {
    let invalid = |reason: &str| Err(InvalidUser(reason.to_string()));
    if user.name.is_empty() || user.name.len() > MAX_NAME_BYTES {
        return invalid("the user name must have 1 to 63 bytes");
    }
    if user.name.chars().any(char::is_control) {
        return invalid("the user name contains a control character");
    }
    if let Some(application) = application {
        application.check().map_err(InvalidUser)?;
    }
    let no_own_role = application.is_some() && user.role.is_empty();
    if !(is_identifier(&user.role) || no_own_role) {
        return invalid(
            "the role must be a lower-case identifier (a-z, 0-9, _; not starting with a digit)",
        );
    }
    if let Some(key) = user.attributes.keys().find(|key| !is_identifier(key)) {
        return Err(InvalidUser(format!(
            "attribute {key:?} must be a lower-case identifier (a-z, 0-9, _; not starting with a digit)"
        )));
    }
    Ok(())
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes: safe as a policy role name and as part of a setting name.
pub fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && text.len() <= MAX_NAME_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user(name: &str, role: &str) -> User {
        User {
            name: name.to_string(),
            role: role.to_string(),
            attributes: BTreeMap::from([("region".to_string(), "north".to_string())]),
            verifier: Verifier::from_password("a long enough passphrase", 1),
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("users.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_users_pool_mode_is_read_and_kept_when_the_file_is_saved_again() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::from_password("a long enough passphrase", 1).to_text();
        let text = format!(
            "[users.sam]\nrole = \"sales\"\nverifier = \"{verifier}\"\npool_mode = \"transaction\"\n\
             [users.dora]\nrole = \"dpo\"\nverifier = \"{verifier}\"\n"
        );
        let path = write(dir.path(), &text);
        let store = UserStore::load(&path).unwrap();
        assert_eq!(store.pool_mode("sam"), Some(PoolMode::Transaction));
        assert_eq!(store.pool_mode("dora"), None);
        store.save(&path).unwrap();
        let again = UserStore::load(&path).unwrap();
        assert_eq!(again.pool_mode("sam"), Some(PoolMode::Transaction));
        let wrong = write(
            dir.path(),
            &text.replace("\"transaction\"", "\"statement\""),
        );
        assert!(UserStore::load(&wrong).is_err());
    }

    #[test]
    fn saves_and_loads_the_same_users_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut store = UserStore::default();
        store.insert(user("sam", "sales")).unwrap();
        let mut tricky = user("o'brien \"the\" user\u{e9}", "analyst");
        let note = "a \"quoted\"\\ value, = {x}\n\u{1}'''";
        tricky.attributes.insert("note".into(), note.into());
        store.insert(tricky).unwrap();
        store.save(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = UserStore::load(&path).unwrap();
        assert_eq!(
            loaded.users().collect::<Vec<_>>(),
            store.users().collect::<Vec<_>>()
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }

    #[test]
    fn reads_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::from_password("x", 1).to_text();
        let path = write(
            dir.path(),
            &format!(
                "[users.sam]\nrole = \"sales\"\nattributes = {{ region = \"north\" }}\nverifier = \"{verifier}\"\n\
                 [users.ann]\nrole = \"analyst\"\nverifier = \"{verifier}\"\n"
            ),
        );
        let store = UserStore::load(&path).unwrap();
        let sam = store.get("sam").unwrap();
        assert_eq!(sam.role, "sales");
        assert_eq!(sam.attributes["region"], "north");
        assert!(store.get("ann").unwrap().attributes.is_empty());
        assert!(store.get("nobody").is_none());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::from_password("x", 1).to_text();
        let cases = [
            (
                format!(
                    "[users.sam]\nrole = \"sales\"\nverifier = \"{verifier}\"\npassword = \"x\"\n"
                ),
                "password",
            ),
            (
                format!("[user.sam]\nrole = \"sales\"\nverifier = \"{verifier}\"\n"),
                "user",
            ),
            (
                "[users.sam]\nrole = \"sales\"\nverifier = \"SCRAM-SHA-256$4096:abc\"\n"
                    .to_string(),
                "\"sam\"",
            ),
            (
                format!("[users.sam]\nrole = \"Sales!\"\nverifier = \"{verifier}\"\n"),
                "role",
            ),
            (
                format!(
                    "[users.sam]\nrole = \"sales\"\nverifier = \"{verifier}\"\nattributes = {{ \"a b\" = \"x\" }}\n"
                ),
                "attribute",
            ),
            ("[users.sam]\nrole = \"sales\"\n".to_string(), "verifier"),
            ("[users.sam\n".to_string(), "line 1"),
        ];
        for (text, expected) in cases {
            let path = write(dir.path(), &text);
            let message = UserStore::load(&path).unwrap_err().to_string();
            assert!(message.contains("users.toml"), "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
        let missing = UserStore::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.toml"), "{missing}");
        assert!(
            UserStore::load_or_empty(&dir.path().join("missing.toml"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn application_users_round_trip_and_need_no_role_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::from_password("x", 1).to_text();
        let path = write(
            dir.path(),
            &format!(
                "[users.crm]\nverifier = \"{verifier}\"\n\
                 application = {{ roles = [\"sales\", \"support\"], attributes = {{ region = [\"north\"] }}, keys = [\"k1\"] }}\n\
                 [users.erp]\nrole = \"erp_app\"\nverifier = \"{verifier}\"\napplication = {{ roles = [\"sales\"] }}\n"
            ),
        );
        let store = UserStore::load(&path).unwrap();
        let crm = store.application("crm").unwrap();
        assert_eq!(crm.roles, ["sales", "support"]);
        assert_eq!(store.get("crm").unwrap().role, "");
        assert_eq!(
            store.application("erp").unwrap().attributes,
            application::AttributeBounds::UsersFile
        );
        assert!(store.application("nobody").is_none());
        store.save(&path).unwrap();
        let again = UserStore::load(&path).unwrap();
        assert_eq!(again.application("crm"), Some(crm));
        assert_eq!(again.get("erp").unwrap().role, "erp_app");
        for bad in [
            "application = { roles = [] }",
            "application = { roles = [\"Sales\"] }",
            "application = { roles = [\"sales\"], attributes = \"anything\" }",
        ] {
            let path = write(
                dir.path(),
                &format!("[users.crm]\nverifier = \"{verifier}\"\n{bad}\n"),
            );
            let message = UserStore::load(&path).unwrap_err().to_string();
            assert!(
                message.contains("crm") || message.contains("attributes"),
                "{message}"
            );
        }
        // Without `application`, a user needs a role.
        let path = write(
            dir.path(),
            &format!("[users.crm]\nverifier = \"{verifier}\"\n"),
        );
        assert!(UserStore::load(&path).is_err());
    }

    #[test]
    fn insert_checks_and_replaces_remove_removes() {
        let mut store = UserStore::default();
        assert!(store.insert(user("sam", "sales")).unwrap().is_none());
        assert!(store.insert(user("sam", "support")).unwrap().is_some());
        assert_eq!(store.get("sam").unwrap().role, "support");
        assert!(store.insert(user("", "sales")).is_err());
        assert!(store.insert(user("x", "1sales")).is_err());
        assert!(store.insert(user(&"x".repeat(64), "sales")).is_err());
        assert!(store.remove("sam").is_some());
        assert!(store.remove("sam").is_none());
        assert!(store.is_empty());
    }
}
