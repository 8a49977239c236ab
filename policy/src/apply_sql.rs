//! The SQL that `maschera policy apply` runs, as pure functions of the policy, the compiled role access and
//! the state of the live database: the key table, one login, one owner role and one schema of views per
//! restricted role (their objects: `db_lock`), the grants, and the removal of what the policy no longer
//! names. Secrets (keys, login passwords) never enter the text: steps carry a marker that the executor
//! binds or fills in.
//! Not for: running it (the proxy's `policy_apply` does, in one transaction).

use crate::access::{Catalog, RoleAccess, TableAccess, TableName, UnlistedTables, ViewAccess};
pub use crate::column_sql::column_expression;
use crate::db_lock;
use crate::model::{OBJECT_PREFIX, PRIVATE_SCHEMA, Policy, Role, prefixed_login};
pub use crate::step::{PASSWORD_MARKER, Secret, Step, quote_ident, quote_literal};
use std::collections::{BTreeMap, BTreeSet};

/// Comments on logins and schemas that `policy apply` manages start with this; only such objects are
/// ever altered or dropped.
pub const MANAGED_MARK: &str = "maschera policy:";

/// What the database already has, as far as `policy apply` cares.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub catalog: Catalog,
    /// Sequences that each table's column defaults call (`nextval`), needed for inserts.
    pub sequences: BTreeMap<TableName, Vec<TableName>>,
    /// Each table's primary key columns (write triggers find the row to update or delete by them).
    pub primary_keys: BTreeMap<TableName, Vec<String>>,
    /// Existing roles whose name starts with the login prefix, and whether `policy apply` made them
    /// for this database (comment, see [`login_managed_here`]).
    pub logins: BTreeMap<String, bool>,
    /// Existing schemas whose name starts with `maschera_`, and whether `policy apply` made them.
    pub schemas: BTreeMap<String, bool>,
    /// The database the policy is applied to (its logins get CONNECT on it).
    pub database: String,
    /// The prefix of the policy's logins in this database (empty: `maschera_`). Logins are
    /// cluster-wide, so each served database of one cluster has its own.
    pub login_prefix: String,
    /// The attributes each existing login and owner role has now, as `CREATE ROLE` keywords
    /// (`LOGIN`, `NOINHERIT`, `NOSUPERUSER`, ...): a re-apply sets only those that differ, since a
    /// non-superuser with CREATEROLE may not even name SUPERUSER, REPLICATION or BYPASSRLS. A role
    /// missing here gets all of them.
    pub role_attributes: BTreeMap<String, BTreeSet<String>>,
    /// The role that owns the database's tables (the most of them): the schemas, the key table and
    /// the function `policy apply` creates are given to it, and it is made a member of the owner
    /// roles, so that schema changes it runs (through the proxy, whose admin login it is) can drop
    /// and rebuild them. `None`: they stay with the user who creates them.
    pub objects_owner: Option<String>,
}

impl LiveState {
    /// The login of `role` in this database.
    pub fn login(&self, role: &Role) -> String {
        prefixed_login(&self.login_prefix, &role.name)
    }

    /// `ALTER <kind> <object> OWNER TO <objects owner>` (a no-op when it owns it already).
    fn give_to_objects_owner(&self, kind: &str, object: &str) -> Option<Step> {
        self.objects_owner.as_ref().map(|owner| {
            Step::plain(format!(
                "ALTER {kind} {object} OWNER TO {}",
                quote_ident(owner)
            ))
        })
    }

    /// `ALTER ROLE` of an existing role with the `attributes` (keywords separated by spaces) it does
    /// not have yet; `None` when it has them all.
    fn alter_attributes(&self, role: &str, attributes: &str) -> Option<Step> {
        let current = self.role_attributes.get(role);
        let missing: Vec<&str> = attributes
            .split_whitespace()
            .filter(|a| !current.is_some_and(|c| c.contains(*a)))
            .collect();
        (!missing.is_empty()).then(|| {
            Step::plain(format!(
                "ALTER ROLE {} {}",
                quote_ident(role),
                missing.join(" ")
            ))
        })
    }
}

/// The start of the comment `policy apply` puts on a login it makes for `database`.
fn login_comment_head(database: &str) -> String {
    format!("{MANAGED_MARK} database {}:", quote_ident(database))
}

/// Whether a login with this comment was made by `policy apply` for `database`: its comment names
/// that database, or it is a login of an earlier version whose comment names none (it is then
/// taken as this database's, and named in it on this apply). A login another database's apply made
/// is never altered or dropped.
pub fn login_managed_here(comment: &str, database: &str) -> bool {
    let Some(rest) = comment.strip_prefix(MANAGED_MARK) else {
        return false;
    };
    comment.starts_with(&login_comment_head(database))
        || !rest.trim_start().starts_with("database ")
}

/// How keys and passwords are handled on this run.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The pseudonym key comes from the configuration: replace the stored one (else keep it, or create one).
    pub pseudonym_key_configured: bool,
    /// `--rotate`: a new key for the attributes' seals (else the stored one is kept, or made).
    pub rotate_attribute_key: bool,
}

fn qualified(name: &TableName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

/// The `SELECT` a role's view of `table` is made of: the column expressions, then the row filter
/// (names in the filter resolve under [`search_path_step`]), then the order of a view with keyed
/// columns ([`crate::pseudonym::keyed_order`]). `maschera dump` runs it too.
pub fn view_select(
    table: &TableName,
    access: &ViewAccess,
    filter: Option<&str>,
    catalog: &Catalog,
) -> String {
    let select = select_list(table, access, catalog);
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), qualified(table));
    if let Some(filter) = filter {
        sql.push_str(&format!(" WHERE ({filter})"));
    }
    sql.push_str(&crate::pseudonym::keyed_order(access).unwrap_or_default());
    sql
}

