//! `maschera dump FILE --upstream URL --role ROLE`: an anonymised copy of the database as one role sees
//! it — for each view the role has (`policy apply` made them), a `CREATE TABLE` with the view's columns
//! and types and its rows as `COPY ... FROM stdin`, streamed from `COPY (SELECT ...) TO STDOUT` straight to
//! the output (never held in memory), all in one read-only snapshot. Tables the role is denied are not
//! in the dump. A view that pseudonymises a column is read from its table with the view's own SELECT
//! (same masks, same row filter) but that column as stored, and the pseudonym is computed here while
//! streaming with `policy::pseudonym` (the one definition the views' SQL comes from too: hex SHA-256
//! over the key, the scope of `pseudonym.table` and the value's text; PostgreSQL's `sha256()` per value
//! is what made such dumps slow). Redacted free text comes from the views' own expression. The output
//! loads with `psql -f`.
//! Not for: backups (use `pg_dump`), constraints or indexes (the copy has plain tables).

use crate::admin::policy_apply;
use crate::admin::policy_file::load_policy;
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use policy::access::{Action, TableAccess};
use policy::apply_sql::{quote_ident, role_filter, search_path_step, table_schemas, view_select};
use policy::model::{Policy, Role, is_identifier};
use policy::pseudonym::{Keyed, digest_expression, key_name, keyed_order, scope};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

/// What `dump` writes.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The policy file (already installed with `maschera policy apply`).
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may `SET ROLE` to the role's login and read the tables and
    /// the pseudonym key (the owner that ran `policy apply`, or a superuser).
    pub upstream: String,
    /// The policy role whose view of the data is dumped, e.g. `support`.
    pub role: String,
    /// Attributes of the role's row filters, each `name=value`.
    pub attributes: Vec<String>,
    /// The prefix `maschera policy apply --login-prefix` gave the role logins (empty: `maschera_`).
    pub login_prefix: String,
}

/// Writes the dump of the role's view of the database to standard output.
pub async fn run(args: DumpOptions) -> Result<ExitCode> {
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
    let login = policy::model::prefixed_login(&args.login_prefix, &role.name);
    dump_role(&client, &policy, role, &login, &attributes, &mut out).await?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
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

/// Writes the role's schema and data to `out`, in one snapshot, as the role's `login` (its views are in
/// the schema `maschera_<role>` whatever the login's prefix; the dump changes
/// nothing; it creates and drops a temporary view to compare the installed views with the policy).
pub async fn dump_role(
    client: &Client,
    policy: &Policy,
    role: &Role,
    login: &str,
    attributes: &[(String, String)],
    out: &mut impl Write,
) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let pseudonymised = PseudonymisedTables::read(client, policy, role).await?;
    // Sealed as the dump's own account, which may read the key (the filters verify the seals).
    for (name, value) in attributes {
        client
            .execute(
                &policy::attribute_seal::seal_session_sql(true),
                &[
                    &format!("{}.{name}", policy.settings.attribute_namespace),
                    value,
                ],
            )
            .await
            .context("sealing the attributes (has `policy apply` run?)")?;
    }
    client
        .batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(login)))
        .await
        .with_context(|| format!("SET ROLE {login} (has `policy apply` run?)"))?;
    for (name, value) in attributes {
        client
            .execute(
                "SELECT set_config($1, $2, true)",
                &[
                    &format!("{}.{name}", policy.settings.attribute_namespace),
                    value,
                ],
            )
            .await?;
    }
    let views = client
        .query(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'v' AND has_table_privilege(c.oid, 'SELECT')
             ORDER BY c.relname",
            &[&role.login()],
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
        let column_names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        match pseudonymised.plan(&name, &column_names) {
            Some((select, mut pseudonymiser)) => {
                // As the dump's own account (the role cannot read the table), inside the same snapshot.
                client.batch_execute("RESET ROLE").await?;
                let copy = format!("COPY ({select}) TO STDOUT");
                let stream = client.copy_out(&copy).await?;
                futures_util::pin_mut!(stream);
                let mut row = Vec::new();
                while let Some(chunk) = stream.next().await {
                    row.clear();
                    pseudonymiser.row(&chunk?, &mut row);
                    out.write_all(&row)?;
                }
                client
                    .batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(login)))
                    .await?;
            }
            None => {
                let copy = format!(
                    "COPY (SELECT {} FROM {}.{table}) TO STDOUT",
                    names.join(", "),
                    quote_ident(&role.login())
                );
                let stream = client.copy_out(&copy).await?;
                futures_util::pin_mut!(stream);
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk?)?;
                }
            }
        }
        writeln!(out, "\\.\n")?;
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}

