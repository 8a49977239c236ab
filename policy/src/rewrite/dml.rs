//! INSERT, UPDATE and DELETE for a restricted role: the target is mapped to the role's view (so the
//! row filter's check option holds), writes need the policy's permission, and only `writable`
//! columns may be set as written; a column the role reads masked is set only through its write-back
//! (`write_back.rs`). Reads inside them (WHERE, FROM/USING, RETURNING, ON CONFLICT) follow the
//! usual scope rules. Not for COPY (see `statement.rs`).

use sqlparser::ast::{
    Assignment, AssignmentTarget, ConflictTarget, Delete, FromTable, Insert, OnConflictAction,
    OnInsert, SetExpr, Statement, TableObject, Update, UpdateTableFromKind,
};

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::report::TableOperation;
use super::scope::{Item, ItemKind, Scope, fold, fold_name, plain_table};
use super::write_back::Setting;
use crate::access::ColumnAccess;
use crate::write_back::WriteKind;

impl<'a> Analyzer<'a> {
    /// A data-modifying statement, at top level or inside a CTE.
    pub(crate) fn dml(
        &mut self,
        statement: &mut Statement,
        parent: Option<&Scope<'_, 'a>>,
    ) -> Result<(), Refusal> {
        match statement {
            Statement::Insert(insert) => self.insert(insert, parent),
            Statement::Update(update) => self.update(update, parent),
            Statement::Delete(delete) => self.delete(delete, parent),
            _ => Err(Refusal::unsupported(
                "statement not supported in this position",
            )),
        }
    }

    fn insert(
        &mut self,
        insert: &mut Insert,
        parent: Option<&Scope<'_, 'a>>,
    ) -> Result<(), Refusal> {
        if insert.or.is_some()
            || insert.ignore
            || insert.overwrite
            || !insert.assignments.is_empty()
            || insert.partitioned.is_some()
            || !insert.after_columns.is_empty()
            || insert.output.is_some()
            || insert.replace_into
            || insert.priority.is_some()
            || insert.insert_alias.is_some()
            || insert.settings.is_some()
            || insert.format_clause.is_some()
            || insert.multi_table_insert_type.is_some()
        {
            return Err(Refusal::unsupported(
                "INSERT form not supported by PostgreSQL",
            ));
        }
        let TableObject::TableName(name) = &mut insert.table else {
            return Err(Refusal::unsupported(
                "INSERT INTO a table function is not supported",
            ));
        };
        let level = Scope::new(parent);
        let mut factor = plain_table(name.clone());
        let mut target = self.table_reference(&mut factor, &level, TableOperation::Insert)?;
        if let sqlparser::ast::TableFactor::Table {
            name: rewritten,
            alias,
            ..
        } = factor
        {
            // The edit `table_reference` recorded for the copy of this name.
            *name = rewritten;
            if let Some(alias) = &insert.table_alias {
                target.name = fold(&alias.alias);
                target.schema = None;
            } else if let Some(alias) = alias {
                insert.table_alias = Some(sqlparser::ast::TableAliasWithoutColumns {
                    explicit: true,
                    alias: alias.name,
                });
            }
        }
        self.require_write(&target, TableOperation::Insert)?;

        let columns: Vec<String> = if insert.columns.is_empty() {
            let width = match insert.source.as_deref() {
                Some(query) => match query.body.as_ref() {
                    SetExpr::Values(values) => values.rows.iter().map(|row| row.len()).max(),
                    _ => None,
                },
                None => Some(0),
            };
            let visible = target.visible_columns().unwrap_or_default();
            let width = width.unwrap_or(visible.len());
            visible.into_iter().take(width).collect()
        } else {
            let mut names = Vec::new();
            for column in &insert.columns {
                names.push(fold_name(column)?.last().cloned().unwrap_or_default());
            }
            names
        };
        let mut write_backs = Vec::new();
        for (position, column) in columns.iter().enumerate() {
            if let Setting::WriteBack(col) = self.setting(&target, column, WriteKind::Insert)? {
                write_backs.push((position, col));
            }
        }
        if let Some(source) = &mut insert.source {
            self.query(source, parent)?;
            self.insert_write_backs(source, &target, &write_backs)?;
        }
        if let Some(on) = &mut insert.on {
            let OnInsert::OnConflict(conflict) = on else {
                return Err(Refusal::unsupported(
                    "ON DUPLICATE KEY is not supported by PostgreSQL",
                ));
            };
            let mut conflict_level = Scope::new(parent);
            conflict_level.items.push(target.clone());
            if let Some(ConflictTarget::Columns(columns)) = &conflict.conflict_target {
                for column in columns {
                    self.unqualified_column(&fold(column), &conflict_level)?;
                }
            }
            if let OnConflictAction::DoUpdate(update) = &mut conflict.action {
                self.require_write(&target, TableOperation::Update)?;
                self.upsert_allowed(&target)?;
                self.log_operation(&target, TableOperation::Update);
                let mut excluded = target.clone();
                excluded.name = "excluded".to_string();
                excluded.schema = None;
                conflict_level.items.push(excluded);
                self.assignments(&mut update.assignments, &target, &conflict_level)?;
                if let Some(selection) = &mut update.selection {
                    self.check_exprs(selection, &conflict_level)?;
                }
            }
        }
        self.do_nothing(insert, &target, &columns)?;
        if let Some(returning) = &mut insert.returning {
            let mut returning_level = Scope::new(parent);
            returning_level.items.push(target);
            self.wildcards(returning, &returning_level)?;
            self.check_exprs(returning, &returning_level)?;
        }
        Ok(())
    }