/// The column expressions of a role's view of `table`, each `AS` its column (dropped ones left out).
pub fn select_list(table: &TableName, access: &ViewAccess, catalog: &Catalog) -> Vec<String> {
    let types: BTreeMap<&str, &str> = catalog
        .tables
        .get(table)
        .map(|cols| {
            cols.iter()
                .map(|c| (c.name.as_str(), c.data_type.as_str()))
                .collect()
        })
        .unwrap_or_default();
    access
        .columns
        .iter()
        .filter_map(|c| {
            column_expression(
                table,
                &c.name,
                types.get(c.name.as_str()).copied().unwrap_or("text"),
                &c.action,
            )
        })
        .collect()
}

/// The SQL of the row filter `role` has on `table`, if any.
pub fn role_filter<'p>(policy: &Policy, role: &'p Role, table: &TableName) -> Option<&'p str> {
    policy
        .table_by_name(table)
        .and_then(|t| role.rules.get(&t.key))
        .and_then(|r| r.filter.as_ref())
        .map(|f| f.sql.as_str())
}

/// Every statement of `policy apply`, in order, to run in one transaction. Fails when an object the
/// policy needs exists but was not made by `policy apply` (it is never taken over).
pub fn apply_steps(
    policy: &Policy,
    access: &BTreeMap<String, RoleAccess>,
    live: &LiveState,
    options: &ApplyOptions,
) -> Result<Vec<Step>, String> {
    let schemas = table_schemas(&live.catalog);
    let mut steps = vec![search_path_step(&schemas)];

    let mut wanted_logins: BTreeSet<String> =
        policy.restricted_roles().map(|r| live.login(r)).collect();
    for role in policy.restricted_roles() {
        let login = live.login(role);
        for owner in [db_lock::owner_role(&login), db_lock::writer_role(&login)] {
            if !wanted_logins.insert(owner.clone()) {
                return Err(format!(
                    "`{owner}` is both a login and the owner or writer role of policy role {}; rename one of the roles",
                    role.name
                ));
            }
        }
    }
    let wanted_schemas: BTreeSet<String> = policy.restricted_roles().map(Role::login).collect();
    let taken = |wanted: &BTreeSet<String>, objects: &BTreeMap<String, bool>| {
        objects
            .iter()
            .find(|(name, managed)| wanted.contains(*name) && !**managed)
            .map(|(name, _)| name.clone())
    };
    let taken = taken(&wanted_logins, &live.logins).or(taken(&wanted_schemas, &live.schemas));
    if let Some(name) = taken {
        return Err(format!(
            "`{name}` already exists and was not created by maschera policy apply for database `{}`; \
             rename or drop it, or give this database another --login-prefix",
            live.database
        ));
    }
    let stale = |wanted: &BTreeSet<String>, name: &String, managed: bool| {
        managed
            && !wanted.contains(name)
            && name != PRIVATE_SCHEMA
            && name != db_lock::LOOKUP_SCHEMA
    };
    // Every schema of views goes first, in consecutive statements, before anything else takes an
    // exclusive lock: a restricted session locks its views before the tables and the key table under
    // them, so an apply that held one of those while it waited for a view could deadlock with it
    // (and PostgreSQL may then cancel the session's statement rather than the apply).
    let stale_schemas: Vec<&String> = live
        .schemas
        .iter()
        .filter(|(s, managed)| stale(&wanted_schemas, s, **managed))
        .map(|(schema, _)| schema)
        .collect();
    steps.extend(drop_views_steps_and(policy, &stale_schemas));
    for (login, _) in live
        .logins
        .iter()
        .filter(|(l, managed)| stale(&wanted_logins, l, **managed))
    {
        let who = quote_ident(login);
        // DROP OWNED needs the privileges of the role (a non-superuser with CREATEROLE gets them).
        steps.push(Step::plain(format!("GRANT {who} TO CURRENT_USER")));
        steps.push(Step::plain(format!("DROP OWNED BY {who}")));
        steps.push(Step::plain(format!("DROP ROLE {who}")));
    }
    steps.extend(private_key_steps(options, live));
    for role in policy.restricted_roles() {
        if access.contains_key(&role.name) {
            steps.extend(login_steps(role, live));
            steps.extend(owner_role_steps(role, live));
        }
    }
    steps.extend(compiled_objects_steps(policy, access, live, &schemas));
    Ok(steps)
}

/// The owner role of a restricted role's views (NOLOGIN; see `db_lock`), and its writer role.
fn owner_role_steps(role: &Role, live: &LiveState) -> Vec<Step> {
    let login = live.login(role);
    let owner = db_lock::owner_role(&login);
    let who = quote_ident(&owner);
    let mut steps = nologin_role_steps(
        live,
        &owner,
        "NOINHERIT",
        &format!("owner of the views of policy role {}", role.name),
    );
    steps.push(Step::plain(format!(
        "GRANT USAGE ON SCHEMA {PRIVATE_SCHEMA} TO {who}"
    )));
    steps.push(Step::plain(format!(
        "GRANT SELECT ON {PRIVATE_SCHEMA}.keys TO {who}"
    )));
    // The writer role (`db_lock::writer_role`) has the owner role's rights and policies.
    let writer = db_lock::writer_role(&login);
    steps.extend(nologin_role_steps(
        live,
        &writer,
        "INHERIT",
        &format!(
            "writer (owner of the write triggers) of policy role {}",
            role.name
        ),
    ));
    steps.push(Step::plain(format!(
        "GRANT {who} TO {}",
        quote_ident(&writer)
    )));
    steps
}

