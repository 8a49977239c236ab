//! `COPY table [(columns)] FROM STDIN` for a role whose relation for the table is a policy view
//! (asyncpg's `copy_records_to_table`, psycopg2's `copy_expert`/`copy_from`, pg's `COPY FROM` streams).
//! PostgreSQL copies into a view only through its `INSTEAD OF INSERT` trigger, which is the view's
//! write path for INSERT as well: the row filter (the table's row-level security under the trigger)
//! and the column rules apply to every copied row in the database. The proxy checks what it can know
//! without the data: the role may insert into the table, and every column the COPY writes is one the
//! role writes as given (as for INSERT, a new row's redacted text is the caller's own). A column it
//! reads masked or generalised is refused, because the write-back rule (a masked value written back
//! keeps the stored one) needs the value in the statement, which COPY streams separately; a dropped
//! column does not exist for the role. Then the statement is sent with the table name replaced by the
//! role's view.
//!
//! Not for: `COPY ... TO` (statement.rs rewrites the source to the role's view or a query over it), or
//! views that write without triggers (all columns shown, no row filter): PostgreSQL cannot copy into
//! them (42809), so the proxy refuses with its reason before sending.

use sqlparser::ast::{Ident, ObjectName};

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::report::TableOperation;
use super::scope::{Item, ItemKind, fold};
use super::write_back::Setting;
use crate::write_back::WriteKind;

impl<'a> Analyzer<'a> {
    /// Checks `COPY target (columns) FROM STDIN` on the policy view `target`; `view` is the view's
    /// name, which replaces `table_name`.
    pub(crate) fn copy_into_view(
        &mut self,
        target: &Item<'a>,
        columns: &[Ident],
        table_name: &mut ObjectName,
        view: ObjectName,
    ) -> Result<(), Refusal> {
        let ItemKind::View { table, access } = &target.kind else {
            return Err(Refusal::denied(
                "permission denied: COPY FROM into this relation",
            ));
        };
        self.require_write(target, TableOperation::Insert)?;
        let through_triggers =
            access.filtered || access.columns.iter().any(|c| !c.action.is_show());
        if !through_triggers {
            return Err(Refusal::unsupported(format!(
                "COPY FROM STDIN into table {table} is not supported for role {}: its view writes without a trigger, which PostgreSQL cannot copy into; use INSERT",
                self.role.role
            )));
        }
        let names: Vec<String> = if columns.is_empty() {
            target.visible_columns().unwrap_or_default()
        } else {
            columns.iter().map(fold).collect()
        };
        for name in &names {
            if let Setting::WriteBack(_) = self.setting(target, name, WriteKind::Insert)? {
                return Err(Refusal::denied(format!(
                    "permission denied for column {name} of table {table}: role {} reads it masked, and COPY FROM cannot write a masked value back; leave the column out of the COPY column list (it gets its default) or use INSERT",
                    self.role.role
                )));
            }
        }
        *table_name = view;
        Ok(())
    }
}
