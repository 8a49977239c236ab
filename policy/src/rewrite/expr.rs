//! Checks every expression of a statement in its scope: column references (dropped columns refused,
//! referenced columns logged, `schema.table.column` rewritten to the view), function calls (allow-list),
//! custom operators, and subqueries, which get their own query level. Not for FROM clauses.

use std::borrow::Cow;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, ObjectName, Query, TableFactor, VisitMut, VisitorMut,
};

use super::analyzer::Analyzer;
use super::functions::{self, FunctionCheck};
use super::refusal::Refusal;
use super::scope::{Item, ItemKind, Scope, fold_name, folded};
use crate::access::{Action, TableName};

/// Visits the expressions of one node at depth 0 of its scope; a subquery found there is analysed
/// as a nested query level and its own expressions are skipped by this visitor.
struct ExprCheck<'r, 'a, 's, 'p> {
    analyzer: &'r mut Analyzer<'a>,
    scope: &'s Scope<'p, 'a>,
    depth: usize,
}

impl<'a> VisitorMut for ExprCheck<'_, 'a, '_, '_> {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Refusal> {
        if self.depth == 0
            && let Err(refusal) = self.analyzer.query(query, Some(self.scope))
        {
            return ControlFlow::Break(refusal);
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<Refusal> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, _relation: &mut ObjectName) -> ControlFlow<Refusal> {
        if self.depth == 0 {
            return ControlFlow::Break(Refusal::unsupported(
                "a relation in this position is not supported",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _factor: &mut TableFactor) -> ControlFlow<Refusal> {
        if self.depth == 0 {
            return ControlFlow::Break(Refusal::unsupported(
                "a FROM item in this position is not supported",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Refusal> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        self.analyzer.expr_depth += 1;
        if self.analyzer.expr_depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(too_deep());
        }
        match self.analyzer.expr(expr, self.scope) {
            Ok(()) => ControlFlow::Continue(()),
            Err(refusal) => ControlFlow::Break(refusal),
        }
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Refusal> {
        if self.depth == 0 {
            self.analyzer.expr_depth -= 1;
            // After the checks of the expression and its operands; the replacement is not walked.
            if let Err(refusal) = self.analyzer.lookup(expr, self.scope) {
                return ControlFlow::Break(refusal);
            }
            self.analyzer.own_schema_literal(expr, self.scope);
        }
        ControlFlow::Continue(())
    }
}

/// The deepest expression tree analysed. sqlparser builds chains such as `a + b + c ...` or
/// `x OR y OR ...` iteratively, so its own recursion limit does not bound them, while every
/// walk over the tree (this analysis, comparison, serialization) recurses: beyond this depth the
/// statement is refused instead of risking the stack of a 2 MiB async worker thread.
pub(crate) const MAX_EXPR_DEPTH: usize = 400;

pub(crate) fn too_deep() -> Refusal {
    Refusal::too_complex(format!(
        "statement too complex: expressions nested more than {MAX_EXPR_DEPTH} levels deep"
    ))
}

/// Types whose input function looks an object up by name: the literal matters.
fn is_object_reference_type(data_type: &DataType) -> bool {
    let name = data_type.to_string().to_ascii_lowercase();
    name.starts_with("reg")
}

impl<'a> Analyzer<'a> {
    /// Checks (and rewrites) every expression inside `node` in `scope`.
    pub(crate) fn check_exprs<V: VisitMut + ?Sized>(
        &mut self,
        node: &mut V,
        scope: &Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        let mut visitor = ExprCheck {
            analyzer: self,
            scope,
            depth: 0,
        };
        match node.visit(&mut visitor) {
            ControlFlow::Break(refusal) => Err(refusal),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    fn expr(&mut self, expr: &mut Expr, scope: &Scope<'_, 'a>) -> Result<(), Refusal> {
        match expr {
            Expr::Identifier(ident) => self.unqualified_column(&folded(ident), scope),
            Expr::CompoundIdentifier(idents) => {
                let parts: Vec<Cow<'_, str>> = idents.iter().map(folded).collect();
                if let Some(shortened) = self.qualified_column(&parts, scope)? {
                    *idents = idents.split_off(idents.len() - shortened);
                    self.edits.other = true;
                }
                Ok(())
            }
            Expr::Function(function) if self.harmless_set_config(function) => {
                self.value_sensitive = true;
                Ok(())
            }
            Expr::Function(function) => {
                match super::channels::check_pg_notify(self.role, function) {
                    Some(decision) => {
                        self.value_sensitive = true;
                        decision
                    }
                    None => self.function(&function.name),
                }
            }
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(parts),
                ..
            } => {
                if parts
                    .first()
                    .is_some_and(|schema| schema.eq_ignore_ascii_case("pg_catalog"))
                {
                    Ok(())
                } else {
                    Err(Refusal::denied(
                        "permission denied: user-defined operators are not allowed through Maschera",
                    ))
                }
            }
            Expr::Cast { data_type, .. } => {
                if is_object_reference_type(data_type) {
                    self.value_sensitive = true;
                }
                Ok(())
            }
            Expr::QualifiedWildcard(name, _) => {
                let parts = fold_name(name)?;
                if let Some(item) = parts.last().and_then(|q| scope.item(q)) {
                    self.log_whole_row(item);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `set_config('name', value, is_local)` whose first argument is a literal naming a setting
    /// a restricted role may `SET` (Django sets `TimeZone` this way on connect). Any other
    /// `set_config` is refused as a dangerous function (it could rewrite the `maschera.*` attributes).
    fn harmless_set_config(&self, function: &sqlparser::ast::Function) -> bool {
        use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};
        let Ok(parts) = fold_name(&function.name) else {
            return false;
        };
        let is_set_config = match parts.as_slice() {
            [name] => name == "set_config",
            [schema, name] => schema == "pg_catalog" && name == "set_config",
            _ => false,
        };
        let FunctionArguments::List(list) = &function.args else {
            return false;
        };
        let setting = match list.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
                Value::SingleQuotedString(name) => name,
                _ => return false,
            },
            _ => return false,
        };
        is_set_config && list.args.len() == 3 && super::settings::check_set(setting, &[]).is_ok()
    }

    /// Checks a call of `name` against the allow-list and the policy.
    pub(crate) fn function(&mut self, name: &ObjectName) -> Result<(), Refusal> {
        let parts = fold_name(name)?;
        let (schema, function) = match parts.as_slice() {
            [function] => (None, function.as_str()),
            [schema, function] => (Some(schema.as_str()), function.as_str()),
            _ => {
                return Err(Refusal::denied(format!(
                    "permission denied for function {name}: cross-database reference"
                )));
            }
        };
        let shown = parts.join(".");
        match functions::check(schema, function, self.role, &self.catalog.search_path) {
            FunctionCheck::Allowed => Ok(()),
            FunctionCheck::AllowedValueSensitive => {
                self.value_sensitive = true;
                Ok(())
            }
            FunctionCheck::Dangerous => Err(Refusal::denied(format!(
                "permission denied for function {shown}: it runs SQL text or reaches files, other servers, other sessions or settings"
            ))),
            FunctionCheck::Unknown => Err(Refusal::denied(format!(
                "permission denied for function {shown}: not in Maschera's list of functions allowed to role {}",
                self.role.role
            ))),
        }
    }

    /// An unqualified name: a column of the innermost level that has it, or a whole-row reference.
    pub(crate) fn unqualified_column(
        &mut self,
        column: &str,
        scope: &Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        for level in scope.levels() {
            let mut found = false;
            for item in &level.items {
                found |= self.item_column(item, column)?;
            }
            if found {
                return Ok(());
            }
            if let Some(item) = level.items.iter().find(|i| i.name == column) {
                self.log_whole_row(item);
                return Ok(());
            }
        }
        Ok(())
    }

    /// `q.c`, `s.t.c` or `q.c.field`. Returns how many trailing parts to keep when a `schema.table`
    /// prefix must be shortened to the table's reference name (the table now is a view elsewhere).
    fn qualified_column(
        &mut self,
        parts: &[Cow<'_, str>],
        scope: &Scope<'_, 'a>,
    ) -> Result<Option<usize>, Refusal> {
        if let [schema, table, column, ..] = parts {
            let by_schema = scope
                .levels()
                .flat_map(|level| level.items.iter())
                .find(|i| i.name == *table && i.schema.as_deref() == Some(schema.as_ref()));
            if let Some(item) = by_schema {
                self.item_column(item, column)?;
                return Ok(Some(parts.len() - 1));
            }
        }
        if let [qualifier, column, ..] = parts
            && let Some(item) = scope.item(qualifier)
        {
            self.item_column(item, column)?;
        }
        Ok(None)
    }

    /// Whether `item` has `column`; refuses a dropped one and logs a visible one.
    fn item_column(&mut self, item: &Item<'a>, column: &str) -> Result<bool, Refusal> {
        match &item.kind {
            ItemKind::View { table, access } => match access.column(column) {
                Some(col) if col.action == Action::Drop => Err(Self::dropped_column(table, column)),
                Some(col) => {
                    self.log.column(table, column, col.category, &col.action);
                    Ok(true)
                }
                None => Ok(false),
            },
            ItemKind::Base { table, columns } => {
                let found = columns.iter().any(|c| c == column);
                if found {
                    self.log.column(table, column, None, &Action::Show);
                }
                Ok(found)
            }
            ItemKind::System => Ok(false),
            ItemKind::Derived { columns } => Ok(columns
                .as_ref()
                .is_some_and(|cols| cols.iter().any(|c| c == column))),
        }
    }

    /// A `*`, `t.*` or whole-row `t`: every column the role sees of the item.
    pub(crate) fn log_whole_row(&mut self, item: &Item<'a>) {
        let table: Option<&TableName> = match &item.kind {
            ItemKind::View { table, .. } | ItemKind::Base { table, .. } => Some(table),
            _ => None,
        };
        let (Some(table), Some(columns)) = (table, item.visible_columns()) else {
            return;
        };
        for column in columns {
            let (category, action) = match &item.kind {
                ItemKind::View { access, .. } => match access.column(&column) {
                    Some(c) => (c.category, c.action.clone()),
                    None => continue,
                },
                _ => (None, Action::Show),
            };
            self.log.column(table, &column, category, &action);
        }
    }
}