/// A NOLOGIN role `name` made by the apply (`inherit`: `INHERIT` or `NOINHERIT`), described as `what`,
/// that the applying user (and the tables' owner) is a member of: they hand it objects (ALTER ...
/// OWNER needs membership), the tables' owner when a schema change makes the proxy rebuild them.
fn nologin_role_steps(live: &LiveState, name: &str, inherit: &str, what: &str) -> Vec<Step> {
    let who = quote_ident(name);
    let attributes =
        format!("NOLOGIN {inherit} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS");
    let mut steps = Vec::new();
    if live.logins.contains_key(name) {
        steps.extend(live.alter_attributes(name, &attributes));
    } else {
        steps.push(Step::plain(format!("CREATE ROLE {who} {attributes}")));
    }
    steps.push(Step::plain(format!(
        "COMMENT ON ROLE {who} IS {}",
        quote_literal(&format!("{} {what}", login_comment_head(&live.database)))
    )));
    steps.push(Step::plain(format!("GRANT {who} TO CURRENT_USER")));
    if let Some(objects_owner) = &live.objects_owner {
        steps.push(Step::plain(format!(
            "GRANT {who} TO {}",
            quote_ident(objects_owner)
        )));
    }
    steps
}

/// The lookup schema, row-level security with each role's filter, and every restricted role's schema of
/// views (after [`db_lock::drop_row_security_steps`]; the logins and owner roles exist).
fn compiled_objects_steps(
    policy: &Policy,
    access: &BTreeMap<String, RoleAccess>,
    live: &LiveState,
    schemas: &[String],
) -> Vec<Step> {
    let roles: Vec<(&Role, &RoleAccess)> = policy
        .restricted_roles()
        .filter_map(|role| access.get(&role.name).map(|a| (role, a)))
        .collect();
    let owners: Vec<String> = roles
        .iter()
        .map(|(role, _)| db_lock::owner_role(&live.login(role)))
        .collect();
    let logins: Vec<String> = roles.iter().map(|(role, _)| live.login(role)).collect();
    // The policies below call it.
    let grantees: Vec<String> = logins.iter().chain(&owners).cloned().collect();
    let mut steps = crate::attribute_seal::function_steps(&grantees);
    steps.extend(db_lock::lookup_steps(&live.catalog, schemas, &owners));
    steps.extend(live.give_to_objects_owner("SCHEMA", db_lock::LOOKUP_SCHEMA));
    // Filters resolve the tables they read in the lookup schema first.
    let mut lookup_first = vec![db_lock::LOOKUP_SCHEMA.to_string()];
    lookup_first.extend(schemas.iter().cloned());
    steps.push(search_path_step(&lookup_first));
    let filtered: BTreeSet<&TableName> = roles
        .iter()
        .flat_map(|(role, role_access)| {
            role_access
                .tables
                .keys()
                .filter(|t| role_filter(policy, role, t).is_some())
        })
        .collect();
    for table in filtered {
        steps.extend(db_lock::enable_row_security_steps(table));
    }
    for (role, role_access) in &roles {
        for table in role_access.tables.keys() {
            if let Some(filter) = role_filter(policy, role, table) {
                steps.push(db_lock::filter_policy_step(
                    &role.login(),
                    &live.login(role),
                    table,
                    filter,
                ));
            }
        }
    }
    steps.push(search_path_step(schemas));
    steps.extend(db_lock::intact_function_steps(&logins));
    steps.extend(crate::write_back::function_steps(&logins));
    // Owned by the tables' owner, so that it can replace them in a later apply.
    for function in [
        format!("{}(oid, oid, xid, oid)", db_lock::INTACT_FUNCTION),
        format!("{}(oid, oid, xid, oid)", db_lock::WRITE_GUARD_FUNCTION),
        format!(
            "{}(anyelement, anyelement, text)",
            crate::write_back::WRITE_BACK_FUNCTION
        ),
        // SECURITY DEFINER: it reads the key as its owner.
        format!("{}(text)", crate::attribute_seal::ATTRIBUTE_FUNCTION),
    ] {
        steps.extend(live.give_to_objects_owner("FUNCTION", &function));
    }
    for (role, role_access) in &roles {
        steps.extend(role_schema_steps(policy, role, role_access, live, schemas));
    }
    steps
}

/// The schemas of the catalog's tables, `public` first.
pub fn table_schemas(catalog: &Catalog) -> Vec<String> {
    let mut schemas: Vec<String> = vec!["public".into()];
    for table in catalog.tables.keys() {
        if !schemas.contains(&table.schema) {
            schemas.push(table.schema.clone());
        }
    }
    schemas
}

/// Row filters name tables unqualified: they resolve in the tables' schemas, never in a caller's.
pub fn search_path_step(schemas: &[String]) -> Step {
    let search_path: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
    Step::plain(format!(
        "SET LOCAL search_path TO pg_catalog, {}",
        search_path.join(", ")
    ))
}

