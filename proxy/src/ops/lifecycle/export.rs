//! `maschera subject export FILE --upstream URL --table T --where "..." [--format json|csv]`: a data
//! subject's access request (GDPR Art. 15) and portability (Art. 20) in one command. The subject is found
//! the way `forget` finds them (exactly one row, then every row that refers to it through foreign keys
//! and declared links); everything held about them is written to standard output, Art. 9/10 tables
//! included, with per table and category the purposes, lawful bases, recipients, transfers, retention,
//! source and automated decision-making the policy declares (Art. 15(1)(a)-(h)), and "who saw it" from
//! the access log. Every personal table that could hold the subject is listed, with 0 rows when it holds
//! nothing of them, so the person also learns what is not held. Rows are read through a cursor a batch at
//! a time, so a subject with many rows does not fill the memory. The export is recorded in the access
//! log (the subject's keyed digest, tables and counts, never a value). Not for: changing anything (it
//! reads in one read-only snapshot), or bulk export (it refuses a WHERE matching more than one row).

use super::foreign_keys::{LiveTable, count_rows, dependants};
use super::forget::parse_condition;
use super::subject::{Selection, digest_key, find_subject, subject_digest};
use super::who_saw;
use crate::admin::policy_apply;
use crate::admin::policy_file::load_policy;
use crate::audit::search::parse_time;
use crate::audit::{AuditConfig, Event, EventKind, Outcome, TableTouched};
use anyhow::{Context, Result};
use policy::Policy;
use policy::access::{Category, TableName};
use policy::model::Table;
use policy::register::{Register, csv_field, retention_text};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::Client;

/// What `subject export` does.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub subject: Selection,
    /// `json` (structured, for Art. 20) or `csv` (one line per value).
    pub format: String,
    /// Proxy configuration file whose `[audit]` section names the access log the export is recorded in
    /// (and, without `access_log`, the one "who saw it" is read from).
    pub audit_config: Option<PathBuf>,
    /// Access log files or folders to read "who saw it" from.
    pub access_log: Vec<PathBuf>,
    /// "Who saw it" from this time (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// "Who saw it" until this time, exclusive (a date includes the whole day).
    pub to: Option<String>,
}

/// Rows fetched from the cursor at a time.
const BATCH: i64 = 500;

/// One table holding the subject's data.
struct Held {
    live: LiveTable,
    predicate: String,
    rows: i64,
}

/// What the export says about the access log: `None` when no log was given.
struct WhoSawIt {
    found: Option<who_saw::Found>,
    from: Option<String>,
    to: Option<String>,
}

