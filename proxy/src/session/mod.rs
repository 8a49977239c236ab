//! The relay of one authenticated session: client bytes to PostgreSQL and back, split into frames by
//! their headers only and forwarded in runs (one write per batch of whole frames), never decoded and
//! re-encoded. Its seams:
//! - one [`SessionHook`] per session sees both directions, each message with the number of the
//!   statement cycle it belongs to (the relay is the one place that counts them):
//!   - every client message that can run or feed a statement (`Q P B D E C S H F d c f`) goes to
//!     the hook, which may forward it, replace its bytes, or refuse it with an ErrorResponse;
//!   - every CommandComplete, ErrorResponse and ReadyForQuery coming back is shown to the hook
//!     (statement outcomes, row counts, transaction status) for the access log; before the relay
//!     writes frames that held a CommandComplete or ErrorResponse, it awaits the hook's [`Hold`]
//!     (the access log's records made durable), so a client never sees a completion whose record
//!     could still be lost; the hook may also withhold or replace a CommandComplete or
//!     NoticeResponse that answers a statement it added to the client's ([`ServerFrame`];
//!     `schema_change` does for its wrapping);
//!   - at each transaction boundary the hook is told
//!     ([`SessionHook::at_transaction_boundary`]);
//! - the upstream connection comes from an [`UpstreamSource`] ([`relay_through`]): in session mode
//!   ([`relay`]) the session's one connection; in transaction mode one acquired at the first message
//!   of a transaction, for the key the hook chooses ([`SessionHook::upstream_key`]), and given back
//!   when PostgreSQL reports the session idle with nothing in flight (see `upstream_source`);
//! - for a restricted role, every ErrorResponse and NoticeResponse coming back goes through the
//!   session's [`ErrorScrub`] (`RelaySettings::errors`), which may re-encode it with fields withheld
//!   (the only frames ever re-encoded; they are rare, and DataRow still passes as bytes);
//! - the four server messages the hooks and the scrub look at (CommandComplete, ErrorResponse,
//!   NoticeResponse, ReadyForQuery) are decoded once, as [`Backend`]; one that does not decode ends
//!   the session ([`SessionError::ServerMessage`]) rather than reach the client unchecked. Every
//!   other server message is never decoded.
//!
//! A refusal keeps PostgreSQL's own semantics: the refused message is replaced by what fails
//! upstream right away with the refusal's SQLSTATE and message and a unique marker in its error (see
//! `refusal_marker`); each refusal is logged at info (SQLSTATE and reason, in the session's span
//! with its id and role; the access log names the user of a session id) and counted by role and
//! SQLSTATE. PostgreSQL then does what it does for any error: aborts the transaction
//! block or the implicit transaction, skips extended-protocol messages until Sync, answers with
//! ReadyForQuery. The relay swaps that one marked ErrorResponse for the refusal (withholding the
//! ParseComplete and BindComplete of an extended-protocol refusal's failing pair), so answers stay in
//! order under pipelining and the transaction status the client sees is PostgreSQL's.
//!
//! Not for: startup, authentication or connecting upstream (see `server`), or policy decisions.

pub(crate) mod error_scrub;
pub(crate) mod offload;
pub(crate) mod parse_pool;
pub mod transaction;
pub(crate) mod upstream_source;

use crate::metrics as m;
use crate::net::tls::BoxStream;
use crate::session::error_scrub::ErrorScrub;
use crate::session::upstream_source::{Acquiring, Dedicated, UpstreamKey, UpstreamSource};
use crate::wire::client_error::ClientError;
use crate::wire::frame::{self, FrameError, POSTGRES_MAX_FRAME, Severity};
use crate::wire::refusal_marker;
use crate::wire::relay_buffer::{self, READ_CHUNK};
use crate::wire::{Backend, DecodeError, ErrorFields};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::info;

/// What the relay does with one client message.
pub enum Decision {
    /// Send the message upstream unchanged.
    Forward,
    /// Send these bytes (whole frames) upstream instead of the message.
    Replace(Bytes),
    /// Do not send it; answer the client with an ErrorResponse (severity ERROR) instead.
    Refuse(ClientError),
    /// The decision takes time and is made off the session's thread (e.g. parsing a statement the
    /// rewrite cache does not hold): until it completes, the relay reads and decides no further
    /// client message (their order is kept), while PostgreSQL's answers keep flowing to the client.
    Pending(PendingDecision),
}

impl From<ClientError> for Decision {
    fn from(error: ClientError) -> Self {
        Decision::Refuse(error)
    }
}

/// A decision that completes later (see [`Decision::Pending`]).
pub type PendingDecision = Pin<Box<dyn Future<Output = Decision> + Send>>;

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Forward => f.write_str("Forward"),
            Decision::Replace(bytes) => f.debug_tuple("Replace").field(&bytes.len()).finish(),
            Decision::Refuse(error) => f.debug_tuple("Refuse").field(error).finish(),
            Decision::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// A message from PostgreSQL that tells how a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent<'a> {
    /// CommandComplete with its tag, e.g. `SELECT 12` or `INSERT 0 1`.
    CommandComplete { tag: &'a str },
    /// ErrorResponse with its SQLSTATE.
    Error { sqlstate: &'a str },
    /// ReadyForQuery with the transaction status (`I`, `T` or `E`).
    Ready { status: u8 },
}

/// What the client must not see before it completes; an error ends the session with that FATAL.
pub type Hold = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>;

/// How the client gets a CommandComplete or NoticeResponse of PostgreSQL (see
/// [`SessionHook::server_frame`]).
#[derive(Debug)]
pub enum ServerFrame {
    /// As PostgreSQL sent it.
    Pass,
    /// Not at all (it answers a statement a hook added to the client's).
    Withhold,
    /// As this frame instead (whole, type byte and length included).
    Replace(BytesMut),
}

/// What one session does besides relaying: decides about client messages, sees how statements
/// end, may withhold answers to statements it added, and says what the client's next answers wait
/// for. One object per session (see `session_hook` for the compositions), called from the session's
/// task only, so its state needs no lock; what it decides off the session's thread it returns as
/// [`Decision::Pending`].
///
/// Cycles: the relay counts the statement cycles (a Query, FunctionCall or Sync and what comes
/// before it, each answered by exactly one ReadyForQuery) and hands their numbers, from 1, to the
/// hook, so that what a hook records about a message and the answers it later sees agree without
/// counting of their own: a client message gets the number of the cycle it belongs to, a server
/// frame or event the number of the cycle being answered (a ReadyForQuery: the one it ends).
pub trait SessionHook: Send {
    /// What becomes of a client message that can run or feed a statement
    /// (`Q P B D E C S H F d c f`). `frame` is the whole message, type byte and length included. A
    /// decision that takes time returns [`Decision::Pending`] (with its own copy of what it needs of
    /// `frame`); the relay decides no further message until it completes.
    fn on_client_message(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision;

    /// How the client gets this CommandComplete or NoticeResponse (decoded once by the relay):
    /// asked before [`SessionHook::on_server_event`], which a withheld
    /// CommandComplete does not reach, and a replaced one reaches with the replacement's tag. For
    /// answers to statements a hook added to the client's (the default: [`ServerFrame::Pass`]).
    fn server_frame(&mut self, _message: &Backend<'_>, _cycle: u64) -> ServerFrame {
        ServerFrame::Pass
    }

    /// How the client gets the ReadyForQuery ending cycle `cycle` (`status`: PostgreSQL's
    /// transaction status), asked before [`SessionHook::on_server_event`], which sees PostgreSQL's
    /// status whatever the client gets. For a hook that answers transaction control itself or adds
    /// cycles of its own (`end_user`: a `BEGIN` held back until the end user is known, see
    /// [`SessionHook::prelude`]). The default: [`ServerFrame::Pass`].
    fn ready_frame(&mut self, _status: u8, _cycle: u64) -> ServerFrame {
        ServerFrame::Pass
    }

    /// Messages (whole frames) to send upstream before the client message `tag` of cycle `cycle`
    /// is decided, e.g. a `BEGIN` held back until the transaction's first statement; asked for
    /// every message that goes to [`SessionHook::on_client_message`], which then gets the cycle
    /// numbers after those the prelude ends. The hook withholds their answers from the client.
    /// The default: none.
    fn prelude(&mut self, _tag: u8, _frame: &[u8], _cycle: u64) -> Option<Bytes> {
        None
    }

    /// A statement of cycle `cycle` ended (CommandComplete, ErrorResponse), or the cycle did
    /// (ReadyForQuery).
    fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64);

    /// Called once the frames of a read are observed and before they are written to the client, when
    /// they held a CommandComplete or ErrorResponse: what must complete first (e.g. the access log's
    /// records of those statements made durable). `None` (the default): nothing waits.
    fn hold(&mut self) -> Option<Hold> {
        None
    }

    /// The session is between transactions: PostgreSQL answered ReadyForQuery `I` and no cycle is
    /// outstanding, so nothing of the session's transaction state is left upstream but what
    /// the session set (its parameters, prepared statements). Called after
    /// [`SessionHook::on_server_event`] of that ReadyForQuery. This is the seam for choosing the
    /// upstream connection per transaction (pooling, issue 21): the one place where giving the
    /// connection back and taking another for the next transaction would not change what the
    /// client sees. The default does nothing.
    fn at_transaction_boundary(&mut self) {}

    /// Which upstream connections may serve the transaction the client starts now, asked when the
    /// session holds no connection and has something to send (transaction pooling: see
    /// `upstream_source`); the hook has seen the transaction's first message by then. `None` (the
    /// default): the session's own key, from its login.
    fn upstream_key(&mut self) -> Option<std::sync::Arc<UpstreamKey>> {
        None
    }

    /// The session is between transactions and its source keeps the connection (pinned by session
    /// state, see `pool::pinning`): the next transaction runs on it, whatever
    /// [`SessionHook::upstream_key`] would choose. Called after
    /// [`SessionHook::at_transaction_boundary`], possibly more than once. The default does nothing.
    fn connection_kept(&mut self) {}
}

impl ServerFrame {
    /// The frame to send instead of PostgreSQL's (`None`: PostgreSQL's; empty: nothing).
    fn replacement(self) -> Option<BytesMut> {
        match self {
            ServerFrame::Pass => None,
            ServerFrame::Withhold => Some(BytesMut::new()),
            ServerFrame::Replace(frame) => Some(frame),
        }
    }
}

/// Counts statements and errors in the metrics (a part of every session's hook).
#[derive(Debug)]
pub struct StatementMetrics {
    statements: metrics::Counter,
    errors: metrics::Counter,
}

impl Default for StatementMetrics {
    fn default() -> Self {
        Self {
            statements: metrics::counter!(m::STATEMENTS_TOTAL),
            errors: metrics::counter!(m::STATEMENT_ERRORS_TOTAL),
        }
    }
}

impl StatementMetrics {
    pub fn on_server_event(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::CommandComplete { .. } => self.statements.increment(1),
            ServerEvent::Error { .. } => self.errors.increment(1),
            ServerEvent::Ready { .. } => {}
        }
    }
}

