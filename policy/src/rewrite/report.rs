//! What a statement did to policy tables, as the access log records it: tables, columns, categories
//! and the action applied. Holds names only, never values. Not the log format itself (the proxy's).

use std::collections::{BTreeMap, BTreeSet};

use crate::access::{Action, Category, TableName};

/// How a statement used a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableOperation {
    Read,
    Insert,
    Update,
    Delete,
}

/// How the role got a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRoute {
    /// Through the role's view (`view_schema.view`).
    View(TableName),
    /// Unlisted table passed as the base table (`unlisted = pass`).
    BaseTable,
    /// A `pg_catalog` or `information_schema` relation the proxy's rules allow.
    SystemCatalog,
    /// The table does not exist for the role (only in refusals).
    Denied,
    /// An unrestricted role: the statement went upstream unchanged.
    Unrestricted,
}

/// What the role saw of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnAction {
    /// The plain value.
    Shown,
    /// A masked, pseudonymised, truncated or nulled value (any non-`show` action).
    Masked,
    /// A dropped column (only appears in refusals: the statement named it).
    Dropped,
    /// A masked column the statement found rows by, by exact value (a lookup, see
    /// `crate::lookup_sql`); the rows themselves came back masked.
    Lookup,
}

impl ColumnAction {
    pub(crate) fn of(action: &Action) -> Self {
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
            ColumnAction::Lookup => "lookup",
        }
    }
}

/// One column a statement referenced (explicitly, through `*` or a whole-row reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUse {
    pub category: Option<Category>,
    pub action: ColumnAction,
    /// How many values the statement looked the column up by (0 unless `action` is `Lookup`).
    pub lookups: u32,
}

/// One table a statement referenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUse {
    pub table: TableName,
    pub route: TableRoute,
    /// Every way the statement used the table (a read and an update for `UPDATE t SET a = b`).
    pub operations: Vec<TableOperation>,
    /// Whether the role's row filter applied (rows may have been hidden).
    pub filtered: bool,
    /// The columns referenced, by name.
    pub columns: BTreeMap<String, ColumnUse>,
    /// The categories of personal data involved: of the referenced columns, or of the whole table
    /// when it was refused as denied.
    pub categories: BTreeSet<Category>,
}

impl TableUse {
    /// Whether this use touched personal data (a column with a category).
    pub fn touches_personal_data(&self) -> bool {
        !self.categories.is_empty()
    }
}

/// Accumulates table uses during one statement's analysis.
#[derive(Debug, Default)]
pub(crate) struct UseLog {
    tables: Vec<TableUse>,
}

impl UseLog {
    pub(crate) fn table(
        &mut self,
        table: &TableName,
        route: TableRoute,
        filtered: bool,
    ) -> &mut TableUse {
        let index = match self.tables.iter().position(|t| &t.table == table) {
            Some(index) => index,
            None => {
                self.tables.push(TableUse {
                    table: table.clone(),
                    route,
                    operations: Vec::new(),
                    filtered,
                    columns: BTreeMap::new(),
                    categories: BTreeSet::new(),
                });
                self.tables.len() - 1
            }
        };
        &mut self.tables[index]
    }

    pub(crate) fn operation(
        &mut self,
        table: &TableName,
        route: TableRoute,
        filtered: bool,
        op: TableOperation,
    ) {
        let entry = self.table(table, route, filtered);
        if !entry.operations.contains(&op) {
            entry.operations.push(op);
        }
    }

    pub(crate) fn column(
        &mut self,
        table: &TableName,
        name: &str,
        category: Option<Category>,
        action: &Action,
    ) {
        if let Some(entry) = self.tables.iter_mut().find(|t| &t.table == table) {
            entry.categories.extend(category);
            if !entry.columns.contains_key(name) {
                entry.columns.insert(
                    name.to_string(),
                    ColumnUse {
                        category,
                        action: ColumnAction::of(action),
                        lookups: 0,
                    },
                );
            }
        }
    }

    /// A lookup of `name` (already logged as a column) by `count` values.
    pub(crate) fn lookup(&mut self, table: &TableName, name: &str, count: u32) {
        let column = self
            .tables
            .iter_mut()
            .find(|t| &t.table == table)
            .and_then(|entry| entry.columns.get_mut(name));
        if let Some(column) = column {
            column.action = ColumnAction::Lookup;
            column.lookups = column.lookups.saturating_add(count);
        }
    }

    pub(crate) fn into_tables(self) -> Vec<TableUse> {
        self.tables
    }
}
