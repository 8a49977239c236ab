//! Finding records for auditors: reads the log files (tolerating fields and kinds it does not know),
//! joins each statement's access record with its `outcome` record when it has one (rows, outcome,
//! duration; usually they are in the access record itself; a statement with neither reads as outcome
//! `unknown`), filters by user, role, table, column, category, outcome and
//! time, and shows the matches as a table.
//! Not for: proving the log whole (see `verify`); search trusts what it reads.

use crate::audit::AuditError;
use crate::audit::files;
use crate::audit::record::{EventKind, Record};
use policy::access::Category;
use std::collections::HashMap;
use std::path::PathBuf;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What to look for; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    /// The end user an application user acted for (see `end_user`).
    pub end_user: Option<String>,
    /// `user` also matches records of an application user acting for that end user (the report
    /// of a person covers what they saw through any application).
    pub user_or_end_user: bool,
    pub role: Option<String>,
    /// `schema.name` or just `name`.
    pub table: Option<String>,
    pub column: Option<String>,
    /// A category name, e.g. `contact`.
    pub category: Option<String>,
    /// `ok`, `refused`, `error` or `unknown`.
    pub outcome: Option<String>,
    /// Records at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Records before this time.
    pub to: Option<OffsetDateTime>,
}

/// A record as read, with its original line; a statement's record carries the rows, outcome,
/// duration (and detail) of its `outcome` record when there is one.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Record,
    pub line: String,
    /// The line of the statement's `outcome` record, as stored.
    pub follow_up: Option<String>,
    pub time: Option<OffsetDateTime>,
}

/// Parses `--from`/`--to`: RFC 3339, or a date `YYYY-MM-DD` (its start; with `end_of_day`, the next
/// day's start, so `--to 2026-03-31` includes the whole day).
pub fn parse_time(text: &str, end_of_day: bool) -> Result<OffsetDateTime, AuditError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .map_err(|_| AuditError::Config(format!("time {text:?}: use RFC 3339 or YYYY-MM-DD")))?;
    let date = if end_of_day {
        date.next_day().unwrap_or(date)
    } else {
        date
    };
    Ok(date.midnight().assume_utc())
}

impl Filter {
    pub fn matches(&self, entry: &Entry) -> bool {
        let e = &entry.record.event;
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        let user_ok = same(&self.user, &e.user)
            || self.user_or_end_user && self.user.is_some() && same(&self.user, &e.end_user);
        if !user_ok || !same(&self.role, &e.role) || !same(&self.end_user, &e.end_user) {
            return false;
        }
        if self
            .outcome
            .as_ref()
            .is_some_and(|o| o != e.outcome.as_str())
        {
            return false;
        }
        if self
            .from
            .is_some_and(|from| entry.time.is_none_or(|t| t < from))
        {
            return false;
        }
        if self.to.is_some_and(|to| entry.time.is_none_or(|t| t >= to)) {
            return false;
        }
        if self.table.is_none() && self.column.is_none() && self.category.is_none() {
            return true;
        }
        let category_is =
            |k: &Category| self.category.as_ref().is_none_or(|want| k.as_str() == want);
        e.tables.iter().any(|t| {
            let table_ok = self
                .table
                .as_ref()
                .is_none_or(|want| *want == t.table.to_string() || *want == t.table.name);
            let column_ok = t.columns.iter().any(|c| {
                self.column.as_ref().is_none_or(|want| *want == c.name)
                    && (self.category.is_none() || c.category.as_ref().is_some_and(category_is))
            });
            // A denied table may name no column: its categories still match `--category`.
            let categories_ok = self.column.is_none() && t.categories.iter().any(category_is);
            table_ok
                && (self.column.is_none() && self.category.is_none() || column_ok || categories_ok)
        })
    }
}

/// Reads every record of the files (folders expanded) in order, calling `visit` for those the filter
/// matches, each statement joined with its `outcome` record. Checkpoints, file starts and `outcome`
/// records themselves are skipped. Returns the number of unreadable lines.
pub fn scan(
    paths: &[PathBuf],
    filter: &Filter,
    mut visit: impl FnMut(Entry),
) -> Result<u64, AuditError> {
    let files = files::expand(paths)?;
    let mut follow_ups = follow_ups(&files)?;
    let mut unreadable = 0;
    for path in &files {
        let lines = files::read_lines(path)?;
        unreadable += u64::from(lines.torn.is_some());
        for line in lines.complete {
            let Ok(mut record) = serde_json::from_str::<Record>(&line) else {
                unreadable += 1;
                continue;
            };
            if record.event.kind.is_reserved() || record.event.kind == EventKind::Outcome {
                continue;
            }
            let follow_up = follow_ups.remove(&record.seq).map(|(outcome, line)| {
                let event = &mut record.event;
                event.rows = outcome.event.rows;
                event.outcome = outcome.event.outcome;
                event.duration_us = outcome.event.duration_us;
                event.detail = event.detail.take().or(outcome.event.detail);
                line
            });
            let time = OffsetDateTime::parse(&record.time, &Rfc3339).ok();
            let entry = Entry {
                record,
                line,
                follow_up,
                time,
            };
            if filter.matches(&entry) {
                visit(entry);
            }
        }
    }
    Ok(unreadable)
}

