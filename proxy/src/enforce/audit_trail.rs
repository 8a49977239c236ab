//! The access-log side of one session. Each statement that touches a policy table gets an access
//! record (who, statement, tables, columns, categories and actions: for restricted roles from the
//! rewriter, for unrestricted roles the policy tables and their categories found by inspecting the
//! statement without rewriting it), submitted when the frontend decides to send the statement
//! upstream, so that its fsync overlaps the query. How it ended (rows, outcome, duration) is known
//! when PostgreSQL's CommandComplete/ErrorResponse for it arrives: it goes into the access record
//! itself while the writer has not taken that yet (the usual case), else into a follow-up `outcome`
//! record, not awaited (see `AuditLog::complete`).
//! The session's [`Trail`] (owned by its hook, no lock) matches those answers to the statements in
//! order and hands the relay the access records' receipts to await before the client sees those
//! completions (durability, see `session::Hold`); normally they are durable by then. A refused
//! statement gets one record. A decision made on a parse thread submits its records through a
//! [`TrailWriter`] and returns what it did as [`Recorded`], which the hook records in the trail on
//! the session's thread.
//! Records are [`PreparedEvent`]s: the session's identity is rendered to JSON once ([`Who`]) and
//! each statement text's description once, when it is first described ([`What`]), so a record
//! copies no string on its way to the log.
//!
//! While the log reports itself unwritable, statements that touch a policy table are refused before
//! they reach PostgreSQL; a record that fails after the statement ran withholds its completion and
//! closes the session, so no client sees a completion whose record is not in the log.
//!
//! Not for: writing the log (see `audit`) or deciding about statements (see `enforce`).

use crate::audit::{
    AuditLog, Completion, Event, EventKind, Outcome, PreparedEvent, Receipt, TableTouched, What,
    Who, normalize,
};
use crate::enforce::policy_state::PolicyState;
use crate::net::client_auth::AuthError;
use crate::session::{Hold, ServerEvent};
use crate::users::User;
use crate::wire::client_error::ClientError;
use crate::wire::{DecodeError, Frontend};
use policy::access::RoleAccess;
use policy::inspect::ParsedOnce;
use policy::rewrite::{Refusal, RewrittenStatement, SqlState, TableUse};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Who the session is, copied into every event.
#[derive(Debug, Clone, Default)]
pub struct SessionIdentity {
    /// The proxy's session number.
    pub session: String,
    /// Client address as `ip:port`.
    pub client: String,
    pub user: String,
    pub role: String,
    pub database: String,
    pub application_name: Option<String>,
    /// For an application user acting for an end user: the end user and the token's id.
    pub end_user: Option<(String, String)>,
}

impl SessionIdentity {
    /// An event of `kind` carrying who, from where, in which database.
    pub fn event(&self, kind: EventKind) -> Event {
        let mut event = Event::new(kind);
        event.session = Some(self.session.clone());
        event.client = Some(self.client.clone());
        event.user = Some(self.user.clone());
        event.role = (!self.role.is_empty()).then(|| self.role.clone());
        event.database = Some(self.database.clone());
        event.application_name = self.application_name.clone();
        if let Some((end_user, token)) = &self.end_user {
            event.end_user = Some(end_user.clone());
            event.end_user_token = Some(token.clone());
        }
        event
    }
}

/// The access log's events for one login attempt: `login_ok`, or `login_failed` with the reason (never
/// the password) and, when this failure started a lockout, `lockout`. A client that went away during
/// authentication (as psql does before asking for a password) leaves no event.
pub fn login_events(who: &SessionIdentity, result: &Result<User, AuthError>) -> Vec<Event> {
    let failed = |sqlstate: &str, reason: String| {
        let mut event = who.event(EventKind::LoginFailed);
        event.outcome = Outcome::Error {
            sqlstate: sqlstate.to_owned(),
        };
        event.detail = Some(reason);
        event
    };
    match result {
        Ok(user) => {
            let mut event = who.event(EventKind::LoginOk);
            event.role = Some(user.role.clone());
            vec![event]
        }
        Err(AuthError::Io(_)) => Vec::new(),
        Err(AuthError::Failed) => vec![failed("28P01", AuthError::Failed.to_string())],
        Err(AuthError::FailedLocking(lock)) => {
            let mut lockout = who.event(EventKind::Lockout);
            lockout.detail = Some(format!(
                "too many failed logins: further logins of this user or from this address are blocked for {}s",
                lock.retry_after.as_secs()
            ));
            vec![failed("28P01", AuthError::Failed.to_string()), lockout]
        }
        Err(err @ AuthError::LockedOut) => vec![failed("28000", err.to_string())],
        Err(err @ AuthError::Protocol(_)) => vec![failed("08P01", err.to_string())],
    }
}

