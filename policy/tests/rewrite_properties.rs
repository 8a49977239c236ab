//! Property tests of the statement rewriter over generated SELECTs on the reference CRM (tables,
//! columns, aliases, joins, filters, ordering, schema qualification), for every restricted role:
//! - an accepted statement's SQL parses back to the same tree as its re-serialization;
//! - it never names a base table of the policy (only the role's views);
//! - a plain SELECT of visible columns of a table the role may read is accepted (the test is not
//!   vacuous).
//!
//! Not for: checking the masking itself (the rewriter's unit tests and the e2e tests do).

mod base_tables;

use policy::access::{Action, RoleAccess, TableAccess};
use policy::rewrite::{self, fixture};
use proptest::prelude::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A generated SELECT and whether it is "plain" (visible columns only, no clauses).
#[derive(Debug, Clone)]
struct Select {
    role: &'static str,
    table: String,
    columns: Vec<String>,
    qualified: bool,
    alias: Option<&'static str>,
    join: Option<String>,
    filter: Option<(String, i64)>,
    order: Option<String>,
    limit: Option<u32>,
}

impl Select {
    fn sql(&self) -> String {
        let from = if self.qualified {
            format!("public.{}", self.table)
        } else {
            self.table.clone()
        };
        let prefix = self.alias.map(|a| format!("{a}.")).unwrap_or_default();
        let list = if self.columns.is_empty() {
            "*".to_string()
        } else {
            self.columns
                .iter()
                .map(|c| format!("{prefix}{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {list} FROM {from}");
        if let Some(alias) = self.alias {
            sql.push_str(&format!(" AS {alias}"));
        }
        if let Some(other) = &self.join {
            sql.push_str(&format!(
                " JOIN {other} j ON j.contact_id = {prefix}contact_id"
            ));
        }
        if let Some((column, value)) = &self.filter {
            sql.push_str(&format!(" WHERE {prefix}{column} = {value}"));
        }
        if let Some(column) = &self.order {
            sql.push_str(&format!(" ORDER BY {prefix}{column}"));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    fn is_plain(&self) -> bool {
        self.join.is_none() && self.filter.is_none() && self.order.is_none()
    }
}

fn tables() -> Vec<(String, Vec<String>)> {
    fixture::catalog()
        .tables
        .into_iter()
        .map(|(name, columns)| (name.name, columns.into_iter().map(|c| c.name).collect()))
        .collect()
}

fn select() -> impl Strategy<Value = Select> {
    let restricted: Vec<&'static str> = fixture::ROLES
        .iter()
        .copied()
        .filter(|r| *r != "dpo")
        .collect();
    let all = tables();
    let names: Vec<String> = all.iter().map(|(t, _)| t.clone()).collect();
    (prop::sample::select(restricted), prop::sample::select(all)).prop_flat_map(
        move |(role, (table, columns))| {
            let pick = prop::sample::select(columns.clone());
            (
                prop::sample::subsequence(columns.clone(), 0..=columns.len()),
                any::<bool>(),
                prop::option::of(prop::sample::select(vec!["t", "x", "contacts"])),
                prop::option::of(prop::sample::select(names.clone())),
                prop::option::of((pick.clone(), -5i64..1000)),
                prop::option::of(pick),
                prop::option::of(0u32..500),
            )
                .prop_map(
                    move |(columns, qualified, alias, join, filter, order, limit)| Select {
                        role,
                        table: table.clone(),
                        columns,
                        qualified,
                        alias,
                        join,
                        filter,
                        order,
                        limit,
                    },
                )
        },
    )
}

/// Whether the role reads `table` and every listed column is visible (not dropped).
fn visible(role: &RoleAccess, select: &Select) -> bool {
    let Some(TableAccess::View(view)) = role
        .tables
        .iter()
        .find(|(name, _)| name.name == select.table)
        .map(|(_, access)| access)
    else {
        return false;
    };
    select.columns.iter().all(|c| {
        view.columns
            .iter()
            .any(|col| &col.name == c && col.action != Action::Drop)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_selects_reparse_and_reach_only_views(select in select()) {
        let role = fixture::role(select.role);
        let catalog = fixture::catalog();
        let sql = select.sql();
        match rewrite::rewrite(&sql, &role, &catalog) {
            Ok(out) => {
                for statement in out.statements() {
                    let tree = Parser::parse_sql(&PostgreSqlDialect {}, &statement.sql)
                        .map_err(|e| TestCaseError::fail(format!("{sql} -> {}: {e}", statement.sql)))?;
                    let again = tree.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; ");
                    let reparsed = Parser::parse_sql(&PostgreSqlDialect {}, &again)
                        .map_err(|e| TestCaseError::fail(format!("{again}: {e}")))?;
                    prop_assert_eq!(&tree, &reparsed, "{} -> {}", sql, statement.sql);
                    let named = base_tables::base_table_named(&statement.sql, &role)
                        .map_err(TestCaseError::fail)?;
                    prop_assert_eq!(named, None, "{} -> {}", sql, statement.sql);
                }
            }
            Err(refusal) => {
                prop_assert!(
                    !(select.is_plain() && visible(&role, &select)),
                    "{} refused for {}: {:?}", sql, select.role, refusal
                );
            }
        }
    }
}
