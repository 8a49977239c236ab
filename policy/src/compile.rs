//! From a validated policy and a catalog (of the live database, or derived from the policy alone) to
//! what each role may do: one `RoleAccess` per role, the form the rewriter and the access log read.
//! Also checks the policy against the catalog (tables and columns exist, actions fit the live types) and
//! reports drift. Not for: SQL (see `apply_sql` and `db_lock`) or parsing (see `model`).

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
            ..Catalog::default()
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
            // The table is not in the file: the warning points at its start.
            let span = 0..0;
            let mut note = self.error_at(
                &span,
                format!(
                    "table `{name}` is not in the policy: {} for restricted roles (settings.unlisted_tables)",
                    crate::framework::unlisted_text(self.settings.unlisted_tables)
                ),
                Some(format!(
                    "declare it under [tables.{}] if it holds personal data, or if the application \
                     looks it up in the catalog before reading it (a migration tool's table such as \
                     alembic_version): an unlisted table is not on the role login's search path",
                    name.name
                )),
            );
            note.severity = crate::diagnostics::Severity::Warning;
            out.push(note);
        }
        out.extend(crate::cascade::warnings(self, catalog));
        out.extend(crate::lookup_sql::check(self, catalog));
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
                role.unlisted.unwrap_or(self.settings.unlisted_tables)
            },
            allowed_functions: role.functions.iter().cloned().collect(),
            channels: role.channels.iter().cloned().collect(),
            cascading_deletes: self.settings.cascading_deletes,
            lookups: crate::lookup_sql::role_lookups(self, role, catalog),
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
            let writable = may_set && (action.is_show() || rule.writable.contains(&c.name));
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
pub(crate) use crate::access::catalog_of;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Category, ColumnAccess};

    const POLICY: &str = r#"
[tables.contacts.columns]
id = "identifying"
email = "contact"
tax_code = "national_identifier"
diagnosis = "special_category"

[tables.health]
personal = "special_category"

[roles.dpo]
unrestricted = true

[roles.sales]
attributes = ["region"]
[roles.sales.tables.contacts]
show = ["*"]
columns = { tax_code = "mask.last(4)" }
filter = "region = attr('region')"
writes = ["insert", "update"]