/// A statement sent upstream whose access record is submitted.
struct Access {
    receipt: Receipt,
    sent_at: Instant,
}

/// A statement waiting for its answer.
enum Pending {
    /// Its outcome is recorded when its CommandComplete or ErrorResponse comes (`None`: not logged).
    Statement(Option<Access>),
    /// Already recorded as refused; its (swapped) error answer is skipped.
    Refused,
}

/// What the session's statements wait for.
#[derive(Default)]
struct State {
    /// Statements waiting for their answer, in order, each with the number of its cycle (what one
    /// ReadyForQuery ends: a Query, or the extended messages up to a Sync), as the relay counts
    /// them (see `session::SessionHook`).
    pending: VecDeque<(u64, Pending)>,
    /// Prepared statements by name, as sent at Parse.
    prepared: HashMap<Vec<u8>, Option<Arc<What>>>,
    /// Portals by name, pointing at their statement.
    portals: HashMap<Vec<u8>, Option<Arc<What>>>,
    /// Submitted records the client's next answers wait for; `true`: the answer must not be
    /// forwarded without it (an access), `false`: best effort (a refusal).
    receipts: Vec<(Receipt, bool)>,
    /// What the log says about each statement text seen lately.
    known: Known,
    /// The SQLSTATE of the last error of the cycle being answered.
    cycle_error: Option<String>,
}

/// The log's description of the statements of one text.
type Described = Arc<[Option<Arc<What>>]>;

/// Statement texts whose description a session keeps (normalizing and inspecting cost far more than
/// a lookup; applications repeat a few texts with parameters).
const KNOWN_TEXTS: usize = 64;

/// The descriptions of the statement texts a session has seen lately (as sent upstream). Within a
/// session the same text always touches the same tables.
#[derive(Default)]
pub struct Known(HashMap<Box<str>, Described>);

impl Known {
    fn get(&self, text: &str) -> Option<Described> {
        self.0.get(text).cloned()
    }

    fn contains(&self, text: &str) -> bool {
        self.0.contains_key(text)
    }

    /// A copy holding `text`'s description only (for a decision made off the session's thread).
    pub fn only(&self, text: &str) -> Known {
        Known(
            self.0
                .get_key_value(text)
                .map(|(text, described)| (text.clone(), described.clone()))
                .into_iter()
                .collect(),
        )
    }

    fn insert(&mut self, text: Box<str>, described: Described) {
        if self.0.len() >= KNOWN_TEXTS {
            self.0.clear();
        }
        self.0.insert(text, described);
    }
}

/// What decisions add to a session's trail: worked out where the decision is made (on a parse
/// thread too, with the access records already submitted so that their fsync overlaps the query),
/// recorded by [`Trail::record`] on the session's thread.
#[derive(Default)]
#[must_use]
pub struct Recorded(Vec<Entry>);

enum Entry {
    /// A statement of this cycle was sent (with its access record, if it is logged).
    Sent(u64, Option<Access>),
    /// A message of this cycle was refused; its record was submitted.
    Refused(u64, Receipt),
    /// A Parse named this statement.
    Prepared(Vec<u8>, Option<Arc<What>>),
    /// A text described for the first time.
    Described(Box<str>, Described),
}

/// The part of a session's trail that submits its records and reads the log's health: what a
/// decision uses of the trail, on the session's thread or on a parse thread. Cheap to clone.
#[derive(Clone)]
pub struct TrailWriter {
    log: Arc<AuditLog>,
    /// Who the session is, in its statement records ...
    who: Arc<Who>,
    /// ... and in their `outcome` records (session and user).
    who_briefly: Arc<Who>,
}

