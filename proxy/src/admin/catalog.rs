//! Reads the live database's user tables, their columns, unique keys and the foreign keys between them into a
//! `policy::access::Catalog`, the schema the rewriter resolves table references against. It is also the one
//! reader of `pg_constraint`'s foreign keys ([`foreign_keys`]), which the data lifecycle commands walk too.
//! Not for: deciding anything about them.

use policy::access::{Catalog, CatalogColumn, ForeignKey, ForeignKeyAction, TableName};

/// Tables, views and partitioned tables outside the system schemas, with their columns in order.
const CATALOG_QUERY: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname, a.attnum";

/// Foreign keys between user tables, with their columns in key order and their ON DELETE / ON UPDATE
/// actions (`pg_constraint.confdeltype`, `confupdtype`).
const FOREIGN_KEY_QUERY: &str = "\
SELECT con.conrelid, con.confrelid, con.conname::text, cn.nspname::text, c.relname::text, rn.nspname::text, r.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       con.confdeltype::text, con.confupdtype::text
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class r ON r.oid = con.confrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND cn.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY cn.nspname, c.relname, con.conname";

/// Unique indexes (primary keys included, marked) on plain columns of user tables, not partial, with
/// their columns in index order.
const UNIQUE_KEY_QUERY: &str = "\
SELECT n.nspname::text, c.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, p)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.p),
       i.indisprimary
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY 1, 2, i.indexrelid";

/// Reads the catalog over an open connection. `search_path` is the list of schemas an unqualified name
/// is looked up in for the callers (normally `["public"]`): restricted roles cannot change it.
pub async fn load(
    client: &tokio_postgres::Client,
    search_path: &[String],
) -> Result<Catalog, tokio_postgres::Error> {
    let rows = client.query(CATALOG_QUERY, &[]).await?;
    let mut catalog = Catalog {
        search_path: search_path.to_vec(),
        ..Catalog::default()
    };
    for row in rows {
        let table = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        catalog
            .tables
            .entry(table)
            .or_default()
            .push(CatalogColumn {
                name: row.get(2),
                data_type: row.get(3),
            });
    }
    catalog.foreign_keys = foreign_keys(client)
        .await?
        .into_iter()
        .map(|live| live.key)
        .collect();
    for row in client.query(UNIQUE_KEY_QUERY, &[]).await? {
        let table = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let columns: Vec<String> = row.get(2);
        if row.get::<_, bool>(3) {
            catalog.primary_keys.insert(table.clone(), columns.clone());
        }
        catalog.unique_keys.entry(table).or_default().push(columns);
    }
    Ok(catalog)
}

/// A foreign key of the live database with the object ids of its two tables (the lifecycle commands
/// follow keys by oid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveForeignKey {
    pub key: ForeignKey,
    /// `pg_class.oid` of `key.table`.
    pub table_oid: u32,
    /// `pg_class.oid` of `key.referenced`.
    pub referenced_oid: u32,
}

/// Every foreign key between user tables, ordered by schema, table and constraint name.
pub async fn foreign_keys(
    client: &tokio_postgres::Client,
) -> Result<Vec<LiveForeignKey>, tokio_postgres::Error> {
    Ok(client
        .query(FOREIGN_KEY_QUERY, &[])
        .await?
        .iter()
        .map(|row| LiveForeignKey {
            table_oid: row.get(0),
            referenced_oid: row.get(1),
            key: ForeignKey {
                name: row.get(2),
                table: TableName::new(row.get::<_, String>(3), row.get::<_, String>(4)),
                referenced: TableName::new(row.get::<_, String>(5), row.get::<_, String>(6)),
                columns: row.get(7),
                referenced_columns: row.get(8),
                on_delete: ForeignKeyAction::from_pg(row.get(9)),
                on_update: ForeignKeyAction::from_pg(row.get(10)),
            },
        })
        .collect())
}
