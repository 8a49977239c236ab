//! Enforcement of the policy on one session: which upstream login and startup parameters a user's
//! role gets and which session hook serves it ([`session_setup`]), and, for restricted roles, the
//! decisions that rewrite or refuse every statement before it reaches PostgreSQL
//! ([`RestrictedFrontend`]).
//!
//! - Unrestricted role (e.g. `dpo`): the proxy's own `[upstream]` login, statements pass unchanged.
//! - Restricted role: the role's login from the credentials file; the user's attributes travel as
//!   startup parameters `<namespace>.<attr>` (so `RESET`/`DISCARD ALL` fall back to them); client
//!   startup parameters outside the rewriter's harmless list refuse the login; Query and Parse
//!   messages carry the rewritten SQL (re-serialized from the syntax tree), FunctionCall is refused.
//!
//! Not for: the relay mechanics (see `session`), the rewriting itself (see `policy::rewrite`) or
//! loading the policy (see `policy_state`).

pub(crate) mod admission;
pub mod audit_trail;
pub(crate) mod lookup_limit;
pub(crate) mod policy_state;
pub(crate) mod prepared_cap;
pub(crate) mod routing;
pub(crate) mod schema_change;
pub(crate) mod session_hook;

use crate::audit::AuditLog;
use crate::enforce::admission::RateLimit;
use crate::enforce::audit_trail::{Known, Recorded, SessionIdentity, Trail, TrailWriter};
use crate::enforce::lookup_limit::{LookupAllowance, SessionLookups, prepared};
use crate::enforce::policy_state::{PolicyHandle, PolicyState};
use crate::enforce::schema_change::UnrestrictedFrontend;
use crate::enforce::session_hook::{EnforcedHook, PassThroughHook};
use crate::net::upstream::Login;
use crate::session::error_scrub::ErrorScrub;
use crate::session::offload::{Decider, Offloaded};
use crate::session::{Decision, Hold, ServerEvent, SessionHook};
use crate::users::User;
use crate::wire::Frontend;
use crate::wire::client_error::ClientError;
use bytes::Bytes;
use policy::access::RoleAccess;
use policy::rewrite::{Refusal, Rewritten, check_startup_parameter};
use std::sync::Arc;
use tracing::debug;

/// How one authenticated session is served.
pub struct SessionSetup {
    /// The upstream login.
    pub login: Login,
    /// Startup parameters sent upstream.
    pub params: Vec<(String, String)>,
    /// What happens to each client message and what sees PostgreSQL's answers (metrics, the access
    /// log, schema changes): see `session_hook`.
    pub hook: Box<dyn SessionHook>,
    /// What a restricted role's errors may show (`None`: PostgreSQL's errors pass as they are).
    pub errors: Option<Arc<ErrorScrub>>,
    /// For an application user: the upstream the session starts with; the relay then takes a
    /// connection per end user (see `end_user::source`). `None`: the one connection of `login`.
    pub key: Option<Arc<crate::session::upstream_source::UpstreamKey>>,
}

impl SessionSetup {
    /// Everything passes (no policy configured), up to the user's statement rate.
    pub fn pass_through(
        login: Login,
        params: Vec<(String, String)>,
        rate: Option<RateLimit>,
    ) -> SessionSetup {
        SessionSetup {
            login,
            params,
            hook: Box::new(PassThroughHook::new(rate)),
            errors: None,
            key: None,
        }
    }
}

/// Why a login is refused (sent as FATAL; the connection closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefusal {
    pub code: &'static str,
    pub message: String,
}

impl From<LoginRefusal> for ClientError {
    fn from(refusal: LoginRefusal) -> Self {
        ClientError::new(refusal.code, refusal.message)
    }
}

/// Startup parameters that are the protocol's own (the proxy sets `user` and `database` itself).
const PROTOCOL_PARAMS: &[&str] = &["user", "database", "replication"];

