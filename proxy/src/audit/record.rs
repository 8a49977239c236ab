//! What one line of the access log says: the event a caller records (a statement, a login, a policy
//! reload...) and the envelope the writer adds (sequence number, time, proxy instance, file link or
//! checkpoint). Plain serde structs, one JSON object per line.
//! Not for: the MAC that seals each line (see `chain`), writing or reading files.
//!
//! No personal value is ever stored here: statements arrive normalized (literals replaced by placeholders,
//! see `normalize`), refusals carry the proxy's own message, errors only their SQLSTATE.
//! Readers tolerate fields they do not know, so later versions may add fields (e.g. `subjects`).

use policy::access::{Category, TableName};
use policy::rewrite::{TableOperation, TableRoute, TableUse};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What happened. `Checkpoint` and `FileStart` are written by the log itself, never by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Statement,
    LoginOk,
    LoginFailed,
    Lockout,
    PolicyReload,
    PolicyApply,
    RetentionRun,
    Erasure,
    /// `maschera subject export`: one data subject's data written out (Art. 15, 20); tables and counts.
    SubjectExport,
    /// An application user set, changed or cleared its end user (`SET maschera.end_user`), or the
    /// token was refused (the check that failed in `detail`; never the token).
    EndUser,
    /// How a statement recorded earlier (`statement_seq`) ended: rows, outcome, duration.
    Outcome,
    Checkpoint,
    FileStart,
    /// A kind written by a later version of Maschera.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// Whether only the log itself writes this kind.
    pub fn is_reserved(self) -> bool {
        matches!(
            self,
            EventKind::Checkpoint | EventKind::FileStart | EventKind::Unknown
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Statement => "statement",
            EventKind::LoginOk => "login_ok",
            EventKind::LoginFailed => "login_failed",
            EventKind::Lockout => "lockout",
            EventKind::PolicyReload => "policy_reload",
            EventKind::PolicyApply => "policy_apply",
            EventKind::RetentionRun => "retention_run",
            EventKind::Erasure => "erasure",
            EventKind::SubjectExport => "subject_export",
            EventKind::EndUser => "end_user",
            EventKind::Outcome => "outcome",
            EventKind::Checkpoint => "checkpoint",
            EventKind::FileStart => "file_start",
            EventKind::Unknown => "unknown",
        }
    }
}

/// What the proxy did to one column for this statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnAction {
    /// The caller received the stored value.
    Shown,
    /// The caller received a masked, pseudonymised or generalised value.
    Masked,
    /// The column does not exist for the caller's role.
    Dropped,
    /// The column took part in a row filter.
    Filtered,
    /// The statement asked for the column and was refused.
    Denied,
    /// The statement found rows by the column's exact value (a lookup; the value is never logged).
    Lookup,
}

impl ColumnAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnAction::Shown => "shown",
            ColumnAction::Masked => "masked",
            ColumnAction::Dropped => "dropped",
            ColumnAction::Filtered => "filtered",
            ColumnAction::Denied => "denied",
            ColumnAction::Lookup => "lookup",
        }
    }
}

/// One column a statement touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnTouched {
    pub name: String,
    /// `None` for a column that holds no personal data.
    #[serde(
        default,
        with = "category_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub category: Option<Category>,
    pub action: ColumnAction,
}

/// One table a statement touched, with the columns it read or wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableTouched {
    #[serde(with = "table_serde")]
    pub table: TableName,
    #[serde(default)]
    pub columns: Vec<ColumnTouched>,
    /// Whether the role's row filter limited the rows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub row_filtered: bool,
    /// How the statement used the table: `read`, `insert`, `update`, `delete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// Categories of personal data involved: of the columns, or of the whole table when it was denied.
    #[serde(
        default,
        with = "categories_serde",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub categories: Vec<Category>,
}

impl TableTouched {
    /// A table with nothing recorded yet.
    pub fn new(table: TableName) -> Self {
        Self {
            table,
            columns: Vec::new(),
            row_filtered: false,
            operations: Vec::new(),
            categories: Vec::new(),
        }
    }

    /// What the policy rewriter reports about a table a statement used (`RewrittenStatement::tables`,
    /// `Refusal::tables`). Columns of a table the role does not have are recorded as `denied`.
    pub fn from_use(table_use: &TableUse) -> Self {
        let denied = table_use.route == TableRoute::Denied;
        let columns = table_use
            .columns
            .iter()
            .map(|(name, column)| ColumnTouched {
                name: name.clone(),
                category: column.category,
                action: if denied {
                    ColumnAction::Denied
                } else {
                    ColumnAction::from(column.action)
                },
            })
            .collect();
        let operations = table_use
            .operations
            .iter()
            .map(|op| {
                match op {
                    TableOperation::Read => "read",
                    TableOperation::Insert => "insert",
                    TableOperation::Update => "update",
                    TableOperation::Delete => "delete",
                }
                .to_string()
            })
            .collect();
        Self {
            table: table_use.table.clone(),
            columns,
            row_filtered: table_use.filtered,
            operations,
            categories: table_use.categories.iter().copied().collect(),
        }
    }
}

