//! What one role may do with each table: the compiled form of a policy that the statement rewriter and
//! the audit log read. This is the contract between the policy model (which produces it) and the
//! rewriter (which consumes it); it holds no parsing and no SQL generation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A table as PostgreSQL names it: schema and name, both as stored in the catalog (case preserved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// GDPR category of a personal column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Identifying,
    Contact,
    NationalIdentifier,
    Location,
    Financial,
    FreeText,
    ConsentRecord,
    /// Special category, GDPR Art. 9 (health, religion, ...).
    SpecialCategory,
    /// Criminal convictions and offences, GDPR Art. 10.
    Criminal,
    /// Not a GDPR category: credentials and secrets (password hashes, tokens, API keys). Like Art. 9/10
    /// data, never shown to a restricted role unless its rule names the column (see `crate::framework`).
    Secret,
}

impl Category {
    /// The name used in the policy file and the access log, e.g. `national_identifier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Identifying => "identifying",
            Category::Contact => "contact",
            Category::NationalIdentifier => "national_identifier",
            Category::Location => "location",
            Category::Financial => "financial",
            Category::FreeText => "free_text",
            Category::ConsentRecord => "consent_record",
            Category::SpecialCategory => "special_category",
            Category::Criminal => "criminal",
            Category::Secret => "secret",
        }
    }

    pub fn all() -> &'static [Category] {
        &[
            Category::Identifying,
            Category::Contact,
            Category::NationalIdentifier,
            Category::Location,
            Category::Financial,
            Category::FreeText,
            Category::ConsentRecord,
            Category::SpecialCategory,
            Category::Criminal,
            Category::Secret,
        ]
    }

    pub fn parse(name: &str) -> Option<Category> {
        Category::all().iter().copied().find(|c| c.as_str() == name)
    }
}

/// What a role sees of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The plain value.
    Show,
    /// The column does not exist for the role.
    Drop,
    /// The column is present and always NULL.
    Null,
    /// Always this value; the string is a SQL literal of the column's type (validated by the policy).
    Constant(String),
    /// `m***@example.it`.
    MaskEmail,
    /// Every character but the last n replaced by `*`.
    MaskLast(u32),
    /// Every character but the first n replaced by `*`.
    MaskFirst(u32),
    /// First letter and a dot.
    MaskInitial,
    /// The first `prefix` characters, then `padding`, then the last `suffix` characters.
    Partial {
        prefix: u32,
        padding: String,
        suffix: u32,
    },
    /// Salted hash (hex text); not joinable across installations.
    Hash,
    /// Keyed deterministic pseudonym (hex text): equal inputs give equal outputs in every table.
    Pseudonym,
    /// Keyed pseudonym scoped by the table as well (`pseudonym.table`): joins to nothing else.
    TablePseudonym,
    /// Free text with e-mail addresses, phone numbers, IBANs and national identifiers replaced by
    /// placeholders (`[email]`, `[phone]`, ...); the rest of the text stays.
    Redact,
    /// A date or timestamp truncated to 1 January of its year.
    Year,
    /// A date or timestamp truncated to the first day of its month.
    Month,
    /// A number rounded down to a multiple of the width.
    Bucket(u64),
    /// JSON with its keys, numbers, booleans and structure kept and every non-empty string value
    /// replaced by `"***"` (see `crate::framework`).
    JsonMask,
    /// JSON with its keys and structure kept and each string value redacted as `Redact` does.
    JsonRedact,
}

impl Action {
    /// Whether the role reads the stored value unchanged (and so may filter, sort and write on it).
    pub fn is_show(&self) -> bool {
        matches!(self, Action::Show)
    }

    /// Whether a role that may insert may set this column in a new row although it reads it masked:
    /// the redactions (a new row's text is the caller's own; an update writes it back only unchanged).
    pub fn insertable_masked(&self) -> bool {
        matches!(self, Action::Redact | Action::JsonRedact)
    }
}

/// Which writes a role may make to a table (through its view, so the row filter's check option holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Writes {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
}

