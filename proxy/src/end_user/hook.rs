//! The session hook of an application user: answers the routes that set the end user (verifying
//! the token, checking the application's bounds, counting failures) and serves every other
//! statement through the hook a Maschera user of the end user's role and attributes would have
//! (`enforce::session_setup`: the same rewrite, the same access log, with the end user named), or,
//! with no end user, through the application's own role, or a role that may read nothing (42501
//! "no end user is set").
//!
//! Answers are routed back to the hook that sent the statement: per statement cycle, the messages
//! that produce a CommandComplete (Query, Execute) are queued with who sent them, so a cycle that
//! switches the end user and then runs statements (one extended-protocol batch) gives each its own.
//!
//! Which upstream connection serves a transaction is the current end user's ([`ApplicationHook::upstream`]):
//! its role's login with its attributes as startup parameters; in session mode from the session's
//! own connections (`source`), in transaction mode from the pool of that key. A pooled session
//! pinned to its connection by session state stays on it: another end user's statements are then
//! refused.
//!
//! Not for: the routes' syntax (see `route`), PostgreSQL's transaction semantics (see `state`),
//! tokens (see `token`).

use super::application::EndUser;
use super::failures::TokenFailures;
use super::held::{self, Answered, Control, OwnCycle, Shown};
use super::route::{self, Route};
use super::state::{EndUserState, Scope, Who};
use super::token::TokenVerifier;
use crate::audit::AuditLog;
use crate::audit::record::{EventKind, Outcome};
use crate::config::Config;
use crate::enforce::admission::RateLimit;
use crate::enforce::audit_trail::SessionIdentity;
use crate::enforce::policy_state::PolicyHandle;
use crate::enforce::{self, LoginRefusal, SessionSetup};
use crate::net::upstream::Login;
use crate::session::upstream_source::UpstreamKey;
use crate::session::{Decision, Hold, ServerEvent, ServerFrame, SessionHook};
use crate::users::application::Application;
use crate::users::{User, UserStore};
use crate::wire::Backend;
use crate::wire::client_error::ClientError;
use crate::wire::frame;
use crate::wire::{BindValues, Frontend, Target};
use anyhow::Context;
use bytes::Bytes;
use policy::access::{RoleAccess, UnlistedTables};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::info;

/// The role name the rewrite of an application with no end user and no role of its own runs as (not
/// an identifier, so never a policy's role nor a key of the rewrite cache of one).
pub const NO_END_USER_ROLE: &str = "(no end user)";

/// End users one session keeps the hooks of; beyond, the hooks of end users not in use are dropped
/// (and made again when needed: a long-lived connection of a web application serves many).
const MAX_SERVED: usize = 64;

/// What the proxy shares between application sessions.
pub struct EndUsers {
    pub verifier: TokenVerifier,
    pub failures: TokenFailures,
    pub users: Arc<UserStore>,
}

impl EndUsers {
    /// What `[end_users]` of `config` configures (`None` without the section).
    pub fn load(config: &Config, users: &UserStore) -> anyhow::Result<Option<Arc<EndUsers>>> {
        let Some(section) = &config.end_users else {
            return Ok(None);
        };
        let verifier = TokenVerifier::new(section).context("[end_users]")?;
        let window = std::time::Duration::from_secs(section.failure_window_seconds);
        Ok(Some(Arc::new(EndUsers {
            verifier,
            failures: TokenFailures::new(section.max_failures, window),
            users: Arc::new(users.clone()),
        })))
    }
}

/// How an application user's session is served (see `enforce::session_setup` for other users):
/// `audit` is the access log (if any) and who the session is; `defaults` the proxy's own login
/// and the client's forwarded parameters.
pub fn application_setup(
    end_users: Option<Arc<EndUsers>>,
    handle: Arc<PolicyHandle>,
    (log, who): (Option<Arc<AuditLog>>, SessionIdentity),
    rate: Option<RateLimit>,
    user: &User,
    client_params: Vec<(String, String)>,
    (default_login, default_params): (Login, Vec<(String, String)>),
) -> Result<SessionSetup, LoginRefusal> {
    let Some(end_users) = end_users else {
        return Err(LoginRefusal {
            code: "28000",
            message: "this user is an application user, and the proxy's configuration has no [end_users] section to verify end users with".into(),
        });
    };
    let Some(application) = end_users.users.application(&user.name).cloned() else {
        return Err(LoginRefusal {
            code: "28000",
            message: "this application user is not in the users file the proxy loaded".into(),
        });
    };
    let address = who
        .client
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let maker = Maker {
        login_role: application.roles.first().cloned().unwrap_or_default(),
        handle,
        database: who.database.clone(),
        audit: log.map(|log| (log, who)),
        client_params,
        default_login,
        default_params,
        application: user.clone(),
    };
    let errors = Some(maker.errors());
    let (hook, key) = ApplicationHook::new(end_users, application, address, maker, rate)?;
    Ok(SessionSetup {
        login: key.login.clone(),
        params: key.params.clone(),
        hook: Box::new(hook),
        errors,
        key: Some(key),
    })
}

/// The hook and upstream of one end user (or of none).
struct Served {
    hook: Box<dyn SessionHook>,
    upstream: Arc<UpstreamKey>,
}

/// What makes the hook of an end user: everything `enforce::session_setup` needs.
pub struct Maker {
    pub handle: Arc<PolicyHandle>,
    pub audit: Option<(Arc<AuditLog>, SessionIdentity)>,
    pub client_params: Vec<(String, String)>,
    pub default_login: Login,
    pub default_params: Vec<(String, String)>,
    /// The database the client asked for.
    pub database: String,
    /// The application user (its role: the application's own, empty for none).
    pub application: User,
    /// With no role of its own: the role whose upstream login serves statements with no end user.
    pub login_role: String,
}

