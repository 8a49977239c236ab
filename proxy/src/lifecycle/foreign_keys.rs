//! The foreign keys of the live database, and the dependants of a set of rows: every table whose rows
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

/// Every foreign key of the user tables.
pub async fn read_foreign_keys(client: &Client) -> Result<Vec<ForeignKey>> {
    let rows = client
        .query(
            "SELECT c.conrelid, cn.nspname::text, cc.relname::text,
                    c.confrelid, pn.nspname::text, pc.relname::text,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
             FROM pg_constraint c
             JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
             JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE c.contype = 'f' ORDER BY cn.nspname, cc.relname, c.conname",
            &[],
        )
        .await
        .context("reading the foreign keys")?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            child: live_table(r.get(0), r.get(1), r.get(2)),
            parent: live_table(r.get(3), r.get(4), r.get(5)),
            child_columns: r.get(6),
            parent_columns: r.get(7),
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
