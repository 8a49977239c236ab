//! The objects of the database lock, as SQL: what `policy apply` compiles so that a role's login, connected
//! straight to PostgreSQL, gets exactly its cells of the policy and plans like the owner's query.
//!
//! The shape, per restricted role `r` with view schema `maschera_r` and login `<login prefix>r` (default
//! `maschera_r`):
//! - a NOLOGIN **owner role** `<login>_owner` (it follows the login prefix, so that the applies of two
//!   databases of one cluster never share one) that owns the role's views and holds `SELECT` and the
//!   per-column `INSERT`/`UPDATE` privileges on the base tables (the login holds privileges on the views
//!   only), and a NOLOGIN **writer role** `<login>_writer`, member of it, that owns the write triggers
//!   and alone holds `DELETE` ([`writer_role`]: why `LOCK TABLE` on a view then takes no strong lock);
//! - each **row filter as a restrictive row-level-security policy** `maschera_r` (named after the view
//!   schema) on the base table, for the
//!   owner role only, beside one permissive `maschera_allow_all` policy for every other role, so that the
//!   security qual sits on the base relation (indexes, `LIMIT`, index probes per row) and the caller's
//!   predicates that are not leakproof run after it;
//! - a filter `x IN (SELECT k FROM t WHERE ...)` becomes a correlated probe (`COALESCE((SELECT true FROM t
//!   WHERE t.k = x AND ... LIMIT 1), false)`): PostgreSQL never pulls subqueries of a policy up into joins,
//!   and an `IN` would be planned as a hashed subplan over the whole region;
//! - tables named in filters are read through plain views of the schema `maschera_lookup`, owned by the user
//!   who applies (the table owner or a superuser, to whom row-level security does not apply), so that a
//!   filter reading its own table, or a table whose filter reads back, does not recurse;
//! - the role's views are **not** `security_barrier`: they hold the masking expressions only and are
//!   flattened into the caller's query. A filtered table's view carries a **guard**, a call of
//!   [`INTACT_FUNCTION`] with the ids taken at apply time, a one-time filter run once per execution:
//!   row-level security still on, the
//!   role's policy still the row version the apply created, the owner role not the table's owner. If a
//!   direct migration drops or alters the policy or disables row-level security, the view returns no rows
//!   and its writes are refused (the write triggers check the same through [`WRITE_GUARD_FUNCTION`]).
//!   Each view's comment seals its definition and a fuller fingerprint (also: the owner role neither
//!   superuser nor BYPASSRLS), which the proxy and `policy check --upstream` compare
//!   ([`intact_sql`]);
//! - writes through a filtered view, or a view with any column not shown, go through **INSTEAD OF
//!   triggers** (the one compiled write path): inside the filter (the policy's `WITH CHECK` and `USING`),
//!   only shown and `writable` columns (and, on insert only, `redact` columns: new rows may set them), a
//!   masked value written back unchanged keeps the stored one (messages: `crate::write_back`), NULL on
//!   insert for a
//!   column not shown stores the default; such views refuse `INSERT ... ON CONFLICT (...)` (42P10), so an
//!   upsert can neither read nor change a row outside the filter.
//!
//! Not for: logins, keys and the removal of stale objects (`apply_sql`), nor running anything.

use crate::access::{Action, Catalog, ColumnAccess, TableName, ViewAccess};
use crate::column_sql::column_expression;
use crate::step::{Step, quote_ident, quote_literal};
use crate::write_back::{self, WriteKind};
use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, ObjectNamePart, SelectItem, SetExpr, TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The schema of the plain views that row filters read their tables through.
pub const LOOKUP_SCHEMA: &str = "maschera_lookup";
/// The permissive policy that leaves every role other than the owner roles as it was.
pub const ALLOW_ALL_POLICY: &str = "maschera_allow_all";
/// The alias of the probed table in a correlated filter.
const PROBE_ALIAS: &str = "maschera_probe";

/// The NOLOGIN role that owns `login`'s views.
pub fn owner_role(login: &str) -> String {
    format!("{login}_owner")
}

/// The NOLOGIN role that owns `login`'s write triggers: a member of the owner role (it has its
/// privileges, and its row-level-security policies apply to it) that alone also holds `DELETE` on the
/// base tables. The owner role holds no table-wide privilege but `SELECT` there (its `INSERT` and
/// `UPDATE` are per column), and `LOCK TABLE` on a view locks the view's tables with the privileges of
/// the view's owner, table-wide ones only: so a login that may write its view can lock the base table
/// in `ACCESS SHARE` mode at most (what a read takes), never in a mode that stops other sessions' writes.
pub fn writer_role(login: &str) -> String {
    format!("{login}_writer")
}