/// Client message types that go through [`SessionHook::on_client_message`].
const POLICY_TAGS: &[u8] = b"QPBDECSHFdcf";

/// Limits and signals for a session.
#[derive(Clone)]
pub struct RelaySettings {
    /// Largest message a client may send.
    pub max_frame: usize,
    /// Becomes `true` when the proxy shuts down: idle sessions are then closed with 57P01.
    pub shutdown: watch::Receiver<bool>,
    /// The session's role, the label of its refusals in the metrics.
    pub role: String,
    /// For a restricted role: what its ErrorResponse and NoticeResponse frames may show
    /// (see `error_scrub`). `None`: PostgreSQL's errors pass as they are.
    pub errors: Option<std::sync::Arc<ErrorScrub>>,
}

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    ClientClosed,
    /// The client went away while PostgreSQL was still working for it (worth a cancel).
    ClientLeftBusy,
    ServerClosed,
    Shutdown,
}

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("client sent an invalid message: {0}")]
    ClientProtocol(FrameError),
    #[error("PostgreSQL sent an invalid message: {0}")]
    ServerProtocol(FrameError),
    #[error("PostgreSQL sent a malformed message: {0}")]
    ServerMessage(DecodeError),
    #[error("answer withheld: {}", .0.message())]
    Withheld(ClientError),
    #[error("no upstream connection: {}", .0.message())]
    NoUpstream(ClientError),
    #[error("idle in transaction for longer than {0:?}")]
    IdleInTransaction(std::time::Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A refusal waiting for its marked ErrorResponse to come back.
#[derive(Debug)]
struct Refusal {
    marker: String,
    error: BytesMut,
    /// Once this many ReadyForQuery messages have passed, the marked error can no longer come
    /// (PostgreSQL answered something else, e.g. "current transaction is aborted").
    expires_after_ready: u64,
    /// The cycle (count of Query/Sync/FunctionCall messages before it) the refused message was in.
    cycle: u64,
    /// Whether it was an extended-protocol message (after which PostgreSQL skips to Sync).
    extended: bool,
}

/// Extended-protocol messages: after an error in one of them PostgreSQL skips every message up
/// to the next Sync.
const EXTENDED_TAGS: &[u8] = b"PBDECH";

/// Outstanding cycles whose start time is kept for the latency histogram; a client pipelining
/// more without reading its results does not make the relay keep more (their latency is not
/// recorded).
const MAX_TIMED_CYCLES: usize = 1024;

/// What the relay knows about the statement cycles in flight; both directions run in one task,
/// so this is plain state, not shared behind locks.
#[derive(Default)]
struct Cycles {
    /// Query/Sync/FunctionCall messages sent (or queued) upstream: each gets exactly one
    /// ReadyForQuery.
    sent: u64,
    /// ReadyForQuery messages seen from PostgreSQL.
    ready_seen: u64,
    /// When each outstanding cycle (by number) was sent, for the latency histogram; at most
    /// [`MAX_TIMED_CYCLES`] of them.
    started: VecDeque<(u64, Instant)>,
    /// Refusals whose marked error has not come back yet.
    refusals: Vec<Refusal>,
    /// The last message sent (or queued) upstream does not end a cycle: an extended-protocol batch
    /// waits for its Sync, so the connection is not between transactions even when no cycle is
    /// outstanding.
    open: bool,
}

impl Cycles {
    /// Counts `count` more cycles sent upstream now.
    fn send(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let first = self.sent;
        self.sent += count;
        let room = MAX_TIMED_CYCLES.saturating_sub(self.started.len());
        let now = Instant::now();
        self.started
            .extend((first..first + count).take(room).map(|cycle| (cycle, now)));
    }

    /// Whether a statement is still outstanding.
    fn busy(&self) -> bool {
        self.ready_seen < self.sent
    }
}

/// Relays between `client` and `upstream` until one side ends. Errors in client messages are
/// reported to the client as FATAL 08P01.
///
/// One task serves both directions with a hand-written poll loop over the two unsplit streams
/// (no `split` locks, no `select!` re-arming): each wake-up polls the client→server direction, then
/// the server→client direction, each as far as it gets without waiting. Each direction writes
/// everything it read before it reads again, so a client that does not read its results stops
/// the relay from reading upstream.
pub async fn relay(
    client: BoxStream,
    upstream: BoxStream,
    initial_status: u8,
    hook: &mut dyn SessionHook,
    settings: RelaySettings,
) -> Result<SessionEnd, SessionError> {
    relay_through(
        client,
        Dedicated,
        Some(upstream),
        initial_status,
        hook,
        settings,
    )
    .await
}

/// [`relay`] with the upstream connection taken from `source` per transaction (see
/// `upstream_source`): `upstream` is the connection attached at the start (`None`: the first
/// message to send acquires one). Between transactions the connection goes back to the source; the
/// client's Terminate is not forwarded to a pooled connection; a session idle inside a transaction
/// longer than the source allows ends with FATAL 25P03.
pub async fn relay_through<S: UpstreamSource>(
    client: BoxStream,
    source: S,
    upstream: Option<S::Conn>,
    initial_status: u8,
    hook: &mut dyn SessionHook,
    settings: RelaySettings,
) -> Result<SessionEnd, SessionError> {
    let mut client = client;
    let mut link = Link {
        source,
        conn: upstream,
        acquiring: None,
        idle: None,
        answered: BytesMut::new(),
    };
    let mut shutdown = ShutdownSignal::new(settings.shutdown);
    let mut cycles = Cycles::default();
    let mut up = ClientToServer {
        buf: BytesMut::new(),
        queue: VecDeque::new(),
        terminated: false,
        rewritten: false,
        pending: None,
        max_frame: settings.max_frame,
        marker_prefix: format!("{}{:016x}_", refusal_marker::PREFIX, rand::random::<u64>()),
        role: settings.role,
        refusals_made: 0,
        bytes_sent: metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_CLIENT_TO_SERVER),
    };
    let mut down = ServerToClient {
        errors: settings.errors,
        buf: BytesMut::new(),
        streaming: 0,
        hold: None,
        out: BytesMut::new(),
        input: 0,
        status: initial_status,
        wake_up: false,
        bytes_sent: metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_SERVER_TO_CLIENT),
        latency: metrics::histogram!(m::STATEMENT_DURATION_SECONDS),
    };
    let ended = poll_fn(|cx| {
        let shutting_down = shutdown.poll(cx);
        let mut hooked = Hooked {
            hook: &mut *hook,
            cycles: &mut cycles,
        };
        if let Poll::Ready(end) = up.poll(cx, &mut client, &mut link, &mut hooked) {
            return Poll::Ready(end);
        }
        let ended = down.poll(cx, &mut link, &mut client, &mut hooked, shutting_down);
        if S::POOLED && ended.is_pending() {
            let idle = link.poll_idle_in_transaction(cx, hooked.cycles);
            return idle.map(Err);
        }
        ended
    })
    .await;
    let result = match ended {
        Ok(SessionEnd::ClientClosed) if cycles.busy() => Ok(SessionEnd::ClientLeftBusy),
        other => other,
    };
    if S::POOLED {
        let clean = matches!(result, Ok(SessionEnd::ClientClosed | SessionEnd::Shutdown));
        let reusable = clean && down.between_transactions(&cycles);
        link.release(reusable);
    }
    match &result {
        Ok(SessionEnd::Shutdown) => {
            let message = "terminating connection due to administrator command";
            frame::send_fatal(&mut client, "57P01", message).await;
        }
        Err(SessionError::ClientProtocol(err)) => {
            let message = format!("invalid frontend message: {err}");
            frame::send_fatal(&mut client, "08P01", &message).await;
        }
        Err(SessionError::Withheld(withheld) | SessionError::NoUpstream(withheld)) => {
            frame::send_fatal(&mut client, withheld.code(), withheld.message()).await;
        }
        Err(SessionError::IdleInTransaction(limit)) => {
            let message = format!(
                "terminating connection due to idle-in-transaction timeout: the proxy's pool lets \
                 a client hold a connection inside a transaction for at most {} s without a \
                 statement ([pool] idle_in_transaction_timeout_seconds)",
                limit.as_secs()
            );
            frame::send_fatal(&mut client, "25P03", &message).await;
        }
        _ => {}
    }
    let _ = client.shutdown().await;
    result
}