impl TrailWriter {
    /// A simple Query of cycle `cycle` is about to be sent with these statements; refused while the
    /// log is unwritable and one of them touches a policy table.
    pub fn query(
        &self,
        known: &Known,
        statements: &[RewrittenStatement],
        cycle: u64,
    ) -> Result<Recorded, Refusal> {
        let mut recorded = Recorded::default();
        let sent: Vec<_> = statements
            .iter()
            .map(|s| self.sent(known, &mut recorded, s))
            .collect();
        self.query_sent(&mut recorded, sent, cycle)?;
        Ok(recorded)
    }

    /// A Parse was sent: the statement is remembered under its name.
    pub fn parse(&self, known: &Known, name: &[u8], statements: &[RewrittenStatement]) -> Recorded {
        let mut recorded = Recorded::default();
        let sent = statements
            .first()
            .and_then(|s| self.sent(known, &mut recorded, s));
        recorded.0.push(Entry::Prepared(name.to_vec(), sent));
        recorded
    }

    /// A message of cycle `cycle` was refused: its record is submitted, its error answer skipped
    /// later.
    pub fn refused(&self, refusal: &Refusal, sql: Option<&str>, cycle: u64) -> Recorded {
        let mut event = PreparedEvent::new(EventKind::Statement, &self.who);
        let tables = refusal.tables.iter().map(TableTouched::from_use).collect();
        event.what = Some(What::new(None, sql.and_then(normalize), tables));
        event.outcome = Outcome::refused(refusal);
        Recorded(vec![Entry::Refused(cycle, self.log.submit(event))])
    }

    /// [`sent`], worked out once per session and statement text.
    fn sent(
        &self,
        known: &Known,
        recorded: &mut Recorded,
        statement: &RewrittenStatement,
    ) -> Option<Arc<What>> {
        described(known, recorded, &statement.sql, || vec![sent(statement)])
            .first()
            .cloned()
            .flatten()
    }

    fn query_sent(
        &self,
        recorded: &mut Recorded,
        sent: Vec<Option<Arc<What>>>,
        cycle: u64,
    ) -> Result<(), Refusal> {
        if sent.iter().any(Option::is_some) {
            self.writable()?;
        }
        // Submitting takes no lock of the session's: the access records queue in statement order.
        let sent = sent
            .iter()
            .map(|s| Entry::Sent(cycle, s.as_ref().map(|s| self.access(s))));
        recorded.0.extend(sent);
        Ok(())
    }

    fn writable(&self) -> Result<(), Refusal> {
        if self.log.is_healthy() {
            Ok(())
        } else {
            Err(unwritable())
        }
    }

    /// Submits the access record of a statement about to be sent upstream.
    fn access(&self, sent: &Arc<What>) -> Access {
        let mut event = PreparedEvent::new(EventKind::Statement, &self.who);
        event.what = Some(sent.clone());
        event.outcome = Outcome::Unknown;
        Access {
            receipt: self.log.submit(event),
            sent_at: Instant::now(),
        }
    }

    /// Records how the statement of `access` ended: in its access record while that is still
    /// queued, else as its `outcome` record (not awaited: the access record is what the answer
    /// waits for).
    fn outcome(&self, access: &Access, outcome: Outcome, rows: Option<u64>, detail: Option<&str>) {
        let completion = Completion {
            outcome,
            rows,
            duration_us: Some(
                u64::try_from(access.sent_at.elapsed().as_micros()).unwrap_or(u64::MAX),
            ),
            detail: detail.map(str::to_owned),
        };
        self.log
            .complete(&access.receipt, completion, |completion| {
                let mut event = PreparedEvent::new(EventKind::Outcome, &self.who_briefly);
                event.complete(completion);
                event
            });
    }

    /// An unrestricted role's simple Query is about to be sent (see [`TrailWriter::query`]);
    /// refused beyond the parser's bounds.
    fn unrestricted_query(
        &self,
        known: &Known,
        inspector: &Inspector,
        parsed: &ParsedOnce,
        cycle: u64,
    ) -> Result<Recorded, Refusal> {
        let sql = parsed.text();
        let mut recorded = Recorded::default();
        if !inspector.may_touch(sql.as_bytes()) {
            // The fast path: one statement or several, none is logged.
            recorded.0.push(Entry::Sent(cycle, None));
            return Ok(recorded);
        }
        within_limits(known, sql)?;
        let described = described(known, &mut recorded, sql, || inspector.statements(parsed));
        self.query_sent(&mut recorded, described.to_vec(), cycle)?;
        Ok(recorded)
    }

