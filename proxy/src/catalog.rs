//! Reads the live database's user tables and columns into a `policy::access::Catalog`, the schema the
//! rewriter resolves table references against. Not for: deciding anything about them.

use policy::access::{Catalog, CatalogColumn, TableName};

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
    Ok(catalog)
}
