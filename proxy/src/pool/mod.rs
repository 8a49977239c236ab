//! Transaction pooling: pools of logged-in upstream connections, one pool per [`UpstreamKey`]
//! (upstream login, database, startup parameters with the user's attributes), so that sessions
//! whose settings differ never share a backend; and [`PooledSource`], the [`UpstreamSource`] that
//! gives a session of transaction mode a connection of its pool per transaction.
//!
//! - A pool hands out at most `size` connections at once; a client waits up to
//!   `acquire_timeout_seconds` for one (then 53300). It reuses an idle connection when it has one
//!   (one that has anything to read while idle, e.g. PostgreSQL's FATAL at a restart, is closed and
//!   replaced), and opens a new one otherwise, within `max_per_login` over all pools of the login
//!   (closing an idle connection of another pool of the login to make room).
//! - A connection comes back reusable only from a clean transaction boundary; otherwise (the client
//!   left mid-transaction, a protocol error, the idle-in-transaction timeout) it is cancelled and
//!   closed, never reused; so is the connection of a pinned session when it ends, and one a
//!   client's setting ran on (see `pinning`, `settings`).
//! - Named prepared statements follow the client from connection to connection (see
//!   `prepared`).
//! - [`Pools::reap`] closes connections idle longer than `idle_timeout_seconds`, keeping `min_idle`
//!   per pool, which it opens in advance (see `min_idle`).
//! - A connection a client's cancel is on its way to is not handed to another client before
//!   PostgreSQL has the cancel (see `late_cancel`); a connection holds a capped number of
//!   prepared statements (see `statement_cache`).
//! - Connections are opened with `maschera.pooled = on`, so that the database's event trigger
//!   tells of temporary objects created out of the statement text's sight (see `hidden_state`).
//!
//! Metrics: `maschera_pool_connections` (gauge, labels `login`, `state` = `idle` | `in_use`),
//! `maschera_pool_waiting` (gauge, label `login`), `maschera_pool_wait_seconds` (histogram),
//! `maschera_pool_pins_total` (counter, label `reason`).
//!
//! Not for: the relay's side of the seam (see `upstream_source`, `session`), what pins a session
//! (see `pinning`), or logging in (see `upstream`).

pub mod config;
pub mod hidden_state;
mod late_cancel;
mod live_words;
mod min_idle;
pub mod pinning;
pub mod prepared;
pub mod session;
pub mod settings;
mod statement_cache;
mod uncommitted;

use crate::metrics as m;
use crate::net::cancel::{CancelGate, CancelKey, Registration};
use crate::net::tls::BoxStream;
use crate::net::upstream::{Upstream, UpstreamError, UpstreamTarget};
use crate::session::ServerEvent;
use crate::session::upstream_source::{Acquiring, UpstreamKey, UpstreamSource};
use crate::wire::Backend as ServerMessage;
use crate::wire::client_error::ClientError;
use bytes::BytesMut;
pub use config::{PoolConfig, PoolMode};
use pinning::Pinning;
use prepared::{Prepared, ServerStatements};
use settings::{Change, ClientSettings};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use uncommitted::{Outcome, Uncommitted};

