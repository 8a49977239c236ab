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

#[cfg(test)]
mod tests {
    use crate::access::Catalog;
    use crate::rewrite::{SqlState, rewrite, rewrite_prepared};

    const POLICY: &str = "[settings]\nunlisted_tables = \"read\"\n[tables.customers.columns]\nemail = \"contact\"\n\
                          [roles.desk]\ndropped_columns = \"null\"\n[roles.desk.tables.customers]\n\
                          writes = [\"insert\", \"update\"]\n";

    fn setup() -> (crate::access::RoleAccess, Catalog) {
        let policy = crate::Policy::parse("p.toml", POLICY).unwrap();
        let catalog = crate::compile::catalog_of(&[
            (
                "customers",
                &[("id", "bigint"), ("name", "text"), ("email", "text")],
            ),
            ("schema_migrations", &[("version", "text")]),
        ]);
        let access = policy.role_access_by_name("desk", &catalog).unwrap();
        (access, catalog)
    }

    #[test]
    fn null_written_back_to_a_hidden_column_passes_and_nothing_else_does() {
        let (desk, catalog) = setup();
        for sql in [
            "UPDATE customers SET name = 'x', email = NULL WHERE id = 1",
            "INSERT INTO customers (name, email) VALUES ('a', NULL), ('b', (NULL))",
            "INSERT INTO customers VALUES (DEFAULT, 'a', NULL)",
            "SELECT id, name, email FROM customers WHERE email IS NULL",
            "SELECT * FROM schema_migrations",
        ] {
            rewrite(sql, &desk, &catalog).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
        }
        for sql in [
            "UPDATE customers SET email = 'x@example.org'",
            "UPDATE customers SET email = lower(email)",
            "INSERT INTO customers (name, email) VALUES ('a', NULL), ('b', 'x@example.org')",
            "INSERT INTO customers (name, email) SELECT name, NULL FROM customers",
            "INSERT INTO schema_migrations VALUES ('1')",
            "DELETE FROM schema_migrations",
        ] {
            let refusal = rewrite(sql, &desk, &catalog).unwrap_err();
            assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege, "{sql}");
        }
        // A bound parameter's value is not known when the proxy decides: refused.
        let refusal = rewrite_prepared("UPDATE customers SET email = $1", &desk, &catalog)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
        assert!(refusal.message.contains("email"), "{}", refusal.message);
    }
}
