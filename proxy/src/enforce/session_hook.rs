//! The [`SessionHook`] of each kind of session, composed of its parts in one struct per kind, in
//! the order the parts see each message: the user's statement rate (`admission`), the decisions
//! about client messages (`enforce` for a restricted role, `schema_change` for an unrestricted one,
//! both through `offload` so that parsing runs off the session's thread), the statement metrics,
//! the schema changes' answers, the access log (`audit_trail`). The relay calls the hook from the
//! session's task only, so the hook and its parts are owned here, not shared; the relay numbers the
//! statement cycles for all of them. A decision made on a parse thread returns what it found, which
//! the decider records on the session's thread (see `offload`): nothing is behind a lock.
//!
//! Not for: the relay (see `session`), what the parts decide or record (see their modules), or
//! choosing which kind serves a session (see `enforce::session_setup`).

use crate::enforce::admission::RateLimit;
use crate::session::offload::{Decider, Offloaded};
use crate::session::{Decision, Hold, ServerEvent, ServerFrame, SessionHook, StatementMetrics};
use crate::wire::Backend;

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
    fn on_client_message(&mut self, tag: u8, frame: &[u8], _cycle: u64) -> Decision {
        self.rate
            .as_mut()
            .and_then(|rate| rate.check(tag, frame))
            .unwrap_or(Decision::Forward)
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, _cycle: u64) {
        self.metrics.on_server_event(event);
    }
}

/// A session of a role of the policy: restricted (`D` = `enforce::RestrictedFrontend`) or
/// unrestricted (`D` = `schema_change::UnrestrictedFrontend`, which follows its schema changes). The
/// decider also follows the answers: its access log and schema changes are matched to them.
pub struct EnforcedHook<D: Decider> {
    rate: Option<RateLimit>,
    decider: Offloaded<D>,
    metrics: StatementMetrics,
}

impl<D: Decider> EnforcedHook<D> {
    pub fn new(rate: Option<RateLimit>, decider: Offloaded<D>) -> Self {
        EnforcedHook {
            rate,
            decider,
            metrics: StatementMetrics::default(),
        }
    }
}

impl<D: Decider> SessionHook for EnforcedHook<D> {
    fn on_client_message(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        if let Some(refused) = self.rate.as_mut().and_then(|rate| rate.check(tag, frame)) {
            return refused;
        }
        self.decider.decide(tag, frame, cycle)
    }

    fn server_frame(&mut self, message: &Backend<'_>, cycle: u64) -> ServerFrame {
        self.decider.settled().server_frame(message, cycle)
    }

    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
        self.metrics.on_server_event(event);
        self.decider.settled().on_server_event(event, cycle);
    }

    fn hold(&mut self) -> Option<Hold> {
        self.decider.settled().hold()
    }
}