/// All pools of the proxy.
pub struct Pools {
    target: Arc<UpstreamTarget>,
    config: PoolConfig,
    pools: Mutex<HashMap<Arc<UpstreamKey>, Arc<Pool>>>,
    /// Per login: the connections it may still open (`max_per_login`).
    logins: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The connections of one key.
struct Pool {
    /// Connections that may be handed out at once.
    in_use: Arc<Semaphore>,
    idle: Mutex<Vec<(Backend, Instant)>>,
    /// What the first connection said while logging in (ParameterStatus), for the greeting.
    greeting: Mutex<Option<BytesMut>>,
    gauges: Gauges,
    /// Connections are being opened to keep `min_idle` (see `min_idle`).
    filling: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct Gauges {
    idle: metrics::Gauge,
    in_use: metrics::Gauge,
    waiting: metrics::Gauge,
    wait: metrics::Histogram,
}

/// An open upstream connection of a pool.
struct Backend {
    stream: BoxStream,
    key: CancelKey,
    /// The cancels being forwarded to it (see `late_cancel`).
    gate: Arc<CancelGate>,
    /// The statements prepared on it (see `prepared`).
    statements: ServerStatements,
    /// Its share of `max_per_login`, if limited.
    _login: Option<OwnedSemaphorePermit>,
}

/// A connection handed out to a session.
pub struct Leased {
    backend: Backend,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Leased {
    /// The backend's cancel key and gate.
    pub fn cancel_target(&self) -> (CancelKey, Arc<CancelGate>) {
        (self.backend.key, self.backend.gate.clone())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a push, pop or insert: a panic cannot leave the data half-changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pools {
    pub fn new(target: Arc<UpstreamTarget>, config: PoolConfig) -> Pools {
        Pools {
            target,
            config,
            pools: Mutex::default(),
            logins: Mutex::default(),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn pool(&self, key: &Arc<UpstreamKey>) -> Arc<Pool> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(key) {
            return pool.clone();
        }
        let login = key.login.user.clone();
        let gauge = |state: &'static str| metrics::gauge!(m::POOL_CONNECTIONS, m::LABEL_LOGIN => login.clone(), m::LABEL_STATE => state);
        let pool = Arc::new(Pool {
            in_use: Arc::new(Semaphore::new(self.config.size)),
            idle: Mutex::default(),
            greeting: Mutex::default(),
            gauges: Gauges {
                idle: gauge("idle"),
                in_use: gauge("in_use"),
                waiting: metrics::gauge!(m::POOL_WAITING, m::LABEL_LOGIN => login.clone()),
                wait: metrics::histogram!(m::POOL_WAIT_SECONDS),
            },
            filling: Default::default(),
        });
        pools.insert(key.clone(), pool.clone());
        pool
    }

    fn login_slots(&self, login: &str) -> Option<Arc<Semaphore>> {
        if self.config.max_per_login == 0 {
            return None;
        }
        let mut logins = lock(&self.logins);
        let slots = logins
            .entry(login.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_login)));
        Some(slots.clone())
    }

    /// A connection of `key`'s pool, waiting at most `acquire_timeout_seconds` for one.
    pub async fn acquire(self: Arc<Self>, key: Arc<UpstreamKey>) -> Result<Leased, ClientError> {
        let pool = self.pool(&key);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.acquire_timeout();
        pool.gauges.waiting.increment(1.0);
        let permit = tokio::time::timeout_at(deadline, pool.in_use.clone().acquire_owned()).await;
        pool.gauges.waiting.decrement(1.0);
        pool.gauges.wait.record(started.elapsed().as_secs_f64());
        let Ok(Ok(permit)) = permit else {
            metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "pool_timeout").increment(1);
            return Err(ClientError::new(
                "53300",
                format!(
                    "no upstream connection became free within {} s: all {} connections of this \
                     session's pool are in use ([pool] size, acquire_timeout_seconds)",
                    self.config.acquire_timeout_seconds, self.config.size
                ),
            ));
        };
        loop {
            let idle = lock(&pool.idle).pop();
            let Some((mut backend, _)) = idle else { break };
            pool.gauges.idle.decrement(1.0);
            if has_input(&mut backend.stream) {
                debug!("closing a pooled connection that PostgreSQL ended or spoke on while idle");
                continue;
            }
            pool.gauges.in_use.increment(1.0);
            self.top_up(&key, &pool);
            return Ok(Leased {
                backend,
                pool,
                _permit: permit,
            });
        }
        let login = match self.login_slots(&key.login.user) {
            None => None,
            Some(slots) => Some(self.login_slot(&key, slots, deadline).await?),
        };
        let upstream = self.connect_until(&key, deadline).await?;
        lock(&pool.greeting).get_or_insert_with(|| upstream.greeting.clone());
        pool.gauges.in_use.increment(1.0);
        self.top_up(&key, &pool);
        Ok(Leased {
            backend: Backend {
                stream: upstream.stream,
                key: upstream.key,
                gate: Arc::default(),
                statements: ServerStatements::default(),
                _login: login,
            },
            pool,
            _permit: permit,
        })
    }

    /// A new connection of `key`'s pool. A failure PostgreSQL may get over (it is down, restarting,
    /// or has no connection slot free) is retried with growing pauses until `deadline`, as
    /// pgbouncer does, so that a client waiting through a restart is served once PostgreSQL is
    /// back; a refused login or database fails at once.
    async fn connect_until(
        &self,
        key: &UpstreamKey,
        deadline: tokio::time::Instant,
    ) -> Result<Upstream, ClientError> {
        let params = hidden_state::startup_params(&key.params);
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = self.target.connect_to(&key.login, &key.database, &params);
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(upstream)) => return Ok(upstream),
                Ok(Err(err)) => err,
                Err(_) => UpstreamError::Timeout,
            };
            warn!(error = %err, login = %key.login.user, "opening a pooled upstream connection failed");
            let passing = matches!(&err, UpstreamError::Io(_) | UpstreamError::Timeout)
                || matches!(&err, UpstreamError::Refused { code, .. }
                if matches!(code.as_str(), "57P03" | "53300" | "57P01"));
            if passing && tokio::time::Instant::now() + pause < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            let (code, message) = err.for_client(&key.login.user);
            return Err(ClientError::new(code, message));
        }
    }

