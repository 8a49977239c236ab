//! The relay of one authenticated session: client bytes to PostgreSQL and back, split into frames by
//! their headers only and forwarded in runs (one write per batch of whole frames), never decoded and
//! re-encoded. Two seams for later work:
//! - every client message that can run or feed a statement (`Q P B D E C S H F d c f`) passes through
//!   a [`FrontendPolicy`], which may forward it, replace its bytes, or refuse it with an ErrorResponse;
//! - every CommandComplete, ErrorResponse and ReadyForQuery coming back is shown to a [`SessionObserver`]
//!   (statement outcomes, row counts, transaction status) for the access log; before the relay writes
//!   frames that held a CommandComplete or ErrorResponse, it awaits the observer's [`Hold`] (the access
//!   log's records made durable), so a client never sees a completion whose record could still be lost.
//!
//! A refusal keeps PostgreSQL's own semantics: the refused message is replaced by one that fails
//! upstream right away with a unique marker in its error (a Query or a named Parse of the marker text,
//! or a CopyFail carrying it). PostgreSQL then does what it does for any error: aborts the transaction
//! block or the implicit transaction, skips extended-protocol messages until Sync, answers with
//! ReadyForQuery. The relay swaps that one marked ErrorResponse for the refusal, so answers stay in
//! order under pipelining and the transaction status the client sees is PostgreSQL's.
//!
//! Not for: startup, authentication or connecting upstream (see `server`), or policy decisions.

use crate::frame::{self, FrameError, POSTGRES_MAX_FRAME, Severity};
use crate::metrics as m;
use crate::relay_buffer::{self, READ_CHUNK};
use crate::tls::BoxStream;
use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use thiserror::Error;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;

/// What the relay does with one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the message upstream unchanged.
    Forward,
    /// Send these bytes (whole frames) upstream instead of the message.
    Replace(Bytes),
    /// Do not send it; answer the client with an ErrorResponse (severity ERROR) instead.
    Refuse { code: String, message: String },
}

/// Decides about each client message that can run or feed a statement.
pub trait FrontendPolicy: Send {
    /// `frame` is the whole message, type byte and length included.
    fn on_client_message(&mut self, tag: u8, frame: &[u8]) -> Decision;
}

/// Forwards everything: every authenticated user gets the database unchanged.
#[derive(Debug, Default)]
pub struct PassThrough;

