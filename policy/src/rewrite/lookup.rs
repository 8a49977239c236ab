//! The predicate rewrite of lookups (`lookup = [...]` in a role's table rule, see
//! `crate::lookup_sql`): `col = <value>`, `<value> = col` and `col IN (<values>)`, where `col` is a
//! lookup column the role sees masked and each value a literal or a `$n` parameter (possibly cast),
//! become `(t.key IN (SELECT maschera_<role>.lookup_<table>_<col>(<value>)))`, one per value, joined
//! by `OR`. The rows then come back through the view, masked as ever; the database function answers
//! equality only. Each rewritten value is logged as a lookup of the column (for the access log and
//! the proxy's rate limit), never with its value.
//!
//! Not for: any other predicate on the column (`LIKE`, ranges, `col = other_col`): it keeps seeing
//! the masked value. Not for the database side (`crate::lookup_sql`).

use sqlparser::ast::{BinaryOperator, CastKind, Expr, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::scope::{Item, ItemKind, Scope, folded, quoted};
use crate::access::{Action, LookupColumn, TableName};

/// Whether `expr` is a value a lookup takes: a literal other than NULL, a `$n` parameter, or either
/// cast to a type.
fn is_value(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => !matches!(v.value, Value::Null),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            format: None,
            ..
        } => matches!(expr.as_ref(), Expr::Value(v) if !matches!(v.value, Value::Null)),
        _ => false,
    }
}

/// Whether `item` has `column`: `None` when its columns are unknown.
fn has_column(item: &Item<'_>, column: &str) -> Option<bool> {
    match &item.kind {
        ItemKind::View { access, .. } => Some(access.column(column).is_some()),
        ItemKind::Base { columns, .. } => Some(columns.iter().any(|c| c == column)),
        ItemKind::System => None,
        ItemKind::Derived { columns } => columns.as_ref().map(|c| c.iter().any(|c| c == column)),
    }
}