    fn update(
        &mut self,
        update: &mut Update,
        parent: Option<&Scope<'_, 'a>>,
    ) -> Result<(), Refusal> {
        if update.or.is_some()
            || !update.order_by.is_empty()
            || update.limit.is_some()
            || update.output.is_some()
        {
            return Err(Refusal::unsupported(
                "UPDATE form not supported by PostgreSQL",
            ));
        }
        if !update.table.joins.is_empty() {
            return Err(Refusal::unsupported(
                "UPDATE of a join is not supported by PostgreSQL",
            ));
        }
        let mut level = Scope::new(parent);
        let target =
            self.table_reference(&mut update.table.relation, &level, TableOperation::Update)?;
        self.require_write(&target, TableOperation::Update)?;
        level.items.push(target.clone());
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &mut update.from
        {
            for item in from.iter_mut() {
                self.table_with_joins(item, &mut level)?;
            }
        }
        self.assignments(&mut update.assignments, &target, &level)?;
        self.where_and_returning(
            update.selection.as_mut(),
            update.returning.as_deref_mut(),
            &level,
        )
    }

    fn delete(
        &mut self,
        delete: &mut Delete,
        parent: Option<&Scope<'_, 'a>>,
    ) -> Result<(), Refusal> {
        if !delete.tables.is_empty()
            || !delete.order_by.is_empty()
            || delete.limit.is_some()
            || delete.output.is_some()
        {
            return Err(Refusal::unsupported(
                "DELETE form not supported by PostgreSQL",
            ));
        }
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &mut delete.from;
        let [target_item] = from.as_mut_slice() else {
            return Err(Refusal::unsupported(
                "DELETE from several tables is not supported by PostgreSQL",
            ));
        };
        if !target_item.joins.is_empty() {
            return Err(Refusal::unsupported(
                "DELETE from a join is not supported by PostgreSQL",
            ));
        }
        let mut level = Scope::new(parent);
        let target =
            self.table_reference(&mut target_item.relation, &level, TableOperation::Delete)?;
        self.require_write(&target, TableOperation::Delete)?;
        self.refuse_cascade(&target, None)?;
        level.items.push(target);
        if let Some(using) = &mut delete.using {
            for item in using.iter_mut() {
                self.table_with_joins(item, &mut level)?;
            }
        }
        self.where_and_returning(
            delete.selection.as_mut(),
            delete.returning.as_deref_mut(),
            &level,
        )
    }

    /// The WHERE and RETURNING clauses of UPDATE and DELETE, in the statement's scope.
    fn where_and_returning(
        &mut self,
        selection: Option<&mut sqlparser::ast::Expr>,
        returning: Option<&mut [sqlparser::ast::SelectItem]>,
        level: &Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        if let Some(selection) = selection {
            self.check_exprs(selection, level)?;
        }
        if let Some(returning) = returning {
            self.wildcards(returning, level)?;
            for item in returning.iter_mut() {
                self.check_exprs(item, level)?;
            }
        }
        Ok(())
    }

    fn assignments(
        &mut self,
        assignments: &mut [Assignment],
        target: &Item<'a>,
        level: &Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        for assignment in assignments.iter_mut() {
            let names = match &assignment.target {
                AssignmentTarget::ColumnName(name) => vec![name],
                AssignmentTarget::Tuple(names) => names.iter().collect(),
            };
            let single = names.len() == 1;
            let mut write_back = None;
            for name in names {
                let column = fold_name(name)?.last().cloned().unwrap_or_default();
                if let Setting::WriteBack(col) = self.setting(target, &column, WriteKind::Update)? {
                    if !single {
                        return Err(Refusal::denied(format!(
                            "permission denied for column {column}: role {} reads it masked and may only \
                             write back the value it reads, which a multiple-column SET cannot check: set it \
                             on its own (SET {column} = ...)",
                            self.role.role
                        )));
                    }
                    write_back = Some(col);
                }
                self.refuse_cascade(target, Some(&column))?;
            }
            self.check_exprs(&mut assignment.value, level)?;
            if let Some(col) = write_back {
                self.write_back(&mut assignment.value, target, col, WriteKind::Update)?;
            }
        }
        Ok(())
    }