/// The proxy's shutdown signal as seen by one session: a wait registered once, polled again only
/// when the signal changed or the session is polled with another waker, so that the relay's
/// wake-ups do not pay for it.
struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
    /// Completes once the proxy shuts down (or the sender is gone); `None` once it has.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The waker the wait was last polled with.
    registered: Option<Waker>,
}

impl ShutdownSignal {
    fn new(receiver: watch::Receiver<bool>) -> Self {
        let mut waiting = receiver.clone();
        let already = *waiting.borrow_and_update();
        let wait = (!already).then(|| {
            Box::pin(async move {
                while waiting.changed().await.is_ok() {
                    if *waiting.borrow() {
                        return;
                    }
                }
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
        Self {
            receiver,
            wait,
            registered: None,
        }
    }

    /// Whether the proxy is shutting down.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(wait) = &mut self.wait else {
            return true;
        };
        let same_waker = self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if same_waker && matches!(self.receiver.has_changed(), Ok(false)) {
            return false;
        }
        self.receiver.mark_unchanged();
        if wait.as_mut().poll(cx).is_ready() {
            self.wait = None;
            return true;
        }
        self.registered = Some(cx.waker().clone());
        false
    }
}

/// Writes as much of `bytes` as `stream` takes now; `Ready(Ok(n))` with `n > 0`.
fn poll_write_some(
    cx: &mut Context<'_>,
    stream: &mut BoxStream,
    bytes: &[u8],
) -> Poll<Result<usize, SessionError>> {
    let written = ready!(Pin::new(stream).poll_write(cx, bytes))?;
    if written == 0 {
        return Poll::Ready(Err(
            std::io::Error::from(std::io::ErrorKind::WriteZero).into()
        ));
    }
    Poll::Ready(Ok(written))
}

/// Reads more of the frames arriving on `stream` into `buf` (see [`relay_buffer::poll_read_more`]),
/// with room reserved for what the partial frame at the front still lacks.
fn poll_read_frames(
    cx: &mut Context<'_>,
    stream: &mut BoxStream,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let missing = frame::missing(buf);
    relay_buffer::poll_read_more(cx, stream, buf, missing)
}

/// What the client→server direction still has to write, in order.
enum Chunk {
    /// This many bytes at the front of the read buffer, unchanged.
    Input(usize),
    /// This many bytes at the front of the read buffer are dropped (a refused or replaced message).
    Skip(usize),
    /// Bytes the relay made (a replacement or the failing message of a refusal).
    Made(BytesMut),
}

/// The session's hook and the cycle counter, as both directions use them in turn.
struct Hooked<'a> {
    hook: &'a mut dyn SessionHook,
    cycles: &'a mut Cycles,
}

/// The session's upstream connection and where it comes from (see `upstream_source`).
struct Link<S: UpstreamSource> {
    source: S,
    /// `None` between transactions of a pooled session.
    conn: Option<S::Conn>,
    /// The connection being acquired.
    acquiring: Option<Acquiring<S::Conn>>,
    /// The idle-in-transaction deadline and the cycle counts (sent, answered) it was set at.
    idle: Option<(Pin<Box<tokio::time::Sleep>>, CycleCounts)>,
    /// What the source answered itself for a batch that needed no connection (see
    /// `UpstreamSource::answer_alone`), still to reach the client: nothing further goes upstream
    /// before it has.
    answered: BytesMut,
}

/// Cycles sent and answered.
type CycleCounts = (u64, u64);

impl<S: UpstreamSource> Link<S> {
    /// Acquires a connection if the session holds none (pooled sources only).
    fn poll_attach(
        &mut self,
        cx: &mut Context<'_>,
        hook: &mut dyn SessionHook,
    ) -> Poll<Result<(), SessionError>> {
        if !S::POOLED || self.conn.is_some() {
            return Poll::Ready(Ok(()));
        }
        let source = &mut self.source;
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| source.acquire(hook.upstream_key()));
        let acquired = ready!(acquiring.as_mut().poll(cx));
        self.acquiring = None;
        let conn = acquired.map_err(SessionError::NoUpstream)?;
        self.source.attached(&conn);
        self.conn = Some(conn);
        Poll::Ready(Ok(()))
    }

    fn stream(&mut self) -> Option<&mut BoxStream> {
        self.conn.as_mut().map(S::stream)
    }

    /// Gives the connection back, if the session holds one.
    fn release(&mut self, reusable: bool) {
        self.idle = None;
        if let Some(conn) = self.conn.take() {
            self.source.release(conn, reusable);
        }
    }

    /// Ready when the session held its connection inside a transaction, with nothing in flight,
    /// for longer than the source allows.
    fn poll_idle_in_transaction(
        &mut self,
        cx: &mut Context<'_>,
        cycles: &Cycles,
    ) -> Poll<SessionError> {
        let Some(limit) = self.source.idle_in_transaction_timeout() else {
            return Poll::Pending;
        };
        if self.conn.is_none() || cycles.busy() {
            self.idle = None;
            return Poll::Pending;
        }
        let at = (cycles.sent, cycles.ready_seen);
        let (deadline, _) = match &mut self.idle {
            Some(idle) if idle.1 == at => idle,
            idle => idle.insert((Box::pin(tokio::time::sleep(limit)), at)),
        };
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(SessionError::IdleInTransaction(limit))
    }
}

struct ClientToServer {
    /// Empty while the session waits: see `relay_buffer`. A frame is buffered whole (the hook
    /// sees whole messages), so a client holds at most `max_frame` bytes here.
    buf: BytesMut,
    /// What the frames read so far became; written before the next read.
    queue: VecDeque<Chunk>,
    /// A Terminate was queued: the session ends once the queue is written.
    terminated: bool,
    /// The queue went through the source's `outgoing` (sources that rewrite only).
    rewritten: bool,
    /// The decision about the frame at the front of `buf` (after the queue), still being made: no
    /// further frame is read or decided until it completes.
    pending: Option<PendingDecision>,
    max_frame: usize,
    /// Random per session, so a client cannot forge the marker of a refusal.
    marker_prefix: String,
    /// The session's role, for the refusal metric.
    role: String,
    refusals_made: u64,
    /// Resolved once per session: the hot path only adds to it.
    bytes_sent: metrics::Counter,
}

