//! The database's half of transaction pooling's guard against temporary objects the proxy cannot
//! see being created: a table, view, sequence, type or function in `pg_temp` made inside a
//! function, a procedure, a `DO` block or dynamic SQL (`EXECUTE 'CREATE TEMP TABLE ...'`) leaves no
//! trace in the statement text, and would stay on a pooled backend for the pool's next client.
//!
//! The proxy opens every pooled upstream connection with the startup setting
//! [`POOLED_SETTING`]` = on`. An event trigger at `ddl_command_end` (installed by
//! `maschera policy apply` when it runs as a superuser, who alone may create event triggers) looks
//! at every DDL command: when one created an object in the session's temporary schema and the
//! session's startup value of the setting is `on`, it sends a NoticeResponse of severity INFO (sent
//! whatever `client_min_messages` says) with the SQLSTATE [`PIN_SQLSTATE`]; the proxy keeps the
//! session on that backend until it ends (pins it) and does not pass the notice on. Code run by the
//! client may change the setting, never its startup value: the trigger `RESET`s it before reading
//! it (the `maschera.*` settings belong to the proxy). A forged notice only pins its own session.
//!
//! Not for: the proxy's side (the proxy's `pool::hidden_state`), other state created out of sight
//! (settings, `LISTEN`, advisory locks, cursors: no event tells of them, README "Pooling" lists
//! them), or running the statements (the proxy's `admin::pool_guard`).

use crate::model::PRIVATE_SCHEMA;
use crate::step::FUNCTION_SEARCH_PATH;

/// The startup setting of pooled upstream connections.
pub const POOLED_SETTING: &str = "maschera.pooled";

/// The SQLSTATE of the trigger's INFO notice (class 01, a warning class; not one PostgreSQL uses).
pub const PIN_SQLSTATE: &str = "01MP1";

/// The event trigger's name.
pub const EVENT_TRIGGER: &str = "maschera_pooled_temporary_objects";

/// The event trigger's function (in the private schema).
const FUNCTION: &str = "pooled_temporary_objects";

/// The statements that install or update the guard (idempotent; a superuser runs them).
pub fn install_statements() -> Vec<String> {
    let function = format!("{PRIVATE_SCHEMA}.{FUNCTION}");
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS event_trigger LANGUAGE plpgsql \
             SET search_path = {FUNCTION_SEARCH_PATH} AS $guard$
BEGIN
  IF current_setting('{POOLED_SETTING}', true) IS NULL
     OR NOT EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE schema_name = 'pg_temp') THEN
    RETURN;
  END IF;
  -- Code the client ran may have changed the setting: its startup value decides.
  RESET {POOLED_SETTING};
  IF current_setting('{POOLED_SETTING}', true) = 'on' THEN
    RAISE INFO 'maschera: a temporary object was created in a pooled session; the session keeps its connection until it ends'
      USING ERRCODE = '{PIN_SQLSTATE}';
  END IF;
END
$guard$"
        ),
        format!("DROP EVENT TRIGGER IF EXISTS {EVENT_TRIGGER}"),
        format!(
            "CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_end EXECUTE FUNCTION {function}()"
        ),
        // It fires whatever `session_replication_role` says.
        format!("ALTER EVENT TRIGGER {EVENT_TRIGGER} ENABLE ALWAYS"),
    ]
}

/// A query answering one boolean: whether the guard is installed and enabled.
pub const INSTALLED_QUERY: &str =
    "SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = $1 AND evtenabled = 'A')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_reads_the_startup_value_and_names_its_sqlstate() {
        let statements = install_statements();
        assert_eq!(statements.len(), 4);
        let function = &statements[0];
        assert!(function.contains("RESET maschera.pooled;"));
        assert!(function.contains("RAISE INFO") && function.contains("ERRCODE = '01MP1'"));
        assert!(function.contains("schema_name = 'pg_temp'"));
        assert!(statements[2].starts_with(
            "CREATE EVENT TRIGGER maschera_pooled_temporary_objects ON ddl_command_end"
        ));
    }
}
