//! The catalog as `ALTER TABLE` statements leave it: the proxy's copy of the catalog after an
//! unrestricted role's schema change, so that the restricted roles' views can be recompiled in the
//! change's own transaction. Operations that change no column (constraints, triggers, owner...)
//! leave it as it is; a form not modelled (renaming the table, partitions, ...) gives `None`.
//!
//! Not for: wrapping the change or rebuilding the views (the proxy's `schema_change` does).

use crate::access::{Catalog, CatalogColumn, TableName};
use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, Ident, ObjectNamePart, Statement,
};

/// The `ALTER TABLE` statements among `statements`, in order.
pub fn alter_tables(statements: &[Statement]) -> Vec<&AlterTable> {
    statements
        .iter()
        .filter_map(|statement| match statement {
            Statement::AlterTable(alter) => Some(alter),
            _ => None,
        })
        .collect()
}

/// The catalog table an `ALTER TABLE` names, resolved like PostgreSQL (case folding, search path).
pub fn table_of(catalog: &Catalog, alter: &AlterTable) -> Option<TableName> {
    let parts: Vec<String> = alter
        .name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(fold(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [name] => catalog.resolve(None, name),
        [schema, name] => catalog.resolve(Some(schema), name),
        _ => None,
    }
}

fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The catalog as the `ALTER TABLE` statements leave it, in order; `None` when one of them has an
/// operation this does not model (renaming the table, partitions, ...).
pub fn changed_catalog(catalog: &Catalog, alters: &[&AlterTable]) -> Option<Catalog> {
    let mut changed = catalog.clone();
    for alter in alters {
        let Some(table) = table_of(&changed, alter) else {
            continue;
        };
        let columns = changed.tables.get_mut(&table)?;
        for operation in &alter.operations {
            apply_operation(columns, operation)?;
        }
    }
    Some(changed)
}

/// Applies one operation to a table's columns; `None` when it is not modelled.
fn apply_operation(
    columns: &mut Vec<CatalogColumn>,
    operation: &AlterTableOperation,
) -> Option<()> {
    let position = |columns: &Vec<CatalogColumn>, name: &Ident| {
        let name = fold(name);
        columns.iter().position(|c| c.name == name)
    };
    match operation {
        AlterTableOperation::AddColumn { column_def, .. } => {
            if position(columns, &column_def.name).is_none() {
                columns.push(CatalogColumn {
                    name: fold(&column_def.name),
                    data_type: type_name(&column_def.data_type.to_string()),
                });
            }
        }
        AlterTableOperation::DropColumn { column_names, .. } => {
            for name in column_names {
                if let Some(at) = position(columns, name) {
                    columns.remove(at);
                }
            }
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => {
            if let Some(at) = position(columns, old_column_name) {
                columns[at].name = fold(new_column_name);
            }
        }
        AlterTableOperation::AlterColumn { column_name, op } => match op {
            AlterColumnOperation::SetDataType { data_type, .. } => {
                if let Some(at) = position(columns, column_name) {
                    columns[at].data_type = type_name(&data_type.to_string());
                }
            }
            AlterColumnOperation::SetNotNull
            | AlterColumnOperation::DropNotNull
            | AlterColumnOperation::SetDefault { .. }
            | AlterColumnOperation::DropDefault
            | AlterColumnOperation::AddGenerated { .. } => {}
        },
        AlterTableOperation::AddConstraint { .. }
        | AlterTableOperation::DropConstraint { .. }
        | AlterTableOperation::RenameConstraint { .. }
        | AlterTableOperation::DisableTrigger { .. }
        | AlterTableOperation::EnableTrigger { .. }
        | AlterTableOperation::EnableAlwaysTrigger { .. }
        | AlterTableOperation::EnableReplicaTrigger { .. }
        | AlterTableOperation::DisableRule { .. }
        | AlterTableOperation::EnableRule { .. }
        | AlterTableOperation::EnableAlwaysRule { .. }
        | AlterTableOperation::EnableReplicaRule { .. }
        | AlterTableOperation::ReplicaIdentity { .. }
        | AlterTableOperation::OwnerTo { .. }
        | AlterTableOperation::SetLogged
        | AlterTableOperation::SetUnlogged => {}
        _ => return None,
    }
    Some(())
}

/// A type as a view may cast to it (`serial` exists only in column definitions).
fn type_name(written: &str) -> String {
    match written.to_ascii_lowercase().as_str() {
        "serial" | "serial4" => "integer".into(),
        "bigserial" | "serial8" => "bigint".into(),
        "smallserial" | "serial2" => "smallint".into(),
        _ => written.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn catalog() -> Catalog {
        let column = |name: &str, data_type: &str| CatalogColumn {
            name: name.into(),
            data_type: data_type.into(),
        };
        let mut catalog = Catalog {
            search_path: vec!["public".into()],
            ..Catalog::default()
        };
        catalog.tables.insert(
            TableName::new("public", "contacts"),
            vec![
                column("id", "bigint"),
                column("city", "text"),
                column("tax_code", "character(16)"),
            ],
        );
        catalog
    }

    fn after(sql: &str) -> Option<Vec<(String, String)>> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let changed = changed_catalog(&catalog(), &alter_tables(&statements))?;
        Some(
            changed.tables[&TableName::new("public", "contacts")]
                .iter()
                .map(|c| (c.name.clone(), c.data_type.clone()))
                .collect(),
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn alter_table_operations_change_the_copy_of_the_catalog() {
        assert_eq!(
            after("ALTER TABLE Contacts DROP COLUMN Tax_Code, ALTER COLUMN city TYPE varchar(80)"),
            Some(pairs(&[("id", "bigint"), ("city", "VARCHAR(80)")]))
        );
        assert_eq!(
            after(
                "ALTER TABLE public.contacts ADD COLUMN n serial; ALTER TABLE contacts RENAME COLUMN city TO town"
            ),
            Some(pairs(&[
                ("id", "bigint"),
                ("town", "text"),
                ("tax_code", "character(16)"),
                ("n", "integer"),
            ]))
        );
        assert_eq!(
            after("ALTER TABLE contacts ALTER COLUMN city SET NOT NULL"),
            Some(pairs(&[
                ("id", "bigint"),
                ("city", "text"),
                ("tax_code", "character(16)")
            ]))
        );
        assert_eq!(after("ALTER TABLE contacts RENAME TO people"), None);
    }
}