/// A role that may read no table: the application's statements with no end user and no own role.
fn no_access(role: &str) -> Arc<RoleAccess> {
    Arc::new(RoleAccess {
        role: role.to_owned(),
        unrestricted: false,
        view_schema: String::new(),
        tables: BTreeMap::new(),
        unlisted: UnlistedTables::Deny,
        allowed_functions: Default::default(),
        channels: Default::default(),
        cascading_deletes: Default::default(),
        lookups: Default::default(),
    })
}

impl Maker {
    fn audit(&self, end_user: Option<&EndUser>) -> Option<(&Arc<AuditLog>, SessionIdentity)> {
        self.audit.as_ref().map(|(log, who)| {
            let mut who = who.clone();
            who.end_user = end_user.map(|e| (e.name.clone(), e.token_id.clone()));
            (log, who)
        })
    }

    /// The hook and upstream of `who`; also what the session starts with (no end user).
    fn make(&self, who: Option<&EndUser>) -> Result<Served, LoginRefusal> {
        let defaults = (&self.default_login, self.default_params.clone());
        let params = &self.client_params;
        let setup = match who {
            Some(end_user) => {
                let user = User {
                    name: end_user.name.clone(),
                    role: end_user.role.clone(),
                    attributes: end_user.attributes.clone(),
                    verifier: self.application.verifier.clone(),
                };
                let (login, extra) = defaults;
                enforce::session_setup(
                    &self.handle,
                    self.audit(who),
                    None,
                    &user,
                    params,
                    login,
                    extra,
                )
            }
            None if !self.application.role.is_empty() => {
                let (login, extra) = defaults;
                let user = &self.application;
                enforce::session_setup(
                    &self.handle,
                    self.audit(None),
                    None,
                    user,
                    params,
                    login,
                    extra,
                )
            }
            None => {
                let user = User {
                    role: self.login_role.clone(),
                    ..self.application.clone()
                };
                let role = no_access(NO_END_USER_ROLE);
                enforce::session_setup_as(
                    &self.handle,
                    role,
                    self.audit(None),
                    None,
                    &user,
                    params,
                    defaults,
                )
            }
        }?;
        Ok(Served {
            hook: setup.hook,
            upstream: Arc::new(UpstreamKey {
                login: setup.login,
                database: self.database.clone(),
                params: setup.params,
            }),
        })
    }

    /// The upstream and error scrub the session starts with (no end user).
    pub fn errors(&self) -> Arc<crate::session::error_scrub::ErrorScrub> {
        let state = self.handle.current();
        Arc::new(crate::session::error_scrub::ErrorScrub::for_role(
            &no_access(NO_END_USER_ROLE),
            &state.catalog,
        ))
    }
}

/// Who answers a message that produces a CommandComplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answerer {
    /// The proxy's substitute for a route.
    Switch,
    /// The hook of `served[i]`.
    Served(usize),
    /// The statement PostgreSQL runs for an extended-protocol `BEGIN` (see `held`): its
    /// CommandComplete is the client's `BEGIN`.
    Begin,
}

/// The session hook of an application user (see the module doc).
pub struct ApplicationHook {
    end_users: Arc<EndUsers>,
    application: Application,
    name: String,
    address: IpAddr,
    maker: Maker,
    rate: Option<RateLimit>,
    state: EndUserState,
    /// `served[0]`: no end user; `None`: a slot freed (see [`ApplicationHook::forget_unused`]).
    served: Vec<Option<Served>>,
    /// The upstream of `served[0]`.
    own_upstream: Arc<UpstreamKey>,
    /// Index in `served` by end user (name, role, attributes).
    by_end_user: HashMap<(String, String, BTreeMap<String, String>), usize>,
    /// Per cycle, in order: who answers each Query (`true`: until the cycle ends) or Execute.
    answers: VecDeque<(u64, Answerer, bool)>,
    /// Per cycle: the served hooks that took part (they all see its ReadyForQuery).
    taking_part: VecDeque<(u64, usize)>,
    /// Prepared statements that are routes, by name.
    route_statements: HashMap<Vec<u8>, RouteStatement>,
    /// Prepared statements of transaction control the proxy answers in a held block (see `held`).
    controls: HashMap<Vec<u8>, ControlStatement>,
    /// Portals bound to one of `controls`.
    control_portals: HashMap<Vec<u8>, ControlStatement>,
    /// Which end user (`served` index) prepared each named statement (and the unnamed one): a
    /// statement is executed only by the end user it was prepared (rewritten) for.
    prepared_by: HashMap<Vec<u8>, usize>,
    /// Portals bound to a route statement.
    switch_portals: HashSet<Vec<u8>>,
    /// Cycles whose session-level switch ran as `SET LOCAL` upstream: PostgreSQL's warning about it
    /// is not the client's.
    quiet_warning: Option<u64>,
    /// The last cycle PostgreSQL answered (ReadyForQuery), or failed (after an ErrorResponse it runs
    /// nothing more of the cycle; drivers send their next statement before its ReadyForQuery).
    answered: u64,
    /// The last cycle that ran a statement or a switch (a cycle of Close and Sync only does not
    /// count: drivers pipeline those).
    last_run: u64,
    /// Whose upstream serves the current transaction (`served` index): the end user in force at its
    /// first message, or the application's own for a transaction that starts with a route (so the
    /// `set_config` statement, prepared there, is always found). `None` between transactions.
    transaction: Option<usize>,
    audit: Option<(Arc<AuditLog>, SessionIdentity)>,
    /// A transaction block whose `BEGIN` is held back (see `held`).
    held: Option<HeldBlock>,
    /// The proxy's own cycles and those of a held block, by cycle (see [`OwnCycle`]).
    own: VecDeque<(u64, OwnCycle)>,
    /// CommandCompletes seen so far of the cycle being answered, if it is in `own`.
    own_completions: usize,
    /// The last cycle PostgreSQL answered with ReadyForQuery.
    ready: u64,
    /// A cycle answering a `RESET` route (its substitute's `SET` is shown as `RESET`).
    reset: Option<u64>,
    /// Whose upstream served the last transaction (`served` index).
    finished: Option<usize>,
    /// The last cycle in which a message was refused.
    refused_in: u64,
    /// Transaction mode: the session's connection is kept (pinned by session state it created,
    /// see `pool::pinning`), and it is this end user's (`served` index): every transaction runs
    /// on it, so no other end user's statement may.
    pinned_to: Option<usize>,
}

