//! How PostgreSQL's transactions end, followed from its answers ([`ServerEvent`]: CommandComplete
//! tags, errors, ReadyForQuery statuses): one tracker for the state the proxy keeps per
//! transaction and must keep or drop as PostgreSQL does (a pooled client's `SET`s, see
//! `pool::uncommitted`; the end user in force, see `end_user::state`).
//!
//! - `COMMIT` (also `END`, and a failed block's `COMMIT` answers `ROLLBACK`) and `PREPARE
//!   TRANSACTION` (which keeps the session's settings) commit, at their CommandComplete.
//! - `ROLLBACK` rolls back; after a `SAVEPOINT` in the block it may be `ROLLBACK TO SAVEPOINT`
//!   (same tag, the block goes on): what it undid is not known ([`End::PartlyRolledBack`]).
//! - An implicit transaction (a Query outside a block, an extended-protocol batch up to its Sync)
//!   ends with its first error, at the error: PostgreSQL runs nothing more of it, and pipelining
//!   clients send their next statement before its ReadyForQuery. Inside a block an error leaves the
//!   block open (status `E`) until its `COMMIT` or `ROLLBACK`.
//! - ReadyForQuery `I` ends an implicit transaction without error (committed), unless its end was
//!   already seen in that cycle and nothing completed after it; it ends a block left without a
//!   `COMMIT` or plain `ROLLBACK` (after a rollback that may have been to a savepoint) as
//!   [`End::Unknown`].
//!
//! Not for: what a consumer keeps or drops at an end (its own), or which statements change
//! anything (`pool::settings`, `end_user::route`).

use super::ServerEvent;

/// How a transaction ended (or, for [`End::PartlyRolledBack`], was rolled back in part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its changes stay.
    Committed,
    /// Its changes are undone.
    RolledBack,
    /// A `ROLLBACK` after a savepoint: to the savepoint (the block goes on, what came after the
    /// savepoint is undone) or of the whole block.
    PartlyRolledBack,
    /// The block ended at ReadyForQuery `I` after such a rollback: it rolled back, and what
    /// completed after the rollback in the same cycle may have committed.
    Unknown,
}

/// The transaction state of one session, as PostgreSQL's answers tell it.
#[derive(Debug, Default)]
pub struct Transaction {
    /// In a transaction block: as the last ReadyForQuery said, or a `BEGIN` completed since.
    in_block: bool,
    /// An ErrorResponse since the last ReadyForQuery.
    failed: bool,
    /// A `SAVEPOINT` completed since the session was last idle.
    savepoints: bool,
    /// The cycle in which the transaction already ended (by its tag or its error), so its
    /// ReadyForQuery ends nothing more unless a statement completed after that end.
    ended_in: Option<u64>,
    /// A CommandComplete came after that end.
    completed_since_end: bool,
}

impl Transaction {
    /// Whether the session is in a transaction block.
    pub fn in_block(&self) -> bool {
        self.in_block
    }

    /// The proxy answered a `BEGIN` itself and sends it later (see `end_user::held`): the session
    /// is in a block.
    pub fn begin_held(&mut self) {
        self.in_block = true;
    }

    /// PostgreSQL's answer `event` to cycle `cycle`: the end it makes, if any.
    pub fn observe(&mut self, event: ServerEvent<'_>, cycle: u64) -> Option<End> {
        match event {
            ServerEvent::CommandComplete { tag } => {
                self.completed_since_end = true;
                let end = match tag {
                    "BEGIN" | "START TRANSACTION" => {
                        self.in_block = true;
                        return None;
                    }
                    "SAVEPOINT" => {
                        self.savepoints = true;
                        return None;
                    }
                    "COMMIT" | "PREPARE TRANSACTION" => End::Committed,
                    "ROLLBACK" if self.savepoints => return Some(End::PartlyRolledBack),
                    "ROLLBACK" => End::RolledBack,
                    _ => return None,
                };
                self.in_block = false;
                self.savepoints = false;
                Some(self.ended(end, cycle))
            }
            ServerEvent::Error { .. } => {
                self.failed = true;
                (!self.in_block).then(|| self.ended(End::RolledBack, cycle))
            }
            ServerEvent::Ready { status } => {
                let failed = std::mem::take(&mut self.failed);
                let ended_in = self.ended_in.take();
                let completed = std::mem::take(&mut self.completed_since_end);
                if status != b'I' {
                    self.in_block = true;
                    return None;
                }
                self.savepoints = false;
                let was_block = std::mem::take(&mut self.in_block);
                if ended_in == Some(cycle) && !completed {
                    return None;
                }
                Some(match (failed, was_block) {
                    (true, _) => End::RolledBack,
                    (false, true) => End::Unknown,
                    (false, false) => End::Committed,
                })
            }
        }
    }

