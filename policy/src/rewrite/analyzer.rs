//! The state of one statement's analysis: the role, the catalog, what was touched, and how a table
//! name resolves (CTE, system relation, policy view, unlisted base table) under PostgreSQL's rules.
//! The walks over queries, DML and expressions live in `query.rs`, `dml.rs` and `expr.rs`.

use sqlparser::ast::ObjectName;

use super::faithful::{Edits, NameEdit};
use super::refusal::Refusal;
use super::report::{TableOperation, TableRoute, UseLog};
use super::scope::{CteName, ItemKind, Scope, fold_name, quoted};
use super::system::{self, SystemRelation};
use crate::access::{Catalog, RoleAccess, TableAccess, TableName, UnlistedTables, ViewAccess};
use crate::model::OBJECT_PREFIX;

/// What a table name in a FROM clause or DML target refers to: a CTE, or a relation (a policy
/// view, an unlisted base table or a system relation).
pub(crate) enum Resolved<'a> {
    Cte(CteName),
    Relation(ItemKind<'a>),
}

pub(crate) struct Analyzer<'a> {
    pub role: &'a RoleAccess,
    pub catalog: &'a Catalog,
    pub log: UseLog,
    /// Set when a literal's value matters to the decision: the statement shape is not cacheable.
    pub value_sensitive: bool,
    /// Current nesting of expressions being checked (bounded by `expr::MAX_EXPR_DEPTH`).
    pub expr_depth: usize,
    /// Every change made to the tree (for the re-serialization check in `faithful.rs`).
    pub edits: Edits,
}

impl<'a> Analyzer<'a> {
    pub(crate) fn new(role: &'a RoleAccess, catalog: &'a Catalog) -> Self {
        Self {
            role,
            catalog,
            log: UseLog::default(),
            value_sensitive: false,
            expr_depth: 0,
            edits: Edits::default(),
        }
    }