/// The settings every session of role `role`'s login runs with. `policy apply` makes them the
/// login's defaults (for a DBA's own connections as the login), and the proxy sends them in the
/// startup packet of each session it opens as the login, where they override any default the login
/// was given since: a login may `ALTER ROLE CURRENT_USER SET` its own, and the proxy reads each
/// statement as PostgreSQL will only with standard strings and UTF-8, and resolves its names only
/// with the role's schema of views first. Each value reads the same in `ALTER ROLE ... SET` and in
/// a startup packet (the schema's name quoted as an identifier).
pub fn login_settings(role: &str) -> [(&'static str, String); 5] {
    [
        ("search_path", quote_ident(&crate::model::login_name(role))),
        // Correlated filter probes make cost estimates high; compiling such plans costs more than
        // it saves.
        ("jit", "off".to_string()),
        ("standard_conforming_strings", "on".to_string()),
        ("client_encoding", "UTF8".to_string()),
        ("row_security", "on".to_string()),
    ]
}

/// Settings of each login that only a superuser may give (`PGC_SUSET`: the login cannot change them
/// back, and the proxy cannot pin them in a startup packet). `track_activities` off: every user of a
/// role shares its login, and `pg_stat_activity` shows a login the statement text of each session
/// of the same login, literals included (a sales user of the north would read the south's e-mail
/// addresses in its colleagues' statements). The apply gives them when it runs as a superuser; else a
/// superuser gives them once (`ALTER ROLE <login> SET track_activities = off`), and the applies of a
/// non-superuser keep them (its `RESET ALL` leaves superuser-only settings).
pub const SUPERUSER_LOGIN_SETTINGS: &[(&str, &str)] = &[("track_activities", "off")];

/// Drops every restricted role's views (run before a schema change that views depend on, such as
/// `ALTER TABLE ... DROP COLUMN`, in the same transaction; then [`recreate_views_steps`]).
/// The first step takes [`objects_lock_step`].
pub fn drop_views_steps(policy: &Policy) -> Vec<Step> {
    drop_views_steps_and(policy, &[])
}

/// [`drop_views_steps`], dropping the schemas `stale` as well, before any table is locked.
fn drop_views_steps_and(policy: &Policy, stale: &[&String]) -> Vec<Step> {
    let mut steps = vec![objects_lock_step()];
    let schemas = policy
        .restricted_roles()
        .map(|role| role.login())
        .chain(stale.iter().map(|schema| schema.to_string()));
    steps.extend(schemas.map(|schema| {
        Step::plain(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&schema)
        ))
    }));
    steps.extend(db_lock::drop_row_security_steps());
    steps
}

/// A transaction-level advisory lock, so that the applies, schema changes and rebuilds of one
/// database replace the compiled objects one after the other (two transactions that both drop and
/// recreate a schema would otherwise collide on its name). Taken again by the same transaction, it
/// is already held. Advisory locks have no privilege: a role's login used straight may hold this
/// one from an idle session, and the apply would wait for ever; held by a login `policy apply`
/// made, the step fails at once (55P03) naming the session and the `pg_terminate_backend` that
/// ends it (attack round 5).
fn objects_lock_step() -> Step {
    Step::plain(format!(
        "DO $maschera_do$ DECLARE holder record; BEGIN \
         SELECT l.pid, r.rolname INTO holder FROM pg_catalog.pg_locks l \
         JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid \
         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.usesysid \
         WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted AND l.objsubid OPERATOR(pg_catalog.=) 1 \
         AND ((l.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) OPERATOR(pg_catalog.|) l.objid::pg_catalog.int8) \
         OPERATOR(pg_catalog.=) pg_catalog.hashtext('maschera policy objects')::pg_catalog.int8 \
         AND pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE {} LIMIT 1; \
         IF FOUND THEN RAISE EXCEPTION USING ERRCODE = '55P03', MESSAGE = pg_catalog.format(\
         'the lock of maschera''s objects is held by session %s of login %s (a role''s login used straight \
         may take it): end it with SELECT pg_terminate_backend(%s), then run this again', \
         holder.pid, holder.rolname, holder.pid); END IF; \
         PERFORM {OBJECTS_LOCK}; END $maschera_do$",
        quote_literal(&format!("{MANAGED_MARK}%"))
    ))
}

/// The call that takes the objects' lock (see [`objects_lock_step`]) for the rest of a transaction:
/// also what a reader of the compiled objects takes before it checks them, so that it never sees a
/// schema change's recompilation half done.
pub const OBJECTS_LOCK: &str =
    "pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('maschera policy objects'))";

/// Recreates every restricted role's views and grants from the current catalog (after a schema change;
/// the logins and the key table already exist).
pub fn recreate_views_steps(
    policy: &Policy,
    access: &BTreeMap<String, RoleAccess>,
    live: &LiveState,
) -> Vec<Step> {
    let schemas = table_schemas(&live.catalog);
    let mut steps = vec![objects_lock_step(), search_path_step(&schemas)];
    steps.extend(compiled_objects_steps(policy, access, live, &schemas));
    steps
}

fn private_key_steps(options: &ApplyOptions, live: &LiveState) -> Vec<Step> {
    let keep = "ON CONFLICT (name) DO NOTHING";
    let replace = "ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key";
    let insert = |name: &str, conflict: &str, secret: Secret| Step {
        sql: format!(
            "INSERT INTO {PRIVATE_SCHEMA}.keys (name, key) VALUES ('{name}', $1) {conflict}"
        ),
        secret: Some(secret),
    };
    let keys = format!("{PRIVATE_SCHEMA}.keys");
    let mut steps = vec![Step::plain(format!(
        "CREATE SCHEMA IF NOT EXISTS {PRIVATE_SCHEMA}"
    ))];
    steps.extend(live.give_to_objects_owner("SCHEMA", PRIVATE_SCHEMA));
    steps.extend([
        Step::plain(format!("REVOKE ALL ON SCHEMA {PRIVATE_SCHEMA} FROM PUBLIC")),
        Step::plain(format!(
            "COMMENT ON SCHEMA {PRIVATE_SCHEMA} IS '{MANAGED_MARK} pseudonym key and hash salt, readable by the owner only'"
        )),
        Step::plain(format!(
            "CREATE TABLE IF NOT EXISTS {keys} (name text PRIMARY KEY, key bytea NOT NULL)"
        )),
    ]);
    steps.extend(live.give_to_objects_owner("TABLE", &keys));
    steps.extend([
        Step::plain(format!("REVOKE ALL ON {keys} FROM PUBLIC")),
        insert(
            "pseudonym",
            if options.pseudonym_key_configured {
                replace
            } else {
                keep
            },
            Secret::PseudonymKey,
        ),
        insert("hash", keep, Secret::HashSalt),
    ]);
    // The seals' key: made once, rotated with `--rotate` (the one before stays valid for the
    // sessions opened before it).
    let (keep_previous, store) = crate::attribute_seal::key_steps(options.rotate_attribute_key);
    steps.extend(keep_previous.map(Step::plain));
    steps.push(Step {
        sql: store,
        secret: Some(Secret::AttributeKey),
    });
    steps
}

