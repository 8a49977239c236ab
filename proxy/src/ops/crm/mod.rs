//! The reference CRM's data generator (`maschera crm load`): creates the schema of
//! `examples/crm/schema.sql` and fills it with deterministic, realistic Italian CRM data for a seed
//! and a scale, streamed with `COPY FROM STDIN` so memory stays flat at any size. Tests and the demo
//! call [`load`] directly. Not for: the policy or anything the proxy does at run time.

mod people;
mod rng;
mod tables;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

pub use people::MAX_CONTACTS;

/// The reference schema, built into the binary so `crm load` and the demo work from any folder.
pub const SCHEMA_SQL: &str = include_str!("../../../../examples/crm/schema.sql");

/// Default scale: 10,000 contacts.
pub const DEFAULT_CONTACTS: u64 = 10_000;
/// Default seed.
pub const DEFAULT_SEED: u64 = 1;

/// What to generate. The same options always give byte-identical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrmOptions {
    /// Number of contacts (1 to [`MAX_CONTACTS`]); the other tables scale with it.
    pub contacts: u64,
    pub seed: u64,
    /// Create the schema first (it is idempotent: `CREATE ... IF NOT EXISTS`).
    pub create_schema: bool,
}

impl Default for CrmOptions {
    fn default() -> Self {
        Self {
            contacts: DEFAULT_CONTACTS,
            seed: DEFAULT_SEED,
            create_schema: true,
        }
    }
}

/// Rows written per table, parents first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrmStats {
    pub rows: Vec<(&'static str, u64)>,
}

impl CrmStats {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    #[error("--contacts must be between 1 and {MAX_CONTACTS}, not {0}")]
    Scale(u64),
    #[error("table {0} already holds rows: load the CRM into an empty database")]
    NotEmpty(&'static str),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The primary keys, unique constraints, foreign keys (theirs, and other tables' that refer to them)
/// and plain indexes of the given tables, as
/// `(drop, create)` statements in creation order (keys before the foreign keys that need them). The load
/// drops them (in reverse order) and creates them again after COPY: building an index from sorted data
/// and checking a foreign key with one join is several times faster than doing both row by row, and the
/// constraints are still checked over the whole data before commit.
const DEFERRED_CONSTRAINTS_AND_INDEXES: &str = "\
    SELECT drop_sql, create_sql FROM ( \
        SELECT CASE contype WHEN 'f' THEN 2 ELSE 1 END AS step, \
               format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_sql, \
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, \
                      pg_get_constraintdef(oid)) AS create_sql, conname::text AS name \
        FROM pg_constraint \
        WHERE (contype IN ('p', 'u', 'f') AND conrelid::regclass::text = ANY($1)) \
           OR (contype = 'f' AND confrelid::regclass::text = ANY($1)) \
        UNION ALL \
        SELECT 3, format('DROP INDEX %s', indexrelid::regclass), pg_get_indexdef(indexrelid), \
               indexrelid::regclass::text \
        FROM pg_index i \
        WHERE indrelid::regclass::text = ANY($1) \
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
    ) AS deferred ORDER BY step, name";

/// COPY data is sent in chunks of about this many bytes.
const CHUNK: usize = 256 * 1024;