/// Decides how `user` is served under `state`. `default_login` and `default_params` are what an
/// unrestricted role gets (the proxy's own login, the client's forwarded parameters); `audit` is the
/// access log the session's statements are recorded in, and who the session is (its role set here);
/// `rate` the user's statement rate, checked before anything else.
pub fn session_setup(
    handle: &Arc<PolicyHandle>,
    audit: Option<(&Arc<AuditLog>, SessionIdentity)>,
    rate: Option<RateLimit>,
    user: &User,
    client_params: &[(String, String)],
    default_login: &Login,
    default_params: Vec<(String, String)>,
) -> Result<SessionSetup, LoginRefusal> {
    let Some(role) = handle.current().role(&user.role) else {
        return Err(LoginRefusal {
            code: "28000",
            message: format!(
                "the role {:?} of this user is not a role of the policy: ask the administrator to fix the users file",
                user.role
            ),
        });
    };
    let defaults = (default_login, default_params);
    session_setup_as(handle, role, audit, rate, user, client_params, defaults)
}

/// [`session_setup`] with the rewrite of `role`, which need not be a role of the policy (e.g. an
/// application user's role while no end user is set: one that may read no table, see `end_user`),
/// and the upstream login and attributes of `user.role`.
pub fn session_setup_as(
    handle: &Arc<PolicyHandle>,
    role: Arc<RoleAccess>,
    audit: Option<(&Arc<AuditLog>, SessionIdentity)>,
    rate: Option<RateLimit>,
    user: &User,
    client_params: &[(String, String)],
    (default_login, default_params): (&Login, Vec<(String, String)>),
) -> Result<SessionSetup, LoginRefusal> {
    let state = &handle.current();
    if let Some(objects) = state.incomplete.get(&user.role) {
        return Err(LoginRefusal {
            code: "42501",
            message: crate::admin::compiled_objects::incomplete_message(&user.role, objects),
        });
    }
    let trail = audit.map(|(log, who)| {
        let role = role.role.clone();
        Trail::new(log.clone(), SessionIdentity { role, ..who })
    });
    if role.unrestricted {
        let frontend = UnrestrictedFrontend::new(handle, trail, role);
        let hook = EnforcedHook::new(rate, Offloaded::new(frontend, &user.name));
        return Ok(SessionSetup {
            login: default_login.clone(),
            params: default_params,
            hook: Box::new(hook),
            errors: None,
            key: None,
        });
    }
    let login = state.login(&user.role).ok_or_else(|| LoginRefusal {
        code: "28000",
        message: format!(
            "no upstream login for role {:?}: run `maschera policy apply` and reload",
            user.role
        ),
    })?;
    let mut params = restricted_params(client_params)?;
    let pinned = policy::apply_sql::login_settings(&user.role);
    params.retain(|(name, _)| !pinned.iter().any(|(p, _)| name.eq_ignore_ascii_case(p)));
    params.extend(pinned.map(|(name, value)| (name.to_string(), value)));
    let namespace = &state.policy.settings.attribute_namespace;
    // Every attribute the role's filters read is sent, empty when the user has none (a filter
    // reads an empty attribute as absent: no rows), so that no default the login was given on
    // PostgreSQL stands in for it.
    // Each with its seal, which the database lock verifies (`policy::attribute_seal`): a value the
    // session sets itself has none that matches.
    for attribute in state.role_attributes(&user.role) {
        let value = user.attributes.get(attribute).cloned().unwrap_or_default();
        let setting = policy::filter::attribute_setting(namespace, attribute);
        if let (Some(key), false) = (&state.attribute_key, value.is_empty()) {
            let seal = policy::attribute_seal::seal(key, &login.user, &setting, &value);
            params.push((policy::attribute_seal::seal_setting(&setting), seal));
        }
        params.push((setting, value));
    }
    let errors = Some(Arc::new(ErrorScrub::for_role(&role, &state.catalog)));
    let lookups = (!role.lookups.tables.is_empty())
        .then(|| SessionLookups::new(&user.name, &role.role, role.lookups.per_minute));
    let frontend = RestrictedFrontend {
        rules: RestrictedRules {
            state: state.clone(),
            role,
            trail: trail.as_ref().map(|t| t.writer().clone()),
            lookups: lookups.as_ref().map(|l| l.allowance().clone()),
        },
        trail,
        lookups,
    };
    let hook = EnforcedHook::new(rate, Offloaded::new(frontend, &user.name));
    Ok(SessionSetup {
        login,
        params,
        errors,
        hook: Box::new(hook),
        key: None,
    })
}