/// The `outcome` records of the files by the sequence number of the statement they complete.
fn follow_ups(files: &[PathBuf]) -> Result<HashMap<u64, (Record, String)>, AuditError> {
    let mut found = HashMap::new();
    for path in files {
        for line in files::read_lines(path)?.complete {
            // Only lines that may be `outcome` records are parsed.
            if line.contains(r#""event":"outcome""#)
                && let Ok(record) = serde_json::from_str::<Record>(&line)
                && record.event.kind == EventKind::Outcome
                && let Some(of) = record.event.statement_seq
            {
                found.insert(of, (record, line));
            }
        }
    }
    Ok(found)
}

/// Tables and columns of a record as `schema.table(column:category:action, ...)`.
pub fn tables_summary(record: &Record) -> String {
    record
        .event
        .tables
        .iter()
        .map(|t| {
            let columns: Vec<String> = t
                .columns
                .iter()
                .map(|c| match c.category {
                    Some(k) => format!("{}:{}:{}", c.name, k.as_str(), c.action.as_str()),
                    None => format!("{}:{}", c.name, c.action.as_str()),
                })
                .collect();
            if columns.is_empty() && !t.categories.is_empty() {
                let categories: Vec<&str> = t.categories.iter().map(|c| c.as_str()).collect();
                format!("{}[{}]", t.table, categories.join(","))
            } else {
                format!("{}({})", t.table, columns.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The entries as an aligned text table, one line each.
pub fn table(entries: &[Entry]) -> String {
    let header = [
        "SEQ", "TIME", "EVENT", "USER", "ROLE", "CLIENT", "OUTCOME", "ROWS", "TABLES",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|entry| {
            let e = &entry.record.event;
            let outcome = match e.outcome.sqlstate() {
                Some(code) => format!("{} {code}", e.outcome.as_str()),
                None => e.outcome.as_str().to_string(),
            };
            [
                entry.record.seq.to_string(),
                entry.record.time.clone(),
                e.kind.as_str().to_string(),
                match (&e.user, &e.end_user) {
                    (Some(user), Some(end_user)) => format!("{user} for {end_user}"),
                    (user, _) => user.clone().unwrap_or_else(dash),
                },
                e.role.clone().unwrap_or_else(dash),
                e.client.clone().unwrap_or_else(dash),
                outcome,
                e.rows.map_or_else(dash, |r| r.to_string()),
                tables_summary(&entry.record),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(header.to_vec());
    for row in &rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ColumnAction, ColumnTouched, Event, EventKind, TableTouched};
    use policy::access::TableName;

    fn entry(tables: Vec<TableTouched>) -> Entry {
        let mut event = Event::new(EventKind::Statement);
        event.user = Some("anna".into());
        event.tables = tables;
        let record = Record {
            seq: 1,
            time: "2026-03-01T10:00:00Z".into(),
            instance: "i".into(),
            event,
            link: None,
            checkpoint: None,
        };
        let time = OffsetDateTime::parse(&record.time, &Rfc3339).ok();
        Entry {
            record,
            line: String::new(),
            follow_up: None,
            time,
        }
    }

    #[test]
    fn end_users_are_found_by_end_user_and_by_the_report_of_a_person() {
        let mut e = entry(vec![]);
        e.record.event.user = Some("crm".into());
        e.record.event.end_user = Some("sam".into());
        let sam = |user_or_end_user| Filter {
            user: Some("sam".into()),
            user_or_end_user,
            ..Filter::default()
        };
        assert!(!sam(false).matches(&e), "search --user names the login");
        assert!(sam(true).matches(&e), "report --user covers end users");
        let end_user = |name: &str| Filter {
            end_user: Some(name.into()),
            ..Filter::default()
        };
        assert!(end_user("sam").matches(&e));
        assert!(!end_user("tom").matches(&e));
        let crm = Filter {
            user: Some("crm".into()),
            ..Filter::default()
        };
        assert!(crm.matches(&e));
        assert!(table(std::slice::from_ref(&e)).contains("crm for sam"));
    }

    #[test]
    fn filters_match_columns_categories_and_time() {
        let mut customers = TableTouched::new(TableName::new("public", "customers"));
        customers.columns = vec![ColumnTouched {
            name: "email".into(),
            category: Some(Category::Contact),
            action: ColumnAction::Masked,
        }];
        let mut denied = TableTouched::new(TableName::new("public", "health"));
        denied.categories = vec![Category::SpecialCategory];
        let e = entry(vec![customers, denied]);
        let filter = |f: Filter| f.matches(&e);
        assert!(filter(Filter {
            category: Some("contact".into()),
            ..Filter::default()
        }));
        assert!(
            filter(Filter {
                category: Some("special_category".into()),
                ..Filter::default()
            }),
            "a denied table's categories"
        );
        assert!(!filter(Filter {
            category: Some("financial".into()),
            ..Filter::default()
        }));
        assert!(filter(Filter {
            table: Some("public.customers".into()),
            column: Some("email".into()),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            table: Some("health".into()),
            column: Some("email".into()),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            user: Some("bert".into()),
            ..Filter::default()
        }));
        let day = |d: &str, end| Some(parse_time(d, end).unwrap());
        assert!(filter(Filter {
            from: day("2026-03-01", false),
            to: day("2026-03-01", true),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            from: day("2026-03-02", false),
            ..Filter::default()
        }));
        assert!(
            !filter(Filter {
                to: day("2026-03-01T10:00:00Z", false),
                ..Filter::default()
            }),
            "--to is exclusive"
        );
        assert_eq!(
            tables_summary(&e.record),
            "public.customers(email:contact:masked) public.health[special_category]"
        );
    }
}
