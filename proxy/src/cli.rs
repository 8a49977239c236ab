//! The command line: one subcommand per job, each handled by the module that owns it.
//! Not for: any logic beyond dispatching; each subcommand's arguments live beside its code.

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
    Serve(crate::serve_cmd::ServeArgs),
    /// Manage the proxy's users file (SCRAM verifiers only, never passwords).
    User(crate::user_cmd::UserArgs),
    /// Validate, apply and explain a policy file.
    Policy(crate::policy_cmd::PolicyArgs),
    /// Verify, search and report on the access log.
    Audit(crate::audit_cmd::AuditArgs),
    /// The reference CRM: `crm load` creates and fills it with deterministic data.
    Crm(crate::crm::CrmArgs),
    /// Find columns that look personal and propose a policy skeleton for them.
    Discover(crate::discover::DiscoverArgs),
    /// Everything on this machine with no set-up: a private PostgreSQL with the reference CRM, its
    /// policy and demo users, behind the proxy, until Ctrl-C.
    Demo(crate::demo::DemoArgs),
    /// Write schema and data as one role sees them (masked, filtered), loadable with `psql -f`.
    Dump(crate::dump::DumpArgs),
    /// Erase one data subject and every row that refers to it, in one transaction (GDPR Art. 17).
    Forget(crate::lifecycle::forget::ForgetArgs),
    /// A data subject's rights: `subject export` writes everything held about one person (GDPR Art. 15, 20).
    Subject(crate::lifecycle::export::SubjectArgs),
    /// Apply the policy's retention rules: delete or mask rows older than their period, in batches.
    Retention(crate::lifecycle::retention::RetentionArgs),
}

/// Entry point of the binary: parses the arguments, runs the subcommand, and maps errors to exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => crate::serve_cmd::run(args),
        Command::User(args) => crate::user_cmd::run(args),
        Command::Policy(args) => crate::policy_cmd::run(args),
        Command::Audit(args) => crate::audit_cmd::run(args),
        Command::Crm(args) => crate::crm::run(args),
        Command::Discover(args) => crate::discover::run(args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Dump(args) => crate::dump::run(args),
        Command::Forget(args) => crate::lifecycle::forget::run(args),
        Command::Retention(args) => crate::lifecycle::retention::run(args),
        Command::Subject(args) => crate::lifecycle::export::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the async work of a one-shot subcommand (policy, dump, forget, retention) on a
/// single-threaded runtime.
pub fn block_on(
    work: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}