    /// A share of the login's `max_per_login`, closing an idle connection of another of its pools
    /// when none is free.
    async fn login_slot(
        &self,
        key: &UpstreamKey,
        slots: Arc<Semaphore>,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, ClientError> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let others: Vec<Arc<Pool>> = lock(&self.pools)
            .iter()
            .filter(|(k, _)| k.login.user == key.login.user)
            .map(|(_, pool)| pool.clone())
            .collect();
        for pool in others {
            if lock(&pool.idle).pop().is_some() {
                pool.gauges.idle.decrement(1.0);
                break;
            }
        }
        match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "pool_timeout")
                    .increment(1);
                Err(ClientError::new(
                    "53300",
                    format!(
                        "no upstream connection became free within {} s: the {} connections this \
                         login may hold are in use ([pool] max_per_login)",
                        self.config.acquire_timeout_seconds, self.config.max_per_login
                    ),
                ))
            }
        }
    }

    /// Takes a connection back: into its pool when `reusable`, otherwise cancelled and closed.
    /// A connection a cancel is being forwarded to is given back once PostgreSQL has it (see
    /// `late_cancel`).
    pub fn release(&self, leased: Leased, reusable: bool) {
        if reusable && late_cancel::in_doubt(&leased) {
            late_cancel::release_when_settled(self.target.clone(), leased);
            return;
        }
        let Leased { backend, pool, .. } = leased;
        pool.gauges.in_use.decrement(1.0);
        if reusable {
            pool.gauges.idle.increment(1.0);
            lock(&pool.idle).push((backend, Instant::now()));
            return;
        }
        close(self.target.clone(), backend);
    }
}

/// Cancels what `backend` still runs for nobody, and closes it (closing the socket ends its
/// session).
fn close(target: Arc<UpstreamTarget>, backend: Backend) {
    tokio::spawn(async move {
        if let Err(err) = target.cancel(backend.key).await {
            debug!(error = %err, "cancelling on a discarded pooled connection failed");
        }
        drop(backend);
    });
}

impl Pools {
    /// What the first connection of `key`'s pool said while logging in (ParameterStatus and
    /// notices), for the greeting of a new client of that pool.
    pub async fn greeting(self: Arc<Self>, key: Arc<UpstreamKey>) -> Result<BytesMut, ClientError> {
        let pool = self.pool(&key);
        if let Some(greeting) = lock(&pool.greeting).clone() {
            return Ok(greeting);
        }
        let leased = self.clone().acquire(key).await?;
        let greeting = lock(&pool.greeting).clone().unwrap_or_default();
        self.release(leased, true);
        Ok(greeting)
    }

    /// Closes connections idle longer than `idle_timeout_seconds`, keeping `min_idle` per pool,
    /// and (see `min_idle`) those PostgreSQL ended, opening new ones up to `min_idle`.
    pub fn reap(self: &Arc<Self>) {
        let limit = self.config.idle_timeout();
        let pools: Vec<(Arc<UpstreamKey>, Arc<Pool>)> = lock(&self.pools)
            .iter()
            .map(|(key, pool)| (key.clone(), pool.clone()))
            .collect();
        for (key, pool) in pools {
            min_idle::drop_ended(&pool);
            {
                let mut idle = lock(&pool.idle);
                let keep = self.config.min_idle;
                // Oldest first: released connections are pushed at the end.
                while idle.len() > keep && idle.first().is_some_and(|(_, at)| at.elapsed() >= limit)
                {
                    idle.remove(0);
                    pool.gauges.idle.decrement(1.0);
                }
            }
            self.top_up(&key, &pool);
        }
    }