/// One column of a table as a role has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAccess {
    pub name: String,
    /// `None` when the column holds no personal data.
    pub category: Option<Category>,
    pub action: Action,
    /// Whether the role may set this column in INSERT and UPDATE as written: `Show` columns, and masked
    /// ones the rule lists in `writable` (others are only written back, see `crate::write_back`).
    pub writable: bool,
}

/// What a role may do with one table the policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableAccess {
    /// The table does not exist for the role.
    Denied {
        /// The categories of the table's personal columns, for the access log.
        categories: BTreeSet<Category>,
    },
    /// The role reads (and maybe writes) the table through its view `view_schema.view`.
    View(ViewAccess),
}

/// A table that a role reaches through its view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewAccess {
    /// Name of the view inside the role's view schema (the table's own name).
    pub view: String,
    /// Every column of the table in table order, dropped ones included (with `Action::Drop`).
    pub columns: Vec<ColumnAccess>,
    /// Whether a row filter applies (rows may be hidden).
    pub filtered: bool,
    pub writes: Writes,
}

impl ViewAccess {
    pub fn column(&self, name: &str) -> Option<&ColumnAccess> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// What happens to a table the policy does not name, for a restricted role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnlistedTables {
    #[default]
    Deny,
    /// The role reads and writes it as the base table (its login is granted it by `policy apply`).
    Pass,
    /// The role reads it as the base table (SELECT only; writes are refused with 42501).
    Read,
}

/// Everything the rewriter needs to know about one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAccess {
    pub role: String,
    /// A role such as `dpo` that keeps full rights and gets no views: statements pass unchanged.
    pub unrestricted: bool,
    /// The schema holding this role's views, e.g. `maschera_sales`.
    pub view_schema: String,
    /// Tables the policy names.
    pub tables: BTreeMap<TableName, TableAccess>,
    pub unlisted: UnlistedTables,
    /// User-defined functions the policy allows this role to call (qualified `schema.name`).
    pub allowed_functions: BTreeSet<String>,
    /// LISTEN/NOTIFY channels the role may use (exact names, as PostgreSQL has them after folding).
    pub channels: BTreeSet<String>,
    /// Whether a delete or key update whose foreign-key cascade reaches a table the role may not
    /// see or change is refused (`settings.cascading_deletes`; see `crate::cascade`).
    pub cascading_deletes: CascadingDeletes,
    /// The masked columns the role may find rows by, by exact value (`lookup = [...]`; see
    /// `crate::lookup_sql`). Empty unless the policy opts in.
    pub lookups: Lookups,
}

/// A role's lookups: per table, the columns it may find rows by, and how many lookups a user of the
/// role may make per minute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lookups {
    pub tables: BTreeMap<TableName, BTreeMap<String, LookupColumn>>,
    pub per_minute: u32,
}

impl Lookups {
    /// The lookup of `column` of `table`, if the role has one.
    pub fn get(&self, table: &TableName, column: &str) -> Option<&LookupColumn> {
        self.tables
            .get(table)
            .and_then(|columns| columns.get(column))
    }
}

/// One column a role may find rows by: the function (in the role's view schema) that returns the
/// primary-key values of the rows inside the role's row filter whose column equals its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupColumn {
    pub function: String,
    /// The table's (single-column) primary key, shown to the role.
    pub key: String,
}

/// `settings.cascading_deletes`: what happens to a delete (or key update) that would cascade through a
/// foreign key into rows the role may not see or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CascadingDeletes {
    /// PostgreSQL cascades as the schema says (`policy check --upstream` warns).
    #[default]
    Allow,
    /// The proxy refuses the statement (42501, naming the table the cascade would reach).
    Refuse,
}

/// What a foreign key does to the referencing rows when the referenced row is deleted or its key
/// changes (`ON DELETE ...`, `ON UPDATE ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKeyAction {
    /// `NO ACTION` or `RESTRICT`: the statement fails instead.
    Refuse,
    Cascade,
    SetNull,
    SetDefault,
}