impl From<policy::rewrite::ColumnAction> for ColumnAction {
    fn from(action: policy::rewrite::ColumnAction) -> Self {
        match action {
            policy::rewrite::ColumnAction::Shown => ColumnAction::Shown,
            policy::rewrite::ColumnAction::Masked => ColumnAction::Masked,
            policy::rewrite::ColumnAction::Dropped => ColumnAction::Dropped,
            policy::rewrite::ColumnAction::Lookup => ColumnAction::Lookup,
        }
    }
}

/// How a statement (or a login, a reload...) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    Ok,
    /// The proxy refused it; `message` is the proxy's own reason (names, never values).
    Refused {
        sqlstate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// PostgreSQL (or the proxy) answered with an error. Only the code: server messages can hold values.
    Error {
        sqlstate: String,
    },
    /// Not known when the record was written: a statement's access record, written when the statement
    /// was sent, says `unknown`; its `outcome` record (when there is one) tells how it ended.
    Unknown,
}

impl Outcome {
    /// `ok`, `refused` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused { .. } => "refused",
            Outcome::Error { .. } => "error",
            Outcome::Unknown => "unknown",
        }
    }

    /// The outcome of a statement the rewriter refused (its SQLSTATE and its value-free message).
    pub fn refused(refusal: &policy::rewrite::Refusal) -> Self {
        Outcome::Refused {
            sqlstate: refusal.sqlstate.code().to_string(),
            message: Some(refusal.message.clone()),
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Outcome::Ok | Outcome::Unknown => None,
            Outcome::Refused { sqlstate, .. } | Outcome::Error { sqlstate } => Some(sqlstate),
        }
    }
}

/// What a caller records: everything but the envelope (sequence number, time, instance) and the MAC.
/// Fill in what applies to the event kind and leave the rest `None`/empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "event")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Client address as `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// The end user an application user (`user`) acted for (see `end_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    /// The end user's token: its `jti`, or `sha256:` and the start of its digest (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_token: Option<String>,
    /// e.g. `select`, `insert`, `update`, `delete`, `copy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_kind: Option<String>,
    /// The statement with every literal replaced by a placeholder (see `normalize::normalize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableTouched>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// In an `outcome` record: the sequence number of the statement record it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_seq: Option<u64>,
    /// Keys of the data subjects the access returned (reserved for a later version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
    /// Free text without personal values: a policy version, a lockout reason, a retention summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event of this kind with outcome `ok` and nothing else filled in.
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            session: None,
            client: None,
            user: None,
            role: None,
            database: None,
            application_name: None,
            end_user: None,
            end_user_token: None,
            statement_kind: None,
            statement: None,
            tables: Vec::new(),
            rows: None,
            outcome: Outcome::Ok,
            duration_us: None,
            statement_seq: None,
            subjects: None,
            detail: None,
        }
    }
}

/// The first record of every file: links the previous file and says which key epoch the chain uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLink {
    /// Name of the previous file of the chain (`None` for the very first file).
    #[serde(default)]
    pub prev_file: Option<String>,
    /// MAC (hex) of the previous file's last record.
    #[serde(default)]
    pub prev_mac: Option<String>,
    /// Random nonce (hex) from which this epoch's first key derives from the secret.
    pub epoch_nonce: String,
    /// Sequence number of the epoch's first record (a new epoch starts at each proxy start).
    pub epoch_seq: u64,
}

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointReason {
    Periodic,
    Rotation,
    Shutdown,
}

/// A signed statement of the chain's state: "the chain up to this record ends with MAC `head`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub reason: CheckpointReason,
    /// MAC (hex) of the record just before the checkpoint.
    pub head: String,
    /// The file the checkpoint closes or marks.
    pub file: String,
    /// Records in this file before the checkpoint.
    pub records_in_file: u64,
    /// ed25519 signature (hex) over `chain::checkpoint_message`.
    pub signature: String,
}

/// One line of the log, without its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub instance: String,
    #[serde(flatten)]
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<FileLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

mod category_serde {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Category>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(category) => s.serialize_str(category.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Category>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        // A category unknown to this version reads as "no category" rather than failing the line.
        Ok(name.and_then(|n| Category::parse(&n)))
    }
}