    /// Wraps the values an INSERT gives the columns at `write_backs` (positions in its column list);
    /// only a VALUES list can be wrapped.
    fn insert_write_backs(
        &mut self,
        source: &mut sqlparser::ast::Query,
        target: &Item<'a>,
        write_backs: &[(usize, &'a ColumnAccess)],
    ) -> Result<(), Refusal> {
        let Some((_, first)) = write_backs.first() else {
            return Ok(());
        };
        let SetExpr::Values(values) = source.body.as_mut() else {
            return Err(Refusal::denied(format!(
                "permission denied for column {}: role {} reads it masked, so an insert may give it only \
                 NULL or DEFAULT, which INSERT ... SELECT cannot check: leave the column out or use VALUES",
                first.name, self.role.role
            )));
        };
        for row in values.rows.iter_mut() {
            for (position, col) in write_backs {
                if let Some(value) = row.get_mut(*position) {
                    self.write_back(value, target, col, WriteKind::Insert)?;
                }
            }
        }
        Ok(())
    }

    /// Refuses a write the policy does not allow on the target.
    pub(super) fn require_write(
        &mut self,
        target: &Item<'a>,
        op: TableOperation,
    ) -> Result<(), Refusal> {
        let verb = match op {
            TableOperation::Insert => "insert into",
            TableOperation::Update => "update",
            TableOperation::Delete => "delete from",
            TableOperation::Read => return Ok(()),
        };
        match &target.kind {
            ItemKind::View { table, access } => {
                let allowed = match op {
                    TableOperation::Insert => access.writes.insert,
                    TableOperation::Update => access.writes.update,
                    TableOperation::Delete => access.writes.delete,
                    TableOperation::Read => true,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(Refusal::denied(format!(
                        "permission denied for table {table}: role {} may not {verb} it",
                        self.role.role
                    )))
                }
            }
            ItemKind::Base { .. } => Ok(()),
            ItemKind::System => Err(Refusal::denied(format!(
                "permission denied: may not {verb} a system catalog"
            ))),
            ItemKind::Derived { .. } => Err(Refusal::unsupported(format!(
                "cannot {verb} a CTE or subquery"
            ))),
        }
    }

    /// Refuses `ON CONFLICT DO UPDATE` on a target the role sees through a row filter or with any
    /// column not shown plainly. PostgreSQL checks the *existing* row of an upsert against neither a
    /// view's WHERE nor its check option, evaluates the `DO UPDATE ... WHERE` on it before any row
    /// security, and prints the updated row in its errors: the statement reads, tests and moves
    /// rows the role cannot see. `DO NOTHING` stays allowed (it only tells that a key exists).
    fn upsert_allowed(&self, target: &Item<'a>) -> Result<(), Refusal> {
        let ItemKind::View { table, access } = &target.kind else {
            return Ok(());
        };
        let why = if access.filtered {
            "its row filter"
        } else if access.columns.iter().any(|c| !c.action.is_show()) {
            "columns it does not see in clear"
        } else {
            return Ok(());
        };
        Err(Refusal::denied(format!(
            "permission denied for table {table}: role {} may not use INSERT ... ON CONFLICT DO UPDATE on it \
             ({why} would not hold for the existing row); use ON CONFLICT DO NOTHING, or UPDATE",
            self.role.role
        )))
    }

    fn log_operation(&mut self, target: &Item<'a>, op: TableOperation) {
        if let ItemKind::View { table, access } = &target.kind {
            let view =
                crate::access::TableName::new(self.role.view_schema.as_str(), access.view.as_str());
            self.log.operation(
                table,
                super::report::TableRoute::View(view),
                access.filtered,
                op,
            );
        }
    }

    /// With `settings.cascading_deletes = "refuse"`: refuses a delete from the target (`column`
    /// `None`) or a change of its `column` that foreign keys would cascade into rows the role may
    /// not see or change.
    fn refuse_cascade(&self, target: &Item<'a>, column: Option<&str>) -> Result<(), Refusal> {
        let ItemKind::View { table, .. } = &target.kind else {
            return Ok(());
        };
        if self.role.cascading_deletes != crate::access::CascadingDeletes::Refuse {
            return Ok(());
        }
        let (verb, found) = match column {
            None => (
                "delete from",
                crate::cascade::delete_cascades(self.role, self.catalog, table),
            ),
            Some(column) => (
                "update",
                crate::cascade::key_update_cascades(self.role, self.catalog, table, column),
            ),
        };
        // A table the role may not see is the one worth naming.
        let hidden = found
            .iter()
            .find(|c| c.reach == crate::cascade::Reach::Hidden);
        match hidden.or(found.first()) {
            Some(cascade) => Err(Refusal::denied(crate::cascade::refusal_message(
                &self.role.role,
                verb,
                table,
                cascade,
            ))),
            None => Ok(()),
        }
    }
}
