//! The session hook for a decision that takes time off the session's thread: a [`Decider`] makes the
//! cheap decisions at once on the session's thread (a rewrite-cache hit, a message with nothing to
//! parse) and the others on the parse threads (`parse_pool`), in the user's fair share; the relay
//! waits for such a decision without reading further client messages ([`Decision::Pending`]).
//! A session thread then never parses a statement, whatever its size or shape.
//!
//! A decision off the thread is pure: it takes a copy of what it reads ([`Decider::Work`]) and
//! returns, besides the decision, what it found ([`Decider::Found`]: e.g. the access records it
//! submitted, the catalog a schema change leaves); the decider records that on the session's thread
//! ([`Decider::settle`]) before it sees anything else, so its state is its own, with no lock.
//!
//! Not for: what is decided (see `enforce` and `schema_change`) or how the relay waits (`session`).

use crate::session::parse_pool;
use crate::session::{Decision, Hold, ServerEvent, ServerFrame};
use crate::wire::Backend;
use crate::wire::client_error::ClientError;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Decides about client messages, in two speeds, and follows the session's answers (the state its
/// decisions build up is also what the answers are matched to).
pub trait Decider: Send + 'static {
    /// What a decision off the session's thread takes with it (a handful of `Arc`s and copies).
    type Work: Send + 'static;
    /// What such a decision found besides the decision, for [`Decider::settle`].
    type Found: Send + 'static;

    /// The decision if it is cheap to make now, on the session's thread; else the work to do on a
    /// parse thread. `cycle`: the relay's number of the statement cycle the message belongs to (see
    /// `session::SessionHook`).
    fn quick(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Result<Decision, Self::Work>;

    /// The decision made in full; runs on a parse thread.
    fn full(work: Self::Work, tag: u8, frame: &[u8], cycle: u64) -> (Decision, Self::Found);

    /// Records what [`Decider::full`] found, on the session's thread.
    fn settle(&mut self, found: Self::Found);

    /// See `session::SessionHook::server_frame`.
    fn server_frame(&mut self, _message: &Backend<'_>, _cycle: u64) -> ServerFrame {
        ServerFrame::Pass
    }

    /// See `session::SessionHook::on_server_event`.
    fn on_server_event(&mut self, _event: ServerEvent<'_>, _cycle: u64) {}

    /// See `session::SessionHook::hold`.
    fn hold(&mut self) -> Option<Hold> {
        None
    }
}

/// A [`Decider`] whose slow decisions run on the parse threads in `user`'s share.
pub struct Offloaded<D: Decider> {
    decider: D,
    user: Arc<str>,
    /// What the decision off the thread found: sent before the relay gets that decision, so it is
    /// there when the relay next calls the hook.
    found: Option<oneshot::Receiver<D::Found>>,
}

impl<D: Decider> Offloaded<D> {
    pub fn new(decider: D, user: &str) -> Self {
        Offloaded {
            decider,
            user: Arc::from(user),
            found: None,
        }
    }

    /// What becomes of a client message: decided now, or [`Decision::Pending`] on a parse thread.
    pub fn decide(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
        let work = match self.settled().quick(tag, frame, cycle) {
            Ok(decision) => return decision,
            Err(work) => work,
        };
        let Some(pool) = parse_pool::pool() else {
            let message = "the proxy could not start its parse threads: the statement was not run";
            return ClientError::new("53000", message).into();
        };
        let frame = frame.to_vec();
        let decided = pool.run(self.user.clone(), move || D::full(work, tag, &frame, cycle));
        let (found, settle) = oneshot::channel();
        self.found = Some(settle);
        Decision::Pending(Box::pin(async move {
            match decided.await {
                Some((decision, what)) => {
                    // Received by `settled` on the session's thread (the relay holds the hook).
                    let _ = found.send(what);
                    decision
                }
                None => {
                    let message = "internal error while analysing this statement: it was not run";
                    ClientError::new("XX000", message).into()
                }
            }
        }))
    }

    /// The decider, with what its last decision off the thread found recorded once that decision
    /// is made (the relay reads and decides nothing further until then).
    pub fn settled(&mut self) -> &mut D {
        if let Some(found) = &mut self.found {
            match found.try_recv() {
                Ok(what) => {
                    self.found = None;
                    self.decider.settle(what);
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.found = None,
            }
        }
        &mut self.decider
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::ThreadId;

    /// Parses (pretends to) every Query off the thread and records where each was decided.
    #[derive(Default)]
    struct Recorder {
        /// Per message: its cycle and the thread that decided it.
        recorded: Vec<(u64, ThreadId)>,
    }

    impl Decider for Recorder {
        type Work = ();
        type Found = (u64, ThreadId);

        fn quick(&mut self, tag: u8, _frame: &[u8], cycle: u64) -> Result<Decision, ()> {
            match tag {
                b'Q' => Err(()),
                _ => {
                    self.recorded.push((cycle, std::thread::current().id()));
                    Ok(Decision::Forward)
                }
            }
        }

        fn full(_work: (), _tag: u8, _frame: &[u8], cycle: u64) -> (Decision, (u64, ThreadId)) {
            (Decision::Forward, (cycle, std::thread::current().id()))
        }

        fn settle(&mut self, found: (u64, ThreadId)) {
            self.recorded.push(found);
        }
    }

    /// What a decision made on a parse thread found is recorded by the session's own decider,
    /// before anything after that decision, in the order of the messages.
    #[tokio::test]
    async fn what_a_parse_thread_found_is_recorded_before_the_next_message() {
        let mut offloaded = Offloaded::new(Recorder::default(), "anna");
        let Decision::Pending(pending) = offloaded.decide(b'Q', b"Q\0\0\0\x05\0", 1) else {
            panic!("a Query is decided on a parse thread");
        };
        assert!(offloaded.settled().recorded.is_empty());
        assert!(matches!(pending.await, Decision::Forward));
        assert!(matches!(
            offloaded.decide(b'S', b"S\0\0\0\x04", 1),
            Decision::Forward
        ));
        let here = std::thread::current().id();
        let recorded = &offloaded.settled().recorded;
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert_eq!(recorded[0].0, 1);
        assert_ne!(recorded[0].1, here, "decided on a parse thread");
        assert_eq!(recorded[1], (1, here));
    }
}
