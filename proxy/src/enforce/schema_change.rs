//! Schema changes by an unrestricted role (e.g. `dpo`) on tables the policy's views depend on.
//! PostgreSQL refuses `ALTER TABLE ... DROP COLUMN` or `ALTER COLUMN ... TYPE` while a view depends on
//! the column, so the proxy wraps the client's `ALTER TABLE` of a policy table, in the same
//! transaction, between the drop of the restricted roles' view schemas and their recreation from
//! the policy compiled against the catalog as the change leaves it (the proxy applies the
//! `ALTER TABLE` operations to its copy of the catalog with `policy::alter_catalog`, from the same
//! parse of the text the access log inspects):
//! - a simple Query becomes one multi-statement Query `drops; <client text>; drops; recreation`
//!   (plain SQL; the drops come again because the client's text may commit before the recreation);
//! - a Parse of one statement becomes `DO $$ ... $$` running the same parts with `EXECUTE` (PL/pgSQL,
//!   which PostgreSQL installs by default), so the views are rebuilt at every Execute of it.
//!
//! The client sees what PostgreSQL answers to its own statements only ([`Answers`], through the
//! session's `ServerFrame` hook): the CommandCompletes and notices of the wrapping are withheld, and
//! the `DO` of a wrapped Parse comes back as `ALTER TABLE`. The drops take an advisory lock that the
//! applies and the rebuilds take too, so they replace the views one after the other.
//!
//! If the change fails or is rolled back, the old views come back with it. A column the policy
//! names but the change removes is absent from the recompiled views (fail closed) and
//! `maschera policy check --upstream` reports the drift. Once the session is idle again the
//! proxy rebuilds the views once more from the live catalog on its own connection (this also covers
//! `ALTER TABLE` forms it cannot apply to its copy: for those the views are only dropped in the
//! transaction, and restricted roles get "relation does not exist" until the rebuild) and reloads
//! the policy.
//!
//! Every other message of the unrestricted role passes untouched; only texts that contain
//! `alter` are parsed (on a parse thread, see `offload`; what the session's changes did is its
//! [`UnrestrictedFrontend`]'s own state). Not for: restricted roles (see `enforce`), the view SQL
//! (see `policy::apply_sql`), the catalog change itself (see `policy::alter_catalog`).

use crate::enforce::audit_trail::{self, Known, Recorded, Trail, UnrestrictedAudit};
use crate::enforce::policy_state::{PolicyHandle, PolicyState, compile_tolerating_drift};
use crate::session::offload::Decider;
use crate::session::{Decision, Hold, ServerEvent, ServerFrame};
use crate::wire::client_error::ClientError;
use crate::wire::frame;
use crate::wire::{Backend, Frontend};
use bytes::Bytes;
use policy::access::{Catalog, RoleAccess};
use policy::alter_catalog::{alter_tables, changed_catalog, table_of};
use policy::apply_sql::LiveState;
use policy::inspect::ParsedOnce;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Forwards everything; an `ALTER TABLE` of a policy table gets the views dropped before it and
/// recompiled after it, in the same transaction. Texts to parse (a possible schema change, or one
/// the access log must inspect) are decided on a parse thread (see `offload`). Owns what the
/// session's decisions record: its schema changes' [`Tracking`] and its access-log trail; it also
/// follows the answers (withholds those to the wrapping, starts the rebuild once the session is
/// idle after a change).
pub struct UnrestrictedFrontend {
    rules: UnrestrictedRules,
    tracking: Tracking,
    /// The access log's view of the session's statements (see `audit_trail`).
    trail: Option<Trail>,
    /// A Parse was wrapped in this session: Binds and Executes are followed (see `Answers`).
    extended_wrapped: bool,
}

/// What an unrestricted role's decisions read: the policy, and where their records go. Cloned for a
/// decision off the session's thread.
#[derive(Clone)]
pub struct UnrestrictedRules {
    handle: Arc<PolicyHandle>,
    audit: Option<UnrestrictedAudit>,
}

/// A decision off the session's thread: the rules, and its copy of what it reads of the session.
pub struct UnrestrictedWork {
    rules: UnrestrictedRules,
    /// The session's description of the statement's text, if it has one.
    known: Known,
    /// The catalog as the session's changes leave it (`None`: as loaded).
    catalog: Option<Arc<Catalog>>,
}

