//! The policy as DBAs mean it, validated: settings, roles (who, why, on which lawful basis), tables and
//! their personal columns, each role's rule per table, each table's retention and erasure, and the
//! Art. 30 record keeping. Plain types and what needs no other module than `access`, `diagnostics`
//! and `filter` (none of which uses this one), so every other module may use them without a cycle.
//! `Policy::parse` (in `validate`) turns the TOML text into this model and reports every problem with
//! file, line and column; the domain modules (`retention`, `erasure`, `controller`, `framework`) parse
//! and use their parts and re-export their types from here. Not for: validation (see `validate`), the
//! live database (see `compile` for checks against a catalog) or SQL generation (see `apply_sql` and
//! `db_lock`).

pub use crate::access::is_identifier;
use crate::access::{
    Action, CascadingDeletes, Category, HiddenColumns, TableName, UnlistedTables, Writes,
};
use crate::diagnostics::{Diagnostic, Source};
use crate::filter::CompiledFilter;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

pub type Span = Range<usize>;

/// The prefix of every database object `policy apply` manages (view schemas, logins, the key schema).
pub const OBJECT_PREFIX: &str = "maschera_";
pub use crate::step::PRIVATE_SCHEMA;

/// A validated policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: String,
    pub text: String,
    pub settings: Settings,
    pub roles: BTreeMap<String, Role>,
    /// Tables by the key the file uses (`contacts` or `crm.contacts`).
    pub tables: BTreeMap<String, Table>,
    /// Controller, categories of data subjects, recipients, stated retention (GDPR Art. 30).
    pub record_keeping: RecordKeeping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub unlisted_tables: UnlistedTables,
    /// Attributes are the settings `<namespace>.<attribute>`; default `maschera`.
    pub attribute_namespace: String,
    /// `cascading_deletes = "allow" | "refuse"`; default `allow`.
    pub cascading_deletes: CascadingDeletes,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub description: Option<String>,
    pub purpose: Option<String>,
    pub lawful_basis: Option<String>,
    pub recipients: Vec<String>,
    pub unrestricted: bool,
    /// `unlisted_tables` of the role itself, overriding the setting's.
    pub unlisted: Option<UnlistedTables>,
    /// `dropped_columns`: what a column the role may not see becomes (its rules may override it).
    pub hidden: HiddenColumns,
    pub attributes: Vec<String>,
    /// User-defined functions the role may call, qualified `schema.name`.
    pub functions: Vec<String>,
    /// LISTEN/NOTIFY channels the role may use (none by default).
    pub channels: Vec<String>,
    /// How many lookups a user of the role may make per minute (see `crate::lookup_sql`).
    pub lookups_per_minute: u32,
    /// Rules by table key.
    pub rules: BTreeMap<String, Rule>,
    pub span: Span,
}

impl Role {
    /// The login and the view schema `policy apply` creates for this role, e.g. `maschera_sales`.
    pub fn login(&self) -> String {
        login_name(&self.name)
    }
}

/// The login (and view schema) name of role `role`.
pub fn login_name(role: &str) -> String {
    format!("{OBJECT_PREFIX}{role}")
}

