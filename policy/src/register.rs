//! The register of processing activities (GDPR Art. 30) derived from a policy: for each purpose (role)
//! every item of Art. 30(1)(a)-(g): the controller, its representative and DPO; the purpose and lawful
//! basis; the categories of data subjects (from `[data_subjects]`) and of personal data (with what the
//! role sees of each); the recipients with their category; transfers to third countries with their
//! safeguard; retention per table; and the technical measures, read from the statements `policy apply`
//! installs, so that they stay true as that changes. Rendered as Markdown, CSV or (serde) JSON. Pure;
//! not for deciding access (see `compile`) or for finding gaps (see `controller::gaps`).

use crate::access::{Action, Category};
use crate::action::action_text;
use crate::apply_sql::{ApplyOptions, LiveState, apply_steps, quote_ident};
use crate::controller::{Controller, RecordKeeping, is_personal};
use crate::model::{PRIVATE_SCHEMA, Policy, Role, Table};
use crate::retention::RetentionAction;
use serde::Serialize;
use std::collections::BTreeMap;

/// The register: one entry per role, in the policy's role order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Register {
    /// Art. 30(1)(a); `None` when the policy has no `[controller]` (a gap `policy check` warns of).
    pub controller: Option<ControllerItem>,
    pub entries: Vec<Entry>,
}

/// Art. 30(1)(a), as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerItem {
    pub name: String,
    pub contact: String,
    pub representative: String,
    pub dpo: String,
}

/// One processing activity (one role of the policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub role: String,
    pub description: String,
    pub purpose: String,
    pub lawful_basis: String,
    /// Art. 30(1)(c): the categories of people whose data the role processes, with their tables.
    pub data_subjects: Vec<SubjectItem>,
    pub personal_data: Vec<DataItem>,
    /// Art. 30(1)(d).
    pub recipients: Vec<RecipientItem>,
    /// Art. 30(1)(e): `recipient: country (safeguard)`; empty when the data stays in the EEA.
    pub transfers: Vec<String>,
    /// Art. 30(1)(f): per table the role reaches, the period stated and the rule enforced, or a gap.
    pub retention: Vec<String>,
    /// Art. 30(1)(g).
    pub measures: Vec<String>,
}

/// One category of data subjects a role processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectItem {
    pub category: String,
    pub description: String,
    /// `table` or `table where <condition>`.
    pub tables: Vec<String>,
}

/// One recipient of a role's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientItem {
    pub name: String,
    /// `internal`, `processor`, ... or `not declared`.
    pub category: String,
}

/// One personal column a role processes, and in which form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataItem {
    pub table: String,
    /// `*` for a table whose every column has the category.
    pub column: String,
    #[serde(serialize_with = "category_name")]
    pub category: Category,
    pub action: String,
}

