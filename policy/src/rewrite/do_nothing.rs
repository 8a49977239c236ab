//! `INSERT ... ON CONFLICT DO NOTHING` for a role whose view writes through `INSTEAD OF` triggers (a row
//! filter, or a column not shown). PostgreSQL cannot infer an arbiter index on such a view (42P10 with a
//! conflict target) and, without a target, its trigger's own insert has no `ON CONFLICT` (a conflict is
//! a unique violation). The proxy rewrites the statement to
//! `INSERT INTO view (cols) SELECT * FROM (VALUES ...) AS maschera_new (cols) WHERE NOT EXISTS (SELECT 1
//! FROM view AS maschera_old WHERE <a key of maschera_old equals maschera_new's>)`: the test reads the
//! role's own view, so it never sees a row outside the filter; a key that exists only outside the filter
//! still makes the trigger's insert fail with a unique violation (23505, its DETAIL withheld), which tells
//! that the key exists and nothing else, as `DO NOTHING` itself would.
//!
//! Keys: the conflict target's columns (`ON CONSTRAINT name` is left to PostgreSQL, which answers
//! 42P10), or without a target every unique key of the table; a key is used
//! only when the role sees all its columns as stored and the statement gives them all (a key filled by
//! a default is left to the unique violation). Not race-free against a concurrent insert of the same key
//! (then 23505 as well), and two rows of one statement with the same key are not skipped.
//!
//! A column that every row gives as `DEFAULT` (TypeORM's `orIgnore()` lists every mapped column and
//! writes `DEFAULT` for the ones an entity leaves unset) is left out of the statement, which is what
//! `DEFAULT` means; `DEFAULT` in some rows only is refused (0A000): the `VALUES` list in a subquery
//! cannot hold it.
//!
//! Not for: `DO UPDATE` (refused in `dml.rs`), or views without triggers (PostgreSQL runs the statement
//! as written).

use sqlparser::ast::{ConflictTarget, Expr, Insert, SetExpr};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::scope::{Item, ItemKind, fold, quoted};
use crate::access::Action;
use crate::write_back::view_type;

const NEW: &str = "maschera_new";
const OLD: &str = "maschera_old";

