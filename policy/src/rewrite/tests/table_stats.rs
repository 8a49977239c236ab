//! The table statistics views for a restricted role (table_stats.rs): the relations' names, every
//! counter NULL.

use super::*;

/// Sequelize 6's `describeTable` query, as it sends it for `contacts` in schema `public`.
const SEQUELIZE_DESCRIBE: &str = r#"SELECT pk.constraint_type as "Constraint",c.column_name as "Field", c.column_default as "Default",c.is_nullable as "Null", (CASE WHEN c.udt_name = 'hstore' THEN c.udt_name ELSE c.data_type END) || (CASE WHEN c.character_maximum_length IS NOT NULL THEN '(' || c.character_maximum_length || ')' ELSE '' END) as "Type", (SELECT array_agg(e.enumlabel) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_enum e ON t.oid=e.enumtypid WHERE t.typname=c.udt_name) AS "special", (SELECT pgd.description FROM pg_catalog.pg_statio_all_tables AS st INNER JOIN pg_catalog.pg_description pgd on (pgd.objoid=st.relid) WHERE c.ordinal_position=pgd.objsubid AND c.table_name=st.relname) AS "Comment" FROM information_schema.columns c LEFT JOIN (SELECT tc.table_schema, tc.table_name, cu.column_name, tc.constraint_type FROM information_schema.TABLE_CONSTRAINTS tc JOIN information_schema.KEY_COLUMN_USAGE  cu ON tc.table_schema=cu.table_schema and tc.table_name=cu.table_name and tc.constraint_name=cu.constraint_name and tc.constraint_type='PRIMARY KEY') pk ON pk.table_schema=c.table_schema AND pk.table_name=c.table_name AND pk.column_name=c.column_name WHERE c.table_name = 'contacts' AND c.table_schema = 'public'"#;

#[test]
fn table_statistics_read_names_and_null_counters() {
    for (sql, counter) in [
        (
            "SELECT * FROM pg_stat_user_tables",
            "NULL::BIGINT AS n_live_tup",
        ),
        (
            "SELECT relname, n_live_tup FROM pg_catalog.pg_stat_all_tables WHERE schemaname = 'public'",
            "NULL::BIGINT AS n_live_tup",
        ),
        (
            "SELECT st.relid FROM pg_catalog.pg_statio_all_tables AS st",
            "NULL::BIGINT AS heap_blks_read",
        ),
        (
            "SELECT pg_statio_user_tables.relname FROM pg_statio_user_tables",
            "NULL::BIGINT AS toast_blks_hit",
        ),
    ] {
        for role in ["sales", "support", "analyst"] {
            let out = accepted_sql(role, sql);
            assert!(
                out.contains(counter) && out.contains("pg_catalog.has_table_privilege"),
                "{role} {sql}: {out}"
            );
            // The real statistics view is never read.
            for real in [
                "pg_catalog.pg_stat_user_tables",
                "pg_catalog.pg_stat_all_tables",
                "pg_catalog.pg_statio_all_tables",
                "FROM pg_statio_user_tables",
                "FROM pg_stat_user_tables",
            ] {
                assert!(!out.contains(real), "{role} {sql}: {out}");
            }
        }
    }
}

#[test]
fn sequelize_describe_table_is_accepted() {
    let out = accepted_sql("sales", SEQUELIZE_DESCRIBE);
    assert!(out.contains("NULL::BIGINT AS heap_blks_read"), "{out}");
}

#[test]
fn the_base_schema_in_a_catalog_predicate_also_names_the_roles_view_schema() {
    let out = accepted_sql("sales", SEQUELIZE_DESCRIBE);
    assert!(
        out.contains("c.table_schema IN ('public', 'maschera_sales')"),
        "{out}"
    );
    for (sql, expected) in [
        (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            "table_schema IN ('public', 'maschera_sales')",
        ),
        (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE 'public' = n.nspname",
            "n.nspname IN ('public', 'maschera_sales')",
        ),
    ] {
        let out = accepted_sql("sales", sql);
        assert!(out.contains(expected), "{sql}: {out}");
    }
    // Other schemas, other operators and user tables' columns are left as written.
    for (sql, kept) in [
        (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pg_catalog'",
            "table_schema = 'pg_catalog'",
        ),
        (
            "SELECT table_name FROM information_schema.tables WHERE table_schema <> 'public'",
            "table_schema <> 'public'",
        ),
        (
            "SELECT id FROM interactions WHERE channel = 'public'",
            "channel = 'public'",
        ),
        (
            "SELECT t.table_name FROM information_schema.tables t, contacts WHERE table_schema = 'public'",
            "table_schema = 'public'",
        ),
    ] {
        let out = accepted_sql("sales", sql);
        assert!(out.contains(kept), "{sql}: {out}");
    }
}
