//! Which session settings a restricted role may change with `SET`/`RESET`: an explicit list of
//! harmless ones that ORMs and drivers set on connect. Everything the enforcement depends on (the
//! reserved `maschera.*` namespace carrying the caller's attributes, `role`, `session_authorization`,
//! `search_path`, `standard_conforming_strings`, `client_encoding`) is refused. Not for startup
//! parameters (the proxy checks those with [`check_startup_parameter`] too) nor for `SHOW`.

use super::refusal::Refusal;

/// The namespace of the caller's attributes, set by the proxy at session start.
pub const RESERVED_NAMESPACE: &str = "maschera";

/// Settings a restricted role may change (lower case).
const HARMLESS: &[&str] = &[
    "timezone",
    "time zone",
    "datestyle",
    "intervalstyle",
    "application_name",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "extra_float_digits",
    "client_min_messages",
    "bytea_output",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "transaction_isolation",
    "transaction_read_only",
    "xmlbinary",
    "xmloption",
    "geqo",
    "jit",
    "work_mem",
    "enable_seqscan",
    "enable_indexscan",
    "enable_bitmapscan",
    "enable_hashjoin",
    "enable_mergejoin",
    "enable_nestloop",
    "random_page_cost",
];

/// Settings the proxy depends on: allowed only with the value it needs.
const PINNED: &[(&str, &[&str])] = &[
    ("standard_conforming_strings", &["on", "true", "1", "yes"]),
    ("client_encoding", &["utf8", "unicode"]),
];

/// A pinned setting's value as PostgreSQL compares it: lower case, and for `client_encoding` only its
/// letters and digits (PostgreSQL's `clean_encoding_name`: `UTF-8`, `'utf-8'` as asyncpg sends it at
/// startup, and `utf_8` all name UTF8).
fn pinned_value(name: &str, value: &str) -> String {
    let value = value.to_ascii_lowercase();
    if name == "client_encoding" {
        return value.chars().filter(char::is_ascii_alphanumeric).collect();
    }
    value
}

/// Checks `SET name = value` (value as written, quotes removed; `None` for `DEFAULT`/`RESET`).
pub(crate) fn check_set(name: &str, values: &[String]) -> Result<(), Refusal> {
    let name = name.to_ascii_lowercase();
    if name.starts_with(&format!("{RESERVED_NAMESPACE}.")) || name == RESERVED_NAMESPACE {
        return Err(Refusal::denied(format!(
            "permission denied to set parameter \"{name}\": the {RESERVED_NAMESPACE}.* settings carry the session's attributes"
        )));
    }
    if let Some((_, accepted)) = PINNED.iter().find(|(pinned, _)| *pinned == name) {
        let ok = values.len() == 1 && accepted.contains(&pinned_value(&name, &values[0]).as_str());
        if ok {
            return Ok(());
        }
        return Err(Refusal::unsupported(format!(
            "parameter \"{name}\" cannot be changed through Maschera: the proxy depends on its value ({})",
            accepted[0]
        )));
    }
    if HARMLESS.contains(&name.as_str()) {
        return Ok(());
    }
    Err(Refusal::denied(format!(
        "permission denied to set parameter \"{name}\": not in Maschera's list of session settings a restricted role may change"
    )))
}

/// Checks a startup parameter the client sent (including each `-c name=value` of `options`).
pub fn check_startup_parameter(name: &str, value: &str) -> Result<(), Refusal> {
    match name.to_ascii_lowercase().as_str() {
        // The protocol's own parameters, handled by the proxy.
        "user" | "database" | "replication" => Ok(()),
        "options" => Err(Refusal::unsupported(
            "startup parameter \"options\" is not supported through Maschera: set parameters one by one",
        )),
        _ => check_set(name, &[value.to_string()]),
    }
}

/// Checks `RESET name` (`RESET ALL` is the caller's: it falls back to the startup parameters).
pub(crate) fn check_reset(name: &str) -> Result<(), Refusal> {
    let name = name.to_ascii_lowercase();
    if PINNED.iter().any(|(pinned, _)| *pinned == name) {
        // Resetting restores the server default, which the proxy requires to be the pinned value.
        return Ok(());
    }
    check_set(&name, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::refusal::SqlState;

    #[test]
    fn harmless_settings_pass() {
        assert!(check_set("TimeZone", &["UTC".into()]).is_ok());
        assert!(check_set("application_name", &["x".into()]).is_ok());
        assert!(check_set("client_encoding", &["UTF8".into()]).is_ok());
        // asyncpg's startup parameter, quotes included; PostgreSQL ignores all but letters and digits.
        assert!(check_startup_parameter("client_encoding", "'utf-8'").is_ok());
        assert!(check_set("client_encoding", &["utf_8".into()]).is_ok());
        assert!(check_set("client_encoding", &["LATIN1".into()]).is_err());
        assert!(check_set("client_encoding", &["'utf-16'".into()]).is_err());
        assert!(check_set("standard_conforming_strings", &["on".into()]).is_ok());
    }

    #[test]
    fn enforcement_settings_are_refused() {
        let e = check_set("maschera.region", &["south".into()]).unwrap_err();
        assert_eq!(e.sqlstate, SqlState::InsufficientPrivilege);
        assert!(e.message.contains("maschera.region") && !e.message.contains("south"));
        assert_eq!(
            check_set("search_path", &["x".into()])
                .unwrap_err()
                .sqlstate,
            SqlState::InsufficientPrivilege
        );
        assert_eq!(
            check_set("role", &["x".into()]).unwrap_err().sqlstate,
            SqlState::InsufficientPrivilege
        );
        let e = check_set("standard_conforming_strings", &["off".into()]).unwrap_err();
        assert_eq!(e.sqlstate, SqlState::FeatureNotSupported);
        let e = check_set("client_encoding", &["LATIN1".into()]).unwrap_err();
        assert_eq!(e.sqlstate, SqlState::FeatureNotSupported);
        assert!(check_startup_parameter("options", "-c search_path=x").is_err());
        assert!(check_startup_parameter("application_name", "psql").is_ok());
    }
}
