//! Installs the database's half of transaction pooling's guard against temporary objects created
//! out of the proxy's sight (`policy::pool_guard`: an event trigger), at the end of
//! `maschera policy apply`. Only a superuser may create event triggers: an apply by anyone else
//! keeps a guard an earlier superuser apply installed, and otherwise returns a warning saying what
//! stays open (the README's "Pooling" says it too).
//! Not for: what the trigger does (`policy::pool_guard`) or how the proxy pins (`pool`).

use anyhow::{Context, Result};
use policy::pool_guard::{EVENT_TRIGGER, INSTALLED_QUERY, install_statements};
use tokio_postgres::Client;

/// Installs or updates the guard when the apply's user is a superuser; what stays open otherwise
/// (`None`: the guard is in place).
pub async fn install(client: &mut Client) -> Result<Option<String>> {
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .context("reading whether the apply's user is a superuser")?
        .get(0);
    if superuser {
        let transaction = client.transaction().await?;
        for statement in install_statements() {
            transaction
                .batch_execute(&statement)
                .await
                .context("installing the event trigger of transaction pooling")?;
        }
        transaction.commit().await?;
        return Ok(None);
    }
    let installed: bool = client
        .query_one(INSTALLED_QUERY, &[&EVENT_TRIGGER])
        .await
        .context("reading whether the event trigger of transaction pooling is installed")?
        .get(0);
    Ok((!installed).then(|| {
        format!(
            "the event trigger {EVENT_TRIGGER} is not installed (only a superuser may create event \
             triggers): in transaction pooling, a temporary object created inside a function, a DO \
             block or dynamic SQL does not pin its session and stays on the backend for the next \
             client of its pool; apply once as a superuser, or serve the users whose code does \
             that with pool_mode = \"session\""
        )
    }))
}
