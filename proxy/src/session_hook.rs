//! The [`SessionHook`] of each kind of session, composed of its parts in one struct per kind, in
//! the order the parts see each message: the user's statement rate (`admission`), the decisions
//! about client messages (`enforce` for a restricted role, `schema_change` for an unrestricted one,
//! both through `offload` so that parsing runs off the session's thread), the statement metrics,
//! the schema changes' answers, the access log (`audit_trail`). The relay calls the hook from the
//! session's task only, so the hook and its parts are owned here, not shared; the relay numbers the
//! statement cycles for all of them. What is still behind a lock is what a decision made on a parse
//! thread also writes (the access log's `Trail`; the schema changes' tracking, which the rebuild
//! after a change also clears): those decisions run on a clone of the decider (see `offload`).
//!
//! Not for: the relay (see `session`), what the parts decide or record (see their modules), or
//! choosing which kind serves a session (see `enforce::session_setup`).

use crate::admission::RateLimit;
use crate::audit_trail::AuditObserver;
use crate::offload::{Decider, Offloaded};
use crate::schema_change::SchemaChangeObserver;
use crate::session::{Decision, Hold, ServerEvent, ServerFrame, SessionHook, StatementMetrics};

/// A session without a policy: every message passes, up to the user's statement rate.
pub struct PassThroughHook {
    rate: Option<RateLimit>,
    metrics: StatementMetrics,
}

impl PassThroughHook {
    pub fn new(rate: Option<RateLimit>) -> Self {
        PassThroughHook {
            rate,
            metrics: StatementMetrics::default(),
        }
    }
}

impl SessionHook for PassThroughHook {
    fn on_client_message(&mut self, tag: u8, _frame: &[u8], _cycle: u64) -> Decision {
        self.rate
            .as_mut()
            .and_then(|rate| rate.check(tag))
            .unwrap_or(Decision::Forward)
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, _cycle: u64) {
        self.metrics.on_server_event(event);
    }
}

/// A session of a role of the policy: restricted (`D` = `enforce::RestrictedFrontend`) or
/// unrestricted (`D` = `schema_change::UnrestrictedFrontend`, with its schema changes followed).
pub struct EnforcedHook<D: Decider> {
    rate: Option<RateLimit>,
    decider: Offloaded<D>,
    metrics: StatementMetrics,
    /// For an unrestricted role: what its schema changes did, and the answers to their wrapping.
    schema: Option<SchemaChangeObserver>,
    /// With an access log: the server side of the session's trail.
    audit: Option<AuditObserver>,
}

impl<D: Decider> EnforcedHook<D> {
    pub fn new(
        rate: Option<RateLimit>,
        decider: Offloaded<D>,
        audit: Option<AuditObserver>,
    ) -> Self {
        EnforcedHook {
            rate,
            decider,
            metrics: StatementMetrics::default(),
            schema: None,
            audit,
        }
    }

    /// Follows the schema changes the decider wraps (an unrestricted role).
    pub fn with_schema_changes(mut self, schema: SchemaChangeObserver) -> Self {
        self.schema = Some(schema);
        self
    }
}

impl<D: Decider> SessionHook for EnforcedHook<D> {
    fn on_client_message(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        if let Some(refused) = self.rate.as_mut().and_then(|rate| rate.check(tag)) {
            return refused;
        }
        self.decider.decide(tag, frame, cycle)
    }

    fn server_frame(&mut self, tag: u8, body: &[u8], cycle: u64) -> ServerFrame {
        match &mut self.schema {
            Some(schema) => schema.server_frame(tag, body, cycle),
            None => ServerFrame::Pass,
        }
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        self.metrics.on_server_event(event);
        if let Some(schema) = &mut self.schema {
            schema.on_server_event(event, cycle);
        }
        if let Some(audit) = &mut self.audit {
            audit.on_server_event(event, cycle);
        }
    }

    fn hold(&mut self) -> Option<Hold> {
        self.audit.as_mut().and_then(AuditObserver::hold)
    }
}