    /// Resolves a relation name the way PostgreSQL would for this role, refusing denied, unknown and
    /// forbidden relations, and logs the use.
    pub(crate) fn resolve(
        &mut self,
        name: &ObjectName,
        scope: &Scope<'_, 'a>,
        op: TableOperation,
    ) -> Result<Resolved<'a>, Refusal> {
        let parts = fold_name(name)?;
        let (schema, relation) = match parts.as_slice() {
            [relation] => (None, relation.as_str()),
            [schema, relation] => (Some(schema.as_str()), relation.as_str()),
            _ => {
                return Err(Refusal::unsupported(format!(
                    "relation name {name} is not supported: cross-database references"
                )));
            }
        };
        if schema.is_none()
            && let Some(cte) = scope.cte(relation)
        {
            return Ok(Resolved::Cte(cte.clone()));
        }
        match schema {
            Some("pg_catalog") => {
                return self.system(relation, system::pg_catalog(relation), "pg_catalog", op);
            }
            Some("information_schema") => {
                return self.system(
                    relation,
                    system::information_schema(relation),
                    "information_schema",
                    op,
                );
            }
            Some(s) if system::is_forbidden_schema(s) => {
                return Err(Refusal::denied(format!(
                    "permission denied for schema {s}: temporary and toast relations are not available through Maschera"
                )));
            }
            None if system::is_pg_catalog_name(relation) => {
                return self.system(relation, system::pg_catalog(relation), "pg_catalog", op);
            }
            _ => {}
        }
        let found = match schema {
            // The role's own view schema, named explicitly: the same view an unqualified name
            // maps to.
            Some(s) if !self.role.view_schema.is_empty() && s == self.role.view_schema => {
                Some(self.own_view(relation)?)
            }
            Some(s) if s.starts_with(OBJECT_PREFIX) => {
                return Err(Refusal::denied(format!(
                    "permission denied for relation {s}.{relation}: schema {s} holds Maschera's own objects (another role's views or the keys)"
                )));
            }
            _ => self.catalog.resolve(schema, relation),
        };
        let Some(table) = found else {
            let shown = match schema {
                Some(s) => format!("{s}.{relation}"),
                None => relation.to_string(),
            };
            return Err(Refusal::denied(format!(
                "permission denied for relation {shown}: it is not in the schema Maschera knows (fail closed)"
            )));
        };
        match self.role.tables.get(&table) {
            Some(TableAccess::Denied { categories }) => {
                let entry = self.log.table(&table, TableRoute::Denied, false);
                entry.operations.push(op);
                entry.categories.extend(categories.iter().copied());
                Err(Refusal::denied(format!(
                    "permission denied for table {table}: not available to role {}",
                    self.role.role
                )))
            }
            Some(TableAccess::View(access)) => {
                let view = TableName::new(self.role.view_schema.as_str(), access.view.as_str());
                self.log
                    .operation(&table, TableRoute::View(view), access.filtered, op);
                Ok(Resolved::Relation(ItemKind::View { table, access }))
            }
            None => match self.role.unlisted {
                UnlistedTables::Deny => Err(Refusal::denied(format!(
                    "permission denied for table {table}: the policy does not list it for role {}",
                    self.role.role
                ))),
                UnlistedTables::Read if op != TableOperation::Read => {
                    Err(Refusal::denied(format!(
                        "permission denied for table {table}: role {} may only read tables the policy does not list (unlisted_tables = \"read\")",
                        self.role.role
                    )))
                }
                UnlistedTables::Pass | UnlistedTables::Read => {
                    self.log.operation(&table, TableRoute::BaseTable, false, op);
                    let columns = self
                        .catalog
                        .tables
                        .get(&table)
                        .map(|cols| cols.iter().map(|c| c.name.clone()).collect())
                        .unwrap_or_default();
                    Ok(Resolved::Relation(ItemKind::Base { table, columns }))
                }
            },
        }
    }

    fn system(
        &mut self,
        relation: &str,
        decision: SystemRelation,
        schema: &str,
        op: TableOperation,
    ) -> Result<Resolved<'a>, Refusal> {
        let route = match decision {
            SystemRelation::Allowed => TableRoute::SystemCatalog,
            SystemRelation::Denied => TableRoute::Denied,
        };
        self.log
            .operation(&TableName::new(schema, relation), route, false, op);
        match decision {
            SystemRelation::Allowed => Ok(Resolved::Relation(ItemKind::System)),
            SystemRelation::Denied => Err(Refusal::denied(format!(
                "permission denied for relation {schema}.{relation}: it exposes values or other sessions"
            ))),
        }
    }

    /// The table whose view in the role's own schema is called `view`.
    fn own_view(&self, view: &str) -> Result<TableName, Refusal> {
        self.role
            .tables
            .iter()
            .find_map(|(table, access)| match access {
                TableAccess::View(access) if access.view == view => Some(table.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                Refusal::denied(format!(
                    "permission denied for relation {}.{view}: not a view of role {}",
                    self.role.view_schema, self.role.role
                ))
            })
    }

    /// The name a view-mapped reference is rewritten to.
    pub(crate) fn view_name(&self, access: &ViewAccess) -> ObjectName {
        ObjectName::from(vec![quoted(&self.role.view_schema), quoted(&access.view)])
    }

    /// Replaces a table name in the tree, recording the edit (with the alias added after it, if
    /// any) for the re-serialization check.
    pub(crate) fn rename(
        &mut self,
        name: &mut ObjectName,
        replacement: ObjectName,
        alias: Option<sqlparser::ast::Ident>,
    ) {
        let original = std::mem::replace(name, replacement.clone());
        self.edits.names.push(NameEdit {
            original,
            replacement,
            alias,
        });
    }

    /// The schema-qualified name of an unlisted base table (the upstream search_path may differ).
    pub(crate) fn base_name(table: &TableName) -> ObjectName {
        ObjectName::from(vec![quoted(&table.schema), quoted(&table.name)])
    }

    /// Refusal for a statement naming a dropped column.
    pub(crate) fn dropped_column(table: &TableName, column: &str) -> Refusal {
        Refusal::denied(format!(
            "permission denied for column {column} of table {table}: not available to this role"
        ))
    }
}
