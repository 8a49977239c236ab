//! The table statistics views (`pg_stat_all_tables`, `pg_stat_user_tables`, `pg_statio_all_tables`,
//! `pg_statio_user_tables`) for a restricted role. ORMs read them to describe tables: Sequelize's
//! `describeTable` joins `pg_statio_all_tables` to `pg_description` for column comments, and schema
//! tools list tables from `pg_stat_user_tables`. Their counters (live and dead tuples, inserts,
//! scans, block reads) are the base tables' and count the rows a row filter hides, so they stay
//! hidden: the reference is replaced by a query of the same columns where the relation's identity
//! (`relid`, `schemaname`, `relname`) is real and every counter is NULL. The relations listed are
//! those the caller may read (its views, the tables it reads as they are), views included, since a
//! restricted role's tables are views. The columns are those of PostgreSQL 17 (15 and 16 have a
//! subset: a `SELECT *` gets a few more NULL columns).
//!
//! Not for: the other statistics views (`pg_stats`, `pg_stat_activity`, ...: refused in system.rs),
//! writes (refused), or unrestricted roles (their statements go as written).

use sqlparser::ast::{Ident, SetExpr, Statement, TableAlias, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::report::{TableOperation, TableRoute};
use super::scope::{Item, ItemKind, fold, fold_name};
use crate::access::TableName;

/// Counters of `pg_stat_*_tables`, with their types.
const STAT_COUNTERS: &[(&str, &str)] = &[
    ("seq_scan", "bigint"),
    ("last_seq_scan", "timestamptz"),
    ("seq_tup_read", "bigint"),
    ("idx_scan", "bigint"),
    ("last_idx_scan", "timestamptz"),
    ("idx_tup_fetch", "bigint"),
    ("n_tup_ins", "bigint"),
    ("n_tup_upd", "bigint"),
    ("n_tup_del", "bigint"),
    ("n_tup_hot_upd", "bigint"),
    ("n_tup_newpage_upd", "bigint"),
    ("n_live_tup", "bigint"),
    ("n_dead_tup", "bigint"),
    ("n_mod_since_analyze", "bigint"),
    ("n_ins_since_vacuum", "bigint"),
    ("last_vacuum", "timestamptz"),
    ("last_autovacuum", "timestamptz"),
    ("last_analyze", "timestamptz"),
    ("last_autoanalyze", "timestamptz"),
    ("vacuum_count", "bigint"),
    ("autovacuum_count", "bigint"),
    ("analyze_count", "bigint"),
    ("autoanalyze_count", "bigint"),
];

/// Counters of `pg_statio_*_tables`.
const STATIO_COUNTERS: &[(&str, &str)] = &[
    ("heap_blks_read", "bigint"),
    ("heap_blks_hit", "bigint"),
    ("idx_blks_read", "bigint"),
    ("idx_blks_hit", "bigint"),
    ("toast_blks_read", "bigint"),
    ("toast_blks_hit", "bigint"),
    ("tidx_blks_read", "bigint"),
    ("tidx_blks_hit", "bigint"),
];

/// The counters of a table statistics view, or None for any other name.
fn counters(relation: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match relation {
        "pg_stat_all_tables" | "pg_stat_user_tables" => Some(STAT_COUNTERS),
        "pg_statio_all_tables" | "pg_statio_user_tables" => Some(STATIO_COUNTERS),
        _ => None,
    }
}

/// The query that stands for a table statistics view: the readable relations, counters NULL.
fn replacement_sql(counters: &[(&str, &str)]) -> String {
    let nulls: Vec<String> = counters
        .iter()
        .map(|(name, ty)| format!("NULL::{ty} AS {name}"))
        .collect();
    format!(
        "SELECT c.oid AS relid, n.nspname AS schemaname, c.relname AS relname, {} \
         FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' \
         AND pg_catalog.has_table_privilege(c.oid, 'SELECT')",
        nulls.join(", ")
    )
}

impl<'a> Analyzer<'a> {
    /// When `factor` (a plain table reference read by a query) names a table statistics view,
    /// replaces it with its stand-in and returns its FROM item; None for any other relation.
    pub(crate) fn table_statistics(
        &mut self,
        factor: &mut TableFactor,
    ) -> Result<Option<Item<'a>>, Refusal> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return Ok(None);
        };
        let parts = fold_name(name)?;
        let relation = match parts.as_slice() {
            [relation] => relation.as_str(),
            [schema, relation] if schema == "pg_catalog" => relation.as_str(),
            _ => return Ok(None),
        };
        let Some(counters) = counters(relation) else {
            return Ok(None);
        };
        let relation = relation.to_owned();
        self.log.operation(
            &TableName::new("pg_catalog", relation.as_str()),
            TableRoute::SystemCatalog,
            false,
            TableOperation::Read,
        );
        let sql = replacement_sql(counters);
        let unsupported = || Refusal::unsupported("table statistics view cannot be rewritten");
        let mut parsed =
            Parser::parse_sql(&PostgreSqlDialect {}, &sql).map_err(|_| unsupported())?;
        let Some(Statement::Query(subquery)) = parsed.pop() else {
            return Err(unsupported());
        };
        if !matches!(subquery.body.as_ref(), SetExpr::Select(_)) {
            return Err(unsupported());
        }
        // Qualified references (`pg_statio_all_tables.relid`) keep working under the view's name.
        let alias = alias.take().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::new(relation.as_str()),
            columns: Vec::new(),
            at: None,
        });
        let item_name = fold(&alias.name);
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        };
        self.edits.other = true;
        Ok(Some(Item {
            name: item_name,
            schema: None,
            kind: ItemKind::System,
        }))
    }
}
