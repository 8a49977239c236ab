//! `maschera serve --config FILE [--log-format text|json]`: sets up logging, loads the configuration
//! and runs the proxy until SIGTERM/SIGINT. Not for: the proxy itself (see `server`).

use crate::config::{Config, LogFormat};
use crate::server::{self, Proxy};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Log format on standard error; overrides `[log] format`.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    init_tracing(args.log_format.unwrap_or(config.log.format));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let proxy = Arc::new(Proxy::new(config)?);
        server::run(proxy).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Operational logs on standard error; the level comes from `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