impl ForeignKeyAction {
    /// From `pg_constraint.confdeltype` / `confupdtype`.
    pub fn from_pg(code: &str) -> ForeignKeyAction {
        match code {
            "c" => ForeignKeyAction::Cascade,
            "n" => ForeignKeyAction::SetNull,
            "d" => ForeignKeyAction::SetDefault,
            _ => ForeignKeyAction::Refuse,
        }
    }

    pub fn as_sql(self) -> &'static str {
        match self {
            ForeignKeyAction::Refuse => "NO ACTION",
            ForeignKeyAction::Cascade => "CASCADE",
            ForeignKeyAction::SetNull => "SET NULL",
            ForeignKeyAction::SetDefault => "SET DEFAULT",
        }
    }
}

/// A foreign key of the live database: `table (columns)` references `referenced (referenced_columns)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub table: TableName,
    pub columns: Vec<String>,
    pub referenced: TableName,
    pub referenced_columns: Vec<String>,
    pub on_delete: ForeignKeyAction,
    pub on_update: ForeignKeyAction,
}

/// One column as the live database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    /// PostgreSQL's type name as `format_type` prints it, e.g. `bigint`, `text`, `numeric(12,2)`.
    pub data_type: String,
}

/// The user tables (and views) of the live database, read by the proxy at start and on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub tables: BTreeMap<TableName, Vec<CatalogColumn>>,
    /// The schemas an unqualified name is looked up in, in order (normally `["public"]`).
    pub search_path: Vec<String>,
    /// The foreign keys between these tables (empty for a catalog derived from the policy alone).
    pub foreign_keys: Vec<ForeignKey>,
    /// Each table's primary-key columns, in key order (empty for a catalog derived from the policy).
    pub primary_keys: BTreeMap<TableName, Vec<String>>,
    /// Each table's primary key and unique constraints or indexes on plain columns (not partial), as
    /// column lists: what `ON CONFLICT DO NOTHING` without a target means (empty when not read).
    pub unique_keys: BTreeMap<TableName, Vec<Vec<String>>>,
}

impl Catalog {
    /// Resolves a possibly unqualified table name the way PostgreSQL would with `search_path`.
    pub fn resolve(&self, schema: Option<&str>, name: &str) -> Option<TableName> {
        match schema {
            Some(schema) => {
                let key = TableName::new(schema, name);
                self.tables.contains_key(&key).then_some(key)
            }
            None => self
                .search_path
                .iter()
                .map(|schema| TableName::new(schema.as_str(), name))
                .find(|key| self.tables.contains_key(key)),
        }
    }
}
/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER: usize = 63;

/// Whether `name` is a plain lower-case SQL identifier (letters, digits, `_`, not starting with a digit).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_IDENTIFIER
}

/// What a column the role may not see becomes in its view (`dropped_columns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenColumns {
    /// The column is not in the view (a statement naming it is refused).
    #[default]
    Drop,
    /// The column stays in the view, always NULL: ORMs that select every mapped column keep working.
    Null,
}

impl HiddenColumns {
    pub const CHOICES: &'static [(&'static str, HiddenColumns)] =
        &[("drop", HiddenColumns::Drop), ("null", HiddenColumns::Null)];

    /// `action` as this setting renders a hidden column.
    pub fn apply(self, action: Action) -> Action {
        match (self, action) {
            (HiddenColumns::Null, Action::Drop) => Action::Null,
            (_, action) => action,
        }
    }
}

/// A catalog of `public` tables for unit tests: `(table, [(column, type)])`.
#[cfg(test)]
pub(crate) fn catalog_of(tables: &[(&str, &[(&str, &str)])]) -> Catalog {
    let tables = tables
        .iter()
        .map(|(table, columns)| {
            let columns = columns.iter().map(|(name, ty)| CatalogColumn {
                name: name.to_string(),
                data_type: ty.to_string(),
            });
            (TableName::new("public", *table), columns.collect())
        })
        .collect();
    Catalog {
        tables,
        search_path: vec!["public".into()],
        ..Catalog::default()
    }
}