impl FrontendPolicy for PassThrough {
    fn on_client_message(&mut self, _tag: u8, _frame: &[u8]) -> Decision {
        Decision::Forward
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
pub type Hold = Pin<Box<dyn Future<Output = Result<(), Withheld>> + Send>>;

/// Why an answer was withheld from the client (sent as FATAL; the session closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    pub code: &'static str,
    pub message: String,
}

/// Sees how statements end (for the access log).
pub trait SessionObserver: Send {
    fn on_server_event(&mut self, event: ServerEvent<'_>);

    /// Called once the frames of a read are observed and before they are written to the client, when
    /// they held a CommandComplete or ErrorResponse: what must complete first (e.g. the access log's
    /// records of those statements made durable). `None` (the default): nothing waits.
    fn hold(&mut self) -> Option<Hold> {
        None
    }
}

/// Counts statements and errors in the metrics.
#[derive(Debug)]
pub struct MetricsObserver {
    statements: metrics::Counter,
    errors: metrics::Counter,
}

impl Default for MetricsObserver {
    fn default() -> Self {
        Self {
            statements: metrics::counter!(m::STATEMENTS_TOTAL),
            errors: metrics::counter!(m::STATEMENT_ERRORS_TOTAL),
        }
    }
}

impl SessionObserver for MetricsObserver {
    fn on_server_event(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::CommandComplete { .. } => self.statements.increment(1),
            ServerEvent::Error { .. } => self.errors.increment(1),
            ServerEvent::Ready { .. } => {}
        }
    }
}

/// Client message types that go through the [`FrontendPolicy`].
const POLICY_TAGS: &[u8] = b"QPBDECSHFdcf";

/// Limits and signals for a session.
#[derive(Clone)]
pub struct RelaySettings {
    /// Largest message a client may send.
    pub max_frame: usize,
    /// Becomes `true` when the proxy shuts down: idle sessions are then closed with 57P01.
    pub shutdown: watch::Receiver<bool>,
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
    #[error("answer withheld: {}", .0.message)]
    Withheld(Withheld),
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

/// State both directions share.
#[derive(Default)]
struct Shared {
    /// Query/Sync/FunctionCall messages sent upstream: each gets exactly one ReadyForQuery.
    cycles_sent: AtomicU64,
    /// When each outstanding cycle (by number) was sent, for the latency histogram; at most
    /// [`MAX_TIMED_CYCLES`] of them.
    started: Mutex<VecDeque<(u64, Instant)>>,
    /// Refusals whose marked error has not come back yet.
    refusals: Mutex<Vec<Refusal>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic (single pushes and removals).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Relays between `client` and `upstream` until one side ends. Errors in client messages are
/// reported to the client as FATAL 08P01.
pub async fn relay(
    client: BoxStream,
    upstream: BoxStream,
    initial_status: u8,
    policy: &mut dyn FrontendPolicy,
    observer: &mut dyn SessionObserver,
    settings: RelaySettings,
) -> Result<SessionEnd, SessionError> {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(upstream);
    let shared = Shared::default();
    let result = {
        let mut up = ClientToServer {
            client: &mut client_read,
            server: &mut server_write,
            policy,
            shared: &shared,
            max_frame: settings.max_frame,
            marker_prefix: format!("maschera_refused_{:016x}_", rand::random::<u64>()),
            refusals_made: 0,
            bytes_sent: metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_CLIENT_TO_SERVER),
        };
        let mut down = ServerToClient {
            server: &mut server_read,
            client: &mut client_write,
            observer,
            shared: &shared,
            ready_seen: 0,
            status: initial_status,
            shutdown: settings.shutdown.clone(),
            bytes_sent: metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_SERVER_TO_CLIENT),
            latency: metrics::histogram!(m::STATEMENT_DURATION_SECONDS),
        };
        let ended = tokio::select! {
            r = up.run() => r,
            r = down.run() => r,
        };
        let busy = down.ready_seen < shared.cycles_sent.load(Ordering::SeqCst);
        match ended {
            Ok(SessionEnd::ClientClosed) if busy => Ok(SessionEnd::ClientLeftBusy),
            other => other,
        }
    };
    match &result {
        Err(SessionError::ClientProtocol(err)) => {
            let message = format!("invalid frontend message: {err}");
            frame::send_fatal(&mut client_write, "08P01", &message).await;
        }
        Err(SessionError::Withheld(withheld)) => {
            frame::send_fatal(&mut client_write, withheld.code, &withheld.message).await;
        }
        _ => {}
    }
    let _ = client_write.shutdown().await;
    result
}

struct ClientToServer<'a> {
    client: &'a mut ReadHalf<BoxStream>,
    server: &'a mut WriteHalf<BoxStream>,
    policy: &'a mut dyn FrontendPolicy,
    shared: &'a Shared,
    max_frame: usize,
    /// Random per session, so a client cannot forge the marker of a refusal.
    marker_prefix: String,
    refusals_made: u64,
    /// Resolved once per session: the hot path only adds to it.
    bytes_sent: metrics::Counter,
}

