//! The access-log side of one session. Each statement that touches a policy table gets an access
//! record (who, statement, tables, columns, categories and actions: for restricted roles from the
//! rewriter, for unrestricted roles the policy tables and their categories found by inspecting the
//! statement without rewriting it), submitted when the frontend decides to send the statement
//! upstream, so that its fsync overlaps the query. How it ended (rows, outcome, duration) is known
//! when PostgreSQL's CommandComplete/ErrorResponse for it arrives: it goes into the access record
//! itself while the writer has not taken that yet (the usual case), else into a follow-up `outcome`
//! record, not awaited (see `AuditLog::complete`).
//! The [`AuditObserver`] matches those answers to the statements in order and hands the relay the
//! access records' receipts to await before the client sees those completions (durability, see
//! `session::Hold`); normally they are durable by then. A refused statement gets one record.
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
use crate::client_auth::AuthError;
use crate::frame;
use crate::policy_state::PolicyState;
use crate::session::{Hold, ServerEvent, Withheld};
use crate::users::User;
use policy::access::RoleAccess;
use policy::rewrite::{Refusal, RewrittenStatement, SqlState};
use sqlparser::ast::Statement;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
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
    /// What the log says about each statement text seen lately (see [`Trail::described`]).
    known: HashMap<Box<str>, Described>,
    /// The SQLSTATE of the last error of the cycle being answered.
    cycle_error: Option<String>,
}

/// The log's description of the statements of one text.
type Described = Arc<[Option<Arc<What>>]>;

/// Statement texts whose description a session keeps (normalizing and inspecting cost far more than
/// a lookup; applications repeat a few texts with parameters).
const KNOWN_TEXTS: usize = 64;

/// The statements of one session on their way to the access log.
pub struct Trail {
    log: Arc<AuditLog>,
    /// Who the session is, in its statement records ...
    who: Arc<Who>,
    /// ... and in their `outcome` records (session and user).
    who_briefly: Arc<Who>,
    state: Mutex<State>,
}