/// What a decision found, recorded on the session's thread.
#[derive(Default)]
pub struct UnrestrictedFound {
    trail: Option<Recorded>,
    /// A schema change of a policy table was wrapped.
    change: Option<Change>,
    /// A Parse of this name: wrapped (`true`) or not.
    parsed: Option<(Vec<u8>, bool)>,
}

/// A wrapped schema change of a policy table.
struct Change {
    /// The catalog as the change leaves it (`None`: a form the proxy does not model).
    catalog: Option<Catalog>,
    /// A wrapped simple Query: its answers to sort out.
    query: Option<WrappedQuery>,
}

/// What the session's schema changes did to the catalog, as far as the proxy knows, until the
/// reload after the rebuild has the live catalog.
#[derive(Default)]
struct Tracking {
    /// A schema change was sent: rebuild once the session is idle.
    changed: bool,
    /// The catalog as the changes of the open transaction leave it.
    in_transaction: Option<Arc<Catalog>>,
    /// The catalog as committed changes leave it, until the rebuild's reload.
    committed: Option<Arc<Catalog>>,
    /// An error came in the current cycle (an implicit transaction then rolls back).
    error_in_cycle: bool,
    /// What of PostgreSQL's answers to wrapped statements the client sees.
    answers: Answers,
    /// Tells when the rebuild after a change is done.
    rebuilt: Option<oneshot::Receiver<()>>,
}

/// The client sees the answer PostgreSQL gives to its own statement, not to the wrapping: of a wrapped
/// simple Query, the CommandCompletes and NoticeResponses of the drops before and the recreation after
/// its statements are withheld; a wrapped Parse runs as `DO`, whose CommandComplete is renamed to the
/// statement's own `ALTER TABLE` (its notices are silenced inside the block, see [`do_block`]).
#[derive(Default)]
struct Answers {
    /// Wrapped simple Queries not answered yet, in order.
    queries: VecDeque<WrappedQuery>,
    /// The cycle of each Execute of a wrapped Parse not answered yet, in order.
    executes: VecDeque<u64>,
    /// Statements and portals of wrapped Parses (by name).
    statements: BTreeSet<Vec<u8>>,
    portals: BTreeSet<Vec<u8>>,
    /// CommandCompletes in the current cycle so far.
    completions: usize,
}

/// A wrapped simple Query: `before` statements, the client's `own`, then the recreation.
struct WrappedQuery {
    cycle: u64,
    before: usize,
    own: usize,
}

impl Answers {
    /// How the client gets a CommandComplete (`C`) or NoticeResponse (`N`) answering cycle `cycle`.
    fn server_frame(&mut self, message: &Backend<'_>, cycle: u64) -> ServerFrame {
        let completion = matches!(message, Backend::CommandComplete { .. });
        if let Some(query) = self.queries.front().filter(|q| q.cycle == cycle) {
            let at = self.completions;
            if completion {
                self.completions += 1;
            }
            let own = at >= query.before && at < query.before + query.own;
            return if own {
                ServerFrame::Pass
            } else {
                ServerFrame::Withhold
            };
        }
        if self.executes.front() == Some(&cycle)
            && *message == (Backend::CommandComplete { tag: "DO" })
        {
            self.executes.pop_front();
            if let Some(frame) = frame::build(b'C', &[b"ALTER TABLE\0"]) {
                return ServerFrame::Replace(bytes::BytesMut::from(&frame[..]));
            }
        }
        ServerFrame::Pass
    }

    /// Cycle `ended` is over.
    fn on_ready(&mut self, ended: u64) {
        self.completions = 0;
        self.queries.retain(|q| q.cycle > ended);
        self.executes.retain(|cycle| *cycle > ended);
    }

    /// Follows Bind and Execute (of cycle `cycle`) of wrapped Parses.
    fn follow(&mut self, message: &Frontend<'_>, cycle: u64) {
        match *message {
            Frontend::Bind {
                portal, statement, ..
            } => {
                if self.statements.contains(statement) {
                    self.portals.insert(portal.to_vec());
                } else {
                    self.portals.remove(portal);
                }
            }
            Frontend::Execute { portal, .. } if self.portals.contains(portal) => {
                self.executes.push_back(cycle);
            }
            _ => {}
        }
    }
}

