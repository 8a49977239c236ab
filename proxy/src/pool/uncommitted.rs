//! A client's setting changes (see `settings`) held until PostgreSQL reports how the transaction
//! they ran in ended: PostgreSQL undoes a session-level `SET` when its transaction rolls back or
//! aborts, so a change becomes the client's (and part of its pool key) only once the transaction
//! committed: a `COMMIT` CommandComplete (a `COMMIT` of a failed transaction answers `ROLLBACK`),
//! `PREPARE TRANSACTION` (its settings stay with the session), or ReadyForQuery `I` ending an
//! implicit transaction without an ErrorResponse since the last ReadyForQuery. A `ROLLBACK` drops
//! them; `ROLLBACK TO SAVEPOINT` answers `ROLLBACK` as well, so after a savepoint a rollback with
//! changes held is undecidable here, and the session is pinned instead of guessing.
//! `SET LOCAL` and `set_config(..., true)` end with their transaction and are never held.
//! Not for: which statements change settings (`settings`) or what pins otherwise (`pinning`).

use super::settings::Change;

/// Changes of the transaction in progress.
#[derive(Debug, Default)]
pub struct Uncommitted {
    changes: Vec<Change>,
    /// An ErrorResponse since the last ReadyForQuery: an implicit transaction ending now aborted.
    failed: bool,
    /// A savepoint was set since the session was last idle.
    savepoints: bool,
}

/// What a message means for the changes held.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing decided yet.
    Held,
    /// These changes are the client's now.
    Committed(Vec<Change>),
    /// Some changes may or may not have been undone (a rollback after a savepoint).
    Unknown,
}

impl Uncommitted {
    /// A change PostgreSQL completed.
    pub fn change(&mut self, change: Change) {
        if change != Change::Local {
            self.changes.push(change);
        }
    }

    /// An ErrorResponse.
    pub fn error(&mut self) {
        self.failed = true;
    }

    /// A CommandComplete tag.
    pub fn completion(&mut self, tag: &str) -> Outcome {
        match tag {
            "COMMIT" | "PREPARE TRANSACTION" => self.take(),
            "SAVEPOINT" => {
                self.savepoints = true;
                Outcome::Held
            }
            "ROLLBACK" if self.changes.is_empty() => Outcome::Held,
            "ROLLBACK" if self.savepoints => {
                self.changes.clear();
                Outcome::Unknown
            }
            "ROLLBACK" => {
                self.changes.clear();
                Outcome::Held
            }
            _ => Outcome::Held,
        }
    }

    /// A ReadyForQuery with this transaction status.
    pub fn ready(&mut self, status: u8) -> Outcome {
        let failed = std::mem::take(&mut self.failed);
        if status != b'I' {
            return Outcome::Held;
        }
        self.savepoints = false;
        if failed {
            self.changes.clear();
            return Outcome::Held;
        }
        self.take()
    }

    fn take(&mut self) -> Outcome {
        if self.changes.is_empty() {
            Outcome::Held
        } else {
            Outcome::Committed(std::mem::take(&mut self.changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(value: &str) -> Change {
        Change::Set("timezone".into(), value.into())
    }

    #[test]
    fn changes_count_once_their_transaction_committed() {
        // Autocommit: the implicit transaction commits at ReadyForQuery I.
        let mut held = Uncommitted::default();
        held.change(tz("UTC"));
        assert_eq!(held.ready(b'I'), Outcome::Committed(vec![tz("UTC")]));
        // A block: held through T, committed by COMMIT.
        held.change(tz("a"));
        assert_eq!(held.ready(b'T'), Outcome::Held);
        assert_eq!(held.completion("COMMIT"), Outcome::Committed(vec![tz("a")]));
        assert_eq!(held.ready(b'I'), Outcome::Held);
        // Rolled back, or a failed transaction's COMMIT (answered ROLLBACK).
        held.change(tz("b"));
        held.error();
        assert_eq!(held.ready(b'E'), Outcome::Held);
        assert_eq!(held.completion("ROLLBACK"), Outcome::Held);
        assert_eq!(held.ready(b'I'), Outcome::Held);
        // An implicit transaction (extended protocol) that failed after the change.
        held.change(tz("c"));
        held.error();
        assert_eq!(held.ready(b'I'), Outcome::Held);
        // SET LOCAL is never held.
        held.change(Change::Local);
        assert_eq!(held.ready(b'I'), Outcome::Held);
    }

    #[test]
    fn a_rollback_after_a_savepoint_with_changes_held_is_unknown() {
        let mut held = Uncommitted::default();
        assert_eq!(held.completion("SAVEPOINT"), Outcome::Held);
        held.change(tz("x"));
        assert_eq!(held.completion("ROLLBACK"), Outcome::Unknown);
        // Without changes held, a rollback to a savepoint decides nothing.
        let mut held = Uncommitted::default();
        held.change(tz("y"));
        held.completion("SAVEPOINT");
        held.ready(b'T');
        assert_eq!(held.completion("RELEASE"), Outcome::Held);
        assert_eq!(held.completion("COMMIT"), Outcome::Committed(vec![tz("y")]));
    }
}
