//! A transaction block whose `BEGIN` the proxy holds back until the end user of the transaction is
//! known: psycopg and SQLAlchemy without autocommit start every transaction with `BEGIN`, and the
//! application sets the end user after it (`BEGIN; SET LOCAL maschera.end_user = '<token>'; ...`).
//! A transaction is served on one upstream connection, its end user's, so the `BEGIN` cannot go to
//! a connection before the end user is known.
//!
//! - A Query that is only `BEGIN` / `START TRANSACTION` (with transaction modes), sent between
//!   transactions with nothing in flight, is answered by the proxy: PostgreSQL runs
//!   `BEGIN <modes>; ROLLBACK` (so that it checks the modes and answers in order), the client gets
//!   `BEGIN` and ReadyForQuery `T`.
//! - Routes (`SET LOCAL maschera.end_user`, `set_config`) may follow and take effect in the block.
//! - The first other statement of the block replays the `BEGIN` on the connection that serves it
//!   (a Query sent before it, whose answers the client does not get), so from there on PostgreSQL
//!   holds the block and answers as usual.
//! - `COMMIT` / `ROLLBACK` (and `END`, `ABORT`) with nothing replayed: PostgreSQL runs
//!   `BEGIN; COMMIT` (or `ROLLBACK`), the client gets the second answer.
//! - An error in the block before anything was replayed (a refused token, say) leaves it failed as
//!   PostgreSQL would: the client sees status `E`, statements are refused with 25P02 until the
//!   block ends, and `COMMIT` answers `ROLLBACK`.
//!
//! Not for: the extended protocol's `BEGIN` (pgjdbc sends it in the batch of the transaction's first
//! statement; it binds the transaction to the end user in force, as before), or statements other
//! than transaction control before the end user is set (`SET LOCAL statement_timeout`: they replay
//! the `BEGIN`).

use super::route::{Token, tokens};
use crate::wire::Frontend;
use bytes::Bytes;

/// A transaction-control Query the proxy may answer in a held block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `BEGIN` / `START TRANSACTION` with its modes, as the proxy re-serialises it.
    Begin(String),
    Commit,
    Rollback,
}

/// Words of transaction modes (`ISOLATION LEVEL ...`, `READ WRITE | READ ONLY`, `[NOT] DEFERRABLE`).
const MODE_WORDS: &[&str] = &[
    "isolation",
    "level",
    "serializable",
    "repeatable",
    "read",
    "committed",
    "uncommitted",
    "write",
    "only",
    "not",
    "deferrable",
];

/// The transaction control a Query's text is, if it is exactly one such statement.
pub fn control(text: &[u8]) -> Option<Control> {
    // Cheap: a Query that does not start with one of these letters is not looked at further.
    let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(
        first.to_ascii_lowercase(),
        b'b' | b's' | b'c' | b'e' | b'r' | b'a'
    ) {
        return None;
    }
    let tokens = tokens(std::str::from_utf8(text).ok()?)?;
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(word)) => word.as_str(),
        _ => "",
    };
    let (kind, mut at) = match word(0) {
        "begin" => ("begin", 1),
        "start" if word(1) == "transaction" => ("begin", 2),
        "commit" | "end" => ("commit", 1),
        "rollback" | "abort" => ("rollback", 1),
        _ => return None,
    };
    if matches!(word(at), "work" | "transaction") && !(kind == "begin" && at == 2) {
        at += 1;
    }
    let rest = &tokens[at..];
    if kind != "begin" {
        let no_chain = ["and", "no", "chain"];
        let plain = rest.is_empty()
            || (rest.len() == 3
                && rest
                    .iter()
                    .zip(no_chain)
                    .all(|(t, w)| matches!(t, Token::Word(x) if x == w)));
        return plain.then_some(if kind == "commit" {
            Control::Commit
        } else {
            Control::Rollback
        });
    }
    let mut sql = String::from("BEGIN");
    for token in rest {
        match token {
            Token::Word(word) if MODE_WORDS.contains(&word.as_str()) => {
                sql.push(' ');
                sql.push_str(word);
            }
            Token::Punct(b',') => sql.push(','),
            _ => return None,
        }
    }
    Some(Control::Begin(sql))
}

/// A Query message of `sql` (the proxy's own text: no NUL byte), by the project's one frontend
/// encoder.
pub fn query(sql: &str) -> Bytes {
    Frontend::Query {
        sql: sql.as_bytes(),
    }
    .to_frame()
    .freeze()
}

/// What the proxy's own cycles of a held block are, for the answers PostgreSQL sends to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnCycle {
    /// `BEGIN <modes>; ROLLBACK` answering the client's `BEGIN`: the first CommandComplete is the
    /// client's, the second is not; ReadyForQuery `I` shows as `T`.
    Begin,
    /// A cycle of the client's in the held block (a route, a refusal): ReadyForQuery `I` shows as
    /// `T` (`E` once the block failed).
    InBlock,
    /// The replayed `BEGIN`: nothing of it is the client's.
    Replay,
    /// `BEGIN; COMMIT` (or `ROLLBACK`) answering the client's end of the block: the second
    /// CommandComplete is the client's.
    End,
}

impl OwnCycle {
    /// Whether the client gets the `n`th CommandComplete (from 0) of this cycle.
    pub fn shows_completion(self, n: usize) -> bool {
        match self {
            OwnCycle::Begin => n == 0,
            OwnCycle::InBlock => true,
            OwnCycle::Replay => false,
            OwnCycle::End => n > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_transaction_control_is_recognised() {
        let begin = |sql: &str| Some(Control::Begin(sql.into()));
        for (text, expected) in [
            ("BEGIN", begin("BEGIN")),
            ("begin;", begin("BEGIN")),
            ("BEGIN WORK", begin("BEGIN")),
            ("START TRANSACTION", begin("BEGIN")),
            (
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                begin("BEGIN isolation level repeatable read, read only"),
            ),
            (
                "start transaction isolation level serializable not deferrable",
                begin("BEGIN isolation level serializable not deferrable"),
            ),
            ("COMMIT", Some(Control::Commit)),
            ("end transaction", Some(Control::Commit)),
            ("COMMIT AND NO CHAIN", Some(Control::Commit)),
            ("ROLLBACK", Some(Control::Rollback)),
            ("abort work;", Some(Control::Rollback)),
            ("COMMIT AND CHAIN", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("ROLLBACK PREPARED 'x'", None),
            ("BEGIN; SELECT 1", None),
            ("BEGIN ISOLATION LEVEL 'x'", None),
            ("BEGIN TRANSACTION TRANSACTION", None),
            ("START", None),
            ("SELECT 1", None),
            ("savepoint a", None),
        ] {
            assert_eq!(control(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn frames_are_whole_messages() {
        assert_eq!(&query("BEGIN")[..], b"Q\0\0\0\x0aBEGIN\0");
        assert_eq!(
            &crate::wire::frame::ready_for_query(b'T')[..],
            b"Z\0\0\0\x05T"
        );
    }
}