impl Tracking {
    /// The catalog the next change applies to (`None`: the loaded one).
    fn current(&self) -> Option<Arc<Catalog>> {
        self.in_transaction
            .as_ref()
            .or(self.committed.as_ref())
            .cloned()
    }

    /// Once the rebuild after a change is done, the reload read the live catalog, unless another
    /// change is on its way.
    fn catch_up(&mut self) {
        let Some(rebuilt) = &mut self.rebuilt else {
            return;
        };
        match rebuilt.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return,
            Ok(()) if !self.changed && self.in_transaction.is_none() => self.committed = None,
            _ => {}
        }
        self.rebuilt = None;
    }

    /// Records a schema change a decision wrapped.
    fn wrapped(&mut self, change: Change) {
        self.changed = true;
        if let Some(catalog) = change.catalog {
            self.in_transaction = Some(Arc::new(catalog));
        }
        self.answers.queries.extend(change.query);
    }

    fn on_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        match event {
            ServerEvent::CommandComplete { tag } => match tag {
                "COMMIT" => {
                    if let Some(catalog) = self.in_transaction.take() {
                        self.committed = Some(catalog);
                    }
                }
                // Also ROLLBACK TO SAVEPOINT: what was changed before the savepoint is then
                // forgotten, and the rebuild after the transaction catches up.
                "ROLLBACK" => self.in_transaction = None,
                _ => {}
            },
            ServerEvent::Error { .. } => self.error_in_cycle = true,
            ServerEvent::Ready { status } => {
                self.answers.on_ready(cycle);
                match status {
                    // Idle: an implicit transaction ended, committed unless an error came.
                    b'I' => {
                        if let Some(catalog) = self.in_transaction.take()
                            && !self.error_in_cycle
                        {
                            self.committed = Some(catalog);
                        }
                    }
                    b'E' => self.in_transaction = None,
                    _ => {}
                }
                self.error_in_cycle = false;
            }
        }
    }
}

/// The SQL around a schema change: what runs before and after the client's statement.
struct Wrapping {
    before: Vec<String>,
    after: Vec<String>,
    /// The client's statements in the text (each answered with one CommandComplete).
    statements: usize,
}

impl Decider for UnrestrictedFrontend {
    type Work = UnrestrictedWork;
    type Found = UnrestrictedFound;

    fn quick(&mut self, _tag: u8, frame: &[u8], cycle: u64) -> Result<Decision, UnrestrictedWork> {
        self.tracking.catch_up();
        let message = match Frontend::decode(frame) {
            Ok(message) => message,
            Err(error) => return Ok(self.refuse(audit_trail::malformed(error), cycle)),
        };
        let Some(text) = message.sql() else {
            return Ok(self.follow(message, cycle));
        };
        let audit = self.rules.audit.as_ref().zip(self.trail.as_ref());
        let parses = schema_change_text(text).is_some()
            || audit.is_some_and(|(audit, trail)| audit.needs_parse(trail, text));
        let no_trail = Known::default();
        let known = self.trail.as_ref().map_or(&no_trail, Trail::known);
        if parses {
            return Err(UnrestrictedWork {
                rules: self.rules.clone(),
                known: std::str::from_utf8(text)
                    .map_or_else(|_| Known::default(), |t| known.only(t)),
                catalog: self.tracking.current(),
            });
        }
        let catalog = self.tracking.current();
        let (decision, found) = self.rules.decide(known, catalog.as_deref(), message, cycle);
        self.settle(found);
        Ok(decision)
    }

    fn full(
        work: UnrestrictedWork,
        _tag: u8,
        frame: &[u8],
        cycle: u64,
    ) -> (Decision, UnrestrictedFound) {
        // `quick` decoded these very bytes before it sent them here.
        let message = match Frontend::decode(frame) {
            Ok(message) => message,
            Err(error) => {
                let refusal = audit_trail::malformed(error);
                return (refused(refusal), UnrestrictedFound::default());
            }
        };
        let catalog = work.catalog.as_deref();
        work.rules.decide(&work.known, catalog, message, cycle)
    }