fn qualified(name: &TableName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

/// `DO` block that runs `template` through `format()`, with `{value}` standing for the text of
/// `value_sql` computed at apply time (SQL made of object ids of the steps before: digits only).
fn formatted(template: &str, value_sql: &str) -> Step {
    let mut tag = String::from("maschera_do");
    while template.contains(&tag) || value_sql.contains(&tag) {
        tag.push('_');
    }
    let escaped = template.replace('%', "%%").replace("{value}", "%1$s");
    Step {
        sql: format!(
            "DO ${tag}$ BEGIN EXECUTE pg_catalog.format({}, ({value_sql})); END ${tag}$",
            quote_literal(&escaped)
        ),
        secret: None,
    }
}

/// Drops every `maschera_*` row-level-security policy and the lookup schema, and switches row-level
/// security off again on tables where only Maschera's policies used it (run before a schema change or a
/// re-apply; [`lookup_steps`] and [`row_security_steps`] create what the policy needs).
pub fn drop_row_security_steps() -> Vec<Step> {
    vec![
        Step::plain(format!(
            "DO $maschera_do$ DECLARE p record; BEGIN \
             FOR p IN SELECT polname, polrelid FROM pg_catalog.pg_policy WHERE polname LIKE 'maschera\\_%' LOOP \
             EXECUTE pg_catalog.format('DROP POLICY %I ON %s', p.polname, p.polrelid::pg_catalog.regclass); END LOOP; \
             FOR p IN SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relrowsecurity \
             AND pg_catalog.obj_description(c.oid, 'pg_class') IS NOT DISTINCT FROM {} \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy q WHERE q.polrelid = c.oid) LOOP \
             EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', p.oid::pg_catalog.regclass); \
             EXECUTE pg_catalog.format('COMMENT ON TABLE %s IS NULL', p.oid::pg_catalog.regclass); END LOOP; END $maschera_do$",
            quote_literal(RLS_COMMENT)
        )),
        Step::plain(format!("DROP SCHEMA IF EXISTS {LOOKUP_SCHEMA} CASCADE")),
    ]
}

/// The comment `policy apply` puts on a table whose row-level security it switched on (only then is it
/// switched off again). A table with a comment of its own keeps it, and its row-level security.
const RLS_COMMENT: &str =
    "maschera policy: row-level security enabled for the policy's row filters";

/// The lookup schema: one plain view per table the filters may read (the first one the search path finds
/// for each name, as PostgreSQL would resolve it), readable by the owner roles only.
pub fn lookup_steps(catalog: &Catalog, schemas: &[String], owners: &[String]) -> Vec<Step> {
    let mut steps = vec![
        Step::plain(format!("CREATE SCHEMA {LOOKUP_SCHEMA}")),
        Step::plain(format!(
            "COMMENT ON SCHEMA {LOOKUP_SCHEMA} IS 'maschera policy: tables as row filters read them, for the owner roles only'"
        )),
        Step::plain(format!("REVOKE ALL ON SCHEMA {LOOKUP_SCHEMA} FROM PUBLIC")),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for schema in schemas {
        for name in catalog.tables.keys().filter(|t| &t.schema == schema) {
            if !seen.insert(name.name.clone()) {
                continue;
            }
            let view = format!("{LOOKUP_SCHEMA}.{}", quote_ident(&name.name));
            steps.push(Step::plain(format!(
                "CREATE VIEW {view} AS SELECT * FROM {}",
                qualified(name)
            )));
            for owner in owners {
                steps.push(Step::plain(format!(
                    "GRANT SELECT ON {view} TO {}",
                    quote_ident(owner)
                )));
            }
        }
    }
    for owner in owners {
        steps.push(Step::plain(format!(
            "GRANT USAGE ON SCHEMA {LOOKUP_SCHEMA} TO {}",
            quote_ident(owner)
        )));
    }
    steps
}

/// Row-level security on `table` with the allow-all policy (idempotent: run after
/// [`drop_row_security_steps`]). Takes an AccessExclusiveLock on the table.
pub fn enable_row_security_steps(table: &TableName) -> Vec<Step> {
    let t = qualified(table);
    vec![
        Step::plain(format!(
            "DO $maschera_do$ BEGIN IF NOT (SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = {}::pg_catalog.regclass) THEN \
             ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; \
             IF pg_catalog.obj_description({}::pg_catalog.regclass, 'pg_class') IS NULL THEN COMMENT ON TABLE {t} IS {}; END IF; \
             END IF; END $maschera_do$",
            quote_literal(&t),
            quote_literal(&t),
            quote_literal(RLS_COMMENT)
        )),
        Step::plain(format!(
            "CREATE POLICY {ALLOW_ALL_POLICY} ON {t} AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)"
        )),
    ]
}

/// The restrictive policy that is the row filter on `table` of the role whose view schema is `schema`
/// (the policy is named after it) and whose login is `login` (names in `filter` resolve under the
/// search path the apply sets: the lookup schema first).
pub fn filter_policy_step(schema: &str, login: &str, table: &TableName, filter: &str) -> Step {
    let filter = probe_filter(filter, table);
    Step::plain(format!(
        "CREATE POLICY {} ON {} AS RESTRICTIVE FOR ALL TO {} USING ({filter}) WITH CHECK ({filter})",
        quote_ident(schema),
        qualified(table),
        quote_ident(&owner_role(login))
    ))
}

/// The fingerprint of `table`'s protection for the role with view schema `schema` and login `login`, as a scalar subquery (text): row-level security
/// on, the owner role neither the table's owner nor superuser nor BYPASSRLS, and the identity and row
/// version of the role's policy (a dropped and recreated policy has another oid; `ALTER POLICY` writes a
/// new row version). Cheap: three catalog index or small-table lookups, once per statement.
pub fn fingerprint_sql(schema: &str, login: &str, table: &TableName) -> String {
    format!(
        "SELECT c.relrowsecurity::text || (c.relowner = r.oid)::text || r.rolsuper::text \
         || r.rolbypassrls::text || COALESCE((SELECT p.oid::text || '.' || p.xmin::text \
         FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid AND p.polname = {}), '') \
         FROM pg_catalog.pg_class c, pg_catalog.pg_roles r \
         WHERE c.oid = {}::pg_catalog.regclass AND r.rolname = {}",
        quote_literal(schema),
        quote_literal(&qualified(table)),
        quote_literal(&owner_role(login))
    )
}

/// The function the views' guards call: whether row-level security is on for table `tab` and applies to
/// its caller and to `owner` (which neither owns the table nor holds a grant option on it, nor is a
/// superuser), and policy `pol` is still the row version `version` the apply created (see
/// [`guard_function_sql`]).
///
/// It is STABLE, and called with constants: the planner keeps it as a `One-Time Filter`, run once per
/// execution of a statement, not per row. It must not be IMMUTABLE (folded while planning): the planner
/// reads catalogs with the snapshot taken before the statement waited for its locks, so a statement
/// planned while `policy apply` held them would see the policy rows of before the apply against the views
/// of after it, and return no rows (or refuse a write) although nothing is broken; the executor takes
/// its snapshot after the locks.
pub const INTACT_FUNCTION: &str = "maschera_private.intact";

/// The same check for the write triggers, as a function of its own. PL/pgSQL plans its queries again
/// whenever a call comes with another `search_path` than the one its cached plans were made under; the
/// triggers run under `pg_catalog` and the views under the caller's path, so one function called from
/// both (an insert whose values read a filtered view) was planned twice per statement (at 200,000
/// contacts the sales insert spent 158 µs executing instead of 70). Each function now keeps one path.
/// STABLE like [`INTACT_FUNCTION`], for the same reason: the triggers call it with constants in the
/// `WHERE` of their statements on the base table, a one-time filter run once per statement, not for
/// every row written.
pub const WRITE_GUARD_FUNCTION: &str = "maschera_private.intact_write";

/// The body of both guard functions. The relation's facts come from C functions that read the
/// relcache and syscache (`row_security_active` for the caller: row-level security on and neither
/// the table's owner nor BYPASSRLS; `has_table_privilege` with grant option for the owner role: only
/// its owner, a superuser or a grantee WITH GRANT OPTION has it), as one PL/pgSQL simple expression
/// without an executor; only the policy's row version needs a query (one index lookup of
/// `pg_policy`). Two catalog queries under `EXISTS` cost about 10 µs a call here, this about 4.
fn guard_function_sql(function: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {function}(tab oid, pol oid, version xid, owner oid) \
         RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE AS $maschera_body$ BEGIN \
         IF (pg_catalog.row_security_active(tab::pg_catalog.regclass) \
         AND NOT pg_catalog.has_table_privilege(owner, tab, 'SELECT WITH GRANT OPTION')) IS NOT TRUE \
         THEN RETURN false; END IF; \
         PERFORM FROM pg_catalog.pg_policy p WHERE p.oid OPERATOR(pg_catalog.=) pol \
         AND p.polrelid OPERATOR(pg_catalog.=) tab AND p.xmin OPERATOR(pg_catalog.=) version; \
         RETURN FOUND; END $maschera_body$"
    )
}

/// Creates [`INTACT_FUNCTION`] (callable by the logins, whose views call it) and [`WRITE_GUARD_FUNCTION`]
/// (callable by the owner roles, whose triggers call it); both read only catalogs.
pub fn intact_function_steps(logins: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    for function in [INTACT_FUNCTION, WRITE_GUARD_FUNCTION] {
        steps.push(Step::plain(guard_function_sql(function)));
        steps.push(Step::plain(format!(
            "REVOKE ALL ON FUNCTION {function}(oid, oid, xid, oid) FROM PUBLIC"
        )));
    }
    for login in logins {
        let who = quote_ident(login);
        let owner = quote_ident(&owner_role(login));
        steps.push(Step::plain(format!(
            "GRANT USAGE ON SCHEMA {} TO {who}",
            crate::model::PRIVATE_SCHEMA
        )));
        steps.push(Step::plain(format!(
            "GRANT EXECUTE ON FUNCTION {INTACT_FUNCTION}(oid, oid, xid, oid) TO {who}, {owner}"
        )));
        steps.push(Step::plain(format!(
            "GRANT EXECUTE ON FUNCTION {WRITE_GUARD_FUNCTION}(oid, oid, xid, oid) TO {owner}"
        )));
    }
    steps
}

/// The arguments of a guard's call, as SQL computed at apply time (after the policy exists).
fn guard_arguments_sql(schema: &str, login: &str, table: &TableName) -> String {
    format!(
        "SELECT c.oid::text || ', ' || p.oid::text || ', ''' || p.xmin::text || '''::xid, ' || r.oid::text \
         FROM pg_catalog.pg_class c, pg_catalog.pg_policy p, pg_catalog.pg_roles r \
         WHERE c.oid = {}::pg_catalog.regclass AND p.polrelid = c.oid AND p.polname = {} AND r.rolname = {}",
        quote_literal(&qualified(table)),
        quote_literal(schema),
        quote_literal(&owner_role(login))
    )
}

/// The guard of a filtered view ([`INTACT_FUNCTION`]) or write trigger ([`WRITE_GUARD_FUNCTION`]):
/// `{value}` is filled in by [`formatted`] with [`guard_arguments_sql`].
fn guard(function: &str) -> String {
    format!("{function}({{value}})")
}

/// What a sealed view's comment starts with.
const SEAL_MARK: &str = "maschera policy: view definition ";

/// The part of a seal after the view's md5: for a filtered view, the fingerprint its guard compares
/// with (SQL text appended to the seal's expression).
fn sealed_guard(schema: &str, login: &str, table: &TableName, filtered: bool) -> String {
    if filtered {
        format!(
            " || ' guard ' || ({})",
            fingerprint_sql(schema, login, table)
        )
    } else {
        String::new()
    }
}

/// The seal of a view: the comment records the md5 of its definition and, for a filtered view, the
/// fingerprint its guard compares with, so that [`intact_sql`] tells a view replaced or left behind by
/// a direct migration (or by an earlier version of Maschera) from the one `policy apply` made.
fn seal_step(schema: &str, login: &str, view: &str, table: &TableName, filtered: bool) -> Step {
    let view = quote_literal(&format!("{}.{}", quote_ident(schema), quote_ident(view)));
    let guard = sealed_guard(schema, login, table, filtered);
    Step::plain(format!(
        "DO $maschera_do$ BEGIN EXECUTE pg_catalog.format('COMMENT ON VIEW %s IS %L', {view}, {} \
         || pg_catalog.md5(pg_catalog.pg_get_viewdef({view}::pg_catalog.regclass)){guard}); END $maschera_do$",
        quote_literal(SEAL_MARK)
    ))
}

/// A query of one boolean: whether the view `view` of `table` in view schema `schema`, whose owner
/// role is `login`'s, is the one `policy apply` made and the table's protection is as it left it (the
/// view exists, belongs to the owner role, its definition is unchanged and, when filtered, the guard's
/// fingerprint still matches). Run it with the search path
/// `policy apply` used (the tables' schemas), since view definitions print names relative to it.
pub fn intact_sql(
    schema: &str,
    login: &str,
    view: &str,
    table: &TableName,
    filtered: bool,
) -> String {
    let guard = sealed_guard(schema, login, table, filtered);
    format!(
        "SELECT COALESCE((SELECT c.relowner = (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = {}) \
         AND pg_catalog.obj_description(c.oid, 'pg_class') = {} || pg_catalog.md5(pg_catalog.pg_get_viewdef(c.oid)){guard} \
         FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass({})), false)",
        quote_literal(&owner_role(login)),
        quote_literal(SEAL_MARK),
        quote_literal(&format!("{}.{}", quote_ident(schema), quote_ident(view)))
    )
}

/// Everything one restricted role needs for one table: the view (owned by the owner role, guarded when
/// filtered), its column defaults, grants to the owner role and the login, and the write triggers.
pub struct ViewPlan<'a> {
    /// The role's view schema (`maschera_<role>`): its views, trigger functions and policy name.
    pub schema: &'a str,
    /// The role's login (`<login prefix><role>`); its owner role is `<login>_owner`.
    pub login: &'a str,
    pub table: &'a TableName,
    pub access: &'a ViewAccess,
    pub filtered: bool,
    pub catalog: &'a Catalog,
    pub sequences: &'a [TableName],
    /// The table's primary key columns (updates and deletes through triggers find the row by them).
    pub primary_key: &'a [String],
}