    fn ended(&mut self, end: End, cycle: u64) -> End {
        self.ended_in = Some(cycle);
        self.completed_since_end = false;
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &mut Transaction, tag: &str, cycle: u64) -> Option<End> {
        t.observe(ServerEvent::CommandComplete { tag }, cycle)
    }

    fn error(t: &mut Transaction, cycle: u64) -> Option<End> {
        t.observe(ServerEvent::Error { sqlstate: "42P01" }, cycle)
    }

    fn ready(t: &mut Transaction, status: u8, cycle: u64) -> Option<End> {
        t.observe(ServerEvent::Ready { status }, cycle)
    }

    #[test]
    fn implicit_transactions_commit_at_ready_and_roll_back_at_their_error() {
        let mut t = Transaction::default();
        assert_eq!(tag(&mut t, "SET", 1), None);
        assert_eq!(ready(&mut t, b'I', 1), Some(End::Committed));
        assert_eq!(error(&mut t, 2), Some(End::RolledBack));
        assert_eq!(ready(&mut t, b'I', 2), None, "ended at the error");
        // A pipelined cycle's error: the next cycle's ReadyForQuery ends its own transaction.
        assert_eq!(error(&mut t, 3), Some(End::RolledBack));
        assert_eq!(ready(&mut t, b'I', 3), None);
        assert_eq!(ready(&mut t, b'I', 4), Some(End::Committed));
    }

    #[test]
    fn blocks_end_at_their_commit_or_rollback_and_errors_leave_them_open() {
        let mut t = Transaction::default();
        assert_eq!(tag(&mut t, "BEGIN", 1), None);
        assert!(t.in_block());
        assert_eq!(ready(&mut t, b'T', 1), None);
        assert_eq!(error(&mut t, 2), None);
        assert_eq!(ready(&mut t, b'E', 2), None);
        assert_eq!(tag(&mut t, "ROLLBACK", 3), Some(End::RolledBack));
        assert_eq!(ready(&mut t, b'I', 3), None);
        assert!(!t.in_block());
        // BEGIN; ...; COMMIT; SET in one Query: the block commits at its tag, the statement after
        // it in an implicit transaction of its own at ReadyForQuery.
        tag(&mut t, "BEGIN", 4);
        assert_eq!(tag(&mut t, "COMMIT", 4), Some(End::Committed));
        assert_eq!(tag(&mut t, "SET", 4), None);
        assert_eq!(ready(&mut t, b'I', 4), Some(End::Committed));
        // PREPARE TRANSACTION keeps the session's settings: a commit here.
        ready(&mut t, b'T', 5);
        assert_eq!(tag(&mut t, "PREPARE TRANSACTION", 6), Some(End::Committed));
        assert_eq!(ready(&mut t, b'I', 6), None);
    }

    #[test]
    fn a_rollback_after_a_savepoint_is_partial_and_the_blocks_end_after_it_unknown() {
        let mut t = Transaction::default();
        ready(&mut t, b'T', 1);
        tag(&mut t, "SAVEPOINT", 2);
        assert_eq!(tag(&mut t, "ROLLBACK", 2), Some(End::PartlyRolledBack));
        assert_eq!(
            ready(&mut t, b'T', 2),
            None,
            "to the savepoint: the block goes on"
        );
        assert_eq!(tag(&mut t, "ROLLBACK", 3), Some(End::PartlyRolledBack));
        assert_eq!(ready(&mut t, b'I', 3), Some(End::Unknown));
        // The next block starts without savepoints.
        ready(&mut t, b'T', 4);
        assert_eq!(tag(&mut t, "ROLLBACK", 5), Some(End::RolledBack));
    }
}