/// The role's views that pseudonymise a column, to be read from their tables with the pseudonymised
/// columns as stored and pseudonymised here (hex of SHA-256 over the key and the value's text, as the
/// views compute it in PostgreSQL, where it is the costly part of a dump).
struct PseudonymisedTables {
    /// View name → (the view's SELECT with pseudonymised columns as stored, output columns, the
    /// pseudonym scope of each, `None` for the columns left as the SELECT gives them).
    tables: BTreeMap<String, (String, Vec<String>, Vec<Scope>)>,
    key: Vec<u8>,
}

impl PseudonymisedTables {
    /// Compiles the policy against the live catalog and reads the pseudonym key (as the dump's own
    /// account); sets the search path the views' row filters were made under. A view that is not
    /// what the policy file makes of it (a policy edited since `policy apply`) is left to PostgreSQL.
    async fn read(client: &Client, policy: &Policy, role: &Role) -> Result<PseudonymisedTables> {
        let mut tables = BTreeMap::new();
        let catalog = policy_apply::read_catalog(client).await?;
        client
            .batch_execute(&search_path_step(&table_schemas(&catalog)).sql)
            .await?;
        let Ok(mut access) = policy.compile(&catalog) else {
            // The views were made by `policy apply`; without a compiled policy they alone are read.
            return Ok(PseudonymisedTables {
                tables,
                key: Vec::new(),
            });
        };
        let Some(role_access) = access.remove(&role.name) else {
            return Ok(PseudonymisedTables {
                tables,
                key: Vec::new(),
            });
        };
        for (name, table_access) in &role_access.tables {
            let TableAccess::View(view) = table_access else {
                continue;
            };
            if !view.columns.iter().any(|c| keyed(&c.action)) {
                continue;
            }
            let filter = role_filter(policy, role, name);
            let installed = view_select(name, view, filter, &catalog);
            if !installed_as(client, &role.login(), &view.view, &installed).await? {
                eprintln!(
                    "warning: view {}.{} differs from the policy file (run `maschera policy apply`); \
                     it is dumped as installed, with its pseudonyms computed by PostgreSQL",
                    role.login(),
                    view.view
                );
                continue;
            }
            let mut stored = view.clone();
            let mut pseudonymise = Vec::new();
            let mut output = Vec::new();
            // The view's order (its pseudonyms'), never the table's: that follows the clear ids.
            let mut order = Vec::new();
            for column in &mut stored.columns {
                match &column.action {
                    Action::Drop => continue,
                    action if keyed(action) => {
                        let scope = scope(action, name, &column.name).unwrap_or_default();
                        let text = format!("{}::text", quote_ident(&column.name));
                        order.push(digest_expression("pseudonym", &scope, &text));
                        column.action = Action::Show;
                        pseudonymise.push(Some(scope.into_bytes()));
                    }
                    _ => pseudonymise.push(None),
                }
                output.push(column.name.clone());
            }
            let mut select = view_select(name, &stored, filter, &catalog);
            if !order.is_empty() {
                // After the order of the keyed columns PostgreSQL still computes (`hash`), if any.
                let then = if keyed_order(&stored).is_some() {
                    ", "
                } else {
                    " ORDER BY "
                };
                select.push_str(&format!("{then}{}", order.join(", ")));
            }
            tables.insert(view.view.clone(), (select, output, pseudonymise));
        }
        if tables.is_empty() {
            return Ok(PseudonymisedTables {
                tables,
                key: Vec::new(),
            });
        }
        let key: Vec<u8> = client
            .query_one(
                "SELECT key FROM maschera_private.keys WHERE name = 'pseudonym'",
                &[],
            )
            .await
            .context("reading the pseudonym key (has `policy apply` run?)")?
            .get(0);
        Ok(PseudonymisedTables { tables, key })
    }

