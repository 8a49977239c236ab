//! `maschera discover --upstream URL [--sample N] [--schema S] [--template T] [-o FILE]`: samples a
//! live database with `discover` and prints or writes the proposed policy. Not for: finding personal
//! data or writing the proposal (see `discover`).

use crate::cli::runtime::{Flavor, block_on};
use crate::ops::discover::template::Template;
use crate::ops::discover::{DEFAULT_SAMPLE, discover, propose};
use clap::builder::PossibleValue;
use std::process::ExitCode;

/// `maschera discover`
#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    /// PostgreSQL URI of the database to inspect (read-only: discovery only runs SELECTs).
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    upstream: String,
    /// Rows sampled per table (a random sample on big tables).
    #[arg(long, default_value_t = DEFAULT_SAMPLE)]
    sample: usize,
    /// Schema whose tables are inspected.
    #[arg(long, default_value = "public")]
    schema: String,
    /// The roles the draft proposes: `reader` (a data protection officer and one restricted reader) or
    /// `crm` (a data protection officer, sales, support and analyst).
    #[arg(long, value_enum, default_value_t = Template::Reader)]
    template: Template,
    /// Write the proposed policy to this file instead of standard output.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

/// The templates `--template` accepts.
impl clap::ValueEnum for Template {
    fn value_variants<'a>() -> &'a [Self] {
        &[Template::Reader, Template::Crm]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Template::Reader => PossibleValue::new("reader").help(
                "A data protection officer (unrestricted) and one restricted `reader` that sees \
                 personal data masked",
            ),
            Template::Crm => PossibleValue::new("crm").help(
                "A data protection officer and a CRM's `sales`, `support` and `analyst` roles",
            ),
        })
    }
}

pub fn run(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.sample > 0, "--sample must be at least 1");
    let text = block_on(Flavor::CurrentThread, async {
        let client = crate::admin::policy_apply::connect(&args.upstream).await?;
        let proposals = discover(&client, &args.schema, args.sample).await?;
        anyhow::ensure!(
            !proposals.is_empty(),
            "schema {:?} has no tables (or does not exist)",
            args.schema
        );
        anyhow::Ok(propose::render(&proposals, args.sample, args.template))
    })?;
    match &args.output {
        Some(path) => std::fs::write(path, text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
