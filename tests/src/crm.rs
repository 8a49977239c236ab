//! Test helpers for the reference CRM: a database filled by the real generator (`maschera::ops::crm::load`)
//! in one call. Not for: assertions (those live in `tests/tests/e2e/`).

use crate::PgServer;
use anyhow::Result;
use maschera::ops::crm::{CrmOptions, CrmStats};

/// Creates database `db` on `pg` and loads the reference CRM with `contacts` contacts and `seed`.
pub async fn load_crm(pg: &PgServer, db: &str, contacts: u64, seed: u64) -> Result<CrmStats> {
    pg.create_database(db)?;
    let client = pg.connect(db).await?;
    let options = CrmOptions {
        contacts,
        seed,
        ..CrmOptions::default()
    };
    Ok(maschera::ops::crm::load(&client, &options).await?)
}