/// The login of role `role` under a login prefix (`maschera policy apply --login-prefix`, one per
/// served database since logins are cluster-wide); an empty prefix is the default `maschera_`. The
/// view schema keeps the name [`login_name`] (schemas belong to one database).
pub fn prefixed_login(prefix: &str, role: &str) -> String {
    match prefix {
        "" => login_name(role),
        prefix => format!("{prefix}{role}"),
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub key: String,
    pub name: TableName,
    /// A category for every column of the table (e.g. `special_category` for health records).
    pub personal: Option<Category>,
    /// What a restricted role without its own rule gets (`default = "read"`; see `crate::framework`).
    pub default: TableDefault,
    pub columns: BTreeMap<String, DeclaredColumn>,
    /// How long rows are kept (`[tables.<t>.retention]`), if the file says.
    pub retention: Option<Retention>,
    /// How `forget` treats the table (`[tables.<t>.erasure]`): kept columns and links.
    pub erasure: Erasure,
    pub span: Span,
}

impl Table {
    /// The category of a column: its own, else the table's.
    pub fn category(&self, column: &str) -> Option<Category> {
        self.columns
            .get(column)
            .and_then(|c| c.category)
            .or(self.personal)
    }
}

#[derive(Debug, Clone)]
pub struct DeclaredColumn {
    pub category: Option<Category>,
    pub data_type: Option<String>,
    pub span: Span,
}

/// What one role may do with one table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub table: String,
    pub deny: bool,
    /// `show = ["*"]`: every column not of Art. 9/10 category is shown unless `columns` says otherwise.
    pub show_all: bool,
    pub show: Vec<(String, Span)>,
    pub actions: BTreeMap<String, (Action, Span)>,
    pub filter: Option<CompiledFilter>,
    /// Where the filter is written (empty when there is none).
    pub filter_span: Span,
    pub writes: Writes,
    /// What a column this rule hides becomes (`dropped_columns`: the rule's, else the role's).
    pub hidden: HiddenColumns,
    /// Masked columns the role may find rows by, by exact value (`lookup = [...]`), with where.
    pub lookup: Vec<(String, Span)>,
    /// Columns of `actions` (masked, generalised, ...) that the role may write all the same: a value
    /// written back unchanged keeps the stored one, another value is stored (`writable = [...]`).
    pub writable: Vec<String>,
    pub span: Span,
}

impl Rule {
    /// The action this rule gives a column of the given category, applying privacy by default.
    pub fn action_for(&self, column: &str, category: Option<Category>) -> Action {
        if let Some((action, _)) = self.actions.get(column) {
            return self.hidden.apply(action.clone());
        }
        if self.show.iter().any(|(c, _)| c == column) {
            return Action::Show;
        }
        self.hidden.apply(match category {
            None => Action::Show,
            Some(Category::SpecialCategory | Category::Criminal | Category::Secret) => Action::Drop,
            Some(_) if self.show_all => Action::Show,
            Some(_) => Action::Drop,
        })
    }

    /// Every column name the rule mentions, with where.
    pub fn mentioned_columns(&self) -> impl Iterator<Item = (&str, &Span)> {
        self.show
            .iter()
            .map(|(c, s)| (c.as_str(), s))
            .chain(self.actions.iter().map(|(c, (_, s))| (c.as_str(), s)))
    }
}

impl Policy {
    /// A diagnostic at a span of this policy's file.
    pub fn error_at(
        &self,
        span: &Span,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        Source::new(&self.file, &self.text).error(span.clone(), message, help)
    }

    /// The roles that get views and a login (every role not `unrestricted`).
    pub fn restricted_roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values().filter(|r| !r.unrestricted)
    }

    /// The table a rule or a catalog name refers to.
    pub fn table_by_name(&self, name: &TableName) -> Option<&Table> {
        self.tables.values().find(|t| &t.name == name)
    }
}

/// `[tables.<t>] default`: what a restricted role that has no rule of its own for the table gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableDefault {
    /// The table does not exist for the role (as for any table without a rule).
    #[default]
    Deny,
    /// Read only: non-personal columns shown, personal ones hidden by privacy by default.
    Read,
    /// As `Read`, and the role may insert, update and delete (setting shown columns only).
    Write,
}

impl TableDefault {
    pub const CHOICES: &'static [(&'static str, TableDefault)] = &[
        ("deny", TableDefault::Deny),
        ("read", TableDefault::Read),
        ("write", TableDefault::Write),
    ];

    /// The rule a role without its own gets for `table`, if any.
    pub fn rule(self, table: &Table, hidden: HiddenColumns) -> Option<Rule> {
        let writes = match self {
            TableDefault::Deny => return None,
            TableDefault::Read => Writes::default(),
            TableDefault::Write => Writes {
                insert: true,
                update: true,
                delete: true,
            },
        };
        Some(Rule {
            table: table.key.clone(),
            deny: false,
            show_all: false,
            show: Vec::new(),
            actions: Default::default(),
            filter: None,
            filter_span: 0..0,
            writes,
            hidden,
            lookup: Vec::new(),
            writable: Vec::new(),
            span: table.span.clone(),
        })
    }
}

