//! The central store: records inserted in batches into a table of a separate audit database (created if
//! missing), keyed by instance and sequence number so that retries and many proxies never clash.
//! Not for: reading the table back (auditors query it with SQL).

use super::{Sealed, backoff};
use crate::audit::AuditError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

const BATCH: usize = 500;
/// Attempts to flush what is left when the log shuts down.
const ATTEMPTS_AT_CLOSE: u32 = 3;

pub struct Target {
    url: String,
    /// Quoted, possibly schema-qualified table name.
    table: String,
}

impl Target {
    pub fn new(url: &str, table: &str) -> Result<Target, AuditError> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
            return Err(AuditError::Config(format!(
                "postgres_table {table:?}: use letters, digits and _, optionally schema.table"
            )));
        }
        let table = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Target {
            url: url.to_string(),
            table,
        })
    }

    fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (instance text NOT NULL, seq bigint NOT NULL, \
             time timestamptz NOT NULL, event text NOT NULL, user_name text, role text, database text, \
             client text, outcome text NOT NULL, record jsonb NOT NULL, PRIMARY KEY (instance, seq))",
            self.table
        )
    }

    fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (instance, seq, time, event, user_name, role, database, client, outcome, record) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]::timestamptz[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]::jsonb[]) ON CONFLICT DO NOTHING",
            self.table
        )
    }
}

/// Connects over the proxy's admin connector (the URL's `sslmode` honoured) and creates the table.
async fn connect(target: &Target) -> anyhow::Result<tokio_postgres::Client> {
    let client = crate::admin::admin_connect::connect(&target.url).await?;
    client.batch_execute(&target.create_sql()).await?;
    Ok(client)
}

async fn insert(
    client: &tokio_postgres::Client,
    sql: &str,
    batch: &[Arc<Sealed>],
) -> Result<u64, tokio_postgres::Error> {
    let column =
        |f: &dyn Fn(&Sealed) -> Option<String>| batch.iter().map(|s| f(s)).collect::<Vec<_>>();
    let instance = column(&|s| Some(s.record.instance.clone()));
    let seq: Vec<i64> = batch.iter().map(|s| s.record.seq as i64).collect();
    let time = column(&|s| Some(s.record.time.clone()));
    let event = column(&|s| Some(s.record.event.kind.as_str().to_string()));
    let user = column(&|s| s.record.event.user.clone());
    let role = column(&|s| s.record.event.role.clone());
    let database = column(&|s| s.record.event.database.clone());
    let client_addr = column(&|s| s.record.event.client.clone());
    let outcome = column(&|s| Some(s.record.event.outcome.as_str().to_string()));
    let line = column(&|s| Some(s.line.clone()));
    let params: [&(dyn ToSql + Sync); 10] = [
        &instance,
        &seq,
        &time,
        &event,
        &user,
        &role,
        &database,
        &client_addr,
        &outcome,
        &line,
    ];
    client.execute(sql, &params).await
}

/// Feeds the table until the queue closes, retrying with a growing pause while the database is away.
pub async fn run(target: Target, mut rx: mpsc::Receiver<Arc<Sealed>>) {
    let sql = target.insert_sql();
    let mut client: Option<tokio_postgres::Client> = None;
    let mut batch: Vec<Arc<Sealed>> = Vec::new();
    let mut pause = Duration::ZERO;
    let mut closed = false;
    let mut failures_after_close = 0;
    loop {
        if batch.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(record) => batch.push(record),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        let result = match &client {
            Some(c) if !c.is_closed() => insert(c, &sql, &batch).await.map_err(Into::into),
            _ => match connect(&target).await {
                Ok(c) => {
                    let r = insert(&c, &sql, &batch).await.map_err(Into::into);
                    client = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(_) => {
                batch.clear();
                pause = Duration::ZERO;
            }
            Err(e) => {
                client = None;
                pause = backoff(pause);
                tracing::warn!(error = %format!("{e:#}"), records = batch.len(), retry_in_ms = pause.as_millis() as u64, "audit postgres sink failed");
                if closed {
                    failures_after_close += 1;
                    if failures_after_close >= ATTEMPTS_AT_CLOSE {
                        tracing::error!(
                            records = batch.len(),
                            "audit postgres sink gave up at shutdown (the file has the records)"
                        );
                        return;
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(
            Target::new("u", "audit.log_v1").unwrap().table,
            "\"audit\".\"log_v1\""
        );
        assert!(Target::new("u", "x; DROP TABLE y").is_err());
        assert!(Target::new("u", "a.b.c").is_err());
        assert!(Target::new("u", "1abc").is_err());
    }
}
