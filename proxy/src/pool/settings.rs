//! Harmless session settings of a client in transaction mode: a plain `SET name = value` (or `TO`,
//! or `SET TIME ZONE value`) of a setting on the list below, run outside `SET LOCAL`, becomes part
//! of the client's pool key once its transaction committed (see `uncommitted`) (the setting is then a startup parameter of the connections that serve
//! it, so every transaction of the client runs with it, on connections that all have it); `RESET
//! name`, `RESET ALL` and `DISCARD ALL` take it out again (only the client's own settings change).
//! The connection the statement ran on holds the setting for other clients of its old key, so it
//! is closed when given back, never reused.
//! `SELECT set_config('name', 'value', false)` with quoted literals (Django sets its time zone so)
//! follows the client the same way when it comes as a simple query; in a Parse it pins, because
//! the statement may run later under another name. `set_config(..., true)` is a `SET LOCAL`, in a
//! simple query or a Parse, and so are `SET TRANSACTION ...` and `SET CONSTRAINTS ...`.
//! `SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE` follows as the POSIX zone PostgreSQL shows for
//! it (`<+05:30>-05:30`). A simple Query of several such statements (Sequelize sends `SET
//! client_min_messages TO warning;SET TIME ZONE INTERVAL ...` on connect) follows each of them;
//! one other statement among them and none follows.
//! A statement that is not such a plain SET, or a setting not on the list, pins the session
//! instead (see `pinning`). `SET LOCAL` ends with its transaction and needs neither.
//! Not for: deciding whether a client may change a setting at all (the session hooks do; the
//! proxy's attribute settings never pass them).

use crate::session::upstream_source::UpstreamKey;

/// Settings that may follow a client from connection to connection as startup parameters.
const FOLLOWING: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lock_timeout",
    "statement_timeout",
    "timezone",
];

/// What a client statement would do to the client's settings once PostgreSQL completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Reset(String),
    ResetAll,
    /// `SET LOCAL ...`: nothing that outlives the transaction; also a statement that only releases
    /// what the session itself holds ([`releases_own_state`]).
    Local,
}

/// Most statements of one simple Query that are all plain statements this module follows (as
/// Sequelize sends on connect).
const MOST_STATEMENTS: usize = 16;

/// The changes a statement text makes, one per statement, if every statement is one this module
/// follows (several only in a simple Query; a split inside a quoted value leaves a piece that is
/// no such statement, so the whole text is none).
pub fn changes(sql: &[u8]) -> Option<Vec<Change>> {
    let text = std::str::from_utf8(sql).ok()?.trim();
    let text = text.strip_suffix(';').unwrap_or(text);
    if !text.contains(';') {
        return change(sql).map(|change| vec![change]);
    }
    let mut changes = Vec::new();
    for piece in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if changes.len() == MOST_STATEMENTS {
            return None;
        }
        changes.push(change(piece.as_bytes())?);
    }
    (!changes.is_empty()).then_some(changes)
}