/// The client's startup parameters a restricted role may pass on; any other refuses the login.
fn restricted_params(
    client_params: &[(String, String)],
) -> Result<Vec<(String, String)>, LoginRefusal> {
    let mut out = Vec::new();
    for (name, value) in client_params {
        let lower = name.to_ascii_lowercase();
        if PROTOCOL_PARAMS.contains(&lower.as_str()) {
            continue;
        }
        if lower == "options" && value.trim().is_empty() {
            continue;
        }
        check_startup_parameter(name, value).map_err(|refusal| LoginRefusal {
            code: refusal.sqlstate.code(),
            message: refusal.message,
        })?;
        out.push((name.clone(), value.clone()));
    }
    Ok(out)
}

/// Rewrites or refuses every statement of a restricted role: statements the rewrite cache holds on
/// the session's thread, the others on a parse thread (see `offload`); owns what the session's
/// decisions record (its access-log trail, its prepared statements' lookups).
pub struct RestrictedFrontend {
    rules: RestrictedRules,
    trail: Option<Trail>,
    /// The rate limit of lookups, for a role that has any.
    lookups: Option<SessionLookups>,
}

/// What a restricted role's decisions read: the policy, the role, and where their records go.
/// Cloned for a decision off the session's thread.
#[derive(Clone)]
pub struct RestrictedRules {
    state: Arc<PolicyState>,
    role: Arc<RoleAccess>,
    trail: Option<TrailWriter>,
    lookups: Option<LookupAllowance>,
}

/// What a decision about a Query or Parse found, recorded on the session's thread.
#[derive(Default)]
pub struct RestrictedFound {
    trail: Option<Recorded>,
    /// A Parse: the statement's name and lookups.
    prepared: Option<(Vec<u8>, u32)>,
}

/// Statement texts longer than this are not looked up in the rewrite cache on the session's thread
/// (the lookup lexes the whole text): they go to a parse thread at once.
const QUICK_TEXT: usize = 64 * 1024;

impl Decider for RestrictedFrontend {
    type Work = RestrictedRules;
    type Found = RestrictedFound;

    fn quick(&mut self, _tag: u8, frame: &[u8], cycle: u64) -> Result<Decision, RestrictedRules> {
        let message = match Frontend::decode(frame) {
            Ok(message) => message,
            Err(error) => return Ok(self.refuse(audit_trail::malformed(error), cycle)),
        };
        match message {
            Frontend::Query { .. } | Frontend::Parse { .. } if frame.len() > QUICK_TEXT => {
                Err(self.rules.clone())
            }
            Frontend::Query { .. } | Frontend::Parse { .. } => {
                let no_trail = Known::default();
                let known = self.trail.as_ref().map_or(&no_trail, Trail::known);
                let decided = self
                    .rules
                    .statement(known, message, cycle, Lookup::CacheOnly);
                let (decision, found) = decided.ok_or_else(|| self.rules.clone())?;
                self.settle(found);
                Ok(decision)
            }
            _ => Ok(self.follow(message, cycle)),
        }
    }

    fn full(
        rules: RestrictedRules,
        _tag: u8,
        frame: &[u8],
        cycle: u64,
    ) -> (Decision, RestrictedFound) {
        // `quick` decoded these very bytes before it sent them here.
        let decided = match Frontend::decode(frame) {
            Ok(message) => rules.statement(&Known::default(), message, cycle, Lookup::Full),
            Err(error) => Some(rules.refused(audit_trail::malformed(error), None, cycle)),
        };
        decided.unwrap_or_else(|| (Decision::Forward, RestrictedFound::default()))
    }

    fn settle(&mut self, found: RestrictedFound) {
        if let (Some(trail), Some(recorded)) = (&mut self.trail, found.trail) {
            trail.record(recorded);
        }
        if let (Some(lookups), Some((name, n))) = (&mut self.lookups, found.prepared) {
            lookups.parse(name, n);
        }
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        if let Some(trail) = &mut self.trail {
            trail.on_server_event(event, cycle);
        }
    }

    fn hold(&mut self) -> Option<Hold> {
        self.trail.as_mut().and_then(Trail::hold)
    }
}

/// Whether a decision may analyse a statement or only take it from the rewrite cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    CacheOnly,
    Full,
}

