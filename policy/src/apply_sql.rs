//! The SQL that `maschera policy apply` runs, as pure functions of the policy, the compiled role access and
//! the state of the live database: the key table, one login and one schema of `security_barrier` views per
//! restricted role, the grants, and the removal of what the policy no longer names. Secrets (keys, login
//! passwords) never enter the text: steps carry a marker that the executor binds or fills in.
//! Not for: running it (the proxy's `policy_apply` does, in one transaction).

use crate::access::{
    Action, Catalog, ColumnAccess, RoleAccess, TableAccess, TableName, UnlistedTables, ViewAccess,
};
use crate::model::{OBJECT_PREFIX, PRIVATE_SCHEMA, Policy, Role};
use std::collections::{BTreeMap, BTreeSet};

/// Comments on logins and schemas that `policy apply` manages start with this; only such objects are
/// ever altered or dropped.
pub const MANAGED_MARK: &str = "maschera policy:";
/// The marker in a step's SQL where the executor puts the login's password (as a SCRAM verifier literal).
pub const PASSWORD_MARKER: &str = "{password}";

/// What the database already has, as far as `policy apply` cares.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub catalog: Catalog,
    /// Sequences that each table's column defaults call (`nextval`), needed for inserts.
    pub sequences: BTreeMap<TableName, Vec<TableName>>,
    /// Existing roles whose name starts with `maschera_`, and whether `policy apply` made them (comment).
    pub logins: BTreeMap<String, bool>,
    /// Existing schemas whose name starts with `maschera_`, and whether `policy apply` made them.
    pub schemas: BTreeMap<String, bool>,
}

/// A secret a step needs; the executor supplies it (bound as `$1`, or put in place of [`PASSWORD_MARKER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `$1` is the pseudonym key (bytea).
    PseudonymKey,
    /// `$1` is the hash salt (bytea).
    HashSalt,
    /// [`PASSWORD_MARKER`] is the password of this login.
    LoginPassword(String),
}

/// One statement of the apply transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sql: String,
    pub secret: Option<Secret>,
}

impl Step {
    fn plain(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            secret: None,
        }
    }

    /// The statement as `--dry-run` prints it: secrets replaced by a placeholder.
    pub fn display(&self) -> String {
        match &self.secret {
            None => self.sql.clone(),
            Some(Secret::PseudonymKey) => self.sql.replace("$1", "'<pseudonym key, not shown>'"),
            Some(Secret::HashSalt) => self.sql.replace("$1", "'<hash salt, not shown>'"),
            Some(Secret::LoginPassword(_)) => self.sql.replace(
                PASSWORD_MARKER,
                "'<generated, written to the credentials file>'",
            ),
        }
    }
}

/// How keys and passwords are handled on this run.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The pseudonym key comes from the configuration: replace the stored one (else keep it, or create one).
    pub pseudonym_key_configured: bool,
    /// Logins whose password must be (re)set: new logins, `--rotate`, or ones the credentials file lacks.
    pub set_password: BTreeSet<String>,
}

/// Quotes an identifier for SQL (`"name"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (`'text'`), with standard-conforming strings.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn qualified(name: &TableName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

fn key_read(name: &str) -> String {
    format!("(SELECT key FROM {PRIVATE_SCHEMA}.keys WHERE name = '{name}')")
}

/// The SQL expression a view uses for a column under `action`; `None` for `Drop`.
pub fn column_expression(
    table: &TableName,
    column: &str,
    data_type: &str,
    action: &Action,
) -> Option<String> {
    let c = quote_ident(column);
    let text = format!("{c}::text");
    let expr = match action {
        Action::Drop => return None,
        Action::Show => return Some(c),
        Action::Null => format!("NULL::{data_type}"),
        Action::Constant(literal) => format!("CAST({literal} AS {data_type})"),
        Action::MaskEmail => format!(
            "CASE WHEN {c} IS NULL THEN NULL WHEN strpos({text}, '@') > 1 \
             THEN left({text}, 1) || '***' || substr({text}, strpos({text}, '@')) ELSE '***' END"
        ),
        Action::MaskLast(n) => {
            format!("repeat('*', greatest(length({text}) - {n}, 0)) || right({text}, {n})")
        }
        Action::MaskFirst(n) => {
            format!("left({text}, {n}) || repeat('*', greatest(length({text}) - {n}, 0))")
        }
        Action::MaskInitial => format!("left({text}, 1) || '.'"),
        Action::Partial {
            prefix,
            padding,
            suffix,
        } => {
            let pad = quote_literal(padding);
            format!(
                "CASE WHEN {c} IS NULL THEN NULL WHEN length({text}) > {} \
                 THEN left({text}, {prefix}) || {pad} || right({text}, {suffix}) ELSE {pad} END",
                prefix + suffix
            )
        }
        Action::Hash => {
            let scope = quote_literal(&format!("{}.{}.{}:", table.schema, table.name, column));
            format!(
                "encode(sha256({} || convert_to({scope} || {text}, 'UTF8')), 'hex')",
                key_read("hash")
            )
        }
        Action::Pseudonym => format!(
            "encode(sha256({} || convert_to({text}, 'UTF8')), 'hex')",
            key_read("pseudonym")
        ),
        Action::Year => format!("CAST(date_trunc('year', {c}) AS {data_type})"),
        Action::Month => format!("CAST(date_trunc('month', {c}) AS {data_type})"),
        Action::Bucket(width) => {
            format!("CAST(floor({c}::numeric / {width}) * {width} AS {data_type})")
        }
    };
    Some(format!("{expr} AS {c}"))
}

