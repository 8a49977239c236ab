//! The listener: accepts client connections, enforces the connection limit, runs each connection
//! through startup, authentication, the upstream login and the relay, and shuts down gracefully on
//! SIGTERM/SIGINT (stop accepting, close idle sessions, give busy ones the shutdown timeout).
//! Not for: the protocol details of any phase (see `startup`, `client_auth`, `upstream`, `session`).

pub(crate) mod workers;

use crate::config::Config;
use crate::enforce::admission::Admission;
use crate::enforce::audit_trail::{self, SessionIdentity};
use crate::enforce::routing::Route;
use crate::enforce::{self, SessionSetup};
use crate::metrics as m;
use crate::net::cancel::{CancelRegistry, Registration};
use crate::net::client_auth;
use crate::net::lockout::{Lockout, LockoutSettings};
use crate::net::startup::{self, ClientTlsSetup, Opening, Startup};
use crate::net::tls;
use crate::net::upstream::{Login, UpstreamTarget};
use crate::session::{self, RelaySettings, SessionEnd};
use crate::users::{User, UserStore};
use crate::wire::frame;
use anyhow::{Context, Result};
use pgwire::messages::startup::BackendKeyData;
use pgwire::messages::startup::SecretKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::field::Empty;
use tracing::{Instrument, debug, info, info_span, warn};
use workers::Workers;

/// Startup parameters passed on to PostgreSQL; the rest (and `user`/`database`) are the proxy's to set.
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "options",
];

/// Everything a connection needs, shared by all of them.
pub struct Proxy {
    config: Config,
    tls: ClientTlsSetup,
    upstream: Arc<UpstreamTarget>,
    login: Login,
    users: UserStore,
    lockout: Lockout,
    cancels: Arc<CancelRegistry>,
    next_session: AtomicU64,
    routing: crate::enforce::routing::Routing,
    audit: Option<Arc<crate::audit::AuditLog>>,
    admission: Admission,
    /// With `[end_users]`: what application users' sessions share (see `end_user`).
    end_users: Option<Arc<crate::end_user::hook::EndUsers>>,
    /// The pools of transaction mode.
    pools: Arc<crate::pool::Pools>,
}

impl Proxy {
    /// Checks and loads everything the configuration names (TLS files, users file, upstream login).
    pub fn new(config: Config) -> Result<Proxy> {
        let acceptor = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) if config.tls.mode != crate::config::ClientTlsMode::Off => {
                Some(TlsAcceptor::from(tls::server_config(cert, key)?))
            }
            _ => None,
        };
        let users = UserStore::load(&config.users.file)?;
        let lockout = Lockout::new(LockoutSettings {
            max_failures: config.auth.max_failures,
            window: Duration::from_secs(config.auth.failure_window_seconds),
            cooldown: Duration::from_secs(config.auth.lockout_seconds),
        });
        let end_users = crate::end_user::hook::EndUsers::load(&config, &users)?;
        let upstream = Arc::new(UpstreamTarget::new(&config.upstream)?);
        Ok(Proxy {
            end_users,
            tls: ClientTlsSetup {
                mode: config.tls.mode,
                acceptor,
            },
            pools: Arc::new(crate::pool::Pools::new(
                upstream.clone(),
                config.pool.clone(),
            )),
            upstream,
            login: config.upstream.login()?,
            users,
            lockout,
            cancels: Arc::new(CancelRegistry::default()),
            next_session: AtomicU64::new(1),
            routing: crate::enforce::routing::Routing::default(),
            audit: None,
            admission: Admission::new(&config.limits),
            config,
        })
    }

    /// Loads and compiles the policy of each served database (`[policy]`, `[databases.<name>]`) and
    /// watches them for reloads (recorded in the access log when [`Proxy::with_audit`] came first).
    pub async fn with_policy(mut self) -> Result<Proxy> {
        self.routing = crate::enforce::routing::Routing::load(&self.config)
            .await
            .context("loading the policy")?;
        for (database, handle) in self.routing.served() {
            let state = handle.current();
            let unknown: std::collections::BTreeSet<&str> = self
                .users
                .users()
                .map(|u| u.role.as_str())
                // An application user with no role of its own is served without one.
                .filter(|role| !role.is_empty() && state.role(role).is_none())
                .collect();
            if !unknown.is_empty() {
                warn!(database, roles = ?unknown, "users with these roles cannot log in to this database: its policy does not name them");
            }
            handle.clone().watch(self.audit.clone())?;
        }
        Ok(self)
    }

    /// Opens the configured `[audit]` access log (if any).
    pub fn with_audit(mut self) -> Result<Proxy> {
        if let Some(config) = &self.config.audit {
            let log = crate::audit::AuditLog::open(config).context("opening the access log")?;
            self.audit = Some(Arc::new(log));
        }
        Ok(self)
    }

    /// Writes the access log's shutdown checkpoint.
    pub async fn close_audit(&self) -> Result<()> {
        if let Some(log) = &self.audit {
            log.shutdown().await.context("closing the access log")?;
        }
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The access log, if configured (for the retention schedule).
    pub fn audit(&self) -> Option<Arc<crate::audit::AuditLog>> {
        self.audit.clone()
    }

    /// The upstream target (for the health endpoint).
    pub fn upstream(&self) -> Arc<UpstreamTarget> {
        self.upstream.clone()
    }
}

