//! `maschera retention run FILE --upstream URL [--dry-run] [--batch N]`: storage limitation (GDPR
//! Art. 5.1.e). For every table whose policy declares `retention`, the rows older than the period are
//! deleted with their dependants (children first, following the foreign keys) or have the named columns
//! replaced by their masks, in batches of N rows per transaction so no lock is held long. Reports per
//! table what it did, or with `--dry-run` what it would do. Not for: scheduling (run it from cron or a
//! systemd timer) or the policy's syntax (see `policy::retention`).

use super::foreign_keys::{
    ForeignKey, LiveTable, count_rows, dependants, read_foreign_keys, resolve_table,
};
use super::mask_assignments;
use crate::audit::EventKind;
use crate::policy_apply;
use crate::policy_cmd::load_policy;
use anyhow::Result;
use clap::{Args, Subcommand};
use policy::apply_sql::{quote_ident, quote_literal};
use policy::model::Table;
use policy::retention::{Retention, RetentionAction};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

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
        audit: super::AuditArgs,
    },
}

pub fn run(args: RetentionArgs) -> Result<ExitCode> {
    let RetentionCommand::Run {
        file,
        upstream,
        dry_run,
        batch,
        audit,
    } = args.command;
    crate::cli::block_on(async {
        let Some(policy) = load_policy(&file)? else {
            return Ok(ExitCode::FAILURE);
        };
        let log = match dry_run {
            true => None,
            false => audit.open()?,
        };
        let client = policy_apply::connect(&upstream).await?;
        let keys = read_foreign_keys(&client).await?;
        let mut any = false;
        let mut summary = Vec::new();
        let mut total = 0;
        for table in policy.tables.values() {
            let Some(retention) = &table.retention else {
                continue;
            };
            any = true;
            let live = resolve_table(
                &client,
                &format!(
                    "{}.{}",
                    quote_ident(&table.name.schema),
                    quote_ident(&table.name.name)
                ),
            )
            .await?;
            let expired = format!(
                "{} < now() - interval {}",
                quote_ident(&retention.column),
                quote_literal(&retention.period.interval())
            );
            let report = match &retention.action {
                RetentionAction::Delete => {
                    delete_expired(&client, &live, &expired, &keys, dry_run, batch).await?
                }
                RetentionAction::Mask(masks) => {
                    let assignments = mask_assignments(&client, table, &live, masks).await?;
                    mask_expired(&client, &live, &expired, &assignments, dry_run, batch).await?
                }
            };
            print_report(table, retention, &report, dry_run);
            for (name, rows) in &report {
                total += rows;
                summary.push(format!("{name}: {rows} {}", action_word(retention)));
            }
        }
        super::record(
            log,
            EventKind::RetentionRun,
            total,
            summary.join("; "),
            None,
        )
        .await?;
        if !any {
            println!("the policy declares no retention rule");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Rows affected per table (display name), in the order they were handled.
type Report = Vec<(String, u64)>;

fn print_report(table: &Table, retention: &Retention, report: &Report, dry_run: bool) {
    let (verb, what) = match (&retention.action, dry_run) {
        (RetentionAction::Delete, false) => ("deleted", "rows"),
        (RetentionAction::Delete, true) => ("would delete", "rows"),
        (RetentionAction::Mask(_), false) => ("masked", "rows"),
        (RetentionAction::Mask(_), true) => ("would mask", "rows"),
    };
    println!(
        "{}: older than {} by {}",
        table.key, retention.period, retention.column
    );
    for (name, rows) in report {
        println!("  {name:<32} {rows:>10} {what} {verb}");
    }
}

fn action_word(retention: &Retention) -> &'static str {
    match retention.action {
        RetentionAction::Delete => "deleted",
        RetentionAction::Mask(_) => "masked",
    }
}

fn add(report: &mut Report, name: &str, rows: u64) {
    match report.iter_mut().find(|(n, _)| n == name) {
        Some((_, total)) => *total += rows,
        None => report.push((name.to_string(), rows)),
    }
}

/// The next batch of rows matching `condition`, locked, as a predicate on their `ctid`; `None` when
/// no row is left. Call inside a transaction.
async fn lock_batch(
    client: &Client,
    table: &LiveTable,
    condition: &str,
    batch: u32,
) -> Result<Option<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT ctid::text FROM {} WHERE {condition} LIMIT {batch} FOR UPDATE",
                table.sql
            ),
            &[],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let tids: Vec<String> = rows
        .iter()
        .map(|r| format!("\"{}\"", r.get::<_, String>(0)))
        .collect();
    Ok(Some(format!(
        "ctid = ANY({}::tid[])",
        quote_literal(&format!("{{{}}}", tids.join(",")))
    )))
}

async fn delete_expired(
    client: &Client,
    table: &LiveTable,
    expired: &str,
    keys: &[ForeignKey],
    dry_run: bool,
    batch: u32,
) -> Result<Report> {
    let mut report = Report::new();
    if dry_run {
        for reached in dependants(table, expired, keys, &|_| false) {
            let rows = count_rows(client, &reached).await?;
            add(&mut report, &reached.table.display, rows as u64);
        }
        return Ok(report);
    }
    loop {
        client.batch_execute("BEGIN").await?;
        let Some(rows) = lock_batch(client, table, expired, batch).await? else {
            client.batch_execute("COMMIT").await?;
            break;
        };
        for reached in dependants(table, &rows, keys, &|_| false) {
            let deleted = client
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE {}",
                        reached.table.sql, reached.predicate
                    ),
                    &[],
                )
                .await?;
            add(&mut report, &reached.table.display, deleted);
        }
        client.batch_execute("COMMIT").await?;
    }
    if report.is_empty() {
        add(&mut report, &table.display, 0);
    }
    Ok(report)
}

async fn mask_expired(
    client: &Client,
    table: &LiveTable,
    expired: &str,
    assignments: &[(String, String)],
    dry_run: bool,
    batch: u32,
) -> Result<Report> {
    let columns: Vec<&str> = assignments.iter().map(|(c, _)| c.as_str()).collect();
    let values: Vec<&str> = assignments.iter().map(|(_, e)| e.as_str()).collect();
    // Masks are idempotent (the policy refuses hash and pseudonym here), so a masked row no longer
    // matches and every batch makes progress.
    let pending = format!(
        "{expired} AND ROW({}, NULL) IS DISTINCT FROM ROW({}, NULL)",
        columns.join(", "),
        values.join(", ")
    );
    let mut report = Report::new();
    add(&mut report, &table.display, 0);
    if dry_run {
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {} WHERE {pending}", table.sql),
                &[],
            )
            .await?
            .get(0);
        add(&mut report, &table.display, rows as u64);
        return Ok(report);
    }
    let set: Vec<String> = assignments
        .iter()
        .map(|(c, e)| format!("{c} = {e}"))
        .collect();
    loop {
        client.batch_execute("BEGIN").await?;
        let Some(rows) = lock_batch(client, table, &pending, batch).await? else {
            client.batch_execute("COMMIT").await?;
            break;
        };
        let masked = client
            .execute(
                &format!("UPDATE {} SET {} WHERE {rows}", table.sql, set.join(", ")),
                &[],
            )
            .await?;
        add(&mut report, &table.display, masked);
        client.batch_execute("COMMIT").await?;
    }
    Ok(report)
}