impl ViewPlan<'_> {
    fn view(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(self.schema),
            quote_ident(&self.access.view)
        )
    }

    fn data_type(&self, column: &str) -> &str {
        self.catalog
            .tables
            .get(self.table)
            .and_then(|cols| cols.iter().find(|c| c.name == column))
            .map(|c| c.data_type.as_str())
            .unwrap_or("text")
    }

    /// The view's select list over the base table's columns (as `RETURNING` uses it too).
    fn select_list(&self) -> Vec<String> {
        self.access
            .columns
            .iter()
            .filter_map(|c| {
                column_expression(self.table, &c.name, self.data_type(&c.name), &c.action)
            })
            .collect()
    }

    /// Whether a foreign key of any table references `column` of this table.
    fn referenced(&self, column: &str) -> bool {
        self.catalog.foreign_keys.iter().any(|k| {
            &k.referenced == self.table && k.referenced_columns.iter().any(|c| c == column)
        })
    }

    fn shown(&self) -> impl Iterator<Item = &ColumnAccess> {
        self.access
            .columns
            .iter()
            .filter(|c| !matches!(c.action, Action::Drop))
    }

    /// The columns an insert stores: the writable ones and, when the role inserts, the `redact` ones
    /// (new rows may set them; an update writes one back only unchanged).
    fn insertable(&self) -> Vec<&ColumnAccess> {
        self.access
            .columns
            .iter()
            .filter(|c| c.writable || (self.access.writes.insert && c.action.insertable_masked()))
            .collect()
    }

    /// Whether writes go through triggers: the view is filtered or hides or masks a column, or the
    /// role deletes rows the trigger can find by their primary key (only the writer role, the
    /// triggers' owner, may delete: see [`writer_role`]; without a key the view stays auto-updatable
    /// and its owner deletes, and may be locked in every mode: README "Known limitations").
    fn needs_triggers(&self) -> bool {
        let writes = self.access.writes;
        (writes.delete && !self.primary_key.is_empty())
            || ((writes.insert || writes.update)
                && (self.filtered || self.access.columns.iter().any(|c| !c.action.is_show())))
    }

    pub fn steps(&self) -> Vec<Step> {
        let view = self.view();
        let owner = quote_ident(&owner_role(self.login));
        let who = quote_ident(self.login);
        let table = qualified(self.table);
        let select = format!(
            "CREATE VIEW {view} AS SELECT {} FROM {table}",
            self.select_list().join(", ")
        );
        // Rows of a view with keyed columns come sorted by them, not in the clear ids' order.
        let order = crate::pseudonym::keyed_order(self.access).unwrap_or_default();
        let mut steps = if self.filtered {
            vec![formatted(
                &format!("{select} WHERE {}{order}", guard(INTACT_FUNCTION)),
                &guard_arguments_sql(self.schema, self.login, self.table),
            )]
        } else {
            vec![Step::plain(format!("{select}{order}"))]
        };
        steps.push(Step::plain(format!("ALTER VIEW {view} OWNER TO {owner}")));
        steps.push(seal_step(
            self.schema,
            self.login,
            &self.access.view,
            self.table,
            self.filtered,
        ));
        // The owner role reads the whole table (masks are computed over raw values) and writes what the
        // login may write; the login holds privileges on the view only.
        steps.push(Step::plain(format!("GRANT SELECT ON {table} TO {owner}")));
        steps.push(Step::plain(format!("GRANT SELECT ON {view} TO {who}")));
        let writes = self.access.writes;
        let writable: Vec<String> = self
            .access
            .columns
            .iter()
            .filter(|c| c.writable)
            .map(|c| quote_ident(&c.name))
            .collect();
        let insertable: Vec<String> = self
            .insertable()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let triggers = self.needs_triggers();
        for (allowed, privilege, columns) in [
            (writes.insert, "INSERT", &insertable),
            (writes.update, "UPDATE", &writable),
        ] {
            if !allowed || columns.is_empty() {
                continue;
            }
            let columns = columns.join(", ");
            steps.push(Step::plain(format!(
                "GRANT {privilege} ({columns}) ON {table} TO {owner}"
            )));
            // With triggers every view column may be named (the trigger refuses what is not allowed):
            // an ORM writes every mapped column.
            steps.push(Step::plain(if triggers {
                format!("GRANT {privilege} ON {view} TO {who}")
            } else {
                format!("GRANT {privilege} ({columns}) ON {view} TO {who}")
            }));
            if privilege == "INSERT" {
                for sequence in self.sequences {
                    steps.push(Step::plain(format!(
                        "GRANT USAGE ON SEQUENCE {} TO {who}, {owner}",
                        qualified(sequence)
                    )));
                }
            }
        }
        if writes.delete {
            // To the writer role, not the owner role, when the triggers delete: see [`writer_role`].
            let deleter = if triggers {
                quote_ident(&writer_role(self.login))
            } else {
                owner.clone()
            };
            steps.push(Step::plain(format!("GRANT DELETE ON {table} TO {deleter}")));
            steps.push(Step::plain(format!("GRANT DELETE ON {view} TO {who}")));
        }
        if writes.insert {
            steps.push(self.defaults_step());
        }
        if triggers {
            steps.extend(self.trigger_steps());
        }
        steps
    }

    /// The base table's column defaults on the view's shown columns, so that a column left out of an
    /// insert gets the table's default also when a trigger does the insert. An identity column's
    /// default is the `nextval` of its sequence (it has no `pg_attrdef` entry; Django's ids are such).
    fn defaults_step(&self) -> Step {
        let shown: Vec<String> = self
            .insertable()
            .iter()
            .map(|c| quote_literal(&c.name))
            .collect();
        let names = if shown.is_empty() {
            "ARRAY[]::text[]".to_string()
        } else {
            format!("ARRAY[{}]", shown.join(", "))
        };
        Step::plain(format!(
            "DO $maschera_do$ DECLARE d record; BEGIN FOR d IN SELECT a.attname, \
             CASE WHEN a.attidentity <> '' THEN pg_catalog.format('pg_catalog.nextval(%L::pg_catalog.regclass)', \
             pg_catalog.pg_get_serial_sequence(a.attrelid::pg_catalog.regclass::text, a.attname)) \
             ELSE pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END AS expr \
             FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef ad \
             ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
             WHERE a.attrelid = {}::pg_catalog.regclass AND a.attname::text = ANY ({names}) \
             AND (ad.adbin IS NOT NULL OR a.attidentity <> '') LOOP \
             EXECUTE pg_catalog.format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', {}, d.attname, d.expr); \
             END LOOP; END $maschera_do$",
            quote_literal(&qualified(self.table)),
            quote_literal(&self.view()),
        ))
    }

    /// How the write triggers find the base row behind a view row (`t` the base table, `OLD` the view
    /// row): by the primary key when the view shows every key column as stored; for a table without
    /// a primary key (an association table whose migrations made none), by every column when the view
    /// shows each one as stored and each has an equality operator: rows equal in every column are the
    /// same row to any WHERE clause, which reaches all of them either way. `None`: updates and deletes
    /// through the triggers are refused.
    fn row_match(&self) -> Option<String> {
        let shown = |name: &str| {
            self.access
                .columns
                .iter()
                .any(|c| c.name == name && c.action.is_show())
        };
        if !self.primary_key.is_empty() {
            return self.primary_key.iter().all(|k| shown(k)).then(|| {
                self.primary_key
                    .iter()
                    .map(|k| format!("t.{0} = OLD.{0}", quote_ident(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            });
        }
        // Types without a default equality operator (IS NOT DISTINCT FROM would fail on them).
        const NO_EQUALITY: &[&str] = &[
            "json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle",
        ];
        let columns = self.catalog.tables.get(self.table)?;
        let comparable = !columns.is_empty()
            && columns
                .iter()
                .all(|c| shown(&c.name) && !NO_EQUALITY.contains(&c.data_type.as_str()));
        comparable.then(|| {
            columns
                .iter()
                .map(|c| format!("t.{0} IS NOT DISTINCT FROM OLD.{0}", quote_ident(&c.name)))
                .collect::<Vec<_>>()
                .join(" AND ")
        })
    }

    /// Fails the apply when the login may create objects in the table's schema, which the write
    /// trigger searches: a function or table of its own there would run or be written to as the
    /// writer role (PostgreSQL before 15 gave every role CREATE on `public`; upgraded databases keep it).
    fn schema_not_writable_step(&self) -> Step {
        let schema = &self.table.schema;
        Step::plain(format!(
            "DO $maschera_do$ BEGIN IF pg_catalog.has_schema_privilege({}, {}, 'CREATE') THEN \
             RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = {}; END IF; END $maschera_do$",
            quote_literal(self.login),
            quote_literal(schema),
            quote_literal(&format!(
                "login {} may create objects in schema {}, which the write triggers of its views search: \
                 run REVOKE CREATE ON SCHEMA {} FROM PUBLIC (and from the login), then apply again",
                quote_ident(self.login),
                quote_ident(schema),
                quote_ident(schema)
            ))
        ))
    }

    /// The INSTEAD OF trigger and its function (SECURITY DEFINER, owned by the writer role, so the base
    /// table's row-level security and column privileges apply to what it does).
    fn trigger_steps(&self) -> Vec<Step> {
        let writes = self.access.writes;
        let role_name = self
            .schema
            .strip_prefix(crate::model::OBJECT_PREFIX)
            .unwrap_or(self.schema);
        let function = format!(
            "{}.{}",
            quote_ident(self.schema),
            quote_ident(&format!("maschera_write_{}", self.access.view))
        );
        let table = qualified(self.table);
        let returning = self.select_list().join(", ");
        let refuse = |message: String| {
            format!(
                "RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = {};",
                quote_literal(&message)
            )
        };
        let name = &self.access.view;
        // Refuses the write when `condition` holds for column `c` (texts: `crate::write_back`).
        let column_check = |c: &ColumnAccess, condition: String, kind: WriteKind| {
            format!(
                "IF {condition} THEN {} END IF;\n",
                refuse(write_back::column_refusal(role_name, name, &c.name, kind))
            )
        };
        let not_allowed = |verb: &str| {
            format!(
                "{}\n",
                refuse(write_back::operation_refusal(role_name, name, verb))
            )
        };
        let unkeyed = |verb: &str| {
            format!(
                "{}\n",
                refuse(write_back::unkeyed_refusal(role_name, name, verb))
            )
        };
        let mut body = String::from("BEGIN\n");
        // The guard sits inside each statement on the base table, a one-time filter run once per
        // execution (see [`WRITE_GUARD_FUNCTION`]): an insert that finds it false inserts nothing and
        // is refused; an update or delete changes no row, as the view (whose own guard is the same
        // check) shows none.
        let and_guard = if self.filtered {
            format!(" AND {}", guard(WRITE_GUARD_FUNCTION))
        } else {
            String::new()
        };
        let row_match = self.row_match();
        let key_shown = row_match.is_some();
        let key_match = row_match.unwrap_or_default();
        let writable: Vec<&ColumnAccess> =
            self.access.columns.iter().filter(|c| c.writable).collect();
        let not_writable: Vec<&ColumnAccess> = self.shown().filter(|c| !c.writable).collect();
        let insertable = self.insertable();
        // INSERT
        body.push_str("IF TG_OP = 'INSERT' THEN\n");
        if writes.insert && !insertable.is_empty() {
            for c in not_writable
                .iter()
                .filter(|c| !insertable.iter().any(|i| i.name == c.name))
            {
                body.push_str(&column_check(
                    c,
                    format!("NEW.{} IS NOT NULL", quote_ident(&c.name)),
                    WriteKind::Insert,
                ));
            }
            let columns: Vec<String> = insertable.iter().map(|c| quote_ident(&c.name)).collect();
            let values: Vec<String> = insertable
                .iter()
                .map(|c| format!("NEW.{}", quote_ident(&c.name)))
                .collect();
            let (columns, values) = (columns.join(", "), values.join(", "));
            body.push_str(&if self.filtered {
                format!(
                    "INSERT INTO {table} AS t ({columns}) SELECT {values} WHERE {} RETURNING {returning} INTO NEW;\n\
                     IF NOT FOUND THEN {} END IF;\nRETURN NEW;\n",
                    guard(WRITE_GUARD_FUNCTION),
                    refuse(write_back::incomplete_refusal(role_name, name))
                )
            } else {
                format!(
                    "INSERT INTO {table} AS t ({columns}) VALUES ({values}) RETURNING {returning} INTO NEW;\nRETURN NEW;\n"
                )
            });
        } else {
            body.push_str(&not_allowed("insert into"));
        }
        // UPDATE
        body.push_str("ELSIF TG_OP = 'UPDATE' THEN\n");
        if writes.update && !writable.is_empty() && key_shown {
            for c in &not_writable {
                body.push_str(&column_check(
                    c,
                    {
                        let data_type = write_back::view_type(&c.action, self.data_type(&c.name));
                        let col = quote_ident(&c.name);
                        format!(
                            "{} IS DISTINCT FROM {}",
                            write_back::comparable(&format!("NEW.{col}"), data_type),
                            write_back::comparable(&format!("OLD.{col}"), data_type)
                        )
                    },
                    WriteKind::Update,
                ));
            }
            // A referenced key keeps its value: a change would meet the foreign keys of rows the role
            // may not see (their 23503 tells that they exist, a cascade changes them).
            for c in writable.iter().filter(|c| self.referenced(&c.name)) {
                let col = quote_ident(&c.name);
                body.push_str(&format!(
                    "IF NEW.{col} IS DISTINCT FROM OLD.{col} THEN {} END IF;\n",
                    refuse(write_back::referenced_key_refusal(role_name, name, &c.name))
                ));
            }
            let sets: Vec<String> = writable
                .iter()
                .map(|c| {
                    let col = quote_ident(&c.name);
                    if c.action.is_show() {
                        format!("{col} = NEW.{col}")
                    } else {
                        // A masked column the policy makes writable: written back unchanged it
                        // keeps the stored value, another value is stored.
                        let data_type = write_back::view_type(&c.action, self.data_type(&c.name));
                        format!(
                            "{col} = CASE WHEN {} IS NOT DISTINCT FROM {} THEN t.{col} ELSE NEW.{col} END",
                            write_back::comparable(&format!("NEW.{col}"), data_type),
                            write_back::comparable(&format!("OLD.{col}"), data_type)
                        )
                    }
                })
                .collect();
            body.push_str(&format!(
                "UPDATE {table} AS t SET {} WHERE {key_match}{and_guard} RETURNING {returning} INTO NEW;\n\
                 IF NOT FOUND THEN RETURN NULL; END IF;\nRETURN NEW;\n",
                sets.join(", ")
            ));
        } else if writes.update && !writable.is_empty() {
            body.push_str(&unkeyed("update"));
        } else {
            body.push_str(&not_allowed("update"));
        }
        // DELETE
        body.push_str("ELSE\n");
        if writes.delete && key_shown {
            body.push_str(&format!(
                "DELETE FROM {table} AS t WHERE {key_match}{and_guard};\nIF NOT FOUND THEN RETURN NULL; END IF;\nRETURN OLD;\n"
            ));
        } else if writes.delete {
            body.push_str(&unkeyed("delete from"));
        } else {
            body.push_str(&not_allowed("delete from"));
        }
        body.push_str("END IF;\n");
        if !self.filtered {
            // Without row-level security on the table PostgreSQL would print the whole stored row in a
            // constraint error's DETAIL ("Failing row contains ..."), masked columns' raw values
            // included. (Under row-level security it leaves the DETAIL out itself.)
            body.push_str(
                "EXCEPTION WHEN integrity_constraint_violation THEN RAISE EXCEPTION USING \
                 ERRCODE = SQLSTATE, MESSAGE = SQLERRM, DETAIL = 'maschera withheld the row: it holds values \
                 this role does not see';\n",
            );
        }
        body.push_str("END");
        let mut tag = String::from("maschera_body");
        while body.contains(&tag) {
            tag.push('_');
        }
        // The table's schema before `pg_temp` (see [`crate::step::FUNCTION_SEARCH_PATH`]): the CRM's
        // own triggers on the table run inside this function, on its path, and find their unqualified
        // tables where the CRM's sessions find them, never a temporary table of the login's (which
        // would receive the rows they write). The login may not create objects there (checked below).
        let create = format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, {}, pg_temp AS ${tag}${body}${tag}$",
            quote_ident(&self.table.schema)
        );
        let create = if self.filtered {
            formatted(
                &create,
                &guard_arguments_sql(self.schema, self.login, self.table),
            )
        } else {
            Step::plain(create)
        };
        let events: Vec<&str> = [
            (writes.insert, "INSERT"),
            (writes.update, "UPDATE"),
            (writes.delete, "DELETE"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, event)| event)
        .collect();
        vec![
            self.schema_not_writable_step(),
            create,
            Step::plain(format!(
                "ALTER FUNCTION {function}() OWNER TO {}",
                quote_ident(&writer_role(self.login))
            )),
            Step::plain(format!("REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")),
            Step::plain(format!(
                "CREATE TRIGGER maschera_write INSTEAD OF {} ON {} FOR EACH ROW EXECUTE FUNCTION {function}()",
                events.join(" OR "),
                self.view()
            )),
        ]
    }
}

/// Rewrites each `x IN (SELECT k FROM t WHERE cond)` of a filter (at the top level or under AND) into a
/// correlated probe of one row, `COALESCE((SELECT true FROM t AS maschera_probe WHERE maschera_probe.k =
/// <table>.x AND (cond) LIMIT 1), false)`, which PostgreSQL runs as an index probe per row where an `IN`
/// in a policy would be a hashed subplan over every row of `t` it selects. Anything else is left as it is.
pub fn probe_filter(filter: &str, table: &TableName) -> String {
    let Ok(mut expr) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(filter)
        .and_then(|mut p| p.parse_expr())
    else {
        return filter.to_string();
    };
    rewrite_probes(&mut expr, table);
    expr.to_string()
}

fn rewrite_probes(expr: &mut Expr, table: &TableName) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            rewrite_probes(left, table);
            rewrite_probes(right, table);
        }
        Expr::Nested(inner) => rewrite_probes(inner, table),
        Expr::InSubquery {
            expr: outer,
            subquery,
            negated: false,
        } => {
            if let Some(probe) = probe_of(outer, subquery, table) {
                *expr = probe;
            }
        }
        _ => {}
    }
}

