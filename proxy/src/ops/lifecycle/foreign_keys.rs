//! The foreign keys of the live database (read by `catalog::foreign_keys`, here by object id), and the dependants of a set of rows: every table whose rows
//! refer to them, recursively, each with a SQL predicate that selects exactly the referring rows. Not for:
//! changing anything (the callers delete or mask in the order `dependants` gives).

use anyhow::{Context, Result, bail};
use policy::apply_sql::quote_ident;
use tokio_postgres::Client;

/// A table of the live database, by object id, with its quoted qualified name for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    pub oid: u32,
    /// `"schema"."name"`, ready for SQL.
    pub sql: String,
    /// `schema.name`, for reports.
    pub display: String,
}

/// One foreign key: `child (child_columns) REFERENCES parent (parent_columns)`.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub child: LiveTable,
    pub child_columns: Vec<String>,
    pub parent: LiveTable,
    pub parent_columns: Vec<String>,
}

/// A table reached from the starting rows, with the predicate selecting its affected rows.
#[derive(Debug, Clone)]
pub struct Reached {
    pub table: LiveTable,
    /// A SQL boolean expression over the table's columns (unqualified).
    pub predicate: String,
    /// 0 for the starting table, 1 for its children, ...; the longest path when several lead here.
    pub depth: usize,
}

/// Deepest dependency chains followed (a guard against cyclic keys).
const MAX_DEPTH: usize = 16;

/// How many rows of `table` the predicate selects.
pub async fn count_rows(client: &Client, table: &LiveTable, predicate: &str) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {} WHERE {predicate}", table.sql);
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

/// Finds a table by (possibly schema-qualified) name, as `search_path` resolves it.
pub async fn resolve_table(client: &Client, name: &str) -> Result<LiveTable> {
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&name],
        )
        .await
        .context("looking up the table")?;
    let Some(row) = row else {
        bail!("no table `{name}` in the database");
    };
    Ok(live_table(row.get(0), row.get(1), row.get(2)))
}

fn live_table(oid: u32, schema: String, name: String) -> LiveTable {
    LiveTable {
        oid,
        sql: format!("{}.{}", quote_ident(&schema), quote_ident(&name)),
        display: format!("{schema}.{name}"),
    }
}

/// Every foreign key of the user tables, as `catalog::foreign_keys` reads them, by live table.
pub async fn read_foreign_keys(client: &Client) -> Result<Vec<ForeignKey>> {
    let keys = crate::admin::catalog::foreign_keys(client)
        .await
        .context("reading the foreign keys")?;
    Ok(keys
        .into_iter()
        .map(|live| ForeignKey {
            child: live_table(live.table_oid, live.key.table.schema, live.key.table.name),
            parent: live_table(
                live.referenced_oid,
                live.key.referenced.schema,
                live.key.referenced.name,
            ),
            child_columns: live.key.columns,
            parent_columns: live.key.referenced_columns,
        })
        .collect())
}

/// The starting table and every table that refers to its rows selected by `predicate`, recursively,
/// ordered so that every table comes after all the tables that refer to it (children first): deleting
/// in this order never breaks a foreign key. The walk does not go on from tables for which `leaf` is
/// true (rows kept, not deleted).
pub fn dependants(
    start: &LiveTable,
    predicate: &str,
    keys: &[ForeignKey],
    leaf: &dyn Fn(u32) -> bool,
) -> Vec<Reached> {
    let mut reached: Vec<Reached> = vec![Reached {
        table: start.clone(),
        predicate: predicate.to_string(),
        depth: 0,
    }];
    let mut frontier = vec![0usize];
    while let Some(index) = frontier.pop() {
        let parent = reached[index].clone();
        if parent.depth >= MAX_DEPTH || (parent.depth > 0 && leaf(parent.table.oid)) {
            continue;
        }
        for key in keys.iter().filter(|k| k.parent.oid == parent.table.oid) {
            if key.child.oid == start.oid {
                continue;
            }
            let refers = format!(
                "({}) IN (SELECT {} FROM {} WHERE {})",
                idents(&key.child_columns),
                idents(&key.parent_columns),
                parent.table.sql,
                parent.predicate
            );
            match reached.iter().position(|r| r.table.oid == key.child.oid) {
                Some(existing) => {
                    let r = &mut reached[existing];
                    r.predicate = format!("({}) OR ({refers})", r.predicate);
                    if parent.depth + 1 > r.depth {
                        r.depth = parent.depth + 1;
                        frontier.push(existing);
                    }
                }
                None => {
                    reached.push(Reached {
                        table: key.child.clone(),
                        predicate: refers,
                        depth: parent.depth + 1,
                    });
                    frontier.push(reached.len() - 1);
                }
            }
        }
    }
    reached.sort_by(|a, b| {
        b.depth
            .cmp(&a.depth)
            .then(a.table.display.cmp(&b.table.display))
    });
    reached
}

fn idents(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}