/// Listens on the configured address until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(proxy: Arc<Proxy>) -> Result<()> {
    // Signals first: a SIGTERM that arrives while the proxy is still starting stops it cleanly.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let limits = &proxy.config.limits;
    // Before listening, so that no client is accepted before its session limits are known.
    proxy.admission.read_upstream_slots(&proxy.upstream).await;
    let listener = TcpListener::bind(&proxy.config.listen)
        .await
        .with_context(|| format!("listening on {}", proxy.config.listen))?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let handler: workers::Handler = {
        let proxy = proxy.clone();
        Arc::new(move |tcp, addr| {
            let id = proxy.next_session.fetch_add(1, Ordering::Relaxed);
            let span = info_span!("session", id, role = Empty);
            let session = handle(
                proxy.clone(),
                tcp,
                addr,
                id,
                slots.clone(),
                shutdown_rx.clone(),
            );
            Box::pin(session.instrument(span))
        })
    };
    policy::rewrite::limits::set_limits(limits.parse_limits()).map_err(anyhow::Error::msg)?;
    crate::session::parse_pool::configure(limits.parse_threads, limits.parse_threads_per_user)
        .context("starting the parse threads")?;
    let workers = Workers::start(limits.worker_threads, handler).context("starting the workers")?;
    let reaper = tokio::spawn(proxy.pools.clone().reap_forever());
    info!(addr = %listener.local_addr()?, "accepting PostgreSQL clients");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => workers.dispatch(tcp, addr),
                Err(err) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    info!(
        sessions = workers.active(),
        "shutting down: no new connections, waiting for running sessions"
    );
    let drained = tokio::time::timeout(proxy.config.shutdown_timeout(), workers.idle()).await;
    if drained.is_err() {
        warn!(
            sessions = workers.active(),
            "shutdown timeout reached; closing the remaining sessions"
        );
        workers.abort();
    }
    workers.join().await;
    reaper.abort();
    info!("stopped");
    Ok(())
}

async fn handle(
    proxy: Arc<Proxy>,
    tcp: TcpStream,
    addr: SocketAddr,
    id: u64,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
    if let Err(err) = tcp.set_nodelay(true) {
        debug!(error = %err, "TCP_NODELAY");
    }
    let opened = tokio::time::timeout(
        proxy.config.auth_timeout(),
        open(&proxy, tcp, addr, id, &slots),
    )
    .await;
    let (client, user, who, _slot) = match opened {
        Err(_) => {
            metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "auth_timeout").increment(1);
            debug!("authentication timed out");
            return;
        }
        Ok(Err(err)) => {
            debug!(error = %err, "connection ended before a session started");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(opened))) => opened,
    };
    if let Err(err) = serve(&proxy, client, &user, who, shutdown).await {
        info!(error = %err, "session ended with an error");
    }
}

