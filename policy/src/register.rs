//! The register of processing activities (GDPR Art. 30) derived from a policy: for each purpose (role)
//! its description, lawful basis, categories of data subjects and of personal data (with what the role
//! sees of each), recipients, retention periods and the technical measures in force; rendered as
//! Markdown or CSV. Pure; not for deciding access (see `compile`).

use crate::access::{Action, Category};
use crate::action::action_text;
use crate::model::{Policy, Role, Table};
use crate::retention::RetentionAction;

/// The register: one entry per role, in the policy's role order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub entries: Vec<Entry>,
}

/// One processing activity (one role of the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub role: String,
    pub description: String,
    pub purpose: String,
    pub lawful_basis: String,
    /// The tables whose data subjects the role processes.
    pub data_subjects: Vec<String>,
    pub personal_data: Vec<DataItem>,
    pub recipients: Vec<String>,
    /// Per table the role reaches: the retention rule, or `not set`.
    pub retention: Vec<String>,
    pub measures: Vec<String>,
}

/// One personal column a role processes, and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataItem {
    pub table: String,
    /// `*` for a table whose every column has the category.
    pub column: String,
    pub category: Category,
    pub action: String,
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
    Register {
        entries: policy.roles.values().map(|r| entry(policy, r)).collect(),
    }
}

fn entry(policy: &Policy, role: &Role) -> Entry {
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
        measures.push("access only through security-barrier views of its own schema".into());
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
    Entry {
        role: role.name.clone(),
        description: text_or_not_given(&role.description),
        purpose: text_or_not_given(&role.purpose),
        lawful_basis: text_or_not_given(&role.lawful_basis),
        data_subjects: tables.iter().map(|t| t.key.clone()).collect(),
        personal_data,
        recipients: role.recipients.clone(),
        retention: tables.iter().map(|t| retention_text(t)).collect(),
        measures,
    }
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

fn retention_text(table: &Table) -> String {
    match &table.retention {
        None => format!("{}: not set", table.key),
        Some(r) => {
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
            format!(
                "{}: {} after {}, then {then}",
                table.key, r.period, r.column
            )
        }
    }
}

impl Register {
    /// The register as a Markdown document: one section per processing activity.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# Register of processing activities (GDPR Art. 30)\n");
        for e in &self.entries {
            out.push_str(&format!("\n## {}\n\n", e.role));
            for (label, value) in [
                ("Description", e.description.clone()),
                ("Purpose", e.purpose.clone()),
                ("Lawful basis", e.lawful_basis.clone()),
                ("Categories of data subjects", list(&e.data_subjects)),
                ("Recipients", list(&e.recipients)),
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
            "role,description,purpose,lawful_basis,data_subjects,table,column,category,as_seen,recipients,retention,measures\r\n",
        );
        for e in &self.entries {
            let head = [
                e.role.clone(),
                e.description.clone(),
                e.purpose.clone(),
                e.lawful_basis.clone(),
                e.data_subjects.join("; "),
            ];
            let tail = [
                e.recipients.join("; "),
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

fn list(items: &[String]) -> String {
    match items.is_empty() {
        true => "none".into(),
        false => items.join(", "),
    }
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn csv_field(text: &str) -> String {
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
        assert_eq!(support.data_subjects, vec!["contacts"]);
        assert!(
            support
                .personal_data
                .iter()
                .any(|i| i.column == "email" && i.action == "mask.email")
        );
        assert!(support.retention[0].contains("5 years after created_at"));
        assert!(
            support
                .measures
                .iter()
                .any(|m| m.starts_with("pseudonymisation"))
        );
        assert!(
            support
                .measures
                .iter()
                .any(|m| m.contains("tables denied (health)"))
        );
        let csv = reg.to_csv();
        assert!(csv.contains("\"oversight, with a comma\""));
        assert!(reg.to_markdown().contains("## support"));
    }
}