impl RestrictedFrontend {
    /// A message other than Query and Parse: it acts on statements that went through them (Bind,
    /// Describe, Execute, Close, Sync, Flush, COPY data; the access log follows them), or is
    /// refused (FunctionCall).
    fn follow(&mut self, message: Frontend<'_>, cycle: u64) -> Decision {
        let followed = match (message, &self.lookups) {
            (Frontend::Other { tag: b'F', .. }, _) => Err(unsupported(
                "function call messages (fast path) are not supported through Maschera",
            )),
            (Frontend::Bind { statement, .. }, Some(lookups)) => lookups.bind(statement),
            _ => Ok(()),
        }
        .and_then(|()| match &mut self.trail {
            Some(trail) => trail.follow(&message, cycle),
            None => Ok(()),
        });
        match followed {
            Ok(()) => Decision::Forward,
            Err(refusal) => self.refuse(refusal, cycle),
        }
    }

    /// A message refused on the session's thread, recorded in the trail.
    fn refuse(&mut self, refusal: Refusal, cycle: u64) -> Decision {
        if let Some(trail) = &mut self.trail {
            trail.refused(&refusal, None, cycle);
        }
        refused(refusal)
    }
}

/// A refusal as the relay sends it.
fn refused(refusal: Refusal) -> Decision {
    debug!(sqlstate = refusal.sqlstate.code(), reason = %refusal.message, "statement refused");
    Decision::Refuse(ClientError::from(refusal))
}

impl RestrictedRules {
    /// A Query or Parse decided, with what it records (`None` only with [`Lookup::CacheOnly`] when
    /// the cache does not hold the statement). `known`: the session's descriptions of statement
    /// texts, on its thread.
    fn statement(
        &self,
        known: &Known,
        message: Frontend<'_>,
        cycle: u64,
        lookup: Lookup,
    ) -> Option<(Decision, RestrictedFound)> {
        let mut found = RestrictedFound::default();
        let decided = match message {
            Frontend::Query { sql } => self.query(known, sql, cycle, lookup, &mut found),
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => self.parse(known, name, sql, param_types, lookup, &mut found),
            _ => Ok(Some(Decision::Forward)),
        };
        match decided.transpose()? {
            Ok(decision) => Some((decision, found)),
            Err(refusal) => {
                let text = message.sql().and_then(|sql| std::str::from_utf8(sql).ok());
                Some(self.refused(refusal, text, cycle))
            }
        }
    }

    /// A refused statement (`sql`: its text, when it has one) and its record in the trail.
    fn refused(
        &self,
        refusal: Refusal,
        sql: Option<&str>,
        cycle: u64,
    ) -> (Decision, RestrictedFound) {
        let found = RestrictedFound {
            trail: self.trail.as_ref().map(|t| t.refused(&refusal, sql, cycle)),
            prepared: None,
        };
        (refused(refusal), found)
    }

    /// Query: the whole text rewritten, or refused as a whole (`Ok(None)`: not in the cache).
    fn query(
        &self,
        known: &Known,
        text: &[u8],
        cycle: u64,
        lookup: Lookup,
        found: &mut RestrictedFound,
    ) -> Result<Option<Decision>, Refusal> {
        let sql = utf8(text)?;
        let cache = &self.state.cache;
        let rewritten = match lookup {
            Lookup::CacheOnly => match cache.rewrite_if_cached(sql, &self.role) {
                Some(rewritten) => rewritten,
                None => return Ok(None),
            },
            Lookup::Full => cache.rewrite(sql, &self.role, &self.state.catalog)?,
        };
        let frame = query_frame(&rewritten.sql(sql))?;
        if let Some(lookups) = &self.lookups {
            lookups.query(rewritten.statements())?;
        }
        if let Some(trail) = &self.trail {
            found.trail = Some(trail.query(known, rewritten.statements(), cycle)?);
        }
        Ok(Some(Decision::Replace(frame)))
    }

