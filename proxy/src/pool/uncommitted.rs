//! A client's setting changes (see `settings`) held until PostgreSQL reports how the transaction
//! they ran in ended (see `session::transaction`): PostgreSQL undoes a session-level `SET` when its
//! transaction rolls back or aborts, so a change becomes the client's (and part of its pool key)
//! only once the transaction committed (`COMMIT`, `PREPARE TRANSACTION`, an implicit transaction
//! without an error). A rollback drops them; a `ROLLBACK` after a savepoint may have undone some or
//! all of them, which is undecidable here, so the session is pinned instead of guessing.
//! `SET LOCAL` and `set_config(..., true)` end with their transaction and are never held.
//! Not for: which statements change settings (`settings`) or what pins otherwise (`pinning`).

use super::settings::Change;
use crate::session::ServerEvent;
use crate::session::transaction::{End, Transaction};

/// Changes of the transaction in progress.
#[derive(Debug, Default)]
pub struct Uncommitted {
    changes: Vec<Change>,
    transaction: Transaction,
    /// ReadyForQuery messages seen: the cycle being answered is the next one.
    readies: u64,
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
    /// A change PostgreSQL completed (its CommandComplete is observed too).
    pub fn change(&mut self, change: Change) {
        if change != Change::Local {
            self.changes.push(change);
        }
    }

    /// PostgreSQL's next answer (CommandComplete, ErrorResponse or ReadyForQuery).
    pub fn observe(&mut self, event: ServerEvent<'_>) -> Outcome {
        let cycle = self.readies + 1;
        if let ServerEvent::Ready { .. } = event {
            self.readies += 1;
        }
        match self.transaction.observe(event, cycle) {
            None => Outcome::Held,
            Some(End::Committed) if !self.changes.is_empty() => {
                Outcome::Committed(std::mem::take(&mut self.changes))
            }
            Some(End::PartlyRolledBack | End::Unknown) if !self.changes.is_empty() => {
                self.changes.clear();
                Outcome::Unknown
            }
            Some(_) => {
                self.changes.clear();
                Outcome::Held
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(value: &str) -> Change {
        Change::Set("timezone".into(), value.into())
    }

    fn complete(held: &mut Uncommitted, tag: &str) -> Outcome {
        held.observe(ServerEvent::CommandComplete { tag })
    }

    fn ready(held: &mut Uncommitted, status: u8) -> Outcome {
        held.observe(ServerEvent::Ready { status })
    }

    fn error(held: &mut Uncommitted) -> Outcome {
        held.observe(ServerEvent::Error { sqlstate: "42P01" })
    }

    #[test]
    fn changes_count_once_their_transaction_committed() {
        // Autocommit: the implicit transaction commits at ReadyForQuery I.
        let mut held = Uncommitted::default();
        held.change(tz("UTC"));
        assert_eq!(ready(&mut held, b'I'), Outcome::Committed(vec![tz("UTC")]));
        // A block: held through T, committed by COMMIT.
        held.change(tz("a"));
        assert_eq!(ready(&mut held, b'T'), Outcome::Held);
        assert_eq!(
            complete(&mut held, "COMMIT"),
            Outcome::Committed(vec![tz("a")])
        );
        assert_eq!(ready(&mut held, b'I'), Outcome::Held);
        // Rolled back, or a failed transaction's COMMIT (answered ROLLBACK).
        held.change(tz("b"));
        assert_eq!(ready(&mut held, b'T'), Outcome::Held);
        assert_eq!(error(&mut held), Outcome::Held);
        assert_eq!(ready(&mut held, b'E'), Outcome::Held);
        assert_eq!(complete(&mut held, "ROLLBACK"), Outcome::Held);
        assert_eq!(ready(&mut held, b'I'), Outcome::Held);
        // An implicit transaction (extended protocol) that failed after the change.
        held.change(tz("c"));
        assert_eq!(error(&mut held), Outcome::Held);
        assert_eq!(ready(&mut held, b'I'), Outcome::Held);
        // SET LOCAL is never held.
        held.change(Change::Local);
        assert_eq!(ready(&mut held, b'I'), Outcome::Held);
    }

    #[test]
    fn a_rollback_after_a_savepoint_with_changes_held_is_unknown() {
        let mut held = Uncommitted::default();
        assert_eq!(ready(&mut held, b'T'), Outcome::Held);
        assert_eq!(complete(&mut held, "SAVEPOINT"), Outcome::Held);
        held.change(tz("x"));
        assert_eq!(complete(&mut held, "ROLLBACK"), Outcome::Unknown);
        // Without changes held, a rollback to a savepoint decides nothing.
        let mut held = Uncommitted::default();
        held.change(tz("y"));
        complete(&mut held, "SAVEPOINT");
        ready(&mut held, b'T');
        assert_eq!(complete(&mut held, "RELEASE"), Outcome::Held);
        assert_eq!(
            complete(&mut held, "COMMIT"),
            Outcome::Committed(vec![tz("y")])
        );
    }
}