    fn settle(&mut self, found: UnrestrictedFound) {
        if let (Some(trail), Some(recorded)) = (&mut self.trail, found.trail) {
            trail.record(recorded);
        }
        if let Some(change) = found.change {
            self.tracking.wrapped(change);
        }
        match found.parsed {
            Some((name, true)) => {
                self.extended_wrapped = true;
                self.tracking.answers.statements.insert(name);
            }
            Some((name, false)) if self.extended_wrapped => {
                self.tracking.answers.statements.remove(&name);
            }
            _ => {}
        }
    }

    fn server_frame(&mut self, message: &Backend<'_>, cycle: u64) -> ServerFrame {
        self.tracking.answers.server_frame(message, cycle)
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        self.tracking.catch_up();
        self.tracking.on_event(event, cycle);
        let idle = matches!(event, ServerEvent::Ready { status: b'I' });
        if idle && std::mem::take(&mut self.tracking.changed) {
            let handle = self.rules.handle.clone();
            let (done, rebuilt) = oneshot::channel();
            self.tracking.rebuilt = Some(rebuilt);
            tokio::spawn(async move {
                match handle.recreate_views().await {
                    Ok(()) => info!("views recompiled after a schema change"),
                    Err(err) => {
                        warn!(error = %format!("{err:#}"), "recompiling the views after a schema change failed; restricted roles are refused until `maschera policy apply`")
                    }
                }
                let _ = done.send(());
            });
        }
        if let Some(trail) = &mut self.trail {
            trail.on_server_event(event, cycle);
        }
    }

    fn hold(&mut self) -> Option<Hold> {
        self.trail.as_mut().and_then(Trail::hold)
    }
}

impl UnrestrictedFrontend {
    /// The frontend of an unrestricted session of `role`, its statements recorded in `trail` if
    /// there is an access log.
    pub fn new(handle: &Arc<PolicyHandle>, trail: Option<Trail>, role: Arc<RoleAccess>) -> Self {
        let audit = trail
            .as_ref()
            .map(|trail| UnrestrictedAudit::new(trail, role, handle.current()));
        UnrestrictedFrontend {
            rules: UnrestrictedRules {
                handle: handle.clone(),
                audit,
            },
            tracking: Tracking::default(),
            trail,
            extended_wrapped: false,
        }
    }

    /// A message without a statement text (Bind, Execute, ...): the wrapped Parses' and the access
    /// log's follow it.
    fn follow(&mut self, message: Frontend<'_>, cycle: u64) -> Decision {
        if self.extended_wrapped {
            self.tracking.answers.follow(&message, cycle);
        }
        let Some(trail) = &mut self.trail else {
            return Decision::Forward;
        };
        match trail.follow(&message, cycle) {
            Ok(()) => Decision::Forward,
            Err(refusal) => self.refuse(refusal, cycle),
        }
    }

    /// A message refused on the session's thread, recorded in the access log's trail.
    fn refuse(&mut self, refusal: policy::rewrite::Refusal, cycle: u64) -> Decision {
        if let Some(trail) = &mut self.trail {
            trail.refused(&refusal, None, cycle);
        }
        refused(refusal)
    }
}

/// A refusal as the relay sends it.
fn refused(refusal: policy::rewrite::Refusal) -> Decision {
    Decision::Refuse(ClientError::from(refusal))
}

/// The text, if it may be a schema change (cheap test first: most statements never mention
/// ALTER).
fn schema_change_text(text: &[u8]) -> Option<&str> {
    if !text.windows(5).any(|w| w.eq_ignore_ascii_case(b"alter")) {
        return None;
    }
    std::str::from_utf8(text).ok()
}

