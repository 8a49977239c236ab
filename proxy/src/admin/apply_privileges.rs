//! What the user who runs `maschera policy apply` needs, checked before the apply transaction so that a
//! missing privilege is named with what to grant, instead of a PostgreSQL error halfway through the steps:
//! a superuser needs nothing more; any other user (the tables' owner, typically) needs CREATEROLE (it
//! creates and updates the role logins and owner roles), CREATE on the database (the `maschera_*`
//! schemas), the privileges of each policy table's owner (row-level security and policies live on the
//! tables), and the privileges of the owner of each `maschera_*` schema an earlier apply left (it
//! replaces them). Also a hint for the PostgreSQL errors these checks cannot foresee.
//! Not for: what the apply does (see `policy::apply_sql`) or running it (see `policy_apply`).

use anyhow::{Context, Result};
use policy::Policy;
use policy::access::Catalog;
use tokio_postgres::Client;

/// Checks that the connected user may apply `policy`; the error lists every missing privilege.
pub async fn check(client: &Client, policy: &Policy, catalog: &Catalog) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreaterole,
                    has_database_privilege(current_database(), 'CREATE'), current_database()::text
               FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .context("reading the applying user's privileges")?;
    let (user, superuser, createrole, create, database): (String, bool, bool, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if superuser {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !createrole {
        missing.push(format!(
            "the CREATEROLE attribute (it creates and updates the role logins and their owner roles): \
             ALTER ROLE {user} CREATEROLE, as a superuser"
        ));
    }
    if !create {
        missing.push(format!(
            "CREATE on database {database} (it creates the maschera_* schemas): \
             GRANT CREATE ON DATABASE {database} TO {user}"
        ));
    }
    let tables: Vec<String> = policy
        .tables
        .values()
        .filter(|t| catalog.tables.contains_key(&t.name))
        .map(|t| {
            policy::apply_sql::quote_ident(&t.name.schema)
                + "."
                + &policy::apply_sql::quote_ident(&t.name.name)
        })
        .collect();
    let foreign = client
        .query(
            "SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner)::text
               FROM pg_class c WHERE c.oid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t)
                AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
              ORDER BY 1",
            &[&tables],
        )
        .await
        .context("reading the owners of the policy's tables")?;
    for row in foreign {
        let (table, owner): (String, String) = (row.get(0), row.get(1));
        missing.push(format!(
            "the privileges of `{owner}`, the owner of table {table} (it enables row-level security \
             and creates policies on it): apply as {owner}, or GRANT {owner} TO {user}"
        ));
    }
    let schemas = client
        .query(
            "SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace
              WHERE nspname LIKE 'maschera\\_%' AND obj_description(oid, 'pg_namespace') LIKE $1
                AND NOT pg_has_role(current_user, nspowner, 'USAGE')
              ORDER BY 1",
            &[&format!("{}%", policy::apply_sql::MANAGED_MARK)],
        )
        .await
        .context("reading the owners of the maschera_* schemas")?;
    for row in schemas {
        let (schema, owner): (String, String) = (row.get(0), row.get(1));
        missing.push(format!(
            "the privileges of `{owner}`, the owner of schema {schema} (an earlier apply made it): \
             apply once as a superuser (it then gives the schemas to the tables' owner), or GRANT {owner} TO {user}"
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "policy apply as `{user}` needs what it lacks (nothing was changed):\n  - {}",
        missing.join("\n  - ")
    )
}

/// What to do about a PostgreSQL refusal of an apply step, when the reason is a privilege.
pub fn hint(reason: &str) -> Option<&'static str> {
    if reason.starts_with("must be owner of") {
        Some(
            "an earlier apply by another user (e.g. a superuser) left this object: apply once as a \
             superuser, which gives the objects to the tables' owner",
        )
    } else if reason.starts_with("permission denied") || reason.starts_with("must be superuser") {
        Some(
            "run policy apply as the tables' owner with CREATEROLE and CREATE on the database, or as a superuser",
        )
    } else {
        None
    }
}
