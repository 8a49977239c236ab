//! Why a statement is not forwarded: the SQLSTATE and message the proxy sends as an `ErrorResponse`,
//! plus the tables it touched for the audit record. Not for errors PostgreSQL itself reports.
//!
//! A refusal message names objects (tables, columns, functions, settings, statement types) and never
//! repeats a value from the statement: literals may hold personal data.

use std::fmt;

use super::report::TableUse;

/// The SQLSTATE classes the rewriter refuses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// `42501` insufficient_privilege: the role may not do this.
    InsufficientPrivilege,
    /// `0A000` feature_not_supported: the proxy cannot prove the statement safe (unparsable, unsupported
    /// syntax, a setting the proxy depends on).
    FeatureNotSupported,
    /// `54001` statement_too_complex: a statement exceeds a bound of the proxy's `[limits]` (operator
    /// chain, set operations, nesting) checked before it is parsed.
    StatementTooComplex,
    /// `54000` program_limit_exceeded: a message exceeds a bound of the proxy's `[limits]`
    /// (statements, tokens).
    ProgramLimitExceeded,
    /// `53400` configuration_limit_exceeded: a user made more lookups than the role's
    /// `lookups_per_minute` allows (see `crate::lookup_sql`); retry later.
    ConfigurationLimitExceeded,
}

impl SqlState {
    /// The five-character code for the `ErrorResponse` `C` field.
    pub fn code(self) -> &'static str {
        match self {
            SqlState::InsufficientPrivilege => "42501",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::StatementTooComplex => "54001",
            SqlState::ProgramLimitExceeded => "54000",
            SqlState::ConfigurationLimitExceeded => "53400",
        }
    }
}

/// A statement the proxy refuses to forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub sqlstate: SqlState,
    /// Human-readable reason naming the object; never holds a literal value of the statement.
    pub message: String,
    /// Tables the refused statement referenced (as far as the analysis got), for the audit record.
    pub tables: Vec<TableUse>,
    /// Index of the refused statement in a multi-statement simple query (0 for the first).
    pub statement_index: usize,
}

impl Refusal {
    pub(crate) fn denied(message: impl Into<String>) -> Self {
        Self::new(SqlState::InsufficientPrivilege, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(SqlState::FeatureNotSupported, message)
    }

    pub(crate) fn too_complex(message: impl Into<String>) -> Self {
        Self::new(SqlState::StatementTooComplex, message)
    }

    pub(crate) fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(SqlState::ProgramLimitExceeded, message)
    }

    fn new(sqlstate: SqlState, message: impl Into<String>) -> Self {
        Self {
            sqlstate,
            message: message.into(),
            tables: Vec::new(),
            statement_index: 0,
        }
    }

    /// The refusal for text sqlparser cannot parse. Parser messages echo the offending token, which
    /// may be a literal: only the part naming what was expected and the position is kept.
    pub(crate) fn unparsable(parser_message: &str) -> Self {
        Self::unsupported(format!(
            "statement not supported by the Maschera parser: {}",
            sanitize_parser_message(parser_message)
        ))
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Keeps what the parser expected and where, drops every token it found (`found: 'secret'`) and any
/// quoted text.
fn sanitize_parser_message(message: &str) -> String {
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message);
    let location = message
        .rfind(" at Line: ")
        .map(|at| &message[at..])
        .unwrap_or("");
    let head = message.split(", found").next().unwrap_or("");
    let head = head.strip_suffix(location).unwrap_or(head);
    let mut clean = String::with_capacity(head.len() + location.len());
    let mut quoted = None;
    for ch in head.chars() {
        match quoted {
            Some(q) if ch == q => quoted = None,
            Some(_) => {}
            None if matches!(ch, '\'' | '"' | '`' | '$') => quoted = Some(ch),
            None => clean.push(ch),
        }
    }
    let clean = clean.trim_end_matches([' ', ',', ':']).trim();
    format!("{clean}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_lose_the_found_token() {
        let m = sanitize_parser_message(
            "sql parser error: Expected: end of statement, found: 'secret@example.it' at Line: 1, Column: 9",
        );
        assert_eq!(m, "Expected: end of statement at Line: 1, Column: 9");
        let m = sanitize_parser_message(
            "sql parser error: Unterminated string literal at Line: 1, Column: 18",
        );
        assert_eq!(m, "Unterminated string literal at Line: 1, Column: 18");
        let m = sanitize_parser_message("Expected 'secret' here");
        assert!(!m.contains("secret"), "{m}");
    }
}
