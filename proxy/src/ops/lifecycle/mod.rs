//! The data lifecycle commands that change stored data: erasure on request (`forget`) and retention
//! (`retention run`), and what they share: the foreign keys of the live database, walked to find a row's
//! dependants. They are async libraries over plain option structs: the command line (`lifecycle_cmd`)
//! parses the arguments and runs them. Not for: reading data as a role (see `dump`) or the policy's
//! meaning (policy crate).

pub mod export;
pub mod foreign_keys;
pub mod forget;
pub mod retention;
pub mod schedule;
pub mod subject;
pub mod who_saw;

use crate::audit::{AuditConfig, AuditLog, Event, EventKind};
use anyhow::{Context, Result, bail};
use policy::apply_sql::{column_expression, quote_ident};
use policy::model::Table;
use std::collections::BTreeMap;
use std::path::Path;
use tokio_postgres::Client;

/// Opens the access log named by the `[audit]` section of the proxy configuration file
/// `audit_config`, if one is given (before any change, so a log that cannot be written stops the
/// command early).
pub fn open_log(audit_config: Option<&Path>) -> Result<Option<AuditLog>> {
    let Some(path) = audit_config else {
        return Ok(None);
    };
    let config = AuditConfig::from_proxy_config(path)
        .with_context(|| format!("reading [audit] from {}", path.display()))?;
    Ok(Some(
        AuditLog::open(&config).context("opening the access log")?,
    ))
}

/// Records one lifecycle event (no values: tables, counts and digests only) and closes the log.
pub async fn record(
    log: Option<AuditLog>,
    kind: EventKind,
    rows: u64,
    detail: String,
    subjects: Option<Vec<String>>,
) -> Result<()> {
    let Some(log) = log else {
        return Ok(());
    };
    let mut event = Event::new(kind);
    event.rows = Some(rows);
    event.detail = Some(detail);
    event.subjects = subjects;
    record_event(log, event).await
}

/// Records `event` as the operating-system user who ran the command, and closes the log.
pub async fn record_event(log: AuditLog, mut event: Event) -> Result<()> {
    event.user = std::env::var("USER").ok();
    log.record(event)
        .await
        .context("recording in the access log")?;
    log.shutdown().await.context("closing the access log")?;
    Ok(())
}

/// `column = <mask expression>` per masked column, with the live column types.
pub async fn mask_assignments(
    client: &Client,
    table: &Table,
    live: &foreign_keys::LiveTable,
    masks: &BTreeMap<String, policy::access::Action>,
) -> Result<Vec<(String, String)>> {
    let mut assignments = Vec::new();
    for (column, action) in masks {
        let row = client
            .query_opt(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                &[&live.oid, column],
            )
            .await?;
        let Some(row) = row else {
            bail!("{}: no column `{column}` to mask", live.display);
        };
        let data_type: String = row.get(0);
        let Some(expression) = column_expression(&table.name, column, &data_type, action) else {
            bail!("{}: `{column}` has no mask", live.display);
        };
        let alias = format!(" AS {}", quote_ident(column));
        let expression = expression
            .strip_suffix(&alias)
            .unwrap_or(&expression)
            .to_string();
        assignments.push((quote_ident(column), expression));
    }
    Ok(assignments)
}