impl ClientToServer {
    /// Writes what is queued, then reads and decides about the next frames, as far as it gets.
    fn poll<S: UpstreamSource>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut BoxStream,
        link: &mut Link<S>,
        hooked: &mut Hooked<'_>,
    ) -> Poll<Result<SessionEnd, SessionError>> {
        loop {
            if S::REWRITES
                && self.queue.is_empty()
                && let Some(again) = link.source.injection()
            {
                // A cycle the source sends again (see `UpstreamSource::injection`): its first
                // answers were withheld, so the relay counts it once.
                self.queue.push_back(Chunk::Made(again));
                self.rewritten = false;
            }
            if S::REWRITES && !self.rewritten {
                if self.queue.iter().any(|c| !matches!(c, Chunk::Skip(_))) {
                    if S::POOLED && link.conn.is_none() {
                        if !link.answered.is_empty() {
                            // The server→client direction delivers it first, then wakes us.
                            return Poll::Pending;
                        }
                        if self.answer_alone(link, hooked.cycles) {
                            continue;
                        }
                    }
                    ready!(link.poll_attach(cx, &mut *hooked.hook))?;
                }
                self.rewrite_queue(link);
            }
            while let Some(chunk) = self.queue.front_mut() {
                if !matches!(chunk, Chunk::Skip(_)) {
                    ready!(link.poll_attach(cx, &mut *hooked.hook))?;
                }
                let server = link.stream();
                match (chunk, server) {
                    (Chunk::Skip(len), _) => self.buf.advance(*len),
                    (_, None) => return Poll::Ready(Ok(SessionEnd::ServerClosed)),
                    (Chunk::Input(len), Some(server)) => {
                        let written = ready!(poll_write_some(cx, server, &self.buf[..*len]))?;
                        self.bytes_sent.increment(written as u64);
                        self.buf.advance(written);
                        *len -= written;
                        if *len > 0 {
                            continue;
                        }
                    }
                    (Chunk::Made(bytes), Some(server)) => {
                        let written = ready!(poll_write_some(cx, server, bytes))?;
                        self.bytes_sent.increment(written as u64);
                        bytes.advance(written);
                        if !bytes.is_empty() {
                            continue;
                        }
                    }
                }
                self.queue.pop_front();
            }
            if self.terminated {
                return Poll::Ready(Ok(SessionEnd::ClientClosed));
            }
            if let Some(pending) = &mut self.pending {
                let decision = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                self.process(hooked, link, Some(decision))?;
                continue;
            }
            if ready!(poll_read_frames(cx, client, &mut self.buf))? == 0 {
                return Poll::Ready(Ok(SessionEnd::ClientClosed));
            }
            self.process(hooked, link, None)?;
        }
    }

    /// Decides about the whole frames in `buf` and queues what goes upstream, up to a pending
    /// decision. `decided`: the completed decision about the first frame (which was pending).
    fn process<S: UpstreamSource>(
        &mut self,
        hooked: &mut Hooked<'_>,
        link: &mut Link<S>,
        mut decided: Option<Decision>,
    ) -> Result<(), SessionError> {
        let Hooked { hook, cycles } = hooked;
        self.rewritten = false;
        // `start..end` are frames forwarded unchanged in one write; `run_cycles` the cycles in them.
        let (mut start, mut end, mut run_cycles) = (0, 0, 0);
        while let Some(header) = frame::peek_header(&self.buf[end..], self.max_frame)
            .map_err(SessionError::ClientProtocol)?
        {
            if self.buf.len() - end < header.len || self.terminated {
                break;
            }
            let frame = &self.buf[end..end + header.len];
            let decision = match decided.take() {
                Some(decision) => decision,
                None if POLICY_TAGS.contains(&header.tag) => {
                    // The cycle this message belongs to: the next one to be sent.
                    let mut cycle = cycles.sent + run_cycles + 1;
                    if let Some(prelude) = hook.prelude(header.tag, frame, cycle) {
                        self.queue_input(cycles, end - start, run_cycles);
                        (start, run_cycles) = (end, 0);
                        let (count, last_ends) = count_cycles(&prelude);
                        cycles.send(count);
                        cycles.open = !last_ends;
                        self.queue
                            .push_back(Chunk::Made(BytesMut::from(&prelude[..])));
                        cycle = cycles.sent + 1;
                    }
                    let frame = &self.buf[end..end + header.len];
                    hook.on_client_message(header.tag, frame, cycle)
                }
                // A pooled connection outlives the client: its Terminate stays with the proxy.
                None if S::POOLED && header.tag == b'X' => {
                    self.terminated = true;
                    Decision::Replace(Bytes::new())
                }
                None => Decision::Forward,
            };
            if S::POOLED {
                // The source follows what goes upstream: the client's message, or what the hook
                // sends in its place (a refusal's failing message leaves no state behind).
                match &decision {
                    Decision::Forward => {
                        let frame = &self.buf[end..end + header.len];
                        link.source.observe_client(header.tag, frame);
                    }
                    Decision::Replace(bytes) => observe_frames(&mut link.source, bytes),
                    Decision::Refuse(_) | Decision::Pending(_) => {}
                }
            }
            let made = match decision {
                Decision::Forward => {
                    end += header.len;
                    let ends = ends_cycle(header.tag);
                    run_cycles += u64::from(ends);
                    cycles.open = !ends;
                    self.terminated |= header.tag == b'X';
                    continue;
                }
                Decision::Replace(bytes) => BytesMut::from(&bytes[..]),
                Decision::Refuse(error) => self.refusal(cycles, header.tag, &error, run_cycles),
                Decision::Pending(decision) => {
                    self.pending = Some(decision);
                    break;
                }
            };
            self.queue_input(cycles, end - start, run_cycles);
            self.queue.push_back(Chunk::Skip(header.len));
            end += header.len;
            (start, run_cycles) = (end, 0);
            if !made.is_empty() {
                let (count, last_ends) = count_cycles(&made);
                cycles.send(count);
                cycles.open = !last_ends;
                self.queue.push_back(Chunk::Made(made));
            }
        }
        self.queue_input(cycles, end - start, run_cycles);
        self.coalesce();
        Ok(())
    }

    /// Lets the source answer the queue itself when it needs no connection (see
    /// `UpstreamSource::answer_alone`): whether it did (the queue is consumed and the answer waits
    /// in `link.answered`). Not while a refusal waits for its marked error, which must come from
    /// PostgreSQL.
    fn answer_alone<S: UpstreamSource>(&mut self, link: &mut Link<S>, cycles: &Cycles) -> bool {
        if !cycles.refusals.is_empty() || self.queue.len() != 1 {
            return false;
        }
        let answer = match &self.queue[0] {
            Chunk::Input(len) => link.source.answer_alone(&self.buf[..*len]),
            Chunk::Made(bytes) => link.source.answer_alone(bytes),
            Chunk::Skip(_) => None,
        };
        let Some(answer) = answer else {
            return false;
        };
        if let Some(Chunk::Input(len)) = self.queue.pop_front() {
            self.buf.advance(len);
        }
        link.answered = answer;
        true
    }

    /// Passes each chunk of the queue (whole frames) through the source's `outgoing`, once, with the
    /// connection it is about to be written to (sources that rewrite only).
    fn rewrite_queue<S: UpstreamSource>(&mut self, link: &mut Link<S>) {
        self.rewritten = true;
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        let mut consumed = 0;
        let mut queue = VecDeque::with_capacity(self.queue.len());
        for chunk in self.queue.drain(..) {
            match chunk {
                Chunk::Input(len) => {
                    let input = &self.buf[consumed..consumed + len];
                    consumed += len;
                    match link.source.outgoing(conn, input) {
                        Some(made) => {
                            queue.push_back(Chunk::Skip(len));
                            queue.push_back(Chunk::Made(made));
                        }
                        None => queue.push_back(Chunk::Input(len)),
                    }
                }
                Chunk::Skip(len) => {
                    consumed += len;
                    queue.push_back(Chunk::Skip(len));
                }
                Chunk::Made(bytes) => match link.source.outgoing(conn, &bytes) {
                    Some(made) => queue.push_back(Chunk::Made(made)),
                    None => queue.push_back(Chunk::Made(bytes)),
                },
            }
        }
        self.queue = queue;
    }

    /// Joins what the frames read so far became (frames passed through around a replaced or
    /// refused one) into one piece, so that it goes upstream in one write: PostgreSQL then reads
    /// and wakes once per batch, not once per piece. Called on a fresh queue (`poll` writes the
    /// queue out before it reads again).
    fn coalesce(&mut self) {
        if self.queue.len() < 2 {
            return;
        }
        let mut joined = BytesMut::new();
        let mut consumed = 0;
        for chunk in self.queue.drain(..) {
            match chunk {
                Chunk::Input(len) => {
                    joined.extend_from_slice(&self.buf[consumed..consumed + len]);
                    consumed += len;
                }
                Chunk::Skip(len) => consumed += len,
                Chunk::Made(bytes) => joined.extend_from_slice(&bytes),
            }
        }
        self.buf.advance(consumed);
        if !joined.is_empty() {
            self.queue.push_back(Chunk::Made(joined));
        }
    }

    fn queue_input(&mut self, cycles: &mut Cycles, len: usize, run_cycles: u64) {
        if len > 0 {
            cycles.send(run_cycles);
            self.queue.push_back(Chunk::Input(len));
        }
    }

    /// Registers a refusal and returns the message that makes PostgreSQL fail with its marker.
    /// `unsent_cycles` are the cycles of the messages before it that are not queued yet.
    /// A refused extended-protocol message in a cycle that already holds one is dropped: PostgreSQL
    /// skips everything after the first error up to Sync, so the client sees the same answers, and
    /// a pipeline that never syncs cannot pile up refusals.
    fn refusal(
        &mut self,
        cycles: &mut Cycles,
        tag: u8,
        error: &ClientError,
        unsent_cycles: u64,
    ) -> BytesMut {
        let (code, message) = (error.code(), error.message());
        info!(sqlstate = code, reason = message, "statement refused");
        metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => m::REASON_STATEMENT,
            m::LABEL_ROLE => self.role.clone(), m::LABEL_SQLSTATE => code.to_owned())
        .increment(1);
        let cycle = cycles.sent + unsent_cycles;
        let extended = EXTENDED_TAGS.contains(&tag);
        if extended
            && cycles
                .refusals
                .iter()
                .any(|r| r.extended && r.cycle == cycle)
        {
            return BytesMut::new();
        }
        self.refusals_made += 1;
        let marker = format!("{}{}", self.marker_prefix, self.refusals_made);
        let failing = refusal_marker::failing_message(tag, &marker, code, message);
        // Registered before the failing message is sent, so it is there when the answer comes.
        cycles.refusals.push(Refusal {
            marker,
            error: error.frame(Severity::Error),
            // The marked error comes before the ReadyForQuery of the current or the next cycle.
            expires_after_ready: cycle + 2,
            cycle,
            extended,
        });
        failing
    }
}