/// A prepared statement that is a route.
#[derive(Clone)]
enum RouteStatement {
    /// `set_config('maschera.end_user', $1, local)`: the token comes in its Bind.
    SetConfig { local: bool },
    /// `SET [LOCAL] maschera.end_user = '<token>'` (verified when prepared) or `RESET` (`reset`,
    /// no end user), as a Parse: the switch happens at each Bind.
    Fixed { who: Who, scope: Scope, reset: bool },
}

/// A prepared statement of transaction control the proxy decides about (see `held`).
#[derive(Clone)]
enum ControlStatement {
    /// `BEGIN` with its modes, prepared as `held::HELD_BEGIN_SQL`.
    Begin(String),
    /// `COMMIT` or `ROLLBACK` as the client prepared it.
    End,
}

/// A transaction block whose `BEGIN` the proxy answered and holds back (see `held`).
struct HeldBlock {
    /// The `BEGIN` to replay, as the proxy re-serialised it.
    begin: String,
    /// An error came in the block: the client sees status `E` until it ends.
    failed: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn refuse(code: &str, message: impl Into<String>) -> Decision {
    Decision::Refuse(ClientError::new(code, message))
}

/// The message of a 42501 of the application with no end user.
const NO_END_USER: &str = "no end user is set: this application login reads personal data only for an end user (SET maschera.end_user = '<token>')";

/// Replaces the message of a 42501 refusal (also one decided later).
fn no_end_user(decision: Decision) -> Decision {
    match decision {
        Decision::Refuse(error) if error.code() == "42501" => refuse("42501", NO_END_USER),
        Decision::Pending(pending) => {
            Decision::Pending(Box::pin(async move { no_end_user(pending.await) }))
        }
        other => other,
    }
}

impl ApplicationHook {
    /// The hook of application user `maker.application` connecting from `address`, and the
    /// upstream its session starts with (no end user).
    pub fn new(
        end_users: Arc<EndUsers>,
        application: Application,
        address: IpAddr,
        maker: Maker,
        rate: Option<RateLimit>,
    ) -> Result<(ApplicationHook, Arc<UpstreamKey>), LoginRefusal> {
        let first = maker.make(None)?;
        let upstream = first.upstream.clone();
        let audit = maker.audit.clone();
        Ok((
            ApplicationHook {
                end_users,
                application,
                name: maker.application.name.clone(),
                address,
                maker,
                rate,
                state: EndUserState::default(),
                own_upstream: first.upstream.clone(),
                served: vec![Some(first)],
                by_end_user: HashMap::new(),
                answers: VecDeque::new(),
                taking_part: VecDeque::new(),
                route_statements: HashMap::new(),
                controls: HashMap::new(),
                control_portals: HashMap::new(),
                prepared_by: HashMap::new(),
                switch_portals: HashSet::new(),
                quiet_warning: None,
                answered: 0,
                last_run: 0,
                transaction: None,
                audit,
                held: None,
                own: VecDeque::new(),
                own_completions: 0,
                ready: 0,
                reset: None,
                finished: None,
                refused_in: 0,
                pinned_to: None,
            },
            upstream,
        ))
    }

    /// The upstream the current end user's statements go to.
    pub fn upstream(&self) -> &Arc<UpstreamKey> {
        self.upstream_of(self.current_index())
    }

    fn upstream_of(&self, index: usize) -> &Arc<UpstreamKey> {
        self.slot(index).map_or(&self.own_upstream, |s| &s.upstream)
    }