    /// An unrestricted role's Parse was sent (see [`TrailWriter::parse`]); refused beyond the
    /// parser's bounds.
    fn unrestricted_parse(
        &self,
        known: &Known,
        inspector: &Inspector,
        name: &[u8],
        parsed: &ParsedOnce,
    ) -> Result<Recorded, Refusal> {
        let sql = parsed.text();
        let mut recorded = Recorded::default();
        let sent = match inspector.may_touch(sql.as_bytes()) {
            true => {
                within_limits(known, sql)?;
                described(known, &mut recorded, sql, || inspector.statements(parsed))
                    .first()
                    .cloned()
                    .flatten()
            }
            false => None,
        };
        recorded.0.push(Entry::Prepared(name.to_vec(), sent));
        Ok(recorded)
    }
}

/// The description of the statements of `text` (as sent upstream): `known` to the session, or
/// `describe`d now and recorded.
fn described(
    known: &Known,
    recorded: &mut Recorded,
    text: &str,
    describe: impl FnOnce() -> Vec<Option<Arc<What>>>,
) -> Described {
    if let Some(found) = known.get(text) {
        return found;
    }
    let described: Described = describe().into();
    recorded
        .0
        .push(Entry::Described(text.into(), described.clone()));
    described
}

/// Refuses a text beyond the parser's bounds before it is parsed for its description.
fn within_limits(known: &Known, sql: &str) -> Result<(), Refusal> {
    if known.contains(sql) {
        return Ok(());
    }
    policy::rewrite::limits::check(sql)
}

/// The statements of one session on their way to the access log: what its decisions recorded
/// ([`Recorded`]), matched to PostgreSQL's answers in order, and what the client's answers wait
/// for. Owned by the session's hook (no lock): only its [`TrailWriter`] goes to other threads.
pub struct Trail {
    writer: TrailWriter,
    state: State,
}

impl Trail {
    pub fn new(log: Arc<AuditLog>, who: SessionIdentity) -> Trail {
        let mut briefly = Event::new(EventKind::Outcome);
        briefly.session = Some(who.session.clone());
        briefly.user = Some(who.user.clone());
        Trail {
            writer: TrailWriter {
                log,
                who: Who::new(&who.event(EventKind::Statement)),
                who_briefly: Who::new(&briefly),
            },
            state: State::default(),
        }
    }

    /// What a decision off the session's thread uses to submit records.
    pub fn writer(&self) -> &TrailWriter {
        &self.writer
    }

    /// The descriptions the session knows (for a decision that records into this trail).
    pub fn known(&self) -> &Known {
        &self.state.known
    }

    /// Records what a decision found (on the session's thread, in the order the messages go).
    pub fn record(&mut self, recorded: Recorded) {
        let state = &mut self.state;
        for entry in recorded.0 {
            match entry {
                Entry::Sent(cycle, access) => {
                    state.pending.push_back((cycle, Pending::Statement(access)))
                }
                Entry::Refused(cycle, receipt) => {
                    state.receipts.push((receipt, false));
                    state.pending.push_back((cycle, Pending::Refused));
                }
                Entry::Prepared(name, sent) => {
                    state.prepared.insert(name, sent);
                }
                Entry::Described(text, described) => state.known.insert(text, described),
            }
        }
    }

    /// A simple Query of cycle `cycle` is about to be sent with these statements (see
    /// [`TrailWriter::query`]), recorded now.
    pub fn query(&mut self, statements: &[RewrittenStatement], cycle: u64) -> Result<(), Refusal> {
        let recorded = self.writer.query(&self.state.known, statements, cycle)?;
        self.record(recorded);
        Ok(())
    }

    /// A message of cycle `cycle` was refused: recorded now, its error answer skipped later.
    pub fn refused(&mut self, refusal: &Refusal, sql: Option<&str>, cycle: u64) {
        let recorded = self.writer.refused(refusal, sql, cycle);
        self.record(recorded);
    }

    /// Follows a message (in cycle `cycle`) that acts on statements already parsed: Bind and
    /// Execute; the others change nothing. An Execute is refused while the log is unwritable and
    /// its statement touches a policy table.
    pub fn follow(&mut self, message: &Frontend<'_>, cycle: u64) -> Result<(), Refusal> {
        match *message {
            Frontend::Bind {
                portal, statement, ..
            } => self.bind(portal, statement),
            Frontend::Execute { portal, .. } => return self.execute(portal, cycle),
            _ => {}
        }
        Ok(())
    }

