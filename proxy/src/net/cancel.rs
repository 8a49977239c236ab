//! Cancel keys: each client gets the proxy's own random (process id, secret) pair, never the upstream
//! server's; this registry maps it to the upstream session's key so that a CancelRequest reaches the
//! right server backend. Entries live exactly as long as their session (see [`Registration`]); a
//! session of transaction mode points its entry at the backend serving it now, and at none
//! between transactions ([`Registration::retarget`]).
//! Not for: sending the cancel (see `upstream`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A BackendKeyData pair (protocol 3.0: 32-bit process id and secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// The proxy's keys given to clients, mapped to upstream keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<CancelKey, Option<CancelKey>>>,
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
    /// Points the client's key at another upstream session (`None`: none, a cancel does nothing).
    pub fn retarget(&self, upstream: Option<CancelKey>) {
        if let Some(entry) = self.registry.lock().get_mut(&self.client_key) {
            *entry = upstream;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.client_key);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, Option<CancelKey>>> {
        // A panic elsewhere cannot leave the map inconsistent: every operation is one insert/remove.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an upstream session under a fresh random client key.
    pub fn register(self: &Arc<Self>, upstream: CancelKey) -> Registration {
        self.register_for(Some(upstream))
    }

    /// Registers a session that has no upstream session yet (transaction mode).
    pub fn register_detached(self: &Arc<Self>) -> Registration {
        self.register_for(None)
    }

    fn register_for(self: &Arc<Self>, upstream: Option<CancelKey>) -> Registration {
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

    /// The upstream key for a client's CancelRequest, if the client key is known.
    pub fn lookup(&self, client_key: CancelKey) -> Option<CancelKey> {
        self.lock().get(&client_key).copied().flatten()
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
        assert_eq!(registry.lookup(key), Some(upstream));
        assert_eq!(
            registry.lookup(CancelKey {
                pid: key.pid,
                secret: key.secret ^ 1
            }),
            None
        );
        registration.retarget(None);
        assert_eq!(registry.lookup(key), None, "between transactions");
        let next = CancelKey { pid: 43, secret: 8 };
        registration.retarget(Some(next));
        assert_eq!(registry.lookup(key), Some(next));
        drop(registration);
        assert_eq!(registry.lookup(key), None);
    }
}
