//! `maschera end-user token`: prints a signed token for a user of the users file, for the demo,
//! scripts, tests and a DBA's own checks.
//! Not for: signing itself (see `sign`).

use crate::config::Config;
use crate::users::UserStore;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EndUserArgs {
    #[command(subcommand)]
    command: EndUserCommand,
}

#[derive(clap::Subcommand, Debug)]
enum EndUserCommand {
    /// Print a token for an end user of the users file (its role and attributes), signed with the
    /// first key of `[end_users]` that has a `private_key` or `secret_env`.
    Token {
        /// The proxy's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The user of the users file the token is for.
        #[arg(long, value_name = "NAME")]
        end_user: String,
        /// Seconds the token lives (at most `[end_users] max_lifetime_seconds`).
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        ttl: u64,
    },
}

pub fn run(args: EndUserArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EndUserCommand::Token {
            config,
            end_user,
            ttl,
        } => {
            let config = Config::load(&config)?;
            let end_users = config
                .end_users
                .as_ref()
                .context("the configuration has no [end_users] section")?;
            let users = UserStore::load(&config.users.file)?;
            let token = super::sign::token_for_user(end_users, &users, &end_user, ttl)?;
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
