//! The relay of one authenticated session: client bytes to PostgreSQL and back, split into frames by
//! their headers only and forwarded in runs (one write per batch of whole frames), never decoded and
//! re-encoded. Two seams for later work:
//! - every client message that can run or feed a statement (`Q P B D E C S H F d c f`) passes through
//!   a [`FrontendPolicy`], which may forward it, replace its bytes, or refuse it with an ErrorResponse
//!   (the relay then keeps the protocol in step: ReadyForQuery for a refused Query; for an extended
//!   protocol message it skips the client's messages until Sync and answers that Sync itself);
//! - every CommandComplete, ErrorResponse and ReadyForQuery coming back is shown to a [`SessionObserver`]
//!   (statement outcomes, row counts, transaction status) for the access log.
//!
//! Not for: startup, authentication or connecting upstream (see `server`), or policy decisions.

use crate::frame::{self, FrameError, POSTGRES_MAX_FRAME, Severity};
use crate::metrics as m;
use crate::tls::BoxStream;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

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

/// Sees how statements end (for the access log).
pub trait SessionObserver: Send {
    fn on_server_event(&mut self, event: ServerEvent<'_>);
}

/// Counts statements and errors in the metrics.
#[derive(Debug, Default)]
pub struct MetricsObserver;

impl SessionObserver for MetricsObserver {
    fn on_server_event(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::CommandComplete { .. } => {
                metrics::counter!(m::STATEMENTS_TOTAL).increment(1)
            }
            ServerEvent::Error { .. } => {
                metrics::counter!("maschera_statement_errors_total").increment(1)
            }
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
    ServerClosed,
    Shutdown,
}

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("client sent an invalid message: {0}")]
    ClientProtocol(FrameError),
    #[error("PostgreSQL sent an invalid message: {0}")]
    ServerProtocol(FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Something the relay itself sends to the client, in order with PostgreSQL's answers.
#[derive(Debug)]
struct Injection {
    /// Number of ReadyForQuery messages that must have reached the client first.
    after_ready: u64,
    bytes: BytesMut,
    /// Append a ReadyForQuery with the current transaction status.
    with_ready: bool,
    /// Instead of appending, replace ReadyForQuery number `after_ready + 1` with `bytes`.
    replaces_ready: bool,
}

/// State both directions share.
#[derive(Default)]
struct Shared {
    /// Query/Sync/FunctionCall messages sent upstream: each gets exactly one ReadyForQuery.
    cycles_sent: AtomicU64,
    /// When each outstanding cycle was sent (for the latency histogram).
    started: Mutex<VecDeque<Instant>>,
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
    let (inject_tx, inject_rx) = mpsc::unbounded_channel();
    let result = {
        let mut up = ClientToServer {
            client: &mut client_read,
            server: &mut server_write,
            policy,
            shared: &shared,
            inject: inject_tx,
            max_frame: settings.max_frame,
            skipping_to_sync: false,
        };
        let mut down = ServerToClient {
            server: &mut server_read,
            client: &mut client_write,
            observer,
            shared: &shared,
            injections: inject_rx,
            pending: VecDeque::new(),
            ready_seen: 0,
            status: initial_status,
            shutdown: settings.shutdown.clone(),
        };
        tokio::select! {
            r = up.run() => r,
            r = down.run() => r,
        }
    };
    if let Err(SessionError::ClientProtocol(err)) = &result {
        let message = format!("invalid frontend message: {err}");
        let _ = client_write
            .write_all(&frame::error_response(Severity::Fatal, "08P01", &message))
            .await;
    }
    let _ = client_write.shutdown().await;
    result
}

struct ClientToServer<'a> {
    client: &'a mut ReadHalf<BoxStream>,
    server: &'a mut WriteHalf<BoxStream>,
    policy: &'a mut dyn FrontendPolicy,
    shared: &'a Shared,
    inject: mpsc::UnboundedSender<Injection>,
    max_frame: usize,
    /// After refusing an extended-protocol message: drop client messages until Sync.
    skipping_to_sync: bool,
}

impl ClientToServer<'_> {
    async fn run(&mut self) -> Result<SessionEnd, SessionError> {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            if self.client.read_buf(&mut buf).await? == 0 {
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
                buf.reserve(header.len - (buf.len() - run));
                break;
            }
            let frame = &buf[run..run + header.len];
            let decision = if self.skipping_to_sync {
                None
            } else if POLICY_TAGS.contains(&header.tag) {
                Some(self.policy.on_client_message(header.tag, frame))
            } else {
                Some(Decision::Forward)
            };
            match decision {
                Some(Decision::Forward) => {
                    run += header.len;
                    cycles += u64::from(ends_cycle(header.tag));
                    terminated |= header.tag == b'X';
                }
                Some(Decision::Replace(bytes)) => {
                    self.flush(buf, run, cycles).await?;
                    buf.advance(header.len);
                    (run, cycles) = (0, 0);
                    let replaced_cycles = count_cycles(&bytes);
                    self.write(&bytes, replaced_cycles).await?;
                }
                Some(Decision::Refuse { code, message }) => {
                    self.flush(buf, run, cycles).await?;
                    buf.advance(header.len);
                    (run, cycles) = (0, 0);
                    self.refuse(header.tag, &code, &message).await?;
                }
                None => {
                    // Skipping after a refusal: the client's Sync is answered by the relay.
                    self.flush(buf, run, cycles).await?;
                    buf.advance(header.len);
                    (run, cycles) = (0, 0);
                    if header.tag == b'S' {
                        self.skipping_to_sync = false;
                        self.send_injection(Injection {
                            after_ready: self.shared.cycles_sent.load(Ordering::SeqCst),
                            bytes: BytesMut::new(),
                            with_ready: true,
                            replaces_ready: false,
                        });
                    }
                }
            }
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
            let now = Instant::now();
            let mut started = self
                .shared
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            started.extend(std::iter::repeat_n(now, cycles as usize));
            self.shared.cycles_sent.fetch_add(cycles, Ordering::SeqCst);
        }
        self.server.write_all(bytes).await?;
        metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_CLIENT_TO_UPSTREAM)
            .increment(bytes.len() as u64);
        Ok(())
    }

    /// Answers a refused message in step with the protocol.
    async fn refuse(&mut self, tag: u8, code: &str, message: &str) -> Result<(), SessionError> {
        metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_SQLSTATE => code.to_owned()).increment(1);
        let error = frame::error_response(Severity::Error, code, message);
        match tag {
            b'Q' | b'F' => self.send_injection(Injection {
                after_ready: self.shared.cycles_sent.load(Ordering::SeqCst),
                bytes: error,
                with_ready: true,
                replaces_ready: false,
            }),
            _ => {
                // Extended protocol: a Sync makes PostgreSQL answer what came before the refused
                // message; its ReadyForQuery is replaced by the error, and the client's own Sync is
                // answered by the relay.
                // The injection is queued before the Sync is sent, so it is there when the answer comes.
                self.send_injection(Injection {
                    after_ready: self.shared.cycles_sent.load(Ordering::SeqCst),
                    bytes: error,
                    with_ready: false,
                    replaces_ready: true,
                });
                let mut sync = BytesMut::new();
                postgres_protocol::message::frontend::sync(&mut sync);
                self.write(&sync, 1).await?;
                self.skipping_to_sync = tag != b'S';
                if tag == b'S' {
                    self.send_injection(Injection {
                        after_ready: self.shared.cycles_sent.load(Ordering::SeqCst),
                        bytes: BytesMut::new(),
                        with_ready: true,
                        replaces_ready: false,
                    });
                }
            }
        }
        Ok(())
    }

    fn send_injection(&self, injection: Injection) {
        // The receiver lives as long as the session; if it is gone the session is ending anyway.
        let _ = self.inject.send(injection);
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

struct ServerToClient<'a> {
    server: &'a mut ReadHalf<BoxStream>,
    client: &'a mut WriteHalf<BoxStream>,
    observer: &'a mut dyn SessionObserver,
    shared: &'a Shared,
    injections: mpsc::UnboundedReceiver<Injection>,
    pending: VecDeque<Injection>,
    ready_seen: u64,
    status: u8,
    shutdown: watch::Receiver<bool>,
}

