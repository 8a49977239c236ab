//! `maschera demo [--listen ADDR] [--contacts N] [--json] [--pool-mode session|transaction]`: its arguments, turned into
//! `demo::DemoOptions` and run on a multi-thread runtime; the demo's folder is removed after the
//! runtime is gone. Not for: what the demo sets up (see `demo`).

use crate::cli::runtime::{Flavor, block_on};
use crate::ops::demo::{self, DemoOptions};
use crate::pool::PoolMode;
use anyhow::Result;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address the proxy listens on (port 0: any free port; the one in use is printed).
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// Number of generated contacts in the CRM (the other tables scale with it).
    #[arg(long, default_value_t = crate::ops::crm::DEFAULT_CONTACTS,
          value_parser = clap::value_parser!(u64).range(1..=crate::ops::crm::MAX_CONTACTS))]
    pub contacts: u64,
    /// Print one line of JSON (proxy, upstream, audit_log, users) once the proxy accepts connections,
    /// instead of the text for a person.
    #[arg(long)]
    pub json: bool,
    /// `transaction`: every demo user is served in transaction mode with the default pool size
    /// (`[pool]`, see the README's Pooling).
    #[arg(long, value_enum, default_value_t = PoolModeArg::Session)]
    pub pool_mode: PoolModeArg,
}

/// `--pool-mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolModeArg {
    Session,
    Transaction,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    demo::init_tracing();
    let options = DemoOptions {
        listen: args.listen,
        contacts: args.contacts,
        json: args.json,
        pool_mode: match args.pool_mode {
            PoolModeArg::Session => PoolMode::Session,
            PoolModeArg::Transaction => PoolMode::Transaction,
        },
    };
    // `block_on` drops the runtime, with the proxy's background tasks, before the folder goes.
    if let Some(running) = block_on(Flavor::MultiThread, demo::run(options))? {
        demo::remove(running);
    }
    Ok(ExitCode::SUCCESS)
}
