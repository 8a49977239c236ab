//! `maschera retention run FILE --upstream URL [--dry-run] [--batch N]`: storage limitation (GDPR
//! Art. 5.1.e). For every table whose policy declares `retention`, the rows older than the period are
//! deleted with their dependants (children first, following the foreign keys) or have the named columns
//! replaced by their masks, in batches of N rows per transaction so no lock is held long. Reports per
//! table what it did, or with `--dry-run` what it would do. `maschera serve` runs the same [`apply`] on
//! a schedule (see `lifecycle::schedule`). Not for: the policy's syntax (see `policy::retention`).

use super::foreign_keys::{
    ForeignKey, LiveTable, count_rows, dependants, read_foreign_keys, resolve_table,
};
use super::mask_assignments;
use crate::admin::policy_apply;
use crate::admin::policy_file::load_policy;
use crate::audit::EventKind;
use anyhow::{Result, bail};
use policy::apply_sql::{quote_ident, quote_literal};
use policy::model::Policy;
use policy::retention::{Retention, RetentionAction};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

/// What `retention run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The policy file with `[tables.<t>.retention]` rules.
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may delete and update the tables (the owner or a superuser).
    pub upstream: String,
    /// Report what would be done and change nothing.
    pub dry_run: bool,
    /// Rows of the expired table handled per transaction (their dependants go in the same one); at least 1.
    pub batch: u32,
    /// Proxy configuration file whose `[audit]` section names the access log the run is recorded in.
    pub audit_config: Option<PathBuf>,
}

/// Applies the policy's retention rules once (see [`apply`]), prints what was done and records it.
pub async fn run(args: RunOptions) -> Result<ExitCode> {
    let RunOptions {
        file,
        upstream,
        dry_run,
        batch,
        audit_config,
    } = args;
    let Some(policy) = load_policy(&file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let log = match dry_run {
        true => None,
        false => super::open_log(audit_config.as_deref())?,
    };
    let client = policy_apply::connect(&upstream).await?;
    let reports = apply(&client, &policy, dry_run, batch).await?;
    for report in &reports {
        report.print(dry_run);
    }
    if reports.is_empty() {
        println!("the policy declares no retention rule");
    }
    let (total, summary) = summarize(&reports);
    super::record(log, EventKind::RetentionRun, total, summary, None).await?;
    Ok(ExitCode::SUCCESS)
}

/// Session-level advisory lock key held by a retention run (the ASCII of "mascret"), so that runs
/// of several proxies, or of a proxy and the command line, never overlap.
const RUN_LOCK: i64 = 0x006d_6173_6372_6574;

/// What one retention rule did (or would do): rows per table, the expired table first.
pub struct RuleReport {
    /// The policy's table key, e.g. `contacts`.
    pub table: String,
    pub retention: Retention,
    pub rows: Report,
}

impl RuleReport {
    fn print(&self, dry_run: bool) {
        let verb = match dry_run {
            false => action_word(&self.retention),
            true => match self.retention.action {
                RetentionAction::Delete => "would delete",
                RetentionAction::Mask(_) => "would mask",
            },
        };
        println!(
            "{}: older than {} by {}",
            self.table, self.retention.period, self.retention.column
        );
        for (name, rows) in &self.rows {
            println!("  {name:<32} {rows:>10} rows {verb}");
        }
    }
}

/// The total of rows and a one-line summary without values (`public.contacts: 3 deleted; ...`), for
/// the access log and the operational log.
pub fn summarize(reports: &[RuleReport]) -> (u64, String) {
    let mut total = 0;
    let mut parts = Vec::new();
    for report in reports {
        for (name, rows) in &report.rows {
            total += rows;
            parts.push(format!("{name}: {rows} {}", action_word(&report.retention)));
        }
    }
    (total, parts.join("; "))
}

/// Applies every retention rule of `policy` over `client` (an account that may delete and update
/// the tables), or with `dry_run` counts what it would do. Holds an advisory lock for the whole run:
/// if another run holds it, fails saying so.
pub async fn apply(
    client: &Client,
    policy: &Policy,
    dry_run: bool,
    batch: u32,
) -> Result<Vec<RuleReport>> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RUN_LOCK])
        .await?
        .get(0);
    if !locked {
        // Any role may take an advisory lock (a role's login used straight too): name the holder.
        let holder = client
            .query_opt(
                "SELECT l.pid, r.rolname::text FROM pg_catalog.pg_locks l \
                 JOIN pg_catalog.pg_database d ON d.oid = l.database AND d.datname = pg_catalog.current_database() \
                 LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
                 LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND ((l.classid::pg_catalog.int8 << 32) | l.objid::pg_catalog.int8) = $1 LIMIT 1",
                &[&RUN_LOCK],
            )
            .await
            .ok()
            .flatten()
            .map(|row| {
                let (pid, user): (i32, Option<String>) = (row.get(0), row.get(1));
                format!(
                    ", by session {pid} of {}: if that is not a retention run, end it with \
                     SELECT pg_terminate_backend({pid})",
                    user.as_deref().unwrap_or("another role")
                )
            })
            .unwrap_or_default();
        bail!("another retention run is in progress (advisory lock {RUN_LOCK} is held{holder})");
    }
    let reports = apply_rules(client, policy, dry_run, batch).await;
    if reports.is_err() {
        // A failed statement may leave the batch's transaction open.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&RUN_LOCK])
        .await?;
    reports
}

async fn apply_rules(
    client: &Client,
    policy: &Policy,
    dry_run: bool,
    batch: u32,
) -> Result<Vec<RuleReport>> {
    let keys = read_foreign_keys(client).await?;
    let mut reports = Vec::new();
    for table in policy.tables.values() {
        let Some(retention) = &table.retention else {
            continue;
        };
        let live = resolve_table(
            client,
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
        let rows = match &retention.action {
            RetentionAction::Delete => {
                delete_expired(client, &live, &expired, &keys, dry_run, batch).await?
            }
            RetentionAction::Mask(masks) => {
                let assignments = mask_assignments(client, table, &live, masks).await?;
                mask_expired(client, &live, &expired, &assignments, dry_run, batch).await?
            }
        };
        reports.push(RuleReport {
            table: table.key.clone(),
            retention: retention.clone(),
            rows,
        });
    }
    Ok(reports)
}

/// Rows affected per table (display name), in the order they were handled.
pub type Report = Vec<(String, u64)>;

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
            let rows = count_rows(client, &reached.table, &reached.predicate).await?;
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
        let rows = count_rows(client, table, &pending).await?;
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
