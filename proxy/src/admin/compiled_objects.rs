//! Whether the database lock's objects are whole: for each restricted role, each of its views is the
//! one `maschera policy apply` made (same definition, owned by the role's owner role) and, where the role
//! has a row filter, the table's row-level security and the role's policy are as the apply left them.
//! A direct migration that drops a policy, disables row-level security or replaces a view, or an
//! installation by an earlier version, makes a role incomplete: `policy check --upstream` reports it and
//! the proxy refuses the role's users until `policy apply` runs again. So does a login that cannot use
//! plpgsql, which the proxy's refusals need. Not for: creating the objects
//! (the policy crate's `db_lock` and `apply_sql`) or deciding what a role may see.

use anyhow::{Context, Result};
use policy::access::TableAccess;
use policy::apply_sql::{LiveState, quote_ident, role_filter, table_schemas};
use policy::db_lock::intact_sql;
use policy::model::Policy;
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// Per restricted role, the views whose objects are not as `policy apply` left them (empty: all whole),
/// over `live`'s catalog and with its login prefix (the owner roles follow the logins).
pub async fn incomplete_roles(
    client: &Client,
    policy: &Policy,
    live: &LiveState,
) -> Result<BTreeMap<String, Vec<String>>> {
    let catalog = &live.catalog;
    // View definitions print names relative to the search path: use the one the apply used.
    let schemas: Vec<String> = table_schemas(catalog)
        .iter()
        .map(|s| quote_ident(s))
        .collect();
    client
        .batch_execute(&format!(
            "SET search_path TO pg_catalog, {}",
            schemas.join(", ")
        ))
        .await
        .context("setting the search path for the objects check")?;
    let mut incomplete: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let unsealed = unsealed_attributes(client).await?;
    for role in policy.restricted_roles() {
        let schema = role.login();
        let login = live.login(role);
        if let (Some(what), false) = (&unsealed, role.attributes.is_empty()) {
            incomplete
                .entry(role.name.clone())
                .or_default()
                .push(what.clone());
        }
        if !can_raise(client, &login).await? {
            incomplete
                .entry(role.name.clone())
                .or_default()
                .push(format!(
                    "USAGE on language plpgsql for {login}, which the proxy's refusals run with: \
                 GRANT USAGE ON LANGUAGE plpgsql TO {}",
                    quote_ident(&login)
                ));
        }
        let access = policy.role_access(role, catalog);
        for (table, table_access) in &access.tables {
            let TableAccess::View(view) = table_access else {
                continue;
            };
            let filtered = role_filter(policy, role, table).is_some();
            let intact: bool = client
                .query_one(
                    &intact_sql(&schema, &login, &view.view, table, filtered),
                    &[],
                )
                .await
                .context("checking the compiled objects")?
                .get(0);
            if !intact {
                incomplete
                    .entry(role.name.clone())
                    .or_default()
                    .push(format!(
                        "{schema}.{}{}",
                        view.view,
                        if filtered {
                            " (view, or the row-level security of its table)"
                        } else {
                            " (view)"
                        }
                    ));
            }
        }
    }
    Ok(incomplete)
}

/// What keeps the row filters from reading the attributes the proxy seals (`policy::attribute_seal`),
/// if anything: the function replaced or missing, or the key missing or unreadable to the proxy's
/// login (it could not seal: the roles with attributes would see no rows).
async fn unsealed_attributes(client: &Client) -> Result<Option<String>> {
    use policy::attribute_seal::{
        ATTRIBUTE_FUNCTION, KEY_NAME, function_intact_sql, key_present_sql,
    };
    let check = |sql: String| async move {
        client
            .query_one(&sql, &[])
            .await
            .map(|row| row.get::<_, bool>(0))
            .context("checking the attributes' seal")
    };
    if !check(function_intact_sql()).await? {
        return Ok(Some(format!(
            "the function {ATTRIBUTE_FUNCTION}(text) that verifies the attributes' seals"
        )));
    }
    let key = check(key_present_sql()).await?
        && check(format!(
            "SELECT EXISTS (SELECT FROM {}.keys WHERE name = '{KEY_NAME}')",
            policy::model::PRIVATE_SCHEMA
        ))
        .await?;
    Ok((!key).then(|| "the attributes' seal key, readable by the proxy's own login".to_string()))
}

/// Whether `login` may run the `DO` block that makes PostgreSQL fail in place of a refused statement
/// (see `refusal_marker`): without USAGE on plpgsql the refusal's own answer would not come back.
/// A login that does not exist is reported by the other checks.
async fn can_raise(client: &Client, login: &str) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT pg_catalog.has_language_privilege(r.oid, 'plpgsql', 'USAGE') \
             FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
            &[&login],
        )
        .await
        .context("checking the login's use of plpgsql")?;
    Ok(row.is_none_or(|row| row.get(0)))
}

/// Whether `policy apply` ever installed role `role` here (its view schema exists): `policy check` run
/// before the first apply reports the role as not applied yet rather than as an error.
pub async fn is_applied(client: &Client, policy: &Policy, role: &str) -> Result<bool> {
    let Some(role) = policy.roles.get(role) else {
        return Ok(false);
    };
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regnamespace($1) IS NOT NULL",
            &[&quote_ident(&role.login())],
        )
        .await
        .context("checking whether the policy was applied")?;
    Ok(row.get(0))
}

/// The message for a role whose objects are incomplete.
pub fn incomplete_message(role: &str, objects: &[String]) -> String {
    format!(
        "the database objects of policy role {role} are incomplete or changed outside maschera ({}): run `maschera policy apply`",
        objects.join(", ")
    )
}
