//! `maschera crm load --upstream URL [--contacts N] [--seed S] [--no-schema]`: creates and fills the
//! reference CRM with `crm::load` and prints the rows per table. Not for: the generator (see `crm`).

use crate::cli::runtime::{Flavor, block_on};
use crate::ops::crm::{CrmOptions, DEFAULT_CONTACTS, DEFAULT_SEED};
use anyhow::Result;
use std::process::ExitCode;

/// `maschera crm ...`
#[derive(clap::Args, Debug)]
pub struct CrmArgs {
    #[command(subcommand)]
    command: CrmCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CrmCommand {
    /// Create the reference CRM schema and fill it with deterministic generated data.
    Load(LoadArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// PostgreSQL URI of the (empty) target database, with rights to create tables.
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    upstream: String,
    /// Number of contacts; the other tables scale with it (about 2 consents, 1 deal, 3 interactions,
    /// 0.5 tickets per contact, 5% with health records, 1% with judicial records).
    #[arg(long, default_value_t = DEFAULT_CONTACTS)]
    contacts: u64,
    /// Seed: the same seed and scale give byte-identical data.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Do not create the schema; load into the tables that already exist.
    #[arg(long)]
    no_schema: bool,
}

pub fn run(args: CrmArgs) -> Result<ExitCode> {
    let CrmCommand::Load(args) = args.command;
    let options = CrmOptions {
        contacts: args.contacts,
        seed: args.seed,
        create_schema: !args.no_schema,
    };
    block_on(Flavor::MultiThread, load(&args.upstream, options))
}

async fn load(upstream: &str, options: CrmOptions) -> Result<ExitCode> {
    let client = crate::admin::policy_apply::connect(upstream).await?;
    let started = std::time::Instant::now();
    let stats = crate::ops::crm::load(&client, &options).await?;
    for (table, rows) in &stats.rows {
        println!("{table:<17} {rows:>10} rows");
    }
    println!(
        "loaded {} rows in {:.1} s",
        stats.total(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
