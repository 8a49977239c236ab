//! The database side of `maschera policy`: reads the live catalog and the objects Maschera manages, asks
//! PostgreSQL whether each row filter is valid, and applies a policy (`apply_policy`): the apply steps in
//! one transaction with the secrets bound (never in the SQL text), then the credentials file. Not for: deciding what to create (the policy crate's
//! `apply_sql` does) or the command line (see `policy_cmd`).

use crate::admin::credentials::{Credentials, Login, generate_password};
use anyhow::{Context, Result, bail};
use policy::Diagnostic;
use policy::access::{Action, Catalog, TableName};
use policy::apply_sql::{
    ApplyOptions, LiveState, MANAGED_MARK, PASSWORD_MARKER, Secret, Step, apply_steps,
    login_managed_here, quote_ident, quote_literal,
};
use policy::model::{OBJECT_PREFIX, Policy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio_postgres::Client;

/// Connects to the upstream database (`sslmode` honoured, see `admin_connect`).
pub use crate::admin::admin_connect::connect;

/// The user tables and views of the database (read by `crate::admin::catalog`), without Maschera's own
/// `maschera_*` schemas, and with the session's search path.
pub async fn read_catalog(client: &Client) -> Result<Catalog> {
    let search_path: Vec<String> = client
        .query_one("SELECT current_schemas(false)::text[]", &[])
        .await
        .context("reading search_path")?
        .get(0);
    let mut catalog = crate::admin::catalog::load(client, &search_path)
        .await
        .context("reading the catalog")?;
    catalog
        .tables
        .retain(|name, _| !name.schema.starts_with(OBJECT_PREFIX));
    // The rewriter finds lookup rows by their key (see `policy::lookup_sql`).
    catalog.primary_keys = read_primary_keys(client).await?;
    Ok(catalog)
}

/// The catalog plus the sequences column defaults use (identity columns' included) and the `maschera_*` logins and schemas.
pub async fn read_live_state(client: &Client) -> Result<LiveState> {
    read_live_state_for(client, "").await
}

/// [`read_live_state`] for the logins of `login_prefix` (empty: `maschera_`): the logins whose name
/// starts with it, each marked managed only when `policy apply` made it for this database.
pub async fn read_live_state_for(client: &Client, login_prefix: &str) -> Result<LiveState> {
    let catalog = read_catalog(client).await?;
    let mut sequences: BTreeMap<TableName, Vec<TableName>> = BTreeMap::new();
    let rows = client
        .query(
            "SELECT DISTINCT tn.nspname::text, t.relname::text, sn.nspname::text, s.relname::text
               FROM pg_attrdef d
               JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                                 AND dep.refclassid = 'pg_class'::regclass
               JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
               JOIN pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_class t ON t.oid = d.adrelid
               JOIN pg_namespace tn ON tn.oid = t.relnamespace
             UNION
             SELECT tn.nspname::text, t.relname::text, sn.nspname::text, s.relname::text
               FROM pg_depend dep
               JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
               JOIN pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_class t ON t.oid = dep.refobjid
               JOIN pg_namespace tn ON tn.oid = t.relnamespace
              WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
                AND dep.deptype = 'i'
              ORDER BY 1, 2, 3, 4",
            &[],
        )
        .await
        .context("reading the sequences of column defaults")?;
    for row in rows {
        sequences
            .entry(TableName::new(
                row.get::<_, String>(0),
                row.get::<_, String>(1),
            ))
            .or_default()
            .push(TableName::new(
                row.get::<_, String>(2),
                row.get::<_, String>(3),
            ));
    }
    let primary_keys = catalog.primary_keys.clone();
    let database: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .context("reading the database name")?
        .get(0);
    let marked = |rows: Vec<tokio_postgres::Row>, managed: &dyn Fn(&str) -> bool| {
        rows.into_iter()
            .map(|r| {
                let comment: Option<String> = r.get(1);
                (r.get(0), comment.is_some_and(|c| managed(&c)))
            })
            .collect::<BTreeMap<String, bool>>()
    };
    let like = |prefix: &str| {
        let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%");
        format!("{}%", escaped.replace('_', "\\_"))
    };
    let prefix = match login_prefix {
        "" => OBJECT_PREFIX,
        prefix => prefix,
    };
    let logins = marked(
        client
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname LIKE $1",
                &[&like(prefix)],
            )
            .await
            .context("reading existing logins")?,
        &|comment| login_managed_here(comment, &database),
    );
    let pattern = like(OBJECT_PREFIX);
    let schemas = marked(
        client
            .query(
                "SELECT nspname::text, obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname LIKE $1",
                &[&pattern],
            )
            .await
            .context("reading existing schemas")?,
        &|comment| comment.starts_with(MANAGED_MARK),
    );
    let role_attributes = client
        .query(
            "SELECT rolname::text, ARRAY[
                    CASE WHEN rolcanlogin THEN 'LOGIN' ELSE 'NOLOGIN' END,
                    CASE WHEN rolinherit THEN 'INHERIT' ELSE 'NOINHERIT' END,
                    CASE WHEN rolsuper THEN 'SUPERUSER' ELSE 'NOSUPERUSER' END,
                    CASE WHEN rolcreatedb THEN 'CREATEDB' ELSE 'NOCREATEDB' END,
                    CASE WHEN rolcreaterole THEN 'CREATEROLE' ELSE 'NOCREATEROLE' END,
                    CASE WHEN rolreplication THEN 'REPLICATION' ELSE 'NOREPLICATION' END,
                    CASE WHEN rolbypassrls THEN 'BYPASSRLS' ELSE 'NOBYPASSRLS' END]::text[]
               FROM pg_roles WHERE rolname LIKE $1",
            &[&like(prefix)],
        )
        .await
        .context("reading the attributes of existing logins")?
        .into_iter()
        .map(|row| {
            (
                row.get(0),
                row.get::<_, Vec<String>>(1).into_iter().collect(),
            )
        })
        .collect();
    let objects_owner = client
        .query_opt(
            "SELECT pg_catalog.pg_get_userbyid(c.relowner)::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE $1
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
              GROUP BY c.relowner ORDER BY count(*) DESC, 1 LIMIT 1",
            &[&pattern],
        )
        .await
        .context("reading the owner of the tables")?
        .map(|row| row.get(0));
    Ok(LiveState {
        login_prefix: login_prefix.to_owned(),
        database,
        catalog,
        sequences,
        primary_keys,
        logins,
        schemas,
        role_attributes,
        objects_owner,
    })
}

