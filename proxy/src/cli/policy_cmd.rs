//! `maschera policy check | apply | explain`: validate a policy file, install it into PostgreSQL as views,
//! logins and grants, and show what a statement becomes for a role. Not for: the policy's meaning (the
//! policy crate) or database I/O details (see `policy_apply`).

use crate::admin::login_check;
use crate::admin::policy_apply::{self, ApplyOutcome, ApplyRequest};
use crate::admin::policy_file::{load_policy, report};
use crate::cli::runtime::{Flavor, block_on};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use policy::access::{Catalog, RoleAccess};
use policy::rewrite::{Rewritten, TableRoute, TableUse, rewrite};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file (and, with --upstream, against the live database); exit status 1 on errors.
    Check {
        file: PathBuf,
        /// PostgreSQL URI of the database the policy is for: tables, columns and types must match it.
        #[arg(long, env = "MASCHERA_UPSTREAM")]
        upstream: Option<String>,
        /// With --upstream: the prefix of the role logins the policy was applied with (see `apply`).
        #[arg(long, default_value = "")]
        login_prefix: String,
    },
    /// Install the policy into the database in one transaction: per restricted role a login, an owner
    /// role, a schema of views, its row filters as row-level security and the write triggers; removes
    /// what the policy no longer names.
    Apply {
        file: PathBuf,
        /// PostgreSQL URI with rights to create roles, schemas and views (the tables' owner or a superuser).
        #[arg(long, env = "MASCHERA_UPSTREAM")]
        upstream: String,
        /// Print the SQL instead of running it (keys and passwords are not shown).
        #[arg(long)]
        dry_run: bool,
        /// Where the logins' passwords are kept (TOML, mode 0600); existing passwords are reused.
        #[arg(long, default_value = "maschera-logins.toml")]
        credentials: PathBuf,
        /// Give every login a new password.
        #[arg(long)]
        rotate: bool,
        /// Prefix of the role logins (default `maschera_`: `maschera_<role>`). Logins are shared by
        /// all databases of a PostgreSQL cluster: give each database served from one cluster its
        /// own prefix, e.g. `maschera_crm2_`, and the same as `login_prefix` in its `[databases.<name>]`.
        #[arg(long, default_value = "")]
        login_prefix: String,
        /// Name of the environment variable holding the pseudonym key (at least 16 characters). Without
        /// it, MASCHERA_PSEUDONYM_KEY if set, else the key stored in the database (generated once).
        #[arg(long)]
        key_env: Option<String>,
        #[command(flatten)]
        audit: crate::cli::lifecycle_cmd::AuditArgs,
    },
    /// Print the register of processing activities (GDPR Art. 30) the policy describes.
    Register {
        file: PathBuf,
        /// Output format: `md` (Markdown), `csv` or `json`.
        #[arg(long, default_value = "md", value_parser = ["md", "csv", "json"])]
        format: String,
    },
    /// Print what a statement becomes for a role, or why it is refused.
    Explain {
        file: PathBuf,
        /// The policy role, e.g. `sales`.
        #[arg(long)]
        role: String,
        /// PostgreSQL URI to read the live catalog from (else the catalog the policy declares).
        #[arg(long, env = "MASCHERA_UPSTREAM")]
        upstream: Option<String>,
        /// The SQL statement.
        sql: String,
    },
}

pub fn run(args: PolicyArgs) -> Result<ExitCode> {
    block_on(Flavor::CurrentThread, async {
        match args.command {
            PolicyCommand::Check {
                file,
                upstream,
                login_prefix,
            } => check(&file, upstream.as_deref(), &login_prefix).await,
            PolicyCommand::Apply {
                file,
                upstream,
                dry_run,
                credentials,
                rotate,
                login_prefix,
                key_env,
                audit,
            } => {
                // Opened before any change, so that a log that cannot be written stops the apply.
                let log = match dry_run {
                    true => None,
                    false => crate::ops::lifecycle::open_log(audit.audit_config.as_deref())?,
                };
                let request = ApplyRequest {
                    credentials,
                    rotate,
                    pseudonym_key: configured_key(key_env.as_deref())?,
                    dry_run,
                };
                apply(&file, &upstream, &request, &login_prefix, log).await
            }
            PolicyCommand::Register { file, format } => register(&file, &format),
            PolicyCommand::Explain {
                file,
                role,
                upstream,
                sql,
            } => explain(&file, &role, upstream.as_deref(), &sql).await,
        }
    })
}

