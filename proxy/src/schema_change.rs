//! Schema changes by an unrestricted role (e.g. `dpo`) on tables the policy's views depend on.
//! PostgreSQL refuses `ALTER TABLE ... DROP COLUMN` or `ALTER COLUMN ... TYPE` while a view depends on
//! the column, so the proxy wraps the client's `ALTER TABLE` of a policy table, in the same
//! transaction, between the drop of the restricted roles' view schemas and their recreation from
//! the policy compiled against the catalog as the change leaves it (the proxy applies the
//! `ALTER TABLE` operations to its copy of the catalog):
//! - a simple Query becomes one multi-statement Query `drops; <client text>; recreation` (plain
//!   SQL; the client sees the extra statements' command tags);
//! - a Parse becomes `DO $$ ... $$` running the same three parts with `EXECUTE` (PL/pgSQL, which
//!   PostgreSQL installs by default; the command tag is then `DO`), so the views are rebuilt at
//!   every Execute of it.
//!
//! If the change fails or is rolled back, the old views come back with it. A column the policy
//! names but the change removes is absent from the recompiled views (fail closed) and
//! `maschera policy check --upstream` reports the drift. Once the session is idle again the
//! proxy rebuilds the views once more from the live catalog on its own connection (this also covers
//! `ALTER TABLE` forms it cannot apply to its copy: for those the views are only dropped in the
//! transaction, and restricted roles get "relation does not exist" until the rebuild) and reloads
//! the policy.
//!
//! Every other message of the unrestricted role passes untouched; only texts that contain
//! `alter` are parsed. Not for: restricted roles (see `enforce`), the view SQL (see
//! `policy::apply_sql`).

use crate::enforce::message;
use crate::frame;
use crate::offload::Decider;
use crate::policy_state::{PolicyHandle, PolicyState, compile_tolerating_drift};
use crate::session::{Decision, MetricsObserver, ServerEvent, SessionObserver};
use bytes::Bytes;
use policy::access::{Catalog, CatalogColumn, TableName};
use policy::apply_sql::LiveState;
use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, Ident, ObjectNamePart, Statement,
};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Forwards everything; an `ALTER TABLE` of a policy table gets the views dropped before it and
/// recompiled after it, in the same transaction. Texts to parse (a possible schema change, or one
/// the access log must inspect) are decided on a parse thread (see `offload`).
#[derive(Clone)]
pub struct UnrestrictedFrontend {
    handle: Arc<PolicyHandle>,
    tracking: Arc<Mutex<Tracking>>,
    /// The access log's view of the session's statements (see `audit_trail`).
    audit: Option<crate::audit_trail::UnrestrictedAudit>,
}

/// Counts metrics, follows the fate of the session's schema changes and, after one, starts the
/// rebuild once the session is idle.
pub struct SchemaChangeObserver {
    metrics: MetricsObserver,
    handle: Arc<PolicyHandle>,
    tracking: Arc<Mutex<Tracking>>,
}

/// What the session's schema changes did to the catalog, as far as the proxy knows, until the
/// reload after the rebuild has the live catalog.
#[derive(Default)]
struct Tracking {
    /// A schema change was sent: rebuild once the session is idle.
    changed: bool,
    /// The catalog as the changes of the open transaction leave it.
    in_transaction: Option<Catalog>,
    /// The catalog as committed changes leave it, until the rebuild's reload.
    committed: Option<Catalog>,
    /// An error came in the current cycle (an implicit transaction then rolls back).
    error_in_cycle: bool,
}

impl Tracking {
    /// The catalog the next change applies to.
    fn current(&self, loaded: &Catalog) -> Catalog {
        self.in_transaction
            .as_ref()
            .or(self.committed.as_ref())
            .unwrap_or(loaded)
            .clone()
    }

