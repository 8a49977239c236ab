//! From a validated policy and a catalog (of the live database, or derived from the policy alone) to
//! what each role may do: one `RoleAccess` per role, the form the rewriter and the access log read.
//! Also checks the policy against the catalog (tables and columns exist, actions fit the live types) and
//! reports drift. Not for: SQL (see `view_sql`) or parsing (see `model`).

use crate::access::{
    Action, Catalog, CatalogColumn, ColumnAccess, RoleAccess, TableAccess, TableName,
    UnlistedTables, ViewAccess, Writes,
};
use crate::action::{UNKNOWN_TYPE, check_fits};
use crate::diagnostics::{Diagnostic, Diagnostics, suggest};
use crate::model::{Policy, Role, Table};
use std::collections::{BTreeMap, BTreeSet};

impl Policy {
    /// The catalog the policy itself describes: its tables with their declared columns (type `unknown`
    /// where none is declared). Use it when no live database is at hand (`policy check`, `explain`).
    pub fn derived_catalog(&self) -> Catalog {
        let mut tables = BTreeMap::new();
        for table in self.tables.values() {
            let columns = table
                .columns
                .iter()
                .map(|(name, c)| CatalogColumn {
                    name: name.clone(),
                    data_type: c
                        .data_type
                        .clone()
                        .unwrap_or_else(|| UNKNOWN_TYPE.to_string()),
                })
                .collect();
            tables.insert(table.name.clone(), columns);
        }
        let mut search_path = vec!["public".to_string()];
        for table in self.tables.values() {
            if !search_path.contains(&table.name.schema) {
                search_path.push(table.name.schema.clone());
            }
        }
        Catalog {
            tables,
            search_path,
        }
    }

    /// Checks the policy against a live catalog. Errors: tables or columns the database lacks, actions that
    /// do not fit the live type, declared types that differ from the live ones. Warnings (drift that is not
    /// wrong in itself): tables of the database that the policy does not name.
    pub fn check_against(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for table in self.tables.values() {
            let Some(live) = catalog.tables.get(&table.name) else {
                let known: Vec<String> = catalog.tables.keys().map(|t| t.to_string()).collect();
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                out.push(self.error_at(
                    &table.span,
                    format!("table `{}` does not exist in the database", table.name),
                    Some(suggest(&table.name.to_string(), &known, "tables")),
                ));
                continue;
            };
            let live_type = |column: &str| {
                live.iter()
                    .find(|c| c.name == column)
                    .map(|c| c.data_type.as_str())
            };
            let live_names: Vec<&str> = live.iter().map(|c| c.name.as_str()).collect();
            let missing = |column: &str| {
                format!(
                    "column `{column}` does not exist in table `{}` of the database",
                    table.name
                )
            };
            for (name, declared) in &table.columns {
                match (live_type(name), &declared.data_type) {
                    (None, _) => out.push(self.error_at(
                        &declared.span,
                        missing(name),
                        Some(suggest(name, &live_names, "columns")),
                    )),
                    (Some(live), Some(ty)) if !same_type(live, ty) => out.push(self.error_at(
                        &declared.span,
                        format!("column `{name}` is declared `{ty}` but the database has `{live}`"),
                        Some(format!(
                            "write type = \"{live}\", or remove the type to use the database's"
                        )),
                    )),
                    _ => {}
                }
            }
            for role in self.roles.values() {
                let Some(rule) = role.rules.get(&table.key) else {
                    continue;
                };
                for (column, span) in rule.mentioned_columns() {
                    if live_type(column).is_none() && !table.columns.contains_key(column) {
                        out.push(self.error_at(
                            span,
                            missing(column),
                            Some(suggest(column, &live_names, "columns")),
                        ));
                    }
                }
                for (column, (action, span)) in &rule.actions {
                    if let Some(ty) = live_type(column)
                        && let Err(message) = check_fits(action, ty)
                    {
                        out.push(self.error_at(
                            span,
                            message,
                            Some("choose an action for the column's type".into()),
                        ));
                    }
                }
            }
        }
        for name in self.unlisted_tables(catalog) {
            let span = self
                .tables
                .values()
                .next()
                .map(|t| t.span.clone())
                .unwrap_or(0..0);
            let mut note = self.error_at(
                &span,
                format!(
                    "table `{name}` is not in the policy: {} for restricted roles (settings.unlisted_tables)",
                    match self.settings.unlisted_tables {
                        UnlistedTables::Deny => "denied",
                        UnlistedTables::Pass => "passed through unmasked",
                    }
                ),
                Some(format!("declare it under [tables.{}] if it holds personal data", name.name)),
            );
            note.severity = crate::diagnostics::Severity::Warning;
            out.push(note);
        }
        out
    }