impl ClientToServer<'_> {
    async fn run(&mut self) -> Result<SessionEnd, SessionError> {
        // Empty while the session waits: see `relay_buffer`. A frame is buffered whole (the policy
        // sees whole messages), so a client holds at most `max_frame` bytes here.
        let mut buf = BytesMut::new();
        loop {
            let missing = frame::missing(&buf);
            if relay_buffer::read_more(self.client, &mut buf, missing).await? == 0 {
                return Ok(SessionEnd::ClientClosed);
            }
            if self.process(&mut buf).await? {
                return Ok(SessionEnd::ClientClosed);
            }
        }
    }

    /// Handles the whole frames in `buf`; returns `true` after Terminate.
    async fn process(&mut self, buf: &mut BytesMut) -> Result<bool, SessionError> {
        // `run` is the length of the prefix of `buf` that is forwarded unchanged in one write.
        let mut run = 0;
        let mut cycles = 0;
        let mut terminated = false;
        while let Some(header) =
            frame::peek_header(&buf[run..], self.max_frame).map_err(SessionError::ClientProtocol)?
        {
            if buf.len() - run < header.len {
                break;
            }
            let frame = &buf[run..run + header.len];
            let decision = if POLICY_TAGS.contains(&header.tag) {
                self.policy.on_client_message(header.tag, frame)
            } else {
                Decision::Forward
            };
            let replacement = match decision {
                Decision::Forward => {
                    run += header.len;
                    cycles += u64::from(ends_cycle(header.tag));
                    terminated |= header.tag == b'X';
                    continue;
                }
                Decision::Replace(bytes) => BytesMut::from(&bytes[..]),
                Decision::Refuse { code, message } => {
                    self.refusal(header.tag, &code, &message, cycles)
                }
            };
            self.flush(buf, run, cycles).await?;
            buf.advance(header.len);
            (run, cycles) = (0, 0);
            self.write(&replacement, count_cycles(&replacement)).await?;
        }
        self.flush(buf, run, cycles).await?;
        Ok(terminated)
    }

    async fn flush(
        &mut self,
        buf: &mut BytesMut,
        run: usize,
        cycles: u64,
    ) -> Result<(), SessionError> {
        if run > 0 {
            self.write(&buf[..run], cycles).await?;
            buf.advance(run);
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8], cycles: u64) -> Result<(), SessionError> {
        if cycles > 0 {
            let first = self.shared.cycles_sent.fetch_add(cycles, Ordering::SeqCst);
            let mut started = lock(&self.shared.started);
            let room = MAX_TIMED_CYCLES.saturating_sub(started.len());
            let now = Instant::now();
            started.extend((first..first + cycles).take(room).map(|cycle| (cycle, now)));
        }
        self.server.write_all(bytes).await?;
        self.bytes_sent.increment(bytes.len() as u64);
        Ok(())
    }

    /// Registers a refusal and returns the message that makes PostgreSQL fail with its marker.
    /// `unsent_cycles` are the cycles of the messages before it that are not written yet.
    /// A refused extended-protocol message in a cycle that already holds one is dropped: PostgreSQL
    /// skips everything after the first error up to Sync, so the client sees the same answers, and
    /// a pipeline that never syncs cannot pile up refusals.
    fn refusal(&mut self, tag: u8, code: &str, message: &str, unsent_cycles: u64) -> BytesMut {
        metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "policy").increment(1);
        let cycle = self.shared.cycles_sent.load(Ordering::SeqCst) + unsent_cycles;
        let extended = EXTENDED_TAGS.contains(&tag);
        if extended
            && lock(&self.shared.refusals)
                .iter()
                .any(|r| r.extended && r.cycle == cycle)
        {
            return BytesMut::new();
        }
        self.refusals_made += 1;
        let marker = format!("{}{}", self.marker_prefix, self.refusals_made);
        let mut failing = BytesMut::new();
        // Encoding cannot fail: the marker has no NUL byte and is short.
        let _ = match tag {
            b'Q' | b'F' => frontend::query(&marker, &mut failing),
            b'd' | b'c' | b'f' => frontend::copy_fail(&marker, &mut failing),
            _ => frontend::parse(&marker, &marker, std::iter::empty(), &mut failing),
        };
        if tag == b'S' {
            frontend::sync(&mut failing);
        }
        let refusal = Refusal {
            marker,
            error: frame::error_response(Severity::Error, code, message),
            // The marked error comes before the ReadyForQuery of the current or the next cycle.
            expires_after_ready: cycle + 2,
            cycle,
            extended,
        };
        // Registered before the failing message is sent, so it is there when the answer comes.
        lock(&self.shared.refusals).push(refusal);
        failing
    }
}

/// Messages that PostgreSQL answers with exactly one ReadyForQuery.
fn ends_cycle(tag: u8) -> bool {
    matches!(tag, b'Q' | b'S' | b'F')
}

fn count_cycles(bytes: &[u8]) -> u64 {
    let mut rest = bytes;
    let mut cycles = 0;
    while let Ok(Some(header)) = frame::peek_header(rest, POSTGRES_MAX_FRAME) {
        cycles += u64::from(ends_cycle(header.tag));
        rest = rest.get(header.len..).unwrap_or_default();
    }
    cycles
}

/// Server message types whose body [`ServerToClient::process`] reads: these are always buffered
/// whole; any other frame larger than a read is streamed through.
const INSPECTED_SERVER_TAGS: &[u8] = b"CEZ";

struct ServerToClient<'a> {
    server: &'a mut ReadHalf<BoxStream>,
    client: &'a mut WriteHalf<BoxStream>,
    observer: &'a mut dyn SessionObserver,
    shared: &'a Shared,
    ready_seen: u64,
    status: u8,
    shutdown: watch::Receiver<bool>,
    bytes_sent: metrics::Counter,
    latency: metrics::Histogram,
}

