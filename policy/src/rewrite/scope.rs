//! Name scopes of one statement: which FROM items and CTEs a name can refer to at each query level,
//! with PostgreSQL's identifier folding. Not for deciding what a role may see (the analyzer does).

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, TableFactor};

use super::refusal::Refusal;
use crate::access::{TableName, ViewAccess};

/// PostgreSQL folds unquoted identifiers to lower case (ASCII only, for UTF-8 databases) and keeps
/// quoted ones as written.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// [`fold`] without a copy when the identifier is already folded (the common case).
pub(crate) fn folded(ident: &Ident) -> std::borrow::Cow<'_, str> {
    if ident.quote_style.is_some() || !ident.value.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(&ident.value)
    } else {
        std::borrow::Cow::Owned(ident.value.to_ascii_lowercase())
    }
}

/// The folded parts of a name; names built from function calls (a dialect extension) are refused.
pub(crate) fn fold_name(name: &ObjectName) -> Result<Vec<String>, Refusal> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(fold(ident)),
            ObjectNamePart::Function(_) => Err(Refusal::unsupported(
                "computed object names are not supported",
            )),
        })
        .collect()
}

/// A quoted identifier: safe for any name the catalog holds.
pub(crate) fn quoted(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// A plain `FROM name` item (no alias, no arguments), for DML targets and COPY sources.
pub(crate) fn plain_table(name: ObjectName) -> TableFactor {
    TableFactor::Table {
        name,
        alias: None,
        args: None,
        with_hints: Vec::new(),
        version: None,
        with_ordinality: false,
        partitions: Vec::new(),
        json_path: None,
        sample: None,
        index_hints: Vec::new(),
    }
}

/// What a FROM item is.
#[derive(Debug, Clone)]
pub(crate) enum ItemKind<'a> {
    /// A policy table read through the role's view.
    View {
        table: TableName,
        access: &'a ViewAccess,
    },
    /// An unlisted table passed as the base table; its columns from the catalog.
    Base {
        table: TableName,
        columns: Vec<String>,
    },
    /// A `pg_catalog` / `information_schema` relation.
    System,
    /// A subquery, CTE reference or function: its own analysis covered what it reads.
    Derived { columns: Option<Vec<String>> },
}

/// One FROM item, under the name columns are qualified with (its alias, or its table name).
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    pub name: String,
    /// The schema the client wrote when there is no alias (`public.contacts.id` qualifies with it).
    pub schema: Option<String>,
    pub kind: ItemKind<'a>,
}

/// A CTE visible at some level.
#[derive(Debug, Clone)]
pub(crate) struct CteName {
    pub name: String,
    pub columns: Option<Vec<String>>,
}

/// One query level: its FROM items and the CTEs its WITH clause defined, plus the enclosing level.
#[derive(Debug)]
pub(crate) struct Scope<'p, 'a> {
    pub parent: Option<&'p Scope<'p, 'a>>,
    pub items: Vec<Item<'a>>,
    pub ctes: Vec<CteName>,
}

impl<'p, 'a> Scope<'p, 'a> {
    pub(crate) fn new(parent: Option<&'p Scope<'p, 'a>>) -> Self {
        Self {
            parent,
            items: Vec::new(),
            ctes: Vec::new(),
        }
    }

    /// This level and the enclosing ones, innermost first.
    pub(crate) fn levels(&self) -> impl Iterator<Item = &Scope<'p, 'a>> {
        std::iter::successors(Some(self), |s| s.parent)
    }

    /// The CTE an unqualified table name refers to, if any (the innermost definition wins).
    pub(crate) fn cte(&self, name: &str) -> Option<&CteName> {
        self.levels()
            .find_map(|level| level.ctes.iter().rev().find(|c| c.name == name))
    }

    /// The FROM item a qualifier names, innermost level first.
    pub(crate) fn item(&self, qualifier: &str) -> Option<&Item<'a>> {
        self.levels()
            .find_map(|level| level.items.iter().find(|i| i.name == qualifier))
    }
}

impl Item<'_> {
    /// The columns a `*` or whole-row reference of this item yields, when known.
    pub(crate) fn visible_columns(&self) -> Option<Vec<String>> {
        match &self.kind {
            ItemKind::View { access, .. } => Some(
                access
                    .columns
                    .iter()
                    .filter(|c| !matches!(c.action, crate::access::Action::Drop))
                    .map(|c| c.name.clone())
                    .collect(),
            ),
            ItemKind::Base { columns, .. } => Some(columns.clone()),
            ItemKind::System => None,
            ItemKind::Derived { columns } => columns.clone(),
        }
    }
}