/// Startup and authentication (recorded in the access log). `None` when the connection was a cancel
/// request or was refused; otherwise the client, the authenticated user, who the session is for the
/// access log and its connection slot.
async fn open(
    proxy: &Proxy,
    tcp: TcpStream,
    addr: SocketAddr,
    id: u64,
    slots: &Arc<Semaphore>,
) -> Result<Option<(Startup, User, SessionIdentity, OwnedSemaphorePermit)>> {
    let mut client = match startup::negotiate(tcp, &proxy.tls).await? {
        Opening::Cancel(key) => {
            if let Some(ticket) = proxy.cancels.lookup(key) {
                metrics::counter!(m::CANCELS_TOTAL).increment(1);
                match proxy.upstream.cancel(ticket.key).await {
                    Ok(()) => ticket.delivered(),
                    Err(err) => warn!(error = %err, "forwarding a cancel request failed"),
                }
            }
            return Ok(None);
        }
        Opening::Session(startup) => startup,
    };
    // A slot is taken once the client asks for a session (probes and cancels do not count).
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "max_connections").increment(1);
        let message = format!(
            "sorry, too many clients already: the proxy serves at most {} connections",
            proxy.config.limits.max_connections
        );
        frame::send_fatal(&mut client.stream, "53300", &message).await;
        return Ok(None);
    };
    let user_name = client.param("user").unwrap_or_default().to_owned();
    let database =
        crate::enforce::routing::requested_database(&client.params, &user_name).to_owned();
    let mut who = SessionIdentity {
        session: id.to_string(),
        client: addr.to_string(),
        user: user_name.clone(),
        role: String::new(),
        database,
        application_name: client.param("application_name").map(str::to_owned),
        end_user: None,
    };
    let authenticated = client_auth::authenticate(
        &mut client.stream,
        &user_name,
        addr.ip(),
        &proxy.users,
        &proxy.lockout,
    )
    .await;
    if let Some(log) = &proxy.audit {
        // Queued, not awaited: the session's statement records come later in the same queue, so
        // once one of them is durable, so is the login.
        for event in audit_trail::login_events(&who, &authenticated) {
            drop(log.submit(event));
        }
    }
    let user = match authenticated {
        Ok(user) => user,
        Err(err) => {
            debug!(error = %err, "authentication failed");
            return Ok(None);
        }
    };
    who.role = user.role.clone();
    Ok(Some((client, user, who, slot)))
}

