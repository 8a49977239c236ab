//! `maschera dump FILE --upstream URL --role ROLE`: its arguments, turned into `dump::DumpOptions` and
//! run on a one-thread runtime. Not for: what the dump writes (see `dump`).

use crate::cli::runtime::{Flavor, block_on};
use crate::ops::dump::{self, DumpOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The policy file (already installed with `maschera policy apply`).
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may `SET ROLE` to the role's login and read the tables and
    /// the pseudonym key (the owner that ran `policy apply`, or a superuser).
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    pub upstream: String,
    /// The policy role whose view of the data is dumped, e.g. `support`.
    #[arg(long)]
    pub role: String,
    /// An attribute of the role's row filters, `name=value` (repeatable), e.g. `--attr region=north`.
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
    /// The prefix `maschera policy apply --login-prefix` gave the role logins (default `maschera_`).
    #[arg(long, default_value = "")]
    pub login_prefix: String,
}

pub fn run(args: DumpArgs) -> Result<ExitCode> {
    let options = DumpOptions {
        file: args.file,
        upstream: args.upstream,
        role: args.role,
        attributes: args.attributes,
        login_prefix: args.login_prefix,
    };
    block_on(Flavor::CurrentThread, dump::run(options))
}
