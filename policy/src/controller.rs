//! What the register of processing activities (GDPR Art. 30) and a subject's access request (Art. 15)
//! need beyond the access rules: the controller, its representative and data protection officer
//! (`[controller]`), the categories of data subjects and the tables (and rows) that hold them
//! (`[data_subjects.<name>]`), the recipients with their category and any transfer to a third country
//! (`[recipients."<name>"]`), each table's retention period in words (`[retention_periods]`), and for
//! the subject's access request the source of each table's data (`[sources]`, Art. 15(1)(g)) and each
//! role's automated decision-making (`[automated_decisions]`, Art. 15(1)(h), Art. 22).
//! Parsed and validated here; `gaps` lists the Art. 30 items a policy leaves out (warnings, not errors).
//! Not for: access decisions (see `compile`), enforced retention (see `retention`), rendering (see
//! `register`).

use crate::diagnostics::{Diagnostic, Severity, Source, suggest};
use crate::file::Sections;
pub use crate::file::{ControllerFile, RecipientFile, SubjectsFile, TransferFile};
pub use crate::model::{Controller, Recipient, RecordKeeping, SubjectCategory, Transfer};
use crate::model::{Policy, Table};
use serde_spanned::Spanned;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use std::collections::BTreeMap;

/// The categories a recipient may have.
pub const RECIPIENT_CATEGORIES: &[&str] = &[
    "internal",
    "processor",
    "controller",
    "joint_controller",
    "public_authority",
    "third_party",
    "data_subject",
];

/// Validates the sections against the declared tables; errors go to `errors`.
pub(crate) fn validate(
    sections: Sections,
    tables: &BTreeMap<String, Table>,
    source: &Source,
    errors: &mut Vec<Diagnostic>,
) -> RecordKeeping {
    let error =
        |errors: &mut Vec<Diagnostic>,
         span: std::ops::Range<usize>,
         message: String,
         help: Option<String>| errors.push(source.error(span, message, help));
    let known: Vec<&str> = tables.keys().map(String::as_str).collect();
    let table_known = |errors: &mut Vec<Diagnostic>, key: &Spanned<String>| {
        let ok = tables.contains_key(key.get_ref());
        if !ok {
            error(
                errors,
                key.span(),
                format!("table `{}` is not declared under [tables]", key.get_ref()),
                Some(suggest(key.get_ref(), &known, "tables")),
            );
        }
        ok
    };
    let controller = sections.controller.map(|c| {
        let c = c.get_ref();
        Controller {
            name: c.name.get_ref().clone(),
            contact: c.contact.get_ref().clone(),
            representative: c.representative.as_ref().map(|r| r.get_ref().clone()),
            dpo: c.dpo.as_ref().map(|d| d.get_ref().clone()),
        }
    });
    let mut data_subjects = Vec::new();
    for (name, category) in sections.data_subjects {
        let c = category.get_ref();
        if c.tables.is_empty() {
            error(
                errors,
                category.span(),
                format!("data subject category `{}` names no table", name.get_ref()),
                Some("write `tables = [\"contacts\", ...]`: the tables holding their data".into()),
            );
        }
        let mut listed = Vec::new();
        for table in &c.tables {
            if table_known(errors, table) {
                listed.push(table.get_ref().clone());
            }
        }
        let mut conditions = BTreeMap::new();
        for (table, condition) in &c.conditions {
            if !listed.contains(table.get_ref()) {
                error(
                    errors,
                    table.span(),
                    format!(
                        "`where` names table `{}`, which this category's `tables` does not list",
                        table.get_ref()
                    ),
                    None,
                );
                continue;
            }
            match parse_condition(condition.get_ref()) {
                Ok(sql) => {
                    conditions.insert(table.get_ref().clone(), sql);
                }
                Err(message) => error(errors, condition.span(), message, None),
            }
        }
        data_subjects.push(SubjectCategory {
            name: name.get_ref().clone(),
            description: c.description.as_ref().map(|d| d.get_ref().clone()),
            tables: listed,
            conditions,
        });
    }
    let mut recipients = BTreeMap::new();
    for (name, recipient) in sections.recipients {
        let r = recipient.get_ref();
        if !RECIPIENT_CATEGORIES.contains(&r.category.get_ref().as_str()) {
            error(
                errors,
                r.category.span(),
                format!("unknown recipient category `{}`", r.category.get_ref()),
                Some(suggest(
                    r.category.get_ref(),
                    RECIPIENT_CATEGORIES,
                    "categories",
                )),
            );
        }
        let transfer = r.transfer.as_ref().map(|t| {
            let t = t.get_ref();
            for field in [&t.country, &t.safeguard] {
                if field.get_ref().trim().is_empty() {
                    error(
                        errors,
                        field.span(),
                        "a transfer names its country and its safeguard".into(),
                        Some("e.g. `safeguard = \"standard contractual clauses, Art. 46(2)(c)\"` or `\"adequacy decision, Art. 45\"`".into()),
                    );
                }
            }
            Transfer {
                country: t.country.get_ref().clone(),
                safeguard: t.safeguard.get_ref().clone(),
            }
        });
        recipients.insert(
            name.get_ref().clone(),
            Recipient {
                name: name.get_ref().clone(),
                category: r.category.get_ref().clone(),
                description: r.description.as_ref().map(|d| d.get_ref().clone()),
                transfer,
            },
        );
    }
    let mut retention_periods = BTreeMap::new();
    for (table, period) in sections.retention_periods {
        if table_known(errors, table) {
            retention_periods.insert(table.get_ref().clone(), period.get_ref().clone());
        }
    }
    let stated = |errors: &mut Vec<Diagnostic>, text: &Spanned<String>, what: &str| {
        let ok = !text.get_ref().trim().is_empty();
        if !ok {
            error(errors, text.span(), format!("{what} is empty"), None);
        }
        ok
    };
    let mut sources = BTreeMap::new();
    for (table, source) in sections.sources {
        if table_known(errors, table) && stated(errors, source, "the source") {
            sources.insert(table.get_ref().clone(), source.get_ref().trim().to_string());
        }
    }
    let mut automated_decisions = BTreeMap::new();
    for (role, text) in sections.automated_decisions {
        if !sections.roles.contains(&role.get_ref().as_str()) {
            error(
                errors,
                role.span(),
                format!("role `{}` is not declared under [roles]", role.get_ref()),
                Some(suggest(role.get_ref(), &sections.roles, "roles")),
            );
            continue;
        }
        if stated(errors, text, "the automated decision-making statement") {
            automated_decisions.insert(role.get_ref().clone(), text.get_ref().trim().to_string());
        }
    }
    RecordKeeping {
        controller,
        data_subjects,
        recipients,
        retention_periods,
        sources,
        automated_decisions,
    }
}