    fn slot(&self, index: usize) -> Option<&Served> {
        self.served.get(index).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Served> {
        self.served.get_mut(index).and_then(Option::as_mut)
    }

    fn current_index(&self) -> usize {
        match self.state.current() {
            None => 0,
            Some(end_user) => self
                .by_end_user
                .get(&(
                    end_user.name.clone(),
                    end_user.role.clone(),
                    end_user.attributes.clone(),
                ))
                .copied()
                .unwrap_or(0),
        }
    }

    /// Records a switch (or its refusal) in the access log.
    fn record(&self, who: Option<&EndUser>, outcome: Outcome, detail: String) {
        let Some((log, identity)) = &self.audit else {
            return;
        };
        let mut event = identity.event(EventKind::EndUser);
        event.role = who.map(|w| w.role.clone());
        event.end_user = who.map(|w| w.name.clone());
        event.end_user_token = who.map(|w| w.token_id.clone());
        event.outcome = outcome;
        event.detail = Some(detail);
        drop(log.submit(event));
    }

    fn token_refused(&self, code: &'static str, message: String, label: &str) -> Decision {
        self.end_users.failures.failed(&self.name, self.address);
        metrics::counter!(crate::metrics::REFUSALS_TOTAL, crate::metrics::LABEL_REASON => "end_user_token")
            .increment(1);
        info!(code, check = label, "end-user token refused");
        let outcome = Outcome::Refused {
            sqlstate: code.to_owned(),
            message: Some(message.clone()),
        };
        self.record(None, outcome, format!("end-user token refused: {label}"));
        refuse(code, message)
    }

    /// The end user a token names, or the refusal.
    fn end_user(&self, token: &str) -> Result<Arc<EndUser>, Decision> {
        if !self.end_users.failures.allowed(&self.name, self.address) {
            return Err(refuse(
                "53300",
                "too many bad end-user tokens from this application login and client address: wait and try again",
            ));
        }
        let verified = self
            .end_users
            .verifier
            .verify(token)
            .map_err(|err| self.token_refused(err.sqlstate(), err.to_string(), err.label()))?;
        self.application
            .admit(&verified, &self.end_users.users)
            .map(Arc::new)
            .map_err(|err| self.token_refused(err.sqlstate(), err.to_string(), err.label()))
    }

    /// Makes (or finds) the hook of `who`.
    fn serve_end_user(&mut self, who: &Arc<EndUser>) -> Result<(), Decision> {
        let key = (who.name.clone(), who.role.clone(), who.attributes.clone());
        if self.by_end_user.contains_key(&key) {
            return Ok(());
        }
        if self.by_end_user.len() >= MAX_SERVED {
            self.forget_unused();
        }
        let served = self
            .maker
            .make(Some(who))
            .map_err(|refusal| refuse(refusal.code, refusal.message))?;
        let index = match self.served.iter().skip(1).position(Option::is_none) {
            Some(free) => free + 1,
            None => {
                self.served.push(None);
                self.served.len() - 1
            }
        };
        self.served[index] = Some(served);
        self.by_end_user.insert(key, index);
        Ok(())
    }

    /// Frees the hooks of end users neither current nor serving the transaction, when no answer
    /// is awaited; statements they prepared can no longer be executed (26000).
    fn forget_unused(&mut self) {
        if !self.answers.is_empty() || !self.taking_part.is_empty() {
            return;
        }
        let keep = [
            0,
            self.current_index(),
            self.transaction.unwrap_or(0),
            self.pinned_to.unwrap_or(0),
        ];
        self.by_end_user.retain(|_, index| keep.contains(index));
        for (index, slot) in self.served.iter_mut().enumerate() {
            if !keep.contains(&index) {
                *slot = None;
            }
        }
        self.prepared_by.retain(|_, index| keep.contains(index));
    }

    /// A switch to `who` (`None`: RESET) for `scope`.
    fn switch(
        &mut self,
        who: Who,
        scope: Scope,
        own_transaction: bool,
        cycle: u64,
    ) -> Result<(), Decision> {
        if self.last_run > self.answered && self.last_run < cycle {
            return Err(refuse(
                "0A000",
                "the end user cannot be switched while earlier statements are still running (pipelined): wait for their results first",
            ));
        }
        if let Some(end_user) = &who {
            self.serve_end_user(end_user)?;
        }
        self.state
            .switch(who.clone(), scope, own_transaction)
            .map_err(|refused| refuse(refused.code, refused.message))?;
        self.last_run = cycle;
        let detail = match (&who, scope) {
            (None, _) => "end user reset",
            (Some(_), Scope::Local) => "end user set for the transaction",
            (Some(_), Scope::Session) => "end user set",
        };
        self.record(who.as_deref(), Outcome::Ok, detail.into());
        Ok(())
    }

    /// The end user a route names (its token verified) and for how long.
    fn route_end_user(&self, route: &Route) -> Result<(Who, Scope), Decision> {
        match route {
            Route::Reset => Ok((None, Scope::Session)),
            Route::Set { local, token } => {
                let scope = if *local { Scope::Local } else { Scope::Session };
                Ok((Some(self.end_user(token)?), scope))
            }
        }
    }

    /// A Query that is a route.
    fn switch_query(&mut self, route: Route, cycle: u64) -> Decision {
        let (who, scope) = match self.route_end_user(&route) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let id = who.as_ref().map(|w| w.token_id.clone()).unwrap_or_default();
        if let Err(refused) = self.switch(who, scope, true, cycle) {
            return refused;
        }
        self.answers.push_back((cycle, Answerer::Switch, true));
        // Its substitute is a `SET LOCAL`: PostgreSQL warns outside a block (a held one included).
        if scope == Scope::Session || self.held.is_some() {
            self.quiet_warning = Some(cycle);
        }
        let substitute = match route {
            Route::Reset => {
                self.reset = Some(cycle);
                Route::Reset
            }
            Route::Set { .. } => Route::Set {
                local: true,
                token: String::new(),
            },
        };
        Decision::Replace(route::substitute_query(&substitute, &safe_id(&id)))
    }

    /// A Bind of a `set_config` route (`rest`: the Bind's after its names).
    fn switch_bind(
        &mut self,
        (portal, statement, rest): (&[u8], &[u8], &[u8]),
        local: bool,
        cycle: u64,
    ) -> Decision {
        let Some(values) = BindValues::decode(rest) else {
            return refuse("08P01", "malformed Bind message");
        };
        let token = match values.params.as_slice() {
            [Some(token)] => std::str::from_utf8(token).unwrap_or_default(),
            _ => {
                return refuse(
                    "22023",
                    "set_config('maschera.end_user', $1, ...) takes one non-null text parameter",
                );
            }
        };
        let who = match self.end_user(token) {
            Ok(end_user) => end_user,
            Err(refused) => return refused,
        };
        let id = who.token_id.clone();
        let scope = if local { Scope::Local } else { Scope::Session };
        if let Err(refused) = self.switch(Some(who), scope, false, cycle) {
            return refused;
        }
        self.switch_portals.insert(portal.to_vec());
        Decision::Replace(route::bind_with_param(
            portal,
            statement,
            &values,
            &safe_id(&id),
        ))
    }

    /// A Parse of a `SET` or `RESET` route: its token is verified now, and PostgreSQL prepares the
    /// substitute under the client's name (with the client's parameter types).
    fn prepare_route(&mut self, name: &[u8], param_types: &[u8], route: Route) -> Decision {
        self.route_statements.remove(name);
        let (who, scope) = match self.route_end_user(&route) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let id = who
            .as_ref()
            .map(|w| safe_id(&w.token_id))
            .unwrap_or_default();
        let parse = route::substitute_route_parse(name, param_types, &route, &id);
        let reset = route == Route::Reset;
        self.route_statements
            .insert(name.to_vec(), RouteStatement::Fixed { who, scope, reset });
        Decision::Replace(parse)
    }

    /// A Bind of a `SET` or `RESET` route prepared by [`ApplicationHook::prepare_route`].
    fn switch_fixed(
        &mut self,
        portal: &[u8],
        who: Who,
        (scope, reset): (Scope, bool),
        cycle: u64,
    ) -> Decision {
        if who
            .as_ref()
            .is_some_and(|end_user| end_user.expires <= now())
        {
            return refuse(
                "28000",
                "the end-user token has expired: set the end user again with a new token",
            );
        }
        if let Err(refused) = self.switch(who, scope, false, cycle) {
            return refused;
        }
        self.switch_portals.insert(portal.to_vec());
        if reset {
            self.reset = Some(cycle);
        }
        // Its substitute is a `SET LOCAL`: PostgreSQL warns outside a block (a held one included).
        if scope == Scope::Session || self.held.is_some() {
            self.quiet_warning = Some(cycle);
        }
        Decision::Forward
    }

    /// A statement (not a route): served by the current end user's hook (`message`: the frame
    /// decoded, `None` if malformed: the served hook refuses it).
    fn serve(
        &mut self,
        tag: u8,
        (frame, message): (&[u8], Option<&Frontend<'_>>),
        cycle: u64,
    ) -> Decision {
        let index = self.current_index();
        let transaction = *self
            .transaction
            .get_or_insert(self.pinned_to.unwrap_or(index));
        let elsewhere = **self.upstream_of(transaction) != **self.upstream_of(index)
            && matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'D' | b'F');
        // Ending the transaction reads nothing: it is let through to the connection holding it
        // (a session whose statements ran elsewhere than its end user's could not end it else).
        let elsewhere = elsewhere && !message.is_some_and(|m| self.ends_transaction(m));
        if elsewhere && self.pinned_to.is_some() {
            return refuse(
                "0A000",
                "this session is pinned to the pooled connection of another end user by session state it created (a temporary table, a WITH HOLD cursor, a session-level SET or set_config, a session advisory lock, LISTEN): in transaction mode an application session switches end users only while it holds no such state (or use pool_mode = \"session\" for it)",
            );
        }
        if elsewhere {
            return refuse(
                "0A000",
                "the end user was switched inside this transaction or batch: its statements run from the next one on (send Sync, or COMMIT, first)",
            );
        }
        if let Some(end_user) = self.state.current()
            && end_user.expires <= now()
            && matches!(tag, b'Q' | b'P' | b'B' | b'E')
        {
            return refuse(
                "28000",
                "the end-user token has expired: set the end user again with a new token",
            );
        }
        if let Some(refused) = message.and_then(|m| self.prepared_elsewhere(m, index)) {
            return refused;
        }
        if matches!(tag, b'Q' | b'P' | b'B' | b'E') {
            self.last_run = cycle;
            self.state.statement(cycle);
        }
        if matches!(tag, b'Q' | b'E') {
            self.answers
                .push_back((cycle, Answerer::Served(index), tag == b'Q'));
        }
        if !self.taking_part.contains(&(cycle, index)) {
            self.taking_part.push_back((cycle, index));
        }
        let Some(served) = self.slot_mut(index) else {
            return refuse(
                "0A000",
                "the end user's session state is gone: set the end user again",
            );
        };
        let decision = served.hook.on_client_message(tag, frame, cycle);
        if index == 0 && self.maker.application.role.is_empty() {
            return no_end_user(decision);
        }
        decision
    }

    /// The decision about a message that is (part of) a route; `None` for any other message.
    fn route_message(&mut self, message: &Frontend<'_>, cycle: u64) -> Option<Decision> {
        match *message {
            Frontend::Query { sql } => {
                if let Some(route) = route_text(sql).and_then(route::query_route) {
                    return Some(self.switch_query(route, cycle));
                }
            }
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => {
                let text = route_text(sql);
                if let Some(local) = text.and_then(route::set_config_route) {
                    self.route_statements
                        .insert(name.to_vec(), RouteStatement::SetConfig { local });
                    return Some(Decision::Replace(route::substitute_parse(
                        name,
                        param_types,
                    )));
                }
                if let Some(route) = text.and_then(route::query_route) {
                    return Some(self.prepare_route(name, param_types, route));
                }
                self.route_statements.remove(name);
            }
            Frontend::Bind {
                portal,
                statement,
                rest,
            } => {
                match self.route_statements.get(statement).cloned() {
                    Some(RouteStatement::SetConfig { local }) => {
                        return Some(self.switch_bind((portal, statement, rest), local, cycle));
                    }
                    Some(RouteStatement::Fixed { who, scope, reset }) => {
                        return Some(self.switch_fixed(portal, who, (scope, reset), cycle));
                    }
                    None => {}
                }
                self.switch_portals.remove(portal);
            }
            Frontend::Execute { portal, .. } if self.switch_portals.contains(portal) => {
                self.answers.push_back((cycle, Answerer::Switch, false));
                return Some(Decision::Forward);
            }
            Frontend::Describe { target, name } => {
                let ours = match target {
                    Target::Statement => self.route_statements.contains_key(name),
                    Target::Portal => self.switch_portals.contains(name),
                };
                if ours {
                    return Some(Decision::Forward);
                }
            }
            Frontend::Close { target, name } => {
                let ours = match target {
                    Target::Statement => self.route_statements.remove(name).is_some(),
                    Target::Portal => self.switch_portals.remove(name),
                };
                if ours {
                    return Some(Decision::Forward);
                }
            }
            _ => {}
        }
        None
    }

    /// Keeps `prepared_by` and refuses a Bind of a statement prepared for another end user (it was
    /// rewritten for that one's role and attributes, on that one's connection).
    fn prepared_elsewhere(&mut self, message: &Frontend<'_>, index: usize) -> Option<Decision> {
        match *message {
            Frontend::Parse { name, sql, .. } => {
                // Transaction control reads nothing: any end user may run it, on any connection.
                if held::control(sql).is_some() {
                    self.prepared_by.remove(name);
                } else {
                    self.prepared_by.insert(name.to_vec(), index);
                }
            }
            Frontend::Bind { statement, .. } => {
                let by = *self.prepared_by.get(statement)?;
                if by != index {
                    let name = String::from_utf8_lossy(statement);
                    return Some(refuse(
                        "26000",
                        format!(
                            "prepared statement \"{name}\" was prepared for another end user (or for none) and holds the rewrite for that one's role: prepare it again for this end user (pgjdbc: prepareThreshold=0; psycopg: prepare_threshold=None)"
                        ),
                    ));
                }
            }
            Frontend::Close {
                target: Target::Statement,
                name,
            } => {
                self.prepared_by.remove(name);
            }
            _ => {}
        }
        None
    }

    /// A Query of transaction control (`held::control`): answered by the proxy when it starts a
    /// block between transactions with nothing in flight, or ends a held block; `None`: served
    /// as any statement.
    fn transaction_control(&mut self, control: Control, cycle: u64) -> Option<Decision> {
        match control {
            Control::Begin(begin) => {
                if !self.holdable(cycle) {
                    return None;
                }
                let answer = held::query(&format!("{begin}; ROLLBACK"));
                self.held = Some(HeldBlock {
                    begin,
                    failed: false,
                });
                self.own_mut(cycle).answered = Some(Answered::Begin);
                self.state.begin_held();
                Some(Decision::Replace(answer))
            }
            Control::Commit | Control::Rollback => {
                let block = self.held.take()?;
                let end = match control {
                    Control::Commit if !block.failed => "BEGIN; COMMIT",
                    _ => "BEGIN; ROLLBACK",
                };
                self.own_mut(cycle).answered = Some(Answered::End);
                Some(Decision::Replace(held::query(end)))
            }
        }
    }

    /// Whether a `BEGIN` of cycle `cycle` may be held: between transactions, nothing in flight,
    /// nothing of the cycle sent before it.
    fn holdable(&self, cycle: u64) -> bool {
        self.held.is_none()
            && self.transaction.is_none()
            && !self.state.in_block()
            && self.ready + 1 == cycle
            && self.last_run < cycle
            && !self.taking_part.iter().any(|(c, _)| *c == cycle)
    }

    /// An extended-protocol message about transaction control (see `held`): `Some` when the proxy
    /// decides it here (a `BEGIN` it holds, a `COMMIT` or `ROLLBACK` of a held block), `None`
    /// when it is served as any statement.
    fn extended_control(&mut self, message: &Frontend<'_>, cycle: u64) -> Option<Decision> {
        const UNHOLDABLE: &str = "a BEGIN prepared as a named statement starts a transaction of an application login only as the first message of a batch between transactions: send it first, or unnamed";
        match *message {
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => {
                self.controls.remove(name);
                match held::control(sql)? {
                    Control::Begin(begin) => {
                        if !self.holdable(cycle) {
                            return None;
                        }
                        self.controls
                            .insert(name.to_vec(), ControlStatement::Begin(begin));
                        let parse = Frontend::Parse {
                            name,
                            sql: held::HELD_BEGIN_SQL.as_bytes(),
                            param_types,
                        };
                        Some(Decision::Replace(parse.to_frame().freeze()))
                    }
                    Control::Commit | Control::Rollback => {
                        self.controls.insert(name.to_vec(), ControlStatement::End);
                        self.held.is_some().then_some(Decision::Forward)
                    }
                }
            }
            Frontend::Bind {
                portal, statement, ..
            } => {
                self.control_portals.remove(portal);
                let control = self.controls.get(statement)?.clone();
                match control {
                    ControlStatement::Begin(_)
                        if !self.holdable(cycle) && !self.state.in_block() =>
                    {
                        return Some(refuse("0A000", UNHOLDABLE));
                    }
                    _ => {}
                }
                let held = self.held.is_some();
                let end = matches!(control, ControlStatement::End);
                self.control_portals.insert(portal.to_vec(), control);
                // Outside a held block a COMMIT or ROLLBACK is served as any statement.
                (held || !end).then_some(Decision::Forward)
            }
            Frontend::Execute { portal, .. } => {
                match self.control_portals.get(portal)?.clone() {
                    ControlStatement::Begin(begin) => {
                        if self.holdable(cycle) {
                            self.held = Some(HeldBlock {
                                begin,
                                failed: false,
                            });
                            self.own_mut(cycle);
                            self.state.begin_held();
                        } else if !self.state.in_block() {
                            return Some(refuse("0A000", UNHOLDABLE));
                        }
                        self.quiet_warning = Some(cycle);
                        self.answers.push_back((cycle, Answerer::Begin, false));
                    }
                    ControlStatement::End => {
                        let block = self.held.take()?;
                        self.own_mut(cycle).ended = Some(block.failed);
                        self.quiet_warning = Some(cycle);
                        self.answers.push_back((cycle, Answerer::Switch, false));
                    }
                }
                Some(Decision::Forward)
            }
            Frontend::Describe { target, name } => {
                let ours = match target {
                    Target::Statement => {
                        matches!(self.controls.get(name), Some(ControlStatement::Begin(_)))
                    }
                    Target::Portal => self.control_portals.contains_key(name),
                };
                ours.then_some(Decision::Forward)
            }
            Frontend::Close { target, name } => {
                let ours = match target {
                    Target::Statement => {
                        matches!(self.controls.remove(name), Some(ControlStatement::Begin(_)))
                    }
                    Target::Portal => self.control_portals.remove(name).is_some(),
                };
                ours.then_some(Decision::Forward)
            }
            _ => None,
        }
    }

    /// Whether a message is (part of) a `COMMIT` or `ROLLBACK`.
    fn ends_transaction(&self, message: &Frontend<'_>) -> bool {
        let end = |sql| {
            matches!(
                held::control(sql),
                Some(Control::Commit | Control::Rollback)
            )
        };
        match *message {
            Frontend::Query { sql } | Frontend::Parse { sql, .. } => end(sql),
            Frontend::Bind { statement, .. } => {
                matches!(self.controls.get(statement), Some(ControlStatement::End))
            }
            Frontend::Execute { portal, .. } => {
                matches!(
                    self.control_portals.get(portal),
                    Some(ControlStatement::End)
                )
            }
            _ => false,
        }
    }

    /// Whether an extended-protocol message is transaction control the proxy decides about (a
    /// held block's `BEGIN` is not replayed for it).
    fn is_extended_control(&self, message: &Frontend<'_>) -> bool {
        match *message {
            Frontend::Parse { sql, .. } => held::control(sql).is_some(),
            Frontend::Bind { statement, .. } => self.controls.contains_key(statement),
            Frontend::Execute { portal, .. } => self.control_portals.contains_key(portal),
            _ => false,
        }
    }

    /// The record of cycle `cycle` among the held block's, made if there is none.
    fn own_mut(&mut self, cycle: u64) -> &mut OwnCycle {
        let at = match self.own.iter().position(|(c, _)| *c == cycle) {
            Some(at) => at,
            None => {
                self.own.push_back((cycle, OwnCycle::default()));
                self.own.len() - 1
            }
        };
        &mut self.own[at].1
    }

    /// Whether a message is (part of) a route, without deciding it.
    fn is_route(&self, message: &Frontend<'_>) -> bool {
        match *message {
            Frontend::Query { sql } => route_text(sql).and_then(route::query_route).is_some(),
            Frontend::Parse { sql, .. } => route_text(sql).is_some_and(|text| {
                route::set_config_route(text).is_some() || route::query_route(text).is_some()
            }),
            Frontend::Bind { statement, .. } => self.route_statements.contains_key(statement),
            Frontend::Execute { portal, .. } => self.switch_portals.contains(portal),
            _ => false,
        }
    }

    /// What cycle `cycle` is of the proxy's own or of a held block, if it is.
    fn own_cycle(&self, cycle: u64) -> Option<OwnCycle> {
        self.own
            .iter()
            .find(|(c, _)| *c == cycle)
            .map(|(_, kind)| *kind)
    }

    /// The transaction status the client gets for PostgreSQL's `status` ending `cycle` (`None`:
    /// no ReadyForQuery): inside a held block PostgreSQL holds no block (`I`), the client is in
    /// one (`T`, or `E` once failed).
    fn shown_status(&self, status: u8, cycle: u64) -> Option<u8> {
        match self.own_cycle(cycle) {
            Some(own) => own.status(status, self.held.as_ref().is_some_and(|h| h.failed)),
            None => Some(status),
        }
    }

    /// Who answers the next CommandComplete or ErrorResponse of `cycle`.
    fn answerer(&self, cycle: u64) -> Option<Answerer> {
        match self.answers.front() {
            Some((c, answerer, _)) if *c == cycle => Some(*answerer),
            _ => self
                .taking_part
                .iter()
                .rev()
                .find(|(c, _)| *c == cycle)
                .map(|(_, index)| Answerer::Served(*index)),
        }
    }
}

/// A statement's text, if it may be a route (cheap: most statements are not looked at further).
fn route_text(sql: &[u8]) -> Option<&str> {
    if route::mentions(sql) {
        std::str::from_utf8(sql).ok()
    } else {
        None
    }
}

/// A CommandComplete of `tag` in place of PostgreSQL's.
fn completion(tag: &str) -> ServerFrame {
    match frame::build(b'C', &[tag.as_bytes(), b"\0"]) {
        Some(frame) => ServerFrame::Replace(bytes::BytesMut::from(&frame[..])),
        None => ServerFrame::Pass,
    }
}

/// The token id as the substitute carries it: `jti` may hold any text, the digest never more than
/// hex digits, so anything but `[A-Za-z0-9:._-]` is dropped.
fn safe_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'))
        .take(64)
        .collect()
}

impl ApplicationHook {
    /// What becomes of a client message (see `SessionHook::on_client_message`).
    fn decide(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        if let Some(refused) = self.rate.as_mut().and_then(|rate| rate.check(tag, frame)) {
            return refused;
        }
        let message = Frontend::decode(frame).ok();
        if let Some(Frontend::Query { sql }) = message
            && let Some(control) = held::control(sql)
            && let Some(answered) = self.transaction_control(control, cycle)
        {
            return answered;
        }
        if self.held.is_some() {
            self.own_mut(cycle);
        }
        if let Some(message) = &message
            && let Some(decided) = self.extended_control(message, cycle)
        {
            return decided;
        }
        if self.held.as_ref().is_some_and(|block| block.failed)
            && matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F')
        {
            return refuse(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
        }
        let starts = self.transaction.is_none();
        let routed = message.and_then(|m| self.route_message(&m, cycle));
        match routed {
            Some(decision) => {
                // A Close goes wherever the transaction goes: closing a statement a connection does
                // not have is no error. A refused route changes no end user: its error runs where the
                // current end user's statements do, so that a statement the client sends as soon as it
                // has the error (before PostgreSQL's ReadyForQuery is back) is not taken for one of
                // another end user in the same transaction.
                if starts && tag != b'C' {
                    let refused = matches!(decision, Decision::Refuse(_));
                    let index = if refused { self.current_index() } else { 0 };
                    self.transaction = Some(self.pinned_to.unwrap_or(index));
                }
                decision
            }
            None => self.serve(tag, (frame, message.as_ref()), cycle),
        }
    }
}

impl SessionHook for ApplicationHook {
    fn on_client_message(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        let decision = self.decide(tag, frame, cycle);
        if matches!(decision, Decision::Refuse(_)) {
            self.refused_in = cycle;
        }
        decision
    }