impl Trail {
    pub fn new(log: Arc<AuditLog>, who: SessionIdentity) -> Arc<Trail> {
        let mut briefly = Event::new(EventKind::Outcome);
        briefly.session = Some(who.session.clone());
        briefly.user = Some(who.user.clone());
        Arc::new(Trail {
            log,
            who: Who::new(&who.event(EventKind::Statement)),
            who_briefly: Who::new(&briefly),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A simple Query of cycle `cycle` is about to be sent with these statements; refused while the
    /// log is unwritable and one of them touches a policy table.
    pub fn query(&self, statements: &[RewrittenStatement], cycle: u64) -> Result<(), Refusal> {
        self.query_sent(statements.iter().map(|s| self.sent(s)), cycle)
    }

    /// [`sent`], worked out once per session and statement text.
    fn sent(&self, statement: &RewrittenStatement) -> Option<Arc<What>> {
        self.described(&statement.sql, || vec![sent(statement)])
            .first()
            .cloned()
            .flatten()
    }

    /// The description of the statements of `text` (as sent upstream): from the session's cache, or
    /// `describe`d now and kept. Within a session the same text always touches the same tables.
    fn described(
        &self,
        text: &str,
        describe: impl FnOnce() -> Vec<Option<Arc<What>>>,
    ) -> Described {
        if let Some(found) = self.state().known.get(text) {
            return found.clone();
        }
        let described: Described = describe().into();
        let mut state = self.state();
        if state.known.len() >= KNOWN_TEXTS {
            state.known.clear();
        }
        state.known.insert(text.into(), described.clone());
        described
    }

    fn query_sent(
        &self,
        sent: impl Iterator<Item = Option<Arc<What>>>,
        cycle: u64,
    ) -> Result<(), Refusal> {
        let sent: Vec<Option<Arc<What>>> = sent.collect();
        if sent.iter().any(Option::is_some) {
            self.writable()?;
        }
        let mut state = self.state();
        // Submitting takes no lock of the session's: the access records queue in statement order.
        let pending = sent.iter().map(|s| {
            (
                cycle,
                Pending::Statement(s.as_ref().map(|s| self.access(s))),
            )
        });
        state.pending.extend(pending);
        Ok(())
    }

    /// Follows a message (`body` as sent, in cycle `cycle`) that acts on statements already parsed:
    /// Bind and Execute; the others change nothing. Refused like [`Trail::execute`].
    pub fn follow(&self, tag: u8, body: &[u8], cycle: u64) -> Result<(), Refusal> {
        match tag {
            b'B' => self.bind(body),
            b'E' => return self.execute(body, cycle),
            _ => {}
        }
        Ok(())
    }

    /// A Parse was sent: remember the statement under its name.
    pub fn parse(&self, name: &[u8], statements: &[RewrittenStatement]) {
        self.parse_sent(name, statements.first().and_then(|s| self.sent(s)));
    }

    fn parse_sent(&self, name: &[u8], sent: Option<Arc<What>>) {
        self.state().prepared.insert(name.to_vec(), sent);
    }

    /// A Bind: the portal runs the named statement.
    fn bind(&self, body: &[u8]) {
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

    /// An Execute is about to be sent: its portal's statement answers next. Refused while the log is
    /// unwritable and the statement touches a policy table.
    fn execute(&self, body: &[u8], cycle: u64) -> Result<(), Refusal> {
        let Some((portal, _)) = frame::cstr(body) else {
            return Ok(());
        };
        let sent = self.state().portals.get(portal).cloned().flatten();
        if sent.is_some() {
            self.writable()?;
        }
        let access = sent.as_ref().map(|s| self.access(s));
        self.state()
            .pending
            .push_back((cycle, Pending::Statement(access)));
        Ok(())
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

    /// A message of cycle `cycle` was refused: recorded now, its error answer skipped later.
    pub fn refused(&self, refusal: &Refusal, sql: Option<&str>, cycle: u64) {
        let mut event = PreparedEvent::new(EventKind::Statement, &self.who);
        let tables = refusal.tables.iter().map(TableTouched::from_use).collect();
        event.what = Some(What::new(None, sql.and_then(normalize), tables));
        event.outcome = Outcome::refused(refusal);
        let receipt = self.log.submit(event);
        let mut state = self.state();
        state.receipts.push((receipt, false));
        state.pending.push_back((cycle, Pending::Refused));
    }

    fn writable(&self) -> Result<(), Refusal> {
        if self.log.is_healthy() {
            Ok(())
        } else {
            Err(unwritable())
        }
    }

    /// A statement of cycle `cycle` ended: the next one of that cycle waiting is answered.
    fn answered(&self, outcome: Outcome, rows: Option<u64>, cycle: u64) {
        let mut state = self.state();
        let state = &mut *state;
        if let Some(sqlstate) = outcome.sqlstate() {
            state.cycle_error = Some(sqlstate.to_owned());
        }
        if state.pending.front().is_none_or(|(c, _)| *c != cycle) {
            return;
        }
        let Some((_, Pending::Statement(Some(access)))) = state.pending.pop_front() else {
            return;
        };
        self.outcome(&access, outcome, rows, None);
        state.receipts.push((access.receipt, true));
    }

    /// A ReadyForQuery: cycle `cycle` is over. Its statements still pending were sent but never run
    /// (PostgreSQL skips the rest of a Query or of the messages up to Sync after an error).
    fn ready(&self, cycle: u64) {
        let mut state = self.state();
        let ended = state
            .pending
            .iter()
            .take_while(|(c, _)| *c <= cycle)
            .count();
        let skipped: Vec<(u64, Pending)> = state.pending.drain(..ended).collect();
        let sqlstate = state.cycle_error.take().unwrap_or_default();
        drop(state);
        for (_, pending) in skipped {
            if let Pending::Statement(Some(access)) = pending {
                let outcome = Outcome::Error {
                    sqlstate: sqlstate.clone(),
                };
                let why = "not run: an earlier statement of the same request failed";
                self.outcome(&access, outcome, None, Some(why));
            }
        }
    }

    /// The receipts the answers seen so far wait for, as one future (`None` when there are none).
    fn hold(&self) -> Option<Hold> {
        let receipts = std::mem::take(&mut self.state().receipts);
        if receipts.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for (receipt, required) in receipts {
                match receipt.durable().await {
                    Ok(_) => {}
                    Err(err) if required => {
                        return Err(Withheld {
                            code: "58030",
                            message: format!(
                                "{err}: the statement ran but its access record is not in the log, so its \
                                 answer is withheld and the session closed"
                            ),
                        });
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
    Some(What::new(
        Some(format!("{:?}", statement.kind).to_ascii_lowercase()),
        normalize(&statement.sql),
        statement
            .tables
            .iter()
            .map(TableTouched::from_use)
            .collect(),
    ))
}

/// Finds the policy tables an unrestricted role's statements name, for its [`Trail`]. Statements
/// that do not mention a policy table's name (a substring test, no parsing) cost only that test.
#[derive(Clone)]
pub struct Inspector {
    role: Arc<RoleAccess>,
    state: Arc<PolicyState>,
    /// The policy tables' names, lower case.
    names: Vec<String>,
}

impl Inspector {
    pub fn new(role: Arc<RoleAccess>, state: Arc<PolicyState>) -> Inspector {
        let mut names: Vec<String> = role
            .tables
            .keys()
            .map(|t| t.name.to_ascii_lowercase())
            .collect();
        names.dedup();
        Inspector { role, state, names }
    }

    fn may_touch(&self, sql: &[u8]) -> bool {
        may_name_one_of(&self.names, sql)
    }

    /// What each statement of `sql` touches (`None`: no policy table). Text that does not parse
    /// counts as one statement, logged without tables when it mentions a policy table.
    fn statements(&self, sql: &str) -> Vec<Option<Arc<What>>> {
        if !self.may_touch(sql.as_bytes()) {
            return vec![None];
        }
        // Within the bounds (checked before), on a parse thread.
        let Ok(statements) = policy::rewrite::limits::parse_bounded(sql) else {
            return vec![Some(What::new(
                Some("unparsed".into()),
                normalize(sql),
                Vec::new(),
            ))];
        };
        statements
            .iter()
            .map(|statement| {
                let text = statement.to_string();
                let tables: Vec<TableTouched> =
                    policy::rewrite::inspect(&text, &self.role, &self.state.catalog)
                        .iter()
                        .filter(|used| self.role.tables.contains_key(&used.table))
                        .map(TableTouched::from_use)
                        .collect();
                (!tables.is_empty()).then(|| {
                    What::new(
                        Some(statement_kind(statement).into()),
                        normalize(&text),
                        tables,
                    )
                })
            })
            .collect()
    }
}

/// Whether `sql` may name one of `names` (lower case): one of them as a whole word, or a
/// Unicode-escaped identifier (`U&"..."`) that could spell one.
fn may_name_one_of(names: &[String], sql: &[u8]) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$';
    let escaped = sql.windows(3).any(|w| w.eq_ignore_ascii_case(b"u&\""));
    escaped
        || names.iter().any(|name| {
            let name = name.as_bytes();
            sql.windows(name.len()).enumerate().any(|(at, w)| {
                w.eq_ignore_ascii_case(name)
                    && !at.checked_sub(1).and_then(|i| sql.get(i)).is_some_and(word)
                    && !sql.get(at + name.len()).is_some_and(word)
            })
        })
}

fn statement_kind(statement: &Statement) -> &'static str {
    match statement {
        Statement::Query(_) => "select",
        Statement::Insert(_) => "insert",
        Statement::Update { .. } => "update",
        Statement::Delete(_) => "delete",
        Statement::Copy { .. } => "copy",
        Statement::Explain { .. } => "explain",
        Statement::Merge { .. } => "merge",
        Statement::Declare { .. } => "cursor",
        Statement::Prepare { .. } => "prepare",
        Statement::CreateTable(_) | Statement::CreateView { .. } => "create",
        Statement::AlterTable { .. } => "alter",
        Statement::Drop { .. } => "drop",
        Statement::Truncate { .. } => "truncate",
        _ => "other",
    }
}

impl Trail {
    /// Whether the description of `sql` must be worked out by parsing it.
    fn needs_parse(&self, inspector: &Inspector, sql: &[u8]) -> bool {
        inspector.may_touch(sql)
            && std::str::from_utf8(sql).is_ok_and(|sql| !self.state().known.contains_key(sql))
    }

    /// Refuses a text beyond the parser's bounds before it is parsed for its description.
    fn within_limits(&self, sql: &str) -> Result<(), Refusal> {
        if self.state().known.contains_key(sql) {
            return Ok(());
        }
        policy::rewrite::limits::check(sql)
    }

    /// An unrestricted role's simple Query is about to be sent (see [`Trail::query`]).
    pub fn unrestricted_query(
        &self,
        inspector: &Inspector,
        sql: &str,
        cycle: u64,
    ) -> Result<(), Refusal> {
        if !inspector.may_touch(sql.as_bytes()) {
            // The fast path: one statement or several, none is logged.
            self.state()
                .pending
                .push_back((cycle, Pending::Statement(None)));
            return Ok(());
        }
        self.within_limits(sql)?;
        let described = self.described(sql, || inspector.statements(sql));
        self.query_sent(described.iter().cloned(), cycle)
    }

    /// An unrestricted role's Parse was sent (see [`Trail::parse`]); refused beyond the parser's
    /// bounds.
    pub fn unrestricted_parse(
        &self,
        inspector: &Inspector,
        name: &[u8],
        sql: &str,
    ) -> Result<(), Refusal> {
        let sent = match inspector.may_touch(sql.as_bytes()) {
            true => self
                .within_limits(sql)
                .map(|()| self.described(sql, || inspector.statements(sql)))?
                .first()
                .cloned()
                .flatten(),
            false => None,
        };
        self.parse_sent(name, sent);
        Ok(())
    }
}

/// The access log of an unrestricted session: its trail and what finds the policy tables.
#[derive(Clone)]
pub struct UnrestrictedAudit {
    trail: Arc<Trail>,
    inspector: Inspector,
}

impl UnrestrictedAudit {
    /// The frontend side for `trail`; pair it with an [`AuditObserver`] on the same trail.
    pub fn new(trail: Arc<Trail>, role: Arc<RoleAccess>, state: Arc<PolicyState>) -> Self {
        UnrestrictedAudit {
            trail,
            inspector: Inspector::new(role, state),
        }
    }

    /// Whether following a statement of `text` means parsing it (it may name a policy table and
    /// the session has not described it yet): then it is followed on a parse thread.
    pub fn needs_parse(&self, text: &[u8]) -> bool {
        self.trail.needs_parse(&self.inspector, text)
    }

    /// Follows one client message (`frame`, tag included, in cycle `cycle`) about to be forwarded
    /// unchanged; an error is a refusal (already recorded) the session must send instead.
    pub fn on_client_message(&self, tag: u8, frame: &[u8], cycle: u64) -> Result<(), Refusal> {
        let body = frame::body(frame);
        let text = |body| frame::cstr(body).and_then(|(t, _)| std::str::from_utf8(t).ok());
        let followed = match tag {
            b'Q' => match text(body) {
                Some(sql) => self.trail.unrestricted_query(&self.inspector, sql, cycle),
                None => self.trail.query_sent(std::iter::once(None), cycle),
            },
            b'P' => match frame::cstr(body) {
                Some((name, rest)) => {
                    let sql = text(rest).unwrap_or_default();
                    self.trail.unrestricted_parse(&self.inspector, name, sql)
                }
                None => Ok(()),
            },
            _ => self.trail.follow(tag, body, cycle),
        };
        followed.inspect_err(|refusal| {
            let sql = matches!(tag, b'Q').then(|| text(body)).flatten();
            self.trail.refused(refusal, sql, cycle);
        })
    }
}

/// The server side of the session's access log (a part of its hook): completes the session's
/// [`Trail`] with PostgreSQL's answers and says what the client's answers wait for.
pub struct AuditObserver {
    trail: Arc<Trail>,
}

impl AuditObserver {
    pub fn new(trail: Arc<Trail>) -> AuditObserver {
        AuditObserver { trail }
    }

    /// A statement of cycle `cycle` ended, or the cycle did (see `session::SessionHook`).
    pub fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        match event {
            ServerEvent::CommandComplete { tag } => {
                let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                self.trail.answered(Outcome::Ok, rows, cycle);
            }
            ServerEvent::Error { sqlstate } => self.trail.answered(
                Outcome::Error {
                    sqlstate: sqlstate.to_owned(),
                },
                None,
                cycle,
            ),
            // After ReadyForQuery nothing of the cycle is still running (an error skipped the rest).
            ServerEvent::Ready { .. } => self.trail.ready(cycle),
        }
    }

    /// The access records the answers seen so far wait for (see `session::SessionHook::hold`).
    pub fn hold(&mut self) -> Option<Hold> {
        self.trail.hold()
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
            let trail = Trail::new(log.clone(), who.clone());
            let mut observer = AuditObserver::new(trail.clone());
            trail
                .query(rewritten.statements(), 1)
                .expect("log writable");
            if follow_ups {
                // Waiting for a later record has the writer take the access records now.
                let flush = who.event(EventKind::LoginOk);
                log.record(flush).await.expect("written");
            }
            observer.on_server_event(ServerEvent::CommandComplete { tag: "SELECT 1" }, 1);
            observer.on_server_event(ServerEvent::Error { sqlstate: "57014" }, 1);
            observer.on_server_event(ServerEvent::Ready { status: b'I' }, 1);
            observer
                .hold()
                .expect("records to wait for")
                .await
                .expect("durable");
            trail.refused(&refusal, Some(refused_sql), 2);
            // Written before the next session starts (and before the shutdown).
            let refused = observer.hold().expect("the refusal's record");
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
        let trail = Trail::new(log.clone(), SessionIdentity::default());
        let mut observer = AuditObserver::new(trail.clone());
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
            observer.on_server_event(event, cycle);
        }
        let hold = observer.hold().expect("the access record");
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

    #[test]
    fn only_whole_policy_table_names_take_the_slow_path() {
        let names = ["contacts".to_string()];
        for sql in [
            "SELECT * FROM contacts",
            "select * from public.CONTACTS where id = 1",
            "SELECT 1 FROM \"contacts\"",
            "SELECT * FROM U&\"cont\\0061cts\"",
        ] {
            assert!(may_name_one_of(&names, sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT * FROM contacts_archive",
            "SELECT mycontacts FROM t",
            "SELECT 1",
        ] {
            assert!(!may_name_one_of(&names, sql.as_bytes()), "{sql}");
        }
    }
}
