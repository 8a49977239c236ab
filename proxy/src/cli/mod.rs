//! The command line: one subcommand per job, each handled by its `*_cmd` module, which parses its
//! arguments (clap appears only in these modules), fills in the plain options of the library that does
//! the work and runs it on the runtime `runtime` builds. Not for: any logic beyond dispatching.

pub(crate) mod audit_cmd;
pub(crate) mod crm_cmd;
pub(crate) mod demo_cmd;
pub(crate) mod discover_cmd;
pub(crate) mod dump_cmd;
pub(crate) mod lifecycle_cmd;
pub(crate) mod policy_cmd;
pub(crate) mod runtime;
pub(crate) mod serve_cmd;
pub(crate) mod user_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "maschera",
    version,
    about = "GDPR PostgreSQL proxy: masks, row filters and an access log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy.
    Serve(crate::cli::serve_cmd::ServeArgs),
    /// Manage the proxy's users file (SCRAM verifiers only, never passwords).
    User(crate::cli::user_cmd::UserArgs),
    /// End users behind application logins: `end-user token` prints a signed token.
    EndUser(crate::end_user::cmd::EndUserArgs),
    /// Validate, apply and explain a policy file.
    Policy(crate::cli::policy_cmd::PolicyArgs),
    /// Verify, search and report on the access log.
    Audit(crate::cli::audit_cmd::AuditArgs),
    /// The reference CRM: `crm load` creates and fills it with deterministic data.
    Crm(crate::cli::crm_cmd::CrmArgs),
    /// Find columns that look personal and propose a policy skeleton for them.
    Discover(crate::cli::discover_cmd::DiscoverArgs),
    /// Everything on this machine with no set-up: a private PostgreSQL with the reference CRM, its
    /// policy and demo users, behind the proxy, until Ctrl-C.
    Demo(crate::cli::demo_cmd::DemoArgs),
    /// Write schema and data as one role sees them (masked, filtered), loadable with `psql -f`.
    Dump(crate::cli::dump_cmd::DumpArgs),
    /// Erase one data subject and every row that refers to it, in one transaction (GDPR Art. 17).
    Forget(crate::cli::lifecycle_cmd::ForgetArgs),
    /// A data subject's rights: `subject export` writes everything held about one person (GDPR Art. 15, 20).
    Subject(crate::cli::lifecycle_cmd::SubjectArgs),
    /// Apply the policy's retention rules: delete or mask rows older than their period, in batches.
    Retention(crate::cli::lifecycle_cmd::RetentionArgs),
}

/// Entry point of the binary: parses the arguments, runs the subcommand, and maps errors to exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => crate::cli::serve_cmd::run(args),
        Command::User(args) => crate::cli::user_cmd::run(args),
        Command::EndUser(args) => crate::end_user::cmd::run(args),
        Command::Policy(args) => crate::cli::policy_cmd::run(args),
        Command::Audit(args) => crate::cli::audit_cmd::run(args),
        Command::Crm(args) => crate::cli::crm_cmd::run(args),
        Command::Discover(args) => crate::cli::discover_cmd::run(args),
        Command::Demo(args) => crate::cli::demo_cmd::run(args),
        Command::Dump(args) => crate::cli::dump_cmd::run(args),
        Command::Forget(args) => crate::cli::lifecycle_cmd::forget(args),
        Command::Retention(args) => crate::cli::lifecycle_cmd::retention(args),
        Command::Subject(args) => crate::cli::lifecycle_cmd::subject(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command};
    use clap::{CommandFactory, Parser};

    /// clap's own consistency checks over every subcommand's arguments.
    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lifecycle_arguments_parse_and_a_zero_batch_is_refused() {
        let cli = Cli::try_parse_from([
            "maschera",
            "forget",
            "p.toml",
            "--upstream",
            "postgres://h/d",
            "--table",
            "contacts",
            "--where",
            "id = 1",
            "--dry-run",
        ])
        .unwrap();
        let Command::Forget(args) = cli.command else {
            panic!("not forget");
        };
        assert!(args.dry_run);
        assert_eq!(args.subject.condition, "id = 1");
        assert_eq!(args.subject.key_env, "MASCHERA_AUDIT_KEY");
        let zero = Cli::try_parse_from([
            "maschera",
            "retention",
            "run",
            "p.toml",
            "--upstream",
            "postgres://h/d",
            "--batch",
            "0",
        ]);
        assert!(zero.is_err(), "--batch 0 is refused");
    }
}