/// The change a statement text makes, if it is one plain statement this module follows.
pub fn change(sql: &[u8]) -> Option<Change> {
    let sql = std::str::from_utf8(sql).ok()?.trim();
    let sql = sql.strip_suffix(';').unwrap_or(sql).trim_end();
    // Most statements are none of these: decided before anything is allocated (every statement
    // of a pooled client comes through here).
    let first = sql.split_whitespace().next()?;
    if releases_own_state(first, sql) {
        return Some(Change::Local);
    }
    let calls_set_config = || {
        sql[first.len()..]
            .trim_start()
            .get(.."set_config".len())
            .is_some_and(|word| word.eq_ignore_ascii_case("set_config"))
    };
    let may_change = ["set", "reset", "discard"]
        .iter()
        .any(|word| first.eq_ignore_ascii_case(word))
        || (first.eq_ignore_ascii_case("select") && calls_set_config());
    if !may_change {
        return None;
    }
    if sql.contains(';') || sql.contains("--") || sql.contains("/*") {
        return None;
    }
    let words: Vec<&str> = sql.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    match lower.first().map(String::as_str)? {
        "set" => {
            let mut rest = &words[1..];
            let mut rest_lower = &lower[1..];
            match rest_lower.first().map(String::as_str) {
                // `SET TRANSACTION ...`, `SET CONSTRAINTS ...`: this transaction only (`SET
                // SESSION CHARACTERISTICS` is for the session: it is none of these).
                Some("local" | "transaction" | "constraints") => return Some(Change::Local),
                Some("session") => {
                    rest = &rest[1..];
                    rest_lower = &rest_lower[1..];
                }
                _ => {}
            }
            let (name, value) =
                if rest_lower.len() >= 3 && rest_lower[0] == "time" && rest_lower[1] == "zone" {
                    if rest_lower[2] == "interval" {
                        return interval_zone(&rest[3..], &rest_lower[3..]);
                    }
                    ("timezone".to_owned(), rest[2..].join(" "))
                } else {
                    let text = rest.join(" ");
                    let (name, value) = text.split_once('=').or_else(|| split_to(&text))?;
                    (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                };
            if !FOLLOWING.contains(&name.as_str()) {
                return None;
            }
            Some(Change::Set(name, literal(&value)?))
        }
        "reset" if lower.len() == 2 && lower[1] == "all" => Some(Change::ResetAll),
        "reset" if lower.len() == 2 => {
            let name = if lower[1] == "time" {
                return None;
            } else {
                lower[1].clone()
            };
            FOLLOWING
                .contains(&name.as_str())
                .then_some(Change::Reset(name))
        }
        "reset" if lower.len() == 3 && lower[1] == "time" && lower[2] == "zone" => {
            Some(Change::Reset("timezone".into()))
        }
        "discard" if lower.len() == 2 && lower[1] == "all" => Some(Change::ResetAll),
        "select" => set_config(&sql[words[0].len()..]),
        _ => None,
    }
}

/// `CLOSE ALL`, `UNLISTEN *` and `SELECT pg_advisory_unlock_all()`: asyncpg's pool resets every
/// connection it gets back with them and `RESET ALL`. They release only what the session holds
/// (holdable cursors, listens and session advisory locks, each of which pins a session: an
/// unpinned session's connection holds none), so they leave nothing behind and pin nothing.
fn releases_own_state(first: &str, sql: &str) -> bool {
    const LONGEST: usize = "select pg_catalog.pg_advisory_unlock_all()".len() + 8;
    if sql.len() > LONGEST
        || !["close", "unlisten", "select"]
            .iter()
            .any(|word| first.eq_ignore_ascii_case(word))
    {
        return false;
    }
    let words: Vec<String> = sql
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    matches!(
        words.join(" ").as_str(),
        "close all"
            | "unlisten *"
            | "select pg_advisory_unlock_all()"
            | "select pg_catalog.pg_advisory_unlock_all()"
    )
}

/// `set_config('name', 'value', false)` (what follows `SELECT`), with both arguments quoted
/// literals, as Django sends it for its time zone: a SET of `name`; with `true` (the value a
/// literal or a parameter), a `SET LOCAL` of any setting.
fn set_config(call: &str) -> Option<Change> {
    let call = call.trim();
    let (function, arguments) = call.split_at_checked("set_config".len())?;
    if !function.eq_ignore_ascii_case("set_config") {
        return None;
    }
    let arguments = arguments.trim().strip_prefix('(')?.strip_suffix(')')?;
    let [name, value, local] = arguments.split(',').collect::<Vec<_>>()[..] else {
        return None;
    };
    let quoted = |text: &str| {
        let text = text.trim();
        text.starts_with('\'').then(|| literal(text)).flatten()
    };
    let name = quoted(name)?.to_ascii_lowercase();
    let local = match local.trim().to_ascii_lowercase().as_str() {
        "false" => false,
        "true" => true,
        _ => return None,
    };
    let value = value.trim();
    // A local change ends with its transaction, whatever it sets (a parameter as value too).
    let parameter = value
        .strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if local && (parameter || quoted(value).is_some()) {
        return Some(Change::Local);
    }
    let value = quoted(value)?;
    if !FOLLOWING.contains(&name.as_str()) {
        return None;
    }
    Some(Change::Set(name, value))
}

/// `SET TIME ZONE INTERVAL '+hh:mm' HOUR TO MINUTE` (what follows `INTERVAL`), as Sequelize sends
/// it: the POSIX time zone PostgreSQL then shows (`<+05:30>-05:30`, `<-03>+03`), which as a startup
/// parameter gives the same offset.
fn interval_zone(rest: &[&str], rest_lower: &[String]) -> Option<Change> {
    let [offset, ..] = rest else { return None };
    if rest_lower[1..] != ["hour", "to", "minute"] {
        return None;
    }
    let offset = offset.strip_prefix('\'')?.strip_suffix('\'')?;
    let (negative, offset) = match offset.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, offset.strip_prefix('+').unwrap_or(offset)),
    };
    let (hours, minutes) = offset.split_once(':')?;
    let digits = |text: &str, width: std::ops::RangeInclusive<usize>, most: usize| {
        (width.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<usize>().ok())
            .flatten()
            .filter(|n| *n <= most)
    };
    let (hours, minutes) = (digits(hours, 1..=2, 14)?, digits(minutes, 2..=2, 59)?);
    let negative = negative && (hours, minutes) != (0, 0);
    let (sign, inverse) = if negative { ('-', '+') } else { ('+', '-') };
    let offset = if minutes == 0 {
        format!("{hours:02}")
    } else {
        format!("{hours:02}:{minutes:02}")
    };
    Some(Change::Set(
        "timezone".into(),
        format!("<{sign}{offset}>{inverse}{offset}"),
    ))
}

