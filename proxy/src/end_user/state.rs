//! Which end user is in force in one application session, with PostgreSQL's semantics for `SET`:
//! a session-level change lasts until changed, but one made inside a transaction that rolls back is
//! undone; `SET LOCAL` lasts until the transaction ends (and has no effect outside one); switching
//! to another end user after statements of the current transaction ran under another is refused.
//!
//! Changes apply when the client's message is decided (so the statements after it in the same
//! batch are served as the new end user) and are kept or undone when PostgreSQL ends the
//! transaction, as `session::transaction` follows it: kept at a `COMMIT` or the end of an implicit
//! transaction without an error, undone by a rollback; a `ROLLBACK` after a savepoint decides
//! nothing until the block's end, which then counts as rolled back.
//!
//! An implicit transaction (a Query outside a transaction block; an extended-protocol batch up to
//! its Sync outside a block) ends with its first error: PostgreSQL runs nothing more of it, and its
//! ReadyForQuery will say `I`. Pipelining clients (tokio-postgres, any driver that returns an error
//! as soon as it has it) send their next statement before that ReadyForQuery, so the transaction
//! is taken as ended at the error (for the statements of later cycles), not at the ReadyForQuery.
//! Inside a block (after ReadyForQuery `T`/`E`, or a `BEGIN` completed in the same cycle) an error
//! leaves the block open (status `E`) until its `COMMIT` or `ROLLBACK`.
//!
//! Not for: recognising the statements (see `route`) or verifying tokens (see `token`).

use super::application::EndUser;
use crate::session::ServerEvent;
use crate::session::transaction::{End, Transaction};
use std::sync::Arc;

/// The end user of a change (`None`: no end user, after `RESET`).
pub type Who = Option<Arc<EndUser>>;

/// How long a change lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Session,
    Local,
}

/// Why a switch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRefused {
    pub code: &'static str,
    pub message: &'static str,
}

/// The end-user state of one session.
#[derive(Debug, Default)]
pub struct EndUserState {
    /// In force outside transactions.
    session: Who,
    /// A session-level change made in the current transaction (undone if it rolls back).
    pending: Option<Who>,
    /// `SET LOCAL` in the current transaction.
    local: Option<Who>,
    /// Who the statements of the current transaction ran under, once one ran.
    ran_under: Option<Who>,
    /// The cycle of the last statement that ran (see [`EndUserState::statement`]).
    ran_in: u64,
    transaction: Transaction,
}

/// The same person in the same role with the same attributes (a fresh token of the same end user is
/// not a switch).
fn same(a: &Who, b: &Who) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.name == b.name && a.role == b.role && a.attributes == b.attributes,
        _ => false,
    }
}

impl EndUserState {
    /// The end user statements are served as now.
    pub fn current(&self) -> &Who {
        self.local
            .as_ref()
            .or(self.pending.as_ref())
            .unwrap_or(&self.session)
    }

    /// Whether the session is in a transaction block (as of the last ReadyForQuery).
    pub fn in_block(&self) -> bool {
        self.transaction.in_block()
    }

    /// The proxy answered a `BEGIN` and holds it back (see `held`): the session is in a block,
    /// in which nothing ran yet.
    pub fn begin_held(&mut self) {
        self.transaction.begin_held();
    }

    /// A switch to `who` for `scope`. `own_transaction`: the route is a Query, a transaction of its
    /// own outside a block (where `SET LOCAL` has no effect).
    pub fn switch(
        &mut self,
        who: Who,
        scope: Scope,
        own_transaction: bool,
    ) -> Result<(), SwitchRefused> {
        if let Some(ran) = &self.ran_under
            && !same(ran, &who)
        {
            return Err(SwitchRefused {
                code: "25001",
                message: "statements of this transaction already ran as another end user: set the end user before the transaction's first statement (right after BEGIN), or after COMMIT or ROLLBACK",
            });
        }
        match scope {
            Scope::Local if own_transaction && !self.in_block() => {}
            Scope::Local => self.local = Some(who),
            Scope::Session => {
                self.local = None;
                self.pending = Some(who);
            }
        }
        Ok(())
    }