impl<'a> Analyzer<'a> {
    /// Rewrites `expr` when it is a lookup predicate (see the module doc); anything else is left as
    /// it is. Called after the expression's own checks.
    pub(crate) fn lookup(&mut self, expr: &mut Expr, scope: &Scope<'_, 'a>) -> Result<(), Refusal> {
        if self.role.lookups.tables.is_empty() {
            return Ok(());
        }
        let (column, values): (&Expr, Vec<&Expr>) = match &*expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } if is_value(right) => (left, vec![right]),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } if is_value(left) => (right, vec![left]),
            Expr::InList {
                expr,
                list,
                negated: false,
            } if !list.is_empty() && list.iter().all(is_value) => (expr, list.iter().collect()),
            _ => return Ok(()),
        };
        let Some((qualifier, table, name, lookup)) = self.lookup_target(column, scope) else {
            return Ok(());
        };
        let key = format!("{}.{}", quoted(&qualifier), quoted(&lookup.key));
        let function = format!(
            "{}.{}",
            quoted(&self.role.view_schema),
            quoted(&lookup.function)
        );
        let tests: Vec<String> = values
            .iter()
            .map(|value| format!("{key} IN (SELECT {function}({value}))"))
            .collect();
        let text = format!("({})", tests.join(" OR "));
        let replacement = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut parser| parser.parse_expr())
            .map_err(|_| {
                Refusal::unsupported(format!(
                    "statement not supported by the Maschera parser: the lookup on column {name} of table {table} cannot be rewritten"
                ))
            })?;
        let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
        *expr = replacement;
        self.edits.other = true;
        self.log.lookup(&table, &name, count);
        Ok(())
    }

    /// The FROM item (its reference name), table and column a lookup predicate's column names, with
    /// the column's lookup, when it is a lookup column of a view the role sees masked and the
    /// reference is unambiguous.
    fn lookup_target(
        &self,
        column: &Expr,
        scope: &Scope<'_, 'a>,
    ) -> Option<(String, TableName, String, &'a LookupColumn)> {
        let (item, name) = match column {
            Expr::Identifier(ident) => {
                let name = folded(ident).into_owned();
                let mut found = None;
                for level in scope.levels() {
                    let mut having = Vec::new();
                    for item in &level.items {
                        match has_column(item, &name) {
                            None => return None,
                            Some(true) => having.push(item),
                            Some(false) => {}
                        }
                    }
                    match having.as_slice() {
                        [] => continue,
                        [item] => {
                            found = Some(*item);
                            break;
                        }
                        _ => return None,
                    }
                }
                let item = found?;
                // The qualifier added must name the same item from here.
                if !std::ptr::eq(scope.item(&item.name)?, item) {
                    return None;
                }
                (item, name)
            }
            Expr::CompoundIdentifier(idents) => match idents.as_slice() {
                [qualifier, column] => {
                    (scope.item(&folded(qualifier))?, folded(column).into_owned())
                }
                _ => return None,
            },
            _ => return None,
        };
        let ItemKind::View { table, access } = &item.kind else {
            return None;
        };
        let action = &access.column(&name)?.action;
        if matches!(action, Action::Show | Action::Drop) || item.name.is_empty() {
            return None;
        }
        let lookup = self.role.lookups.get(table, &name)?;
        if !access.column(&lookup.key)?.action.is_show() {
            return None;
        }
        Some((item.name.clone(), table.clone(), name, lookup))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ColumnAction, rewrite, rewrite_prepared};
    use crate::access::{LookupColumn, RoleAccess, TableName};
    use crate::rewrite::fixture;

    fn support(lookup: bool) -> RoleAccess {
        let mut role = fixture::role("support");
        if lookup {
            let columns = ["email", "phone"].map(|c| {
                (
                    c.to_string(),
                    LookupColumn {
                        function: format!("lookup_contacts_{c}"),
                        key: "id".into(),
                    },
                )
            });
            role.lookups
                .tables
                .insert(TableName::new("public", "contacts"), columns.into());
        }
        role
    }

    fn sql(role: &RoleAccess, text: &str) -> String {
        rewrite(text, role, &fixture::catalog())
            .unwrap()
            .statements()[0]
            .sql
            .clone()
    }

    const F: &str = "\"maschera_support\".\"lookup_contacts_email\"";

    #[test]
    fn equality_on_a_lookup_column_becomes_a_key_lookup() {
        let role = support(true);
        assert_eq!(
            sql(
                &role,
                "SELECT id, email FROM contacts WHERE email = 'marco@example.org'"
            ),
            format!(
                "SELECT id, email FROM \"maschera_support\".\"contacts\" WHERE (\"contacts\".\"id\" IN (SELECT {F}('marco@example.org')))"
            )
        );
        assert_eq!(
            sql(
                &role,
                "SELECT c.id FROM contacts c WHERE 'a@b.c' = c.email AND c.id > 3"
            ),
            format!(
                "SELECT c.id FROM \"maschera_support\".\"contacts\" c WHERE (\"c\".\"id\" IN (SELECT {F}('a@b.c'))) AND c.id > 3"
            )
        );
        assert_eq!(
            sql(
                &role,
                "SELECT id FROM contacts WHERE phone IN ('1', '2'::text)"
            ),
            "SELECT id FROM \"maschera_support\".\"contacts\" WHERE (\"contacts\".\"id\" IN (SELECT \"maschera_support\".\"lookup_contacts_phone\"('1')) \
             OR \"contacts\".\"id\" IN (SELECT \"maschera_support\".\"lookup_contacts_phone\"('2'::TEXT)))"
        );
        let prepared = rewrite_prepared(
            "SELECT id FROM contacts WHERE email = $1",
            &role,
            &fixture::catalog(),
        )
        .unwrap();
        let statement = &prepared.statements()[0];
        assert!(
            statement.sql.ends_with(&format!("(SELECT {F}($1)))")),
            "{}",
            statement.sql
        );
        let email = &statement.tables[0].columns["email"];
        assert_eq!((email.action, email.lookups), (ColumnAction::Lookup, 1));
    }

    #[test]
    fn other_predicates_and_roles_without_lookup_keep_the_masked_value() {
        let role = support(true);
        for text in [
            "SELECT id FROM contacts WHERE email ILIKE '%marco%'",
            "SELECT id FROM contacts WHERE email LIKE 'marco@example.org'",
            "SELECT id FROM contacts WHERE email > 'a'",
            "SELECT id FROM contacts WHERE email = first_name",
            "SELECT id FROM contacts WHERE email NOT IN ('a')",
            "SELECT id FROM contacts WHERE email = NULL",
            "SELECT id FROM contacts WHERE first_name = 'Marco'",
        ] {
            let out = sql(&role, text);
            assert!(!out.contains("lookup_"), "{text} -> {out}");
        }
        let without = support(false);
        let out = sql(
            &without,
            "SELECT id FROM contacts WHERE email = 'marco@example.org'",
        );
        assert!(out.ends_with("WHERE email = 'marco@example.org'"), "{out}");
        let statement = &rewrite(
            "SELECT id FROM contacts WHERE email = 'x'",
            &without,
            &fixture::catalog(),
        )
        .unwrap()
        .statements()[0]
            .clone();
        assert_eq!(
            statement.tables[0].columns["email"].action,
            ColumnAction::Masked
        );
    }

    #[test]
    fn lookups_work_in_subqueries_and_the_where_of_a_write() {
        let role = support(true);
        for (text, qualifier, value) in [
            (
                "SELECT t.id FROM tickets t WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.id = t.contact_id AND c.email = $1)",
                "c",
                "$1",
            ),
            (
                "UPDATE tickets SET status = 'open' WHERE contact_id IN (SELECT id FROM contacts WHERE email = 'x')",
                "contacts",
                "'x'",
            ),
        ] {
            let out = sql(&role, text);
            let expected = format!("(\"{qualifier}\".\"id\" IN (SELECT {F}({value})))");
            assert!(out.contains(&expected), "{out}");
        }
        // A dropped column stays refused; the key is not rewritten.
        assert!(
            rewrite(
                "SELECT id FROM contacts WHERE tax_code = 'x'",
                &role,
                &fixture::catalog()
            )
            .is_err()
        );
        assert!(!sql(&role, "SELECT id FROM contacts WHERE id = 1").contains("lookup_"));
    }

    #[test]
    fn an_ambiguous_column_is_not_rewritten() {
        let role = support(true);
        // Both tables have `email`? Only contacts does: a join still rewrites, qualified.
        let out = sql(
            &role,
            "SELECT t.id FROM tickets t JOIN contacts ON contacts.id = t.contact_id WHERE email = 'x'",
        );
        assert!(out.contains("(\"contacts\".\"id\" IN (SELECT"), "{out}");
        // A derived table of unknown columns beside it: left as it is.
        let out = sql(
            &role,
            "SELECT 1 FROM contacts, generate_series(1, 2) AS g WHERE email = 'x'",
        );
        assert!(!out.contains("lookup_"), "{out}");
    }
}
