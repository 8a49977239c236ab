//! The CRM's own SECURITY DEFINER trigger functions on the policy's tables that do not pin their
//! `search_path`. A role's write fires them, and they run as their owner (often the tables' owner, a
//! superuser in many installs) on the path of whoever fired them: a role's login used straight on
//! PostgreSQL may `SET search_path = pg_temp, ...` and then offer its own temporary tables (which
//! receive what the trigger writes) and types (a domain whose CHECK runs its own code as the trigger's
//! owner) under the names the function does not qualify. `policy check --upstream` warns of each.
//! Not for: the functions `policy apply` installs (they pin theirs, see `policy::step`), or fixing
//! the CRM's functions (the warning names the `ALTER FUNCTION ... SET search_path` that does).

use anyhow::Result;
use tokio_postgres::Client;

/// One warning per trigger function found on `tables` (qualified, quoted names), naming it, the
/// table and the repair.
pub async fn warnings(client: &Client, tables: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT DISTINCT t.tgrelid::pg_catalog.regclass::text, p.oid::pg_catalog.regprocedure::text \
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
             WHERE NOT t.tgisinternal AND p.prosecdef \
             AND t.tgrelid IN (SELECT pg_catalog.to_regclass(n) FROM pg_catalog.unnest($1::text[]) n) \
             AND NOT EXISTS (SELECT FROM pg_catalog.unnest(p.proconfig) c WHERE c LIKE 'search\\_path=%') \
             ORDER BY 1, 2",
            &[&tables],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let (table, function) = (row.get::<_, String>(0), row.get::<_, String>(1));
            format!(
                "trigger function {function} on {table} is SECURITY DEFINER without its own search_path: \
                 a role's login used straight may set one that finds its own temporary tables and types \
                 in it (run as the function's owner); run ALTER FUNCTION {function} SET search_path = \
                 pg_catalog, <its schemas>, pg_temp"
            )
        })
        .collect())
}
