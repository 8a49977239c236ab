//! The upstream connections of one application session: one per end-user upstream (a role's login
//! with the end user's attributes) the client used, opened on demand, kept for the session, at most
//! [`MAX_CONNECTIONS`] (beyond, the idle one used longest ago is closed). The relay takes the
//! connection of the transaction's end user at its first message and gives it back at its end (see
//! `upstream_source`). The client's cancel key follows the connection serving it at the moment.
//! Named prepared statements follow the client from connection to connection as in transaction
//! pooling (`pool::prepared`): a statement the client prepared while one end user was served is
//! prepared again on another end user's connection when the client uses it there (the session
//! hook decides which statements may be: transaction control such as pgjdbc's named `COMMIT`, not
//! a statement rewritten for another end user's role).
//!
//! Not for: transaction pooling across sessions (see `pool`), choosing the end user (see `hook`).

use crate::net::cancel::{CancelKey, Registration};
use crate::net::tls::BoxStream;
use crate::net::upstream::UpstreamTarget;
use crate::pool::prepared::{Prepared, ServerStatements};
use crate::session::upstream_source::{Acquiring, UpstreamKey, UpstreamSource};
use crate::wire::client_error::ClientError;
use std::sync::Arc;
use tracing::warn;

/// Upstream connections one application session keeps at most.
pub const MAX_CONNECTIONS: usize = 8;

/// A connection with the key it was opened for and its backend's cancel key.
pub struct SessionConn {
    pub key: Arc<UpstreamKey>,
    pub stream: BoxStream,
    pub cancel: CancelKey,
    /// The named statements prepared on it (see `pool::prepared`).
    pub statements: ServerStatements,
}

/// The connections of one application session (see the module doc).
pub struct SessionConnections<'a> {
    target: Arc<UpstreamTarget>,
    /// The key of the session's first connection (no end user).
    own: Arc<UpstreamKey>,
    /// Connections between transactions, the one used last at the end.
    idle: Vec<SessionConn>,
    /// The client's cancel key, pointed at the connection serving the session.
    registration: Option<&'a Registration>,
    /// The client's named statements, prepared on each connection that needs them.
    prepared: Prepared,
}

impl<'a> SessionConnections<'a> {
    pub fn new(target: Arc<UpstreamTarget>, own: Arc<UpstreamKey>) -> Self {
        SessionConnections {
            target,
            own,
            idle: Vec::new(),
            registration: None,
            prepared: Prepared::new(0),
        }
    }

    /// The same, pointing the client's cancel key at the connection serving the session.
    pub fn cancelled_through(self, registration: &'a Registration) -> Self {
        SessionConnections {
            registration: Some(registration),
            ..self
        }
    }
}

impl UpstreamSource for SessionConnections<'_> {
    type Conn = SessionConn;
    const POOLED: bool = true;

    fn stream(conn: &mut SessionConn) -> &mut BoxStream {
        &mut conn.stream
    }

    fn acquire(&mut self, key: Option<Arc<UpstreamKey>>) -> Acquiring<SessionConn> {
        let key = key.unwrap_or_else(|| self.own.clone());
        if let Some(at) = self.idle.iter().position(|c| *c.key == *key) {
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
                Ok(upstream) => Ok(SessionConn {
                    key,
                    stream: upstream.stream,
                    cancel: upstream.key,
                    statements: ServerStatements::default(),
                }),
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

    fn attached(&mut self, conn: &SessionConn) {
        if let Some(registration) = self.registration {
            // A gate of its own: nothing waits for cancels of a session's own connection.
            registration.retarget(Some((conn.cancel, Arc::default())));
        }
        self.prepared.attached(&conn.statements);
    }

    fn outgoing(&mut self, conn: &mut SessionConn, bytes: &[u8]) -> Option<bytes::BytesMut> {
        self.prepared.outgoing(&mut conn.statements, bytes)
    }

    fn incoming(&mut self, conn: &mut SessionConn, message: &crate::wire::Backend<'_>) -> bool {
        self.prepared.answer(&mut conn.statements, message)
    }

    fn release(&mut self, conn: SessionConn, reusable: bool) {
        if reusable {
            self.idle.push(conn);
        }
    }
}