async fn check(file: &Path, upstream: Option<&str>, login_prefix: &str) -> Result<ExitCode> {
    let Some(policy) = load_policy(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    // Art. 30 items the policy leaves out: warnings, the check still passes.
    report(&policy::controller::gaps(&policy));
    if let Some(url) = upstream {
        let client = policy_apply::connect(url).await?;
        let catalog = policy_apply::read_catalog(&client).await?;
        if report(&policy_apply::check_live(&client, &policy, &catalog).await?) {
            return Ok(ExitCode::FAILURE);
        }
        let mut failed = false;
        let live = policy_apply::read_live_state_for(&client, login_prefix).await?;
        for (role, objects) in
            crate::admin::compiled_objects::incomplete_roles(&client, &policy, &live).await?
        {
            if crate::admin::compiled_objects::is_applied(&client, &policy, &role).await? {
                failed = true;
                eprintln!(
                    "error: {}",
                    crate::admin::compiled_objects::incomplete_message(&role, &objects)
                );
            } else {
                eprintln!(
                    "note: policy role {role} is not applied to this database yet: run `maschera policy apply`"
                );
            }
        }
        for role in policy.restricted_roles() {
            let login = live.login(role);
            let rows = client
                .query(
                    "SELECT s.setdatabase <> 0, s.setconfig FROM pg_catalog.pg_db_role_setting s \
                     JOIN pg_catalog.pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1",
                    &[&login],
                )
                .await?;
            let (unexpected, missing) = login_check::settings_findings(&role.name, &login, &rows);
            if let Some(message) = unexpected {
                failed = true;
                eprintln!("error: {message}");
            }
            if let Some(message) = missing {
                eprintln!("warning: {message}");
            }
        }
        let tables: Vec<String> = catalog
            .tables
            .keys()
            .map(|t| {
                format!(
                    "{}.{}",
                    policy::step::quote_ident(&t.schema),
                    policy::step::quote_ident(&t.name)
                )
            })
            .collect();
        for warning in crate::admin::definer_triggers::warnings(&client, &tables).await? {
            eprintln!("warning: {warning}");
        }
        if failed {
            return Ok(ExitCode::FAILURE);
        }
    }
    println!(
        "{}: ok ({} roles, {} tables{})",
        file.display(),
        policy.roles.len(),
        policy.tables.len(),
        if upstream.is_some() {
            ", matches the database"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The pseudonym key to install: `Some` when configured (it replaces the stored one).
fn configured_key(key_env: Option<&str>) -> Result<Option<Vec<u8>>> {
    let var = key_env.unwrap_or("MASCHERA_PSEUDONYM_KEY");
    match std::env::var(var) {
        Ok(key) if key.len() >= 16 => Ok(Some(key.into_bytes())),
        Ok(_) => bail!("the pseudonym key in {var} is shorter than 16 characters"),
        Err(_) if key_env.is_some() => {
            bail!("environment variable {var} (from --key-env) is not set")
        }
        Err(_) => Ok(None),
    }
}

async fn apply(
    file: &Path,
    upstream: &str,
    request: &ApplyRequest,
    login_prefix: &str,
    log: Option<crate::audit::AuditLog>,
) -> Result<ExitCode> {
    let Some(policy) = load_policy(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let credentials_path = &request.credentials;
    let mut client = policy_apply::connect(upstream).await?;
    match policy_apply::apply_policy_for(&mut client, &policy, request, login_prefix).await? {
        ApplyOutcome::Invalid(diagnostics) => {
            report(&diagnostics);
            Ok(ExitCode::FAILURE)
        }
        ApplyOutcome::DryRun {
            statements,
            warnings,
        } => {
            report(&warnings);
            println!("BEGIN;");
            for statement in statements {
                println!("{statement};");
            }
            println!("COMMIT;");
            Ok(ExitCode::SUCCESS)
        }
        ApplyOutcome::Applied {
            statements,
            warnings,
            ..
        } => {
            report(&warnings);
            let restricted: Vec<&str> =
                policy.restricted_roles().map(|r| r.name.as_str()).collect();
            let summary = format!(
                "applied {}: {statements} statements, logins for {}",
                file.display(),
                restricted.join(", "),
            );
            println!("{summary}; credentials in {}", credentials_path.display());
            let kind = crate::audit::EventKind::PolicyApply;
            crate::ops::lifecycle::record(log, kind, statements as u64, summary, None).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn register(file: &Path, format: &str) -> Result<ExitCode> {
    let Some(policy) = load_policy(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let register = policy::register::register(&policy);
    match format {
        "csv" => print!("{}", register.to_csv()),
        "json" => println!("{}", serde_json::to_string_pretty(&register)?),
        _ => print!("{}", register.to_markdown()),
    }
    Ok(ExitCode::SUCCESS)
}

async fn explain(file: &Path, role: &str, upstream: Option<&str>, sql: &str) -> Result<ExitCode> {
    let Some(policy) = load_policy(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let catalog = match upstream {
        Some(url) => policy_apply::read_catalog(&policy_apply::connect(url).await?).await?,
        None => policy.derived_catalog(),
    };
    let Some(access) = policy.role_access_by_name(role, &catalog) else {
        let roles: Vec<&str> = policy.roles.keys().map(String::as_str).collect();
        bail!(
            "the policy has no role `{role}` ({})",
            policy::diagnostics::suggest(role, &roles, "roles")
        );
    };
    match explain_text(&access, &catalog, sql) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            print!("{refusal}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What `explain` prints: the statement as it goes upstream for the role, or why it is refused
/// (`Err` holds the refusal text).
pub fn explain_text(
    access: &RoleAccess,
    catalog: &Catalog,
    sql: &str,
) -> std::result::Result<String, String> {
    match rewrite(sql, access, catalog) {
        Ok(Rewritten::Unchanged) => Ok(format!(
            "-- role `{}` is unrestricted: the statement runs unchanged\n{sql}\n",
            access.role
        )),
        Ok(Rewritten::Statements(statements)) => {
            let mut out = String::new();
            for statement in &statements {
                for table in statement.tables.iter() {
                    out.push_str(&format!("-- {}\n", describe_use(table)));
                }
                out.push_str(&statement.sql);
                out.push_str(";\n");
            }
            Ok(out)
        }
        Err(refusal) => Err(format!(
            "refused ({}): {}\n",
            refusal.sqlstate.code(),
            refusal.message
        )),
    }
}

/// One line about how a statement uses a table: route, row filter, columns with category and action.
fn describe_use(table: &TableUse) -> String {
    let route = match &table.route {
        TableRoute::View(view) => format!("through view {view}"),
        TableRoute::BaseTable => "as the base table (unlisted)".into(),
        TableRoute::SystemCatalog => "system catalog".into(),
        TableRoute::Denied => "denied".into(),
        TableRoute::Unrestricted => "unrestricted".into(),
    };
    let filter = if table.filtered {
        ", row filter applies"
    } else {
        ""
    };
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, c)| match c.category {
            Some(category) => format!("{name} ({}, {})", category.as_str(), c.action.as_str()),
            None => format!("{name} ({})", c.action.as_str()),
        })
        .collect();
    format!(
        "{} {route}{filter}; columns: {}",
        table.table,
        columns.join(", ")
    )
}