fn category_name<S: serde::Serializer>(c: &Category, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

const NOT_GIVEN: &str = "not given";
/// Measures that hold for every role whatever its rules (the proxy's own guarantees).
const COMMON_MEASURES: &[&str] = &[
    "access log of every statement on personal data (tamper-evident, categories only)",
    "TLS between clients and proxy",
    "SCRAM-SHA-256 authentication",
];

/// Builds the register of `policy`.
pub fn register(policy: &Policy) -> Register {
    let installed = installed_measures(policy);
    Register {
        controller: policy
            .record_keeping
            .controller
            .as_ref()
            .map(controller_item),
        entries: policy
            .roles
            .values()
            .map(|r| {
                entry(
                    policy,
                    r,
                    installed.get(&r.name).cloned().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

fn controller_item(c: &Controller) -> ControllerItem {
    ControllerItem {
        name: c.name.clone(),
        contact: c.contact.clone(),
        representative: c
            .representative
            .clone()
            .unwrap_or_else(|| "none designated".into()),
        dpo: text_or_not_given(&c.dpo),
    }
}

/// Per restricted role, what the statements of `policy apply` install for its login: read from the
/// SQL itself (views and their options, row-level security, grants, the key schema).
fn installed_measures(policy: &Policy) -> BTreeMap<String, Vec<String>> {
    let catalog = policy.derived_catalog();
    let access = policy
        .restricted_roles()
        .map(|r| (r.name.clone(), policy.role_access(r, &catalog)))
        .collect();
    let live = LiveState {
        catalog,
        ..LiveState::default()
    };
    let steps = apply_steps(policy, &access, &live, &ApplyOptions::default()).unwrap_or_default();
    let base_tables: Vec<String> = policy
        .tables
        .values()
        .map(|t| {
            format!(
                "{}.{}",
                quote_ident(&t.name.schema),
                quote_ident(&t.name.name)
            )
        })
        .collect();
    let mut found = BTreeMap::new();
    for role in policy.restricted_roles() {
        let login = role.login();
        let who = quote_ident(&login);
        let sql: Vec<&str> = steps
            .iter()
            .map(|s| s.sql.as_str())
            .filter(|s| s.contains(&who))
            .collect();
        let any = |needle: &str| sql.iter().any(|s| s.contains(needle));
        let mut measures = Vec::new();
        if any("CREATE ROLE") {
            let limits: Vec<&str> = [
                ("NOSUPERUSER", "not a superuser"),
                ("NOBYPASSRLS", "cannot bypass row-level security"),
                ("NOCREATEROLE", "cannot create roles"),
            ]
            .into_iter()
            .filter(|(keyword, _)| any(keyword))
            .map(|(_, text)| text)
            .collect();
            measures.push(format!(
                "a database login of its own ({login}: {})",
                limits.join(", ")
            ));
        }
        let on_base_table = sql.iter().any(|s| {
            s.starts_with("GRANT")
                && !s.contains("SEQUENCE")
                && base_tables.iter().any(|t| s.contains(&format!(" ON {t} ")))
        });
        if !on_base_table {
            measures.push("no privilege on the base tables: only on its own relations".into());
        }
        // Filtered views are created by a DO block that fills in their guard: count both forms.
        let view_head = format!("CREATE VIEW {who}.");
        let views = sql.iter().filter(|s| s.contains(&view_head)).count();
        if views > 0 {
            let kind = match any("security_barrier") {
                true => "security-barrier views",
                false => "views",
            };
            let owner = quote_ident(&crate::db_lock::owner_role(&login));
            let owned = steps.iter().any(|s| {
                s.sql.starts_with("ALTER VIEW") && s.sql.ends_with(&format!("OWNER TO {owner}"))
            });
            let owned_by = if owned {
                format!(
                    ", owned by the role {} that cannot log in",
                    crate::db_lock::owner_role(&login)
                )
            } else {
                String::new()
            };
            measures.push(format!(
                "reads only through {views} {kind} in schema {login}{owned_by}, which apply its masks"
            ));
        }
        if any("CREATE POLICY") {
            measures.push(
                "its row filters are row-level-security policies on the base tables (restrictive, for its \
                 owner role only); a guard in each filtered view returns no rows and refuses writes if they \
                 are changed or removed outside maschera"
                    .into(),
            );
        } else if any("ROW LEVEL SECURITY") {
            measures.push("row-level security policies on the base tables".into());
        }
        if any("check_option") || any("WITH CHECK") {
            measures
                .push("a row it writes must satisfy its row filter (checked by PostgreSQL)".into());
        }
        if any("CREATE TRIGGER") {
            measures.push(
                "writes go through INSTEAD OF triggers: only columns it sees in clear (and redacted text in \
                 new rows); a masked value written back unchanged keeps the stored value, any other is \
                 refused; no upserts"
                    .into(),
            );
        }
        if any("GRANT INSERT (") || any("GRANT UPDATE (") {
            measures.push("column-level write grants (only the columns it sees in clear)".into());
        }
        if any(&format!("{PRIVATE_SCHEMA}.keys")) {
            measures.push(format!(
                "pseudonym key kept in {PRIVATE_SCHEMA}, which the login cannot read"
            ));
        }
        found.insert(role.name.clone(), measures);
    }
    found
}

fn entry(policy: &Policy, role: &Role, installed: Vec<String>) -> Entry {
    let mut tables = Vec::new();
    let mut personal_data = Vec::new();
    let mut measures = Vec::new();
    let mut denied = Vec::new();
    let mut filtered = Vec::new();
    for table in policy.tables.values() {
        let items = match role.unrestricted {
            true => unrestricted_items(table),
            false => match role.rules.get(&table.key) {
                Some(rule) if !rule.deny => {
                    if rule.filter.is_some() {
                        filtered.push(table.key.clone());
                    }
                    restricted_items(table, |column, category| rule.action_for(column, category))
                }
                _ => {
                    denied.push(table.key.clone());
                    continue;
                }
            },
        };
        tables.push(table);
        personal_data.extend(items);
    }
    if role.unrestricted {
        measures.push("unrestricted: full rights on the database, every access logged".into());
    } else {
        measures.extend(installed);
        for (name, matches) in [
            ("masking", is_mask as fn(&Action) -> bool),
            ("pseudonymisation", is_pseudonym),
            ("generalisation", is_generalisation),
            ("redaction of free text", |a: &Action| *a == Action::Redact),
        ] {
            let columns: Vec<String> = personal_data
                .iter()
                .filter(|i| action_matches(&i.action, matches))
                .map(|i| format!("{}.{}", i.table, i.column))
                .collect();
            if !columns.is_empty() {
                measures.push(format!("{name} ({})", columns.join(", ")));
            }
        }
        if !filtered.is_empty() {
            measures.push(format!("row filters ({})", filtered.join(", ")));
        }
        if !denied.is_empty() {
            measures.push(format!("tables denied ({})", denied.join(", ")));
        }
        measures.push("personal columns not named are dropped (privacy by default)".into());
    }
    measures.extend(COMMON_MEASURES.iter().map(|m| m.to_string()));
    let keeping = &policy.record_keeping;
    let recipients: Vec<RecipientItem> = role
        .recipients
        .iter()
        .map(|name| RecipientItem {
            name: name.clone(),
            category: keeping
                .recipients
                .get(name)
                .map_or_else(|| "not declared".into(), |r| r.category.clone()),
        })
        .collect();
    let transfers = role
        .recipients
        .iter()
        .filter_map(|name| keeping.recipients.get(name))
        .filter_map(|r| {
            r.transfer
                .as_ref()
                .map(|t| format!("{}: {} ({})", r.name, t.country, t.safeguard))
        })
        .collect();
    let personal_tables: Vec<&Table> = tables.iter().copied().filter(|t| is_personal(t)).collect();
    Entry {
        role: role.name.clone(),
        description: text_or_not_given(&role.description),
        purpose: text_or_not_given(&role.purpose),
        lawful_basis: text_or_not_given(&role.lawful_basis),
        data_subjects: subject_items(keeping, &personal_tables),
        personal_data,
        recipients,
        transfers,
        retention: personal_tables
            .iter()
            .map(|t| retention_text(t, keeping.retention_periods.get(&t.key)))
            .collect(),
        measures,
    }
}

/// The declared categories of data subjects that have data in `tables`, then one `undeclared` item
/// for the tables no category lists.
fn subject_items(keeping: &RecordKeeping, tables: &[&Table]) -> Vec<SubjectItem> {
    let mut items: Vec<SubjectItem> = keeping
        .data_subjects
        .iter()
        .filter_map(|c| {
            let held: Vec<String> = tables
                .iter()
                .filter(|t| c.tables.contains(&t.key))
                .map(|t| match c.conditions.get(&t.key) {
                    Some(condition) => format!("{} where {condition}", t.key),
                    None => t.key.clone(),
                })
                .collect();
            (!held.is_empty()).then(|| SubjectItem {
                category: c.name.clone(),
                description: text_or_not_given(&c.description),
                tables: held,
            })
        })
        .collect();
    let undeclared: Vec<String> = tables
        .iter()
        .filter(|t| keeping.subjects_of(&t.key).next().is_none())
        .map(|t| t.key.clone())
        .collect();
    if !undeclared.is_empty() {
        items.push(SubjectItem {
            category: "not declared".into(),
            description: "tables with personal data that no [data_subjects] category lists".into(),
            tables: undeclared,
        });
    }
    items
}

fn text_or_not_given(text: &Option<String>) -> String {
    text.clone().unwrap_or_else(|| NOT_GIVEN.into())
}

fn unrestricted_items(table: &Table) -> Vec<DataItem> {
    restricted_items(table, |_, _| Action::Show)
}

/// The personal columns of `table` with the action `action_for` gives them, dropped ones left out.
fn restricted_items(
    table: &Table,
    action_for: impl Fn(&str, Option<Category>) -> Action,
) -> Vec<DataItem> {
    let mut items: Vec<DataItem> = table
        .columns
        .keys()
        .filter_map(|column| {
            let category = table.category(column)?;
            let action = action_for(column, Some(category));
            (action != Action::Drop).then(|| DataItem {
                table: table.key.clone(),
                column: column.clone(),
                category,
                action: action_text(&action),
            })
        })
        .collect();
    if let Some(category) = table.personal {
        let action = action_for("*", Some(category));
        if action != Action::Drop {
            items.push(DataItem {
                table: table.key.clone(),
                column: "*".into(),
                category,
                action: action_text(&action),
            });
        }
    }
    items
}

fn action_matches(text: &str, matches: fn(&Action) -> bool) -> bool {
    crate::action::parse_action(text).is_ok_and(|a| matches(&a))
}

fn is_mask(action: &Action) -> bool {
    matches!(
        action,
        Action::MaskEmail
            | Action::MaskLast(_)
            | Action::MaskFirst(_)
            | Action::MaskInitial
            | Action::Partial { .. }
            | Action::Null
            | Action::Constant(_)
    )
}

fn is_pseudonym(action: &Action) -> bool {
    matches!(
        action,
        Action::Pseudonym | Action::TablePseudonym | Action::Hash
    )
}

fn is_generalisation(action: &Action) -> bool {
    matches!(action, Action::Year | Action::Month | Action::Bucket(_))
}

/// Per table: the stated period, the enforced rule, both, or a visible gap.
pub fn retention_text(table: &Table, stated: Option<&String>) -> String {
    let enforced = table.retention.as_ref().map(|r| {
        let then = match &r.action {
            RetentionAction::Delete => "rows deleted".to_string(),
            RetentionAction::Mask(masks) => format!(
                "masked ({})",
                masks
                    .iter()
                    .map(|(c, a)| format!("{c} {}", action_text(a)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("{} after {}, then {then}", r.period, r.column)
    });
    let text = match (stated, enforced) {
        (None, None) => "NOT SET (Art. 30(1)(f) gap)".to_string(),
        (Some(s), None) => s.clone(),
        (None, Some(e)) => format!("{e} (enforced by `maschera retention run`)"),
        (Some(s), Some(e)) => format!("{s}; enforced: {e}"),
    };
    format!("{}: {text}", table.key)
}

impl Register {
    /// Art. 30(1)(a) as three texts: controller (name, contact), representative, DPO.
    fn controller_texts(&self) -> [String; 3] {
        match &self.controller {
            Some(c) => [
                format!("{}, {}", c.name, c.contact),
                c.representative.clone(),
                c.dpo.clone(),
            ],
            None => [NOT_GIVEN.into(), NOT_GIVEN.into(), NOT_GIVEN.into()],
        }
    }

    /// The register as a Markdown document: one section per processing activity.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# Register of processing activities (GDPR Art. 30)\n");
        let [controller, representative, dpo] = self.controller_texts();
        for e in &self.entries {
            out.push_str(&format!("\n## {}\n\n", e.role));
            for (label, value) in [
                ("Controller", controller.clone()),
                ("Representative", representative.clone()),
                ("Data protection officer", dpo.clone()),
                ("Description", e.description.clone()),
                ("Purpose", e.purpose.clone()),
                ("Lawful basis", e.lawful_basis.clone()),
                ("Categories of data subjects", list(&e.subject_texts())),
                ("Recipients", list(&e.recipient_texts())),
                ("Transfers to third countries", list(&e.transfers)),
            ] {
                out.push_str(&format!("- **{label}:** {}\n", md_cell(&value)));
            }
            out.push_str("\n### Categories of personal data\n\n| table | column | category | as seen |\n| --- | --- | --- | --- |\n");
            for i in &e.personal_data {
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    md_cell(&i.table),
                    md_cell(&i.column),
                    i.category.as_str(),
                    md_cell(&i.action)
                ));
            }
            out.push_str("\n### Retention\n\n");
            for r in &e.retention {
                out.push_str(&format!("- {}\n", md_cell(r)));
            }
            out.push_str("\n### Technical measures\n\n");
            for m in &e.measures {
                out.push_str(&format!("- {}\n", md_cell(m)));
            }
        }
        out
    }

    /// The register as CSV (RFC 4180): one row per personal column a role processes, the role's
    /// details repeated on each row; a role without personal data gets one row with empty data fields.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "role,controller,representative,dpo,description,purpose,lawful_basis,data_subjects,table,column,category,as_seen,recipients,transfers,retention,measures\r\n",
        );
        let [controller, representative, dpo] = self.controller_texts();
        for e in &self.entries {
            let head = [
                e.role.clone(),
                controller.clone(),
                representative.clone(),
                dpo.clone(),
                e.description.clone(),
                e.purpose.clone(),
                e.lawful_basis.clone(),
                e.subject_texts().join("; "),
            ];
            let tail = [
                e.recipient_texts().join("; "),
                e.transfers.join("; "),
                e.retention.join("; "),
                e.measures.join("; "),
            ];
            let data: Vec<[String; 4]> = match e.personal_data.is_empty() {
                true => vec![Default::default()],
                false => e
                    .personal_data
                    .iter()
                    .map(|i| {
                        [
                            i.table.clone(),
                            i.column.clone(),
                            i.category.as_str().to_string(),
                            i.action.clone(),
                        ]
                    })
                    .collect(),
            };
            for d in data {
                let fields: Vec<String> = head
                    .iter()
                    .chain(d.iter())
                    .chain(tail.iter())
                    .map(|f| csv_field(f))
                    .collect();
                out.push_str(&fields.join(","));
                out.push_str("\r\n");
            }
        }
        out
    }
}

impl Entry {
    /// `category (table, table where condition)` per category of data subjects.
    fn subject_texts(&self) -> Vec<String> {
        self.data_subjects
            .iter()
            .map(|s| format!("{} ({})", s.category, s.tables.join(", ")))
            .collect()
    }

    /// `name (category)` per recipient.
    fn recipient_texts(&self) -> Vec<String> {
        self.recipients
            .iter()
            .map(|r| format!("{} ({})", r.name, r.category))
            .collect()
    }
}

fn list(items: &[String]) -> String {
    match items.is_empty() {
        true => "none".into(),
        false => items.join(", "),
    }
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
pub fn csv_field(text: &str) -> String {
    match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[tables.contacts.columns]
email = { category = "contact", type = "text" }
id = { category = "identifying", type = "bigint" }
[tables.contacts.retention]
column = "created_at"
period = "5 years"
[tables.health]
personal = "special_category"
[roles.dpo]
purpose = "oversight, with a comma"
unrestricted = true
[roles.support.tables.contacts]
columns = { email = "mask.email", id = "pseudonym" }
"#;

    #[test]
    fn register_lists_roles_categories_actions_and_retention() {
        let policy = Policy::parse("p.toml", POLICY).expect("valid");
        let reg = register(&policy);
        assert_eq!(reg.entries.len(), 2);
        let dpo = &reg.entries[0];
        assert!(dpo.personal_data.iter().any(|i| i.table == "health"
            && i.column == "*"
            && i.category == Category::SpecialCategory));
        let support = &reg.entries[1];
        assert_eq!(support.data_subjects[0].tables, vec!["contacts"]);
        assert_eq!(support.data_subjects[0].category, "not declared");
        assert!(
            support
                .personal_data
                .iter()
                .any(|i| i.column == "email" && i.action == "mask.email")
        );
        assert!(support.retention[0].contains("5 years after created_at"));
        for wanted in [
            "views in schema maschera_support, owned by the role maschera_support_owner",
            "no privilege on the base tables",
            "pseudonymisation",
            "tables denied (health)",
        ] {
            assert!(
                support.measures.iter().any(|m| m.contains(wanted)),
                "{wanted}: {:?}",
                support.measures
            );
        }
        let csv = reg.to_csv();
        assert!(csv.contains("\"oversight, with a comma\""));
        assert!(reg.to_markdown().contains("## support"));
    }
}