impl ServerToClient<'_> {
    async fn run(&mut self) -> Result<SessionEnd, SessionError> {
        // Empty while the session waits: see `relay_buffer`.
        let mut buf = BytesMut::new();
        // Bytes of a large frame still to pass through unchanged (see `stream_large_frame`).
        let mut streaming = 0;
        let mut shutting_down = *self.shutdown.borrow();
        loop {
            if shutting_down && self.idle() {
                let message = "terminating connection due to administrator command";
                frame::send_fatal(self.client, "57P01", message).await;
                return Ok(SessionEnd::Shutdown);
            }
            let missing = frame::missing(&buf);
            tokio::select! {
                read = relay_buffer::read_more(self.server, &mut buf, missing) => {
                    if read? == 0 {
                        return Ok(SessionEnd::ServerClosed);
                    }
                    if streaming > 0 {
                        let through = streaming.min(buf.len());
                        self.send(&buf[..through]).await?;
                        buf.advance(through);
                        streaming -= through;
                        if buf.is_empty() {
                            continue;
                        }
                    }
                    self.process(&mut buf).await?;
                    streaming = self.stream_large_frame(&mut buf).await?;
                }
                changed = self.shutdown.changed(), if !shutting_down => {
                    shutting_down = changed.is_err() || *self.shutdown.borrow();
                }
            }
        }
    }

    /// Starts passing a large frame through unchanged when the partial frame left at the front
    /// of `buf` is larger than a read and of a type the relay does not look into (a huge DataRow
    /// or CopyData): what has come of it is sent now, and the returned number of bytes still to
    /// come is sent as it arrives, so a row of any size costs the session at most one read of
    /// memory. Frames the relay inspects are buffered whole.
    async fn stream_large_frame(&mut self, buf: &mut BytesMut) -> Result<usize, SessionError> {
        let Some(header) =
            frame::peek_header(buf, POSTGRES_MAX_FRAME).map_err(SessionError::ServerProtocol)?
        else {
            return Ok(0);
        };
        if header.len <= READ_CHUNK || INSPECTED_SERVER_TAGS.contains(&header.tag) {
            return Ok(0);
        }
        let through = buf.len();
        self.send(buf).await?;
        buf.clear();
        Ok(header.len - through)
    }

    /// No statement outstanding and no transaction open.
    fn idle(&self) -> bool {
        self.status == b'I' && self.ready_seen >= self.shared.cycles_sent.load(Ordering::SeqCst)
    }

    async fn process(&mut self, buf: &mut BytesMut) -> Result<(), SessionError> {
        // `run` whole frames at the front of `buf` go out unchanged; `out` collects what comes
        // before a swapped error.
        let mut out = BytesMut::new();
        let mut run = 0;
        let mut completions = false;
        while let Some(header) = frame::peek_header(&buf[run..], POSTGRES_MAX_FRAME)
            .map_err(SessionError::ServerProtocol)?
        {
            if buf.len() - run < header.len {
                break;
            }
            let body = frame::body(&buf[run..run + header.len]);
            completions |= matches!(header.tag, b'C' | b'E');
            match header.tag {
                b'C' => {
                    let tag = frame::cstr(body).map(|(t, _)| t).unwrap_or_default();
                    let tag = std::str::from_utf8(tag).unwrap_or_default();
                    self.observer
                        .on_server_event(ServerEvent::CommandComplete { tag });
                }
                b'E' => {
                    if let Some(refusal) = self.take_refusal(body) {
                        self.observer.on_server_event(ServerEvent::Error {
                            sqlstate: frame::sqlstate(frame::body(&refusal)).unwrap_or_default(),
                        });
                        out.extend_from_slice(&buf[..run]);
                        out.extend_from_slice(&refusal);
                        buf.advance(run + header.len);
                        run = 0;
                        continue;
                    }
                    let sqlstate = frame::sqlstate(body).unwrap_or_default();
                    self.observer
                        .on_server_event(ServerEvent::Error { sqlstate });
                }
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    self.observer.on_server_event(ServerEvent::Ready {
                        status: self.status,
                    });
                    self.record_latency();
                    self.ready_seen += 1;
                    self.expire_refusals();
                }
                _ => {}
            }
            run += header.len;
        }
        if completions && let Some(hold) = self.observer.hold() {
            hold.await.map_err(SessionError::Withheld)?;
        }
        if out.is_empty() {
            self.send(&buf[..run]).await?;
        } else {
            out.extend_from_slice(&buf[..run]);
            self.send(&out).await?;
        }
        buf.advance(run);
        Ok(())
    }

    /// The refusal whose marker this ErrorResponse carries, if any.
    fn take_refusal(&self, body: &[u8]) -> Option<BytesMut> {
        let mut refusals = lock(&self.shared.refusals);
        if refusals.is_empty() {
            return None;
        }
        let message = frame::error_fields(body)
            .find(|(code, _)| *code == b'M')
            .map(|(_, m)| m)?;
        let found = refusals.iter().position(|r| {
            message
                .windows(r.marker.len())
                .any(|w| w == r.marker.as_bytes())
        })?;
        Some(refusals.swap_remove(found).error)
    }

    fn expire_refusals(&self) {
        let mut refusals = lock(&self.shared.refusals);
        if !refusals.is_empty() {
            refusals.retain(|r| r.expires_after_ready > self.ready_seen);
        }
    }

    fn record_latency(&self) {
        let mut started = lock(&self.shared.started);
        while let Some(&(cycle, at)) = started.front() {
            if cycle > self.ready_seen {
                break;
            }
            started.pop_front();
            if cycle == self.ready_seen {
                self.latency.record(at.elapsed().as_secs_f64());
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if !bytes.is_empty() {
            self.client.write_all(bytes).await?;
            self.bytes_sent.increment(bytes.len() as u64);
        }
        Ok(())
    }
}
