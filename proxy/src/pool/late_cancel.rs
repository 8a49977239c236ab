//! A cancel racing the end of a transaction: a client's CancelRequest is forwarded to the backend
//! serving it at that moment, on a new connection to PostgreSQL; if the transaction ends meanwhile,
//! the backend goes back to its pool and may already run the next client's statement when
//! PostgreSQL acts on the cancel, which would cancel that statement instead (pgbouncer's fix of the
//! same race: pgbouncer/pgbouncer#717).
//!
//! So a backend given back while a cancel is being forwarded to it (its [`CancelGate`] is busy:
//! the cancel was looked up before the session let go of the backend, see
//! `Registration::retarget`) is kept out of the pool, its slot still taken, until PostgreSQL has
//! closed the cancel's connection. PostgreSQL closes it after signalling the backend, and a backend
//! waiting for its next statement takes the signal before it reads that statement and drops it
//! (an idle backend ignores a cancel), so the next client's statement is safe. A backend a forward
//! failed for (PostgreSQL may or may not act on it, at any time) is closed instead.
//! Not for: forwarding the cancel (see `server`, `upstream`), the registry (see `cancel`).

use super::{Leased, close, lock};
use crate::net::cancel::CancelGate;
use crate::net::upstream::UpstreamTarget;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Longer than a forward can take (its connect and its wait for the close are bounded by the
/// upstream connect timeout each); past it the backend is closed.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Whether `leased` may not go back to its pool at once.
pub(super) fn in_doubt(leased: &Leased) -> bool {
    let gate: &CancelGate = &leased.backend.gate;
    gate.busy() || gate.doubtful()
}

/// Gives `leased` back once the cancels forwarded to it are settled: into its pool if they were
/// all delivered, otherwise closed.
pub(super) fn release_when_settled(target: Arc<UpstreamTarget>, leased: Leased) {
    tokio::spawn(async move {
        let gate = leased.backend.gate.clone();
        let settled = tokio::time::timeout(SETTLE_LIMIT, gate.settled())
            .await
            .is_ok();
        let Leased {
            backend,
            pool,
            _permit,
        } = leased;
        pool.gauges.in_use.decrement(1.0);
        if settled && !gate.doubtful() {
            debug!("a pooled connection goes back after the cancel sent to it was delivered");
            pool.gauges.idle.increment(1.0);
            lock(&pool.idle).push((backend, Instant::now()));
        } else {
            debug!("closing a pooled connection a cancel may still reach");
            close(target, backend);
        }
        // The slot is free once the connection is back or gone.
        drop(_permit);
    });
}
