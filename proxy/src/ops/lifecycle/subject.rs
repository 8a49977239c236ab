//! Finding one data subject in the live database, shared by erasure (`forget`) and access
//! (`subject export`): the WHERE must select exactly one row of the named table; the rows that refer to
//! it are reached through the database's foreign keys plus the links the policy declares
//! (`[tables.<t>.erasure] links`). Also the subject's keyed digest for the access log. Not for: what is
//! done with the rows (the commands decide), nor parsing the WHERE (see `forget::parse_condition`).

use super::foreign_keys::{ForeignKey, LiveTable, count_rows, read_foreign_keys, resolve_table};
use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use policy::Policy;
use policy::access::TableName;
use policy::apply_sql::quote_ident;
use sha2::Sha256;
use std::path::PathBuf;
use tokio_postgres::Client;

/// What names a data subject, shared by `forget` and `subject export`.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The policy file.
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may read (export) or delete from (forget) every table
    /// concerned: the tables' owner or a superuser.
    pub upstream: String,
    /// The table holding the data subject, e.g. `contacts`.
    pub table: String,
    /// One SQL boolean expression over that table's columns selecting exactly the subject's row.
    pub condition: String,
    /// Environment variable holding the key of the subject digest recorded in the access log
    /// (HMAC-SHA256 of the table and the subject's primary key).
    pub key_env: String,
}

/// The subject's table and every key (foreign or declared) that may lead to rows about them.
#[derive(Debug)]
pub struct Subject {
    pub table: LiveTable,
    pub keys: Vec<ForeignKey>,
}

pub fn qualified(name: &TableName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

/// Resolves `table`, refuses unless `condition` selects exactly one of its rows, and reads the keys.
pub async fn find_subject(
    client: &Client,
    policy: &Policy,
    table: &str,
    condition: &str,
) -> Result<Subject> {
    let start = resolve_table(client, table).await?;
    let subject = count_rows(client, &start, condition).await?;
    if subject != 1 {
        bail!(
            "the condition selects {subject} rows of {}; it must select exactly one data subject",
            start.display
        );
    }
    let mut keys = read_foreign_keys(client).await?;
    for declared in policy.tables.values() {
        if declared.erasure.links.is_empty() {
            continue;
        }
        let live = resolve_table(client, &qualified(&declared.name)).await?;
        for link in &declared.erasure.links {
            let Some(target) = policy.tables.get(&link.target_table) else {
                bail!(
                    "{}: link `{}` names table `{}`, which the policy does not declare",
                    declared.key,
                    link.column,
                    link.target_table
                );
            };
            keys.push(ForeignKey {
                child: live.clone(),
                child_columns: vec![link.column.clone()],
                parent: resolve_table(client, &qualified(&target.name)).await?,
                parent_columns: vec![link.target_column.clone()],
            });
        }
    }
    Ok(Subject { table: start, keys })
}

/// HMAC-SHA256 (hex) of `schema.table:` and the subject row's primary key as text (the whole row's
/// key columns in order; the row itself when the table has no primary key), so that whoever holds the
/// key can later prove which subject was concerned, and nobody else can tell.
pub async fn subject_digest(
    client: &Client,
    table: &LiveTable,
    predicate: &str,
    key: &str,
) -> Result<String> {
    let key_columns: Vec<String> = client
        .query(
            "SELECT quote_ident(a.attname) FROM pg_index i
             JOIN unnest(i.indkey) WITH ORDINALITY k(n, o) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.o",
            &[&table.oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let value = match key_columns.is_empty() {
        true => "t".to_string(),
        false => format!("ROW({})", key_columns.join(", ")),
    };
    let text: String = client
        .query_one(
            &format!(
                "SELECT ({value})::text FROM {} t WHERE {predicate}",
                table.sql
            ),
            &[],
        )
        .await?
        .get(0);
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).context("digest key")?;
    mac.update(format!("{}:{text}", table.display).as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// The digest key from the environment variable `var` (required when the event is recorded).
pub fn digest_key(var: &str) -> Result<String> {
    std::env::var(var).with_context(|| format!("{var} (the key of the subject digest) is not set"))
}