impl UnrestrictedRules {
    /// What becomes of a Query or Parse, and what that records. `known`: the session's
    /// descriptions of statement texts; `catalog`: the catalog as its changes leave it.
    fn decide(
        &self,
        known: &Known,
        catalog: Option<&Catalog>,
        message: Frontend<'_>,
        cycle: u64,
    ) -> (Decision, UnrestrictedFound) {
        let mut found = UnrestrictedFound::default();
        // The one parse the access log's inspection and the schema change's wrapping share.
        let text = message
            .sql()
            .and_then(|text| std::str::from_utf8(text).ok());
        let parsed = text.map(ParsedOnce::new);
        if let Some(audit) = &self.audit {
            let (followed, recorded) = audit.statement(known, parsed.as_ref(), &message, cycle);
            found.trail = Some(recorded);
            if let Err(refusal) = followed {
                return (refused(refusal), found);
            }
        }
        if let Err(refusal) = within_limits(&message) {
            return (refused(refusal), found);
        }
        let replaced = match (message, &parsed) {
            (Frontend::Query { .. }, Some(parsed)) => {
                self.query(catalog, parsed, cycle, &mut found)
            }
            (
                Frontend::Parse {
                    name, param_types, ..
                },
                Some(parsed),
            ) => self.parse(catalog, parsed, name, param_types, &mut found),
            _ => None,
        };
        let decision = match replaced {
            Some(bytes) => {
                info!(
                    "schema change of a policy table: the restricted roles' views are recompiled in its transaction"
                );
                Decision::Replace(bytes)
            }
            None => Decision::Forward,
        };
        (decision, found)
    }

    /// Query: `drops; <text>; recreation` as one multi-statement Query.
    fn query(
        &self,
        catalog: Option<&Catalog>,
        parsed: &ParsedOnce,
        cycle: u64,
        found: &mut UnrestrictedFound,
    ) -> Option<Bytes> {
        let sql = schema_change_text(parsed.text().as_bytes())?;
        let (wrapping, mut change) = self.wrapping(catalog, parsed)?;
        change.query = Some(WrappedQuery {
            cycle,
            before: wrapping.before.len(),
            own: wrapping.statements,
        });
        found.change = Some(change);
        let mut out = String::new();
        for step in &wrapping.before {
            out.push_str(step);
            out.push_str(";\n");
        }
        out.push_str(sql);
        // A line break ends a trailing `--` comment of the client's text.
        out.push_str("\n;\n");
        out.push_str(&wrapping.after.join(";\n"));
        Frontend::Query {
            sql: out.as_bytes(),
        }
        .to_bytes()
    }

    /// Parse: the one statement becomes a DO block running drops, the statement and recreation.
    fn parse(
        &self,
        catalog: Option<&Catalog>,
        parsed: &ParsedOnce,
        name: &[u8],
        param_types: &[u8],
        found: &mut UnrestrictedFound,
    ) -> Option<Bytes> {
        let Some((sql, (wrapping, change))) = schema_change_text(parsed.text().as_bytes())
            .and_then(|sql| Some((sql, self.wrapping(catalog, parsed)?)))
            // PostgreSQL refuses a Parse of several statements; so does the wrapped one.
            .filter(|(_, (wrapping, _))| wrapping.statements == 1)
        else {
            found.parsed = Some((name.to_vec(), false));
            return None;
        };
        found.change = Some(change);
        found.parsed = Some((name.to_vec(), true));
        let before: Vec<&str> = wrapping.before.iter().map(String::as_str).collect();
        let after: Vec<&str> = wrapping.after.iter().map(String::as_str).collect();
        let block = do_block(&before, sql, &after);
        Frontend::Parse {
            name,
            sql: block.as_bytes(),
            param_types,
        }
        .to_bytes()
    }

    /// What to run around the statements of `parsed`, if they alter a policy table, and the
    /// change they make to `catalog` (`None`: the loaded one).
    fn wrapping(
        &self,
        catalog: Option<&Catalog>,
        parsed: &ParsedOnce,
    ) -> Option<(Wrapping, Change)> {
        let statements = parsed.statements().ok()?;
        let state = self.handle.current();
        let policy = &state.policy;
        let catalog = catalog.unwrap_or(&state.catalog);
        let alters = alter_tables(statements);
        let touches_policy = alters.iter().any(|alter| {
            table_of(catalog, alter).is_some_and(|table| policy.table_by_name(&table).is_some())
        });
        if !touches_policy {
            return None;
        }
        let before: Vec<String> = policy::apply_sql::drop_views_steps(policy)
            .into_iter()
            .map(|step| step.sql)
            .collect();
        let changed = changed_catalog(catalog, &alters);
        let after = match &changed {
            Some(changed) => {
                // The drops again first: the client's text may end its transaction (`COMMIT`)
                // before the recreation, and a rebuild may come in between.
                let recreated = recreation(&state, changed.clone());
                match recreated.is_empty() {
                    true => recreated,
                    false => before.iter().cloned().chain(recreated).collect(),
                }
            }
            None => {
                warn!(
                    "this ALTER TABLE form is not applied to the proxy's copy of the catalog: the views are rebuilt after the transaction"
                );
                Vec::new()
            }
        };
        let wrapping = Wrapping {
            before,
            after,
            statements: statements.len(),
        };
        let change = Change {
            catalog: changed,
            query: None,
        };
        Some((wrapping, change))
    }
}