/// `CREATE VIEW` and its grants for one table of one restricted role.
pub fn view_steps(
    login: &str,
    table: &TableName,
    access: &ViewAccess,
    filter: Option<&str>,
    catalog: &Catalog,
    sequences: &[TableName],
) -> Vec<Step> {
    let types: BTreeMap<&str, &str> = catalog
        .tables
        .get(table)
        .map(|cols| {
            cols.iter()
                .map(|c| (c.name.as_str(), c.data_type.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let select: Vec<String> = access
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
        .collect();
    let view = format!("{}.{}", quote_ident(login), quote_ident(&access.view));
    let writes_through_filter = filter.is_some() && (access.writes.insert || access.writes.update);
    let options = if writes_through_filter {
        "security_barrier = true, check_option = cascaded"
    } else {
        "security_barrier = true"
    };
    let mut sql = format!(
        "CREATE VIEW {view} WITH ({options}) AS SELECT {} FROM {}",
        select.join(", "),
        qualified(table)
    );
    if let Some(filter) = filter {
        sql.push_str(&format!(" WHERE ({filter})"));
    }
    let who = quote_ident(login);
    let mut steps = vec![
        Step::plain(sql),
        Step::plain(format!("GRANT SELECT ON {view} TO {who}")),
    ];
    let writable: Vec<String> = access
        .columns
        .iter()
        .filter(|c: &&ColumnAccess| c.writable)
        .map(|c| quote_ident(&c.name))
        .collect();
    if access.writes.insert && !writable.is_empty() {
        steps.push(Step::plain(format!(
            "GRANT INSERT ({}) ON {view} TO {who}",
            writable.join(", ")
        )));
        for sequence in sequences {
            steps.push(Step::plain(format!(
                "GRANT USAGE ON SEQUENCE {} TO {who}",
                qualified(sequence)
            )));
        }
    }
    if access.writes.update && !writable.is_empty() {
        steps.push(Step::plain(format!(
            "GRANT UPDATE ({}) ON {view} TO {who}",
            writable.join(", ")
        )));
    }
    if access.writes.delete {
        steps.push(Step::plain(format!("GRANT DELETE ON {view} TO {who}")));
    }
    steps
}

/// Every statement of `policy apply`, in order, to run in one transaction. Fails when an object the
/// policy needs exists but was not made by `policy apply` (it is never taken over).
pub fn apply_steps(
    policy: &Policy,
    access: &BTreeMap<String, RoleAccess>,
    live: &LiveState,
    options: &ApplyOptions,
) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut schemas: Vec<String> = vec!["public".into()];
    for table in live.catalog.tables.keys() {
        if !schemas.contains(&table.schema) {
            schemas.push(table.schema.clone());
        }
    }
    let search_path: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
    steps.push(Step::plain(format!(
        "SET LOCAL search_path TO pg_catalog, {}",
        search_path.join(", ")
    )));
    steps.extend(private_key_steps(options));

    let wanted: BTreeSet<String> = policy.restricted_roles().map(Role::login).collect();
    for (login, managed) in live.logins.iter().chain(live.schemas.iter()) {
        if wanted.contains(login) && !managed {
            return Err(format!(
                "`{login}` already exists and was not created by maschera policy apply; rename or drop it"
            ));
        }
    }
    let stale =
        |name: &String, managed: bool| managed && !wanted.contains(name) && name != PRIVATE_SCHEMA;
    for (schema, _) in live
        .schemas
        .iter()
        .filter(|(s, managed)| stale(s, **managed))
    {
        steps.push(Step::plain(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        )));
    }
    for (login, _) in live
        .logins
        .iter()
        .filter(|(l, managed)| stale(l, **managed))
    {
        let who = quote_ident(login);
        steps.push(Step::plain(format!("DROP OWNED BY {who}")));
        steps.push(Step::plain(format!("DROP ROLE {who}")));
    }
    for role in policy.restricted_roles() {
        let Some(role_access) = access.get(&role.name) else {
            continue;
        };
        steps.extend(login_steps(role, live, options));
        steps.extend(role_schema_steps(policy, role, role_access, live, &schemas));
    }
    Ok(steps)
}

fn private_key_steps(options: &ApplyOptions) -> Vec<Step> {
    let keep = "ON CONFLICT (name) DO NOTHING";
    let replace = "ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key";
    let insert = |name: &str, conflict: &str, secret: Secret| Step {
        sql: format!(
            "INSERT INTO {PRIVATE_SCHEMA}.keys (name, key) VALUES ('{name}', $1) {conflict}"
        ),
        secret: Some(secret),
    };
    vec![
        Step::plain(format!("CREATE SCHEMA IF NOT EXISTS {PRIVATE_SCHEMA}")),
        Step::plain(format!("REVOKE ALL ON SCHEMA {PRIVATE_SCHEMA} FROM PUBLIC")),
        Step::plain(format!(
            "COMMENT ON SCHEMA {PRIVATE_SCHEMA} IS '{MANAGED_MARK} pseudonym key and hash salt, readable by the owner only'"
        )),
        Step::plain(format!(
            "CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.keys (name text PRIMARY KEY, key bytea NOT NULL)"
        )),
        Step::plain(format!("REVOKE ALL ON {PRIVATE_SCHEMA}.keys FROM PUBLIC")),
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
    ]
}

fn login_steps(role: &Role, live: &LiveState, options: &ApplyOptions) -> Vec<Step> {
    let login = role.login();
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
        steps.push(Step::plain(format!("ALTER ROLE {who} {attributes}")));
        if options.set_password.contains(&login) {
            steps.push(with_password(format!(
                "ALTER ROLE {who} PASSWORD {PASSWORD_MARKER}"
            )));
        }
    }
    let about = role.description.as_deref().unwrap_or("");
    steps.push(Step::plain(format!(
        "COMMENT ON ROLE {who} IS {}",
        quote_literal(
            format!("{MANAGED_MARK} login of policy role {} {about}", role.name).trim_end()
        )
    )));
    steps.push(Step::plain(format!(
        "ALTER ROLE {who} SET search_path TO {who}"
    )));
    steps
}

fn role_schema_steps(
    policy: &Policy,
    role: &Role,
    access: &RoleAccess,
    live: &LiveState,
    schemas: &[String],
) -> Vec<Step> {
    let login = role.login();
    let who = quote_ident(&login);
    let mut steps = Vec::new();
    // Nothing direct on base tables: whatever was granted before goes, then only what the policy gives.
    for schema in schemas {
        let s = quote_ident(schema);
        steps.push(Step::plain(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {who}"
        )));
        steps.push(Step::plain(format!(
            "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {who}"
        )));
    }
    steps.push(Step::plain(format!("DROP SCHEMA IF EXISTS {who} CASCADE")));
    steps.push(Step::plain(format!("CREATE SCHEMA {who}")));
    steps.push(Step::plain(format!(
        "COMMENT ON SCHEMA {who} IS {}",
        quote_literal(&format!(
            "{MANAGED_MARK} views of policy role {}",
            role.name
        ))
    )));
    steps.push(Step::plain(format!(
        "REVOKE ALL ON SCHEMA {who} FROM PUBLIC"
    )));
    steps.push(Step::plain(format!("GRANT USAGE ON SCHEMA {who} TO {who}")));
    for (name, table_access) in &access.tables {
        let TableAccess::View(view) = table_access else {
            continue;
        };
        let filter = policy
            .table_by_name(name)
            .and_then(|t| role.rules.get(&t.key))
            .and_then(|r| r.filter.as_ref())
            .map(|f| f.sql.as_str());
        let sequences = live.sequences.get(name).map(Vec::as_slice).unwrap_or(&[]);
        steps.extend(view_steps(
            &login,
            name,
            view,
            filter,
            &live.catalog,
            sequences,
        ));
    }
    if access.unlisted == UnlistedTables::Pass {
        for name in policy.unlisted_tables(&live.catalog) {
            if name.schema.starts_with(OBJECT_PREFIX) {
                continue;
            }
            steps.push(Step::plain(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {who}",
                qualified(name)
            )));
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