/// Shows the source each frame of `bytes` (whole frames a hook decided to send).
fn observe_frames<S: UpstreamSource>(source: &mut S, bytes: &[u8]) {
    let mut rest = bytes;
    while let Ok(Some(header)) = frame::peek_header(rest, POSTGRES_MAX_FRAME) {
        let Some(frame) = rest.get(..header.len) else {
            break;
        };
        source.observe_client(header.tag, frame);
        rest = &rest[header.len..];
    }
}

/// Messages that PostgreSQL answers with exactly one ReadyForQuery.
fn ends_cycle(tag: u8) -> bool {
    matches!(tag, b'Q' | b'S' | b'F')
}

/// The cycles the frames in `bytes` end, and whether the last of them ends one.
fn count_cycles(bytes: &[u8]) -> (u64, bool) {
    let mut rest = bytes;
    let (mut cycles, mut last_ends) = (0, false);
    while let Ok(Some(header)) = frame::peek_header(rest, POSTGRES_MAX_FRAME) {
        last_ends = ends_cycle(header.tag);
        cycles += u64::from(last_ends);
        rest = rest.get(header.len..).unwrap_or_default();
    }
    (cycles, last_ends)
}

/// Server message types that [`ServerToClient::process`] decodes (as [`Backend`], once) for the
/// hooks and the error scrub: these are always buffered whole; any other frame passes as bytes, and
/// one larger than a read is streamed through.
const INSPECTED_SERVER_TAGS: &[u8] = b"CEZN";

struct ServerToClient {
    /// What a restricted role's errors and notices may show; `None` for an unrestricted one.
    errors: Option<std::sync::Arc<ErrorScrub>>,
    /// Empty while the session waits: see `relay_buffer`.
    buf: BytesMut,
    /// Bytes of a large frame still to pass through unchanged (see `stream_large_frame`).
    streaming: usize,
    /// What must complete before the frames read so far are written (see [`SessionHook::hold`]).
    hold: Option<Hold>,
    /// Frames to write first (those around a swapped error), then `input` bytes at the front of `buf`.
    out: BytesMut,
    input: usize,
    status: u8,
    /// The source withheld an error to send its cycle again: the client→server direction has
    /// something to write.
    wake_up: bool,
    bytes_sent: metrics::Counter,
    latency: metrics::Histogram,
}

impl ServerToClient {
    /// Waits for the hold, writes what is pending, then reads and observes the next frames, as far
    /// as it gets.
    fn poll<S: UpstreamSource>(
        &mut self,
        cx: &mut Context<'_>,
        link: &mut Link<S>,
        client: &mut BoxStream,
        hooked: &mut Hooked<'_>,
        shutting_down: bool,
    ) -> Poll<Result<SessionEnd, SessionError>> {
        loop {
            if let Some(hold) = &mut self.hold {
                ready!(hold.as_mut().poll(cx)).map_err(SessionError::Withheld)?;
                self.hold = None;
            }
            while !self.out.is_empty() {
                let written = ready!(poll_write_some(cx, client, &self.out))?;
                self.bytes_sent.increment(written as u64);
                self.out.advance(written);
            }
            while self.input > 0 {
                let written = ready!(poll_write_some(cx, client, &self.buf[..self.input]))?;
                self.bytes_sent.increment(written as u64);
                self.buf.advance(written);
                self.input -= written;
            }
            // No statement outstanding and no transaction open.
            if shutting_down && self.status == b'I' && !hooked.cycles.busy() {
                return Poll::Ready(Ok(SessionEnd::Shutdown));
            }
            if S::POOLED && !link.answered.is_empty() {
                // The source's own answer (see `UpstreamSource::answer_alone`), observed as if
                // PostgreSQL sent it; the client→server direction waits for it.
                let start = self.buf.len();
                self.buf
                    .extend_from_slice(&std::mem::take(&mut link.answered));
                self.process(hooked, link, start)?;
                cx.waker().wake_by_ref();
                continue;
            }
            // Between transactions a pooled session holds no connection: nothing to read until
            // the client starts the next one.
            let Some(server) = link.stream() else {
                return Poll::Pending;
            };
            if ready!(poll_read_frames(cx, server, &mut self.buf))? == 0 {
                return Poll::Ready(Ok(SessionEnd::ServerClosed));
            }
            let mut start = 0;
            if self.streaming > 0 {
                start = self.streaming.min(self.buf.len());
                self.streaming -= start;
                if start == self.buf.len() {
                    self.input = start;
                    continue;
                }
            }
            self.process(hooked, link, start)?;
            if std::mem::take(&mut self.wake_up) {
                cx.waker().wake_by_ref();
            }
            self.stream_large_frame()?;
            if S::POOLED && self.between_transactions(hooked.cycles) {
                if link.source.keeps() {
                    hooked.hook.connection_kept();
                } else {
                    link.release(true);
                }
            }
        }
    }

    /// Whether the upstream session is between transactions: PostgreSQL said idle, nothing is in
    /// flight either way, and no part of a frame is left unread.
    fn between_transactions(&self, cycles: &Cycles) -> bool {
        self.status == b'I'
            && !cycles.busy()
            && !cycles.open
            && self.streaming == 0
            && self.buf.len() == self.input
    }

    /// Starts passing a large frame through unchanged when the partial frame left after the
    /// pending bytes is larger than a read and of a type the relay does not look into (a huge
    /// DataRow or CopyData): what has come of it is sent now, and the bytes still to come are sent
    /// as they arrive (`streaming`), so a row of any size costs the session at most one read of
    /// memory. Frames the relay inspects are buffered whole.
    fn stream_large_frame(&mut self) -> Result<(), SessionError> {
        let Some(header) = frame::peek_header(&self.buf[self.input..], POSTGRES_MAX_FRAME)
            .map_err(SessionError::ServerProtocol)?
        else {
            return Ok(());
        };
        if header.len <= READ_CHUNK || INSPECTED_SERVER_TAGS.contains(&header.tag) {
            return Ok(());
        }
        let through = self.buf.len() - self.input;
        self.input = self.buf.len();
        self.streaming = header.len - through;
        Ok(())
    }