    /// Compiles every role against `catalog`; fails with the errors of [`Policy::check_against`].
    pub fn compile(&self, catalog: &Catalog) -> Result<BTreeMap<String, RoleAccess>, Diagnostics> {
        let errors: Vec<Diagnostic> = self
            .check_against(catalog)
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        if !errors.is_empty() {
            return Err(Diagnostics(errors));
        }
        Ok(self
            .roles
            .values()
            .map(|role| (role.name.clone(), self.role_access(role, catalog)))
            .collect())
    }

    /// What `role` may do, given `catalog`. Tables the catalog lacks are left out (see `check_against`).
    pub fn role_access(&self, role: &Role, catalog: &Catalog) -> RoleAccess {
        let mut tables = BTreeMap::new();
        for table in self.tables.values() {
            let Some(live) = catalog.tables.get(&table.name) else {
                continue;
            };
            tables.insert(table.name.clone(), table_access(role, table, live));
        }
        RoleAccess {
            role: role.name.clone(),
            unrestricted: role.unrestricted,
            view_schema: if role.unrestricted {
                String::new()
            } else {
                role.login()
            },
            tables,
            unlisted: if role.unrestricted {
                UnlistedTables::Pass
            } else {
                self.settings.unlisted_tables
            },
            allowed_functions: role.functions.iter().cloned().collect(),
        }
    }

    /// The compiled access of the role named `role`, if the policy has it.
    pub fn role_access_by_name(&self, role: &str, catalog: &Catalog) -> Option<RoleAccess> {
        self.roles.get(role).map(|r| self.role_access(r, catalog))
    }

    /// The tables of `catalog` that the policy does not name (they follow `settings.unlisted_tables`).
    pub fn unlisted_tables<'c>(&self, catalog: &'c Catalog) -> Vec<&'c TableName> {
        catalog
            .tables
            .keys()
            .filter(|name| self.table_by_name(name).is_none())
            .collect()
    }
}

fn table_access(role: &Role, table: &Table, live: &[CatalogColumn]) -> TableAccess {
    let categories = || -> BTreeSet<_> {
        live.iter()
            .filter_map(|c| table.category(&c.name))
            .collect()
    };
    if role.unrestricted {
        let columns = live
            .iter()
            .map(|c| ColumnAccess {
                name: c.name.clone(),
                category: table.category(&c.name),
                action: Action::Show,
                writable: true,
            })
            .collect();
        let writes = Writes {
            insert: true,
            update: true,
            delete: true,
        };
        return TableAccess::View(ViewAccess {
            view: table.name.name.clone(),
            columns,
            filtered: false,
            writes,
        });
    }
    let Some(rule) = role.rules.get(&table.key).filter(|r| !r.deny) else {
        return TableAccess::Denied {
            categories: categories(),
        };
    };
    let may_set = rule.writes.insert || rule.writes.update;
    let columns = live
        .iter()
        .map(|c| {
            let category = table.category(&c.name);
            let action = rule.action_for(&c.name, category);
            let writable = may_set && action.is_show();
            ColumnAccess {
                name: c.name.clone(),
                category,
                action,
                writable,
            }
        })
        .collect();
    TableAccess::View(ViewAccess {
        view: table.name.name.clone(),
        columns,
        filtered: rule.filter.is_some(),
        writes: rule.writes,
    })
}

/// Whether two type names mean the same type (the policy may use short names such as `int8`, `varchar`).
fn same_type(live: &str, declared: &str) -> bool {
    fn canonical(t: &str) -> String {
        let t = t.trim().to_ascii_lowercase().replace(", ", ",");
        let aliases = [
            ("int8", "bigint"),
            ("int4", "integer"),
            ("int", "integer"),
            ("int2", "smallint"),
            ("varchar", "character varying"),
            ("char", "character"),
            ("bpchar", "character"),
            ("bool", "boolean"),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp", "timestamp without time zone"),
            ("decimal", "numeric"),
            ("float8", "double precision"),
            ("float4", "real"),
        ];
        let (base, rest) = match t.find('(') {
            Some(i) => (t[..i].trim().to_string(), t[i..].to_string()),
            None => (t.clone(), String::new()),
        };
        let base = aliases
            .iter()
            .find(|(a, _)| *a == base)
            .map(|(_, b)| b.to_string())
            .unwrap_or(base);
        format!("{base}{rest}")
    }
    canonical(live) == canonical(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_compare_through_aliases() {
        assert!(same_type("bigint", "int8"));
        assert!(same_type("numeric(12,2)", "numeric(12, 2)"));
        assert!(same_type("character(16)", "char(16)"));
        assert!(same_type("timestamp with time zone", "timestamptz"));
        assert!(!same_type("date", "text"));
    }
}
