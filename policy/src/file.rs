//! The policy file as TOML deserializes it: every value keeps its byte span so that validation can say
//! where a problem is. Not for: meaning (see `model`), which these raw structures do not check.

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;

pub type Key = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub settings: Option<SettingsFile>,
    #[serde(default)]
    pub roles: BTreeMap<Key, Spanned<RoleFile>>,
    #[serde(default)]
    pub tables: BTreeMap<Key, Spanned<TableFile>>,
    /// The Art. 30 declarations (see `controller`).
    pub controller: Option<Spanned<ControllerFile>>,
    #[serde(default)]
    pub data_subjects: BTreeMap<Key, Spanned<SubjectsFile>>,
    #[serde(default)]
    pub recipients: BTreeMap<Key, Spanned<RecipientFile>>,
    #[serde(default)]
    pub retention_periods: BTreeMap<Key, Spanned<String>>,
    #[serde(default)]
    pub sources: BTreeMap<Key, Spanned<String>>,
    #[serde(default)]
    pub automated_decisions: BTreeMap<Key, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub unlisted_tables: Option<Spanned<String>>,
    pub attribute_namespace: Option<Spanned<String>>,
    pub cascading_deletes: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub description: Option<Spanned<String>>,
    pub purpose: Option<Spanned<String>>,
    pub lawful_basis: Option<Spanned<String>>,
    #[serde(default)]
    pub recipients: Vec<Spanned<String>>,
    pub unrestricted: Option<Spanned<bool>>,
    /// Overrides `settings.unlisted_tables` for this role (see `crate::framework`).
    pub unlisted_tables: Option<Spanned<String>>,
    /// `"drop"` (default) or `"null"`: what a column the role may not see becomes in its views.
    pub dropped_columns: Option<Spanned<String>>,
    #[serde(default)]
    pub attributes: Vec<Spanned<String>>,
    #[serde(default)]
    pub functions: Vec<Spanned<String>>,
    /// LISTEN/NOTIFY channels the role may use.
    #[serde(default)]
    pub channels: Vec<Spanned<String>>,
    /// How many lookups (`lookup = [...]` in a table rule) a user of the role may make per minute.
    pub lookups_per_minute: Option<Spanned<i64>>,
    #[serde(default)]
    pub tables: BTreeMap<Key, Spanned<RuleFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    pub schema: Option<Spanned<String>>,
    pub personal: Option<Spanned<String>>,
    /// What a restricted role without its own rule gets: `deny` (default), `read`, `write`.
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<Key, Spanned<ColumnFile>>,
    pub retention: Option<Spanned<RetentionFile>>,
    pub erasure: Option<Spanned<ErasureFile>>,
}

/// `[tables.<t>.erasure]`: how `maschera forget` treats the table's rows of a data subject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureFile {
    /// Keep the rows (a legal obligation) with these columns replaced by their masks.
    #[serde(default)]
    pub keep: BTreeMap<Key, Spanned<String>>,
    /// Columns that refer to another table's column without a foreign key: `col = "table.column"`.
    #[serde(default)]
    pub links: BTreeMap<Key, Spanned<String>>,
}

/// `[tables.<t>.retention]`: how long rows are kept and what happens to them afterwards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub column: Spanned<String>,
    pub period: Spanned<String>,
    pub action: Option<Spanned<String>>,
    #[serde(default)]
    pub masks: BTreeMap<Key, Spanned<String>>,
}

/// A column declaration: `email = "contact"` or `birth_date = { category = "identifying", type = "date" }`.
#[derive(Debug, Default)]
pub struct ColumnFile {
    pub category: Option<Spanned<String>>,
    pub data_type: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub show: Vec<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<Key, Spanned<String>>,
    pub filter: Option<Spanned<String>>,
    #[serde(default)]
    pub writes: Vec<Spanned<String>>,
    /// Columns the role reads masked but may write (a changed value is stored).
    #[serde(default)]
    pub writable: Vec<Spanned<String>>,
    pub deny: Option<Spanned<bool>>,
    /// Overrides the role's `dropped_columns` for this table.
    pub dropped_columns: Option<Spanned<String>>,
    /// Masked columns the role may find rows by, by exact value (see `crate::lookup_sql`).
    #[serde(default)]
    pub lookup: Vec<Spanned<String>>,
}

impl<'de> Deserialize<'de> for ColumnFile {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnVisitor;
        impl<'de> Visitor<'de> for ColumnVisitor {
            type Value = ColumnFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a category such as \"contact\", or a table { category = \"...\", type = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ColumnFile, E> {
                // The span of a bare string is the span of the whole value, which `Spanned<ColumnFile>` keeps.
                Ok(ColumnFile {
                    category: Some(Spanned::new(0..0, value.to_string())),
                    data_type: None,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ColumnFile, M::Error> {
                let mut column = ColumnFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "category" => column.category = Some(map.next_value()?),
                        "type" => column.data_type = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["category", "type"]));
                        }
                    }
                }
                Ok(column)
            }
        }
        deserializer.deserialize_any(ColumnVisitor)
    }
}

impl PolicyFile {
    /// The sections `controller::validate` reads.
    pub(crate) fn record_keeping_sections(&self) -> Sections<'_> {
        Sections {
            controller: self.controller.as_ref(),
            data_subjects: &self.data_subjects,
            recipients: &self.recipients,
            retention_periods: &self.retention_periods,
            sources: &self.sources,
            automated_decisions: &self.automated_decisions,
            roles: self.roles.keys().map(|k| k.get_ref().as_str()).collect(),
        }
    }
}

/// `[controller]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerFile {
    pub name: Spanned<String>,
    pub contact: Spanned<String>,
    pub representative: Option<Spanned<String>>,
    pub dpo: Option<Spanned<String>>,
}

/// `[data_subjects.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsFile {
    pub description: Option<Spanned<String>>,
    #[serde(default)]
    pub tables: Vec<Spanned<String>>,
    /// Per table, a SQL condition selecting the rows of this category (`where = { contacts = "..." }`).
    #[serde(default, rename = "where")]
    pub conditions: BTreeMap<Key, Spanned<String>>,
}

/// `[recipients."<name>"]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientFile {
    pub category: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub transfer: Option<Spanned<TransferFile>>,
}

/// `transfer = { country = "...", safeguard = "..." }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferFile {
    pub country: Spanned<String>,
    pub safeguard: Spanned<String>,
}

/// The record-keeping sections of the file (read by `controller`).
pub(crate) struct Sections<'f> {
    pub controller: Option<&'f Spanned<ControllerFile>>,
    pub data_subjects: &'f BTreeMap<Key, Spanned<SubjectsFile>>,
    pub recipients: &'f BTreeMap<Key, Spanned<RecipientFile>>,
    pub retention_periods: &'f BTreeMap<Key, Spanned<String>>,
    pub sources: &'f BTreeMap<Key, Spanned<String>>,
    pub automated_decisions: &'f BTreeMap<Key, Spanned<String>>,
    /// The role names declared under [roles].
    pub roles: Vec<&'f str>,
}
