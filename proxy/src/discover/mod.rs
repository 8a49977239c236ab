//! Discovery of personal data (`maschera discover`): samples every table of a live database and proposes
//! a policy draft: a category for every column that looks personal by name or content (with its evidence
//! and confidence), the framework's own tables and secrets, and roles from a template with a rule for
//! every table. Not for: enforcing anything; its output is a proposal for a DBA to review.

pub mod detect;
pub mod framework;
pub mod json;
pub mod names;
pub mod national_id;
pub mod propose;
pub mod sample;
pub mod template;

use std::process::ExitCode;

/// Rows sampled per table by default.
pub const DEFAULT_SAMPLE: usize = 1000;

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
    #[arg(long, value_enum, default_value_t = template::Template::Reader)]
    template: template::Template,
    /// Write the proposed policy to this file instead of standard output.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

/// Samples every table of `schema` and proposes a category for every column that looks personal.
pub async fn discover(
    client: &tokio_postgres::Client,
    schema: &str,
    sample: usize,
) -> Result<Vec<propose::TableProposal>, tokio_postgres::Error> {
    let tables = sample::sample_schema(client, schema, sample).await?;
    Ok(propose::propose(tables, today()))
}

/// Today as days since 1970-01-01.
fn today() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    seconds / 86_400
}

pub fn run(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.sample > 0, "--sample must be at least 1");
    let runtime = tokio::runtime::Runtime::new()?;
    let text = runtime.block_on(async {
        let client = crate::policy_apply::connect(&args.upstream).await?;
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
