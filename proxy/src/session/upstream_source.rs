//! Where a session's upstream connection comes from, transaction by transaction: the seam between
//! the relay and the pools. The relay asks its [`UpstreamSource`] for a connection when it has
//! something to send and holds none (the first message of a transaction), keyed by the session
//! hook's choice (`SessionHook::upstream_key` of the relay; `None`: the session's own key),
//! and gives it back once PostgreSQL reports the session idle (ReadyForQuery `I`, nothing in
//! flight, nothing of an unfinished extended-protocol batch sent) unless the source keeps it
//! (a session pinned by state that cannot move between connections). A connection whose state is
//! unknown (the client left mid-transaction, a protocol error, PostgreSQL closed it) is given back
//! as not reusable.
//!
//! - Session mode: [`Dedicated`], the session's one connection, attached from the start and never
//!   given back; its methods are no-ops the compiler removes (`POOLED = false`), so the relay's
//!   session-mode path is the one it had.
//! - Transaction mode: `pool::PooledSource`.
//!
//! Not for: the pools themselves (see `pool`), or choosing the key (the session hook's).

use crate::net::tls::BoxStream;
use crate::net::upstream::Login;
use crate::wire::client_error::ClientError;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Which upstream sessions may serve a transaction: those of one login to one database with the
/// same startup parameters (the user's attributes among them), so that two sessions whose
/// settings differ (sam in the north, sara in the south) never share a backend.
#[derive(Clone)]
pub struct UpstreamKey {
    pub login: Login,
    pub database: String,
    /// Startup parameters, in the order they are sent.
    pub params: Vec<(String, String)>,
}

impl UpstreamKey {
    fn identity(&self) -> (&str, &str, &[(String, String)]) {
        (&self.login.user, &self.database, &self.params)
    }
}

impl PartialEq for UpstreamKey {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for UpstreamKey {}

impl Hash for UpstreamKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl std::fmt::Debug for UpstreamKey {
    /// The login and database only: parameters hold the user's attributes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKey")
            .field("login", &self.login.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// A connection being acquired; an error ends the session with that FATAL (e.g. 53300 after the
/// acquire timeout).
pub type Acquiring<C> = Pin<Box<dyn Future<Output = Result<C, ClientError>> + Send>>;

/// Gives a session its upstream connection per transaction (see the module doc).
pub trait UpstreamSource: Send {
    /// A connection as the source hands it out.
    type Conn: Send;

    /// Whether connections are given back between transactions. `false`: the relay never asks for
    /// or gives back a connection, and none of the other methods but `stream` are called.
    const POOLED: bool;

    /// Whether the source sees and may rewrite what goes upstream (`outgoing`, `incoming`,
    /// `injection`, `observe_completion`); pooled sources do, and a session-mode source may
    /// (`pool::prepared::plan_cache`).
    const REWRITES: bool = Self::POOLED;

    /// The stream of a connection.
    fn stream(conn: &mut Self::Conn) -> &mut BoxStream;

    /// A connection for the transaction starting now; `key`: the hook's choice, `None` for the
    /// session's own.
    fn acquire(&mut self, key: Option<Arc<UpstreamKey>>) -> Acquiring<Self::Conn>;

    /// The connection acquired last now serves the session (e.g. cancel requests go to it).
    fn attached(&mut self, _conn: &Self::Conn) {}

    /// The session gives the connection back: `reusable` when the transaction ended cleanly,
    /// otherwise its state is unknown and it must be closed.
    fn release(&mut self, conn: Self::Conn, reusable: bool);

    /// A message (whole frame) about to go upstream, as the hook decided it (the client's, or what
    /// the hook sends in its place): what the source needs to know to keep a session on its
    /// connection (see [`UpstreamSource::keeps`]).
    fn observe_client(&mut self, _tag: u8, _frame: &[u8]) {}

    /// The bytes (whole frames, as the hook decided them) about to be written to `conn`, to write
    /// instead (`None`: unchanged), e.g. statements renamed and prepared on this connection.
    fn outgoing(&mut self, _conn: &mut Self::Conn, _bytes: &[u8]) -> Option<bytes::BytesMut> {
        None
    }

    /// A ParseComplete, BindComplete, CloseComplete (`Backend::Other` of type `1`, `2`, `3`),
    /// ErrorResponse or ReadyForQuery from `conn`, decoded: whether the client must not see it (it
    /// answers a message `outgoing` added, or a cycle the source sends again).
    fn incoming(&mut self, _conn: &mut Self::Conn, _message: &crate::wire::Backend<'_>) -> bool {
        false
    }

    /// A ParameterStatus (`body` without type and length): a setting PostgreSQL reports changed.
    fn observe_parameter(&mut self, _body: &[u8]) {}

    /// A NoticeResponse (`body` without type and length): whether the client must not see it (it
    /// tells the source of session state created out of the statement text's sight).
    fn observe_notice(&mut self, _body: &[u8]) -> bool {
        false
    }

    /// The answer to `bytes` (whole frames, as the hook decided them) that the source gives
    /// itself while the session holds no connection (between transactions), for a batch that
    /// needs none (named Parses and a Sync: see `pool::prepared`). `None`: a connection is
    /// acquired and the bytes go upstream.
    fn answer_alone(&mut self, _bytes: &[u8]) -> Option<bytes::BytesMut> {
        None
    }

    /// Bytes (whole frames, as the hook decided them) to send upstream before anything the
    /// client sends next, once: a cycle whose answers `incoming` withheld, sent again.
    fn injection(&mut self) -> Option<bytes::BytesMut> {
        None
    }

    /// A CommandComplete tag PostgreSQL sent.
    fn observe_completion(&mut self, _tag: &str) {}

    /// A ReadyForQuery's transaction status (`I`, `T` or `E`).
    fn observe_ready(&mut self, _status: u8) {}

    /// Whether the session keeps its connection at the next boundary (pinned).
    fn keeps(&self) -> bool {
        false
    }

    /// How long a session may hold a connection inside a transaction with nothing in flight.
    fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        None
    }
}

/// Session mode: the session's one connection, for its whole life.
pub struct Dedicated;

impl UpstreamSource for Dedicated {
    type Conn = BoxStream;
    const POOLED: bool = false;

    fn stream(conn: &mut BoxStream) -> &mut BoxStream {
        conn
    }

    fn acquire(&mut self, _key: Option<Arc<UpstreamKey>>) -> Acquiring<BoxStream> {
        never_acquired()
    }

    fn release(&mut self, _conn: BoxStream, _reusable: bool) {}
}

/// `acquire` of a session-mode source, never called: its one connection is attached from the
/// start and never given back, so asking for another means it was lost.
pub fn never_acquired() -> Acquiring<BoxStream> {
    Box::pin(std::future::ready(Err(ClientError::new(
        "08006",
        "the session's connection to the database server was lost",
    ))))
}
