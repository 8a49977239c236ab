//! `maschera serve --config FILE [--log-format text|json]`: sets up logging, loads the configuration
//! and runs the proxy until SIGTERM/SIGINT. Not for: the proxy itself (see `server`).

use crate::cli::runtime::{Flavor, block_on};
use crate::config::{Config, LogFormat};
use crate::server::{self, Proxy};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Log format on standard error; overrides `[log] format`.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format`: the values of `[log] format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    init_tracing(args.log_format.map_or(config.log.format, LogFormat::from));
    block_on(Flavor::CurrentThread, async {
        let proxy = Arc::new(Proxy::new(config)?.with_audit()?.with_policy().await?);
        if let Some(metrics) = &proxy.config().metrics {
            let addr: SocketAddr = metrics.listen.parse().with_context(|| {
                format!("[metrics] listen = {:?} is not an address", metrics.listen)
            })?;
            let handle = crate::metrics::install();
            let upstream = proxy.upstream();
            let probe = move || {
                let upstream = upstream.clone();
                async move { upstream.probe().await }
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?;
            tracing::info!(%addr, "serving /metrics and /health");
            tokio::spawn(async move {
                if let Err(err) = crate::metrics::serve_listener(listener, handle, probe).await {
                    tracing::error!(error = %err, "metrics endpoint stopped");
                }
            });
        }
        schedule_retention(&proxy)?;
        server::run(proxy.clone()).await?;
        proxy.close_audit().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the `[retention]` schedule, if configured.
fn schedule_retention(proxy: &Proxy) -> Result<()> {
    let config = proxy.config();
    let Some(retention) = &config.retention else {
        return Ok(());
    };
    let policy = retention
        .policy
        .clone()
        .or_else(|| config.policy.as_ref().map(|p| p.file.clone()))
        .context("[retention] needs a policy file")?;
    crate::ops::lifecycle::schedule::Schedule {
        config: retention.clone(),
        policy,
        upstream: proxy.upstream(),
        audit: proxy.audit(),
    }
    .spawn()
}

/// Operational logs on standard error; the level comes from `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Dependencies are capped at warnings whatever RUST_LOG says (see `log_cap`).
    let _ = match format {
        LogFormat::Text => builder
            .finish()
            .with(crate::ops::log_cap::layer())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .finish()
            .with(crate::ops::log_cap::layer())
            .try_init(),
    };
}
