//! What pins a client of transaction mode to its upstream connection until it ends: session state
//! that would follow the connection to another client or stay behind on it. The proxy does not
//! replay or undo such state; it keeps the session on its connection instead (counted in
//! `maschera_pool_pins_total` by reason). Decided from what the client sends (statements that can
//! create session state: temporary objects, `WITH HOLD` cursors, session advisory locks,
//! `set_config`, `LISTEN`, and any `DO` block, whose code the proxy cannot follow; a cheap word
//! check first, then the statement's tokens, see `live_words`)
//! and from the
//! CommandComplete tags PostgreSQL sends (`SET`, `RESET`, `DISCARD`, `PREPARE`, `LISTEN`, `LOAD`)
//! of statements that `settings` does not follow (a plain SET of a harmless setting follows the
//! client instead of pinning it).
//! (A cursor without `WITH HOLD` ends with its transaction and pins nothing.) The check stays
//! coarse where it must guess: a table named `temp` after `INTO` pins, which costs a connection,
//! never isolation.
//! Not for: the pools (see `pool`), or refusing statements (the session hooks).

use super::live_words::{self, Place};
use crate::metrics as m;
use crate::wire::Frontend;

/// Whether and why a session is pinned.
#[derive(Debug, Default)]
pub struct Pinning {
    reason: Option<&'static str>,
}

/// Words (lowercase, whole) whose presence in a statement may pin the session, and where they
/// count (see `live_words`).
const PINNING_WORDS: &[(&str, &str, Place)] = &[
    ("temp", "temporary object", AFTER_CREATE),
    ("temporary", "temporary object", AFTER_CREATE),
    ("pg_temp", "temporary object", Place::Anywhere),
    ("hold", "cursor WITH HOLD", Place::After(&["with"])),
    ("listen", "LISTEN", Place::First),
    // Code that runs now, out of the proxy's sight: it may set anything (`SET` in PL/pgSQL,
    // `EXECUTE` of a built string).
    ("do", "DO block", Place::First),
    ("set_config", "set_config", Place::Anywhere),
    ("pg_advisory_lock", "session advisory lock", Place::Anywhere),
    (
        "pg_advisory_lock_shared",
        "session advisory lock",
        Place::Anywhere,
    ),
    (
        "pg_try_advisory_lock",
        "session advisory lock",
        Place::Anywhere,
    ),
    (
        "pg_try_advisory_lock_shared",
        "session advisory lock",
        Place::Anywhere,
    ),
];

/// `CREATE [GLOBAL | LOCAL] TEMP`, `CREATE OR REPLACE TEMP VIEW`, `SELECT ... INTO TEMP`.
const AFTER_CREATE: Place = Place::After(&["create", "global", "local", "replace", "into"]);

/// CommandComplete tags (their first words) that leave session state behind.
const PINNING_TAGS: &[(&str, &str)] = &[
    ("SET", "SET"),
    ("RESET", "RESET"),
    ("DISCARD", "DISCARD"),
    ("PREPARE", "PREPARE"),
    ("LISTEN", "LISTEN"),
    ("LOAD", "LOAD"),
];

impl Pinning {
    pub fn pinned(&self) -> bool {
        self.reason.is_some()
    }

    /// Why the session is pinned.
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// Pins the session for `reason` (the first reason stays).
    pub fn pin(&mut self, reason: &'static str) {
        if self.reason.is_none() {
            self.reason = Some(reason);
            tracing::debug!(reason, "session pinned to its upstream connection");
            metrics::counter!(m::POOL_PINS_TOTAL, m::LABEL_REASON => reason).increment(1);
        }
    }

    /// A client message (whole frame).
    pub fn client(&mut self, frame: &[u8]) {
        if let Some(sql) = Frontend::decode(frame).ok().and_then(|m| m.sql()) {
            self.statement(sql);
        }
    }

