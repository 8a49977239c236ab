//! From sampled tables to a proposed policy: combines name hints, content matches and keys (the key of
//! a table of people, and every column referring to it) into a category per column, and renders the
//! proposal as a policy file (the format of `policy/README.md`) with the evidence as comments.
//! Not for: reading the database (see `sample`) or the detectors themselves.

use super::detect::{self, Kind};
use super::names::{self, Strength};
use policy::access::Category;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One column as sampled: its name, its type as `format_type` prints it, and the sampled non-null
/// values as text.
#[derive(Debug, Clone, Default)]
pub struct ColumnSample {
    pub name: String,
    pub type_name: String,
    pub values: Vec<String>,
}

/// One table as sampled.
#[derive(Debug, Clone, Default)]
pub struct TableSample {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnSample>,
    pub rows_sampled: usize,
    pub primary_key: Vec<String>,
    /// Single-column foreign keys: (column, referenced table).
    pub foreign_keys: Vec<(String, String)>,
    /// Why the table could not be sampled, if it could not.
    pub error: Option<String>,
}

/// What discovery proposes for one column.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub column: String,
    pub type_name: String,
    pub category: Category,
    /// Weak findings (a city, a gender) are proposed commented out.
    pub strength: Strength,
    pub evidence: Vec<String>,
}

/// What discovery proposes for one table.
#[derive(Debug, Clone)]
pub struct TableProposal {
    pub sample: TableSample,
    /// Every column of the table is of this category (health, judicial tables).
    pub whole: Option<Category>,
    pub findings: Vec<Finding>,
}

impl TableProposal {
    /// The columns proposed as personal (strong findings, or every column for a whole table).
    pub fn personal_columns(&self) -> Vec<&str> {
        match self.whole {
            Some(_) => self
                .sample
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect(),
            None => self
                .findings
                .iter()
                .filter(|f| f.strength == Strength::Strong)
                .map(|f| f.column.as_str())
                .collect(),
        }
    }
}

fn kind_category(kind: Kind) -> Category {
    match kind {
        Kind::Email | Kind::Phone => Category::Contact,
        Kind::CodiceFiscale | Kind::SpanishDni | Kind::FrenchNir => Category::NationalIdentifier,
        Kind::Iban => Category::Financial,
        Kind::StreetAddress => Category::Location,
        Kind::IpAddress => Category::Identifying,
        Kind::FreeText => Category::FreeText,
    }
}

/// Types whose values the content detectors read: text of any kind, documents, network addresses.
fn is_text_type(type_name: &str) -> bool {
    ["text", "citext", "name", "json", "jsonb", "xml", "inet"].contains(&type_name)
        || type_name.starts_with("character")
        || type_name.starts_with("varchar")
}

/// `YYYY-MM-DD` to days since 1970-01-01.
fn parse_date(value: &str) -> Option<i64> {
    let mut parts = value.get(..10)?.split('-');
    let year = parts.next()?.parse().ok()?;
    let month = parts.next()?.parse().ok()?;
    let day = parts.next()?.parse().ok()?;
    Some(crate::crm::calendar::days_from_civil(year, month, day))
}

/// What the sampled values of one column say: a category and the evidence, if any.
fn content_finding(column: &ColumnSample, today: i64) -> Option<(Category, String)> {
    let total = column.values.len();
    if total == 0 {
        return None;
    }
    if column.type_name == "date" {
        let days: Vec<i64> = column.values.iter().filter_map(|v| parse_date(v)).collect();
        return detect::looks_like_birth_dates(&days, today).then(|| {
            (
                Category::Identifying,
                format!("{total} sampled dates look like dates of birth"),
            )
        });
    }
    if !is_text_type(&column.type_name) {
        return None;
    }
    let mut whole: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut inside: BTreeMap<Kind, usize> = BTreeMap::new();
    for value in &column.values {
        let kind = detect::classify_value(value);
        if let Some(kind) = kind {
            *whole.entry(kind).or_default() += 1;
        }
        // Text that is not one identifier as a whole may still quote some (a note, a JSON document).
        if matches!(kind, None | Some(Kind::FreeText)) {
            for quoted in detect::kinds_inside(value) {
                *inside.entry(quoted).or_default() += 1;
            }
        }
    }
    let quoted: Vec<String> = inside
        .iter()
        .map(|(k, n)| format!("{n} quote {}", k.label()))
        .collect();
    let dominant = whole.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n));
    if let Some((kind, matches)) = dominant.filter(|(_, matches)| matches * 2 >= total) {
        let mut evidence = format!("{matches}/{total} sampled values are {}", kind.label());
        if !quoted.is_empty() {
            let _ = write!(evidence, " ({})", quoted.join(", "));
        }
        return Some((kind_category(kind), evidence));
    }
    (!quoted.is_empty()).then(|| {
        (
            Category::FreeText,
            format!("of {total} sampled values, {}", quoted.join(", ")),
        )
    })
}

