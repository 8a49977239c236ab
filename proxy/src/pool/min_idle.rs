//! `[pool] min_idle`: a pool keeps that many idle connections open, so that a client does not wait
//! for a login to PostgreSQL. They are opened as soon as the pool exists (its first client logs
//! in), again whenever a client takes one, and at each pass of the reaper (which also closes idle
//! connections PostgreSQL ended, e.g. at a restart, and those idle longer than
//! `idle_timeout_seconds` above `min_idle`). They count in `size` and in `max_per_login` like
//! any other: a pool at its size, or a login at its limit, opens none.
//! Not for: handing connections out (see `pool`).

use super::{Backend, Pool, Pools, has_input, lock};
use crate::session::upstream_source::UpstreamKey;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{debug, warn};

/// Closes the idle connections of `pool` that PostgreSQL ended or spoke on.
pub(super) fn drop_ended(pool: &Pool) {
    let mut idle = lock(&pool.idle);
    let before = idle.len();
    idle.retain_mut(|(backend, _)| !has_input(&mut backend.stream));
    let ended = before - idle.len();
    if ended > 0 {
        debug!(ended, "closed idle pooled connections PostgreSQL ended");
        pool.gauges.idle.decrement(ended as f64);
    }
}

impl Pools {
    /// Opens connections in the background until `pool` (of `key`) has `min_idle` idle ones, or
    /// its size or the login's limit is reached; one filler per pool at a time.
    pub(super) fn top_up(self: &Arc<Self>, key: &Arc<UpstreamKey>, pool: &Arc<Pool>) {
        let wanted = self.config.min_idle;
        if wanted == 0
            || lock(&pool.idle).len() >= wanted
            || pool.filling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (pools, key, pool) = (self.clone(), key.clone(), pool.clone());
        tokio::spawn(async move {
            while pools.open_idle(&key, &pool, wanted).await {}
            pool.filling.store(false, Ordering::Release);
        });
    }

    /// Opens one idle connection if `pool` has fewer than `wanted` and room for it; whether it did.
    async fn open_idle(&self, key: &UpstreamKey, pool: &Pool, wanted: usize) -> bool {
        if lock(&pool.idle).len() >= wanted {
            return false;
        }
        // A slot of the pool while connecting, as a client opening one holds.
        let Ok(slot) = pool.in_use.clone().try_acquire_owned() else {
            return false;
        };
        // Open connections are the idle ones and those whose slot is taken (this one's included).
        let taken = self.config.size - pool.in_use.available_permits();
        if lock(&pool.idle).len() + taken > self.config.size {
            return false;
        }
        let login = match self.login_slots(&key.login.user) {
            None => None,
            Some(slots) => match slots.try_acquire_owned() {
                Ok(login) => Some(login),
                Err(_) => return false,
            },
        };
        let upstream = match self
            .target
            .connect_to(
                &key.login,
                &key.database,
                &super::hidden_state::startup_params(&key.params),
            )
            .await
        {
            Ok(upstream) => upstream,
            Err(err) => {
                warn!(error = %err, "opening an idle pooled connection (min_idle) failed");
                return false;
            }
        };
        lock(&pool.greeting).get_or_insert_with(|| upstream.greeting.clone());
        let backend = Backend {
            stream: upstream.stream,
            key: upstream.key,
            gate: Arc::default(),
            statements: Default::default(),
            _login: login,
        };
        pool.gauges.idle.increment(1.0);
        lock(&pool.idle).push((backend, Instant::now()));
        drop(slot);
        true
    }
}
