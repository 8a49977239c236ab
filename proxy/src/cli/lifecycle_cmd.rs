//! `maschera forget`, `maschera subject export` and `maschera retention run`: their arguments, turned
//! into the lifecycle's option structs and run on a one-thread runtime; also `--audit-config`, which
//! `policy apply` takes too. Not for: what the commands do (see `lifecycle`).

use crate::cli::runtime::{Flavor, block_on};
use crate::ops::lifecycle::export::{self, ExportOptions};
use crate::ops::lifecycle::forget::{self, ForgetOptions};
use crate::ops::lifecycle::retention::{self, RunOptions};
use crate::ops::lifecycle::subject::Selection;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where a command records what it did: the `[audit]` section of a proxy configuration file.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Proxy configuration file whose `[audit]` section names the access log; the event is recorded
    /// there (the log folder takes one writer at a time: run it where the proxy's log is not open, or
    /// give a folder of its own).
    #[arg(long)]
    pub audit_config: Option<PathBuf>,
}

/// The arguments that name a data subject, shared by `forget` and `subject export`.
#[derive(Args, Debug)]
pub struct SelectionArgs {
    /// The policy file.
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may read (export) or delete from (forget) every table
    /// concerned: the tables' owner or a superuser.
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    pub upstream: String,
    /// The table holding the data subject, e.g. `contacts`.
    #[arg(long)]
    pub table: String,
    /// One SQL boolean expression over that table's columns selecting exactly the subject's row.
    #[arg(long = "where", value_name = "CONDITION")]
    pub condition: String,
    /// Environment variable holding the key of the subject digest recorded in the access log
    /// (HMAC-SHA256 of the table and the subject's primary key).
    #[arg(long, default_value = "MASCHERA_AUDIT_KEY")]
    pub key_env: String,
}

impl From<SelectionArgs> for Selection {
    fn from(args: SelectionArgs) -> Selection {
        Selection {
            file: args.file,
            upstream: args.upstream,
            table: args.table,
            condition: args.condition,
            key_env: args.key_env,
        }
    }
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub subject: SelectionArgs,
    /// Print the plan (tables, rows, action) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub audit: AuditArgs,
}

#[derive(Args, Debug)]
pub struct SubjectArgs {
    #[command(subcommand)]
    pub command: SubjectCommand,
}

#[derive(Subcommand, Debug)]
pub enum SubjectCommand {
    /// Write everything held about one data subject, with what is done with it and who read it
    /// (GDPR Art. 15 access, Art. 20 portability).
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub subject: SelectionArgs,
    /// `json` (structured, for Art. 20) or `csv` (one line per value).
    #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
    pub format: String,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Access log files or folders to read "who saw it" from (default: the folder of --audit-config).
    #[arg(long = "access-log")]
    pub access_log: Vec<PathBuf>,
    /// "Who saw it" from this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// "Who saw it" until this time, exclusive (a date includes the whole day).
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub command: RetentionCommand,
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Delete or mask the rows whose retention period has passed.
    Run {
        /// The policy file with `[tables.<t>.retention]` rules.
        file: PathBuf,
        /// PostgreSQL URI of an account that may delete and update the tables (the owner or a superuser).
        #[arg(long, env = "MASCHERA_UPSTREAM")]
        upstream: String,
        /// Report what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rows of the expired table handled per transaction (their dependants go in the same one).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        #[command(flatten)]
        audit: AuditArgs,
    },
}

pub fn forget(args: ForgetArgs) -> Result<ExitCode> {
    let options = ForgetOptions {
        subject: args.subject.into(),
        dry_run: args.dry_run,
        audit_config: args.audit.audit_config,
    };
    block_on(Flavor::CurrentThread, forget::run(options))
}

pub fn subject(args: SubjectArgs) -> Result<ExitCode> {
    let SubjectCommand::Export(args) = args.command;
    let options = ExportOptions {
        subject: args.subject.into(),
        format: args.format,
        audit_config: args.audit.audit_config,
        access_log: args.access_log,
        from: args.from,
        to: args.to,
    };
    block_on(Flavor::CurrentThread, export::run(options))
}

pub fn retention(args: RetentionArgs) -> Result<ExitCode> {
    let RetentionCommand::Run {
        file,
        upstream,
        dry_run,
        batch,
        audit,
    } = args.command;
    let options = RunOptions {
        file,
        upstream,
        dry_run,
        batch,
        audit_config: audit.audit_config,
    };
    block_on(Flavor::CurrentThread, retention::run(options))
}
