//! (placeholder subcommand, owned by a work stream; replace)
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct UserArgs {}

pub fn run(_args: UserArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