    fn on_event(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::CommandComplete { tag } => match tag {
                "COMMIT" => {
                    if let Some(catalog) = self.in_transaction.take() {
                        self.committed = Some(catalog);
                    }
                }
                // Also ROLLBACK TO SAVEPOINT: what was changed before the savepoint is then
                // forgotten, and the rebuild after the transaction catches up.
                "ROLLBACK" => self.in_transaction = None,
                _ => {}
            },
            ServerEvent::Error { .. } => self.error_in_cycle = true,
            ServerEvent::Ready { status } => {
                match status {
                    // Idle: an implicit transaction ended, committed unless an error came.
                    b'I' => {
                        if let Some(catalog) = self.in_transaction.take()
                            && !self.error_in_cycle
                        {
                            self.committed = Some(catalog);
                        }
                    }
                    b'E' => self.in_transaction = None,
                    _ => {}
                }
                self.error_in_cycle = false;
            }
        }
    }
}

fn lock(tracking: &Mutex<Tracking>) -> std::sync::MutexGuard<'_, Tracking> {
    // The tracking stays consistent across a panic (plain assignments).
    tracking
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The frontend and observer of an unrestricted session.
pub fn unrestricted_session(
    handle: &Arc<PolicyHandle>,
) -> (UnrestrictedFrontend, SchemaChangeObserver) {
    let tracking = Arc::new(Mutex::new(Tracking::default()));
    (
        UnrestrictedFrontend {
            handle: handle.clone(),
            tracking: tracking.clone(),
            audit: None,
        },
        SchemaChangeObserver {
            metrics: MetricsObserver::default(),
            handle: handle.clone(),
            tracking,
        },
    )
}

/// The SQL around a schema change: what runs before and after the client's statement.
struct Wrapping {
    before: Vec<String>,
    after: Vec<String>,
}

impl Decider for UnrestrictedFrontend {
    fn quick(&mut self, tag: u8, frame: &[u8]) -> Option<Decision> {
        let text = match tag {
            b'Q' => frame::cstr(frame::body(frame)).map(|(text, _)| text),
            b'P' => frame::cstr(frame::body(frame))
                .and_then(|(_, rest)| frame::cstr(rest))
                .map(|(text, _)| text),
            _ => None,
        };
        let parses = text.is_some_and(|text| {
            self.schema_change_text(text).is_some()
                || self.audit.as_ref().is_some_and(|a| a.needs_parse(text))
        });
        (!parses).then(|| self.decide(tag, frame))
    }

    fn full(&mut self, tag: u8, frame: &[u8]) -> Decision {
        self.decide(tag, frame)
    }
}

impl UnrestrictedFrontend {
    fn decide(&self, tag: u8, frame: &[u8]) -> Decision {
        if let Some(audit) = &self.audit
            && let Err(refusal) = audit.on_client_message(tag, frame)
        {
            return Decision::Refuse {
                code: refusal.sqlstate.code().to_owned(),
                message: refusal.message,
            };
        }
        let body = frame::body(frame);
        if let Err(refusal) = self.within_limits(tag, body) {
            return Decision::Refuse {
                code: refusal.sqlstate.code().to_owned(),
                message: refusal.message,
            };
        }
        let replaced = match tag {
            b'Q' => self.query(body),
            b'P' => self.parse(body),
            _ => None,
        };
        match replaced {
            Some(bytes) => {
                info!(
                    "schema change of a policy table: the restricted roles' views are recompiled in its transaction"
                );
                Decision::Replace(bytes)
            }
            None => Decision::Forward,
        }
    }
}

impl UnrestrictedFrontend {
    /// Records the session's statements that touch policy tables in the access log.
    pub fn with_audit(mut self, audit: crate::audit_trail::UnrestrictedAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Query: `drops; <text>; recreation` as one multi-statement Query.
    fn query(&self, body: &[u8]) -> Option<Bytes> {
        let (text, _) = frame::cstr(body)?;
        let sql = self.schema_change_text(text)?;
        let wrapping = self.wrapping(sql)?;
        let mut out = String::new();
        for step in &wrapping.before {
            out.push_str(step);
            out.push_str(";\n");
        }
        out.push_str(sql);
        // A line break ends a trailing `--` comment of the client's text.
        out.push_str("\n;\n");
        out.push_str(&wrapping.after.join(";\n"));
        message(b'Q', &[out.as_bytes(), b"\0"]).ok()
    }

    /// Parse: the one statement becomes a DO block running drops, the statement and recreation.
    fn parse(&self, body: &[u8]) -> Option<Bytes> {
        let (name, rest) = frame::cstr(body)?;
        let (text, types) = frame::cstr(rest)?;
        let sql = self.schema_change_text(text)?;
        let wrapping = self.wrapping(sql)?;
        let steps: Vec<&str> = wrapping
            .before
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(sql))
            .chain(wrapping.after.iter().map(String::as_str))
            .collect();
        let block = do_block(&steps);
        message(b'P', &[name, b"\0", block.as_bytes(), b"\0", types]).ok()
    }

