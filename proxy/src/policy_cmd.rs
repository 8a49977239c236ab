//! (placeholder subcommand, owned by a work stream; replace)
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct PolicyArgs {}

pub fn run(_args: PolicyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