/// Logs in upstream, greets the client like PostgreSQL would, and relays through the session's hook
/// (see `enforce::session_setup` and `session_hook`), which the user's role and attributes decide.
async fn serve(
    proxy: &Proxy,
    mut client: Startup,
    user: &User,
    who: SessionIdentity,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    // The role, not the user's name: the access log tells who the session (by its id) was.
    tracing::Span::current().record("role", user.role.as_str());
    // Transaction pooling (the user's `pool_mode`, else `[pool] mode`): counted apart by the
    // session limits, served from the pools below.
    let pooled = proxy
        .users
        .pool_mode(&user.name)
        .unwrap_or(proxy.config.pool.mode)
        == crate::pool::PoolMode::Transaction;
    let admitted = match proxy.admission.admit(&user.name, &user.role, pooled) {
        Ok(admitted) => admitted,
        Err(refused) => {
            metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => refused.reason).increment(1);
            info!(
                code = refused.code,
                limit = refused.reason,
                "login refused by a session limit"
            );
            frame::send_fatal(&mut client.stream, refused.code, &refused.message).await;
            return Ok(());
        }
    };
    let params: Vec<(String, String)> = client
        .params
        .iter()
        .filter(|(k, _)| FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    let database = who.database.clone();
    let rate = proxy.admission.rate_limit(&admitted);
    let application = proxy.users.application(&user.name);
    let setup = match proxy.routing.route(&database, &user.role) {
        Ok(Route::Served(policy)) if application.is_some() => {
            let audit = (proxy.audit.clone(), who);
            let login = (proxy.login.clone(), params);
            let end_users = proxy.end_users.clone();
            let client_params = client.params.clone();
            crate::end_user::hook::application_setup(
                end_users,
                policy,
                audit,
                rate,
                user,
                client_params,
                login,
            )
        }
        Ok(Route::Served(policy)) => {
            let audit = proxy.audit.as_ref().map(|log| (log, who));
            let (login, client_params) = (&proxy.login, &client.params);
            enforce::session_setup(&policy, audit, rate, user, client_params, login, params)
        }
        Ok(Route::PassThrough) if application.is_some() => Err(enforce::LoginRefusal {
            code: "28000",
            message: format!(
                "database \"{database}\" has no Maschera policy: an application user acts for end users only where a policy serves them"
            ),
        }),
        Ok(Route::PassThrough) => Ok(SessionSetup::pass_through(
            proxy.login.clone(),
            params,
            rate,
        )),
        Err(refusal) => {
            metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_REASON => "database").increment(1);
            Err(refusal)
        }
    };
    let mut setup = match setup {
        Ok(setup) => setup,
        Err(refusal) => {
            info!(role = %user.role, code = refusal.code, reason = %refusal.message, "login refused by the policy");
            frame::send_fatal(&mut client.stream, refusal.code, &refusal.message).await;
            return Ok(());
        }
    };
    if pooled {
        let key = crate::session::upstream_source::UpstreamKey {
            login: setup.login,
            database,
            params: setup.params,
        };
        let settings = RelaySettings {
            max_frame: proxy.config.limits.max_frame_bytes,
            shutdown,
            role: user.role.clone(),
            errors: setup.errors.take(),
        };
        let (pools, cancels, hook) = (&proxy.pools, &proxy.cancels, setup.hook.as_mut());
        return crate::pool::session::serve(pools, cancels, client.stream, key, hook, settings)
            .await;
    }
    let connected = proxy
        .upstream
        .connect_to(&setup.login, &database, &setup.params)
        .await;
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(err) => {
            let (code, message) = err.for_client(&setup.login.user);
            if code != "3D000" {
                warn!(error = %err, login = %setup.login.user, "upstream login failed");
            }
            frame::send_fatal(&mut client.stream, code, &message).await;
            return Ok(());
        }
    };
    let upstream_key = upstream.key;
    let registration: Registration = proxy.cancels.register(upstream_key);
    let key = registration.client_key();
    let mut greeting = upstream.greeting;
    greeting.extend_from_slice(&frame::encode(&BackendKeyData::new(
        key.pid,
        SecretKey::I32(key.secret),
    )));
    greeting.extend_from_slice(&frame::ready_for_query(upstream.status));
    client.stream.write_all(&greeting).await?;
    info!(role = %user.role, encrypted = client.encrypted, "session started");
    let settings = RelaySettings {
        max_frame: proxy.config.limits.max_frame_bytes,
        shutdown,
        role: user.role.clone(),
        errors: setup.errors.take(),
    };
    metrics::gauge!(m::SESSIONS_ACTIVE).increment(1.0);
    let ended = match setup.key.take() {
        // An application user: a connection per end-user upstream (see `end_user::source`).
        Some(key) => {
            let source =
                crate::end_user::source::SessionConnections::new(proxy.upstream(), key.clone())
                    .cancelled_through(&registration);
            let conn = crate::end_user::source::SessionConn {
                key,
                stream: upstream.stream,
                cancel: upstream_key,
                statements: Default::default(),
            };
            let (hook, conn) = (setup.hook.as_mut(), Some(conn));
            session::relay_through(client.stream, source, conn, upstream.status, hook, settings)
                .await
        }
        None if proxy.config.upstream.plan_cache => {
            let cap = proxy.config.pool.prepared_statements_per_connection;
            let source = crate::pool::prepared::plan_cache::CachedSession::new(cap);
            let (hook, conn) = (setup.hook.as_mut(), Some(upstream.stream));
            session::relay_through(client.stream, source, conn, upstream.status, hook, settings)
                .await
        }
        None => {
            let hook = setup.hook.as_mut();
            session::relay(
                client.stream,
                upstream.stream,
                upstream.status,
                hook,
                settings,
            )
            .await
        }
    };
    metrics::gauge!(m::SESSIONS_ACTIVE).decrement(1.0);
    // The backend serving the session last (an application session moves between its connections).
    let upstream_key = proxy
        .cancels
        .lookup(registration.client_key())
        .map_or(upstream_key, |ticket| ticket.key);
    drop(registration);
    match ended {
        Ok(end) => {
            debug!(?end, "session ended");
            if end == SessionEnd::ClientLeftBusy {
                // Stop the work nobody waits for any more.
                if let Err(err) = proxy.upstream.cancel(upstream_key).await {
                    debug!(error = %err, "cancelling the abandoned statement failed");
                }
            }
            if end == SessionEnd::ServerClosed {
                info!("PostgreSQL closed the session");
            }
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}