    fn prelude(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Option<Bytes> {
        let block = self.held.as_ref()?;
        if block.failed || !matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F') {
            return None;
        }
        // After a refusal PostgreSQL skips the rest of an extended-protocol batch up to its Sync,
        // a Query included: a replay there would never be answered.
        if self.refused_in == cycle {
            return None;
        }
        // A malformed message is refused: it starts nothing.
        let message = Frontend::decode(frame).ok()?;
        if self.is_route(&message) {
            return None;
        }
        let is_control = match message {
            Frontend::Query { sql } => matches!(
                held::control(sql),
                Some(Control::Commit | Control::Rollback)
            ),
            _ => self.is_extended_control(&message),
        };
        if is_control {
            return None;
        }
        let block = self.held.take()?;
        // The replay ends the cycle (it may follow the held BEGIN's own messages in one batch).
        self.own_mut(cycle).replayed = true;
        Some(held::query(&block.begin))
    }

    fn ready_frame(&mut self, status: u8, cycle: u64) -> ServerFrame {
        match self.shown_status(status, cycle) {
            None => ServerFrame::Withhold,
            Some(shown) if shown == status => ServerFrame::Pass,
            Some(shown) => ServerFrame::Replace(frame::ready_for_query(shown)),
        }
    }

    fn server_frame(&mut self, message: &Backend<'_>, cycle: u64) -> ServerFrame {
        let completed = match message {
            Backend::CommandComplete { tag } => Some(*tag),
            _ => None,
        };
        if let Some(text) = completed
            && let Some(own) = self.own_cycle(cycle)
        {
            let n = self.own_completions;
            self.own_completions += 1;
            match own.completion(n, text.as_bytes()) {
                Shown::Pass => {}
                Shown::Withhold => return ServerFrame::Withhold,
                Shown::As(shown) => return completion(shown),
            }
        }
        if completed.is_some() && self.answerer(cycle) == Some(Answerer::Begin) {
            return completion("BEGIN");
        }
        if completed.is_some()
            && self.reset == Some(cycle)
            && self.answerer(cycle) == Some(Answerer::Switch)
        {
            self.reset = None;
            return completion("RESET");
        }
        if let Backend::NoticeResponse(fields) = message
            && self.quiet_warning == Some(cycle)
            && fields.sqlstate() == Some("25P01")
        {
            return ServerFrame::Withhold;
        }
        match self.answerer(cycle) {
            Some(Answerer::Served(index)) => match self.slot_mut(index) {
                Some(served) => served.hook.server_frame(message, cycle),
                None => ServerFrame::Pass,
            },
            _ => ServerFrame::Pass,
        }
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        let event = match event {
            ServerEvent::Ready { status } => ServerEvent::Ready {
                status: self.shown_status(status, cycle).unwrap_or(status),
            },
            ServerEvent::Error { .. } => {
                match self.own_cycle(cycle) {
                    // The held BEGIN failed (its modes): no block, as PostgreSQL answers it.
                    Some(own) if own.answered == Some(Answered::Begin) => {
                        self.held = None;
                        self.own.retain(|(c, _)| *c != cycle);
                    }
                    Some(_) => {
                        if let Some(block) = &mut self.held {
                            block.failed = true;
                        }
                    }
                    None => {}
                }
                event
            }
            other => other,
        };
        self.state.on_server_event(event, cycle);
        match event {
            ServerEvent::CommandComplete { .. } | ServerEvent::Error { .. } => {
                if matches!(event, ServerEvent::Error { .. }) {
                    self.answered = self.answered.max(cycle);
                }
                if let Some(Answerer::Served(index)) = self.answerer(cycle)
                    && let Some(served) = self.slot_mut(index)
                {
                    served.hook.on_server_event(event, cycle);
                }
                let execute = matches!(self.answers.front(), Some((c, _, false)) if *c == cycle);
                if execute && matches!(event, ServerEvent::CommandComplete { .. }) {
                    self.answers.pop_front();
                }
            }
            ServerEvent::Ready { .. } => {
                while self.answers.front().is_some_and(|(c, _, _)| *c <= cycle) {
                    self.answers.pop_front();
                }
                while let Some(&(c, index)) = self.taking_part.front() {
                    if c > cycle {
                        break;
                    }
                    self.taking_part.pop_front();
                    if let Some(served) = self.slot_mut(index) {
                        served.hook.on_server_event(event, c);
                    }
                }
                self.answered = self.answered.max(cycle);
                if self.quiet_warning.is_some_and(|c| c <= cycle) {
                    self.quiet_warning = None;
                }
                self.ready = self.ready.max(cycle);
                while self.own.front().is_some_and(|(c, _)| *c <= cycle) {
                    self.own.pop_front();
                }
                self.own_completions = 0;
            }
        }
    }

    fn hold(&mut self) -> Option<Hold> {
        let holds: Vec<Hold> = self
            .served
            .iter_mut()
            .flatten()
            .filter_map(|s| s.hook.hold())
            .collect();
        match holds.len() {
            0 => None,
            1 => holds.into_iter().next(),
            _ => Some(Box::pin(async move {
                for hold in holds {
                    hold.await?;
                }
                Ok(())
            })),
        }
    }

    fn at_transaction_boundary(&mut self) {
        self.finished = self.transaction.take().or(self.finished);
        for served in self.served.iter_mut().flatten() {
            served.hook.at_transaction_boundary();
        }
    }

    fn upstream_key(&mut self) -> Option<Arc<UpstreamKey>> {
        let index = self.transaction.unwrap_or_else(|| self.current_index());
        Some(self.upstream_of(index).clone())
    }

    fn connection_kept(&mut self) {
        if self.pinned_to.is_none() {
            self.pinned_to = Some(self.finished.unwrap_or(0));
        }
    }
}