impl<'a> Analyzer<'a> {
    /// Rewrites `insert` (analysed, its target `target`, setting `columns`) when it is `ON CONFLICT DO
    /// NOTHING` on a view that writes through triggers.
    pub(crate) fn do_nothing(
        &mut self,
        insert: &mut Insert,
        target: &Item<'a>,
        columns: &[String],
    ) -> Result<(), Refusal> {
        let ItemKind::View { table, access } = &target.kind else {
            return Ok(());
        };
        let Some(sqlparser::ast::OnInsert::OnConflict(conflict)) = &insert.on else {
            return Ok(());
        };
        if !matches!(conflict.action, sqlparser::ast::OnConflictAction::DoNothing) {
            return Ok(());
        }
        let triggers = access.filtered || access.columns.iter().any(|c| !c.action.is_show());
        if !triggers {
            return Ok(());
        }
        let keys: Vec<Vec<String>> = match &conflict.conflict_target {
            Some(ConflictTarget::Columns(names)) => vec![names.iter().map(fold).collect()],
            // The constraint's columns are not known here: PostgreSQL answers 42P10 (no arbiter on
            // the view), a refusal that reads nothing.
            Some(ConflictTarget::OnConstraint(_)) => return Ok(()),
            None => self
                .catalog
                .unique_keys
                .get(table)
                .cloned()
                .unwrap_or_default(),
        };
        let columns = &without_default_columns(insert, columns);
        let usable: Vec<Vec<String>> = keys
            .into_iter()
            .filter(|key| {
                !key.is_empty()
                    && key.iter().all(|k| {
                        columns.contains(k)
                            && access.column(k).is_some_and(|c| c.action == Action::Show)
                    })
            })
            .collect();
        for key in &usable {
            for k in key {
                if let Some(c) = access.column(k) {
                    self.log.column(table, k, c.category, &c.action);
                }
            }
        }
        insert.on = None;
        self.edits.other = true;
        if usable.is_empty() {
            // No key to test: conflicts are the trigger's unique violations.
            return Ok(());
        }
        let Some(source) = insert.source.as_mut() else {
            return Ok(());
        };
        let types: Vec<String> = columns
            .iter()
            .map(|name| {
                let data_type = self
                    .catalog
                    .tables
                    .get(table)
                    .and_then(|cols| cols.iter().find(|c| &c.name == name))
                    .map(|c| c.data_type.as_str())
                    .unwrap_or("text");
                access
                    .column(name)
                    .map(|c| view_type(&c.action, data_type))
                    .unwrap_or(data_type)
                    .to_string()
            })
            .collect();
        let rows = match source.body.as_ref() {
            SetExpr::Values(values)
                if source.with.is_none()
                    && source.order_by.is_none()
                    && source.limit_clause.is_none() =>
            {
                let mut rows = Vec::new();
                for row in &values.rows {
                    let mut cells = Vec::new();
                    for (value, data_type) in row.iter().zip(&types) {
                        if is_default(value) {
                            return Err(Refusal::unsupported(format!(
                                "DEFAULT in INSERT ... ON CONFLICT DO NOTHING is not supported for role {} on table {table}: leave the column out",
                                self.role.role
                            )));
                        }
                        // Typed as the column: a VALUES list in a subquery has no target to take
                        // its types from.
                        cells.push(format!("CAST({value} AS {data_type})"));
                    }
                    rows.push(format!("({})", cells.join(", ")));
                }
                format!("VALUES {}", rows.join(", "))
            }
            _ => source.to_string(),
        };
        let names: Vec<String> = columns.iter().map(|c| quoted(c).to_string()).collect();
        let view = self.view_name(access);
        let conflict = usable
            .iter()
            .map(|key| {
                let equal: Vec<String> = key
                    .iter()
                    .map(|k| format!("{OLD}.{0} = {NEW}.{0}", quoted(k)))
                    .collect();
                format!("({})", equal.join(" AND "))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT * FROM ({rows}) AS {NEW} ({}) WHERE NOT EXISTS (SELECT 1 FROM {view} AS {OLD} WHERE {conflict})",
            names.join(", ")
        );
        let query = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_query())
            .map_err(|_| {
                Refusal::unsupported(format!(
                    "INSERT ... ON CONFLICT DO NOTHING on table {table} could not be rewritten for role {}",
                    self.role.role
                ))
            })?;
        *source = query;
        Ok(())
    }
}

/// Whether a `VALUES` cell is the keyword `DEFAULT` (sqlparser reads it as an identifier).
fn is_default(value: &Expr) -> bool {
    matches!(value, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// Leaves out of `insert` (its named `columns` and its plain `VALUES` rows) every column that all its
/// rows give as `DEFAULT`, and returns the columns that remain. Unchanged when the statement names no
/// columns, its source is not a plain `VALUES` list, or every column would go.
fn without_default_columns(insert: &mut Insert, columns: &[String]) -> Vec<String> {
    let unchanged = columns.to_vec();
    if insert.columns.len() != columns.len() {
        return unchanged;
    }
    let Some(source) = insert.source.as_mut() else {
        return unchanged;
    };
    if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
        return unchanged;
    }
    let SetExpr::Values(values) = source.body.as_mut() else {
        return unchanged;
    };
    let keep: Vec<bool> = (0..columns.len())
        .map(|i| {
            !values
                .rows
                .iter()
                .all(|row| row.get(i).is_some_and(is_default))
        })
        .collect();
    if keep.iter().all(|k| *k)
        || !keep.iter().any(|k| *k)
        || values.rows.iter().any(|row| row.len() != columns.len())
    {
        return unchanged;
    }
    for row in values.rows.iter_mut() {
        let mut position = 0;
        row.retain(|_| {
            position += 1;
            keep[position - 1]
        });
    }
    let mut position = 0;
    insert.columns.retain(|_| {
        position += 1;
        keep[position - 1]
    });
    columns
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c.clone())
        .collect()
}