    /// Observes the whole frames in `buf` from `start` (the bytes before it pass through
    /// unchanged), swaps marked errors for their refusals, and sets what is to be written.
    fn process<S: UpstreamSource>(
        &mut self,
        hooked: &mut Hooked<'_>,
        link: &mut Link<S>,
        start: usize,
    ) -> Result<(), SessionError> {
        let Hooked { hook, cycles } = hooked;
        // `run` bytes at the front of `buf` go out unchanged; `out` collects what comes before a
        // swapped error.
        let mut out = BytesMut::new();
        let mut run = start;
        let mut completions = false;
        while let Some(header) = frame::peek_header(&self.buf[run..], POSTGRES_MAX_FRAME)
            .map_err(SessionError::ServerProtocol)?
        {
            if self.buf.len() - run < header.len {
                break;
            }
            if header.tag == b'1' && cycles.refusals.iter().any(|r| r.extended) {
                let markers = cycles.refusals.iter().map(|r| r.marker.as_str());
                match refusal_marker::answer_before_error(&self.buf[run..], markers) {
                    // Undecided until more comes: the frames from here wait in `buf`.
                    None => break,
                    Some(0) => {}
                    Some(withheld) => {
                        out.extend_from_slice(&self.buf[..run]);
                        self.buf.advance(run + withheld);
                        run = 0;
                        continue;
                    }
                }
            }
            let whole = &self.buf[run..run + header.len];
            let to_source = S::REWRITES && matches!(header.tag, b'1' | b'2' | b'3' | b'E' | b'Z');
            // Decoded once, and only the messages the hooks or the source look at; the rest pass
            // as bytes.
            let message = match to_source || INSPECTED_SERVER_TAGS.contains(&header.tag) {
                true => Some(Backend::decode(whole).map_err(SessionError::ServerMessage)?),
                false => None,
            };
            if to_source
                && let Some(message) = &message
                && let Some(conn) = link.conn.as_mut()
                && link.source.incoming(conn, message)
            {
                // It answers a message the source added (see `UpstreamSource::outgoing`), or a
                // cycle it sends again: neither the client nor the hook sees it.
                self.wake_up |= header.tag == b'E';
                out.extend_from_slice(&self.buf[..run]);
                self.buf.advance(run + header.len);
                run = 0;
                continue;
            }
            let body = frame::body(whole);
            completions |= matches!(header.tag, b'C' | b'E');
            // The cycle being answered.
            let cycle = cycles.ready_seen + 1;
            // A frame to send instead of this one: a refusal for its marked error, or an error or
            // notice with what the role may not see withheld.
            let mut replacement = None;
            match message {
                Some(ref message @ Backend::CommandComplete { tag }) => {
                    let shown = hook.server_frame(message, cycle);
                    let seen = match &shown {
                        ServerFrame::Pass => Some(tag),
                        ServerFrame::Withhold => None,
                        ServerFrame::Replace(frame) => match Backend::decode(frame) {
                            Ok(Backend::CommandComplete { tag }) => Some(tag),
                            _ => Some(""),
                        },
                    };
                    if let Some(tag) = seen {
                        if S::REWRITES {
                            link.source.observe_completion(tag);
                        }
                        hook.on_server_event(ServerEvent::CommandComplete { tag }, cycle);
                    }
                    replacement = shown.replacement();
                }
                Some(Backend::ErrorResponse(fields)) => {
                    if let Some(refusal) = take_refusal(&mut cycles.refusals, &fields) {
                        let sqlstate = match Backend::decode(&refusal) {
                            Ok(Backend::ErrorResponse(ours)) => ours.sqlstate(),
                            _ => None,
                        };
                        let sqlstate = sqlstate.unwrap_or_default();
                        hook.on_server_event(ServerEvent::Error { sqlstate }, cycle);
                        replacement = Some(refusal);
                    } else {
                        let sqlstate = fields.sqlstate().unwrap_or_default();
                        hook.on_server_event(ServerEvent::Error { sqlstate }, cycle);
                        replacement = self.errors.as_ref().and_then(|e| e.scrub(b'E', &fields));
                    }
                }
                None if (S::POOLED || S::REWRITES) && header.tag == b'S' => {
                    link.source.observe_parameter(body)
                }
                Some(Backend::NoticeResponse(_))
                    if S::POOLED && link.source.observe_notice(body) =>
                {
                    replacement = Some(BytesMut::new());
                }
                Some(ref message @ Backend::NoticeResponse(ref fields)) => {
                    replacement = match hook.server_frame(message, cycle) {
                        ServerFrame::Pass => {
                            self.errors.as_ref().and_then(|e| e.scrub(b'N', fields))
                        }
                        shown => shown.replacement(),
                    }
                }
                Some(Backend::ReadyForQuery { status }) => {
                    self.status = status;
                    replacement = hook.ready_frame(status, cycle).replacement();
                    hook.on_server_event(ServerEvent::Ready { status }, cycle);
                    if S::POOLED {
                        link.source.observe_ready(status);
                    }
                    self.record_latency(cycles);
                    cycles.ready_seen += 1;
                    if status == b'I' && !cycles.busy() {
                        hook.at_transaction_boundary();
                    }
                    let ready_seen = cycles.ready_seen;
                    if !cycles.refusals.is_empty() {
                        cycles
                            .refusals
                            .retain(|r| r.expires_after_ready > ready_seen);
                    }
                }
                _ => {}
            }
            if let Some(replacement) = replacement {
                out.extend_from_slice(&self.buf[..run]);
                out.extend_from_slice(&replacement);
                self.buf.advance(run + header.len);
                run = 0;
                continue;
            }
            run += header.len;
        }
        if completions {
            self.hold = hook.hold();
        }
        if out.is_empty() {
            self.input = run;
        } else {
            out.extend_from_slice(&self.buf[..run]);
            self.buf.advance(run);
            self.out = out;
            self.input = 0;
        }
        Ok(())
    }

    fn record_latency(&self, cycles: &mut Cycles) {
        while let Some(&(cycle, at)) = cycles.started.front() {
            if cycle > cycles.ready_seen {
                break;
            }
            cycles.started.pop_front();
            if cycle == cycles.ready_seen {
                self.latency.record(at.elapsed().as_secs_f64());
            }
        }
    }
}

/// The refusal whose marker this ErrorResponse carries, if any.
fn take_refusal(refusals: &mut Vec<Refusal>, fields: &ErrorFields<'_>) -> Option<BytesMut> {
    if refusals.is_empty() {
        return None;
    }
    let found = refusals
        .iter()
        .position(|r| refusal_marker::carries(fields, &r.marker))?;
    Some(refusals.swap_remove(found).error)
}

#[cfg(test)]
mod tests {
    //! The relay on in-memory streams: a test plays the client on one end and PostgreSQL on the
    //! other, with a hook that records what the relay hands it.
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::oneshot;

    /// What the hook saw, as text: `client Q 1` (tag and cycle), `server SELECT 1 @1`, `boundary`.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// Refuses a Query that mentions `forbidden`; records everything; the first hold waits for
    /// `release` when there is one.
    struct TestHook {
        seen: Seen,
        release: Option<oneshot::Receiver<()>>,
    }

    impl SessionHook for TestHook {
        fn on_client_message(&mut self, tag: u8, frame: &[u8], cycle: u64) -> Decision {
            self.seen
                .lock()
                .unwrap()
                .push(format!("client {} {cycle}", tag as char));
            if matches!(tag, b'Q' | b'P') && frame.windows(9).any(|w| w == b"forbidden") {
                return Decision::Refuse(ClientError::new("42501", "refused by the test hook"));
            }
            Decision::Forward
        }

        fn on_server_event(&mut self, event: ServerEvent<'_>, cycle: u64) {
            let text = match event {
                ServerEvent::CommandComplete { tag } => tag.to_owned(),
                ServerEvent::Error { sqlstate } => format!("error {sqlstate}"),
                ServerEvent::Ready { status } => format!("ready {}", status as char),
            };
            self.seen
                .lock()
                .unwrap()
                .push(format!("server {text} @{cycle}"));
        }

        fn hold(&mut self) -> Option<Hold> {
            let release = self.release.take()?;
            Some(Box::pin(async move {
                release
                    .await
                    .map_err(|_| ClientError::new("58030", "released never"))
            }))
        }

        fn at_transaction_boundary(&mut self) {
            self.seen.lock().unwrap().push("boundary".into());
        }
    }

    /// A session relayed between the returned client end and PostgreSQL end.
    struct Session {
        client: DuplexStream,
        server: DuplexStream,
        seen: Seen,
        relay: tokio::task::JoinHandle<Result<SessionEnd, SessionError>>,
        _shutdown: watch::Sender<bool>,
    }

    fn session(release: Option<oneshot::Receiver<()>>) -> Session {
        let (client, client_side) = tokio::io::duplex(64 * 1024);
        let (server_side, server) = tokio::io::duplex(64 * 1024);
        let (stop, shutdown) = watch::channel(false);
        let seen = Seen::default();
        let mut hook = TestHook {
            seen: seen.clone(),
            release,
        };
        let settings = RelaySettings {
            max_frame: 1 << 20,
            shutdown,
            role: "test".into(),
            errors: None,
        };
        let relay = tokio::spawn(async move {
            let (client, server): (BoxStream, BoxStream) =
                (Box::new(client_side), Box::new(server_side));
            relay(client, server, b'I', &mut hook, settings).await
        });
        Session {
            client,
            server,
            seen,
            relay,
            _shutdown: stop,
        }
    }

