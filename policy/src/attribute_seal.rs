//! The caller's attributes as the database lock reads them: sealed by the proxy, verified by PostgreSQL.
//!
//! A row filter's `attr('region')` reads the setting `<namespace>.region`, which any session may set
//! (`SET`, `set_config`, `ALTER ROLE ... SET`, startup `options`): a role's login used straight could
//! choose its region. So the proxy sends, beside each attribute setting, a **seal**
//! `<namespace>.region.sig` = hex of SHA-384 over a key and `<login>:<setting>=<value>` (SHA-384 is a
//! truncated SHA-512, so a key prefix is a sound MAC: no length extension), and the compiled filters
//! read the attribute through [`ATTRIBUTE_FUNCTION`], a SECURITY DEFINER PL/pgSQL function of the
//! tables' owner that returns the setting only when its seal matches under the key (current, or the one
//! before the last `policy apply`), NULL otherwise: no rows, no error. The key lives in
//! `maschera_private.keys`, which only the owner (and the owner roles) can read; it never appears in SQL
//! text, and the seal is bound to `session_user`, so one login's seal is worth nothing to another.
//! The function is called as `(SELECT maschera_private.attribute('<setting>'))`, an initplan run once
//! per statement (9–11 µs of execution here: the call, one key lookup and one SHA-384;
//! `bench/probes/attribute_seal.py`).
//!
//! Not for: which attributes a user has (the users file, end-user tokens), sending them (the proxy's
//! `enforce`), the filters themselves (`filter`, `db_lock`).

use crate::step::{
    FUNCTION_SEARCH_PATH as SEARCH_PATH, PRIVATE_SCHEMA, Step, quote_ident, quote_literal,
};
use sha2::{Digest, Sha384};

/// The function the compiled filters read an attribute through.
pub const ATTRIBUTE_FUNCTION: &str = "maschera_private.attribute";

/// The name of the seal key's row in `maschera_private.keys`.
pub const KEY_NAME: &str = "attributes";

/// The row that keeps the key before the last rotation, so that the sessions a running proxy opened
/// before a `policy apply` keep their rows until they reconnect.
pub const PREVIOUS_KEY_NAME: &str = "attributes_previous";

/// The setting that carries the seal of attribute setting `setting`.
pub fn seal_setting(setting: &str) -> String {
    format!("{setting}.sig")
}

/// The SQL a compiled filter reads attribute setting `setting` with (an initplan: once per statement).
pub fn read_sql(setting: &str) -> String {
    format!("(SELECT {ATTRIBUTE_FUNCTION}({}))", quote_literal(setting))
}

/// A compiled filter with its attribute reads as plain setting reads, for asking PostgreSQL whether the
/// filter is valid (`EXPLAIN`) before `policy apply` has created [`ATTRIBUTE_FUNCTION`].
pub fn unsealed_for_check(filter_sql: &str) -> String {
    filter_sql.replace(
        &format!("{ATTRIBUTE_FUNCTION}("),
        "pg_catalog.current_setting(",
    )
}

/// The seal of `setting = value` for sessions of `login` under `key`: lower-case hex of SHA-384.
pub fn seal(key: &[u8], login: &str, setting: &str, value: &str) -> String {
    let digest = Sha384::new()
        .chain_update(key)
        .chain_update(format!("{login}:{setting}={value}").as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The seal as PostgreSQL computes it for the session, with the key `key` (a bytea expression).
fn seal_expression(key: &str, setting: &str, value: &str) -> String {
    format!(
        "pg_catalog.encode(pg_catalog.sha384({key} OPERATOR(pg_catalog.||) pg_catalog.convert_to(\
         SESSION_USER OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) {setting} \
         OPERATOR(pg_catalog.||) '=' OPERATOR(pg_catalog.||) {value}, 'UTF8')), 'hex')"
    )
}

/// Seals attribute `$1` = `$2` for the rest of the transaction (`local`) or the session, in a session
/// that may read the key (`maschera dump`, as its own account, before it takes the role's login): one
/// row. The seal is the session user's.
pub fn seal_session_sql(local: bool) -> String {
    format!(
        "SELECT pg_catalog.set_config($1 || '.sig', {}, {local}) FROM {PRIVATE_SCHEMA}.keys WHERE name = '{KEY_NAME}'",
        seal_expression("key", "$1", "$2")
    )
}

/// A query of one boolean: whether [`ATTRIBUTE_FUNCTION`] is the one `policy apply` made (SECURITY
/// DEFINER, same body, same search path). Reads only the catalog. A function replaced by a direct migration (one that
/// returns the setting without its seal) fails it.
pub fn function_intact_sql() -> String {
    format!(
        "SELECT COALESCE((SELECT p.prosecdef AND p.prosrc = {} \
         AND p.proconfig = '{{\"search_path={SEARCH_PATH}\"}}' FROM pg_catalog.pg_proc p \
         WHERE p.oid = pg_catalog.to_regprocedure('{ATTRIBUTE_FUNCTION}(text)')), false)",
        quote_literal(&function_body())
    )
}

/// A query of one boolean, to run once [`function_intact_sql`] found the key table's schema: whether
/// the seal key exists and the querying user can read it.
pub fn key_present_sql() -> String {
    format!(
        "SELECT pg_catalog.to_regclass('{PRIVATE_SCHEMA}.keys') IS NOT NULL \
         AND pg_catalog.has_table_privilege('{PRIVATE_SCHEMA}.keys', 'SELECT')"
    )
}

/// The function's body. It runs as the tables' owner with `search_path = pg_catalog, pg_temp` (every other name
/// qualified): the one path also keeps PL/pgSQL from planning its key lookup again whenever calls
/// alternate between a login's reads (its schema's path) and the write triggers' checks (`pg_catalog`);
/// the clause costs about 1 µs a statement, a replan about 23 (session 13, `bench/probes/attribute_seal.py
/// --calls`: 7 µs of execution per statement with the clause, 6 without it, 29 without it when the path
/// alternates; BENCHMARKS.md), so it stays. Only the current key is read when the seal verifies (the
/// previous one after a rotation); one query over both keys measured no cheaper. STABLE (once per
/// statement as an initplan) and PARALLEL RESTRICTED (the leader computes it).
fn function_body() -> String {
    let key = |name: &str| {
        format!(
            "SELECT k.key INTO key FROM {PRIVATE_SCHEMA}.keys k WHERE k.name OPERATOR(pg_catalog.=) '{name}'"
        )
    };
    let sealed = format!(
        "{} OPERATOR(pg_catalog.=) pg_catalog.current_setting(setting OPERATOR(pg_catalog.||) '.sig', true)",
        seal_expression("key", "setting", "value")
    );
    format!(
        " DECLARE value text := pg_catalog.current_setting(setting, true); key bytea; BEGIN \
         IF value IS NULL OR value OPERATOR(pg_catalog.=) '' THEN RETURN NULL; END IF; \
         {}; IF {sealed} THEN RETURN value; END IF; \
         {}; IF {sealed} THEN RETURN value; END IF; \
         RETURN NULL; END ",
        key(KEY_NAME),
        key(PREVIOUS_KEY_NAME),
    )
}

fn function_sql() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {ATTRIBUTE_FUNCTION}(setting text) RETURNS text LANGUAGE plpgsql \
         STABLE SECURITY DEFINER PARALLEL RESTRICTED SET search_path = {SEARCH_PATH} \
         AS $maschera_body${}$maschera_body$",
        function_body()
    )
}

