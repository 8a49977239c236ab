//! The session hook for a decision that takes time off the session's thread: a [`Decider`] makes the
//! cheap decisions at once on the session's thread (a rewrite-cache hit, a message with nothing to
//! parse) and the others on the parse threads (`parse_pool`), in the user's fair share; the relay
//! waits for such a decision without reading further client messages ([`Decision::Pending`]).
//! A session thread then never parses a statement, whatever its size or shape.
//!
//! Not for: what is decided (see `enforce` and `schema_change`) or how the relay waits (`session`).

use crate::parse_pool;
use crate::session::Decision;
use std::sync::Arc;

/// Decides about client messages, in two speeds. Cloned for each decision made off the thread (so
/// keep it a handful of `Arc`s).
pub trait Decider: Clone + Send + 'static {
    /// The decision if it is cheap to make now, on the session's thread; `None` when it needs
    /// parsing. `cycle`: the relay's number of the statement cycle the message belongs to (see
    /// `session::SessionHook`).
    fn quick(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Option<Decision>;

    /// The decision made in full; runs on a parse thread.
    fn full(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision;
}

/// The client-message side of a session hook whose slow decisions run on the parse threads in
/// `user`'s share.
pub struct Offloaded<D> {
    decider: D,
    user: Arc<str>,
}

impl<D: Decider> Offloaded<D> {
    pub fn new(decider: D, user: &str) -> Self {
        Offloaded {
            decider,
            user: Arc::from(user),
        }
    }
}

impl<D: Decider> Offloaded<D> {
    /// What becomes of a client message: decided now, or [`Decision::Pending`] on a parse thread.
    pub fn decide(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        if let Some(decision) = self.decider.quick(tag, frame, cycle) {
            return decision;
        }
        let Some(pool) = parse_pool::pool() else {
            return Decision::Refuse {
                code: "53000".into(),
                message: "the proxy could not start its parse threads: the statement was not run"
                    .into(),
            };
        };
        let mut decider = self.decider.clone();
        let frame = frame.to_vec();
        let decided = pool.run(self.user.clone(), move || decider.full(tag, &frame, cycle));
        Decision::Pending(Box::pin(async move {
            decided.await.unwrap_or_else(|| Decision::Refuse {
                code: "XX000".into(),
                message: "internal error while analysing this statement: it was not run".into(),
            })
        }))
    }
}
