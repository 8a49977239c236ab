//! `maschera forget FILE --upstream URL --table T --where "..." [--dry-run]`: erasure on request (GDPR
//! Art. 17). The WHERE selects exactly one row of one table (the data subject); every row that refers to
//! it through foreign keys, recursively, is deleted, children first, then the subject's row, all in one
//! transaction. `--dry-run` prints the plan (tables, row counts, action) and changes nothing. No value of
//! the subject is ever printed. Not for: bulk deletion (it refuses a WHERE matching more than one row).

use super::foreign_keys::{Reached, dependants, read_foreign_keys, resolve_table};
use crate::policy_apply;
use crate::policy_cmd::load_policy;
use anyhow::{Result, bail};
use clap::Args;
use sqlparser::ast::{Expr, visit_expressions};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_postgres::Client;

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The policy file.
    pub file: PathBuf,
    /// PostgreSQL URI of an account that may delete from every table concerned (the owner or a superuser).
    #[arg(long, env = "MASCHERA_UPSTREAM")]
    pub upstream: String,
    /// The table holding the data subject, e.g. `contacts`.
    #[arg(long)]
    pub table: String,
    /// One SQL boolean expression over that table's columns selecting exactly the subject's row.
    #[arg(long = "where", value_name = "CONDITION")]
    pub condition: String,
    /// Print the plan (tables, rows, action) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What happens to one table.
#[derive(Debug)]
pub struct PlannedStep {
    pub reached: Reached,
    pub rows: i64,
}

pub fn run(args: ForgetArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if load_policy(&args.file)?.is_none() {
            return Ok(ExitCode::FAILURE);
        }
        let condition = parse_condition(&args.condition)?;
        let client = policy_apply::connect(&args.upstream).await?;
        client.batch_execute("BEGIN").await?;
        let plan = plan(&client, &args.table, &condition).await?;
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for step in &plan {
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
        for step in &plan {
            let deleted = client
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE {}",
                        step.reached.table.sql, step.reached.predicate
                    ),
                    &[],
                )
                .await?;
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
        Ok(ExitCode::SUCCESS)
    })
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
pub async fn plan(client: &Client, table: &str, condition: &str) -> Result<Vec<PlannedStep>> {
    let start = resolve_table(client, table).await?;
    let subject: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {} WHERE {condition}", start.sql),
            &[],
        )
        .await?
        .get(0);
    if subject != 1 {
        bail!(
            "the condition selects {subject} rows of {}; it must select exactly one data subject",
            start.display
        );
    }
    let keys = read_foreign_keys(client).await?;
    let mut steps = Vec::new();
    for reached in dependants(&start, condition, &keys) {
        let rows: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE {}",
                    reached.table.sql, reached.predicate
                ),
                &[],
            )
            .await?
            .get(0);
        steps.push(PlannedStep { reached, rows });
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
