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
        ..Catalog::default()
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
        ("support", "interactions", "notes") => Redact,
        ("support", "tickets", "subject" | "body") => Redact,
        ("analyst", "contacts", "id") => Pseudonym,
        ("analyst", "contacts", "birth_date") => Year,
        ("analyst", "contacts", c)
            if !matches!(c, "city" | "region" | "created_at" | "last_activity_at") =>
        {
            Drop
        }
        ("analyst", _, "contact_id") => Pseudonym,
        ("analyst", "consents" | "deals" | "interactions" | "tickets", "id") => TablePseudonym,
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
        // Consents and interactions only of the contacts marketing may see.
        "marketing" => matches!(table, "contacts" | "consents" | "interactions"),
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
        channels: BTreeSet::new(),
        cascading_deletes: Default::default(),
        lookups: Default::default(),
    }
}

/// Statements a CRM, its ORM and psql send, each with the role that sends it; all accepted. For
/// the rewriter's benchmark and the cache's consistency test.
pub const CORPUS: &[(&str, &str)] = &[
    (
        "sales",
        "SELECT id, first_name, last_name, email FROM contacts WHERE id = 42",
    ),
    (
        "sales",
        "SELECT * FROM contacts WHERE region = 'north' ORDER BY last_activity_at DESC LIMIT 50 OFFSET 100",
    ),
    (
        "sales",
        "SELECT c.id, c.first_name, c.last_name, d.amount, d.stage FROM contacts c JOIN deals d ON d.contact_id = c.id \
         WHERE d.stage = 'open' AND d.amount > 1000.50 ORDER BY d.amount DESC LIMIT 20",
    ),
    (
        "sales",
        "SELECT \"contacts\".\"id\", \"contacts\".\"email\" FROM \"contacts\" WHERE (\"contacts\".\"city\" = 'Torino' \
         AND \"contacts\".\"created_at\" >= '2024-01-01T00:00:00+00:00'::timestamptz) ORDER BY \"contacts\".\"id\" ASC LIMIT 21",
    ),
    (
        "sales",
        "SELECT count(*) AS \"__count\" FROM \"contacts\" WHERE \"contacts\".\"region\" = 'north'",
    ),
    (
        "sales",
        "UPDATE contacts SET last_activity_at = now(), city = 'Milano' WHERE id = 7",
    ),
    (
        "sales",
        "INSERT INTO interactions (contact_id, channel, notes, occurred_at) VALUES (7, 'call', 'called back', now()) RETURNING id",
    ),
    (
        "sales",
        "DELETE FROM deals WHERE id = 99 AND stage = 'lost'",
    ),
    (
        "marketing",
        "SELECT c.id, c.email FROM contacts c WHERE EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id \
         AND k.purpose = 'newsletter' AND k.withdrawn_at IS NULL) LIMIT 500",
    ),
    (
        "support",
        "SELECT t.id, t.subject, t.status, c.first_name, c.last_name FROM tickets t JOIN contacts c ON c.id = t.contact_id WHERE t.status = 'open'",
    ),
    (
        "support",
        "UPDATE tickets SET status = 'closed' WHERE id = 12 RETURNING id, status",
    ),
    (
        "support",
        "INSERT INTO consents (contact_id, purpose, granted_at, source) VALUES (3, 'profiling', now(), 'phone')",
    ),
    (
        "analyst",
        "SELECT region, date_trunc('month', created_at) AS month, count(*) FROM contacts GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "analyst",
        "WITH recent AS (SELECT contact_id, count(*) AS n FROM interactions WHERE occurred_at > now() - interval '30 days' \
         GROUP BY contact_id) SELECT c.region, avg(r.n) FROM recent r JOIN contacts c ON c.id = r.contact_id GROUP BY c.region",
    ),
    (
        "analyst",
        "SELECT stage, sum(amount), percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM deals GROUP BY stage",
    ),
    (
        "support",
        "SELECT c.relname, n.nspname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'v', 'm') AND n.nspname !~ '^pg_' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1, 2",
    ),
    (
        "support",
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name = 'tickets' ORDER BY ordinal_position",
    ),
    ("sales", "BEGIN"),
    ("sales", "COMMIT"),
    ("sales", "SET application_name = 'crm-web'"),
    ("sales", "SHOW TimeZone"),
];
