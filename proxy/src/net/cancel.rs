//! Cancel keys: each client gets the proxy's own random (process id, secret) pair, never the upstream
//! server's; this registry maps it to the upstream session's key so that a CancelRequest reaches the
//! right server backend. Entries live exactly as long as their session (see [`Registration`]); a
//! session of transaction mode points its entry at the backend serving it now, and at none
//! between transactions ([`Registration::retarget`]), with the backend's [`CancelGate`], which
//! counts the cancels forwarded to it that PostgreSQL has not confirmed yet (a pool does not hand
//! that backend to another client before they are: see `pool::late_cancel`).
//! Not for: sending the cancel (see `upstream`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A BackendKeyData pair (protocol 3.0: 32-bit process id and secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// The cancels being forwarded to one pooled backend.
#[derive(Debug, Default)]
pub struct CancelGate {
    in_flight: AtomicUsize,
    /// A forward failed: whether PostgreSQL got the cancel, and when it acts on it, is unknown.
    doubtful: AtomicBool,
    done: Notify,
}

impl CancelGate {
    /// Whether a cancel is being forwarded to the backend now.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether a forward to the backend failed (it may still be cancelled at any time).
    pub fn doubtful(&self) -> bool {
        self.doubtful.load(Ordering::Acquire)
    }

    /// Waits until no cancel is being forwarded to the backend.
    pub async fn settled(&self) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.busy() {
                return;
            }
            done.await;
        }
    }
}

/// The upstream session a client key points at now.
#[derive(Debug, Clone)]
struct Target {
    key: CancelKey,
    gate: Option<Arc<CancelGate>>,
}

/// A cancel being forwarded: the upstream key, and the backend's gate held busy until
/// [`CancelTicket::delivered`] (or drop, which counts as a failed forward).
#[derive(Debug)]
pub struct CancelTicket {
    pub key: CancelKey,
    gate: Option<Arc<CancelGate>>,
    delivered: bool,
}

impl CancelTicket {
    /// PostgreSQL read the cancel and closed the connection (see `UpstreamTarget::cancel`).
    pub fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for CancelTicket {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            if !self.delivered {
                gate.doubtful.store(true, Ordering::Release);
            }
            if gate.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                gate.done.notify_waiters();
            }
        }
    }
}

/// The proxy's keys given to clients, mapped to upstream keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<CancelKey, Option<Target>>>,
}

/// Keeps a session's entry in the registry; removes it when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    client_key: CancelKey,
}

impl Registration {
    /// The key to give the client in BackendKeyData.
    pub fn client_key(&self) -> CancelKey {
        self.client_key
    }
}

impl Registration {
    /// Points the client's key at another upstream session and its gate (`None`: none, a cancel
    /// does nothing). Once this returns, a cancel of the client either counts in the previous
    /// target's gate or does not reach that session.
    pub fn retarget(&self, upstream: Option<(CancelKey, Arc<CancelGate>)>) {
        if let Some(entry) = self.registry.lock().get_mut(&self.client_key) {
            *entry = upstream.map(|(key, gate)| Target {
                key,
                gate: Some(gate),
            });
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.client_key);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, Option<Target>>> {
        // A panic elsewhere cannot leave the map inconsistent: every operation is one insert/remove.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an upstream session under a fresh random client key.
    pub fn register(self: &Arc<Self>, upstream: CancelKey) -> Registration {
        self.register_for(Some(Target {
            key: upstream,
            gate: None,
        }))
    }

    /// Registers a session that has no upstream session yet (transaction mode).
    pub fn register_detached(self: &Arc<Self>) -> Registration {
        self.register_for(None)
    }

    fn register_for(self: &Arc<Self>, upstream: Option<Target>) -> Registration {
        let mut sessions = self.lock();
        let client_key = loop {
            let key = CancelKey {
                pid: rand::random::<i32>() & i32::MAX,
                secret: rand::random(),
            };
            if key.pid != 0 && !sessions.contains_key(&key) {
                break key;
            }
        };
        sessions.insert(client_key, upstream);
        Registration {
            registry: self.clone(),
            client_key,
        }
    }

    /// The upstream key for a client's CancelRequest, if the client key is known and points at a
    /// session; the target's gate counts the cancel as in flight until the ticket goes.
    pub fn lookup(&self, client_key: CancelKey) -> Option<CancelTicket> {
        let sessions = self.lock();
        let target = sessions.get(&client_key)?.as_ref()?;
        if let Some(gate) = &target.gate {
            gate.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Some(CancelTicket {
            key: target.key,
            gate: target.gate.clone(),
            delivered: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_while_registered_only() {
        let registry = Arc::new(CancelRegistry::default());
        let upstream = CancelKey { pid: 42, secret: 7 };
        let registration = registry.register(upstream);
        let key = registration.client_key();
        assert_ne!(key, upstream);
        let upstream_of = |key| registry.lookup(key).map(|ticket| ticket.key);
        assert_eq!(upstream_of(key), Some(upstream));
        assert_eq!(
            upstream_of(CancelKey {
                pid: key.pid,
                secret: key.secret ^ 1
            }),
            None
        );
        registration.retarget(None);
        assert_eq!(upstream_of(key), None, "between transactions");
        let next = CancelKey { pid: 43, secret: 8 };
        let gate = Arc::new(CancelGate::default());
        registration.retarget(Some((next, gate.clone())));
        assert_eq!(upstream_of(key), Some(next));
        drop(registration);
        assert_eq!(upstream_of(key), None);
        assert!(!gate.busy());
    }

    #[test]
    fn a_gate_is_busy_while_a_cancel_is_forwarded_and_doubtful_after_a_failed_one() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register_detached();
        let gate = Arc::new(CancelGate::default());
        let backend = CancelKey { pid: 9, secret: 9 };
        registration.retarget(Some((backend, gate.clone())));
        let ticket = registry.lookup(registration.client_key()).unwrap();
        // The session moves on: the backend's gate still counts the cancel.
        registration.retarget(None);
        assert!(gate.busy());
        ticket.delivered();
        assert!(!gate.busy() && !gate.doubtful());
        registration.retarget(Some((backend, gate.clone())));
        drop(registry.lookup(registration.client_key()).unwrap());
        assert!(!gate.busy() && gate.doubtful());
    }
}
