//! Schema changes by an unrestricted role (e.g. `dpo`) on tables the policy's views depend on.
//! PostgreSQL refuses `ALTER TABLE ... DROP COLUMN` or `ALTER COLUMN ... TYPE` while a view depends on
//! the column, so the proxy drops the restricted roles' view schemas in the same transaction as the
//! client's `ALTER TABLE` (one simple Query: the views come back if the change fails or is rolled
//! back), and once the session is idle again recompiles the policy against the changed catalog,
//! recreates the views and grants on its own admin connection, and reloads the policy.
//!
//! Between the change and the recreation, restricted roles get "relation does not exist" (fail
//! closed). Every other message of the unrestricted role passes untouched; only Query texts that
//! contain `alter` are parsed. Not for: restricted roles (see `enforce`), the view SQL
//! (see `policy::apply_sql`).

use crate::frame;
use crate::policy_state::{PolicyHandle, PolicyState};
use crate::session::{Decision, FrontendPolicy, MetricsObserver, ServerEvent, SessionObserver};
use bytes::{BufMut, BytesMut};
use policy::access::RoleAccess;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{info, warn};

/// Forwards everything; an `ALTER TABLE` of a policy table gets the view schemas dropped first.
pub struct UnrestrictedFrontend {
    state: Arc<PolicyState>,
    role: Arc<RoleAccess>,
    changed: Arc<AtomicBool>,
    /// The access log's view of the session's statements (see `audit_trail`).
    audit: Option<crate::audit_trail::UnrestrictedAudit>,
}

/// Counts metrics and, after a schema change, starts the recompilation once the session is idle.
pub struct SchemaChangeObserver {
    metrics: MetricsObserver,
    handle: Arc<PolicyHandle>,
    changed: Arc<AtomicBool>,
}

/// The frontend and observer of an unrestricted session.
pub fn unrestricted_session(
    handle: &Arc<PolicyHandle>,
    state: Arc<PolicyState>,
    role: Arc<RoleAccess>,
) -> (UnrestrictedFrontend, SchemaChangeObserver) {
    let changed = Arc::new(AtomicBool::new(false));
    (
        UnrestrictedFrontend {
            state,
            role,
            changed: changed.clone(),
            audit: None,
        },
        SchemaChangeObserver {
            metrics: MetricsObserver::default(),
            handle: handle.clone(),
            changed,
        },
    )
}

impl FrontendPolicy for UnrestrictedFrontend {
    fn on_client_message(&mut self, tag: u8, frame: &[u8]) -> Decision {
        if let Some(audit) = &self.audit
            && let Err(refusal) = audit.on_client_message(tag, frame)
        {
            return Decision::Refuse {
                code: refusal.sqlstate.code().to_owned(),
                message: refusal.message,
            };
        }
        if tag != b'Q' {
            return Decision::Forward;
        }
        let Some((text, _)) = frame::cstr(frame::body(frame)) else {
            return Decision::Forward;
        };
        // Cheap test first: most statements never mention ALTER.
        if !text.windows(5).any(|w| w.eq_ignore_ascii_case(b"alter")) {
            return Decision::Forward;
        }
        let Ok(sql) = std::str::from_utf8(text) else {
            return Decision::Forward;
        };
        if !self.alters_a_policy_table(sql) {
            return Decision::Forward;
        }
        self.changed.store(true, Ordering::SeqCst);
        let mut prefixed = String::new();
        for step in policy::apply_sql::drop_views_steps(&self.state.policy) {
            prefixed.push_str(&step.sql);
            prefixed.push_str(";\n");
        }
        prefixed.push_str(sql);
        let mut out = BytesMut::with_capacity(prefixed.len() + 6);
        out.put_u8(b'Q');
        out.put_i32((prefixed.len() + 5) as i32);
        out.put_slice(prefixed.as_bytes());
        out.put_u8(0);
        info!("schema change of a policy table: the restricted roles' views are rebuilt after it");
        Decision::Replace(out.freeze())
    }
}

impl UnrestrictedFrontend {
    /// Records the session's statements that touch policy tables in the access log.
    pub fn with_audit(mut self, audit: crate::audit_trail::UnrestrictedAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    fn alters_a_policy_table(&self, sql: &str) -> bool {
        let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
            return false;
        };
        statements.iter().any(|statement| {
            matches!(statement, Statement::AlterTable(_))
                && policy::rewrite::inspect(&statement.to_string(), &self.role, &self.state.catalog)
                    .iter()
                    .any(|used| self.state.policy.table_by_name(&used.table).is_some())
        })
    }
}

impl SessionObserver for SchemaChangeObserver {
    fn on_server_event(&mut self, event: ServerEvent<'_>) {
        self.metrics.on_server_event(event);
        if let ServerEvent::Ready { status: b'I' } = event
            && self.changed.swap(false, Ordering::SeqCst)
        {
            let handle = self.handle.clone();
            tokio::spawn(async move {
                match handle.recreate_views().await {
                    Ok(()) => info!("views recompiled after a schema change"),
                    Err(err) => {
                        warn!(error = %format!("{err:#}"), "recompiling the views after a schema change failed; restricted roles are refused until `maschera policy apply`")
                    }
                }
            });
        }
    }
}
