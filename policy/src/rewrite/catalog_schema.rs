//! A catalog query that names the base schema (`information_schema.columns ... WHERE table_schema =
//! 'public'`, `pg_namespace.nspname = 'public'`) for a restricted role: the role's tables of that
//! schema are views in its own schema (`maschera_sales`), so the predicate matches nothing and the
//! client concludes that the table does not exist (Sequelize's `describeTable` answers "No
//! description found", and so do other ORMs that describe a table in the schema they were configured
//! with). As the proxy maps `public.contacts` in a query to the role's view, it maps the schema in
//! such a predicate too: `<schema column of a catalog relation> = '<base schema>'` becomes
//! `... IN ('<base schema>', '<role's view schema>')` when the role reads some table of that schema
//! through a view. The rows then name the view's own schema; nothing the role could not already read
//! from its schema is added (catalog views filter by the caller's privileges).
//!
//! Not for: columns of user tables (only a column of a catalog relation, qualified by its reference
//! or alone in a FROM of catalog relations only), other operators, or unrestricted roles.

use sqlparser::ast::{BinaryOperator, Expr, Value, ValueWithSpan};

use super::analyzer::Analyzer;
use super::scope::{ItemKind, Scope, folded};
use crate::access::TableAccess;

/// Catalog columns that hold a schema name.
const SCHEMA_COLUMNS: &[&str] = &[
    "table_schema",
    "constraint_schema",
    "schema_name",
    "schemaname",
    "nspname",
];

impl<'a> Analyzer<'a> {
    /// Rewrites `expr` when it is `<catalog schema column> = '<schema>'` (either side) and the role
    /// reads tables of `<schema>` through views in its own schema.
    pub(crate) fn own_schema_literal(&mut self, expr: &mut Expr, scope: &Scope<'_, 'a>) {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = expr
        else {
            return;
        };
        let (column, literal) = match (left.as_ref(), right.as_ref()) {
            (Expr::Value(value), column) | (column, Expr::Value(value)) => (column, value),
            _ => return,
        };
        let Value::SingleQuotedString(schema) = &literal.value else {
            return;
        };
        let own = self.role.view_schema.as_str();
        if own.is_empty() || schema == own || !self.catalog_schema_column(column, scope) {
            return;
        }
        let viewed = self.role.tables.iter().any(|(table, access)| {
            table.schema == *schema && matches!(access, TableAccess::View(_))
        });
        if !viewed {
            return;
        }
        let list = vec![
            Expr::Value(literal.clone()),
            Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(own.to_owned()),
                span: literal.span,
            }),
        ];
        *expr = Expr::InList {
            expr: Box::new(column.clone()),
            list,
            negated: false,
        };
        self.edits.other = true;
        // The rewrite depends on the literal: the statement's shape is not cacheable.
        self.value_sensitive = true;
    }

    /// Whether `column` is a schema-name column of a catalog relation in `scope`.
    fn catalog_schema_column(&self, column: &Expr, scope: &Scope<'_, 'a>) -> bool {
        match column {
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [qualifier, name] => {
                    SCHEMA_COLUMNS.contains(&folded(name).as_ref())
                        && scope
                            .item(&folded(qualifier))
                            .is_some_and(|item| matches!(item.kind, ItemKind::System))
                }
                _ => false,
            },
            Expr::Identifier(name) => {
                SCHEMA_COLUMNS.contains(&folded(name).as_ref())
                    && scope.levels().next().is_some_and(|level| {
                        !level.items.is_empty()
                            && level
                                .items
                                .iter()
                                .all(|item| matches!(item.kind, ItemKind::System))
                    })
            }
            _ => false,
        }
    }
}