/// `name TO value`.
fn split_to(text: &str) -> Option<(&str, &str)> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find(" to ")?;
    Some((&text[..at], &text[at + 4..]))
}

/// A value as a startup parameter takes it: a bare word or number, or a quoted string without
/// quotes inside; `None` for anything else (a list, `DEFAULT`, escapes).
fn literal(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return (!inner.contains('\'') && !inner.contains('\\')).then(|| inner.to_owned());
    }
    let bare = !value.is_empty()
        && !value.eq_ignore_ascii_case("default")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.' | '/'));
    bare.then(|| value.to_owned())
}

/// A client's settings on top of its session's startup parameters.
#[derive(Debug, Default)]
pub struct ClientSettings {
    /// Set by the client, by name (lowercase), sorted.
    changed: std::collections::BTreeMap<String, String>,
}

impl ClientSettings {
    /// Applies a completed change; whether the client's key changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Set(name, value) => self.changed.insert(name, value.clone()) != Some(value),
            Change::Reset(name) => self.changed.remove(&name).is_some(),
            Change::ResetAll => {
                let had = !self.changed.is_empty();
                self.changed.clear();
                had
            }
            Change::Local => false,
        }
    }

    /// `base` with the client's settings as startup parameters (replacing those of the same name).
    pub fn key(&self, base: &UpstreamKey) -> UpstreamKey {
        let mut params: Vec<(String, String)> = base
            .params
            .iter()
            .filter(|(name, _)| !self.changed.contains_key(&name.to_ascii_lowercase()))
            .cloned()
            .collect();
        params.extend(self.changed.iter().map(|(n, v)| (n.clone(), v.clone())));
        UpstreamKey {
            login: base.login.clone(),
            database: base.database.clone(),
            params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> Option<Change> {
        Some(Change::Set(name.into(), value.into()))
    }

    #[test]
    fn plain_sets_of_listed_settings_follow_the_client_and_the_rest_do_not() {
        assert_eq!(
            change(b"SET extra_float_digits = 3"),
            set("extra_float_digits", "3")
        );
        assert_eq!(
            change(b"set application_name to 'PostgreSQL JDBC Driver';"),
            set("application_name", "PostgreSQL JDBC Driver")
        );
        assert_eq!(change(b"SET TIME ZONE 'UTC'"), set("timezone", "UTC"));
        assert_eq!(
            change(b"SET SESSION DateStyle = ISO"),
            set("datestyle", "ISO")
        );
        assert_eq!(
            change(b"SET LOCAL statement_timeout = 5"),
            Some(Change::Local)
        );
        assert_eq!(
            change(b"SELECT set_config('TimeZone', 'UTC', false)"),
            set("timezone", "UTC")
        );
        assert_eq!(
            change(b"select SET_CONFIG ( 'statement_timeout','5s',true )"),
            Some(Change::Local)
        );
        assert_eq!(
            change(b"SELECT set_config('search_path', $1, true)"),
            Some(Change::Local)
        );
        assert_eq!(
            change(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Some(Change::Local)
        );
        assert_eq!(change(b"set constraints all deferred"), Some(Change::Local));
        assert_eq!(
            change(b"SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE"),
            set("timezone", "<+00>-00")
        );
        assert_eq!(
            change(b"SET TIME ZONE INTERVAL '+5:30' HOUR TO MINUTE"),
            set("timezone", "<+05:30>-05:30")
        );
        assert_eq!(
            change(b"SET TIME ZONE INTERVAL '-03:00' HOUR TO MINUTE"),
            set("timezone", "<-03>+03")
        );
        assert_eq!(
            change(b"SET TIME ZONE INTERVAL '-00:00' HOUR TO MINUTE"),
            set("timezone", "<+00>-00")
        );
        assert_eq!(change(b"RESET ALL"), Some(Change::ResetAll));
        assert_eq!(change(b"DISCARD ALL"), Some(Change::ResetAll));
        // asyncpg's pool reset, one simple query: follows, pins nothing.
        assert_eq!(
            changes(b"SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"),
            Some(vec![
                Change::Local,
                Change::Local,
                Change::Local,
                Change::ResetAll
            ])
        );
        assert_eq!(change(b"select pg_advisory_unlock_all(1)"), None);
        assert_eq!(change(b"UNLISTEN chan"), None);
        assert_eq!(change(b"CLOSE c"), None);
        assert_eq!(
            change(b"RESET statement_timeout"),
            Some(Change::Reset("statement_timeout".into()))
        );
        follow_nothing(&[
            b"SET search_path = evil",
            b"SET role = admin",
            b"SET maschera.region = 'south'",
            b"SET application_name = 'a''b'",
            b"SET statement_timeout = 5; SELECT 1",
            b"SET datestyle = ISO, DMY",
            b"SELECT 1",
            b"SELECT set_config('search_path', 'evil', false)",
            b"SELECT set_config('TimeZone', $1, false)",
            b"SELECT set_config('TimeZone', now()::text, true)",
            b"SELECT set_config('TimeZone', $, true)",
            b"SELECT set_config('TimeZone', 'UTC', false), 1",
            b"SELECT set_config('TimeZone', 'UTC', is_local)",
            b"SELECT set_config('DateStyle', 'ISO, DMY', false)",
            b"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            b"SET TIME ZONE INTERVAL '+15:00' HOUR TO MINUTE",
            b"SET TIME ZONE INTERVAL '+05:3' HOUR TO MINUTE",
            b"SET TIME ZONE INTERVAL '+05:30'",
            b"SET TIME ZONE INTERVAL '1 day' HOUR TO MINUTE",
            b"SET TIME ZONE INTERVAL",
        ]);
    }

    #[test]
    fn a_query_of_several_followed_statements_follows_each_and_anything_else_none() {
        assert_eq!(
            changes(b"SET client_min_messages TO warning;SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE;"),
            Some(vec![
                Change::Set("client_min_messages".into(), "warning".into()),
                Change::Set("timezone".into(), "<+00>-00".into()),
            ])
        );
        assert_eq!(
            changes(b"SET TimeZone = 'UTC';"),
            set("timezone", "UTC").map(|c| vec![c])
        );
        assert_eq!(changes(b"SELECT 1"), None);
        for sql in [
            &b"SET statement_timeout = 5; SELECT 1"[..],
            b"SET application_name = 'a;SET statement_timeout = 5'",
            b"SET application_name = 'x'; ; SET search_path = evil",
            b";;",
        ] {
            assert_eq!(changes(sql), None, "{}", String::from_utf8_lossy(sql));
        }
        let many = "SET statement_timeout = 5;".repeat(MOST_STATEMENTS + 1);
        assert_eq!(changes(many.as_bytes()), None);
    }

    fn follow_nothing(statements: &[&[u8]]) {
        for sql in statements {
            assert_eq!(change(sql), None, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn the_first_word_decides_whatever_the_case_and_the_spacing() {
        assert_eq!(
            change(b" \n\tsEt\nTimeZone\tTO 'UTC' ;"),
            set("timezone", "UTC")
        );
        assert_eq!(change(b"\n discard   ALL;"), Some(Change::ResetAll));
        follow_nothing(&[
            b"SELECT set_configuration('statement_timeout', '5', false)",
            b"SELECT 'set_config'",
            b"settle",
            b"resetting",
            b"/* SET statement_timeout = 5 */ SELECT 1",
            b"",
            b" ; ",
        ]);
    }

    #[test]
    fn the_key_carries_the_clients_settings_over_the_startup_parameters() {
        let base = UpstreamKey {
            login: crate::net::upstream::Login {
                user: "sales".into(),
                password: None,
            },
            database: "crm".into(),
            params: vec![
                ("application_name".into(), "psql".into()),
                ("maschera.region".into(), "north".into()),
            ],
        };
        let mut settings = ClientSettings::default();
        assert!(settings.apply(Change::Set("application_name".into(), "app".into())));
        assert!(!settings.apply(Change::Set("application_name".into(), "app".into())));
        let key = settings.key(&base);
        assert_eq!(
            key.params,
            [
                ("maschera.region".to_owned(), "north".to_owned()),
                ("application_name".to_owned(), "app".to_owned())
            ]
        );
        assert!(settings.apply(Change::ResetAll));
        assert!(settings.key(&base) == base);
    }
}
