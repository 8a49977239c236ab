//! `maschera dump FILE --upstream URL --role ROLE`: an anonymised copy of the database as one role sees
//! it — for each view the role has (`policy apply` made them), a `CREATE TABLE` with the view's columns
//! and types and its rows as `COPY ... FROM stdin`, streamed from `COPY (SELECT ...) TO STDOUT` straight to
//! the output (never held in memory). Tables the role is denied are not in the dump. The output loads with
//! `psql -f`. Not for: backups (use `pg_dump`), constraints or indexes (the copy has plain tables).

use crate::policy_apply;
use crate::policy_cmd::load_policy;
use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::StreamExt;
use policy::apply_sql::quote_ident;
use policy::model::{Role, is_identifier};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The policy file (already installed with `maschera policy apply`).
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may `SET ROLE` to the role's login (its owner or a superuser).
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    pub upstream: String,
    /// The policy role whose view of the data is dumped, e.g. `support`.
    #[arg(long)]
    pub role: String,
    /// An attribute of the role's row filters, `name=value` (repeatable), e.g. `--attr region=north`.
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
}

pub fn run(args: DumpArgs) -> Result<ExitCode> {
    crate::cli::block_on(async {
        let Some(policy) = load_policy(&args.file)? else {
            return Ok(ExitCode::FAILURE);
        };
        let Some(role) = policy.roles.get(&args.role) else {
            let roles: Vec<&str> = policy.roles.keys().map(String::as_str).collect();
            bail!(
                "the policy has no role `{}` ({})",
                args.role,
                policy::diagnostics::suggest(&args.role, &roles, "roles")
            );
        };
        if role.unrestricted {
            bail!(
                "role `{}` is unrestricted: it sees the database as stored (use pg_dump)",
                role.name
            );
        }
        let attributes = parse_attributes(role, &args.attributes)?;
        let client = policy_apply::connect(&args.upstream).await?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        dump_role(
            &client,
            role,
            &policy.settings.attribute_namespace,
            &attributes,
            &mut out,
        )
        .await?;
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `name=value` pairs, each naming an attribute the role declares.
fn parse_attributes(role: &Role, given: &[String]) -> Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|pair| {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("--attr `{pair}` is not NAME=VALUE");
            };
            if !is_identifier(name) || !role.attributes.iter().any(|a| a == name) {
                bail!(
                    "role `{}` has no attribute `{name}` (it has: {})",
                    role.name,
                    role.attributes.join(", ")
                );
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Writes the role's schema and data to `out`, in one read-only snapshot, as the role's login.
pub async fn dump_role(
    client: &Client,
    role: &Role,
    namespace: &str,
    attributes: &[(String, String)],
    out: &mut impl Write,
) -> Result<()> {
    let login = role.login();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    client
        .batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(&login)))
        .await
        .with_context(|| format!("SET ROLE {login} (has `policy apply` run?)"))?;
    for (name, value) in attributes {
        client
            .execute(
                "SELECT set_config($1, $2, true)",
                &[&format!("{namespace}.{name}"), value],
            )
            .await?;
    }
    let views = client
        .query(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'v' AND has_table_privilege(c.oid, 'SELECT')
             ORDER BY c.relname",
            &[&login],
        )
        .await?;
    writeln!(
        out,
        "-- Maschera dump: the data as role `{}` sees it (masked, pseudonymised, filtered).\n\
         SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n",
        role.name
    )?;
    for view in views {
        let oid: u32 = view.get(0);
        let name: String = view.get(1);
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let table = quote_ident(&name);
        let definitions: Vec<String> = columns
            .iter()
            .map(|(c, t)| format!("    {} {t}", quote_ident(c)))
            .collect();
        let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
        writeln!(
            out,
            "CREATE TABLE {table} (\n{}\n);\nCOPY {table} ({}) FROM stdin;",
            definitions.join(",\n"),
            names.join(", ")
        )?;
        let copy = format!(
            "COPY (SELECT {} FROM {}.{table}) TO STDOUT",
            names.join(", "),
            quote_ident(&login)
        );
        let stream = client.copy_out(&copy).await?;
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
        }
        writeln!(out, "\\.\n")?;
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}