    /// A message: tag, length, body.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The fields of an ErrorResponse body the client got (it must be well formed).
    fn error_fields(body: &[u8]) -> ErrorFields<'_> {
        match Backend::from_body(b'E', body) {
            Ok(Backend::ErrorResponse(fields)) => fields,
            other => panic!("not a well-formed ErrorResponse: {other:?}"),
        }
    }

    fn error_sqlstate(body: &[u8]) -> Option<&str> {
        error_fields(body).sqlstate()
    }

    fn text(tag: u8, text: &str) -> Vec<u8> {
        message(tag, format!("{text}\0").as_bytes())
    }

    /// The next `count` messages on `stream`, as (tag, body).
    async fn read(stream: &mut DuplexStream, count: usize) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        for _ in 0..count {
            let mut header = [0; 5];
            stream.read_exact(&mut header).await.expect("a header");
            let len = i32::from_be_bytes(header[1..].try_into().unwrap()) as usize - 4;
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await.expect("a body");
            messages.push((header[0], body));
        }
        messages
    }

    fn seen(session: &Session) -> Vec<String> {
        session.seen.lock().unwrap().clone()
    }

    async fn close(session: Session) -> Result<SessionEnd, SessionError> {
        drop(session.client);
        session.relay.await.expect("the relay does not panic")
    }

    #[tokio::test]
    async fn a_refusal_reaches_the_client_in_place_of_its_marked_error() {
        let mut s = session(None);
        s.client
            .write_all(&text(b'Q', "SELECT 'forbidden'"))
            .await
            .unwrap();
        let sent = read(&mut s.server, 1).await;
        let (tag, body) = &sent[0];
        assert_eq!(*tag, b'Q');
        let sent = String::from_utf8_lossy(body);
        assert!(
            !sent.contains("forbidden"),
            "the refused text went upstream: {sent}"
        );
        let at = sent.find(refusal_marker::PREFIX).expect("a marker");
        let marker: String = sent[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // PostgreSQL fails the marked statement; the client gets the refusal instead.
        let mut answer = frame::error_response(Severity::Error, "P0001", &marker).to_vec();
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answer).await.unwrap();
        let got = read(&mut s.client, 2).await;
        assert_eq!(got[0].0, b'E');
        assert_eq!(error_sqlstate(&got[0].1), Some("42501"));
        let fields: Vec<(u8, Vec<u8>)> = error_fields(&got[0].1)
            .iter()
            .map(|(field, value)| (field, value.to_vec()))
            .collect();
        assert!(
            fields.contains(&(b'M', b"refused by the test hook".to_vec())),
            "{fields:?}"
        );
        assert!(
            !String::from_utf8_lossy(&got[0].1).contains(refusal_marker::PREFIX),
            "the marker reached the client"
        );
        assert_eq!(got[1], (b'Z', b"I".to_vec()));
        assert_eq!(
            seen(&s),
            [
                "client Q 1",
                "server error 42501 @1",
                "server ready I @1",
                "boundary"
            ]
        );
        assert!(matches!(close(s).await, Ok(SessionEnd::ClientClosed)));
    }

    #[tokio::test]
    async fn a_malformed_answer_of_postgresql_ends_the_session_and_never_reaches_the_client() {
        let mut s = session(None);
        s.client.write_all(&text(b'Q', "SELECT 1")).await.unwrap();
        read(&mut s.server, 1).await;
        // A CommandComplete whose tag lacks its terminator, then what would end the cycle.
        let mut answer = message(b'C', b"SELECT 1");
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answer).await.unwrap();
        let ended = s.relay.await.expect("the relay does not panic");
        let Err(error @ SessionError::ServerMessage(_)) = ended else {
            panic!("{ended:?}");
        };
        assert_eq!(
            error.to_string(),
            "PostgreSQL sent a malformed message: 'C' message is malformed"
        );
        let mut got = Vec::new();
        s.client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "the client got {got:?}");
        assert_eq!(s.seen.lock().unwrap().clone(), ["client Q 1"]);
    }

    /// The marker in a message sent upstream.
    fn marker_in(sent: &[u8]) -> String {
        let sent = String::from_utf8_lossy(sent);
        let at = sent.find(refusal_marker::PREFIX).expect("a marker");
        sent[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    }

    #[tokio::test]
    async fn an_extended_refusal_runs_upstream_as_a_raise_and_its_parse_and_bind_answers_are_withheld()
     {
        let mut s = session(None);
        let mut pipeline = message(b'P', b"s1\0SELECT 1\0\0\0");
        pipeline.extend(message(b'P', b"s2\0SELECT 'forbidden'\0\0\0"));
        pipeline.extend(message(b'D', b"Ss2\0"));
        pipeline.extend(message(b'S', b""));
        s.client.write_all(&pipeline).await.unwrap();
        // Upstream: the first Parse, then the refusal as Parse + Bind + Execute of a DO block that
        // raises the refusal's SQLSTATE, then the client's Describe and Sync.
        let sent = read(&mut s.server, 6).await;
        let tags: Vec<u8> = sent.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags, b"PPBEDS");
        let raise = String::from_utf8_lossy(&sent[1].1).into_owned();
        assert!(raise.starts_with("\0DO $maschera_refused_"), "{raise}");
        assert!(raise.contains("ERRCODE = '42501'"), "{raise}");
        assert!(!raise.contains("forbidden"), "{raise}");
        let marker = marker_in(&sent[1].1);
        // PostgreSQL answers the first Parse, then ParseComplete and BindComplete of the failing
        // pair (in a write of their own, so the relay must wait to tell), then the marked error.
        let mut answer = message(b'1', b"");
        answer.extend(message(b'1', b""));
        answer.extend(message(b'2', b""));
        s.server.write_all(&answer).await.unwrap();
        let got = read(&mut s.client, 1).await;
        assert_eq!(got[0].0, b'1', "the first Parse's own answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut answer = frame::error_response(Severity::Error, "P0001", &marker).to_vec();
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answer).await.unwrap();
        let got = read(&mut s.client, 2).await;
        assert_eq!(got[0].0, b'E', "the client got {:?}", got[0]);
        assert_eq!(error_sqlstate(&got[0].1), Some("42501"));
        assert_eq!(got[1], (b'Z', b"I".to_vec()));
        // A ParseComplete not followed by a marked error passes as it is.
        s.client
            .write_all(&[message(b'P', b"\0SELECT 2\0\0\0"), message(b'S', b"")].concat())
            .await
            .unwrap();
        read(&mut s.server, 2).await;
        let mut answer = message(b'1', b"");
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answer).await.unwrap();
        let got = read(&mut s.client, 2).await;
        assert_eq!((got[0].0, got[1].0), (b'1', b'Z'));
        assert!(matches!(close(s).await, Ok(SessionEnd::ClientClosed)));
    }

    #[tokio::test]
    async fn pipelined_cycles_are_numbered_once_for_both_directions() {
        let mut s = session(None);
        let mut pipeline = text(b'Q', "SELECT 1");
        pipeline.extend(text(b'Q', "SELECT 2"));
        pipeline.extend(message(b'P', b"\0SELECT 3\0\0\0"));
        pipeline.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        pipeline.extend(message(b'E', b"\0\0\0\0\0"));
        pipeline.extend(message(b'S', b""));
        s.client.write_all(&pipeline).await.unwrap();
        // Forwarded unchanged, all of it.
        let mut upstream = vec![0; pipeline.len()];
        s.server.read_exact(&mut upstream).await.unwrap();
        assert_eq!(upstream, pipeline);
        let mut answers = Vec::new();
        for tag in ["SELECT 1", "SELECT 1"] {
            answers.extend(text(b'C', tag));
            answers.extend_from_slice(&frame::ready_for_query(b'I'));
        }
        answers.extend(message(b'1', b""));
        answers.extend(message(b'2', b""));
        answers.extend(text(b'C', "SELECT 3"));
        answers.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answers).await.unwrap();
        let mut got = vec![0; answers.len()];
        s.client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answers);
        assert_eq!(
            seen(&s),
            [
                "client Q 1",
                "client Q 2",
                "client P 3",
                "client B 3",
                "client E 3",
                "client S 3",
                "server SELECT 1 @1",
                "server ready I @1",
                "server SELECT 1 @2",
                "server ready I @2",
                "server SELECT 3 @3",
                "server ready I @3",
                // Only once nothing is outstanding.
                "boundary",
            ]
        );
        assert!(matches!(close(s).await, Ok(SessionEnd::ClientClosed)));
    }

    /// The client sends `SELECT 1` and PostgreSQL answers it; returns the answer's bytes.
    async fn select_one(s: &mut Session) -> Vec<u8> {
        s.client.write_all(&text(b'Q', "SELECT 1")).await.unwrap();
        read(&mut s.server, 1).await;
        let mut answers = text(b'C', "SELECT 1");
        answers.extend_from_slice(&frame::ready_for_query(b'I'));
        s.server.write_all(&answers).await.unwrap();
        answers
    }

    #[tokio::test]
    async fn a_hold_delays_the_command_complete_until_it_completes() {
        let (release, held) = oneshot::channel();
        let mut s = session(Some(held));
        let answers = select_one(&mut s).await;
        let mut first = [0; 1];
        let early = tokio::time::timeout(Duration::from_millis(200), s.client.read(&mut first));
        assert!(
            early.await.is_err(),
            "the client got an answer before the hold completed"
        );
        // The hook already saw the completion; the client gets it once the hold completes.
        assert_eq!(seen(&s)[1], "server SELECT 1 @1");
        release.send(()).unwrap();
        let mut got = vec![0; answers.len()];
        s.client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answers);
        assert!(matches!(close(s).await, Ok(SessionEnd::ClientClosed)));
    }

    #[tokio::test]
    async fn a_hold_that_fails_withholds_the_answer_and_ends_the_session_with_its_fatal() {
        let (release, held) = oneshot::channel::<()>();
        let mut s = session(Some(held));
        select_one(&mut s).await;
        drop(release);
        let got = read(&mut s.client, 1).await;
        assert_eq!(got[0].0, b'E');
        assert_eq!(error_sqlstate(&got[0].1), Some("58030"));
        let rest = {
            let mut rest = Vec::new();
            s.client.read_to_end(&mut rest).await.unwrap();
            rest
        };
        assert!(rest.is_empty(), "nothing after the FATAL: {rest:?}");
        let ended = s.relay.await.expect("no panic");
        assert!(matches!(ended, Err(SessionError::Withheld(_))), "{ended:?}");
    }

    /// Hands out the server ends of `conns` in order and records what the relay does with them.
    struct TestSource {
        conns: Arc<Mutex<VecDeque<DuplexStream>>>,
        seen: Seen,
        idle_limit: Option<Duration>,
    }

    impl UpstreamSource for TestSource {
        type Conn = (usize, BoxStream);
        const POOLED: bool = true;

        fn stream(conn: &mut Self::Conn) -> &mut BoxStream {
            &mut conn.1
        }

        fn acquire(&mut self, _key: Option<Arc<UpstreamKey>>) -> Acquiring<Self::Conn> {
            let next = self.conns.lock().unwrap().pop_front();
            let number = self.seen.lock().unwrap().len();
            Box::pin(async move {
                let stream = next.ok_or(ClientError::new("53300", "no connection left"))?;
                Ok((number, Box::new(stream) as BoxStream))
            })
        }

        fn attached(&mut self, _conn: &Self::Conn) {
            self.seen.lock().unwrap().push("attached".into());
        }

        fn release(&mut self, _conn: Self::Conn, reusable: bool) {
            self.seen
                .lock()
                .unwrap()
                .push(format!("released reusable={reusable}"));
        }

        fn idle_in_transaction_timeout(&self) -> Option<Duration> {
            self.idle_limit
        }
    }

    /// The relay settings and a hook (whose records are not looked at) of a pooled test session.
    fn pooled_settings(shutdown: watch::Receiver<bool>) -> (RelaySettings, TestHook) {
        let settings = RelaySettings {
            max_frame: 1 << 20,
            shutdown,
            role: "test".into(),
            errors: None,
        };
        let hook = TestHook {
            seen: Seen::default(),
            release: None,
        };
        (settings, hook)
    }

    /// A pooled session with two upstream connections to hand out: (client, first server end,
    /// second server end, what the source saw, the relay).
    fn pooled(idle_limit: Option<Duration>) -> Pooled {
        let (client, client_side) = tokio::io::duplex(64 * 1024);
        let (first_side, first) = tokio::io::duplex(64 * 1024);
        let (second_side, second) = tokio::io::duplex(64 * 1024);
        let (stop, shutdown) = watch::channel(false);
        let seen = Seen::default();
        let source = TestSource {
            conns: Arc::new(Mutex::new(VecDeque::from([first_side, second_side]))),
            seen: seen.clone(),
            idle_limit,
        };
        let (settings, mut hook) = pooled_settings(shutdown);
        let relay = tokio::spawn(async move {
            relay_through(
                Box::new(client_side),
                source,
                None,
                b'I',
                &mut hook,
                settings,
            )
            .await
        });
        (client, first, second, seen, relay, stop)
    }

    /// What [`pooled`] returns.
    type Pooled = (
        DuplexStream,
        DuplexStream,
        DuplexStream,
        Seen,
        tokio::task::JoinHandle<Result<SessionEnd, SessionError>>,
        watch::Sender<bool>,
    );

    #[tokio::test]
    async fn a_pooled_session_holds_a_connection_from_its_first_message_to_ready_for_query_idle() {
        let (mut client, mut first, mut second, seen, relay, _stop) = pooled(None);
        let saw = || seen.lock().unwrap().clone();
        // A transaction block: the connection stays while PostgreSQL says `T`.
        client.write_all(&text(b'Q', "BEGIN")).await.unwrap();
        assert_eq!(read(&mut first, 1).await[0].1, b"BEGIN\0");
        let mut answer = text(b'C', "BEGIN");
        answer.extend_from_slice(&frame::ready_for_query(b'T'));
        first.write_all(&answer).await.unwrap();
        read(&mut client, 2).await;
        assert_eq!(saw(), ["attached"]);
        // An extended-protocol batch without its Sync yet keeps it too.
        let mut batch = message(b'P', b"\0SELECT 1\0\0\0");
        batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(message(b'E', b"\0\0\0\0\0"));
        batch.extend(message(b'H', b""));
        client.write_all(&batch).await.unwrap();
        read(&mut first, 4).await;
        client.write_all(&text(b'Q', "COMMIT")).await.unwrap();
        read(&mut first, 1).await;
        let mut answer = message(b'1', b"");
        answer.extend(message(b'2', b""));
        answer.extend(text(b'C', "SELECT 1"));
        answer.extend(text(b'C', "COMMIT"));
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        first.write_all(&answer).await.unwrap();
        read(&mut client, 5).await;
        assert_eq!(saw(), ["attached", "released reusable=true"]);
        // The next transaction runs on the next connection the source gives.
        client.write_all(&text(b'Q', "SELECT 2")).await.unwrap();
        assert_eq!(read(&mut second, 1).await[0].1, b"SELECT 2\0");
        let mut answer = text(b'C', "SELECT 1");
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        second.write_all(&answer).await.unwrap();
        read(&mut client, 2).await;
        // Terminate stays with the proxy; the session holds no connection when it ends.
        client.write_all(&message(b'X', b"")).await.unwrap();
        let ended = relay.await.expect("no panic");
        assert!(matches!(ended, Ok(SessionEnd::ClientClosed)), "{ended:?}");
        assert_eq!(
            saw(),
            [
                "attached",
                "released reusable=true",
                "attached",
                "released reusable=true"
            ]
        );
        let mut rest = Vec::new();
        drop(client);
        let _ =
            tokio::time::timeout(Duration::from_millis(100), second.read_to_end(&mut rest)).await;
        assert!(
            rest.is_empty(),
            "forwarded to the pooled connection: {rest:?}"
        );
    }

    #[tokio::test]
    async fn a_client_gone_mid_transaction_gives_its_connection_back_as_unusable() {
        let (mut client, mut first, _second, seen, relay, _stop) = pooled(None);
        client.write_all(&text(b'Q', "BEGIN")).await.unwrap();
        read(&mut first, 1).await;
        let mut answer = text(b'C', "BEGIN");
        answer.extend_from_slice(&frame::ready_for_query(b'T'));
        first.write_all(&answer).await.unwrap();
        read(&mut client, 2).await;
        drop(client);
        relay.await.expect("no panic").expect("a clean end");
        assert_eq!(
            seen.lock().unwrap().clone(),
            ["attached", "released reusable=false"]
        );
    }

    #[tokio::test]
    async fn idle_in_a_transaction_too_long_ends_the_session_with_25p03() {
        let (mut client, mut first, _second, seen, relay, _stop) =
            pooled(Some(Duration::from_millis(200)));
        client.write_all(&text(b'Q', "BEGIN")).await.unwrap();
        read(&mut first, 1).await;
        let mut answer = text(b'C', "BEGIN");
        answer.extend_from_slice(&frame::ready_for_query(b'T'));
        first.write_all(&answer).await.unwrap();
        let got = read(&mut client, 3).await;
        assert_eq!(got[2].0, b'E');
        assert_eq!(error_sqlstate(&got[2].1), Some("25P03"));
        let ended = relay.await.expect("no panic");
        assert!(
            matches!(ended, Err(SessionError::IdleInTransaction(_))),
            "{ended:?}"
        );
        assert_eq!(
            seen.lock().unwrap().clone(),
            ["attached", "released reusable=false"]
        );
    }

    #[tokio::test]
    async fn no_connection_in_time_ends_the_session_with_the_sources_fatal() {
        let (mut client, client_side) = tokio::io::duplex(64 * 1024);
        let (_stop, shutdown) = watch::channel(false);
        let source = TestSource {
            conns: Arc::default(),
            seen: Seen::default(),
            idle_limit: None,
        };
        let (settings, mut hook) = pooled_settings(shutdown);
        let relay = tokio::spawn(async move {
            let client: BoxStream = Box::new(client_side);
            relay_through(client, source, None, b'I', &mut hook, settings).await
        });
        client.write_all(&text(b'Q', "SELECT 1")).await.unwrap();
        let got = read(&mut client, 1).await;
        assert_eq!(error_sqlstate(&got[0].1), Some("53300"));
        let ended = relay.await.expect("no panic");
        assert!(
            matches!(ended, Err(SessionError::NoUpstream(_))),
            "{ended:?}"
        );
    }
}