[roles.doctor.tables.contacts]
show = ["id", "diagnosis"]
[roles.doctor.tables.health]
show = ["condition"]
"#;

    fn catalog() -> Catalog {
        catalog_of(&[
            (
                "contacts",
                &[
                    ("id", "bigint"),
                    ("email", "text"),
                    ("tax_code", "character(16)"),
                    ("diagnosis", "text"),
                    ("region", "text"),
                ],
            ),
            ("health", &[("id", "bigint"), ("condition", "text")]),
            ("audit", &[("id", "bigint")]),
        ])
    }

    fn view(access: &RoleAccess, table: &str) -> ViewAccess {
        match &access.tables[&TableName::new("public", table)] {
            TableAccess::View(view) => view.clone(),
            other => panic!("{table}: {other:?}"),
        }
    }

    fn actions(view: &ViewAccess) -> Vec<(String, Action, bool)> {
        view.columns
            .iter()
            .map(|c: &ColumnAccess| (c.name.clone(), c.action.clone(), c.writable))
            .collect()
    }

    #[test]
    fn privacy_by_default_drops_unmentioned_personal_columns_and_art9_data() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let access = policy.compile(&catalog()).unwrap();
        let sales = &access["sales"];
        assert_eq!(sales.view_schema, "maschera_sales");
        assert_eq!(sales.unlisted, UnlistedTables::Deny);
        let contacts = view(sales, "contacts");
        assert!(contacts.filtered);
        assert_eq!(
            actions(&contacts),
            [
                ("id".into(), Action::Show, true),
                ("email".into(), Action::Show, true),
                ("tax_code".into(), Action::MaskLast(4), false),
                ("diagnosis".into(), Action::Drop, false),
                ("region".into(), Action::Show, true),
            ],
            "`*` shows personal columns but never Art. 9 ones; masked columns are not writable"
        );
        assert_eq!(
            contacts.column("email").unwrap().category,
            Some(Category::Contact)
        );
        assert_eq!(contacts.column("region").unwrap().category, None);
        assert_eq!(
            sales.tables[&TableName::new("public", "health")],
            TableAccess::Denied {
                categories: [Category::SpecialCategory].into()
            },
            "no rule: denied"
        );
        assert!(
            !sales
                .tables
                .contains_key(&TableName::new("public", "audit")),
            "unlisted tables follow `unlisted`"
        );

        let doctor = &access["doctor"];
        assert_eq!(
            actions(&view(doctor, "contacts")),
            [
                ("id".into(), Action::Show, false),
                ("email".into(), Action::Drop, false),
                ("tax_code".into(), Action::Drop, false),
                ("diagnosis".into(), Action::Show, false),
                ("region".into(), Action::Show, false),
            ],
            "explicitly named Art. 9 columns are shown; unmentioned personal columns dropped"
        );
        assert_eq!(
            actions(&view(doctor, "health")),
            [
                ("id".into(), Action::Drop, false),
                ("condition".into(), Action::Show, false)
            ]
        );
        assert!(!view(doctor, "contacts").filtered);
    }

    #[test]
    fn an_unrestricted_role_sees_everything_with_categories_for_the_log() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let dpo = policy.role_access_by_name("dpo", &catalog()).unwrap();
        assert!(dpo.unrestricted);
        assert_eq!(dpo.unlisted, UnlistedTables::Pass);
        let contacts = view(&dpo, "contacts");
        assert!(
            contacts
                .columns
                .iter()
                .all(|c| c.action == Action::Show && c.writable)
        );
        assert_eq!(
            contacts.column("diagnosis").unwrap().category,
            Some(Category::SpecialCategory)
        );
    }

    #[test]
    fn the_policy_is_checked_against_the_live_catalog() {
        let text = "[tables.contacts.columns]\nemial = \"contact\"\nid = { category = \"identifying\", type = \"text\" }\n\
                    tax_code = \"national_identifier\"\n[tables.gone]\n[roles.s.tables.contacts]\ncolumns = { tax_code = \"year\" }\n";
        let policy = Policy::parse("p.toml", text).unwrap();
        let diagnostics = policy.check_against(&catalog());
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("p.toml:2:1: error: column `emial` does not exist")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(
                "p.toml:3:1: error: column `id` is declared `text` but the database has `bigint`"
            )),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("p.toml:5:9: error: table `public.gone` does not exist")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains(
                "`year` needs a date or timestamp column, but the column is `character(16)`"
            )),
            "{errors:?}"
        );
        assert!(diagnostics.iter().any(|d| !d.is_error() && d.message.contains("`public.audit` is not in the policy")));
        // Its help says why a table the application looks up must be declared all the same.
        assert!(diagnostics.iter().any(|d| {
            d.message.contains("`public.audit` is not in the policy")
                && d.help
                    .as_deref()
                    .is_some_and(|h| h.contains("not on the role login's search path"))
        }));
        assert!(policy.compile(&catalog()).is_err());
    }

    #[test]
    fn the_derived_catalog_holds_declared_columns_and_types() {
        let policy = Policy::parse(
            "p.toml",
            "[tables.t.columns]\nd = { type = \"date\" }\ne = \"contact\"\n",
        )
        .unwrap();
        let catalog = policy.derived_catalog();
        let columns = &catalog.tables[&TableName::new("public", "t")];
        assert_eq!(
            columns[0],
            CatalogColumn {
                name: "d".into(),
                data_type: "date".into()
            }
        );
        assert_eq!(
            columns[1],
            CatalogColumn {
                name: "e".into(),
                data_type: UNKNOWN_TYPE.into()
            }
        );
        assert_eq!(catalog.search_path, ["public"]);
    }

    #[test]
    fn type_names_compare_through_aliases() {
        assert!(same_type("bigint", "int8"));
        assert!(same_type("numeric(12,2)", "numeric(12, 2)"));
        assert!(same_type("character(16)", "char(16)"));
        assert!(same_type("timestamp with time zone", "timestamptz"));
        assert!(!same_type("date", "text"));
    }
}
