//! Retention on a schedule inside `maschera serve` (the `[retention]` section): one background task
//! sleeps until the next slot, reads the policy file again, applies its retention rules over the
//! proxy's own `[upstream]` login exactly as `maschera retention run` does, logs a summary (tables and
//! row counts, never values) and records a `retention_run` event in the access log. Runs never
//! overlap (one task, plus the run's advisory lock against other proxies and the command line); a run
//! that fails is logged and the next slot tries again, the proxy keeps serving.
//! Not for: what a run does (see `retention`) or the section's syntax (see `config`).

use super::retention::{self, RuleReport};
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::RetentionConfig;
use crate::net::upstream::UpstreamTarget;
use anyhow::{Context, Result, anyhow};
use policy::model::Policy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Everything a scheduled run needs.
pub struct Schedule {
    pub config: RetentionConfig,
    /// The policy file holding the retention rules.
    pub policy: PathBuf,
    pub upstream: Arc<UpstreamTarget>,
    pub audit: Option<Arc<AuditLog>>,
}

impl Schedule {
    /// Starts the background task; it lives as long as the runtime.
    pub fn spawn(self) -> Result<()> {
        let at = self.config.at_seconds()?;
        let interval = self.config.interval_seconds;
        let base = at.unwrap_or_else(now_seconds);
        info!(
            interval_seconds = interval,
            at = self.config.at.as_deref().unwrap_or("-"),
            policy = %self.policy.display(),
            "retention scheduled"
        );
        tokio::spawn(async move {
            loop {
                let now = now_seconds();
                let next = next_slot(base, interval, now);
                tokio::time::sleep(Duration::from_secs(next - now)).await;
                self.run_once().await;
            }
        });
        Ok(())
    }

    /// One run: applied, logged and recorded; an error is reported, never returned.
    async fn run_once(&self) {
        let mut event = Event::new(EventKind::RetentionRun);
        event.user = Some(self.upstream.config().user.clone());
        match self.apply().await {
            Ok(reports) => {
                let (total, summary) = retention::summarize(&reports);
                info!(rows = total, summary = %summary, "scheduled retention run finished");
                event.rows = Some(total);
                event.detail = Some(format!("scheduled: {summary}"));
            }
            Err(err) => {
                let (sqlstate, reason) = describe(&err);
                warn!(error = %reason, "scheduled retention run failed; the next slot tries again");
                event.outcome = Outcome::Error { sqlstate };
                event.detail = Some(format!("scheduled run failed: {reason}"));
            }
        }
        if let Some(log) = &self.audit
            && let Err(err) = log.record(event).await
        {
            warn!(error = %err, "cannot record the retention run in the access log");
        }
    }

    async fn apply(&self) -> Result<Vec<RuleReport>> {
        let text = std::fs::read_to_string(&self.policy)
            .with_context(|| format!("reading policy file {}", self.policy.display()))?;
        let policy = Policy::parse(&self.policy.display().to_string(), &text)
            .map_err(|diagnostics| anyhow!("invalid policy file:\n{diagnostics}"))?;
        let (client, connection) =
            crate::enforce::policy_state::admin_connect(&self.upstream).await?;
        let reports = retention::apply(&client, &policy, false, self.config.batch).await;
        drop(client);
        let _ = connection.await;
        reports
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first slot `base + k * interval` strictly after `now` (`base <= now`; a slot missed while a
/// run was still going is skipped, not run late).
fn next_slot(base: u64, interval: u64, now: u64) -> u64 {
    base + ((now.saturating_sub(base)) / interval + 1) * interval
}

/// The SQLSTATE of the error (`58000` when PostgreSQL did not give one) and a description without
/// values: a server error is reduced to its SQLSTATE, since its message and detail may quote data.
fn describe(err: &anyhow::Error) -> (String, String) {
    let mut sqlstate = None;
    let mut parts = Vec::new();
    for cause in err.chain() {
        let db = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.as_db_error())
            .or_else(|| cause.downcast_ref::<tokio_postgres::error::DbError>());
        match db {
            Some(db) => {
                if sqlstate.is_none() {
                    sqlstate = Some(db.code().code().to_string());
                    parts.push(format!("PostgreSQL error {}", db.code().code()));
                }
                break;
            }
            None => parts.push(cause.to_string()),
        }
    }
    (sqlstate.unwrap_or_else(|| "58000".into()), parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_base_and_skip_missed_ones() {
        assert_eq!(next_slot(100, 10, 100), 110);
        assert_eq!(next_slot(100, 10, 109), 110);
        assert_eq!(next_slot(100, 10, 110), 120);
        assert_eq!(next_slot(100, 10, 145), 150);
        // Daily at 03:00 UTC: from 2026-01-02 12:00 the next run is 2026-01-03 03:00.
        let day = 86400;
        let jan_2_noon = 20455 * day + 12 * 3600;
        assert_eq!(next_slot(3 * 3600, day, jan_2_noon), 20456 * day + 3 * 3600);
    }

    #[test]
    fn server_errors_are_reduced_to_their_sqlstate() {
        let plain = anyhow!("connection refused").context("connecting");
        assert_eq!(
            describe(&plain),
            ("58000".into(), "connecting: connection refused".into())
        );
    }
}