mod categories_serde {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[Category], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(|c| c.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Category>, D::Error> {
        let names: Vec<String> = Vec::deserialize(d)?;
        Ok(names.iter().filter_map(|n| Category::parse(n)).collect())
    }
}

mod table_serde {
    use super::*;

    #[derive(Deserialize)]
    struct Table {
        schema: String,
        name: String,
    }

    /// What [`Table`] reads, written without copying the names.
    #[derive(Serialize)]
    struct TableRef<'a> {
        schema: &'a str,
        name: &'a str,
    }

    pub fn serialize<S: Serializer>(value: &TableName, s: S) -> Result<S::Ok, S::Error> {
        TableRef {
            schema: &value.schema,
            name: &value.name,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TableName, D::Error> {
        let t = Table::deserialize(d)?;
        Ok(TableName::new(t.schema, t.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Event {
        let mut e = Event::new(EventKind::Statement);
        e.user = Some("anna".into());
        e.statement = Some("SELECT email FROM customers WHERE id = $1".into());
        e.tables = vec![TableTouched {
            table: TableName::new("public", "customers"),
            columns: vec![ColumnTouched {
                name: "email".into(),
                category: Some(Category::Contact),
                action: ColumnAction::Masked,
            }],
            row_filtered: true,
            operations: vec!["read".into()],
            categories: vec![Category::Contact],
        }];
        e.rows = Some(3);
        e.outcome = Outcome::Refused {
            sqlstate: "42501".into(),
            message: Some("no".into()),
        };
        e
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let record = Record {
            seq: 7,
            time: "2026-01-01T00:00:00Z".into(),
            instance: "a".into(),
            event: statement(),
            link: None,
            checkpoint: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""event":"statement""#), "{json}");
        assert!(json.contains(r#""category":"contact""#), "{json}");
        assert!(
            json.contains(r#""outcome":{"result":"refused","sqlstate":"42501","message":"no"}"#),
            "{json}"
        );
        assert!(
            !json.contains("subjects"),
            "unset optional fields are left out: {json}"
        );
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn the_rewriters_table_uses_become_tables_touched() {
        use policy::rewrite::{ColumnUse, fixture, rewrite};
        let rewritten = rewrite(
            "SELECT email FROM contacts",
            &fixture::role("support"),
            &fixture::catalog(),
        )
        .unwrap();
        let touched: Vec<TableTouched> = rewritten.statements()[0]
            .tables
            .iter()
            .map(TableTouched::from_use)
            .collect();
        assert_eq!(touched.len(), 1, "{touched:?}");
        assert_eq!(touched[0].table, TableName::new("public", "contacts"));
        assert_eq!(touched[0].operations, vec!["read".to_string()]);
        let email = touched[0]
            .columns
            .iter()
            .find(|c| c.name == "email")
            .expect("email recorded");
        assert_eq!(email.category, Some(Category::Contact));
        assert!(touched[0].categories.contains(&Category::Contact));

        let denied = TableUse {
            table: TableName::new("public", "notes"),
            route: TableRoute::Denied,
            operations: vec![TableOperation::Read],
            filtered: false,
            columns: [(
                "body".to_string(),
                ColumnUse {
                    category: Some(Category::FreeText),
                    action: policy::rewrite::ColumnAction::Shown,
                    lookups: 0,
                },
            )]
            .into(),
            categories: [Category::FreeText].into(),
        };
        let touched = TableTouched::from_use(&denied);
        let refusal = rewrite(
            "SELECT * FROM no_such_table_here",
            &fixture::role("support"),
            &fixture::catalog(),
        )
        .expect_err("refused");
        assert!(
            matches!(Outcome::refused(&refusal), Outcome::Refused { ref sqlstate, message: Some(_) } if sqlstate.len() == 5)
        );
        assert_eq!(
            touched.columns[0].action,
            ColumnAction::Denied,
            "a denied table's columns are denied"
        );
        let json = serde_json::to_string(&touched).unwrap();
        assert!(json.contains(r#""categories":["free_text"]"#), "{json}");
    }

    #[test]
    fn readers_tolerate_unknown_fields_and_kinds() {
        let json = r#"{"seq":1,"time":"t","instance":"i","event":"something_new","outcome":{"result":"ok"},
            "future_field":[1,2],"subjects":["c:1"],"mac":"00"}"#;
        let record: Record = serde_json::from_str(json).unwrap();
        assert_eq!(record.event.kind, EventKind::Unknown);
        assert_eq!(record.event.subjects, Some(vec!["c:1".to_string()]));
    }
}