/// A text that may be a schema change is parsed: refused beyond the parser's bounds.
fn within_limits(message: &Frontend<'_>) -> Result<(), policy::rewrite::Refusal> {
    match message.sql().and_then(schema_change_text) {
        Some(sql) => policy::rewrite::limits::check(sql),
        None => Ok(()),
    }
}

/// The statements that recreate every restricted role's views over `catalog`.
fn recreation(state: &PolicyState, catalog: Catalog) -> Vec<String> {
    let policy = &state.policy;
    let (access, _) = compile_tolerating_drift(policy, &catalog);
    let live = LiveState {
        catalog,
        sequences: state.sequences.clone(),
        login_prefix: state.login_prefix.clone(),
        primary_keys: state.primary_keys.clone(),
        objects_owner: state.objects_owner.clone(),
        ..LiveState::default()
    };
    let steps = policy::apply_sql::recreate_views_steps(policy, &access, &live);
    if steps.iter().any(|step| step.secret.is_some()) {
        return Vec::new();
    }
    steps.into_iter().map(|step| step.sql).collect()
}

/// `DO $tag$ ... BEGIN EXECUTE $tagN$<step>$tagN$; ... END $tag$` running `before`, the client's
/// `statement` and `after`, with dollar-quote tags that occur in none of them. The notices of the
/// steps before and after are silenced (`client_min_messages` raised to `error` around them, then
/// back to the client's), so that the client sees those of its statement only.
fn do_block(before: &[&str], statement: &str, after: &[&str]) -> String {
    let all = || {
        before
            .iter()
            .chain(after)
            .chain(std::iter::once(&statement))
    };
    let mut tag = String::from("maschera");
    while all().any(|step| step.contains(&tag)) {
        tag.push('_');
    }
    let quiet = "PERFORM pg_catalog.set_config('client_min_messages', 'error', true);\n";
    let restore = "PERFORM pg_catalog.set_config('client_min_messages', maschera_shown, true);\n";
    let execute = |step: &str| format!("EXECUTE ${tag}_s${step}${tag}_s$;\n");
    let mut block = format!(
        "DO ${tag}$ DECLARE maschera_shown text := pg_catalog.current_setting('client_min_messages'); BEGIN\n{quiet}"
    );
    before
        .iter()
        .for_each(|step| block.push_str(&execute(step)));
    block.push_str(restore);
    block.push_str(&execute(statement));
    block.push_str(quiet);
    after.iter().for_each(|step| block.push_str(&execute(step)));
    block.push_str(restore);
    block.push_str(&format!("END ${tag}$"));
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_follows_commit_rollback_and_failed_implicit_transactions() {
        let changed = Arc::new(policy::rewrite::fixture::catalog());
        // Explicit transaction, committed.
        let mut tracking = Tracking {
            in_transaction: Some(changed.clone()),
            ..Tracking::default()
        };
        tracking.on_event(ServerEvent::Ready { status: b'T' }, 1);
        assert_eq!(tracking.current(), Some(changed.clone()));
        tracking.on_event(ServerEvent::CommandComplete { tag: "COMMIT" }, 1);
        tracking.on_event(ServerEvent::Ready { status: b'I' }, 1);
        assert_eq!(tracking.committed.as_ref(), Some(&changed));
        // Rolled back: the committed catalog stays.
        tracking.committed = None;
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::CommandComplete { tag: "ROLLBACK" }, 1);
        tracking.on_event(ServerEvent::Ready { status: b'I' }, 1);
        assert_eq!(tracking.current(), None);
        // An implicit transaction that failed rolls back; one that did not commits.
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::Error { sqlstate: "42703" }, 1);
        tracking.on_event(ServerEvent::Ready { status: b'I' }, 1);
        assert_eq!(tracking.current(), None);
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::CommandComplete { tag: "ALTER TABLE" }, 1);
        tracking.on_event(ServerEvent::Ready { status: b'I' }, 1);
        assert_eq!(tracking.current(), Some(changed.clone()));
    }

    /// What the client gets of one frame: `P` passed, `W` withheld, or the replacement's tag.
    fn shown(answers: &mut Answers, tag: u8, text: &str, cycle: u64) -> String {
        let body = match tag {
            b'C' => format!("{text}\0"),
            _ => format!("M{text}\0\0"),
        };
        let message = Backend::from_body(tag, body.as_bytes()).expect("a well-formed message");
        match answers.server_frame(&message, cycle) {
            ServerFrame::Pass => "P".into(),
            ServerFrame::Withhold => "W".into(),
            ServerFrame::Replace(frame) => match Backend::decode(&frame) {
                Ok(Backend::CommandComplete { tag }) => tag.to_owned(),
                other => format!("{other:?}"),
            },
        }
    }

    #[test]
    fn the_client_sees_the_answers_to_its_own_statements_only() {
        let mut answers = Answers::default();
        // Cycle 1 is someone else's; cycle 2 a Query wrapped as 2 drops, 2 own statements, recreation.
        answers.queries.push_back(WrappedQuery {
            cycle: 2,
            before: 2,
            own: 2,
        });
        assert_eq!(shown(&mut answers, b'C', "SELECT 1", 1), "P");
        answers.on_ready(1);
        let seen: Vec<String> = [
            (b'N', "drop cascades to 5 other objects"),
            (b'C', "DROP SCHEMA"),
            (b'C', "DO"),
            (b'N', "column exists, skipping"),
            (b'C', "ALTER TABLE"),
            (b'C', "SELECT 1"),
            (b'C', "CREATE SCHEMA"),
            (b'N', "role is already a member"),
            (b'C', "GRANT"),
        ]
        .into_iter()
        .map(|(tag, text)| shown(&mut answers, tag, text, 2))
        .collect();
        assert_eq!(seen, ["W", "W", "W", "P", "P", "P", "W", "W", "W"]);
        answers.on_ready(2);
        assert!(answers.queries.is_empty());
        assert_eq!(shown(&mut answers, b'C', "CREATE SCHEMA", 3), "P");
        // A wrapped Parse: its Execute in cycle 4 answers DO, shown as ALTER TABLE; a DO of another
        // cycle stays DO.
        answers.on_ready(3);
        answers.statements.insert(b"s1".to_vec());
        let bind = |portal, statement| Frontend::Bind {
            portal,
            statement,
            rest: b"\0\0\0\0\0\0",
        };
        let execute = |portal| Frontend::Execute {
            portal,
            max_rows: 0,
        };
        answers.follow(&bind(b"p", b"s1"), 4);
        answers.follow(&execute(b"p"), 4);
        answers.follow(&bind(b"q", b"other"), 4);
        answers.follow(&execute(b"q"), 4);
        assert_eq!(shown(&mut answers, b'C', "DO", 4), "ALTER TABLE");
        assert_eq!(shown(&mut answers, b'C', "DO", 4), "P");
        answers.on_ready(4);
        assert!(answers.executes.is_empty());
    }

    #[test]
    fn do_block_tags_never_occur_in_the_steps() {
        let block = do_block(
            &["SELECT $maschera$x$maschera$"],
            "ALTER TABLE t DROP COLUMN c",
            &["SELECT 2"],
        );
        assert!(block.starts_with("DO $maschera_$ DECLARE"), "{block}");
        let own = block
            .find("EXECUTE $maschera__s$ALTER TABLE t DROP COLUMN c$maschera__s$;")
            .expect("the statement");
        // Notices of the steps around it are silenced, the statement's are not.
        let quiet = |from: usize, to: usize| {
            let part = &block[from..to];
            part.rfind("'error'") > part.rfind("maschera_shown")
        };
        assert!(!quiet(0, own), "{block}");
        assert!(quiet(0, block.find("SELECT $maschera").unwrap()), "{block}");
        assert!(quiet(0, block.find("SELECT 2").unwrap()), "{block}");
        assert!(block.ends_with("END $maschera_$"));
    }
}
