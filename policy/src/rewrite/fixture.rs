//! The reference CRM (`examples/crm/schema.sql`) and its policy matrix (`crm-reference.md`), written
//! by hand as [`Catalog`] and [`RoleAccess`] values, for the rewriter's tests and benchmarks and for
//! other crates' tests. Not the policy compiler's output: that is built from `policy.toml`.

use std::collections::{BTreeMap, BTreeSet};

use crate::access::{
    Action, Catalog, CatalogColumn, Category, ColumnAccess, RoleAccess, TableAccess, TableName,
    UnlistedTables, ViewAccess, Writes,
};

/// One column of the reference CRM: name, type, category.
type ColumnSpec = (&'static str, &'static str, Option<Category>);

/// Tables of the reference CRM: name and columns.
const TABLES: &[(&str, &[ColumnSpec])] = &[
    (
        "contacts",
        &[
            ("id", "bigint", Some(Category::Identifying)),
            ("first_name", "text", Some(Category::Identifying)),
            ("last_name", "text", Some(Category::Identifying)),
            ("email", "text", Some(Category::Contact)),
            ("phone", "text", Some(Category::Contact)),
            ("birth_date", "date", Some(Category::Identifying)),
            (
                "tax_code",
                "character(16)",
                Some(Category::NationalIdentifier),
            ),
            ("street_address", "text", Some(Category::Location)),
            ("city", "text", None),
            ("region", "text", None),
            ("created_at", "timestamp with time zone", None),
            ("last_activity_at", "timestamp with time zone", None),
        ],
    ),
    (
        "consents",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::ConsentRecord)),
            ("purpose", "text", None),
            ("granted_at", "timestamp with time zone", None),
            ("withdrawn_at", "timestamp with time zone", None),
            ("source", "text", None),
        ],
    ),
    (
        "deals",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::Financial)),
            ("amount", "numeric(12,2)", None),
            ("stage", "text", None),
            ("created_at", "timestamp with time zone", None),
            ("closed_at", "timestamp with time zone", None),
        ],
    ),
    (
        "interactions",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::Identifying)),
            ("channel", "text", None),
            ("notes", "text", Some(Category::FreeText)),
            ("occurred_at", "timestamp with time zone", None),
        ],
    ),
    (
        "tickets",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::Identifying)),
            ("subject", "text", Some(Category::FreeText)),
            ("body", "text", Some(Category::FreeText)),
            ("status", "text", None),
            ("created_at", "timestamp with time zone", None),
        ],
    ),
    (
        "health_records",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::SpecialCategory)),
            ("condition", "text", Some(Category::SpecialCategory)),
            ("notes", "text", Some(Category::SpecialCategory)),
            ("recorded_at", "timestamp with time zone", None),
        ],
    ),
    (
        "judicial_records",
        &[
            ("id", "bigint", None),
            ("contact_id", "bigint", Some(Category::Criminal)),
            ("offence", "text", Some(Category::Criminal)),
            ("sentence_date", "date", Some(Category::Criminal)),
        ],
    ),
];

/// The catalog of the reference CRM, `search_path = public`.
pub fn catalog() -> Catalog {
    let tables = TABLES
        .iter()
        .map(|(table, columns)| {
            let columns = columns
                .iter()
                .map(|(name, data_type, _)| CatalogColumn {
                    name: name.to_string(),
                    data_type: data_type.to_string(),
                })
                .collect();
            (TableName::new("public", *table), columns)
        })
        .collect();
    Catalog {
        tables,
        search_path: vec!["public".to_string()],
    }
}

/// The reference roles: `dpo`, `sales`, `marketing`, `support`, `analyst`.
pub const ROLES: &[&str] = &["dpo", "sales", "marketing", "support", "analyst"];

/// The matrix entry of one column for one role (`show` when the matrix says nothing).
fn action(role: &str, table: &str, column: &str) -> Action {
    use Action::*;
    match (role, table, column) {
        ("sales", "contacts", "birth_date") => Year,
        ("sales", "contacts", "tax_code") => MaskLast(4),
        ("marketing", "contacts", "birth_date") => Year,
        ("marketing", "contacts", "phone" | "tax_code" | "street_address") => Drop,
        ("marketing", "interactions", "notes") => Drop,
        ("support", "contacts", "last_name") => MaskInitial,
        ("support", "contacts", "email") => MaskEmail,
        ("support", "contacts", "phone") => MaskLast(3),
        ("support", "contacts", "birth_date" | "tax_code" | "street_address") => Drop,
        ("analyst", "contacts", "id") => Pseudonym,
        ("analyst", "contacts", "birth_date") => Year,
        ("analyst", "contacts", c)
            if !matches!(c, "city" | "region" | "created_at" | "last_activity_at") =>
        {
            Drop
        }
        ("analyst", _, "contact_id") => Pseudonym,
        ("analyst", "interactions", "notes") => Drop,
        ("analyst", "tickets", "subject" | "body") => Drop,
        _ => Show,
    }
}

fn denied(role: &str, table: &str) -> bool {
    matches!(
        (role, table),
        (_, "health_records" | "judicial_records")
            | ("marketing" | "support", "deals")
            | ("marketing", "tickets")
    )
}

fn writes(role: &str, table: &str) -> Writes {
    let all = Writes {
        insert: true,
        update: true,
        delete: true,
    };
    match (role, table) {
        ("sales", "contacts" | "deals" | "interactions") => all,
        ("support", "consents" | "tickets") => Writes {
            insert: true,
            update: true,
            delete: false,
        },
        ("support", "interactions") => Writes {
            insert: true,
            update: false,
            delete: false,
        },
        _ => Writes::default(),
    }
}

fn filtered(role: &str, table: &str) -> bool {
    match role {
        "sales" => matches!(
            table,
            "contacts" | "consents" | "deals" | "interactions" | "tickets"
        ),
        "marketing" => table == "contacts",
        _ => false,
    }
}

/// The access of one reference role (`dpo` is unrestricted). Panics on an unknown role name: this
/// is test data.
pub fn role(name: &str) -> RoleAccess {
    assert!(ROLES.contains(&name), "not a reference role: {name}");
    let mut tables = BTreeMap::new();
    for (table, columns) in TABLES {
        let key = TableName::new("public", *table);
        if name == "dpo" {
            continue;
        }
        if denied(name, table) {
            let categories: BTreeSet<Category> =
                columns.iter().filter_map(|(_, _, c)| *c).collect();
            tables.insert(key, TableAccess::Denied { categories });
            continue;
        }
        let writes = writes(name, table);
        let columns = columns
            .iter()
            .map(|(column, _, category)| {
                let action = action(name, table, column);
                let writable = action.is_show() && (writes.insert || writes.update);
                ColumnAccess {
                    name: column.to_string(),
                    category: *category,
                    action,
                    writable,
                }
            })
            .collect();
        tables.insert(
            key,
            TableAccess::View(ViewAccess {
                view: table.to_string(),
                columns,
                filtered: filtered(name, table),
                writes,
            }),
        );
    }
    RoleAccess {
        role: name.to_string(),
        unrestricted: name == "dpo",
        view_schema: format!("maschera_{name}"),
        tables,
        unlisted: UnlistedTables::Deny,
        allowed_functions: BTreeSet::new(),
    }
}
