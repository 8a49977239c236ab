//! The proxy's own rules for `pg_catalog` and `information_schema` relations, so that psql, JDBC and
//! ORMs can still describe what the role has, while catalog views that expose values (statistics,
//! other sessions' queries) are refused. Not for user tables (the policy decides those).

/// What the rules say about one system relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SystemRelation {
    /// Metadata only: allowed to read.
    Allowed,
    /// Exposes values or other sessions: refused.
    Denied,
}

/// `pg_catalog` relations that hold metadata only (names, types, constraints, privileges, settings).
const ALLOWED_PG_CATALOG: &[&str] = &[
    "pg_class",
    "pg_namespace",
    "pg_attribute",
    "pg_type",
    "pg_index",
    "pg_constraint",
    "pg_proc",
    "pg_description",
    "pg_shdescription",
    "pg_database",
    "pg_roles",
    "pg_settings",
    "pg_am",
    "pg_attrdef",
    "pg_collation",
    "pg_enum",
    "pg_extension",
    "pg_inherits",
    "pg_tablespace",
    "pg_trigger",
    "pg_views",
    "pg_tables",
    "pg_indexes",
    "pg_sequence",
    "pg_sequences",
    "pg_depend",
    "pg_range",
    "pg_matviews",
    "pg_timezone_names",
    "pg_timezone_abbrevs",
    "pg_cursors",
    "pg_prepared_statements",
    "pg_language",
    "pg_operator",
    "pg_opclass",
    "pg_opfamily",
    "pg_cast",
    "pg_conversion",
    "pg_auth_members",
    "pg_policy",
    "pg_policies",
    "pg_rewrite",
    "pg_partitioned_table",
    "pg_foreign_table",
    "pg_foreign_server",
    "pg_foreign_data_wrapper",
    "pg_event_trigger",
    "pg_publication",
    "pg_available_extensions",
    "pg_user",
    "pg_group",
    "pg_aggregate",
    "pg_statistic_ext",
    "pg_init_privs",
    "pg_seclabel",
    "pg_shseclabel",
    "pg_ts_config",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_locks",
];

/// Relations refused by name: they expose values (`pg_stats` holds most common values and
/// histograms), other sessions' queries (`pg_stat_activity`), secrets or files.
const DENIED_PG_CATALOG: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stat_activity",
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_largeobject",
    "pg_largeobject_metadata",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_replication_slots",
    "pg_subscription",
    "pg_db_role_setting",
];

/// Decides on `pg_catalog.name`. Unknown `pg_catalog` names are refused (fail closed).
pub(crate) fn pg_catalog(name: &str) -> SystemRelation {
    if DENIED_PG_CATALOG.contains(&name) || name.starts_with("pg_stat") {
        return SystemRelation::Denied;
    }
    if ALLOWED_PG_CATALOG.contains(&name) {
        return SystemRelation::Allowed;
    }
    SystemRelation::Denied
}

/// Whether an unqualified name is one of PostgreSQL's catalog relations (which `pg_catalog`, searched
/// first, would shadow a user table with): any `pg_` name is treated as such.
pub(crate) fn is_pg_catalog_name(name: &str) -> bool {
    name.starts_with("pg_")
}

/// Decides on `information_schema.name`: its views already filter by the caller's privileges.
pub(crate) fn information_schema(_name: &str) -> SystemRelation {
    SystemRelation::Allowed
}

/// Schemas no restricted statement may name: temporary objects could shadow the policy's tables,
/// toast tables hold raw values.
pub(crate) fn is_forbidden_schema(schema: &str) -> bool {
    schema == "pg_temp" || schema.starts_with("pg_temp_") || schema.starts_with("pg_toast")
}
