//! Which end user is in force in one application session, with PostgreSQL's semantics for `SET`:
//! a session-level change lasts until changed, but one made inside a transaction that rolls back is
//! undone; `SET LOCAL` lasts until the transaction ends (and has no effect outside one); switching
//! to another end user after statements of the current transaction ran under another is refused.
//!
//! Changes apply when the client's message is decided (so the statements after it in the same
//! batch are served as the new end user) and are kept or undone when PostgreSQL ends the
//! transaction (ReadyForQuery `I`: committed when the block ended with `COMMIT`, or the implicit
//! transaction had no error).
//!
//! Not for: recognising the statements (see `route`) or verifying tokens (see `token`).

use super::application::EndUser;
use crate::session::ServerEvent;
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
    /// Whether the last ReadyForQuery said the session is in a transaction block.
    in_block: bool,
    /// The last CommandComplete tag of the current transaction, and whether an error came.
    last_tag_commit: bool,
    errored: bool,
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
        self.in_block
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
                message: "statements of this transaction (BEGIN included) already ran as another end user: set the end user before BEGIN, or after COMMIT or ROLLBACK",
            });
        }
        match scope {
            Scope::Local if own_transaction && !self.in_block => {}
            Scope::Local => self.local = Some(who),
            Scope::Session => {
                self.local = None;
                self.pending = Some(who);
            }
        }
        Ok(())
    }

    /// A statement other than a switch is served now (as [`EndUserState::current`]).
    pub fn statement(&mut self) {
        if self.ran_under.is_none() {
            self.ran_under = Some(self.current().clone());
        }
    }

    /// PostgreSQL's answers: transaction ends keep or undo the changes.
    pub fn on_server_event(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::CommandComplete { tag } => self.last_tag_commit = tag == "COMMIT",
            ServerEvent::Error { .. } => self.errored = true,
            ServerEvent::Ready { status: b'I' } => {
                let committed = if self.in_block {
                    self.last_tag_commit
                } else {
                    !self.errored
                };
                if let Some(pending) = self.pending.take()
                    && committed
                {
                    self.session = pending;
                }
                self.local = None;
                self.ran_under = None;
                self.in_block = false;
                self.last_tag_commit = false;
                self.errored = false;
            }
            ServerEvent::Ready { .. } => self.in_block = true,
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
        state.on_server_event(ServerEvent::Ready { status });
    }

    fn complete(state: &mut EndUserState, tag: &str) {
        state.on_server_event(ServerEvent::CommandComplete { tag });
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
        state.on_server_event(ServerEvent::Error { sqlstate: "25P02" });
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
        state.statement();
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
}
