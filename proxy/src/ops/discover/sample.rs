//! Reads a live database for discovery: the tables of one schema with their columns, types, primary
//! keys and single-column foreign keys, and a sample of rows of each (`TABLESAMPLE` on big tables,
//! the first rows on small ones), every value as text. Not for: judging the values (see `propose`).

use super::propose::{ColumnSample, TableSample};
use tokio_postgres::Client;

/// `"name"` with inner quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Samples every ordinary or partitioned table of `schema`, up to `rows` rows each. A table that cannot be
/// read (no privilege, ...) is returned with its error instead of stopping the whole discovery.
pub async fn sample_schema(
    client: &Client,
    schema: &str,
    rows: usize,
) -> Result<Vec<TableSample>, tokio_postgres::Error> {
    let tables = client
        .query(
            "SELECT c.oid, c.relname::text, c.reltuples::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
            &[&schema],
        )
        .await?;
    let mut samples = Vec::new();
    for table in tables {
        let oid: u32 = table.get(0);
        let name: String = table.get(1);
        let estimated_rows: f64 = table.get(2);
        let mut sample = TableSample {
            schema: schema.to_string(),
            name,
            ..Default::default()
        };
        if let Err(err) = fill(client, oid, estimated_rows, rows, &mut sample).await {
            sample.error = Some(
                err.as_db_error()
                    .map_or_else(|| err.to_string(), |db| db.message().to_string()),
            );
        }
        samples.push(sample);
    }
    Ok(samples)
}

async fn fill(
    client: &Client,
    oid: u32,
    estimated_rows: f64,
    rows: usize,
    sample: &mut TableSample,
) -> Result<(), tokio_postgres::Error> {
    let columns = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await?;
    sample.columns = columns
        .iter()
        .map(|c| ColumnSample {
            name: c.get(0),
            type_name: c.get(1),
            values: Vec::new(),
        })
        .collect();
    sample.primary_key = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = $1 AND i.indisprimary",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    sample.foreign_keys = client
        .query(
            "SELECT a.attname::text, r.relname::text FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
             JOIN pg_class r ON r.oid = c.confrelid \
             WHERE c.contype = 'f' AND c.conrelid = $1 AND cardinality(c.conkey) = 1",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if sample.columns.is_empty() {
        return Ok(());
    }
    let select: Vec<String> = sample
        .columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    // On big tables read a random fraction of about twice the rows wanted, then keep the first `rows`.
    let tablesample = if estimated_rows > (rows * 2) as f64 {
        format!(
            " TABLESAMPLE BERNOULLI ({}) REPEATABLE (1)",
            (200.0 * rows as f64 / estimated_rows).min(100.0)
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {} FROM ONLY {}.{}{tablesample} LIMIT {rows}",
        select.join(", "),
        quote_ident(&sample.schema),
        quote_ident(&sample.name)
    );
    let result = client.query(&sql, &[]).await?;
    sample.rows_sampled = result.len();
    for row in &result {
        for (i, column) in sample.columns.iter_mut().enumerate() {
            if let Some(value) = row.get::<_, Option<String>>(i) {
                column.values.push(value);
            }
        }
    }
    Ok(())
}