/// Writes everything held about the subject to standard output and records the export.
pub async fn run(args: ExportOptions) -> Result<ExitCode> {
    let Some(policy) = load_policy(&args.subject.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let condition = parse_condition(&args.subject.condition)?;
    let from = args
        .from
        .as_deref()
        .map(|t| parse_time(t, false))
        .transpose()?;
    let to = args
        .to
        .as_deref()
        .map(|t| parse_time(t, true))
        .transpose()?;
    // Opened before anything is read, so that an export that cannot be recorded does not happen.
    let log = super::open_log(args.audit_config.as_deref())?;
    let digest_key = log
        .as_ref()
        .map(|_| digest_key(&args.subject.key_env))
        .transpose()?;
    let log_paths = match (&args.access_log, &args.audit_config) {
        (paths, _) if !paths.is_empty() => paths.clone(),
        (_, Some(config)) => vec![AuditConfig::from_proxy_config(config)?.dir],
        (_, None) => Vec::new(),
    };

    let client = policy_apply::connect(&args.subject.upstream).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let subject = find_subject(&client, &policy, &args.subject.table, &condition).await?;
    let mut held = Vec::new();
    // `dependants` orders children first; the export starts with the subject's own row.
    for reached in dependants(&subject.table, &condition, &subject.keys, &|_| false)
        .into_iter()
        .rev()
    {
        let rows = count_rows(&client, &reached.table, &reached.predicate).await?;
        let personal =
            declared(&policy, &reached.table).is_some_and(policy::controller::is_personal);
        if rows > 0 || personal {
            held.push(Held {
                live: reached.table,
                predicate: reached.predicate,
                rows,
            });
        }
    }
    let digest = match &digest_key {
        Some(key) => Some(subject_digest(&client, &subject.table, &condition, key).await?),
        None => None,
    };
    let who = WhoSawIt {
        found: match log_paths.is_empty() {
            true => None,
            false => {
                let tables: BTreeSet<String> = held
                    .iter()
                    .filter(|h| h.rows > 0)
                    .map(|h| h.live.display.clone())
                    .collect();
                let digest = digest.as_deref();
                Some(who_saw::accesses(&log_paths, from, to, &tables, digest)?)
            }
        },
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let categories = subject_categories(&client, &policy, &subject.table, &condition).await?;
    let register = policy::register::register(&policy);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let export = Export {
        policy: &policy,
        register: &register,
        held: &held,
    };
    let written = match args.format.as_str() {
        "csv" => export.csv(&client, &mut out, &who).await,
        _ => {
            export
                .json(&client, &mut out, &subject.table, &categories, &who)
                .await
        }
    };
    let written = written.and_then(|()| out.flush().context("writing the export"));
    drop(out);

    let rows: i64 = held.iter().map(|h| h.rows).sum();
    let detail: Vec<String> = held
        .iter()
        .map(|h| format!("{}: {}", h.live.display, h.rows))
        .collect();
    // Recorded even when writing failed part way: some of the data may have been written out.
    if let Some(log) = log {
        let mut event = Event::new(EventKind::SubjectExport);
        event.rows = Some(rows as u64);
        event.detail = Some(format!("{} export: {}", args.format, detail.join("; ")));
        event.subjects = digest.map(|d| vec![d]);
        event.tables = held
            .iter()
            .filter(|h| h.rows > 0)
            .map(|h| touched(&policy, h))
            .collect();
        if let Err(err) = &written {
            event.outcome = Outcome::Error {
                sqlstate: sqlstate_of(err),
            };
        }
        super::record_event(log, event).await?;
    }
    written?;
    client.batch_execute("COMMIT").await?;
    eprintln!(
        "exported {rows} rows from {} tables ({})",
        held.iter().filter(|h| h.rows > 0).count(),
        detail.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}

/// The SQLSTATE of a failed export: PostgreSQL's, else 58030 (an I/O error writing the output).
fn sqlstate_of(err: &anyhow::Error) -> String {
    err.chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(|e| e.code())
        .map_or_else(|| "58030".to_string(), |c| c.code().to_string())
}

/// The table in the access record: its name and the categories of personal data it holds.
fn touched(policy: &Policy, held: &Held) -> TableTouched {
    let (schema, name) = held
        .live
        .display
        .split_once('.')
        .unwrap_or(("public", &held.live.display));
    let mut t = TableTouched::new(TableName::new(schema, name));
    t.operations = vec!["read".into()];
    if let Some(table) = declared(policy, &held.live) {
        t.categories = categories_of(table);
    }
    t
}

/// The policy's declaration of a live table, if any.
fn declared<'p>(policy: &'p Policy, live: &LiveTable) -> Option<&'p Table> {
    policy
        .tables
        .values()
        .find(|t| t.name.to_string() == live.display)
}

/// The categories of personal data a table holds (its columns' and its own), sorted.
fn categories_of(table: &Table) -> Vec<Category> {
    let mut all: Vec<Category> = table
        .columns
        .values()
        .filter_map(|c| c.category)
        .chain(table.personal)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The declared categories of data subjects (`[data_subjects]`) the subject's row falls in.
async fn subject_categories(
    client: &Client,
    policy: &Policy,
    table: &LiveTable,
    condition: &str,
) -> Result<Vec<String>> {
    let Some(declared) = declared(policy, table) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for category in policy.record_keeping.subjects_of(&declared.key) {
        let within = match category.conditions.get(&declared.key) {
            Some(extra) => {
                count_rows(client, table, &format!("({condition}) AND ({extra})")).await? > 0
            }
            None => true,
        };
        if within {
            found.push(category.name.clone());
        }
    }
    Ok(found)
}

/// The policy's view of the tables holding the subject's data.
struct Export<'a> {
    policy: &'a Policy,
    register: &'a Register,
    held: &'a [Held],
}

impl Export<'_> {
    /// Per category of personal data in `table`: its columns and, per role that processes it, the
    /// purpose, lawful basis, recipients, transfers, automated decision-making and what the role sees
    /// (Art. 15(1)(a)-(c), (h)).
    fn categories(&self, table: &Table) -> Value {
        let categories: Vec<Value> = categories_of(table)
            .into_iter()
            .map(|category| {
                let mut columns: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|(_, c)| c.category == Some(category))
                    .map(|(name, _)| name.clone())
                    .collect();
                if table.personal == Some(category) {
                    columns.push("* (every other column)".into());
                }
                let processing: Vec<Value> = self
                    .register
                    .entries
                    .iter()
                    .filter_map(|e| {
                        let seen: serde_json::Map<String, Value> = e
                            .personal_data
                            .iter()
                            .filter(|i| i.table == table.key && i.category == category)
                            .map(|i| (i.column.clone(), Value::String(i.action.clone())))
                            .collect();
                        (!seen.is_empty()).then(|| {
                            json!({
                                "role": e.role,
                                "purpose": e.purpose,
                                "lawful_basis": e.lawful_basis,
                                "recipients": e.recipients,
                                "transfers": e.transfers,
                                "automated_decisions": self.automated_decisions(&e.role),
                                "as_seen": seen,
                            })
                        })
                    })
                    .collect();
                json!({
                    "category": category.as_str(),
                    "columns": columns,
                    "processing": processing,
                })
            })
            .collect();
        Value::Array(categories)
    }

    /// Retention of a table in words (stated, enforced, or a gap).
    fn retention(&self, table: &Table) -> String {
        let stated = self.policy.record_keeping.retention_periods.get(&table.key);
        retention_text(table, stated)
            .split_once(": ")
            .map(|(_, text)| text.to_string())
            .unwrap_or_default()
    }

    /// Where a table's data comes from (Art. 15(1)(g)).
    fn source(&self, table: &Table) -> String {
        self.policy
            .record_keeping
            .sources
            .get(&table.key)
            .cloned()
            .unwrap_or_else(|| "not declared in the policy".into())
    }

    /// A role's automated decision-making, profiling included (Art. 15(1)(h)).
    fn automated_decisions(&self, role: &str) -> String {
        self.policy
            .record_keeping
            .automated_decisions
            .get(role)
            .cloned()
            .unwrap_or_else(|| "not declared in the policy".into())
    }

    /// The JSON document: request, controller, tables (with the rows streamed), who saw it.
    async fn json(
        &self,
        client: &Client,
        out: &mut impl Write,
        subject_table: &LiveTable,
        subject_categories: &[String],
        who: &WhoSawIt,
    ) -> Result<()> {
        let now = OffsetDateTime::now_utc().format(&Rfc3339)?;
        let request = json!({
            "rights": "GDPR Art. 15 (access) and Art. 20 (data portability)",
            "generated_at": now,
            "subject_table": subject_table.display,
            "data_subject_categories": subject_categories,
            "rows": self.held.iter().map(|h| h.rows).sum::<i64>(),
        });
        write!(
            out,
            "{{\n\"request\": {request},\n\"controller\": {},\n\"tables\": [",
            serde_json::to_string(&self.register.controller)?
        )?;
        for (i, held) in self.held.iter().enumerate() {
            let about = match declared(self.policy, &held.live) {
                Some(table) => json!({
                    "categories": self.categories(table),
                    "retention": self.retention(table),
                    "source": self.source(table),
                }),
                None => json!({
                    "categories": [],
                    "retention": "not declared in the policy",
                    "source": "not declared in the policy",
                    "note": "this table is not declared in the policy: no purpose, lawful basis or recipient is recorded for it",
                }),
            };
            let head = json!({"table": held.live.display, "rows": held.rows});
            let head = merge(head, about);
            let head = serde_json::to_string(&head)?;
            // The object without its closing brace, then the data array streamed into it.
            let open = head.strip_suffix('}').unwrap_or(&head);
            write!(out, "{}\n{open},\"data\": [", if i == 0 { "" } else { "," })?;
            let mut first = true;
            stream(
                client,
                &format!(
                    "SELECT row_to_json(t)::text FROM {} t WHERE {}",
                    held.live.sql, held.predicate
                ),
                |row| {
                    let text: String = row.get(0);
                    let comma = if first { "" } else { "," };
                    first = false;
                    write!(out, "{comma}\n{text}")?;
                    Ok(())
                },
            )
            .await?;
            write!(out, "\n]}}")?;
        }
        let who_saw_it = match &who.found {
            Some(found) => json!({
                "from": who.from,
                "to": who.to,
                "note": who_saw::NOTE,
                "unreadable_log_lines": found.unreadable,
                "accesses": found.accesses,
                "earlier_requests": found.requests,
            }),
            None => json!({
                "note": "no access log was given (--audit-config or --access-log): who read this data is not reported",
            }),
        };
        writeln!(out, "\n],\n\"who_saw_it\": {who_saw_it}\n}}")?;
        Ok(())
    }

    /// CSV (RFC 4180): per table one `table` line (its categories, row count, retention and source:
    /// 0 rows says what is not held), then one line per stored value (`data`), with the purposes, lawful
    /// bases, recipients, retention, source and automated decision-making of its column; then one line
    /// per reader from the access log (`access`).
    async fn csv(&self, client: &Client, out: &mut impl Write, who: &WhoSawIt) -> Result<()> {
        write!(
            out,
            "record,table,row,column,category,value,purposes,lawful_bases,recipients,retention,source,automated_decisions\r\n"
        )?;
        for held in self.held {
            let table = declared(self.policy, &held.live);
            let table_field = csv_field(&held.live.display);
            let retention = table.map(|t| self.retention(t)).unwrap_or_default();
            let source = table.map(|t| self.source(t)).unwrap_or_default();
            let categories = table
                .map(|t| {
                    categories_of(t)
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .join("; ");
            let rows = format!("{} rows", held.rows);
            csv_line(
                out,
                &[
                    "table",
                    &held.live.display,
                    "",
                    "",
                    &categories,
                    &rows,
                    "",
                    "",
                    "",
                    &retention,
                    &source,
                    "",
                ],
            )?;
            let retention = csv_field(&retention);
            let source = csv_field(&source);
            // Per column, computed and quoted once: a subject may have many rows of the same
            // columns. The line is `data,table,row,column,` + category + `,value,` + the rest.
            let mut processing: HashMap<String, (String, String)> = HashMap::new();
            stream(
                client,
                &format!(
                    "SELECT r.n::text, j.key, j.value FROM
                     (SELECT row_number() OVER () AS n, row_to_json(t) AS j FROM {} t WHERE {}) r,
                     LATERAL json_each_text(r.j) j",
                    held.live.sql, held.predicate
                ),
                |row| {
                    let column: &str = row.get(1);
                    let value: Option<&str> = row.get(2);
                    let n: &str = row.get(0);
                    let (head, tail) = processing.entry(column.to_string()).or_insert_with(|| {
                        let [category, purposes, bases, recipients, automated] = match table {
                            Some(t) => self.column_processing(t, column),
                            None => Default::default(),
                        };
                        let head = format!("{},{}", csv_field(column), csv_field(&category));
                        let tail = [purposes, bases, recipients]
                            .iter()
                            .map(|f| csv_field(f))
                            .chain([retention.clone(), source.clone(), csv_field(&automated)])
                            .collect::<Vec<_>>()
                            .join(",");
                        (head, tail)
                    });
                    let value = csv_field(value.unwrap_or_default());
                    write!(out, "data,{table_field},{n},{head},{value},{tail}\r\n")?;
                    Ok(())
                },
            )
            .await?;
        }
        let Some(found) = &who.found else {
            return Ok(());
        };
        for a in &found.accesses {
            let categories: Vec<&str> = a.categories.iter().map(String::as_str).collect();
            let summary = format!(
                "role {} user {}: {} statements from {} to {}",
                a.role, a.user, a.statements, a.first, a.last
            );
            let categories = categories.join("; ");
            let fields = [
                "access",
                &a.table,
                "",
                "",
                &categories,
                &summary,
                "",
                "",
                "",
                "",
                "",
                "",
            ];
            csv_line(out, &fields)?;
        }
        for r in &found.requests {
            let summary = format!("{} by {} at {}", r.event, r.user, r.time);
            let mut fields = [""; 12];
            fields[0] = "request";
            fields[5] = &summary;
            csv_line(out, &fields)?;
        }
        Ok(())
    }

    /// For one column: its category, and `role: text` lists of purposes, lawful bases, recipients and
    /// automated decision-making of the roles that see it.
    fn column_processing(&self, table: &Table, column: &str) -> [String; 5] {
        let Some(category) = table.category(column) else {
            return Default::default();
        };
        let roles: Vec<_> = self
            .register
            .entries
            .iter()
            .filter(|e| {
                e.personal_data.iter().any(|i| {
                    i.table == table.key
                        && i.category == category
                        && (i.column == column || i.column == "*")
                })
            })
            .collect();
        let each = |text: &dyn Fn(&policy::register::Entry) -> String| {
            roles
                .iter()
                .map(|e| format!("{}: {}", e.role, text(e)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        [
            category.as_str().to_string(),
            each(&|e| e.purpose.clone()),
            each(&|e| e.lawful_basis.clone()),
            each(&|e| {
                e.recipients
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.category))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            each(&|e| self.automated_decisions(&e.role)),
        ]
    }
}

/// `a` with the fields of `b` added.
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Runs `sql` through a cursor, `BATCH` rows at a time, calling `each` per row.
async fn stream(
    client: &Client,
    sql: &str,
    mut each: impl FnMut(&tokio_postgres::Row) -> Result<()>,
) -> Result<()> {
    client
        .batch_execute(&format!(
            "DECLARE subject_export NO SCROLL CURSOR FOR {sql}"
        ))
        .await
        .context("reading the subject's rows")?;
    loop {
        let rows = client
            .query(&format!("FETCH {BATCH} FROM subject_export"), &[])
            .await?;
        for row in &rows {
            each(row)?;
        }
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    client.batch_execute("CLOSE subject_export").await?;
    Ok(())
}

fn csv_line(out: &mut impl Write, fields: &[&str]) -> Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(csv_field(field).as_bytes())?;
    }
    out.write_all(b"\r\n")?;
    Ok(())
}
