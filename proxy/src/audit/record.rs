//! What one line of the access log says: the event a caller records (a statement, a login, a policy
//! reload...) and the envelope the writer adds (sequence number, time, proxy instance, file link or
//! checkpoint). Plain serde structs, one JSON object per line.
//! Not for: the MAC that seals each line (see `chain`), writing or reading files.
//!
//! No personal value is ever stored here: statements arrive normalized (literals replaced by placeholders,
//! see `normalize`), refusals carry the proxy's own message, errors only their SQLSTATE.
//! Readers tolerate fields they do not know, so later versions may add fields (e.g. `subjects`).

use policy::access::{Action, Category, TableName};
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
}

impl ColumnAction {
    /// What a role's policy action means for the log: the plain value is `shown`, a column the role
    /// does not have is `dropped`, every other action (masks, pseudonyms, NULL, constants, buckets...)
    /// is `masked`.
    pub fn from_policy(action: &Action) -> Self {
        match action {
            Action::Show => ColumnAction::Shown,
            Action::Drop => ColumnAction::Dropped,
            _ => ColumnAction::Masked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ColumnAction::Shown => "shown",
            ColumnAction::Masked => "masked",
            ColumnAction::Dropped => "dropped",
            ColumnAction::Filtered => "filtered",
            ColumnAction::Denied => "denied",
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
}

impl Outcome {
    /// `ok`, `refused` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused { .. } => "refused",
            Outcome::Error { .. } => "error",
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Outcome::Ok => None,
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
            statement_kind: None,
            statement: None,
            tables: Vec::new(),
            rows: None,
            outcome: Outcome::Ok,
            duration_us: None,
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

mod table_serde {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Table {
        schema: String,
        name: String,
    }

    pub fn serialize<S: Serializer>(value: &TableName, s: S) -> Result<S::Ok, S::Error> {
        Table {
            schema: value.schema.clone(),
            name: value.name.clone(),
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
    fn policy_actions_map_to_what_the_log_says() {
        assert_eq!(
            ColumnAction::from_policy(&Action::Show),
            ColumnAction::Shown
        );
        assert_eq!(
            ColumnAction::from_policy(&Action::Drop),
            ColumnAction::Dropped
        );
        for masked in [
            Action::Null,
            Action::MaskEmail,
            Action::Pseudonym,
            Action::Bucket(10),
            Action::Year,
        ] {
            assert_eq!(ColumnAction::from_policy(&masked), ColumnAction::Masked);
        }
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