    /// A Bind: `portal` runs the prepared `statement`.
    fn bind(&mut self, portal: &[u8], statement: &[u8]) {
        let state = &mut self.state;
        let sent = state.prepared.get(statement).cloned().flatten();
        state.portals.insert(portal.to_vec(), sent);
    }

    /// An Execute of `portal` is about to be sent: its portal's statement answers next.
    fn execute(&mut self, portal: &[u8], cycle: u64) -> Result<(), Refusal> {
        let sent = self.state.portals.get(portal).cloned().flatten();
        if sent.is_some() {
            self.writer.writable()?;
        }
        let access = sent.as_ref().map(|s| self.writer.access(s));
        self.state
            .pending
            .push_back((cycle, Pending::Statement(access)));
        Ok(())
    }

    /// Whether the description of `sql` must be worked out by parsing it.
    fn needs_parse(&self, inspector: &Inspector, sql: &[u8]) -> bool {
        inspector.may_touch(sql)
            && std::str::from_utf8(sql).is_ok_and(|sql| !self.state.known.contains(sql))
    }

    /// A statement of cycle `cycle` ended, or the cycle did (see `session::SessionHook`).
    pub fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        match event {
            ServerEvent::CommandComplete { tag } => {
                let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                self.answered(Outcome::Ok, rows, cycle);
            }
            ServerEvent::Error { sqlstate } => self.answered(
                Outcome::Error {
                    sqlstate: sqlstate.to_owned(),
                },
                None,
                cycle,
            ),
            // After ReadyForQuery nothing of the cycle is still running (an error skipped the rest).
            ServerEvent::Ready { .. } => self.ready(cycle),
        }
    }

    /// A statement of cycle `cycle` ended: the next one of that cycle waiting is answered.
    fn answered(&mut self, outcome: Outcome, rows: Option<u64>, cycle: u64) {
        let state = &mut self.state;
        if let Some(sqlstate) = outcome.sqlstate() {
            state.cycle_error = Some(sqlstate.to_owned());
        }
        if state.pending.front().is_none_or(|(c, _)| *c != cycle) {
            return;
        }
        let Some((_, Pending::Statement(Some(access)))) = state.pending.pop_front() else {
            return;
        };
        self.writer.outcome(&access, outcome, rows, None);
        state.receipts.push((access.receipt, true));
    }

    /// A ReadyForQuery: cycle `cycle` is over. Its statements still pending were sent but never run
    /// (PostgreSQL skips the rest of a Query or of the messages up to Sync after an error).
    fn ready(&mut self, cycle: u64) {
        let state = &mut self.state;
        let ended = state
            .pending
            .iter()
            .take_while(|(c, _)| *c <= cycle)
            .count();
        let sqlstate = state.cycle_error.take().unwrap_or_default();
        for (_, pending) in state.pending.drain(..ended) {
            if let Pending::Statement(Some(access)) = pending {
                let outcome = Outcome::Error {
                    sqlstate: sqlstate.clone(),
                };
                let why = "not run: an earlier statement of the same request failed";
                self.writer.outcome(&access, outcome, None, Some(why));
            }
        }
    }

    /// The access records the answers seen so far wait for, as one future (`None` when there are
    /// none; see `session::SessionHook::hold`).
    pub fn hold(&mut self) -> Option<Hold> {
        let receipts = std::mem::take(&mut self.state.receipts);
        if receipts.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for (receipt, required) in receipts {
                match receipt.durable().await {
                    Ok(_) => {}
                    Err(err) if required => {
                        return Err(ClientError::new(
                            "58030",
                            format!(
                                "{err}: the statement ran but its access record is not in the log, so its \
                                 answer is withheld and the session closed"
                            ),
                        ));
                    }
                    Err(_) => {}
                }
            }
            Ok(())
        }))
    }
}

/// The refusal of a statement that touches personal data while the log cannot be written.
fn unwritable() -> Refusal {
    Refusal {
        sqlstate: SqlState::InsufficientPrivilege,
        message:
            "the access log cannot be written: statements that touch personal data are refused \
                  until it can (see the proxy's log)"
                .to_owned(),
        tables: Vec::new(),
        statement_index: 0,
    }
}

