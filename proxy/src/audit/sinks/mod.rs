//! Copies of the access log for central collection: a PostgreSQL table in a separate audit database and
//! a syslog (RFC 5424) stream. The file stays the source of truth: sinks get records only after they are
//! durable in the file, through bounded queues that never block the writer; failures are logged (without
//! values) and retried.
//! Not for: durability or tamper evidence (the file and `verify` are).

mod postgres;
mod syslog;

use crate::audit::AuditError;
use crate::audit::config::AuditConfig;
use crate::audit::record::Record;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Records a sink may hold while its destination is unreachable; beyond, new records are skipped for
/// that sink (and counted in the operational log).
const QUEUE: usize = 100_000;

/// A record as written to the file: its fields and its sealed line.
#[derive(Debug)]
pub struct Sealed {
    pub record: Record,
    pub line: String,
}

struct Sink {
    name: &'static str,
    tx: mpsc::Sender<Arc<Sealed>>,
    skipped: u64,
}

impl Sink {
    /// Starts a sink's task, fed through a bounded queue.
    fn spawn<F>(
        runtime: &tokio::runtime::Handle,
        name: &'static str,
        task: impl FnOnce(mpsc::Receiver<Arc<Sealed>>) -> F,
    ) -> Sink
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(task(rx));
        Sink {
            name,
            tx,
            skipped: 0,
        }
    }
}

/// The configured sinks, fed by the writer thread.
pub struct SinkSet {
    sinks: Vec<Sink>,
}

impl SinkSet {
    /// Starts the configured sinks' tasks on the current tokio runtime.
    pub fn start(config: &AuditConfig) -> Result<SinkSet, AuditError> {
        let mut sinks = Vec::new();
        if config.postgres_sink.is_none() && config.syslog.is_none() {
            return Ok(SinkSet { sinks });
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| AuditError::Config("the audit sinks need a tokio runtime".into()))?;
        if let Some(url) = &config.postgres_sink {
            let target = postgres::Target::new(url, &config.postgres_table)?;
            sinks.push(Sink::spawn(&runtime, "postgres", |rx| {
                postgres::run(target, rx)
            }));
        }
        if let Some(address) = &config.syslog {
            let target = syslog::Target::parse(address)?;
            sinks.push(Sink::spawn(&runtime, "syslog", |rx| {
                syslog::run(target, rx)
            }));
        }
        Ok(SinkSet { sinks })
    }

    pub fn is_active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Queues durable records for every sink, without waiting.
    pub fn send(&mut self, records: Vec<Sealed>) {
        if self.sinks.is_empty() || records.is_empty() {
            return;
        }
        for record in records.into_iter().map(Arc::new) {
            for sink in &mut self.sinks {
                if sink.tx.try_send(record.clone()).is_err() {
                    sink.skipped += 1;
                    if sink.skipped.is_power_of_two() {
                        tracing::warn!(
                            sink = sink.name,
                            skipped = sink.skipped,
                            "audit sink queue full or closed; records skipped (the file has them)"
                        );
                    }
                }
            }
        }
    }

    /// Lets the sinks drain what they hold and stop.
    pub fn close(&mut self) {
        self.sinks.clear();
    }
}

/// Doubling pause between retries, up to 30 seconds.
fn backoff(previous: std::time::Duration) -> std::time::Duration {
    (previous * 2).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(30),
    )
}