/// Creates the schema (unless told not to) and loads every table, then moves the id sequences past the
/// loaded ids and runs ANALYZE, all in one transaction: on error nothing is left behind. Fails if a table
/// already holds rows. Keys and indexes are created after the data (see
/// [`DEFERRED_CONSTRAINTS_AND_INDEXES`]), so uniqueness and references are still checked before commit.
pub async fn load(client: &Client, options: &CrmOptions) -> Result<CrmStats, CrmError> {
    if !(1..=MAX_CONTACTS).contains(&options.contacts) {
        return Err(CrmError::Scale(options.contacts));
    }
    client.batch_execute("BEGIN").await?;
    match load_in_transaction(client, options).await {
        Ok(stats) => {
            client.batch_execute("COMMIT").await?;
            Ok(stats)
        }
        Err(err) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

/// Empties the (already empty) tables in this transaction, which lets COPY write frozen rows
/// (`COPY ... FREEZE`): no later pass rewrites every page to mark it visible. Another table that refers
/// to ours makes TRUNCATE fail; then the load goes on without FREEZE.
async fn truncate_for_freeze(client: &Client) -> Result<bool, CrmError> {
    client.batch_execute("SAVEPOINT maschera_truncate").await?;
    let truncate = format!("TRUNCATE {}", table_names().join(", "));
    if client.batch_execute(&truncate).await.is_ok() {
        client
            .batch_execute("RELEASE SAVEPOINT maschera_truncate")
            .await?;
        Ok(true)
    } else {
        client
            .batch_execute("ROLLBACK TO SAVEPOINT maschera_truncate")
            .await?;
        Ok(false)
    }
}

/// The CRM's tables, parents first.
pub fn table_names() -> Vec<&'static str> {
    tables::TABLES.iter().map(|t| t.name).collect()
}

async fn load_in_transaction(client: &Client, options: &CrmOptions) -> Result<CrmStats, CrmError> {
    if options.create_schema {
        client.batch_execute(SCHEMA_SQL).await?;
    }
    for table in tables::TABLES {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table.name);
        if client.query_one(&sql, &[]).await?.get::<_, bool>(0) {
            return Err(CrmError::NotEmpty(table.name));
        }
    }
    // Sorts for the index builds and the foreign-key checks stay in memory.
    client
        .batch_execute("SET LOCAL maintenance_work_mem = '256MB'; SET LOCAL work_mem = '256MB'")
        .await?;
    let freeze = truncate_for_freeze(client).await?;
    let deferred = client
        .query(DEFERRED_CONSTRAINTS_AND_INDEXES, &[&table_names()])
        .await?;
    for statement in deferred.iter().rev() {
        client.batch_execute(statement.get::<_, &str>(0)).await?;
    }
    let mut stats = CrmStats::default();
    for table in tables::TABLES {
        let rows = copy_table(client, table, options, freeze).await?;
        stats.rows.push((table.name, rows));
    }
    for statement in &deferred {
        client.batch_execute(statement.get::<_, &str>(1)).await?;
    }
    for table in tables::TABLES {
        let sql = format!(
            "SELECT setval(s, (SELECT coalesce(max(id), 0) + 1 FROM {0}), false) \
             FROM pg_get_serial_sequence('{0}', 'id') AS s WHERE s IS NOT NULL",
            table.name
        );
        client.execute(&sql, &[]).await?;
    }
    client
        .batch_execute(&format!("ANALYZE {}", table_names().join(", ")))
        .await?;
    Ok(stats)
}

async fn copy_table(
    client: &Client,
    table: &tables::Table,
    options: &CrmOptions,
    freeze: bool,
) -> Result<u64, CrmError> {
    let freeze = if freeze { " WITH (FREEZE)" } else { "" };
    let sql = format!("COPY {} ({}) FROM STDIN{freeze}", table.name, table.columns);
    let sink = client.copy_in::<_, Bytes>(&sql).await?;
    let mut sink = std::pin::pin!(sink);
    let mut buffer = String::with_capacity(CHUNK + 4096);
    let mut next_id = 1;
    for contact_id in 1..=options.contacts {
        table.write_rows(options.seed, contact_id, &mut next_id, &mut buffer);
        if buffer.len() >= CHUNK {
            sink.send(Bytes::from(std::mem::replace(
                &mut buffer,
                String::with_capacity(CHUNK + 4096),
            )))
            .await?;
        }
    }
    if !buffer.is_empty() {
        sink.send(Bytes::from(buffer)).await?;
    }
    Ok(sink.as_mut().finish().await?)
}