    /// A text that may be a schema change is parsed: refused beyond the parser's bounds.
    fn within_limits(&self, tag: u8, body: &[u8]) -> Result<(), policy::rewrite::Refusal> {
        let text = match tag {
            b'Q' => frame::cstr(body).map(|(text, _)| text),
            b'P' => frame::cstr(body)
                .and_then(|(_, rest)| frame::cstr(rest))
                .map(|(text, _)| text),
            _ => None,
        };
        match text.and_then(|text| self.schema_change_text(text)) {
            Some(sql) => policy::rewrite::limits::check(sql),
            None => Ok(()),
        }
    }

    /// The text, if it may be a schema change (cheap test first: most statements never mention
    /// ALTER).
    fn schema_change_text<'t>(&self, text: &'t [u8]) -> Option<&'t str> {
        if !text.windows(5).any(|w| w.eq_ignore_ascii_case(b"alter")) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    /// What to run around `sql`, if it alters a policy table; notes the change.
    fn wrapping(&self, sql: &str) -> Option<Wrapping> {
        let statements = policy::rewrite::limits::parse_bounded(sql).ok()?;
        let state = self.handle.current();
        let policy = &state.policy;
        let mut tracking = lock(&self.tracking);
        let catalog = tracking.current(&state.catalog);
        let alters = alter_tables(&statements);
        let touches_policy = alters.iter().any(|alter| {
            table_of(&catalog, alter).is_some_and(|table| policy.table_by_name(&table).is_some())
        });
        if !touches_policy {
            return None;
        }
        tracking.changed = true;
        let before = policy::apply_sql::drop_views_steps(policy)
            .into_iter()
            .map(|step| step.sql)
            .collect();
        let after = match changed_catalog(&catalog, &alters) {
            Some(changed) => {
                tracking.in_transaction = Some(changed.clone());
                recreation(&state, changed)
            }
            None => {
                warn!(
                    "this ALTER TABLE form is not applied to the proxy's copy of the catalog: the views are rebuilt after the transaction"
                );
                Vec::new()
            }
        };
        Some(Wrapping { before, after })
    }
}

/// The statements that recreate every restricted role's views over `catalog`.
fn recreation(state: &PolicyState, catalog: Catalog) -> Vec<String> {
    let policy = &state.policy;
    let (access, _) = compile_tolerating_drift(policy, &catalog);
    let live = LiveState {
        catalog,
        sequences: state.sequences.clone(),
        login_prefix: state.login_prefix.clone(),
        primary_keys: state.primary_keys.clone(),
        objects_owner: state.objects_owner.clone(),
        ..LiveState::default()
    };
    let steps = policy::apply_sql::recreate_views_steps(policy, &access, &live);
    if steps.iter().any(|step| step.secret.is_some()) {
        return Vec::new();
    }
    steps.into_iter().map(|step| step.sql).collect()
}

impl SessionObserver for SchemaChangeObserver {
    fn on_server_event(&mut self, event: ServerEvent<'_>) {
        self.metrics.on_server_event(event);
        let rebuild = {
            let mut tracking = lock(&self.tracking);
            tracking.on_event(event);
            let idle = matches!(event, ServerEvent::Ready { status: b'I' });
            idle && std::mem::take(&mut tracking.changed)
        };
        if rebuild {
            let handle = self.handle.clone();
            let tracking = self.tracking.clone();
            tokio::spawn(async move {
                match handle.recreate_views().await {
                    Ok(()) => info!("views recompiled after a schema change"),
                    Err(err) => {
                        warn!(error = %format!("{err:#}"), "recompiling the views after a schema change failed; restricted roles are refused until `maschera policy apply`")
                    }
                }
                // The reload read the live catalog, unless another change is on its way.
                let mut tracking = lock(&tracking);
                if !tracking.changed && tracking.in_transaction.is_none() {
                    tracking.committed = None;
                }
            });
        }
    }
}