    /// A statement other than a switch of cycle `cycle` is served now (as
    /// [`EndUserState::current`]).
    pub fn statement(&mut self, cycle: u64) {
        if self.ran_under.is_none() {
            self.ran_under = Some(self.current().clone());
        }
        self.ran_in = self.ran_in.max(cycle);
    }

    /// PostgreSQL's answers to cycle `cycle`: transaction ends keep or undo the changes.
    pub fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        match self.transaction.observe(event, cycle) {
            None | Some(End::PartlyRolledBack) => {}
            Some(End::Committed) => self.end(true, cycle),
            Some(End::RolledBack | End::Unknown) => self.end(false, cycle),
        }
    }

    /// The transaction that ended with cycle `cycle` is over: its session-level change kept if
    /// `committed`, its local one gone.
    fn end(&mut self, committed: bool, cycle: u64) {
        if let Some(pending) = self.pending.take()
            && committed
        {
            self.session = pending;
        }
        self.local = None;
        // Statements of later cycles (pipelined) belong to the next transaction.
        if self.ran_in <= cycle {
            self.ran_under = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn user(name: &str) -> Who {
        Some(Arc::new(EndUser {
            name: name.into(),
            role: "sales".into(),
            attributes: BTreeMap::new(),
            token_id: format!("id-{name}"),
            expires: u64::MAX,
        }))
    }

    fn name(state: &EndUserState) -> Option<&str> {
        state.current().as_ref().map(|u| u.name.as_str())
    }

    fn ready(state: &mut EndUserState, status: u8) {
        ready_at(state, status, 1);
    }

    fn ready_at(state: &mut EndUserState, status: u8, cycle: u64) {
        state.on_server_event(ServerEvent::Ready { status }, cycle);
    }

    fn complete(state: &mut EndUserState, tag: &str) {
        state.on_server_event(ServerEvent::CommandComplete { tag }, 1);
    }

    fn error_at(state: &mut EndUserState, cycle: u64) {
        state.on_server_event(ServerEvent::Error { sqlstate: "42P01" }, cycle);
    }

    #[test]
    fn session_changes_last_and_are_undone_by_a_rollback() {
        let mut state = EndUserState::default();
        state.switch(user("sam"), Scope::Session, true).unwrap();
        complete(&mut state, "SET");
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("sam"));
        // BEGIN; SET maschera.end_user = tom; ROLLBACK: sam again.
        complete(&mut state, "BEGIN");
        ready(&mut state, b'T');
        state.switch(user("tom"), Scope::Session, true).unwrap();
        assert_eq!(name(&state), Some("tom"));
        complete(&mut state, "SET");
        ready(&mut state, b'T');
        complete(&mut state, "ROLLBACK");
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("sam"));
        // The same committed: tom stays.
        ready(&mut state, b'T');
        state.switch(user("tom"), Scope::Session, true).unwrap();
        complete(&mut state, "COMMIT");
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("tom"));
        // A failed implicit transaction keeps the old one; RESET clears it.
        state.switch(user("ann"), Scope::Session, true).unwrap();
        error_at(&mut state, 1);
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("tom"));
        state.switch(None, Scope::Session, true).unwrap();
        ready(&mut state, b'I');
        assert_eq!(name(&state), None);
    }

    #[test]
    fn local_changes_end_with_the_transaction_and_do_nothing_outside_one() {
        let mut state = EndUserState::default();
        state.switch(user("sam"), Scope::Session, true).unwrap();
        ready(&mut state, b'I');
        state.switch(user("tom"), Scope::Local, true).unwrap();
        assert_eq!(name(&state), Some("sam"), "SET LOCAL outside a transaction");
        ready(&mut state, b'I');
        // In an extended-protocol batch (its implicit transaction lasts until Sync) it applies.
        state.switch(user("tom"), Scope::Local, false).unwrap();
        assert_eq!(name(&state), Some("tom"));
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("sam"));
        ready(&mut state, b'T');
        state.switch(user("tom"), Scope::Local, true).unwrap();
        assert_eq!(name(&state), Some("tom"));
        complete(&mut state, "COMMIT");
        ready(&mut state, b'I');
        assert_eq!(name(&state), Some("sam"));
    }

    #[test]
    fn switching_after_statements_ran_as_another_is_refused_until_the_transaction_ends() {
        let mut state = EndUserState::default();
        ready(&mut state, b'T');
        state.switch(user("sam"), Scope::Local, true).unwrap();
        state.statement(1);
        let refused = state.switch(user("tom"), Scope::Local, true).unwrap_err();
        assert_eq!(refused.code, "25001");
        assert!(state.switch(None, Scope::Session, true).is_err());
        // A fresh token of the same end user is not a switch.
        let mut again = user("sam");
        Arc::get_mut(again.as_mut().unwrap()).unwrap().token_id = "id-2".into();
        state.switch(again, Scope::Local, true).unwrap();
        assert_eq!(name(&state), Some("sam"));
        complete(&mut state, "ROLLBACK");
        ready(&mut state, b'I');
        state.switch(user("tom"), Scope::Session, true).unwrap();
        assert_eq!(name(&state), Some("tom"));
    }

    /// The race of pipelining clients: the next statement comes after the error, before the
    /// ReadyForQuery of the failed cycle.
    #[test]
    fn an_implicit_transaction_ends_with_its_error_and_a_block_does_not() {
        let mut state = EndUserState::default();
        state.switch(user("sam"), Scope::Session, true).unwrap();
        ready_at(&mut state, b'I', 1);
        // A failed statement outside a block, then at once a switch (cycle 3) before the
        // ReadyForQuery of cycle 2.
        state.statement(2);
        error_at(&mut state, 2);
        state.switch(user("tom"), Scope::Session, true).unwrap();
        ready_at(&mut state, b'I', 2);
        assert_eq!(name(&state), Some("tom"), "pending until its own end");
        ready_at(&mut state, b'I', 3);
        assert_eq!(name(&state), Some("tom"));
        // The failed cycle's own switch is undone at the error.
        state.switch(user("sam"), Scope::Local, false).unwrap();
        state.statement(4);
        error_at(&mut state, 4);
        assert_eq!(name(&state), Some("tom"));
        ready_at(&mut state, b'I', 4);
        // "BEGIN; bad" in one Query: the block stays (status E), the switch is refused.
        complete(&mut state, "BEGIN");
        state.statement(5);
        error_at(&mut state, 5);
        assert!(state.switch(user("sam"), Scope::Session, true).is_err());
        ready_at(&mut state, b'E', 5);
        assert!(state.switch(user("sam"), Scope::Session, true).is_err());
        complete(&mut state, "ROLLBACK");
        ready_at(&mut state, b'I', 6);
        state.switch(user("sam"), Scope::Session, true).unwrap();
        ready_at(&mut state, b'I', 7);
        assert_eq!(name(&state), Some("sam"));
        // An error inside a block (after ReadyForQuery T) keeps the block.
        ready_at(&mut state, b'T', 8);
        state.statement(9);
        error_at(&mut state, 9);
        assert!(state.switch(user("tom"), Scope::Session, true).is_err());
        ready_at(&mut state, b'E', 9);
        ready_at(&mut state, b'I', 10);
        // Pipelined cycles: a statement of cycle 12 was sent before cycle 11 failed; it is of
        // the next transaction, which ran as sam.
        state.statement(11);
        state.statement(12);
        error_at(&mut state, 11);
        assert!(state.switch(user("tom"), Scope::Session, true).is_err());
        ready_at(&mut state, b'I', 11);
        ready_at(&mut state, b'I', 12);
        state.switch(user("tom"), Scope::Session, true).unwrap();
    }
}