/// One SQL condition over a table's own columns (no subquery text is checked here: the database does).
fn parse_condition(text: &str) -> Result<String, String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| format!("not a SQL condition: {e}"))?;
    let expr = parser
        .parse_expr()
        .map_err(|e| format!("not a SQL condition: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err("a row condition is one SQL expression, with nothing after it".into());
    }
    Ok(expr.to_string())
}

/// Whether a table holds personal data (a category on the table or on one of its columns).
pub fn is_personal(table: &Table) -> bool {
    table.personal.is_some() || table.columns.values().any(|c| c.category.is_some())
}

/// Every Art. 30(1) item the policy leaves out, as warnings pinned where it would go.
pub fn gaps(policy: &Policy) -> Vec<Diagnostic> {
    let source = Source::new(&policy.file, &policy.text);
    let mut found = Vec::new();
    let mut warn = |span: std::ops::Range<usize>, message: String, help: &str| {
        let mut d = source.error(span, message, Some(help.to_string()));
        d.severity = Severity::Warning;
        found.push(d);
    };
    let keeping = &policy.record_keeping;
    match &keeping.controller {
        None => warn(
            0..0,
            "Art. 30(1)(a): no [controller] (name and contact details of the controller)".into(),
            "add [controller] with `name`, `contact`, and `dpo` (and `representative` outside the EU)",
        ),
        Some(c) if c.dpo.is_none() => warn(
            0..0,
            "Art. 30(1)(a): [controller] names no data protection officer".into(),
            "add `dpo = \"name, contact\"` to [controller]",
        ),
        Some(_) => {}
    }
    for role in policy.roles.values() {
        if role.purpose.is_none() {
            warn(
                role.span.clone(),
                format!("Art. 30(1)(b): role `{}` states no purpose", role.name),
                "add `purpose = \"...\"` to the role",
            );
        }
        if role.lawful_basis.is_none() {
            warn(
                role.span.clone(),
                format!("Art. 6: role `{}` states no lawful basis", role.name),
                "add `lawful_basis = \"...\"` to the role",
            );
        }
        for recipient in &role.recipients {
            if !keeping.recipients.contains_key(recipient) {
                warn(
                    role.span.clone(),
                    format!(
                        "Art. 30(1)(d): recipient `{recipient}` of role `{}` has no [recipients.\"{recipient}\"] with its category",
                        role.name
                    ),
                    "declare it with `category` (and `transfer` if the data leaves the EEA)",
                );
            }
        }
    }
    for table in policy.tables.values().filter(|t| is_personal(t)) {
        if keeping.subjects_of(&table.key).next().is_none() {
            warn(
                table.span.clone(),
                format!(
                    "Art. 30(1)(c): table `{}` holds personal data of no declared category of data subjects",
                    table.key
                ),
                "list it in the `tables` of a [data_subjects.<name>] section",
            );
        }
        if table.retention.is_none() && !keeping.retention_periods.contains_key(&table.key) {
            warn(
                table.span.clone(),
                format!(
                    "Art. 30(1)(f): table `{}` holds personal data and has no retention period",
                    table.key
                ),
                "add [tables.<t>.retention] (enforced) or a line in [retention_periods] (stated)",
            );
        }
    }
    for table in policy.tables.values().filter(|t| is_personal(t)) {
        if !keeping.sources.contains_key(&table.key) {
            warn(
                table.span.clone(),
                format!(
                    "Art. 15(1)(g): table `{}` holds personal data and declares no source",
                    table.key
                ),
                "add a line in [sources], e.g. `contacts = \"the data subject (web form)\"`",
            );
        }
    }
    for role in policy.roles.values() {
        if !keeping.automated_decisions.contains_key(&role.name) {
            warn(
                role.span.clone(),
                format!(
                    "Art. 15(1)(h): role `{}` states no automated decision-making (not even `none`)",
                    role.name
                ),
                "add a line in [automated_decisions]: `none`, or the decision, its logic and its consequences",
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[tables.contacts.columns]
email = "contact"
[tables.deals.columns]
contact_id = "financial"
[roles.sales]
purpose = "sell"
lawful_basis = "contract"
recipients = ["Mailer"]
"#;

    const FULL: &str = r#"
[controller]
name = "Example S.r.l."
contact = "privacy@example.it"
dpo = "Dora, dpo@example.it"
[data_subjects.customers]
description = "Customers"
tables = ["contacts", "deals"]
where = { contacts = "id IN (SELECT contact_id FROM deals)" }
[recipients."Mailer"]
category = "processor"
transfer = { country = "United States", safeguard = "SCC, Art. 46(2)(c)" }
[retention_periods]
contacts = "10 years after the last contract"
deals = "10 years"
[sources]
contacts = "the data subject"
deals = "the data subject; the sales team"
[automated_decisions]
sales = "none"
"#;

    #[test]
    fn a_complete_policy_has_no_gaps_and_keeps_every_declaration() {
        let policy = Policy::parse("p.toml", &format!("{BASE}{FULL}")).expect("valid");
        assert_eq!(gaps(&policy), vec![]);
        let k = &policy.record_keeping;
        assert_eq!(k.controller.as_ref().unwrap().name, "Example S.r.l.");
        assert_eq!(k.data_subjects[0].tables, vec!["contacts", "deals"]);
        assert_eq!(k.sources["deals"], "the data subject; the sales team");
        assert_eq!(k.automated_decisions["sales"], "none");
        assert!(k.data_subjects[0].conditions["contacts"].contains("SELECT"));
        assert_eq!(
            k.recipients["Mailer"].transfer.as_ref().unwrap().country,
            "United States"
        );
    }

    #[test]
    fn each_missing_item_is_one_warning_and_no_error() {
        let policy = Policy::parse("p.toml", BASE).expect("gaps are not errors");
        let messages: Vec<String> = gaps(&policy).into_iter().map(|d| d.message).collect();
        assert!(messages.iter().any(|m| m.contains("no [controller]")));
        assert!(messages.iter().any(|m| m.contains("recipient `Mailer`")));
        assert!(messages.iter().any(|m| {
            m.contains("15(1)(g): table `deals` holds personal data and declares no source")
        }));
        assert!(
            messages
                .iter()
                .any(|m| m.contains("15(1)(h): role `sales` states no automated"))
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`contacts` holds personal data and has no retention"))
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`deals` holds personal data of no declared category"))
        );
    }

    #[test]
    fn source_and_automated_decision_errors_point_at_their_line() {
        // The second line of the appended text: the key or value at fault, not the section.
        let line = BASE.lines().count() + 2;
        for (bad, says) in [
            ("[sources]\ncontact = \"web form\"\n", "table `contact`"),
            ("[automated_decisions]\nsales = \"\"\n", "is empty"),
            ("[automated_decisions]\nsale = \"none\"\n", "role `sale`"),
        ] {
            let err = Policy::parse("p.toml", &format!("{BASE}{bad}"))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with(&format!("p.toml:{line}:")), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn wrong_declarations_are_errors_with_a_place() {
        for (bad, says) in [
            (
                "[data_subjects.x]\ntables = [\"contact\"]\n",
                "table `contact` is not declared",
            ),
            (
                "[recipients.\"M\"]\ncategory = \"procesor\"\n",
                "unknown recipient category",
            ),
            (
                "[data_subjects.x]\ntables = [\"contacts\"]\nwhere = { deals = \"true\" }\n",
                "does not list",
            ),
            (
                "[data_subjects.x]\ntables = [\"contacts\"]\nwhere = { contacts = \"a = 1; DROP TABLE t\" }\n",
                "nothing after it",
            ),
            ("[retention_periods]\nnope = \"1 year\"\n", "`nope`"),
            (
                "[sources]\ncontact = \"web form\"\n",
                "table `contact` is not declared",
            ),
            ("[sources]\ncontacts = \" \"\n", "the source is empty"),
            (
                "[automated_decisions]\nsale = \"none\"\n",
                "role `sale` is not declared",
            ),
        ] {
            let err = Policy::parse("p.toml", &format!("{BASE}{bad}")).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
