//! The access-log side of an enforced session: one statement event per statement of a restricted
//! role that touches a policy table (tables, columns, categories, actions from the rewriter; rows
//! and outcome from PostgreSQL's answer), and one per refused statement. The session's
//! `RestrictedFrontend` tells the [`Trail`] what it sent; the [`AuditObserver`] matches PostgreSQL's
//! CommandComplete/ErrorResponse to it in order and submits the event.
//!
//! Not for: writing the log (see `audit`) or deciding about statements (see `enforce`). Events are
//! queued (`AuditLog::submit`), not awaited before the answer is forwarded: the relay's observer
//! is synchronous.

use crate::audit::{AuditLog, Event, EventKind, Outcome, TableTouched, normalize};
use crate::frame;
use crate::session::{MetricsObserver, ServerEvent, SessionObserver};
use policy::rewrite::{Refusal, RewrittenStatement};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Who the session is, copied into every event.
#[derive(Debug, Clone, Default)]
pub struct SessionIdentity {
    pub user: String,
    pub role: String,
}

/// What the log says about one statement sent upstream.
#[derive(Debug)]
struct Sent {
    kind: String,
    statement: Option<String>,
    tables: Vec<TableTouched>,
}

/// A statement waiting for its answer.
enum Pending {
    /// Recorded when its CommandComplete or ErrorResponse comes (`None`: not logged).
    Statement(Option<Arc<Sent>>),
    /// Already recorded as refused; its (swapped) error answer is skipped.
    Refused,
}

/// Pending statements grouped by cycle (what one ReadyForQuery ends): a Query, or the extended
/// messages up to a Sync.
#[derive(Default)]
struct State {
    cycles: VecDeque<VecDeque<Pending>>,
    /// Extended-protocol messages not yet closed by a Sync.
    open: VecDeque<Pending>,
    /// Prepared statements by name, as rewritten at Parse.
    prepared: HashMap<Vec<u8>, Option<Arc<Sent>>>,
    /// Portals by name, pointing at their statement.
    portals: HashMap<Vec<u8>, Option<Arc<Sent>>>,
}

/// The statements of one session on their way to the access log.
pub struct Trail {
    log: Arc<AuditLog>,
    who: SessionIdentity,
    state: Mutex<State>,
}

impl Trail {
    pub fn new(log: Arc<AuditLog>, who: SessionIdentity) -> Arc<Trail> {
        Arc::new(Trail {
            log,
            who,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A simple Query was sent with these statements.
    pub fn query(&self, statements: &[RewrittenStatement]) {
        let mut state = self.state();
        for statement in statements {
            state.open.push_back(Pending::Statement(sent(statement)));
        }
        state.close_cycle();
    }

    /// A Sync was sent: the extended messages before it form one cycle.
    pub fn sync(&self) {
        self.state().close_cycle();
    }

    /// A Parse was sent: remember the statement under its name.
    pub fn parse(&self, name: &[u8], statements: &[RewrittenStatement]) {
        let sent = statements.first().and_then(sent);
        self.state().prepared.insert(name.to_vec(), sent);
    }

    /// A Bind (`body` as sent): the portal runs the named statement.
    pub fn bind(&self, body: &[u8]) {
        let Some((portal, rest)) = frame::cstr(body) else {
            return;
        };
        let Some((statement, _)) = frame::cstr(rest) else {
            return;
        };
        let mut state = self.state();
        let sent = state.prepared.get(statement).cloned().flatten();
        state.portals.insert(portal.to_vec(), sent);
    }

    /// An Execute (`body` as sent): its portal's statement answers next.
    pub fn execute(&self, body: &[u8]) {
        let Some((portal, _)) = frame::cstr(body) else {
            return;
        };
        let mut state = self.state();
        let sent = state.portals.get(portal).cloned().flatten();
        state.open.push_back(Pending::Statement(sent));
    }

    /// A message (`tag`) was refused: recorded now, its error answer skipped later.
    pub fn refused(&self, tag: u8, refusal: &Refusal, sql: Option<&str>) {
        let mut event = self.event();
        event.statement = sql.and_then(normalize);
        event.tables = refusal.tables.iter().map(TableTouched::from_use).collect();
        event.outcome = Outcome::Refused {
            sqlstate: refusal.sqlstate.code().to_owned(),
            message: Some(refusal.message.clone()),
        };
        self.submit(event);
        let mut state = self.state();
        state.open.push_back(Pending::Refused);
        // The relay replaces a refused Query or FunctionCall by a failing Query: a cycle of its own.
        if matches!(tag, b'Q' | b'F') {
            state.close_cycle();
        }
    }

    fn event(&self) -> Event {
        let mut event = Event::new(EventKind::Statement);
        event.user = Some(self.who.user.clone());
        event.role = Some(self.who.role.clone());
        event
    }

    fn submit(&self, event: Event) {
        // Queued; a write failure turns the log unhealthy and is reported by the log itself.
        drop(self.log.submit(event));
    }

    fn answered(&self, outcome: Outcome, rows: Option<u64>) {
        let next = {
            let mut state = self.state();
            let state = &mut *state;
            state
                .cycles
                .front_mut()
                .unwrap_or(&mut state.open)
                .pop_front()
        };
        let Some(Pending::Statement(Some(sent))) = next else {
            return;
        };
        let mut event = self.event();
        event.statement_kind = Some(sent.kind.clone());
        event.statement = sent.statement.clone();
        event.tables = sent.tables.clone();
        event.rows = rows;
        event.outcome = outcome;
        self.submit(event);
    }
}

impl State {
    fn close_cycle(&mut self) {
        let cycle = std::mem::take(&mut self.open);
        self.cycles.push_back(cycle);
    }

    fn end_cycle(&mut self) {
        if self.cycles.pop_front().is_none() {
            self.open.clear();
        }
    }
}

/// Only statements that touch a policy table are logged.
fn sent(statement: &RewrittenStatement) -> Option<Arc<Sent>> {
    if statement.tables.is_empty() {
        return None;
    }
    Some(Arc::new(Sent {
        kind: format!("{:?}", statement.kind).to_ascii_lowercase(),
        statement: normalize(&statement.sql),
        tables: statement
            .tables
            .iter()
            .map(TableTouched::from_use)
            .collect(),
    }))
}

/// Counts metrics and completes the session's [`Trail`].
pub struct AuditObserver {
    metrics: MetricsObserver,
    trail: Arc<Trail>,
}

impl AuditObserver {
    pub fn new(trail: Arc<Trail>) -> AuditObserver {
        AuditObserver {
            metrics: MetricsObserver::default(),
            trail,
        }
    }
}

impl SessionObserver for AuditObserver {
    fn on_server_event(&mut self, event: ServerEvent<'_>) {
        self.metrics.on_server_event(event);
        match event {
            ServerEvent::CommandComplete { tag } => {
                let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                self.trail.answered(Outcome::Ok, rows);
            }
            ServerEvent::Error { sqlstate } => self.trail.answered(
                Outcome::Error {
                    sqlstate: sqlstate.to_owned(),
                },
                None,
            ),
            // After ReadyForQuery nothing of the cycle is still running (an error skipped the rest).
            ServerEvent::Ready { .. } => self.trail.state().end_cycle(),
        }
    }
}
