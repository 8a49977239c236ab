//! "Who saw it", for a data subject's access request (GDPR Art. 15(1)(c)): from the access log, which
//! roles and users ran statements that read personal columns of the tables holding the subject's data,
//! in a period, with the categories read, how many statements and when. The log records tables and
//! categories per statement, not which rows a statement returned, so this is every reader of those
//! tables, not proof that the subject's own rows were among what they got; [`NOTE`] says so to the
//! reader. Not for: proving the log whole (see `audit verify`), or searching it in general (`audit search`).

use crate::audit::search::{Filter, scan};
use crate::audit::{ColumnAction, EventKind};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use time::OffsetDateTime;

/// What the export tells the reader about the limits of this section.
pub const NOTE: &str = "The access log records, for each statement, the tables and categories of personal \
data it read, not which rows it returned. Listed here is every role and user that read personal data in a \
table holding this person's data during the period; their statements may or may not have returned this \
person's rows (a role with a row filter never received rows outside it).";

/// The readers of one table by one user and role.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Access {
    pub table: String,
    pub role: String,
    pub user: String,
    pub categories: BTreeSet<String>,
    pub statements: u64,
    pub first: String,
    pub last: String,
}

/// An earlier `subject export` or `forget` of the same subject (same keyed digest).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Request {
    pub time: String,
    /// `subject_export` or `erasure`.
    pub event: String,
    pub user: String,
}

/// What the log says about the subject's tables and the subject.
#[derive(Debug, Default)]
pub struct Found {
    pub accesses: Vec<Access>,
    /// Earlier requests about the subject (only when its digest is known).
    pub requests: Vec<Request>,
    pub unreadable: u64,
}

/// Every reader of `tables` (`schema.name`) in the log files or folders `paths`, in `[from, to)`,
/// and the earlier requests about the subject whose digest is `digest`.
pub fn accesses(
    paths: &[PathBuf],
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    tables: &BTreeSet<String>,
    digest: Option<&str>,
) -> Result<Found> {
    let filter = Filter {
        from,
        to,
        ..Filter::default()
    };
    let mut found: BTreeMap<(String, String, String), Access> = BTreeMap::new();
    let mut requests = Vec::new();
    let unreadable = scan(paths, &filter, |entry| {
        let record = &entry.record;
        let event = &record.event;
        let about_subject = |d: &str| event.subjects.iter().flatten().any(|s| s == d);
        if matches!(event.kind, EventKind::SubjectExport | EventKind::Erasure)
            && digest.is_some_and(about_subject)
        {
            requests.push(Request {
                time: record.time.clone(),
                event: event.kind.as_str().to_string(),
                user: event.user.clone().unwrap_or_else(|| "-".into()),
            });
        }
        if event.kind != EventKind::Statement || event.outcome.as_str() == "refused" {
            return;
        }
        for touched in &event.tables {
            let table = touched.table.to_string();
            if !tables.contains(&table) {
                continue;
            }
            let categories: BTreeSet<String> = touched
                .columns
                .iter()
                .filter(|c| {
                    matches!(
                        c.action,
                        ColumnAction::Shown | ColumnAction::Masked | ColumnAction::Lookup
                    )
                })
                .filter_map(|c| c.category.map(|k| k.as_str().to_string()))
                .collect();
            if categories.is_empty() {
                continue;
            }
            let role = event.role.clone().unwrap_or_else(|| "-".into());
            let user = event.user.clone().unwrap_or_else(|| "-".into());
            let access = found
                .entry((table.clone(), role.clone(), user.clone()))
                .or_insert_with(|| Access {
                    table,
                    role,
                    user,
                    categories: BTreeSet::new(),
                    statements: 0,
                    first: record.time.clone(),
                    last: record.time.clone(),
                });
            access.categories.extend(categories);
            access.statements += 1;
            access.last = record.time.clone();
        }
    })
    .context("reading the access log")?;
    Ok(Found {
        accesses: found.into_values().collect(),
        requests,
        unreadable,
    })
}