    /// Runs [`Pools::reap`] every few seconds until the proxy stops.
    pub async fn reap_forever(self: Arc<Self>) {
        let every = self
            .config
            .idle_timeout()
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        loop {
            tokio::time::sleep(every).await;
            self.reap();
        }
    }

    /// Upstream connections open now (idle or in use), over all pools.
    pub fn open_connections(&self) -> usize {
        let pools = lock(&self.pools);
        pools
            .values()
            .map(|p| lock(&p.idle).len() + self.config.size - p.in_use.available_permits())
            .sum()
    }
}

/// Whether an idle connection has something to read (PostgreSQL's FATAL before it closed, an end of
/// stream, an error): such a connection is not between transactions any more.
fn has_input(stream: &mut BoxStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        Pin::new(stream).poll_read(&mut cx, &mut buf),
        Poll::Ready(_)
    )
}

/// A session of transaction mode: a connection of its pool per transaction (see the module doc).
pub struct PooledSource {
    pools: Arc<Pools>,
    /// The session's key from its login and startup parameters.
    base: Arc<UpstreamKey>,
    /// `base` with the client's settings (see `settings`).
    key: Arc<UpstreamKey>,
    settings: ClientSettings,
    /// What the client statement being run would change of its settings.
    /// (One per statement of a simple Query made only of such statements, see `settings`.)
    pending: std::collections::VecDeque<Change>,
    /// Changes completed in a transaction that has not committed yet (see `uncommitted`).
    uncommitted: Uncommitted,
    /// The attached connection holds settings of this client: it is closed when given back.
    dirty: bool,
    /// The client's cancel key; points at the backend serving the client now.
    registration: Registration,
    pinning: Pinning,
    prepared: Prepared,
    /// Settings PostgreSQL reported during the transaction (see `hidden_state`).
    reported: hidden_state::Reported,
    /// The last ReadyForQuery said idle.
    idle: bool,
}

impl PooledSource {
    pub fn new(pools: Arc<Pools>, key: Arc<UpstreamKey>, registration: Registration) -> Self {
        let prepared = Prepared::new(pools.config.prepared_statements_per_connection)
            .with_plan_cache(pools.target.config().plan_cache);
        PooledSource {
            pools,
            base: key.clone(),
            key,
            settings: ClientSettings::default(),
            pending: Default::default(),
            uncommitted: Uncommitted::default(),
            dirty: false,
            registration,
            pinning: Pinning::default(),
            prepared,
            reported: hidden_state::Reported::default(),
            idle: true,
        }
    }
}

impl PooledSource {
    /// Makes committed changes the client's (its key follows); pins the session when a rollback
    /// may or may not have undone some.
    fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Held => {}
            Outcome::Committed(changes) => {
                let mut changed = false;
                for change in changes {
                    changed |= self.settings.apply(change);
                }
                if changed {
                    self.key = Arc::new(self.settings.key(&self.base));
                }
            }
            Outcome::Unknown => self.pinning.pin("SET rolled back to a savepoint"),
        }
    }
}

impl UpstreamSource for PooledSource {
    type Conn = Leased;
    const POOLED: bool = true;

    fn stream(conn: &mut Leased) -> &mut BoxStream {
        &mut conn.backend.stream
    }

    fn acquire(&mut self, key: Option<Arc<UpstreamKey>>) -> Acquiring<Leased> {
        // The hook's choice (an application user's end user) with the client's own settings.
        let key = match key {
            Some(chosen) if *chosen != *self.base => Arc::new(self.settings.key(&chosen)),
            _ => self.key.clone(),
        };
        Box::pin(self.pools.clone().acquire(key))
    }

    fn attached(&mut self, conn: &Leased) {
        self.registration.retarget(Some(conn.cancel_target()));
        self.prepared.attached(&conn.backend.statements);
    }

    fn outgoing(&mut self, conn: &mut Leased, bytes: &[u8]) -> Option<BytesMut> {
        self.prepared.outgoing(&mut conn.backend.statements, bytes)
    }

