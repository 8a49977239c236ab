//! `maschera demo`: the whole product on one machine with no set-up. It starts a private PostgreSQL in a
//! temporary folder, loads the reference CRM, applies `examples/crm/policy.toml`, creates the demo users,
//! serves the proxy (TLS optional, self-signed certificate) and prints how to connect; on SIGINT or
//! SIGTERM it stops everything and removes the folder. Not for: production (see `maschera serve`).

mod facts;
mod setup;

use crate::server::{self, Proxy};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::info;

pub use setup::{DEMO_USERS, Demo, DemoUser, POLICY};

/// What `maschera demo` serves.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Address the proxy listens on (port 0: any free port; the one in use is printed).
    pub listen: SocketAddr,
    /// Number of generated contacts in the CRM (1 to `crm::MAX_CONTACTS`).
    pub contacts: u64,
    /// Print one line of JSON once the proxy accepts connections, instead of the text for a person.
    pub json: bool,
    /// `[pool] mode` of the demo's proxy.
    pub pool_mode: crate::pool::PoolMode,
}

/// How long the proxy gets to start listening once everything is set up.
const LISTEN_LIMIT: Duration = Duration::from_secs(10);

/// Stops PostgreSQL and removes the demo's folder: call it once the runtime that ran [`run`] is
/// dropped, with its proxy's background tasks (the policy watcher would otherwise see the folder go and
/// try to reload).
pub fn remove(demo: Demo) {
    info!("stopping PostgreSQL and removing {}", demo.dir().display());
    drop(demo);
}

/// Progress on standard error; the proxy's own logs from warnings up unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,maschera::ops::demo=info"));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(crate::ops::log_cap::layer())
        .try_init();
}

/// The signals that end the demo, listened to from the start so that a signal during set-up also
/// stops PostgreSQL and removes the folder.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Sets up, serves until a signal, and hands back what must be removed with [`remove`] (`None` when a
/// signal came during set-up, which already removed it).
pub async fn run(args: DemoOptions) -> Result<Option<Demo>> {
    let started = Instant::now();
    let mut stop = StopSignals::install()?;
    let listen = concrete_listen_address(args.listen)?;
    // Dropping the set-up (on a signal) drops the PostgreSQL it started, which stops it and removes
    // its folder.
    let demo = tokio::select! {
        demo = setup::set_up(listen, args.contacts, args.pool_mode) => demo?,
        _ = stop.received() => {
            info!("stopped during set-up");
            return Ok(None);
        }
    };
    let proxy = Arc::new(
        Proxy::new(demo.config.clone())?
            .with_audit()?
            .with_policy()
            .await?,
    );
    let shutdown_limit = proxy.config().shutdown_timeout() + Duration::from_secs(2);
    let mut server = tokio::spawn(server::run(proxy.clone()));
    tokio::select! {
        ready = wait_accepting(listen, &mut server) => ready?,
        _ = stop.received() => {
            finish(server, shutdown_limit).await;
            proxy.close_audit().await?;
            return Ok(Some(demo));
        }
    }
    info!(
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "ready"
    );
    let facts = demo.facts();
    if args.json {
        facts.print_json()?;
    } else {
        facts.print_for_a_person();
    }
    tokio::select! {
        ended = &mut server => ended.context("the proxy task failed")??,
        _ = stop.received() => finish(server, shutdown_limit).await,
    }
    // The shutdown checkpoint: the log is sealed and `audit verify` says so.
    proxy.close_audit().await?;
    Ok(Some(demo))
}

/// The address to listen on, checked to be free (so that the readiness probe cannot reach another
/// server), with port 0 replaced by a free port so that the one printed is the one in use.
fn concrete_listen_address(mut addr: SocketAddr) -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr}; choose another address with --listen")
    })?;
    addr.set_port(probe.local_addr()?.port());
    Ok(addr)
}

/// Waits until the proxy accepts TCP connections (or fails to start).
async fn wait_accepting(addr: SocketAddr, server: &mut JoinHandle<Result<()>>) -> Result<()> {
    let deadline = Instant::now() + LISTEN_LIMIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the proxy did not start listening on {addr}");
        }
        tokio::select! {
            ended = &mut *server => {
                ended.context("the proxy task failed")??;
                bail!("the proxy stopped before accepting connections");
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// After a signal: the proxy received it too and shuts down gracefully; wait for that, within limits.
async fn finish(server: JoinHandle<Result<()>>, limit: Duration) {
    let abort = server.abort_handle();
    match tokio::time::timeout(limit, server).await {
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the proxy stopped with an error"),
        Ok(_) => {}
        Err(_) => abort.abort(),
    }
}
