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
//! - The same in the extended protocol (pgjdbc without autocommit sends its `BEGIN` as Parse, Bind
//!   and Execute in the batch of the transaction's first statement, named `S_n` once prepared;
//!   psycopg's pipeline mode and libpq's `PQsendQueryParams` add a Describe): a Parse of `BEGIN`
//!   between transactions is sent as a Parse of [`HELD_BEGIN_SQL`] under the client's name, a
//!   harmless statement PostgreSQL answers as it answers `BEGIN` (ParseComplete, BindComplete,
//!   NoData, a CommandComplete the client gets as `BEGIN`), so every answer comes from PostgreSQL in
//!   order. Its Execute holds the block; the replay (a Query sent before the first real statement,
//!   possibly in the same batch) then ends the batch's cycle, whose answers to it and ReadyForQuery
//!   the client does not get. A `COMMIT` / `ROLLBACK` in the extended protocol with nothing replayed
//!   runs outside a block (its warning withheld; `COMMIT` of a failed block answers `ROLLBACK`).
//!   A named `BEGIN` prepared so and bound later where it cannot be held (after statements of the
//!   same implicit transaction) is refused with 0A000; inside a block it answers `BEGIN`. Nothing is
//!   replayed in a batch after a message the proxy refused (PostgreSQL skips the rest of the batch
//!   up to its Sync, a Query included, so the replay would never be answered).
//!
//! Not for: statements other than transaction control before the end user is set (`SET LOCAL
//! statement_timeout`: they replay the `BEGIN`).

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

/// The first words of transaction control.
const CONTROL_WORDS: &[&str] = &["begin", "start", "commit", "end", "rollback", "abort"];

/// The transaction control a Query's text is, if it is exactly one such statement.
pub fn control(text: &[u8]) -> Option<Control> {
    // Cheap: a statement that does not start with one of these words is not looked at further.
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let first = &text[start..];
    let starts_with = |word: &str| {
        first.len() >= word.len() && first[..word.len()].eq_ignore_ascii_case(word.as_bytes())
    };
    if text.len() > 256 || !CONTROL_WORDS.iter().any(|w| starts_with(w)) {
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

/// What PostgreSQL runs in place of an extended-protocol `BEGIN` the proxy holds: it answers
/// every message as `BEGIN` would (no parameters, NoData, one CommandComplete) and leaves nothing
/// past the transaction (outside a block its warning, 25P01, is withheld).
pub const HELD_BEGIN_SQL: &str = "SET LOCAL maschera_end_user.held_begin = ''";

/// A Query of transaction control the proxy answers with two statements of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// `BEGIN <modes>; ROLLBACK` answering the client's `BEGIN`: the first CommandComplete is the
    /// client's, the second is not.
    Begin,
    /// `BEGIN; COMMIT` (or `ROLLBACK`) answering the client's end of the block: the second
    /// CommandComplete is the client's.
    End,
}

/// A cycle answered while a block is held (a route, a refusal; by default ReadyForQuery `I` shows
/// as `T`, `E` once the block failed), with what the proxy added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnCycle {
    pub answered: Option<Answered>,
    /// The held `BEGIN` was replayed at the end of this cycle: the replay's CommandComplete and
    /// the cycle's ReadyForQuery are the proxy's.
    pub replayed: bool,
    /// The held block ended in this cycle by an extended-protocol `COMMIT` or `ROLLBACK` with
    /// nothing replayed (`true`: the block had failed, so `COMMIT` answers `ROLLBACK`).
    pub ended: Option<bool>,
}

/// How the client gets one CommandComplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Pass,
    Withhold,
    /// With this tag.
    As(&'static str),
}

impl OwnCycle {
    /// How the client gets the `n`th CommandComplete (from 0) of this cycle, tagged `tag`.
    pub fn completion(self, n: usize, tag: &[u8]) -> Shown {
        match self.answered {
            Some(Answered::Begin) if n > 0 => Shown::Withhold,
            Some(Answered::End) if n == 0 => Shown::Withhold,
            Some(_) => Shown::Pass,
            None if self.replayed && tag == b"BEGIN" => Shown::Withhold,
            None if self.ended == Some(true) && tag == b"COMMIT" => Shown::As("ROLLBACK"),
            None => Shown::Pass,
        }
    }

    /// The transaction status the client gets for PostgreSQL's `status` (`None`: no
    /// ReadyForQuery); `failed`: the held block failed.
    pub fn status(self, status: u8, failed: bool) -> Option<u8> {
        if self.replayed {
            return None;
        }
        let ends = self.ended.is_some() || self.answered == Some(Answered::End);
        Some(match status {
            b'I' if !ends && failed => b'E',
            b'I' if !ends => b'T',
            other => other,
        })
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
    fn own_cycles_show_the_clients_answers_only() {
        let begin = OwnCycle {
            answered: Some(Answered::Begin),
            ..OwnCycle::default()
        };
        assert_eq!(begin.completion(0, b"BEGIN"), Shown::Pass);
        assert_eq!(begin.completion(1, b"ROLLBACK"), Shown::Withhold);
        assert_eq!(begin.status(b'I', false), Some(b'T'));
        let replayed = OwnCycle {
            replayed: true,
            ..OwnCycle::default()
        };
        assert_eq!(replayed.completion(0, b"SET"), Shown::Pass);
        assert_eq!(replayed.completion(1, b"BEGIN"), Shown::Withhold);
        assert_eq!(replayed.status(b'T', false), None);
        let failed_end = OwnCycle {
            ended: Some(true),
            ..OwnCycle::default()
        };
        assert_eq!(failed_end.completion(0, b"COMMIT"), Shown::As("ROLLBACK"));
        assert_eq!(failed_end.status(b'I', true), Some(b'I'));
        assert_eq!(OwnCycle::default().status(b'I', true), Some(b'E'));
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
