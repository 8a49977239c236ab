//! The upstream connections of one application session: one per end-user upstream (a role's login
//! with the end user's attributes) the client used, opened on demand, kept for the session, at most
//! [`MAX_CONNECTIONS`] (beyond, the idle one used longest ago is closed). The relay takes the
//! connection of the transaction's end user at its first message and gives it back at its end (see
//! `upstream_source`).
//!
//! Not for: transaction pooling across sessions (see `pool`), choosing the end user (see `hook`).

use crate::net::tls::BoxStream;
use crate::net::upstream::UpstreamTarget;
use crate::session::upstream_source::{Acquiring, UpstreamKey, UpstreamSource};
use crate::wire::client_error::ClientError;
use std::sync::Arc;
use tracing::warn;

/// Upstream connections one application session keeps at most.
pub const MAX_CONNECTIONS: usize = 8;

/// A connection with the key it was opened for.
pub type KeyedConn = (Arc<UpstreamKey>, BoxStream);

/// The connections of one application session (see the module doc).
pub struct SessionConnections {
    target: Arc<UpstreamTarget>,
    /// The key of the session's first connection (no end user).
    own: Arc<UpstreamKey>,
    /// Connections between transactions, the one used last at the end.
    idle: Vec<KeyedConn>,
}

impl SessionConnections {
    pub fn new(target: Arc<UpstreamTarget>, own: Arc<UpstreamKey>) -> Self {
        SessionConnections {
            target,
            own,
            idle: Vec::new(),
        }
    }
}

impl UpstreamSource for SessionConnections {
    type Conn = KeyedConn;
    const POOLED: bool = true;

    fn stream(conn: &mut KeyedConn) -> &mut BoxStream {
        &mut conn.1
    }

    fn acquire(&mut self, key: Option<Arc<UpstreamKey>>) -> Acquiring<KeyedConn> {
        let key = key.unwrap_or_else(|| self.own.clone());
        if let Some(at) = self.idle.iter().position(|(k, _)| **k == *key) {
            let conn = self.idle.remove(at);
            return Box::pin(std::future::ready(Ok(conn)));
        }
        if self.idle.len() + 1 >= MAX_CONNECTIONS {
            self.idle.remove(0);
        }
        let target = self.target.clone();
        Box::pin(async move {
            match target
                .connect_to(&key.login, &key.database, &key.params)
                .await
            {
                Ok(upstream) => Ok((key, upstream.stream)),
                Err(err) => {
                    warn!(error = %err, "upstream login for an end user failed");
                    Err(ClientError::new(
                        "08006",
                        "could not connect to the database server behind the proxy for this end user",
                    ))
                }
            }
        })
    }

    fn release(&mut self, conn: KeyedConn, reusable: bool) {
        if reusable {
            self.idle.push(conn);
        }
    }
}