fn probe_of(outer: &Expr, subquery: &sqlparser::ast::Query, table: &TableName) -> Option<Expr> {
    let Expr::Identifier(outer_column) = outer else {
        return None;
    };
    if subquery.with.is_some()
        || subquery.order_by.is_some()
        || subquery.limit_clause.is_some()
        || subquery.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Select(select) = subquery.body.as_ref() else {
        return None;
    };
    if select.distinct.is_some()
        || select.having.is_some()
        || !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        || select.from.len() != 1
        || !select.from[0].joins.is_empty()
        || select.projection.len() != 1
    {
        return None;
    }
    let SelectItem::UnnamedExpr(Expr::Identifier(key)) = &select.projection[0] else {
        return None;
    };
    let TableFactor::Table {
        name, alias: None, ..
    } = &select.from[0].relation
    else {
        return None;
    };
    let inner_name = match name.0.last()? {
        ObjectNamePart::Identifier(ident) => ident.value.clone(),
        _ => return None,
    };
    let selection = select.selection.as_ref().map(|s| s.to_string());
    // With the probe aliased, `t.col` inside the selection would name the outer table: keep such filters.
    if selection
        .as_deref()
        .is_some_and(|s| s.contains(&format!("{inner_name}.")))
    {
        return None;
    }
    let outer_ref = format!(
        "{}.{}",
        quote_ident(&table.name),
        Ident::with_quote('"', outer_column.value.clone())
    );
    let condition = match selection {
        Some(s) => format!(" AND ({s})"),
        None => String::new(),
    };
    let probe = format!(
        "COALESCE((SELECT true FROM {name} AS {PROBE_ALIAS} WHERE {PROBE_ALIAS}.{key} = {outer_ref}{condition} LIMIT 1), false)"
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&probe)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::new("public", name)
    }

    #[test]
    fn in_subqueries_become_correlated_probes_of_one_row() {
        assert_eq!(
            probe_filter(
                "contact_id IN (SELECT id FROM contacts WHERE region = (SELECT 'x'))",
                &t("interactions")
            ),
            "COALESCE((SELECT true FROM contacts AS maschera_probe WHERE maschera_probe.id = \
             \"interactions\".\"contact_id\" AND (region = (SELECT 'x')) LIMIT 1), false)"
        );
        assert_eq!(
            probe_filter(
                "contact_id IN (SELECT contact_id FROM consents WHERE purpose = 'm') AND x = 1",
                &t("consents")
            ),
            "COALESCE((SELECT true FROM consents AS maschera_probe WHERE maschera_probe.contact_id = \
             \"consents\".\"contact_id\" AND (purpose = 'm') LIMIT 1), false) AND x = 1"
        );
        for kept in [
            "region = 'north'",
            "contact_id NOT IN (SELECT id FROM contacts)",
            "contact_id IN (SELECT id FROM contacts c JOIN x ON true)",
            "contact_id IN (SELECT DISTINCT id FROM contacts)",
            "contact_id IN (SELECT id FROM consents WHERE consents.purpose = 'm')",
            "a OR contact_id IN (SELECT id FROM contacts)",
        ] {
            assert_eq!(probe_filter(kept, &t("consents")), kept);
        }
    }

    #[test]
    fn the_guard_is_filled_in_at_apply_time_and_percent_signs_survive_format() {
        let step = formatted("SELECT '50%' WHERE f({value})", "SELECT '1, 2'");
        assert_eq!(
            step.sql,
            "DO $maschera_do$ BEGIN EXECUTE pg_catalog.format('SELECT ''50%%'' WHERE f(%1$s)', (SELECT '1, 2')); END $maschera_do$"
        );
    }
}