/// Creates [`ATTRIBUTE_FUNCTION`] (before the row-level-security policies that call it) and lets
/// `grantees` run it: the logins and their owner roles (the filters run as the login when read, as the
/// owner role in the write triggers' checks). Run after the key table exists.
pub fn function_steps(grantees: &[String]) -> Vec<Step> {
    let signature = format!("{ATTRIBUTE_FUNCTION}(text)");
    let mut steps = vec![
        Step::plain(function_sql()),
        Step::plain(format!("REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")),
    ];
    steps.extend(grantees.iter().map(|grantee| {
        Step::plain(format!(
            "GRANT EXECUTE ON FUNCTION {signature} TO {}",
            quote_ident(grantee)
        ))
    }));
    steps
}

/// The key steps of a `policy apply`: statements to run first, then the one that takes `$1` (the
/// executor's new key). With `rotate` (`--rotate`) the current key becomes the previous one and `$1`
/// the current one, so the sessions opened before the rotation keep their rows until the next one;
/// without it `$1` is stored only where no key is yet, so a plain apply changes no seal (a running
/// proxy that read the key at start goes on sealing with it).
pub fn key_steps(rotate: bool) -> (Option<String>, String) {
    let keys = format!("{PRIVATE_SCHEMA}.keys");
    let keep_previous = rotate.then(|| {
        format!(
            "INSERT INTO {keys} (name, key) SELECT '{PREVIOUS_KEY_NAME}', key FROM {keys} \
             WHERE name = '{KEY_NAME}' ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key"
        )
    });
    let conflict = if rotate {
        "DO UPDATE SET key = EXCLUDED.key"
    } else {
        "DO NOTHING"
    };
    let store = format!(
        "INSERT INTO {keys} (name, key) VALUES ('{KEY_NAME}', $1) ON CONFLICT (name) {conflict}"
    );
    (keep_previous, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seal_is_hex_sha384_over_the_key_and_login_setting_value() {
        let s = seal(b"k", "maschera_sales", "maschera.region", "north");
        // PostgreSQL: encode(sha384('k'::bytea || convert_to('maschera_sales:maschera.region=north', 'UTF8')), 'hex')
        assert_eq!(
            s,
            "843676ef25ef08fefda4c1f09ddf93a526c82d3378617f2904fbb86c527a9b16c11f33ec3e449fac2dfffd5a9cb4d1ea"
        );
        assert_ne!(
            s,
            seal(b"k", "maschera_support", "maschera.region", "north")
        );
        assert_ne!(s, seal(b"k", "maschera_sales", "maschera.region", "south"));
        assert_ne!(s, seal(b"j", "maschera_sales", "maschera.region", "north"));
    }

    #[test]
    fn the_function_never_names_the_key_and_qualifies_every_operator() {
        let sql = function_sql();
        assert!(sql.contains("SECURITY DEFINER"));
        assert!(sql.contains(&function_body()));
        let body = function_body();
        assert!(!body.contains(" || "), "{body}");
        assert!(!body.contains(" = "), "{body}");
        assert_eq!(
            read_sql("maschera.region"),
            "(SELECT maschera_private.attribute('maschera.region'))"
        );
    }
}
