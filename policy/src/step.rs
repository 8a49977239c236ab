//! One statement of the SQL that `maschera policy apply` runs ([`Step`]), the secret the executor
//! binds into it ([`Secret`], never in the text), and SQL quoting: the leaf that every module
//! writing that SQL (`apply_sql`, `db_lock`, `lookup_sql`, `write_back`, `pseudonym`) shares, so that
//! none of them needs another for these.
//! Not for: what the steps are (those modules) or running them (the proxy's `policy_apply`).

/// The schema holding the keys (pseudonyms, hash salt, the attributes' seals) and the functions that
/// read them (readable by its owner only).
pub const PRIVATE_SCHEMA: &str = "maschera_private";

/// The `search_path` of every function `policy apply` installs (`SET search_path = ...`). `pg_temp`
/// is named, and last: a path without it searches the session's temporary schema *first* for
/// relations and types, so a login could create `pg_temp.bytea` (a domain whose CHECK calls its own
/// `pg_temp` function) and have a SECURITY DEFINER body's `DECLARE key bytea` run that function as
/// the definer, with the key as its argument.
pub const FUNCTION_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// The marker in a step's SQL where the executor puts the login's password (as a SCRAM verifier literal).
pub const PASSWORD_MARKER: &str = "{password}";

/// A secret a step needs; the executor supplies it (bound as `$1`, or put in place of [`PASSWORD_MARKER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `$1` is the pseudonym key (bytea).
    PseudonymKey,
    /// `$1` is the hash salt (bytea).
    HashSalt,
    /// `$1` is a new key of the attributes' seals (bytea; see `attribute_seal`).
    AttributeKey,
    /// [`PASSWORD_MARKER`] is the password of this login.
    LoginPassword(String),
}

/// One statement of the apply transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sql: String,
    pub secret: Option<Secret>,
}

impl Step {
    pub(crate) fn plain(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            secret: None,
        }
    }

    /// The statement as `--dry-run` prints it: secrets replaced by a placeholder.
    pub fn display(&self) -> String {
        match &self.secret {
            None => self.sql.clone(),
            Some(Secret::PseudonymKey) => self.sql.replace("$1", "'<pseudonym key, not shown>'"),
            Some(Secret::HashSalt) => self.sql.replace("$1", "'<hash salt, not shown>'"),
            Some(Secret::AttributeKey) => {
                self.sql.replace("$1", "'<attribute seal key, not shown>'")
            }
            Some(Secret::LoginPassword(_)) => self.sql.replace(
                PASSWORD_MARKER,
                "'<generated, written to the credentials file>'",
            ),
        }
    }
}

/// Quotes an identifier for SQL (`"name"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (`'text'`), with standard-conforming strings.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
