//! Discovery of personal data (`maschera discover`): samples every table of a live database and proposes
//! a policy draft: a category for every column that looks personal by name or content (with its evidence
//! and confidence), the framework's own tables and secrets, and roles from a template with a rule for
//! every table. Not for: enforcing anything; its output is a proposal for a DBA to review; the command
//! line (see `discover_cmd`).

pub mod detect;
pub mod framework;
pub mod history;
pub mod json;
pub mod names;
pub mod national_id;
pub mod propose;
pub mod sample;
pub mod template;

/// Rows sampled per table by default.
pub const DEFAULT_SAMPLE: usize = 1000;

/// Samples every table of `schema` and proposes a category for every column that looks personal.
pub async fn discover(
    client: &tokio_postgres::Client,
    schema: &str,
    sample: usize,
) -> Result<Vec<propose::TableProposal>, tokio_postgres::Error> {
    let tables = sample::sample_schema(client, schema, sample).await?;
    let mut proposals = propose::propose(tables, today());
    history::copy_findings(&mut proposals);
    Ok(proposals)
}

/// Today as days since 1970-01-01.
fn today() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    seconds / 86_400
}