impl ServerToClient<'_> {
    async fn run(&mut self) -> Result<SessionEnd, SessionError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut shutting_down = *self.shutdown.borrow();
        loop {
            if shutting_down && self.idle() {
                let message = "terminating connection due to administrator command";
                self.client
                    .write_all(&frame::error_response(Severity::Fatal, "57P01", message))
                    .await?;
                return Ok(SessionEnd::Shutdown);
            }
            tokio::select! {
                injection = self.injections.recv() => {
                    if let Some(injection) = injection {
                        self.pending.push_back(injection);
                        let mut out = BytesMut::new();
                        self.take_due(&mut out);
                        self.send(&out).await?;
                    }
                }
                read = self.server.read_buf(&mut buf) => {
                    if read? == 0 {
                        return Ok(SessionEnd::ServerClosed);
                    }
                    self.process(&mut buf).await?;
                }
                changed = self.shutdown.changed(), if !shutting_down => {
                    shutting_down = changed.is_err() || *self.shutdown.borrow();
                }
            }
        }
    }

    /// No statement outstanding and no transaction open.
    fn idle(&self) -> bool {
        self.status == b'I' && self.ready_seen >= self.shared.cycles_sent.load(Ordering::SeqCst)
    }

    async fn process(&mut self, buf: &mut BytesMut) -> Result<(), SessionError> {
        while let Ok(injection) = self.injections.try_recv() {
            self.pending.push_back(injection);
        }
        let mut out = BytesMut::new();
        let mut run = 0;
        while let Some(header) = frame::peek_header(&buf[run..], POSTGRES_MAX_FRAME)
            .map_err(SessionError::ServerProtocol)?
        {
            if buf.len() - run < header.len {
                buf.reserve(header.len - (buf.len() - run));
                break;
            }
            let body = frame::body(&buf[run..run + header.len]);
            match header.tag {
                b'C' => {
                    let tag = frame::cstr(body).map(|(t, _)| t).unwrap_or_default();
                    let tag = std::str::from_utf8(tag).unwrap_or_default();
                    self.observer
                        .on_server_event(ServerEvent::CommandComplete { tag });
                }
                b'E' => {
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
                    if self.pending.is_empty() {
                        run += header.len;
                        continue;
                    }
                    // Everything up to this ReadyForQuery goes out before anything injected after it.
                    out.extend_from_slice(&buf[..run]);
                    buf.advance(run);
                    run = 0;
                    if let Some(pos) = self
                        .pending
                        .iter()
                        .position(|i| i.replaces_ready && i.after_ready + 1 == self.ready_seen)
                    {
                        if let Some(injection) = self.pending.remove(pos) {
                            out.extend_from_slice(&injection.bytes);
                        }
                        buf.advance(header.len);
                    } else {
                        out.extend_from_slice(&buf[..header.len]);
                        buf.advance(header.len);
                    }
                    self.take_due(&mut out);
                    continue;
                }
                _ => {}
            }
            run += header.len;
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

    /// Moves the injections whose turn has come into `out`.
    fn take_due(&mut self, out: &mut BytesMut) {
        while let Some(pos) = self
            .pending
            .iter()
            .position(|i| !i.replaces_ready && i.after_ready <= self.ready_seen)
        {
            if let Some(injection) = self.pending.remove(pos) {
                out.extend_from_slice(&injection.bytes);
                if injection.with_ready {
                    out.extend_from_slice(&frame::ready_for_query(self.status));
                }
            }
        }
    }

    fn record_latency(&self) {
        let started = self
            .shared
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some(started) = started {
            metrics::histogram!(m::STATEMENT_DURATION_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if !bytes.is_empty() {
            self.client.write_all(bytes).await?;
            metrics::counter!(m::BYTES_TOTAL, m::LABEL_DIRECTION => m::DIRECTION_UPSTREAM_TO_CLIENT)
                .increment(bytes.len() as u64);
        }
        Ok(())
    }
}