/// The `ALTER TABLE` statements among `statements`, in order.
fn alter_tables(statements: &[Statement]) -> Vec<&AlterTable> {
    statements
        .iter()
        .filter_map(|statement| match statement {
            Statement::AlterTable(alter) => Some(alter),
            _ => None,
        })
        .collect()
}

/// The catalog table an `ALTER TABLE` names, resolved like PostgreSQL (case folding, search path).
fn table_of(catalog: &Catalog, alter: &AlterTable) -> Option<TableName> {
    let parts: Vec<String> = alter
        .name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(fold(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [name] => catalog.resolve(None, name),
        [schema, name] => catalog.resolve(Some(schema), name),
        _ => None,
    }
}

fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The catalog as the `ALTER TABLE` statements leave it, in order; `None` when one of them has an
/// operation this does not model (renaming the table, partitions, ...).
fn changed_catalog(catalog: &Catalog, alters: &[&AlterTable]) -> Option<Catalog> {
    let mut changed = catalog.clone();
    for alter in alters {
        let Some(table) = table_of(&changed, alter) else {
            continue;
        };
        let columns = changed.tables.get_mut(&table)?;
        for operation in &alter.operations {
            apply_operation(columns, operation)?;
        }
    }
    Some(changed)
}

/// Applies one operation to a table's columns; `None` when it is not modelled.
fn apply_operation(
    columns: &mut Vec<CatalogColumn>,
    operation: &AlterTableOperation,
) -> Option<()> {
    let position = |columns: &Vec<CatalogColumn>, name: &Ident| {
        let name = fold(name);
        columns.iter().position(|c| c.name == name)
    };
    match operation {
        AlterTableOperation::AddColumn { column_def, .. } => {
            if position(columns, &column_def.name).is_none() {
                columns.push(CatalogColumn {
                    name: fold(&column_def.name),
                    data_type: type_name(&column_def.data_type.to_string()),
                });
            }
        }
        AlterTableOperation::DropColumn { column_names, .. } => {
            for name in column_names {
                if let Some(at) = position(columns, name) {
                    columns.remove(at);
                }
            }
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => {
            if let Some(at) = position(columns, old_column_name) {
                columns[at].name = fold(new_column_name);
            }
        }
        AlterTableOperation::AlterColumn { column_name, op } => match op {
            AlterColumnOperation::SetDataType { data_type, .. } => {
                if let Some(at) = position(columns, column_name) {
                    columns[at].data_type = type_name(&data_type.to_string());
                }
            }
            AlterColumnOperation::SetNotNull
            | AlterColumnOperation::DropNotNull
            | AlterColumnOperation::SetDefault { .. }
            | AlterColumnOperation::DropDefault
            | AlterColumnOperation::AddGenerated { .. } => {}
        },
        AlterTableOperation::AddConstraint { .. }
        | AlterTableOperation::DropConstraint { .. }
        | AlterTableOperation::RenameConstraint { .. }
        | AlterTableOperation::DisableTrigger { .. }
        | AlterTableOperation::EnableTrigger { .. }
        | AlterTableOperation::EnableAlwaysTrigger { .. }
        | AlterTableOperation::EnableReplicaTrigger { .. }
        | AlterTableOperation::DisableRule { .. }
        | AlterTableOperation::EnableRule { .. }
        | AlterTableOperation::EnableAlwaysRule { .. }
        | AlterTableOperation::EnableReplicaRule { .. }
        | AlterTableOperation::ReplicaIdentity { .. }
        | AlterTableOperation::OwnerTo { .. }
        | AlterTableOperation::SetLogged
        | AlterTableOperation::SetUnlogged => {}
        _ => return None,
    }
    Some(())
}

/// A type as a view may cast to it (`serial` exists only in column definitions).
fn type_name(written: &str) -> String {
    match written.to_ascii_lowercase().as_str() {
        "serial" | "serial4" => "integer".into(),
        "bigserial" | "serial8" => "bigint".into(),
        "smallserial" | "serial2" => "smallint".into(),
        _ => written.to_string(),
    }
}

/// `DO $tag$ BEGIN EXECUTE $tagN$<step>$tagN$; ... END $tag$`, with dollar-quote tags that occur
/// in none of the steps.
fn do_block(steps: &[&str]) -> String {
    let mut tag = String::from("maschera");
    while steps.iter().any(|step| step.contains(&tag)) {
        tag.push('_');
    }
    let mut block = format!("DO ${tag}$ BEGIN\n");
    for step in steps {
        block.push_str(&format!("EXECUTE ${tag}_s${step}${tag}_s$;\n"));
    }
    block.push_str(&format!("END ${tag}$"));
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn catalog() -> Catalog {
        let column = |name: &str, data_type: &str| CatalogColumn {
            name: name.into(),
            data_type: data_type.into(),
        };
        let mut catalog = Catalog {
            search_path: vec!["public".into()],
            ..Catalog::default()
        };
        catalog.tables.insert(
            TableName::new("public", "contacts"),
            vec![
                column("id", "bigint"),
                column("city", "text"),
                column("tax_code", "character(16)"),
            ],
        );
        catalog
    }

    fn after(sql: &str) -> Option<Vec<(String, String)>> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let changed = changed_catalog(&catalog(), &alter_tables(&statements))?;
        Some(
            changed.tables[&TableName::new("public", "contacts")]
                .iter()
                .map(|c| (c.name.clone(), c.data_type.clone()))
                .collect(),
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn alter_table_operations_change_the_copy_of_the_catalog() {
        assert_eq!(
            after("ALTER TABLE Contacts DROP COLUMN Tax_Code, ALTER COLUMN city TYPE varchar(80)"),
            Some(pairs(&[("id", "bigint"), ("city", "VARCHAR(80)")]))
        );
        assert_eq!(
            after(
                "ALTER TABLE public.contacts ADD COLUMN n serial; ALTER TABLE contacts RENAME COLUMN city TO town"
            ),
            Some(pairs(&[
                ("id", "bigint"),
                ("town", "text"),
                ("tax_code", "character(16)"),
                ("n", "integer"),
            ]))
        );
        assert_eq!(
            after("ALTER TABLE contacts ALTER COLUMN city SET NOT NULL"),
            Some(pairs(&[
                ("id", "bigint"),
                ("city", "text"),
                ("tax_code", "character(16)")
            ]))
        );
        assert_eq!(after("ALTER TABLE contacts RENAME TO people"), None);
    }

    #[test]
    fn tracking_follows_commit_rollback_and_failed_implicit_transactions() {
        let loaded = catalog();
        let mut changed = catalog();
        changed.tables.clear();
        // Explicit transaction, committed.
        let mut tracking = Tracking {
            in_transaction: Some(changed.clone()),
            ..Tracking::default()
        };
        tracking.on_event(ServerEvent::Ready { status: b'T' });
        assert_eq!(tracking.current(&loaded), changed);
        tracking.on_event(ServerEvent::CommandComplete { tag: "COMMIT" });
        tracking.on_event(ServerEvent::Ready { status: b'I' });
        assert_eq!(tracking.committed.as_ref(), Some(&changed));
        // Rolled back: the committed catalog stays.
        tracking.committed = None;
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::CommandComplete { tag: "ROLLBACK" });
        tracking.on_event(ServerEvent::Ready { status: b'I' });
        assert_eq!(tracking.current(&loaded), loaded);
        // An implicit transaction that failed rolls back; one that did not commits.
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::Error { sqlstate: "42703" });
        tracking.on_event(ServerEvent::Ready { status: b'I' });
        assert_eq!(tracking.current(&loaded), loaded);
        tracking.in_transaction = Some(changed.clone());
        tracking.on_event(ServerEvent::CommandComplete { tag: "ALTER TABLE" });
        tracking.on_event(ServerEvent::Ready { status: b'I' });
        assert_eq!(tracking.current(&loaded), changed);
    }

    #[test]
    fn do_block_tags_never_occur_in_the_steps() {
        let block = do_block(&[
            "SELECT $maschera$x$maschera$",
            "ALTER TABLE t DROP COLUMN c",
        ]);
        assert!(block.starts_with("DO $maschera_$ BEGIN\n"), "{block}");
        assert!(block.contains("EXECUTE $maschera__s$ALTER TABLE t DROP COLUMN c$maschera__s$;"));
        assert!(block.ends_with("END $maschera_$"));
    }
}
