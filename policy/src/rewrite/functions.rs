//! Which functions a restricted role may call: an explicit allow-list of PostgreSQL built-ins that
//! neither run SQL text nor reach files, other sessions or other servers, plus the user-defined
//! functions the policy names. Everything else is refused. Not for operators or casts.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::access::RoleAccess;

/// Built-ins that run SQL text, read files, reach other servers or sessions, or change settings.
/// Listed only so the refusal can say why; anything not allowed is refused anyway.
const DENIED: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "database_to_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "schema_to_xmlschema",
    "ts_stat",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "set_config",
    "pg_advisory_lock",
    "pg_reload_conf",
    "pg_rotate_logfile",
];

/// Prefixes of denied families (`dblink_connect`, `lo_import`, `pg_ls_waldir`, ...).
const DENIED_PREFIXES: &[&str] = &[
    "dblink", "lo_", "pg_ls_", "pg_read_", "pg_file_", "pg_stat_",
];

/// Built-ins a restricted role may call. Lower case, unqualified (also accepted as `pg_catalog.x`).
const ALLOWED: &[&str] = &[
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "bit_and",
    "bit_or",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    // window functions
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // syntax sqlparser reads as calls: ARRAY(subquery), ROW(...), GROUPING(...)
    "array",
    "row",
    "grouping",
    // conditionals
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "num_nonnulls",
    "num_nulls",
    // strings
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "substr",
    "substring",
    "left",
    "right",
    "replace",
    "reverse",
    "repeat",
    "concat",
    "concat_ws",
    "position",
    "strpos",
    "split_part",
    "starts_with",
    "translate",
    "format",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "ascii",
    "chr",
    "to_hex",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "string_to_array",
    "array_to_string",
    "string_to_table",
    "unaccent",
    "overlay",
    "normalize",
    "to_ascii",
    "convert_from",
    "convert_to",
    // numbers
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "mod",
    "power",
    "pow",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "div",
    "pi",
    "random",
    "setseed",
    "width_bucket",
    "gcd",
    "lcm",
    "scale",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "to_number",
    "to_char",
    // date and time
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "to_date",
    "to_timestamp",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "date_bin",
    "timezone",
    // json
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_typeof",
    "jsonb_typeof",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_pretty",
    "jsonb_strip_nulls",
    "json_strip_nulls",
    "jsonb_path_query",
    "jsonb_path_exists",
    "jsonb_path_match",
    "json_populate_record",
    "jsonb_populate_record",
    "json_to_record",
    "jsonb_to_record",
    "json_to_recordset",
    "jsonb_to_recordset",
    // arrays and sets
    "array_length",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_dims",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "cardinality",
    "unnest",
    "generate_series",
    "generate_subscripts",
    // uuid, network, misc types
    "gen_random_uuid",
    "uuid_generate_v4",
    "host",
    "text",
    "inet_client_addr",
    // session information that is the caller's own
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_database",
    "current_catalog",
    "version",
    "pg_backend_pid",
    // releases the caller's own advisory locks (a restricted role takes none): asyncpg's pool runs
    // it in the reset of every connection it gets back
    "pg_advisory_unlock_all",
    "txid_current",
    "pg_current_xact_id",
    "pg_postmaster_start_time",
    "inet_server_port",
    "pg_client_encoding",
    "pg_is_in_recovery",
    // catalog helpers that psql, JDBC and ORMs call to describe objects (metadata, never rows)
    "format_type",
    "pg_get_expr",
    "pg_get_constraintdef",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "pg_get_triggerdef",
    "pg_get_ruledef",
    "pg_get_partkeydef",
    "pg_partition_ancestors",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    "pg_collation_is_visible",
    "pg_operator_is_visible",
    "pg_opclass_is_visible",
    "pg_opfamily_is_visible",
    "pg_conversion_is_visible",
    "pg_statistics_obj_is_visible",
    "pg_ts_config_is_visible",
    "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible",
    "pg_ts_template_is_visible",
    "pg_encoding_to_char",
    "pg_get_function_arguments",
    "pg_get_function_result",
    "pg_get_function_identity_arguments",
    "array_to_string",
    "pg_get_keywords",
    "pg_typeof",
    "pg_collation_for",
    "pg_column_size",
    // sequences the role's views use for new ids
    "lastval",
];

/// Built-ins also allowed, whose arguments name database objects in strings (`nextval('contacts_id_seq')`,
/// `current_setting('maschera.region')`): the literal matters, so such a statement shape is never
/// cached with its literals lifted out.
const NAME_ARGUMENT: &[&str] = &[
    "pg_get_viewdef",
    "current_setting",
    "nextval",
    "currval",
    "has_table_privilege",
    "has_schema_privilege",
    "has_column_privilege",
    "has_database_privilege",
    "has_sequence_privilege",
    "has_function_privilege",
    "pg_has_role",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regnamespace",
    "pg_get_serial_sequence",
    "obj_description",
    "col_description",
    "shobj_description",
];