/// Only statements that touch a policy table are logged.
fn sent(statement: &RewrittenStatement) -> Option<Arc<What>> {
    if statement.tables.is_empty() {
        return None;
    }
    let kind = format!("{:?}", statement.kind).to_ascii_lowercase();
    Some(logged(kind, &statement.sql, &statement.tables))
}

/// How the log describes a statement of `kind` and text `sql` that touches `tables`.
fn logged(kind: String, sql: &str, tables: &[TableUse]) -> Arc<What> {
    let tables = tables.iter().map(TableTouched::from_use).collect();
    What::new(Some(kind), normalize(sql), tables)
}

/// Finds the policy tables an unrestricted role's statements name, for its [`Trail`] (see
/// `policy::inspect`). Statements that do not mention a policy table's name (a substring test, no
/// parsing) cost only that test.
#[derive(Clone)]
pub struct Inspector {
    role: Arc<RoleAccess>,
    state: Arc<PolicyState>,
    /// The policy tables' names, lower case.
    names: Arc<[String]>,
}

impl Inspector {
    pub fn new(role: Arc<RoleAccess>, state: Arc<PolicyState>) -> Inspector {
        let mut names: Vec<String> = role
            .tables
            .keys()
            .map(|t| t.name.to_ascii_lowercase())
            .collect();
        names.dedup();
        Inspector {
            role,
            state,
            names: names.into(),
        }
    }

    fn may_touch(&self, sql: &[u8]) -> bool {
        policy::inspect::may_name_one_of(&self.names, sql)
    }

    /// What each statement of `parsed` touches (`None`: no policy table). Text that does not parse
    /// counts as one statement, logged without tables when it mentions a policy table.
    fn statements(&self, parsed: &ParsedOnce) -> Vec<Option<Arc<What>>> {
        let sql = parsed.text();
        if !self.may_touch(sql.as_bytes()) {
            return vec![None];
        }
        // Within the bounds (checked before), on a parse thread.
        let Ok(statements) = parsed.statements() else {
            return vec![Some(What::new(
                Some("unparsed".into()),
                normalize(sql),
                Vec::new(),
            ))];
        };
        policy::inspect::statements(statements, &self.role, &self.state.catalog)
            .into_iter()
            .map(|inspected| inspected.map(|i| logged(i.kind.into(), &i.text, &i.tables)))
            .collect()
    }
}

/// The access-log side of an unrestricted session's decisions: finds the policy tables its
/// statements name. Cheap to clone (a decision off the session's thread takes a copy).
#[derive(Clone)]
pub struct UnrestrictedAudit {
    writer: TrailWriter,
    inspector: Inspector,
}

impl UnrestrictedAudit {
    /// The decisions' side of `trail`.
    pub fn new(trail: &Trail, role: Arc<RoleAccess>, state: Arc<PolicyState>) -> Self {
        UnrestrictedAudit {
            writer: trail.writer.clone(),
            inspector: Inspector::new(role, state),
        }
    }

    /// Whether following a statement of `text` means parsing it (it may name a policy table and
    /// `trail` has not described it yet): then it is followed on a parse thread.
    pub fn needs_parse(&self, trail: &Trail, text: &[u8]) -> bool {
        trail.needs_parse(&self.inspector, text)
    }

    /// Follows a Query or Parse (in cycle `cycle`) about to be forwarded unchanged: what it adds
    /// to the trail, and a refusal (recorded there too) the session must send instead. Other
    /// messages are the trail's to follow ([`Trail::follow`]).
    pub fn statement(
        &self,
        known: &Known,
        parsed: Option<&ParsedOnce>,
        message: &Frontend<'_>,
        cycle: u64,
    ) -> (Result<(), Refusal>, Recorded) {
        let followed = match (*message, parsed) {
            (Frontend::Query { .. }, Some(parsed)) => {
                self.writer
                    .unrestricted_query(known, &self.inspector, parsed, cycle)
            }
            (Frontend::Query { .. }, None) => Ok(Recorded(vec![Entry::Sent(cycle, None)])),
            (Frontend::Parse { name, .. }, Some(parsed)) => {
                self.writer
                    .unrestricted_parse(known, &self.inspector, name, parsed)
            }
            (Frontend::Parse { name, .. }, None) => {
                Ok(Recorded(vec![Entry::Prepared(name.to_vec(), None)]))
            }
            _ => Ok(Recorded::default()),
        };
        match followed {
            Ok(recorded) => (Ok(()), recorded),
            Err(refusal) => {
                let query = matches!(message, Frontend::Query { .. });
                let sql = parsed.filter(|_| query).map(ParsedOnce::text);
                let recorded = self.writer.refused(&refusal, sql, cycle);
                (Err(refusal), recorded)
            }
        }
    }
}