/// The findings of one table from names and content (keys are added by [`propose`]).
fn column_findings(table: &TableSample, today: i64) -> Vec<Finding> {
    let mut findings = Vec::new();
    for column in &table.columns {
        let hint = names::column_hint(&column.name);
        let content = content_finding(column, today);
        let (category, strength, mut evidence) = match (hint, content) {
            (Some((category, Strength::Strong)), content) => {
                let mut evidence = vec!["name".to_string()];
                evidence.extend(content.map(|(_, e)| e));
                (category, Strength::Strong, evidence)
            }
            (_, Some((category, evidence))) => (category, Strength::Strong, vec![evidence]),
            (Some((category, Strength::Weak)), None) => (
                category,
                Strength::Weak,
                vec!["name only; identifies nobody alone".to_string()],
            ),
            (None, None) => continue,
        };
        if evidence.is_empty() {
            evidence.push("name".into());
        }
        findings.push(Finding {
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            category,
            strength,
            evidence: std::mem::take(&mut evidence),
        });
    }
    findings
}

/// A table of people: it holds a strong contact or national-identifier column, or a column named like
/// a person's name or birth date (an IP address identifies a device, not the rows of a table of people).
fn holds_people(findings: &[Finding]) -> bool {
    findings.iter().any(|f| {
        f.strength == Strength::Strong
            && match f.category {
                Category::Contact | Category::NationalIdentifier => true,
                Category::Identifying => {
                    names::column_hint(&f.column) == Some((Category::Identifying, Strength::Strong))
                        && !names::words(&f.column).iter().any(|w| w == "ip")
                }
                _ => false,
            }
    })
}

/// Proposes a category for every personal column of the sampled tables. `today` is the day (since
/// 1970-01-01) against which ages of dates are judged.
pub fn propose(tables: Vec<TableSample>, today: i64) -> Vec<TableProposal> {
    let mut proposals: Vec<TableProposal> = tables
        .into_iter()
        .map(|sample| {
            let whole = names::table_hint(&sample.name);
            let findings = if whole.is_some() {
                Vec::new()
            } else {
                column_findings(&sample, today)
            };
            TableProposal {
                sample,
                whole,
                findings,
            }
        })
        .collect();
    let people: BTreeSet<String> = proposals
        .iter()
        .filter(|p| p.whole.is_none() && holds_people(&p.findings))
        .map(|p| p.sample.name.clone())
        .collect();
    for proposal in proposals.iter_mut().filter(|p| p.whole.is_none()) {
        let mut keys: Vec<(String, String)> = Vec::new();
        if people.contains(&proposal.sample.name) {
            for column in proposal
                .sample
                .primary_key
                .iter()
                .filter(|k| proposal.sample.columns.iter().any(|c| &c.name == *k))
            {
                keys.push((column.clone(), "key of a table of people".into()));
            }
        }
        for (column, referenced) in &proposal.sample.foreign_keys {
            if people.contains(referenced) {
                keys.push((
                    column.clone(),
                    format!("refers to a person in {referenced}"),
                ));
            }
        }
        for (column, reason) in keys {
            let type_name = proposal
                .sample
                .columns
                .iter()
                .find(|c| c.name == column)
                .map(|c| c.type_name.clone())
                .unwrap_or_default();
            match proposal.findings.iter_mut().find(|f| f.column == column) {
                Some(found) if found.strength == Strength::Strong => found.evidence.push(reason),
                Some(found) => {
                    found.strength = Strength::Strong;
                    found.category = Category::Identifying;
                    found.evidence = vec![reason];
                }
                None => proposal.findings.push(Finding {
                    column,
                    type_name,
                    category: Category::Identifying,
                    strength: Strength::Strong,
                    evidence: vec![reason],
                }),
            }
        }
        let order: Vec<&str> = proposal
            .sample
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        proposal
            .findings
            .sort_by_key(|f| order.iter().position(|c| *c == f.column));
    }
    proposals
}