fn login_steps(role: &Role, live: &LiveState) -> Vec<Step> {
    let login = live.login(role);
    let who = quote_ident(&login);
    let mut steps = Vec::new();
    let attributes =
        "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
    let with_password = |sql: String| Step {
        sql,
        secret: Some(Secret::LoginPassword(login.clone())),
    };
    if !live.logins.contains_key(&login) {
        steps.push(with_password(format!(
            "CREATE ROLE {who} {attributes} PASSWORD {PASSWORD_MARKER}"
        )));
    } else {
        steps.extend(live.alter_attributes(&login, attributes));
        // Every apply, a new password or the kept one: a login may change its own password straight
        // on PostgreSQL, which locks the proxy out of the role; an apply is the repair.
        steps.push(with_password(format!(
            "ALTER ROLE {who} PASSWORD {PASSWORD_MARKER}"
        )));
    }
    let about = role.description.as_deref().unwrap_or("");
    steps.push(Step::plain(format!(
        "COMMENT ON ROLE {who} IS {}",
        quote_literal(
            format!(
                "{} login of policy role {} {about}",
                login_comment_head(&live.database),
                role.name
            )
            .trim_end()
        )
    )));
    // A login may ALTER ROLE itself (PostgreSQL lets any role set its own session defaults), and the
    // proxy's sessions of the role would run with them (standard_conforming_strings off makes a
    // literal read differently): each apply drops whatever defaults it did not set itself
    // (the proxy also pins the settings below in each session's startup packet).
    steps.push(Step::plain(format!("ALTER ROLE {who} RESET ALL")));
    if !live.database.is_empty() {
        steps.push(Step::plain(format!(
            "ALTER ROLE {who} IN DATABASE {} RESET ALL",
            quote_ident(&live.database)
        )));
    }
    for (name, value) in login_settings(&role.name) {
        steps.push(Step::plain(format!(
            "ALTER ROLE {who} SET {name} TO {value}"
        )));
    }
    for (name, value) in SUPERUSER_LOGIN_SETTINGS {
        steps.push(Step::plain(format!(
            "DO $maschera_do$ BEGIN IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) \
             THEN ALTER ROLE {who} SET {name} TO {value}; END IF; END $maschera_do$"
        )));
    }
    if !live.database.is_empty() {
        steps.push(Step::plain(format!(
            "GRANT CONNECT ON DATABASE {} TO {who}",
            quote_ident(&live.database)
        )));
    }
    steps
}

