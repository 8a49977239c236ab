//! Writes to a column a role sees as NULL because it is hidden (`dropped_columns = "null"`, or the
//! `null` action): an ORM writes every mapped column back, so `NULL` written to such a column is the
//! value as the role reads it, unchanged, and is accepted (the stored value is kept on update, the
//! table's default is stored on insert, by the role's write trigger). Any other value, a parameter
//! included (its value is not known here), is refused as any masked column is.
//! Not for: which columns are writable (`dml.rs`), or masked values other than NULL.

use sqlparser::ast::{Expr, Query, SetExpr, Value};

use super::analyzer::Analyzer;
use super::scope::{Item, ItemKind};
use crate::access::Action;

fn is_null(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(v.value, Value::Null),
        Expr::Nested(inner) => is_null(inner),
        _ => false,
    }
}

impl<'a> Analyzer<'a> {
    /// Whether every value written to `column` of `target` is a NULL literal and the role reads the
    /// column as NULL (then the write is accepted and logged).
    pub(crate) fn null_written<'e>(
        &mut self,
        target: &Item<'a>,
        column: &str,
        mut values: impl Iterator<Item = Option<&'e Expr>>,
    ) -> bool {
        let ItemKind::View { table, access } = &target.kind else {
            return false;
        };
        let Some(col) = access.column(column).filter(|c| c.action == Action::Null) else {
            return false;
        };
        if !values.all(|v| v.is_some_and(is_null)) {
            return false;
        }
        self.log.column(table, column, col.category, &col.action);
        true
    }

    /// As [`Self::null_written`] for the `position`-th column of an INSERT's `VALUES` rows.
    pub(crate) fn null_inserted(
        &mut self,
        target: &Item<'a>,
        column: &str,
        source: Option<&Query>,
        position: usize,
    ) -> bool {
        let Some(SetExpr::Values(values)) = source.map(|q| q.body.as_ref()) else {
            return false;
        };
        !values.rows.is_empty()
            && self.null_written(
                target,
                column,
                values.rows.iter().map(|row| row.get(position)),
            )
    }
}