    fn incoming(&mut self, conn: &mut Leased, message: &ServerMessage<'_>) -> bool {
        let withheld = self.prepared.answer(&mut conn.backend.statements, message);
        // A withheld error is of a cycle sent again (`plan_cache`): it did not end the transaction.
        if let (ServerMessage::ErrorResponse(fields), false) = (message, withheld) {
            let sqlstate = fields.sqlstate().unwrap_or_default();
            let outcome = self.uncommitted.observe(ServerEvent::Error { sqlstate });
            self.settle(outcome);
        }
        // A reported setting changed out of sight (see `hidden_state`); one a followed SET
        // changed leaves with its connection.
        if matches!(message, ServerMessage::ReadyForQuery { .. })
            && self.idle
            && self.reported.any()
        {
            let changed = {
                let greeting = lock(&conn.pool.greeting);
                self.reported.end(greeting.as_deref().unwrap_or_default())
            };
            if changed && !self.dirty {
                self.pinning.pin(hidden_state::SETTING_REASON);
            }
        }
        withheld
    }

    fn injection(&mut self) -> Option<BytesMut> {
        self.prepared.injection()
    }

    fn answer_alone(&mut self, bytes: &[u8]) -> Option<BytesMut> {
        self.prepared.answer_alone(bytes)
    }

    fn release(&mut self, conn: Leased, reusable: bool) {
        self.registration.retarget(None);
        // A pinned session's connection holds what pinned it (a temporary table, a lock, a
        // setting): it is closed with the session, never handed to another client.
        let clean = !self.dirty && !self.pinning.pinned();
        self.pools.release(conn, reusable && clean);
        self.dirty = false;
    }

    fn observe_client(&mut self, tag: u8, frame: &[u8]) {
        match tag {
            // Only a Query or a Parse carries statement text: decoded once, for both.
            b'Q' | b'P' => {
                let sql = crate::wire::Frontend::decode(frame)
                    .ok()
                    .and_then(|m| m.sql());
                self.pending.clear();
                if let Some(changes) = sql.and_then(settings::changes) {
                    self.pending.extend(changes);
                }
                // A simple query whose settings follow the client (`settings`), or settings that
                // end with their transaction, leave nothing behind.
                let follows = !self.pending.is_empty()
                    && self.pending.iter().all(|change| match change {
                        Change::Set(..) => tag == b'Q',
                        Change::Local => true,
                        _ => false,
                    });
                if let (Some(sql), false) = (sql, follows) {
                    self.pinning.statement(sql);
                }
            }
            // A named statement may be any earlier Parse: its CommandComplete tag decides
            // (`pinning`), not the Parse seen last.
            b'B' if matches!(crate::wire::Frontend::decode(frame),
                Ok(crate::wire::Frontend::Bind { statement, .. }) if !statement.is_empty()) =>
            {
                self.pending.clear();
            }
            _ => {}
        }
    }

    fn observe_completion(&mut self, tag: &str) {
        // `SELECT 1`: a `SELECT set_config(...)` that `settings` follows.
        let follows = matches!(tag, "SET" | "RESET" | "DISCARD ALL" | "SELECT 1");
        // A BEGIN changes no setting: a change the client sent after it in the same batch (pgjdbc
        // without autocommit sends its BEGIN with the transaction's first statement) is still to
        // be answered.
        let pending = if tag == "BEGIN" {
            None
        } else {
            self.pending.pop_front()
        };
        match pending {
            Some(change) if follows => {
                if change == Change::ResetAll && tag == "DISCARD ALL" {
                    self.prepared.forget_all();
                }
                if change != Change::Local {
                    self.dirty = true;
                }
                self.uncommitted.change(change);
                let outcome = self
                    .uncommitted
                    .observe(ServerEvent::CommandComplete { tag });
                self.settle(outcome);
            }
            _ => {
                let outcome = self
                    .uncommitted
                    .observe(ServerEvent::CommandComplete { tag });
                self.settle(outcome);
                self.pinning.completion(tag);
            }
        }
    }

    fn observe_ready(&mut self, status: u8) {
        self.idle = status == b'I';
        let outcome = self.uncommitted.observe(ServerEvent::Ready { status });
        self.settle(outcome);
    }

    fn observe_parameter(&mut self, body: &[u8]) {
        self.reported.observe(body);
        self.prepared.parameter_reported(body);
    }

    fn observe_notice(&mut self, body: &[u8]) -> bool {
        let pins = hidden_state::pins(body);
        if pins {
            self.pinning.pin(hidden_state::REASON);
        }
        pins
    }

    fn keeps(&self) -> bool {
        self.pinning.pinned()
    }

    fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.pools.config.idle_in_transaction_timeout()
    }
}