/// A TOML key: bare when it may be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Comments never hold sampled values, only counts and names; still, keep them on one line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Renders the proposal as a policy file for `maschera policy check`.
pub fn render(proposals: &[TableProposal], sample_size: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Policy skeleton proposed by `maschera discover` from up to {sample_size} sampled rows per table.\n\
         # Review it: a column is listed because its name or its sampled values look personal (the comment\n\
         # says which and how many values matched); weak hints are left commented out. Columns not listed\n\
         # were found to hold no personal data. Then write the roles (see the example at the end).\n\n\
         [settings]\nunlisted_tables = \"deny\"\n"
    );
    for proposal in proposals {
        let table = &proposal.sample;
        let key = toml_key(&table.name);
        if let Some(error) = &table.error {
            let _ = writeln!(
                out,
                "# [tables.{key}]: not sampled ({}); review it by hand.\n",
                one_line(error)
            );
            continue;
        }
        let schema_line = if table.schema == "public" {
            String::new()
        } else {
            format!("schema = {}\n", toml_string(&table.schema))
        };
        if let Some(category) = proposal.whole {
            let _ = writeln!(
                out,
                "[tables.{key}]\n{schema_line}# The table's name says {}: every column is personal data of that category.\n\
                 personal = \"{}\"\n",
                match category {
                    Category::Criminal => "criminal convictions or offences (GDPR Art. 10)",
                    _ => "special category data (GDPR Art. 9)",
                },
                category.as_str()
            );
            continue;
        }
        let _ = writeln!(
            out,
            "[tables.{key}]\n{schema_line}# {} rows sampled",
            table.rows_sampled
        );
        if proposal
            .findings
            .iter()
            .all(|f| f.strength == Strength::Weak)
        {
            let _ = writeln!(out, "# No personal data found.");
        }
        if !proposal.findings.is_empty() {
            let _ = writeln!(out, "[tables.{key}.columns]");
        }
        for finding in &proposal.findings {
            let prefix = if finding.strength == Strength::Weak {
                "# "
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{prefix}{} = {{ category = \"{}\", type = {} }}  # {}",
                toml_key(&finding.column),
                finding.category.as_str(),
                toml_string(&finding.type_name),
                one_line(&finding.evidence.join("; "))
            );
        }
        out.push('\n');
    }
    out.push_str(
        "# Roles are yours to write (policy/README.md). For example:\n\
         # [roles.dpo]\n\
         # description = \"Data protection officer\"\n\
         # purpose = \"Oversee processing and answer data subject requests\"\n\
         # lawful_basis = \"Legal obligation, GDPR Art. 6(1)(c)\"\n\
         # unrestricted = true\n\
         #\n\
         # [roles.support]\n\
         # description = \"Customer support\"\n\
         # purpose = \"Answer customer requests\"\n\
         # lawful_basis = \"Performance of a contract, GDPR Art. 6(1)(b)\"\n\
         # [roles.support.tables.<table>]\n\
         # show = [\"<column>\"]\n\
         # columns = { <column> = \"mask.email\" }\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_name: &str, values: &[&str]) -> ColumnSample {
        ColumnSample {
            name: name.into(),
            type_name: type_name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn table(name: &str, columns: Vec<ColumnSample>) -> TableSample {
        TableSample {
            schema: "public".into(),
            name: name.into(),
            rows_sampled: columns.first().map_or(0, |c| c.values.len()),
            columns,
            primary_key: vec!["id".into()],
            ..Default::default()
        }
    }

    fn categories(proposal: &TableProposal) -> Vec<(String, Category, Strength)> {
        proposal
            .findings
            .iter()
            .map(|f| (f.column.clone(), f.category, f.strength))
            .collect()
    }

    #[test]
    fn names_content_and_keys_combine() {
        let people = table(
            "people",
            vec![
                column("id", "bigint", &["1", "2", "3"]),
                column(
                    "contact_info",
                    "text",
                    &["a.b@example.it", "c.d@example.com", "e@example.org"],
                ),
                column(
                    "fiscal",
                    "character(16)",
                    &["RSSMRA85T10A562S", "RSSMRA85T10A562S", "x"],
                ),
                column("city", "text", &["Milano", "Roma", "Bari"]),
                column("status", "text", &["open", "closed", "open"]),
                column("amount", "numeric(12,2)", &["10.00", "3.50", "7.25"]),
            ],
        );
        let mut orders = table(
            "orders",
            vec![
                column("id", "bigint", &["1", "2"]),
                column("person_id", "bigint", &["1", "3"]),
                column("total", "numeric", &["5", "6"]),
            ],
        );
        orders.foreign_keys = vec![("person_id".into(), "people".into())];
        let proposals = propose(vec![people, orders], 20_000);
        assert_eq!(
            categories(&proposals[0]),
            vec![
                ("id".into(), Category::Identifying, Strength::Strong),
                ("contact_info".into(), Category::Contact, Strength::Strong),
                (
                    "fiscal".into(),
                    Category::NationalIdentifier,
                    Strength::Strong
                ),
                ("city".into(), Category::Location, Strength::Weak),
            ]
        );
        assert_eq!(
            categories(&proposals[1]),
            vec![("person_id".into(), Category::Identifying, Strength::Strong)]
        );
        assert_eq!(
            proposals[0].personal_columns(),
            ["id", "contact_info", "fiscal"]
        );
    }

    #[test]
    fn free_text_that_quotes_contact_data() {
        let notes = table(
            "log",
            vec![column(
                "entry",
                "text",
                &[
                    "Call back on +39 347 1234567 please",
                    "ok",
                    "fine",
                    "done",
                    "Write to a.b@example.it today",
                ],
            )],
        );
        let proposal = &propose(vec![notes], 20_000)[0];
        assert_eq!(proposal.findings[0].category, Category::FreeText);
        assert!(
            proposal.findings[0].evidence[0].contains("1 quote e-mail addresses"),
            "{:?}",
            proposal.findings
        );
    }

    #[test]
    fn documents_that_hold_contact_data() {
        let events = table(
            "events",
            vec![
                column(
                    "payload",
                    "jsonb",
                    &[r#"{"to": "a.b@example.it"}"#, r#"{"n": 1}"#, r#"{"n": 2}"#],
                ),
                column(
                    "meta",
                    "jsonb",
                    &[
                        r#"{"n": 1, "status": "ok"}"#,
                        r#"{"ts": "2024-01-31 10:11:12+00"}"#,
                    ],
                ),
                column("client", "inet", &["192.168.1.20", "10.0.0.7"]),
            ],
        );
        let proposal = &propose(vec![events], 20_000)[0];
        assert_eq!(
            categories(proposal),
            vec![
                ("payload".into(), Category::FreeText, Strength::Strong),
                ("client".into(), Category::Identifying, Strength::Strong),
            ]
        );
    }

    #[test]
    fn whole_tables_and_rendering() {
        let health = table(
            "health_records",
            vec![column("condition", "text", &["asthma"])],
        );
        let plain = table(
            "products",
            vec![
                column("sku", "text", &["A-1"]),
                column("weird key", "text", &["x"]),
            ],
        );
        let proposals = propose(vec![health, plain], 20_000);
        assert_eq!(proposals[0].whole, Some(Category::SpecialCategory));
        assert_eq!(proposals[0].personal_columns(), ["condition"]);
        let text = render(&proposals, 100);
        assert!(text.contains("[tables.health_records]\n"), "{text}");
        assert!(text.contains("personal = \"special_category\""), "{text}");
        assert!(
            text.contains("[tables.products]\n# 1 rows sampled\n# No personal data found."),
            "{text}"
        );
        let parsed: toml::Table = toml::from_str(&text).expect("the output is TOML");
        assert!(parsed["tables"].get("products").is_some());
        assert_eq!(toml_key("weird key"), "\"weird key\"");
    }
}