fn role_schema_steps(
    policy: &Policy,
    role: &Role,
    access: &RoleAccess,
    live: &LiveState,
    schemas: &[String],
) -> Vec<Step> {
    let login = live.login(role);
    let who = quote_ident(&login);
    let own = quote_ident(&role.login());
    let owner = quote_ident(&db_lock::owner_role(&login));
    let writer = quote_ident(&db_lock::writer_role(&login));
    let mut steps = Vec::new();
    // Nothing direct on base tables: whatever was granted before goes, then only what the policy gives.
    // Table by table, on those whose owner's privileges the user has (`REVOKE ALL ON ALL TABLES IN
    // SCHEMA` fails for a non-superuser as soon as the schema holds one table it has no right on).
    for schema in schemas {
        steps.push(Step::plain(format!(
            "DO $maschera_do$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::pg_catalog.regclass AS name,              CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind FROM pg_catalog.pg_class c              WHERE c.relnamespace = {}::pg_catalog.regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')              AND pg_catalog.pg_has_role(c.relowner, 'USAGE') LOOP              EXECUTE pg_catalog.format('REVOKE ALL ON %s %s FROM %s, %s, %s', r.kind, r.name, {}, {}, {});              END LOOP; END $maschera_do$",
            quote_literal(&quote_ident(schema)),
            quote_literal(&who),
            quote_literal(&owner),
            quote_literal(&writer)
        )));
    }
    steps.push(Step::plain(format!("DROP SCHEMA IF EXISTS {own} CASCADE")));
    steps.push(Step::plain(format!("CREATE SCHEMA {own}")));
    steps.extend(live.give_to_objects_owner("SCHEMA", &own));
    steps.push(Step::plain(format!(
        "COMMENT ON SCHEMA {own} IS {}",
        quote_literal(&format!(
            "{MANAGED_MARK} views of policy role {}",
            role.name
        ))
    )));
    steps.push(Step::plain(format!(
        "REVOKE ALL ON SCHEMA {own} FROM PUBLIC"
    )));
    steps.push(Step::plain(format!("GRANT USAGE ON SCHEMA {own} TO {who}")));
    steps.push(Step::plain(format!(
        "GRANT USAGE, CREATE ON SCHEMA {own} TO {owner}"
    )));
    for (name, table_access) in &access.tables {
        let TableAccess::View(view) = table_access else {
            continue;
        };
        let plan = db_lock::ViewPlan {
            schema: &role.login(),
            login: &login,
            table: name,
            access: view,
            filtered: role_filter(policy, role, name).is_some(),
            catalog: &live.catalog,
            sequences: live.sequences.get(name).map(Vec::as_slice).unwrap_or(&[]),
            primary_key: live
                .primary_keys
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        };
        steps.extend(plan.steps());
    }
    steps.extend(crate::lookup_sql::steps(
        &access.lookups,
        &live.catalog,
        &role.login(),
        &login,
        |table| role_filter(policy, role, table).map(str::to_string),
        schemas,
    ));
    let privileges = match access.unlisted {
        UnlistedTables::Deny => None,
        UnlistedTables::Read => Some("SELECT"),
        UnlistedTables::Pass => Some("SELECT, INSERT, UPDATE, DELETE"),
    };
    if let Some(privileges) = privileges {
        for name in policy.unlisted_tables(&live.catalog) {
            if name.schema.starts_with(OBJECT_PREFIX) {
                continue;
            }
            steps.push(Step::plain(format!(
                "GRANT {privileges} ON {} TO {who}",
                qualified(name)
            )));
            if access.unlisted == UnlistedTables::Read {
                continue;
            }
            for sequence in live.sequences.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                steps.push(Step::plain(format!(
                    "GRANT USAGE ON SEQUENCE {} TO {who}",
                    qualified(sequence)
                )));
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Action, ColumnAccess, Writes};

    fn t() -> TableName {
        TableName::new("public", "contacts")
    }

    fn catalog() -> Catalog {
        crate::access::catalog_of(&[(
            "contacts",
            &[("id", "bigint"), ("email", "text"), ("region", "text")],
        )])
    }

    fn view_access(writes: Writes) -> ViewAccess {
        let column = |name: &str, action: Action| ColumnAccess {
            name: name.into(),
            category: None,
            writable: action.is_show() && (writes.insert || writes.update),
            action,
        };
        ViewAccess {
            view: "contacts".into(),
            columns: vec![
                column("id", Action::Show),
                column("email", Action::MaskEmail),
                column("region", Action::Drop),
            ],
            filtered: true,
            writes,
        }
    }

    fn plan_steps(writes: Writes, filtered: bool) -> Vec<String> {
        let seq = [TableName::new("public", "contacts_id_seq")];
        let access = view_access(writes);
        let catalog = catalog();
        let plan = db_lock::ViewPlan {
            schema: "maschera_sales",
            login: "maschera_sales",
            table: &t(),
            access: &access,
            filtered,
            catalog: &catalog,
            sequences: &seq,
            primary_key: &["id".to_string()],
        };
        plan.steps().iter().map(Step::display).collect()
    }

    #[test]
    fn a_view_is_owned_by_the_owner_role_guarded_when_filtered_and_written_through_triggers() {
        let writes = Writes {
            insert: true,
            update: false,
            delete: true,
        };
        let sql = plan_steps(writes, true);
        assert!(
            sql[0].starts_with("DO $maschera_do$ BEGIN EXECUTE pg_catalog.format('CREATE VIEW \"maschera_sales\".\"contacts\" AS SELECT \"id\", CASE"),
            "{}",
            sql[0]
        );
        assert!(!sql[0].contains("security_barrier"), "flattenable");
        assert!(
            sql[0].contains("FROM \"public\".\"contacts\" WHERE maschera_private.intact(%1$s)"),
            "{}",
            sql[0]
        );
        assert!(
            !sql[0].contains("\"region\""),
            "dropped columns are not in the view"
        );
        for expected in [
            "ALTER VIEW \"maschera_sales\".\"contacts\" OWNER TO \"maschera_sales_owner\"",
            "GRANT SELECT ON \"public\".\"contacts\" TO \"maschera_sales_owner\"",
            "GRANT SELECT ON \"maschera_sales\".\"contacts\" TO \"maschera_sales\"",
            "GRANT INSERT (\"id\") ON \"public\".\"contacts\" TO \"maschera_sales_owner\"",
            "GRANT INSERT ON \"maschera_sales\".\"contacts\" TO \"maschera_sales\"",
            "GRANT USAGE ON SEQUENCE \"public\".\"contacts_id_seq\" TO \"maschera_sales\", \"maschera_sales_owner\"",
            "GRANT DELETE ON \"maschera_sales\".\"contacts\" TO \"maschera_sales\"",
            "CREATE TRIGGER maschera_write INSTEAD OF INSERT OR DELETE ON \"maschera_sales\".\"contacts\" FOR EACH ROW EXECUTE FUNCTION \"maschera_sales\".\"maschera_write_contacts\"()",
        ] {
            assert!(
                sql.contains(&expected.to_string()),
                "missing {expected}\n{sql:#?}"
            );
        }
        assert!(!sql.iter().any(|s| s.contains("GRANT UPDATE")));
        // The trigger's guard is a function of its own (one search_path per function: no re-planning),
        // inside each statement on the base table (a one-time filter per statement), never in
        // a PL/pgSQL expression of its own (whose cached plan nothing would invalidate).
        let trigger = sql.iter().find(|s| s.contains("RETURNS trigger")).unwrap();
        for expected in [
            "SELECT NEW.\"id\" WHERE maschera_private.intact_write(%1$s) RETURNING",
            "IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = ''42501'', MESSAGE = ''the database objects",
            "WHERE t.\"id\" = OLD.\"id\" AND maschera_private.intact_write(%1$s);",
        ] {
            assert!(trigger.contains(expected), "{expected}\n{trigger}");
        }
        assert!(!trigger.contains("IF NOT (maschera_private"), "{trigger}");
        assert!(!trigger.contains("maschera_private.intact("), "{trigger}");
        let read_only = plan_steps(Writes::default(), false);
        assert_eq!(
            read_only[0],
            "CREATE VIEW \"maschera_sales\".\"contacts\" AS SELECT \"id\", CASE WHEN \"email\" IS NULL THEN NULL WHEN \"email\"::text = '' THEN '' WHEN strpos(\"email\"::text, '@') > 1 THEN left(\"email\"::text, 1) || '***' || substr(\"email\"::text, strpos(\"email\"::text, '@')) ELSE '***' END AS \"email\" FROM \"public\".\"contacts\""
        );
        assert!(!read_only.iter().any(|s| s.contains("TRIGGER")));
    }

    const POLICY: &str = "[tables.contacts.columns]\nemail = \"contact\"\n[roles.sales.tables.contacts]\n\
                          columns = { email = \"pseudonym\" }\n[roles.dpo]\nunrestricted = true\n";

    fn plan(live: &LiveState, options: &ApplyOptions) -> Result<Vec<Step>, String> {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let access = policy.compile(&live.catalog).unwrap();
        apply_steps(&policy, &access, live, options)
    }

    #[test]
    fn apply_creates_logins_and_removes_only_what_it_made() {
        let mut live = LiveState {
            catalog: catalog(),
            ..Default::default()
        };
        live.database = "crm".into();
        live.logins.insert("maschera_old".into(), true);
        live.logins.insert("maschera_admin".into(), false);
        live.schemas.insert("maschera_old".into(), true);
        live.schemas.insert("maschera_private".into(), true);
        let steps = plan(&live, &ApplyOptions::default()).unwrap();
        let sql: Vec<String> = steps.iter().map(Step::display).collect();
        assert_eq!(sql[0], "SET LOCAL search_path TO pg_catalog, \"public\"");
        for expected in [
            "DROP SCHEMA IF EXISTS \"maschera_old\" CASCADE",
            "DROP OWNED BY \"maschera_old\"",
            "DROP ROLE \"maschera_old\"",
            "CREATE ROLE \"maschera_sales\" LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             PASSWORD '<generated, written to the credentials file>'",
            "ALTER ROLE \"maschera_sales\" SET search_path TO \"maschera_sales\"",
            "GRANT CONNECT ON DATABASE \"crm\" TO \"maschera_sales\"",
            "INSERT INTO maschera_private.keys (name, key) VALUES ('pseudonym', '<pseudonym key, not shown>') \
             ON CONFLICT (name) DO NOTHING",
        ] {
            assert!(
                sql.contains(&expected.to_string()),
                "missing {expected}\n{sql:#?}"
            );
        }
        assert!(
            !sql.iter().any(|s| s.contains("maschera_admin")),
            "a login maschera did not make is left alone"
        );
        assert!(sql.iter().any(|s| s.contains(
            "WHERE c.relnamespace = '\"public\"'::pg_catalog.regnamespace"
        ) && s.contains(
            "'REVOKE ALL ON %s %s FROM %s, %s, %s', r.kind, r.name, '\"maschera_sales\"', '\"maschera_sales_owner\"', '\"maschera_sales_writer\"'"
        )), "the rights of the login and its owner and writer roles on base tables go\n{sql:#?}");
        assert!(
            !sql.iter()
                .any(|s| s.contains("DROP SCHEMA IF EXISTS maschera_private"))
        );
        assert!(
            !sql.iter().any(|s| s.contains("maschera_dpo")),
            "unrestricted roles get no login"
        );
        let keys = steps
            .iter()
            .filter(|s| s.secret == Some(Secret::PseudonymKey))
            .collect::<Vec<_>>();
        assert_eq!(keys.len(), 1);
        assert!(
            keys[0].sql.contains("VALUES ('pseudonym', $1)"),
            "the key is bound, never in the text"
        );
    }

    #[test]
    fn reapply_sets_the_kept_password_again_and_a_configured_key_replaces_the_stored_one() {
        let mut live = LiveState {
            catalog: catalog(),
            ..Default::default()
        };
        live.logins.insert("maschera_sales".into(), true);
        live.schemas.insert("maschera_sales".into(), true);
        let steps = plan(&live, &ApplyOptions::default()).unwrap();
        assert!(steps.iter().any(|s| {
            s.sql
                .starts_with("ALTER ROLE \"maschera_sales\" LOGIN NOINHERIT")
        }));
        // The password (the credentials file's, kept or new: the caller decides) is set again on
        // every apply, which repairs one a login changed on itself.
        let password = steps
            .iter()
            .find(|s| s.secret == Some(Secret::LoginPassword("maschera_sales".into())))
            .unwrap();
        assert_eq!(
            password.sql,
            format!("ALTER ROLE \"maschera_sales\" PASSWORD {PASSWORD_MARKER}")
        );
        let options = ApplyOptions {
            pseudonym_key_configured: true,
            rotate_attribute_key: false,
        };
        let steps = plan(&live, &options).unwrap();
        assert!(steps.iter().any(|s| {
            s.sql
                .contains("ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key")
        }));
    }

    #[test]
    fn reapply_sets_only_the_attributes_that_differ_and_gives_the_objects_to_the_tables_owner() {
        let mut live = LiveState {
            catalog: catalog(),
            database: "crm".into(),
            objects_owner: Some("app".into()),
            ..Default::default()
        };
        let keywords = |list: &str| list.split_whitespace().map(str::to_owned).collect();
        for (role, attributes) in [
            (
                "maschera_sales",
                "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            ),
            (
                "maschera_sales_owner",
                "NOLOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            ),
        ] {
            live.logins.insert(role.into(), true);
            live.role_attributes
                .insert(role.into(), keywords(attributes));
        }
        let sql: Vec<String> = plan(&live, &ApplyOptions::default())
            .unwrap()
            .iter()
            .map(Step::display)
            .collect();
        let alters: Vec<&String> = sql
            .iter()
            .filter(|s| {
                s.starts_with("ALTER ROLE")
                    && !s.contains(" SET ")
                    && !s.contains(" PASSWORD ")
                    && !s.ends_with(" RESET ALL")
            })
            .collect();
        // A non-superuser may not name NOSUPERUSER, NOREPLICATION or NOBYPASSRLS: only what differs.
        assert_eq!(alters, ["ALTER ROLE \"maschera_sales_owner\" NOINHERIT"]);
        // The session defaults a login may have set on itself are dropped on every apply.
        for reset in [
            "ALTER ROLE \"maschera_sales\" RESET ALL",
            "ALTER ROLE \"maschera_sales\" IN DATABASE \"crm\" RESET ALL",
        ] {
            assert!(sql.contains(&reset.to_owned()), "missing {reset}\n{sql:#?}");
        }
        for expected in [
            "ALTER SCHEMA maschera_private OWNER TO \"app\"",
            "ALTER TABLE maschera_private.keys OWNER TO \"app\"",
            "ALTER SCHEMA maschera_lookup OWNER TO \"app\"",
            "ALTER FUNCTION maschera_private.intact(oid, oid, xid, oid) OWNER TO \"app\"",
            "ALTER SCHEMA \"maschera_sales\" OWNER TO \"app\"",
            "GRANT \"maschera_sales_owner\" TO \"app\"",
        ] {
            assert!(
                sql.contains(&expected.to_string()),
                "missing {expected}\n{sql:#?}"
            );
        }
    }

    #[test]
    fn views_can_be_dropped_and_recreated_around_a_schema_change() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let live = LiveState {
            catalog: catalog(),
            ..Default::default()
        };
        let access = policy.compile(&live.catalog).unwrap();
        let drop: Vec<String> = drop_views_steps(&policy)
            .iter()
            .map(Step::display)
            .collect();
        assert!(drop[0].contains("pg_advisory_xact_lock"), "{drop:?}");
        assert_eq!(drop[1], "DROP SCHEMA IF EXISTS \"maschera_sales\" CASCADE");
        assert!(drop[2].contains("DROP POLICY"), "{drop:?}");
        assert_eq!(drop[3], "DROP SCHEMA IF EXISTS maschera_lookup CASCADE");
        let create = recreate_views_steps(&policy, &access, &live);
        assert!(create.iter().all(|s| s.secret.is_none()));
        assert!(create.iter().any(|s| {
            s.sql
                .starts_with("CREATE VIEW \"maschera_sales\".\"contacts\"")
        }));
        assert!(
            !create
                .iter()
                .any(|s| s.sql.contains("CREATE ROLE") || s.sql.contains("ALTER ROLE")),
            "logins are left as they are"
        );
    }

    #[test]
    fn apply_never_takes_over_an_object_it_did_not_make() {
        let mut live = LiveState {
            catalog: catalog(),
            ..Default::default()
        };
        live.logins.insert("maschera_sales".into(), false);
        let err = plan(&live, &ApplyOptions::default()).unwrap_err();
        assert!(
            err.contains("`maschera_sales` already exists and was not created by maschera"),
            "{err}"
        );
    }

    #[test]
    fn a_login_prefix_names_the_logins_and_leaves_other_databases_logins_alone() {
        let mut live = LiveState {
            catalog: catalog(),
            database: "crm2".into(),
            login_prefix: "maschera_crm2_".into(),
            ..Default::default()
        };
        // Read by prefix `maschera_crm2_`; one of them was made for another database.
        live.logins.insert("maschera_crm2_old".into(), true);
        live.logins.insert("maschera_crm2_other".into(), false);
        live.schemas.insert("maschera_sales".into(), true);
        let sql: Vec<String> = plan(&live, &ApplyOptions::default())
            .unwrap()
            .iter()
            .map(Step::display)
            .collect();
        for expected in [
            "DROP ROLE \"maschera_crm2_old\"",
            "COMMENT ON ROLE \"maschera_crm2_sales\" IS 'maschera policy: database \"crm2\": login of policy role sales'",
            "ALTER ROLE \"maschera_crm2_sales\" SET search_path TO \"maschera_sales\"",
            "GRANT CONNECT ON DATABASE \"crm2\" TO \"maschera_crm2_sales\"",
            "CREATE SCHEMA \"maschera_sales\"",
            "GRANT USAGE ON SCHEMA \"maschera_sales\" TO \"maschera_crm2_sales\"",
            "GRANT SELECT ON \"maschera_sales\".\"contacts\" TO \"maschera_crm2_sales\"",
        ] {
            assert!(
                sql.contains(&expected.to_string()),
                "missing {expected}\n{sql:#?}"
            );
        }
        assert!(
            sql.iter()
                .any(|s| s.starts_with("CREATE ROLE \"maschera_crm2_sales\""))
        );
        assert!(!sql.iter().any(|s| s.contains("maschera_crm2_other")));
        assert!(
            !sql.iter()
                .any(|s| s.contains("DROP SCHEMA IF EXISTS \"maschera_sales\" CASCADE\""))
        );
    }

    #[test]
    fn a_login_belongs_to_the_database_its_comment_names() {
        let ours = "maschera policy: database \"crm\": login of policy role sales";
        assert!(login_managed_here(ours, "crm"));
        assert!(!login_managed_here(ours, "crm2"));
        assert!(!login_managed_here(ours, "cr"));
        // Made by an earlier version (no database named): this database's, named on this apply.
        assert!(login_managed_here(
            "maschera policy: login of policy role sales",
            "crm2"
        ));
        assert!(!login_managed_here("made by hand", "crm"));
    }
}