    /// Parse: the one statement rewritten, statement name and parameter types kept as sent
    /// (`Ok(None)`: not in the cache).
    fn parse(
        &self,
        known: &Known,
        name: &[u8],
        text: &[u8],
        types: &[u8],
        lookup: Lookup,
        found: &mut RestrictedFound,
    ) -> Result<Option<Decision>, Refusal> {
        let sql = utf8(text)?;
        let cache = &self.state.cache;
        let rewritten: Rewritten = match lookup {
            Lookup::CacheOnly => match cache.rewrite_prepared_if_cached(sql, &self.role) {
                Some(rewritten) => rewritten,
                None => return Ok(None),
            },
            Lookup::Full => cache.rewrite_prepared(sql, &self.role, &self.state.catalog)?,
        };
        let frame = parse_frame(name, &rewritten.sql(sql), types)?;
        if self.lookups.is_some() {
            found.prepared = Some((name.to_vec(), prepared(rewritten.statements())));
        }
        if let Some(trail) = &self.trail {
            found.trail = Some(trail.parse(known, name, rewritten.statements()));
        }
        Ok(Some(Decision::Replace(frame)))
    }
}

fn utf8(text: &[u8]) -> Result<&str, Refusal> {
    std::str::from_utf8(text)
        .map_err(|_| unsupported("statement text is not valid UTF-8: Maschera requires UTF-8"))
}

fn unsupported(message: &str) -> Refusal {
    Refusal {
        sqlstate: policy::rewrite::SqlState::FeatureNotSupported,
        message: message.to_owned(),
        tables: Vec::new(),
        statement_index: 0,
    }
}

/// A Query message carrying `sql`.
fn query_frame(sql: &str) -> Result<Bytes, Refusal> {
    message(Frontend::Query { sql: no_nul(sql)? })
}

/// A Parse message: `name` and the raw parameter-type section (`types`: count and OIDs) as the
/// client sent them, with `sql` as the statement text.
fn parse_frame(name: &[u8], sql: &str, types: &[u8]) -> Result<Bytes, Refusal> {
    message(Frontend::Parse {
        name,
        sql: no_nul(sql)?,
        param_types: types,
    })
}

/// The rewritten SQL comes from the syntax tree, so a NUL inside it would be a serializer bug:
/// refused, never truncated.
fn no_nul(sql: &str) -> Result<&[u8], Refusal> {
    if sql.contains('\0') {
        return Err(unsupported(
            "the rewritten statement contains a NUL byte and cannot be sent",
        ));
    }
    Ok(sql.as_bytes())
}

/// One frontend message as a frame.
fn message(message: Frontend<'_>) -> Result<Bytes, Refusal> {
    message
        .to_bytes()
        .ok_or_else(|| unsupported("statement too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn query_frame_has_the_length_and_terminator_postgres_expects() {
        let frame = query_frame("SELECT 1").unwrap();
        let mut expected = BytesMut::new();
        postgres_protocol::message::frontend::query("SELECT 1", &mut expected).unwrap();
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn parse_frame_keeps_name_and_parameter_types() {
        let mut expected = BytesMut::new();
        postgres_protocol::message::frontend::parse("s1", "SELECT $1", [23u32, 25], &mut expected)
            .unwrap();
        let Ok(Frontend::Parse {
            name, param_types, ..
        }) = Frontend::decode(&expected)
        else {
            panic!("a Parse")
        };
        let frame = parse_frame(name, "SELECT $1", param_types).unwrap();
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn a_nul_inside_the_statement_is_refused() {
        assert!(query_frame("SELECT '\0'").is_err());
        assert!(parse_frame(b"", "SELECT '\0'", &[0, 0]).is_err());
    }

    #[test]
    fn harmful_startup_parameters_refuse_the_login() {
        let params = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = restricted_params(&params(&[
            ("user", "sam"),
            ("database", "crm"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ]))
        .unwrap();
        assert_eq!(ok.len(), 2);
        let err = restricted_params(&params(&[("client_encoding", "LATIN1")])).unwrap_err();
        assert_eq!(err.code, "0A000");
        for (name, value) in [
            ("options", "-c search_path=evil"),
            ("maschera.region", "south"),
            ("search_path", "evil"),
            ("role", "postgres"),
            ("session_authorization", "postgres"),
        ] {
            let err = restricted_params(&params(&[(name, value)])).unwrap_err();
            assert!(matches!(err.code, "42501" | "0A000"), "{name}: {err:?}");
            assert!(err.message.contains(name), "{name}: {}", err.message);
        }
    }
}
