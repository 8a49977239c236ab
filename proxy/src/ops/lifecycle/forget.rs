//! `maschera forget FILE --upstream URL --table T --where "..." [--dry-run]`: erasure on request (GDPR
//! Art. 17). The WHERE selects exactly one row of one table (the data subject); every row that refers to
//! it through foreign keys, recursively, is deleted, children first, then the subject's row, all in one
//! transaction. `--dry-run` prints the plan (tables, row counts, action) and changes nothing. No value of
//! the subject is ever printed. Not for: bulk deletion (it refuses a WHERE matching more than one row).

use super::foreign_keys::{Reached, count_rows, dependants, resolve_table};
use super::mask_assignments;
use super::subject::{Selection, Subject, digest_key, find_subject, qualified, subject_digest};
use crate::admin::policy_apply;
use crate::admin::policy_file::load_policy;
use crate::audit::EventKind;
use anyhow::{Result, bail};
use policy::Policy;
use sqlparser::ast::{Expr, visit_expressions};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

/// What `forget` does.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub subject: Selection,
    /// Print the plan (tables, rows, action) and change nothing.
    pub dry_run: bool,
    /// Proxy configuration file whose `[audit]` section names the access log the erasure is recorded in.
    pub audit_config: Option<PathBuf>,
}

/// What happens to one table.
#[derive(Debug)]
pub struct PlannedStep {
    pub reached: Reached,
    pub rows: i64,
    /// `col = mask, ...` when the policy keeps the rows (anonymised) instead of deleting them.
    pub keep: Option<String>,
}

/// Erases the subject (or with `dry_run` prints the plan), prints what was done and records it.
pub async fn run(args: ForgetOptions) -> Result<ExitCode> {
    let Some(policy) = load_policy(&args.subject.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let condition = parse_condition(&args.subject.condition)?;
    let log = match args.dry_run {
        true => None,
        false => super::open_log(args.audit_config.as_deref())?,
    };
    let digest_key = match &log {
        Some(_) => Some(digest_key(&args.subject.key_env)?),
        None => None,
    };
    let client = policy_apply::connect(&args.subject.upstream).await?;
    client.batch_execute("BEGIN").await?;
    let plan = plan(&client, &policy, &args.subject.table, &condition).await?;
    for step in &plan {
        let verb = match (args.dry_run, step.keep.is_some()) {
            (true, false) => "would delete",
            (true, true) => "would anonymise (kept)",
            (false, false) => "deleted",
            (false, true) => "anonymised (kept)",
        };
        println!(
            "{:<32} {:>8} rows {verb}",
            step.reached.table.display, step.rows
        );
    }
    if args.dry_run {
        client.batch_execute("ROLLBACK").await?;
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    let subject = match &digest_key {
        Some(key) => {
            let subject = &plan[plan.len() - 1].reached;
            Some(subject_digest(&client, &subject.table, &subject.predicate, key).await?)
        }
        None => None,
    };
    for step in &plan {
        let statement = match &step.keep {
            None => format!(
                "DELETE FROM {} WHERE {}",
                step.reached.table.sql, step.reached.predicate
            ),
            Some(set) => format!(
                "UPDATE {} SET {set} WHERE {}",
                step.reached.table.sql, step.reached.predicate
            ),
        };
        let deleted = client.execute(&statement, &[]).await?;
        if deleted as i64 != step.rows {
            bail!(
                "{}: {deleted} rows instead of the {} planned; nothing changed",
                step.reached.table.display,
                step.rows
            );
        }
    }
    client.batch_execute("COMMIT").await?;
    println!("the data subject is erased");
    let detail: Vec<String> = plan
        .iter()
        .map(|s| {
            let verb = if s.keep.is_some() {
                "anonymised"
            } else {
                "deleted"
            };
            format!("{}: {} {verb}", s.reached.table.display, s.rows)
        })
        .collect();
    let rows = plan.iter().map(|s| s.rows as u64).sum();
    super::record(
        log,
        EventKind::Erasure,
        rows,
        detail.join("; "),
        subject.map(|d| vec![d]),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Parses the WHERE text: exactly one expression, no subquery, nothing after it (so no second statement).
pub fn parse_condition(text: &str) -> Result<String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text)?;
    let expr = parser
        .parse_expr()
        .map_err(|e| anyhow::anyhow!("--where is not a SQL condition: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        bail!("--where must be one condition, with nothing after it (no `;`, no second statement)");
    }
    let subquery = visit_expressions(&expr, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if subquery.is_break() {
        bail!("--where may only read the table's own columns (no subqueries)");
    }
    Ok(expr.to_string())
}

/// The tables and row counts an erasure touches, children first; refuses unless the condition selects
/// exactly one row of `table`.
pub async fn plan(
    client: &Client,
    policy: &Policy,
    table: &str,
    condition: &str,
) -> Result<Vec<PlannedStep>> {
    let Subject { table: start, keys } = find_subject(client, policy, table, condition).await?;
    let mut kept = BTreeMap::new();
    for declared in policy.tables.values() {
        if !declared.erasure.keep.is_empty() {
            let live = resolve_table(client, &qualified(&declared.name)).await?;
            let set = mask_assignments(client, declared, &live, &declared.erasure.keep).await?;
            let set: Vec<String> = set.iter().map(|(c, e)| format!("{c} = {e}")).collect();
            let columns: Vec<String> = declared.erasure.keep.keys().cloned().collect();
            kept.insert(live.oid, (set.join(", "), columns));
        }
    }
    let mut steps = Vec::new();
    for reached in dependants(&start, condition, &keys, &|oid| kept.contains_key(&oid)) {
        let keep = kept.get(&reached.table.oid).map(|(set, _)| set.clone());
        let rows = count_rows(client, &reached.table, &reached.predicate).await?;
        steps.push(PlannedStep {
            reached,
            rows,
            keep,
        });
    }
    // A kept row must stop referring to rows that are deleted, or the delete would cascade to it or fail.
    for (oid, (_, masked)) in &kept {
        for key in keys.iter().filter(|k| k.child.oid == *oid) {
            let parent_deleted = steps
                .iter()
                .any(|s| s.reached.table.oid == key.parent.oid && s.keep.is_none());
            if parent_deleted && !key.child_columns.iter().all(|c| masked.contains(c)) {
                bail!(
                    "{} keeps the subject's rows but its columns ({}) still refer to {}, whose rows are deleted: \
                     add them to its `erasure.keep` (e.g. `= \"null\"`)",
                    key.child.display,
                    key.child_columns.join(", "),
                    key.parent.display
                );
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::parse_condition;

    #[test]
    fn a_single_condition_passes_and_anything_more_is_refused() {
        assert_eq!(
            parse_condition("email = 'a@b.it'").unwrap(),
            "email = 'a@b.it'"
        );
        assert!(parse_condition("id = 1; DROP TABLE contacts").is_err());
        assert!(parse_condition("id IN (SELECT contact_id FROM deals)").is_err());
        assert!(parse_condition("DROP TABLE contacts").is_err());
        assert!(parse_condition("").is_err());
    }
}
