//! The breach report for one user over a period (GDPR Art. 33/34): which categories of personal data of
//! which tables were accessed, how many rows, when, from where, and which attempts were refused, as
//! Markdown for the DPO.
//! Not for: choosing the records (see `search`) or proving the log whole (see `verify`).

use crate::audit::record::{ColumnAction, EventKind, Outcome};
use crate::audit::search::{Entry, tables_summary};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// What the report is about, for its title.
pub struct Scope<'a> {
    pub user: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub generated: &'a str,
    /// What `verify` said about the files the report read.
    pub verification: &'a str,
}

#[derive(Default)]
struct TableUse {
    columns: BTreeSet<String>,
    actions: BTreeSet<&'static str>,
    statements: u64,
    rows: u64,
    first: String,
    last: String,
}

#[derive(Default)]
struct ClientUse {
    statements: u64,
    first: String,
    last: String,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn seen(first: &mut String, last: &mut String, time: &str) {
    if first.is_empty() {
        *first = time.to_string();
    }
    *last = time.to_string();
}

/// The report for `entries` (the user's records in the period, in log order).
pub fn markdown(scope: &Scope<'_>, entries: &[Entry]) -> String {
    let mut by_table: BTreeMap<(String, String), TableUse> = BTreeMap::new();
    let mut by_client: BTreeMap<String, ClientUse> = BTreeMap::new();
    let mut roles = BTreeSet::new();
    let mut refused = Vec::new();
    let (mut ok, mut errors, mut rows_total) = (0u64, 0u64, 0u64);
    // Sent to PostgreSQL, but no outcome record (e.g. the proxy crashed before writing it): counted
    // as accesses, without rows.
    let mut unknown = 0u64;
    let (mut logins_ok, mut logins_failed, mut lockouts) = (0u64, 0u64, 0u64);
    for entry in entries {
        let e = &entry.record.event;
        let time = entry.record.time.as_str();
        if let Some(role) = &e.role {
            roles.insert(role.clone());
        }
        match e.kind {
            EventKind::LoginOk => logins_ok += 1,
            EventKind::LoginFailed => logins_failed += 1,
            EventKind::Lockout => lockouts += 1,
            _ => {}
        }
        if e.kind != EventKind::Statement {
            continue;
        }
        let client = by_client
            .entry(e.client.clone().unwrap_or_else(|| "unknown".into()))
            .or_default();
        client.statements += 1;
        seen(&mut client.first, &mut client.last, time);
        match &e.outcome {
            Outcome::Refused { .. } => {
                refused.push(entry);
                continue;
            }
            Outcome::Error { .. } => {
                errors += 1;
                continue;
            }
            Outcome::Ok => ok += 1,
            Outcome::Unknown => unknown += 1,
        }
        rows_total += e.rows.unwrap_or(0);
        for table in &e.tables {
            let mut categories: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for column in &table.columns {
                if column.action == ColumnAction::Dropped || column.action == ColumnAction::Denied {
                    continue;
                }
                let category = column.category.map_or("not personal", |c| c.as_str());
                categories
                    .entry(category.to_string())
                    .or_default()
                    .push(&column.name);
                let use_ = by_table
                    .entry((table.table.to_string(), category.to_string()))
                    .or_default();
                use_.actions.insert(column.action.as_str());
            }
            for (category, columns) in categories {
                let use_ = by_table
                    .entry((table.table.to_string(), category))
                    .or_default();
                use_.columns.extend(columns.into_iter().map(str::to_string));
                use_.statements += 1;
                use_.rows += e.rows.unwrap_or(0);
                seen(&mut use_.first, &mut use_.last, time);
            }
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Access report for user `{}`\n", cell(scope.user));
    let _ = writeln!(
        md,
        "- Period: {} to {} (UTC)\n- Generated: {}",
        scope.from.unwrap_or("the beginning of the log"),
        scope.to.unwrap_or("the end of the log"),
        scope.generated
    );
    let _ = writeln!(md, "- Log verification: {}", scope.verification);
    let _ = writeln!(md, "\n## Summary\n");
    let _ = writeln!(
        md,
        "- Statements: {} ({ok} answered, {} refused, {errors} failed{})",
        ok + refused.len() as u64 + errors + unknown,
        refused.len(),
        match unknown {
            0 => String::new(),
            n => format!(", {n} with no outcome recorded"),
        }
    );
    let _ = writeln!(
        md,
        "- Rows returned or affected by answered statements: {rows_total}"
    );
    if unknown > 0 {
        let _ = writeln!(
            md,
            "- {unknown} statements were sent to PostgreSQL but have no outcome recorded (e.g. the \
             proxy stopped before writing it): they count below as accesses, their rows are unknown"
        );
    }
    let _ = writeln!(
        md,
        "- Logins: {logins_ok} succeeded, {logins_failed} failed; lockouts: {lockouts}"
    );
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let _ = writeln!(
        md,
        "- Roles: {}",
        if roles.is_empty() {
            "none recorded".into()
        } else {
            roles.join(", ")
        }
    );
    if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
        let _ = writeln!(
            md,
            "- First record: {}; last record: {}",
            first.record.time, last.record.time
        );
    }

    let _ = writeln!(md, "\n## Personal data accessed\n");
    if by_table.is_empty() {
        let _ = writeln!(md, "No answered statement touched a recorded table.");
    } else {
        let _ = writeln!(
            md,
            "Rows count each statement's rows once per table and category it touched.\n"
        );
        let _ = writeln!(
            md,
            "| Table | Category | Columns | Seen as | Statements | Rows | First | Last |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for ((table, category), u) in &by_table {
            let columns: Vec<&str> = u.columns.iter().map(String::as_str).collect();
            let actions: Vec<&str> = u.actions.iter().copied().collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(table),
                category,
                cell(&columns.join(", ")),
                actions.join(", "),
                u.statements,
                u.rows,
                u.first,
                u.last
            );
        }
    }

    let _ = writeln!(md, "\n## Where from\n");
    if by_client.is_empty() {
        let _ = writeln!(md, "No statements.");
    } else {
        let _ = writeln!(
            md,
            "| Client address | Statements | First | Last |\n|---|---|---|---|"
        );
        for (client, u) in &by_client {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(client),
                u.statements,
                u.first,
                u.last
            );
        }
    }

    let _ = writeln!(md, "\n## Refused attempts\n");
    if refused.is_empty() {
        let _ = writeln!(md, "None.");
    } else {
        let _ = writeln!(
            md,
            "| Time | Client | Statement | Tables | SQLSTATE | Reason |\n|---|---|---|---|---|---|"
        );
        for entry in refused {
            let e = &entry.record.event;
            let reason = match &e.outcome {
                Outcome::Refused {
                    message: Some(m), ..
                } => m.as_str(),
                _ => "",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                entry.record.time,
                cell(e.client.as_deref().unwrap_or("unknown")),
                cell(e.statement_kind.as_deref().unwrap_or("")),
                cell(&tables_summary(&entry.record)),
                e.outcome.sqlstate().unwrap_or(""),
                cell(reason)
            );
        }
    }
    md
}