/// The refusal of a client message that does not decode (a Query or Parse without its text's
/// terminator, an Execute cut short, ...): recorded and answered like any refused statement.
pub fn malformed(error: DecodeError) -> Refusal {
    Refusal {
        sqlstate: SqlState::FeatureNotSupported,
        message: error.to_string(),
        tables: Vec::new(),
        statement_index: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::keys::ChainSecret;
    use crate::audit::{AuditConfig, Durability, chain, files};
    use policy::rewrite::{fixture, rewrite};

    /// An access log in `dir` with fixed keys, written in batches.
    fn open_log(dir: &std::path::Path, instance: Option<&str>) -> Arc<AuditLog> {
        let mut config = AuditConfig::new(dir);
        config.instance = instance.map(str::to_owned);
        config.durability = Durability::Batch;
        let log = AuditLog::open_with_keys(
            &config,
            ChainSecret::from_bytes(vec![1; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        )
        .expect("open the log");
        Arc::new(log)
    }

    /// The statement records a session's trail writes, as JSON objects without the envelope (`seq`,
    /// `time`, `instance`) and the MAC.
    fn statement_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        for path in files::list_dir(dir).expect("log files") {
            for line in files::read_lines(&path).expect("read").complete {
                let (body, _) = chain::unseal(&line).expect("sealed line");
                let mut value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                let object = value.as_object_mut().expect("an object");
                if matches!(object["event"].as_str(), Some("statement" | "outcome")) {
                    for envelope in ["seq", "time", "instance"] {
                        object.remove(envelope).expect("envelope field");
                    }
                    records.push(value);
                }
            }
        }
        records
    }

    /// The records the trail writes say what the plain events it used to build (every field copied
    /// from the session's identity and the statement's description) say: same members, same values,
    /// for answered, failed, skipped and refused statements, with and without application_name, with
    /// the completions in the access records (the writer had not taken them yet) and as `outcome`
    /// follow-ups (it had).
    #[tokio::test]
    async fn the_trail_writes_what_its_plain_events_said() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let log = open_log(dir.path(), Some("proxy \"a\""));
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        let sql = "SELECT email, phone FROM contacts WHERE id = 1; \
                   UPDATE deals SET amount = 2 WHERE id = 3; SELECT id FROM contacts";
        let rewritten = rewrite(sql, &role, &catalog).expect("rewritten");
        let refused_sql = "SELECT condition FROM health_records WHERE id = 7";
        let refusal = rewrite(refused_sql, &role, &catalog).expect_err("refused");
        let failed = || Outcome::Error {
            sqlstate: "57014".into(),
        };
        let skipped = "not run: an earlier statement of the same request failed";
        let completions = [
            (Some(1), Outcome::Ok, None),
            (None, failed(), None),
            (None, failed(), Some(skipped)),
        ];
        let mut expected = Vec::new();
        for (application_name, follow_ups) in
            [(Some("crm-web \u{e8}".to_string()), false), (None, true)]
        {
            let who = SessionIdentity {
                session: "17".into(),
                client: "10.0.0.1:5000".into(),
                user: "sam".into(),
                role: "sales".into(),
                database: "crm".into(),
                application_name,
                end_user: None,
            };
            let mut trail = Trail::new(log.clone(), who.clone());
            trail
                .query(rewritten.statements(), 1)
                .expect("log writable");
            if follow_ups {
                // Waiting for a later record has the writer take the access records now.
                let flush = who.event(EventKind::LoginOk);
                log.record(flush).await.expect("written");
            }
            trail.on_server_event(ServerEvent::CommandComplete { tag: "SELECT 1" }, 1);
            trail.on_server_event(ServerEvent::Error { sqlstate: "57014" }, 1);
            trail.on_server_event(ServerEvent::Ready { status: b'I' }, 1);
            trail
                .hold()
                .expect("records to wait for")
                .await
                .expect("durable");
            trail.refused(&refusal, Some(refused_sql), 2);
            // Written before the next session starts (and before the shutdown).
            let refused = trail.hold().expect("the refusal's record");
            refused.await.expect("written");

            // What the trail built before its records were prepared.
            let statements = rewritten.statements().iter().zip(&completions);
            for (statement, (rows, outcome, detail)) in statements {
                let mut event = who.event(EventKind::Statement);
                event.statement_kind = Some(format!("{:?}", statement.kind).to_ascii_lowercase());
                event.statement = normalize(&statement.sql);
                event.tables = statement
                    .tables
                    .iter()
                    .map(TableTouched::from_use)
                    .collect();
                event.outcome = Outcome::Unknown;
                if !follow_ups {
                    event.rows = *rows;
                    event.outcome = outcome.clone();
                    event.detail = detail.map(str::to_owned);
                }
                expected.push(event);
            }
            for (rows, outcome, detail) in completions.iter().filter(|_| follow_ups) {
                let mut event = Event::new(EventKind::Outcome);
                event.session = Some(who.session.clone());
                event.user = Some(who.user.clone());
                event.rows = *rows;
                event.outcome = outcome.clone();
                event.detail = detail.map(str::to_owned);
                expected.push(event);
            }
            let mut refused = who.event(EventKind::Statement);
            refused.statement = normalize(refused_sql);
            refused.tables = refusal.tables.iter().map(TableTouched::from_use).collect();
            refused.outcome = Outcome::refused(&refusal);
            expected.push(refused);
        }
        log.shutdown().await.expect("shutdown");

        let written = statement_records(dir.path());
        assert_eq!(written.len(), expected.len(), "{written:#?}");
        let mut access_seqs = Vec::new();
        for (written, mut event) in written.into_iter().zip(expected) {
            // Measured or numbered by the writer: taken from what was written.
            let number = |field: &str| written.get(field).and_then(serde_json::Value::as_u64);
            if event.kind == EventKind::Outcome {
                event.statement_seq = Some(number("statement_seq").expect("its statement"));
                access_seqs.push(event.statement_seq);
            }
            if event.outcome != Outcome::Unknown && event.outcome.sqlstate() != Some("42501") {
                event.duration_us = Some(number("duration_us").expect("a duration"));
            }
            let event = serde_json::to_value(&event).expect("serialized");
            assert_eq!(written, event);
        }
        assert_eq!(access_seqs.len(), 3);
        assert!(
            access_seqs.windows(2).all(|w| w[0] != w[1]),
            "{access_seqs:?}"
        );
    }

    /// The trail matches answers to statements by the relay's cycle numbers: a cycle it recorded
    /// nothing of (here a FunctionCall ahead of the Query, which the trail does not follow) ends
    /// without touching the Query's statements, which are then answered, not "not run".
    #[tokio::test]
    async fn answers_match_statements_by_the_relays_cycle_numbers() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let log = open_log(dir.path(), None);
        let rewritten = rewrite(
            "SELECT email FROM contacts WHERE id = 1",
            &fixture::role("sales"),
            &fixture::catalog(),
        )
        .expect("rewritten");
        let mut trail = Trail::new(log.clone(), SessionIdentity::default());
        // Cycle 1 (the FunctionCall) is sent before the Query of cycle 2; both are answered.
        trail
            .query(rewritten.statements(), 2)
            .expect("log writable");
        let answers = [
            (ServerEvent::Ready { status: b'I' }, 1),
            (ServerEvent::CommandComplete { tag: "SELECT 1" }, 2),
            (ServerEvent::Ready { status: b'I' }, 2),
        ];
        for (event, cycle) in answers {
            trail.on_server_event(event, cycle);
        }
        let hold = trail.hold().expect("the access record");
        hold.await.expect("durable");
        log.shutdown().await.expect("shutdown");
        // The completion is in the access record, or in its outcome record if the writer had taken
        // that already.
        let written = statement_records(dir.path());
        let completed = written.iter().filter(|r| r.get("rows").is_some());
        let completed: Vec<_> = completed.collect();
        assert_eq!(completed.len(), 1, "{written:#?}");
        assert_eq!(completed[0]["rows"], 1, "{written:#?}");
        assert_eq!(completed[0]["outcome"]["result"], "ok", "{written:#?}");
        assert!(
            written.iter().all(|r| r.get("detail").is_none()),
            "{written:#?}"
        );
    }
}