/// Each table's primary key columns, in key order.
async fn read_primary_keys(client: &Client) -> Result<BTreeMap<TableName, Vec<String>>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
              WHERE i.indisprimary
              ORDER BY 1, 2, k.position",
            &[],
        )
        .await
        .context("reading primary keys")?;
    let mut keys: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    for row in rows {
        keys.entry(TableName::new(
            row.get::<_, String>(0),
            row.get::<_, String>(1),
        ))
        .or_default()
        .push(row.get(2));
    }
    Ok(keys)
}

/// Why PostgreSQL refuses `sql`, if it does. Only for statements that change nothing (EXPLAIN, SELECT).
async fn refusal(client: &Client, sql: &str) -> Option<String> {
    let err = client.batch_execute(sql).await.err()?;
    Some(
        err.as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| err.to_string()),
    )
}

/// Asks PostgreSQL whether each compiled row filter is valid on its table (`EXPLAIN`, nothing runs) and
/// whether each `constant(...)` converts to its column's type; each refusal becomes a diagnostic at the
/// filter or the action in the file.
pub async fn check_filters(
    client: &Client,
    policy: &Policy,
    catalog: &Catalog,
) -> Result<Vec<Diagnostic>> {
    let mut out = Vec::new();
    for role in policy.roles.values() {
        for rule in role.rules.values() {
            let Some(table) = policy.tables.get(&rule.table) else {
                continue;
            };
            let Some(columns) = catalog.tables.get(&table.name) else {
                continue;
            };
            if let Some(filter) = &rule.filter {
                let sql = format!(
                    "EXPLAIN SELECT 1 FROM {}.{} WHERE ({})",
                    quote_ident(&table.name.schema),
                    quote_ident(&table.name.name),
                    policy::attribute_seal::unsealed_for_check(&filter.sql)
                );
                if let Some(reason) = refusal(client, &sql).await {
                    out.push(policy.error_at(
                        &rule.filter_span,
                        format!("row filter of role `{}` on `{}` is refused by PostgreSQL: {reason}", role.name, table.key),
                        Some("the filter must be a boolean expression over the table's columns".into()),
                    ));
                }
            }
            for (column, (action, span)) in &rule.actions {
                let (Action::Constant(literal), Some(live)) =
                    (action, columns.iter().find(|c| &c.name == column))
                else {
                    continue;
                };
                if let Some(reason) = refusal(
                    client,
                    &format!("SELECT CAST({literal} AS {})", live.data_type),
                )
                .await
                {
                    out.push(policy.error_at(
                        span,
                        format!(
                            "constant {literal} does not fit column `{column}` (`{}`): {reason}",
                            live.data_type
                        ),
                        Some(format!("write a literal of type {}", live.data_type)),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Every problem of the policy against the live database: `Policy::check_against` and the row filters.
pub async fn check_live(
    client: &Client,
    policy: &Policy,
    catalog: &Catalog,
) -> Result<Vec<Diagnostic>> {
    let mut diagnostics = policy.check_against(catalog);
    diagnostics.extend(check_filters(client, policy, catalog).await?);
    Ok(diagnostics)
}

/// What `apply_policy` should do.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// The credentials file: read for passwords to keep, written after the commit.
    pub credentials: PathBuf,
    /// Give every login a new password.
    pub rotate: bool,
    /// A configured pseudonym key (replaces the stored one); `None` keeps the stored key or makes one.
    pub pseudonym_key: Option<Vec<u8>>,
    /// Only return the statements (secrets replaced by placeholders); change nothing.
    pub dry_run: bool,
}

/// A login prefix must make plain identifiers (lower-case letters, digits, `_`, not starting with a
/// digit) short enough for every role of `policy` (PostgreSQL cuts names at 63 bytes).
pub fn check_login_prefix(prefix: &str, policy: &Policy) -> Result<()> {
    let plain = prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !prefix.starts_with(|c: char| c.is_ascii_digit());
    if !plain {
        bail!(
            "login prefix {prefix:?} must be lower-case letters, digits and _ (not starting with a digit)"
        );
    }
    if let Some(role) = policy
        .restricted_roles()
        .find(|r| prefix.len() + r.name.len() > 63)
    {
        bail!(
            "login prefix {prefix:?} makes the login of role `{}` longer than PostgreSQL's 63 bytes",
            role.name
        );
    }
    Ok(())
}

/// What `apply_policy` did.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The policy does not fit the database; nothing was changed.
    Invalid(Vec<Diagnostic>),
    DryRun {
        statements: Vec<String>,
        warnings: Vec<Diagnostic>,
    },
    Applied {
        statements: usize,
        warnings: Vec<Diagnostic>,
        credentials: Credentials,
    },
}

/// `maschera policy apply` as a library call (the demo uses it too): checks the policy against the live
/// database, compiles it, runs the apply steps in one transaction and writes the credentials file.
pub async fn apply_policy(
    client: &mut Client,
    policy: &Policy,
    request: &ApplyRequest,
) -> Result<ApplyOutcome> {
    apply_policy_for(client, policy, request, "").await
}

/// [`apply_policy`] with the role logins named `<login_prefix><role>` (empty: `maschera_<role>`),
/// for a database that shares its PostgreSQL cluster with another one Maschera serves.
pub async fn apply_policy_for(
    client: &mut Client,
    policy: &Policy,
    request: &ApplyRequest,
    login_prefix: &str,
) -> Result<ApplyOutcome> {
    check_login_prefix(login_prefix, policy)?;
    let live = read_live_state_for(client, login_prefix).await?;
    if !request.dry_run {
        crate::admin::apply_privileges::check(client, policy, &live.catalog).await?;
    }
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        check_live(client, policy, &live.catalog)
            .await?
            .into_iter()
            .partition(Diagnostic::is_error);
    if !errors.is_empty() {
        return Ok(ApplyOutcome::Invalid(errors));
    }
    let access = match policy.compile(&live.catalog) {
        Ok(access) => access,
        Err(diagnostics) => return Ok(ApplyOutcome::Invalid(diagnostics.0)),
    };
    let mut credentials = Credentials::load(&request.credentials)?;
    let options = ApplyOptions {
        pseudonym_key_configured: request.pseudonym_key.is_some(),
        rotate_attribute_key: request.rotate,
    };
    credentials
        .logins
        .retain(|role, _| policy.restricted_roles().any(|r| &r.name == role));
    let mut passwords = BTreeMap::new();
    for role in policy.restricted_roles() {
        let login = live.login(role);
        let kept = credentials
            .login(&role.name)
            .filter(|l| l.user == login && !request.rotate)
            .cloned();
        let password = match kept {
            Some(existing) => existing.password,
            None => generate_password(),
        };
        passwords.insert(login.clone(), password.clone());
        credentials.logins.insert(
            role.name.clone(),
            Login {
                user: login,
                password,
            },
        );
    }
    let steps = apply_steps(policy, &access, &live, &options).map_err(anyhow::Error::msg)?;
    if request.dry_run {
        return Ok(ApplyOutcome::DryRun {
            statements: steps.iter().map(Step::display).collect(),
            warnings,
        });
    }
    let secrets = Secrets {
        pseudonym_key: request.pseudonym_key.clone().unwrap_or_else(random_key),
        hash_salt: random_key(),
        attribute_key: random_key(),
        passwords,
    };
    run_steps(client, &steps, &secrets).await?;
    let mut warnings = warnings;
    if let Some(open) = crate::admin::pool_guard::install(client).await? {
        let mut warning = policy::diagnostics::Source::new(&policy.file, &policy.text).error(
            0..0,
            open,
            Some("README \"Pooling\": what pins a session".into()),
        );
        warning.severity = policy::diagnostics::Severity::Warning;
        warnings.push(warning);
    }
    credentials.save(&request.credentials).with_context(|| {
        format!(
            "the policy is applied but the credentials file {} could not be written; apply again with --rotate",
            request.credentials.display()
        )
    })?;
    Ok(ApplyOutcome::Applied {
        statements: steps.len(),
        warnings,
        credentials,
    })
}

fn random_key() -> Vec<u8> {
    use rand::RngCore;
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// The secrets the apply steps need.
struct Secrets {
    pseudonym_key: Vec<u8>,
    hash_salt: Vec<u8>,
    /// A new key of the attributes' seals (stored when there is none, or with `--rotate`).
    attribute_key: Vec<u8>,
    /// Passwords by login name.
    passwords: BTreeMap<String, String>,
}

/// How long one apply waits for a table lock before it gives up and tries again, and how often.
/// Below PostgreSQL's `deadlock_timeout` (1 s by default): in a lock cycle with a session of the
/// application, the apply gives up first and tries again, rather than PostgreSQL cancelling the
/// session's statement; and the sessions queued behind the apply's lock wait at most this long.
const LOCK_TIMEOUT: &str = "500ms";
const LOCK_ATTEMPTS: u32 = 10;

/// Runs the steps in one transaction; on any error nothing is changed. Locks are taken with a
/// `lock_timeout` (a long query of the application holding a table must not queue every other session
/// behind the apply's AccessExclusiveLock); on a lock timeout or a deadlock the whole transaction is
/// tried again.
async fn run_steps(client: &mut Client, steps: &[Step], secrets: &Secrets) -> Result<()> {
    let mut attempt = 1;
    loop {
        match run_steps_once(client, steps, secrets).await {
            Err(StepError::LockTimeout(_)) if attempt < LOCK_ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    "policy apply: a table lock was not granted in time; trying again"
                );
                let pause = (500 * u64::from(attempt)).min(3_000);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                attempt += 1;
            }
            Err(StepError::LockTimeout(err)) => {
                return Err(err.context(format!(
                    "a table lock was not granted in {LOCK_ATTEMPTS} attempts: a long \
                     transaction of another session holds it; run the apply again when it ended"
                )));
            }
            Err(StepError::Other(err)) => return Err(err),
            Ok(()) => return Ok(()),
        }
    }
}

enum StepError {
    LockTimeout(anyhow::Error),
    Other(anyhow::Error),
}

impl From<tokio_postgres::Error> for StepError {
    fn from(err: tokio_postgres::Error) -> Self {
        StepError::Other(err.into())
    }
}

async fn run_steps_once(
    client: &mut Client,
    steps: &[Step],
    secrets: &Secrets,
) -> Result<(), StepError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    for step in steps {
        let result = match &step.secret {
            None => tx.batch_execute(&step.sql).await,
            Some(Secret::PseudonymKey) => tx
                .execute(&step.sql, &[&secrets.pseudonym_key])
                .await
                .map(|_| ()),
            Some(Secret::HashSalt) => tx
                .execute(&step.sql, &[&secrets.hash_salt])
                .await
                .map(|_| ()),
            Some(Secret::AttributeKey) => tx
                .execute(&step.sql, &[&secrets.attribute_key])
                .await
                .map(|_| ()),
            Some(Secret::LoginPassword(login)) => {
                let Some(password) = secrets.passwords.get(login) else {
                    return Err(StepError::Other(anyhow::anyhow!(
                        "no password prepared for login {login}"
                    )));
                };
                let verifier =
                    crate::net::scram::Verifier::stable_from_password(password, login).to_text();
                tx.batch_execute(&step.sql.replace(PASSWORD_MARKER, &quote_literal(&verifier)))
                    .await
            }
        };
        if let Err(err) = result {
            let reason = err
                .as_db_error()
                .map(|e| e.message().to_string())
                .unwrap_or_else(|| err.to_string());
            let help = crate::admin::apply_privileges::hint(&reason)
                .map(|hint| format!("\n  help: {hint}"))
                .unwrap_or_default();
            let failure = anyhow::anyhow!(
                "policy apply failed, nothing was changed: {reason}\n  in: {}{help}",
                step.display()
            );
            return Err(
                if err.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                    || err.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                {
                    StepError::LockTimeout(failure)
                } else {
                    StepError::Other(failure)
                },
            );
        }
    }
    tx.commit()
        .await
        .map_err(|e| StepError::Other(anyhow::Error::new(e).context("committing the policy")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_prefix_makes_plain_identifiers_that_fit() {
        let role = "a".repeat(40);
        let text = format!(
            "[tables.contacts.columns]\nemail = \"contact\"\n[roles.{role}.tables.contacts]\nshow = [\"email\"]\n"
        );
        let policy = Policy::parse("p.toml", &text).unwrap();
        assert!(check_login_prefix("", &policy).is_ok());
        assert!(check_login_prefix("maschera_crm2_", &policy).is_ok());
        for bad in ["Maschera_", "crm-2_", "2crm_", "crm2\"_", "crm 2_"] {
            let err = check_login_prefix(bad, &policy).unwrap_err().to_string();
            assert!(
                err.contains("lower-case letters, digits and _"),
                "{bad}: {err}"
            );
        }
        let long = "p".repeat(24);
        let err = check_login_prefix(&long, &policy).unwrap_err().to_string();
        assert!(err.contains("longer than PostgreSQL's 63 bytes"), "{err}");
    }
}