/// `information_schema` helpers that drivers call directly (pgjdbc's `getPrimaryKeys` expands
/// `pg_index.indkey` with `_pg_expandarray`): they compute on their arguments only, like `unnest`.
const INFORMATION_SCHEMA_HELPERS: &[&str] = &["_pg_expandarray"];

/// The decision for one function call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FunctionCheck {
    /// Allowed; the literal arguments do not change the decision.
    Allowed,
    /// Allowed, but string arguments name objects: the statement is not cacheable by shape.
    AllowedValueSensitive,
    /// Refused: runs SQL text, reaches files, servers or other sessions, or changes settings.
    Dangerous,
    /// Refused: neither a known built-in nor a function the policy allows.
    Unknown,
}

/// Decides on a call to `schema.name` (`schema` is `None` when unqualified). Names are folded.
pub(crate) fn check(
    schema: Option<&str>,
    name: &str,
    role: &RoleAccess,
    search_path: &[String],
) -> FunctionCheck {
    let builtin_scope = matches!(schema, None | Some("pg_catalog"));
    if builtin_scope && is_denied(name) {
        return FunctionCheck::Dangerous;
    }
    let allowed_by_policy = !role.allowed_functions.is_empty()
        && match schema {
            Some(schema) => role.allowed_functions.contains(&format!("{schema}.{name}")),
            None => search_path
                .iter()
                .any(|s| role.allowed_functions.contains(&format!("{s}.{name}"))),
        };
    if allowed_by_policy {
        return FunctionCheck::Allowed;
    }
    if builtin_scope && allowed().contains(name) {
        return FunctionCheck::Allowed;
    }
    if schema == Some("information_schema") && INFORMATION_SCHEMA_HELPERS.contains(&name) {
        return FunctionCheck::Allowed;
    }
    if builtin_scope && NAME_ARGUMENT.contains(&name) {
        return FunctionCheck::AllowedValueSensitive;
    }
    FunctionCheck::Unknown
}

/// [`ALLOWED`] as a set: the list is long and checked for every call in every statement.
fn allowed() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| ALLOWED.iter().copied().collect())
}

fn is_denied(name: &str) -> bool {
    DENIED.contains(&name) || DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::fixture;

    #[test]
    fn builtins_pass_and_sql_running_functions_do_not() {
        let role = fixture::role("sales");
        let path = vec!["public".to_string()];
        assert_eq!(check(None, "lower", &role, &path), FunctionCheck::Allowed);
        assert_eq!(
            check(Some("pg_catalog"), "count", &role, &path),
            FunctionCheck::Allowed
        );
        assert_eq!(
            check(None, "query_to_xml", &role, &path),
            FunctionCheck::Dangerous
        );
        assert_eq!(
            check(None, "dblink_exec", &role, &path),
            FunctionCheck::Dangerous
        );
        assert_eq!(
            check(None, "lo_import", &role, &path),
            FunctionCheck::Dangerous
        );
        assert_eq!(
            check(Some("public"), "lower", &role, &path),
            FunctionCheck::Unknown
        );
        assert_eq!(check(None, "my_udf", &role, &path), FunctionCheck::Unknown);
        assert_eq!(
            check(None, "nextval", &role, &path),
            FunctionCheck::AllowedValueSensitive
        );
    }

    #[test]
    fn driver_catalog_helpers_pass() {
        let role = fixture::role("sales");
        let path = vec!["public".to_string()];
        // SQLAlchemy's get_columns and pgjdbc's getPrimaryKeys.
        assert_eq!(
            check(Some("pg_catalog"), "pg_collation_is_visible", &role, &path),
            FunctionCheck::Allowed
        );
        assert_eq!(
            check(Some("information_schema"), "_pg_expandarray", &role, &path),
            FunctionCheck::Allowed
        );
        assert_eq!(
            check(Some("public"), "_pg_expandarray", &role, &path),
            FunctionCheck::Unknown
        );
    }

    #[test]
    fn the_policy_may_allow_a_user_defined_function() {
        let mut role = fixture::role("sales");
        role.allowed_functions
            .insert("public.region_label".to_string());
        let path = vec!["public".to_string()];
        assert_eq!(
            check(None, "region_label", &role, &path),
            FunctionCheck::Allowed
        );
        assert_eq!(
            check(Some("public"), "region_label", &role, &path),
            FunctionCheck::Allowed
        );
    }
}