    /// The statement text of a client's Query or Parse.
    pub fn statement(&mut self, sql: &[u8]) {
        if self.pinned() {
            return;
        }
        // The word check is cheap and finds nothing in most statements; the tokens decide only
        // when it found a word (see `live_words`), and pin when they cannot be trusted.
        let Some(word) = pinning_word(sql) else {
            return;
        };
        if let Some(reason) = live_words::live(sql, place).unwrap_or(Some(word)) {
            self.pin(reason)
        }
    }

    /// A CommandComplete tag.
    pub fn completion(&mut self, tag: &str) {
        if self.pinned() {
            return;
        }
        let first = tag.split(' ').next().unwrap_or_default();
        if let Some((_, reason)) = PINNING_TAGS.iter().find(|(t, _)| *t == first) {
            self.pin(reason);
        }
    }
}

/// The reason of the first pinning word in `sql`, if any.
fn pinning_word(sql: &[u8]) -> Option<&'static str> {
    sql.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        // `do` is the one pinning word shorter than 4 letters.
        .filter(|word| word.len() == 2 || (4..=27).contains(&word.len()))
        .find_map(|word| place(word).map(|(reason, _)| reason))
}

/// A pinning word's reason and where it counts.
fn place(word: &[u8]) -> Option<(&'static str, Place)> {
    PINNING_WORDS
        .iter()
        .find(|(w, ..)| word.eq_ignore_ascii_case(w.as_bytes()))
        .map(|(_, reason, place)| (*reason, *place))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn frame(message: Frontend<'_>) -> BytesMut {
        message.to_frame()
    }

    fn pins_query(sql: &str) -> Option<&'static str> {
        let mut pinning = Pinning::default();
        pinning.client(&frame(Frontend::Query {
            sql: sql.as_bytes(),
        }));
        pinning.reason()
    }

    #[test]
    fn session_state_pins_and_plain_statements_do_not() {
        assert_eq!(
            pins_query("CREATE TEMP TABLE t (a int)"),
            Some("temporary object")
        );
        assert_eq!(
            pins_query("declare c cursor with hold for select 1"),
            Some("cursor WITH HOLD")
        );
        assert_eq!(
            pins_query("SELECT pg_advisory_lock(1)"),
            Some("session advisory lock")
        );
        assert_eq!(pins_query("LISTEN jobs"), Some("LISTEN"));
        assert_eq!(pins_query("SELECT pg_advisory_xact_lock(1)"), None);
        assert_eq!(pins_query("SELECT name, temperature FROM t"), None);
        assert_eq!(
            pins_query("SELECT CASE c.relkind WHEN 'r' THEN 'TEMPORARY TABLE' END FROM pg_class c"),
            None
        );
        assert_eq!(
            pins_query("create /* t */ temporary -- u\n table t (a int)"),
            Some("temporary object")
        );
        assert_eq!(
            pins_query("DO $$ BEGIN CREATE TEMP TABLE t (); END $$"),
            Some("DO block")
        );
        assert_eq!(
            pins_query("do $$ BEGIN SET search_path = x; END $$"),
            Some("DO block")
        );
        assert_eq!(
            pins_query("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING"),
            None
        );
        assert_eq!(pins_query("BEGIN; UPDATE t SET a = 1; COMMIT"), None);
        let mut named = Pinning::default();
        named.client(&frame(Frontend::Parse {
            name: b"s1",
            sql: b"SELECT 1",
            param_types: b"\0\0",
        }));
        assert!(
            !named.pinned(),
            "named statements follow the client (see `prepared`)"
        );
        let mut unnamed = Pinning::default();
        unnamed.client(&frame(Frontend::Parse {
            name: b"",
            sql: b"SELECT 1",
            param_types: b"\0\0",
        }));
        assert!(!unnamed.pinned());
    }

    #[test]
    fn completions_that_leave_state_pin() {
        for (tag, pins) in [
            ("SET", true),
            ("RESET", true),
            ("DISCARD ALL", true),
            ("DECLARE CURSOR", false),
            ("SELECT 3", false),
            ("UPDATE 1", false),
            ("COMMIT", false),
        ] {
            let mut pinning = Pinning::default();
            pinning.completion(tag);
            assert_eq!(pinning.pinned(), pins, "{tag}");
        }
    }
}