    /// The SELECT and pseudonymiser for view `name`, when it pseudonymises and its columns are the
    /// ones the policy gives (else the view itself is read).
    fn plan(&self, name: &str, columns: &[&str]) -> Option<(&str, Pseudonymiser)> {
        let (select, output, pseudonymise) = self.tables.get(name)?;
        if output
            .iter()
            .map(String::as_str)
            .ne(columns.iter().copied())
        {
            return None;
        }
        Some((select, Pseudonymiser::new(&self.key, pseudonymise.clone())))
    }
}

/// Whether the installed view `login.view` is the one `select` makes: both deparsed by PostgreSQL
/// (a temporary view of `select`, dropped again; any error means no).
async fn installed_as(client: &Client, login: &str, view: &str, select: &str) -> Result<bool> {
    client
        .batch_execute("SAVEPOINT maschera_dump_check")
        .await?;
    let compared = async {
        client
            .batch_execute(&format!("CREATE TEMP VIEW maschera_dump_check AS {select}"))
            .await?;
        let same: bool = client
            .query_one(
                "SELECT pg_get_viewdef('pg_temp.maschera_dump_check'::regclass)
                        = pg_get_viewdef($1::text::regclass)",
                &[&format!("{}.{}", quote_ident(login), quote_ident(view))],
            )
            .await?
            .get(0);
        Ok::<bool, tokio_postgres::Error>(same)
    }
    .await;
    // Rolling back to the savepoint drops the temporary view and clears any error.
    client
        .batch_execute(
            "ROLLBACK TO SAVEPOINT maschera_dump_check; RELEASE SAVEPOINT maschera_dump_check",
        )
        .await?;
    Ok(compared.unwrap_or(false))
}

/// The pseudonym scope of a column the dump pseudonymises itself; `None` for the others.
type Scope = Option<Vec<u8>>;

/// Whether the dump computes this action's value itself (the keyed pseudonyms).
fn keyed(action: &Action) -> bool {
    key_name(action) == Some("pseudonym")
}

/// Rewrites rows of `COPY ... TO STDOUT` (text format) replacing the flagged fields by their
/// pseudonym under their scope (`policy::pseudonym`), `\N` (NULL) left as it is.
struct Pseudonymiser {
    keyed: Keyed,
    fields: Vec<Scope>,
    value: Vec<u8>,
}

impl Pseudonymiser {
    fn new(key: &[u8], fields: Vec<Scope>) -> Pseudonymiser {
        Pseudonymiser {
            keyed: Keyed::new(key),
            fields,
            value: Vec::new(),
        }
    }

    /// One row (a line ending in `\n`, fields separated by tabs) into `out`.
    fn row(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        for (index, field) in body.split(|&b| b == b'\t').enumerate() {
            if index > 0 {
                out.push(b'\t');
            }
            match self.fields.get(index) {
                Some(Some(scope)) if field != b"\\N" => {
                    unescape(field, &mut self.value);
                    self.keyed.write_hex(scope, &self.value, out);
                }
                _ => out.extend_from_slice(field),
            }
        }
        out.push(b'\n');
    }
}

/// The value of a COPY text field (`\t`, `\n`, `\\`... back to the bytes they stand for).
fn unescape(field: &[u8], value: &mut Vec<u8>) {
    value.clear();
    let mut bytes = field.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            value.push(byte);
            continue;
        }
        let Some(escaped) = bytes.next() else {
            value.push(byte);
            break;
        };
        value.push(match escaped {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            other => other,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex_sha256(key: &[u8], value: &[u8]) -> String {
        Sha256::new()
            .chain_update(key)
            .chain_update(value)
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn flagged_fields_become_keyed_hex_sha256_of_their_text() {
        let mut p = Pseudonymiser::new(b"k", vec![Some(Vec::new()), None, Some(Vec::new())]);
        let mut out = Vec::new();
        p.row(b"42\tAnna\\tB\ta\\\\b\\nc\n", &mut out);
        let expected = format!(
            "{}\tAnna\\tB\t{}\n",
            hex_sha256(b"k", b"42"),
            hex_sha256(b"k", b"a\\b\nc")
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut out = Vec::new();
        p.row(b"\\N\t\\N\t7\n", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("\\N\t\\N\t{}\n", hex_sha256(b"k", b"7"))
        );
        let mut scoped = Pseudonymiser::new(b"k", vec![Some(b"public.deals:".to_vec()), None]);
        let mut out = Vec::new();
        scoped.row(b"7\tx\n", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\tx\n", hex_sha256(b"k", b"public.deals:7"))
        );
    }
}
