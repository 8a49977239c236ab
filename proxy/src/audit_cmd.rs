//! (placeholder subcommand, owned by a work stream; replace)
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {}

pub fn run(_args: AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