/// The Art. 30 declarations of a policy, validated.
#[derive(Debug, Clone, Default)]
pub struct RecordKeeping {
    pub controller: Option<Controller>,
    /// In the file's order of names (alphabetical).
    pub data_subjects: Vec<SubjectCategory>,
    /// By the name roles use in `recipients`.
    pub recipients: BTreeMap<String, Recipient>,
    /// Per table key, the retention period in words.
    pub retention_periods: BTreeMap<String, String>,
    /// Per table key, where its personal data comes from (Art. 14(2)(f), 15(1)(g)).
    pub sources: BTreeMap<String, String>,
    /// Per role name, `none` or the automated decision-making it does and its logic (Art. 15(1)(h)).
    pub automated_decisions: BTreeMap<String, String>,
}

/// Art. 30(1)(a): who is responsible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub name: String,
    pub contact: String,
    pub representative: Option<String>,
    pub dpo: Option<String>,
}

/// Art. 30(1)(c): one category of people and where their data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectCategory {
    pub name: String,
    pub description: Option<String>,
    /// Table keys.
    pub tables: Vec<String>,
    /// Per table key, the condition selecting this category's rows (all rows when absent).
    pub conditions: BTreeMap<String, String>,
}

/// Art. 30(1)(d)(e): who receives the data, of which kind, and whether it leaves the EEA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    pub category: String,
    pub description: Option<String>,
    pub transfer: Option<Transfer>,
}

/// A transfer to a third country or an international organisation, with its safeguard (Art. 44-49).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub country: String,
    pub safeguard: String,
}

impl RecordKeeping {
    /// The categories of data subjects whose data `table` holds.
    pub fn subjects_of(&self, table: &str) -> impl Iterator<Item = &SubjectCategory> {
        self.data_subjects
            .iter()
            .filter(move |c| c.tables.iter().any(|t| t == table))
    }
}

/// A validated retention rule of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The timestamp (or date) column that dates a row.
    pub column: String,
    pub period: Period,
    pub action: RetentionAction,
}

/// What happens to a row once it is older than the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionAction {
    /// The row is deleted (with its dependants, children first).
    Delete,
    /// The named columns are replaced by their masks; the row stays.
    Mask(BTreeMap<String, Action>),
}

/// A retention period: a count of days, weeks, months or years.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub count: u32,
    pub unit: PeriodUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodUnit {
    Days,
    Weeks,
    Months,
    Years,
}

impl Period {
    /// Parses `5 years`, `18 months`, `30 days`, `1 week` (singular or plural, case-insensitive).
    pub fn parse(text: &str) -> Result<Period, String> {
        let mut words = text.split_whitespace();
        let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("`{text}` is not a period such as `5 years`"));
        };
        let count: u32 = count
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("`{count}` is not a positive whole number"))?;
        let unit = match unit.to_ascii_lowercase().trim_end_matches('s') {
            "day" => PeriodUnit::Days,
            "week" => PeriodUnit::Weeks,
            "month" => PeriodUnit::Months,
            "year" => PeriodUnit::Years,
            other => return Err(format!("unknown period unit `{other}`")),
        };
        Ok(Period { count, unit })
    }

    /// The period as a PostgreSQL interval literal, e.g. `5 years` (no quotes).
    pub fn interval(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            PeriodUnit::Days => "day",
            PeriodUnit::Weeks => "week",
            PeriodUnit::Months => "month",
            PeriodUnit::Years => "year",
        };
        let plural = if self.count == 1 { "" } else { "s" };
        write!(f, "{} {unit}{plural}", self.count)
    }
}

/// A validated `[tables.<t>.erasure]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erasure {
    /// When not empty, the subject's rows are kept with these columns replaced (not deleted).
    pub keep: BTreeMap<String, Action>,
    pub links: Vec<Link>,
}

/// `column` of this table holds values of `target_table.target_column` (no foreign key says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub column: String,
    /// The key of the target table in the policy file (e.g. `contacts`).
    pub target_table: String,
    pub target_column: String,
}
