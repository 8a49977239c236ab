//! From sampled tables to a proposed policy: combines name hints, content matches and keys (the key of
//! a table of people, and every column referring to it) into a category per column, and renders the
//! proposal as a policy file (the format of `policy/README.md`) with the evidence as comments.
//! Not for: reading the database (see `sample`) or the detectors themselves.

use super::detect::{self, Kind};
use super::names::{self, Strength};
use super::template::{self, Template};
use super::{framework, json};
use policy::access::Category;
use policy::action::{TypeFamily, type_family};
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

/// How sure discovery is of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        }
    }
}

/// What kind of value a personal column holds, as far as choosing an action cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// The key of a table of people, or a reference to one.
    Key,
    Email,
    Phone,
    BirthDate,
    /// A person's name (first, last, full or display name).
    PersonName,
    Other,
}

/// What discovery proposes for one column.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub column: String,
    pub type_name: String,
    pub category: Category,
    /// Weak findings (a city, a gender on a table that holds no people) are proposed commented out.
    pub strength: Strength,
    pub confidence: Confidence,
    pub holds: Holds,
    /// Why the column is a secret no restricted role reads (password hash, session data), if it is.
    pub secret: Option<&'static str>,
    /// The sampled values are JSON documents (json, jsonb, or text holding JSON): a mask that keeps
    /// the document valid (`json.redact`) fits it.
    pub json: bool,
    pub evidence: Vec<String>,
}

/// A column that is a secret but not personal data (a password hash, a session key).
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub column: String,
    pub type_name: String,
    pub why: &'static str,
}

/// What discovery proposes for one table.
#[derive(Debug, Clone)]
pub struct TableProposal {
    pub sample: TableSample,
    /// Every column of the table is of this category (health, judicial tables).
    pub whole: Option<Category>,
    pub findings: Vec<Finding>,
    /// Secret columns without a personal finding.
    pub secrets: Vec<Secret>,
    /// The framework that owns the table (`Django` for `auth_user`), if it is a framework table.
    pub framework: Option<&'static str>,
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

/// Types whose values the content detectors read: text of any kind, documents, network addresses.
fn is_text_type(type_name: &str) -> bool {
    type_family(type_name) == TypeFamily::Text || is_document(type_name) || type_name == "inet"
}

fn is_document(type_name: &str) -> bool {
    ["json", "jsonb", "xml"].contains(&type_name)
}

/// `YYYY-MM-DD` to days since 1970-01-01.
fn parse_date(value: &str) -> Option<i64> {
    let mut parts = value.get(..10)?.split('-');
    let year = parts.next()?.parse().ok()?;
    let month = parts.next()?.parse().ok()?;
    let day = parts.next()?.parse().ok()?;
    Some(crate::ops::calendar::days_from_civil(year, month, day))
}

/// Name patterns of a date of birth.
const BIRTH_PATTERNS: &[&str] = &[
    "birth",
    "birthday",
    "birthdate",
    "dob",
    "nascita",
    "geburtsdatum",
    "geburtstag",
    "naissance",
    "nacimiento",
];
/// Name patterns of an e-mail address.
const EMAIL_PATTERNS: &[&str] = &["email", "emails", "mail", "courriel", "correo"];
/// Name patterns that identify a device or a login, not the rows of a table of people
/// (`object repr` is an audit log's copy of the changed object's display name).
const NOT_A_PERSON: &[&str] = &[
    "ip",
    "ip address",
    "ipaddress",
    "remote addr",
    "session data",
    "object repr",
];

/// Whether a name hint fits the column's type: a boolean is never personal data by name, a number only
/// an amount, a position or a number-shaped identifier, a date only a date of birth, and only text (or a
/// search vector) is free text; a document's content says whether it is free text.
fn name_fits_type(hint: &names::NameHint, column: &ColumnSample) -> bool {
    let phone = |p: &str| p.contains("phone") || p.contains("tele") || p == "mobile";
    match type_family(&column.type_name) {
        TypeFamily::Text => true,
        TypeFamily::Number => match hint.category {
            Category::Financial | Category::Location | Category::NationalIdentifier => true,
            Category::Contact => phone(hint.pattern),
            Category::Identifying => BIRTH_PATTERNS.contains(&hint.pattern),
            _ => false,
        },
        TypeFamily::Date | TypeFamily::Timestamp => BIRTH_PATTERNS.contains(&hint.pattern),
        _ if column.type_name == "tsvector" => true,
        _ if ["boolean", "uuid", "bytea", "interval"].contains(&column.type_name.as_str()) => false,
        // Whether a document is free text is for its content to say (see `column_finding`).
        _ if is_document(&column.type_name) => true,
        _ => hint.category != Category::FreeText,
    }
}

/// What the sampled values of one column say.
struct Content {
    category: Category,
    kind: Option<Kind>,
    confidence: Confidence,
    evidence: String,
}

/// What the sampled values of one column say: a category and the evidence, if any.
fn content_finding(
    column: &ColumnSample,
    documents: Option<&json::DocumentScan>,
    today: i64,
) -> Option<Content> {
    let total = column.values.len();
    if total == 0 {
        return None;
    }
    if column.type_name == "date" {
        let days: Vec<i64> = column.values.iter().filter_map(|v| parse_date(v)).collect();
        return detect::looks_like_birth_dates(&days, today).then(|| Content {
            category: Category::Identifying,
            kind: None,
            confidence: Confidence::Medium,
            evidence: format!("{total} sampled dates look like dates of birth"),
        });
    }
    if !is_text_type(&column.type_name) {
        return None;
    }
    // Documents (and text holding JSON) are judged by the personal values inside, never as prose.
    if let Some(scan) = documents {
        let categories = scan.categories();
        let category = match categories.as_slice() {
            [] => return None,
            [one] => *one,
            _ => Category::FreeText,
        };
        let kind = match (scan.kinds.len(), scan.named.is_empty()) {
            (1, true) => scan.kinds.keys().next().copied(),
            _ => None,
        };
        let rate = json::percent(scan.with_personal, scan.documents);
        return Some(Content {
            category,
            kind,
            confidence: if rate >= 50 {
                Confidence::High
            } else {
                Confidence::Medium
            },
            evidence: scan.evidence(),
        });
    }
    if is_document(&column.type_name) {
        return None;
    }
    let mut whole: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut inside: BTreeMap<Kind, usize> = BTreeMap::new();
    for value in &column.values {
        let kind = detect::classify_value(value);
        if let Some(kind) = kind {
            *whole.entry(kind).or_default() += 1;
        }
        // Text that is not one identifier as a whole may still quote some (a note).
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
        let rate = json::percent(matches, total);
        let mut evidence = format!(
            "{matches}/{total} sampled values ({rate}%) are {}",
            kind.label()
        );
        if !quoted.is_empty() {
            let _ = write!(evidence, " ({})", quoted.join(", "));
        }
        let confidence = match (kind, rate) {
            (Kind::FreeText, _) if quoted.is_empty() => Confidence::Medium,
            (_, 80..) => Confidence::High,
            _ => Confidence::Medium,
        };
        return Some(Content {
            category: kind.category(),
            kind: Some(kind),
            confidence,
            evidence,
        });
    }
    let quoting: usize = inside.values().copied().max().unwrap_or(0);
    (!quoted.is_empty()).then(|| Content {
        category: Category::FreeText,
        kind: None,
        confidence: if quoting * 5 >= total {
            Confidence::Medium
        } else {
            Confidence::Low
        },
        evidence: format!("of {total} sampled values, {}", quoted.join(", ")),
    })
}

/// What a finding holds, from its category, its name's pattern, the kind of its values and its type.
fn holds(category: Category, pattern: Option<&str>, kind: Option<Kind>, type_name: &str) -> Holds {
    let family = type_family(type_name);
    match category {
        Category::Contact if kind == Some(Kind::Email) => Holds::Email,
        Category::Contact if kind == Some(Kind::Phone) => Holds::Phone,
        Category::Contact => match pattern {
            Some(p) if EMAIL_PATTERNS.contains(&p) => Holds::Email,
            Some(p) if p.contains("phone") || p.contains("tele") || p.contains("mobil") => {
                Holds::Phone
            }
            Some("cellulare" | "cellphone" | "handy" | "movil" | "móvil" | "portable") => {
                Holds::Phone
            }
            _ => Holds::Other,
        },
        Category::Identifying
            if matches!(family, TypeFamily::Date | TypeFamily::Timestamp)
                || pattern.is_some_and(|p| BIRTH_PATTERNS.contains(&p)) =>
        {
            Holds::BirthDate
        }
        Category::Identifying
            if family == TypeFamily::Text
                && pattern.is_some_and(|p| !NOT_A_PERSON.contains(&p)) =>
        {
            Holds::PersonName
        }
        _ => Holds::Other,
    }
}

/// The finding for one column from its name, type and content (keys are added by [`propose`]).
fn column_finding(table: &TableSample, column: &ColumnSample, today: i64) -> Option<Finding> {
    if column.type_name == "boolean" {
        return None;
    }
    let secret = framework::secret(&table.name, &column.name, &column.type_name);
    let documents = is_text_type(&column.type_name)
        .then(|| json::scan(&column.values))
        .flatten();
    // A document is free text by its name only if it holds prose (`notes` as a list of texts), not
    // when it is structured data (`change_message` listing changed fields).
    // An identifier named after a text (`message_id`, a mail's Message-ID) is no free text by its name.
    let an_id = names::words(&column.name).last().is_some_and(|w| w == "id");
    let hint = names::column_rule(&column.name).filter(|h| {
        name_fits_type(h, column)
            && !(h.category == Category::FreeText
                && (an_id || documents.as_ref().is_some_and(|d| d.prose == 0)))
    });
    let content = content_finding(column, documents.as_ref(), today);
    // A weakly named column (a reference table's `name`) whose values are words and quote nothing
    // personal is a label, not free text: the name's weak hint stands.
    let content = content.filter(|c| {
        !(hint.as_ref().is_some_and(|h| h.strength == Strength::Weak)
            && c.kind == Some(Kind::FreeText)
            && c.confidence == Confidence::Medium
            && !c.evidence.contains(" quote "))
    });
    let name_evidence = |h: &names::NameHint| format!("name matches \"{}\"", h.pattern);
    let (category, strength, confidence, pattern, kind, mut evidence) = match (hint, content) {
        (Some(h), content) if h.strength == Strength::Strong => {
            let mut evidence = vec![name_evidence(&h)];
            let (confidence, kind) = match &content {
                Some(c) if c.category == h.category => (Confidence::High, c.kind),
                Some(_) => (Confidence::Medium, None),
                // An e-mail column none of whose many sampled values is an e-mail address.
                None if EMAIL_PATTERNS.contains(&h.pattern)
                    && column.values.len() >= 10
                    && type_family(&column.type_name) == TypeFamily::Text =>
                {
                    evidence.push(format!(
                        "none of {} sampled values is an e-mail address",
                        column.values.len()
                    ));
                    (Confidence::Low, None)
                }
                None => (Confidence::Medium, None),
            };
            evidence.extend(content.map(|c| c.evidence));
            // Values that contradict the name leave a hint for the DBA, commented out in the draft.
            let strength = match confidence {
                Confidence::Low => Strength::Weak,
                _ => h.strength,
            };
            (
                h.category,
                strength,
                confidence,
                Some(h.pattern),
                kind,
                evidence,
            )
        }
        (_, Some(c)) => (
            c.category,
            Strength::Strong,
            c.confidence,
            None,
            c.kind,
            vec![c.evidence],
        ),
        (Some(h), None) => (
            h.category,
            Strength::Weak,
            Confidence::Low,
            Some(h.pattern),
            None,
            vec![name_evidence(&h), "identifies nobody alone".into()],
        ),
        (None, None) => return None,
    };
    if let Some(why) = secret {
        evidence.push(format!("secret: {why}"));
    }
    Some(Finding {
        column: column.name.clone(),
        type_name: column.type_name.clone(),
        category,
        strength,
        confidence,
        holds: holds(category, pattern, kind, &column.type_name),
        secret,
        json: documents.is_some(),
        evidence,
    })
}

/// A table of people: it holds a strong contact or national-identifier column, or a person's name or
/// date of birth (an IP address identifies a device, not the rows of a table of people; a document
/// quoting e-mail addresses, or text holding one, makes a history or a log, not a table of people; an
/// `email` column none of whose values is an e-mail address, as a lead source's, makes nothing).
fn holds_people(findings: &[Finding]) -> bool {
    findings.iter().any(|f| {
        f.strength == Strength::Strong
            && f.confidence > Confidence::Low
            && !f.json
            && !is_document(&f.type_name)
            && (matches!(f.category, Category::Contact | Category::NationalIdentifier)
                || matches!(f.holds, Holds::PersonName | Holds::BirthDate))
    })
}

/// On a table of people, a city, a postal code and a bare `name` are the person's: weak hints become
/// findings of medium confidence.
fn promote_on_people(proposal: &mut TableProposal) {
    for finding in proposal
        .findings
        .iter_mut()
        .filter(|f| f.strength == Strength::Weak)
    {
        let name = names::is_bare_name(&finding.column);
        if finding.category == Category::Location || name {
            finding.strength = Strength::Strong;
            finding.confidence = Confidence::Medium;
            finding.evidence.pop();
            finding.evidence.push("on a table of people".into());
            if name && type_family(&finding.type_name) == TypeFamily::Text {
                finding.holds = Holds::PersonName;
            }
        }
    }
}

/// Proposes a category for every personal column of the sampled tables. `today` is the day (since
/// 1970-01-01) against which ages of dates are judged.
pub fn propose(tables: Vec<TableSample>, today: i64) -> Vec<TableProposal> {
    let mut proposals: Vec<TableProposal> = tables
        .into_iter()
        .map(|sample| {
            let whole = names::table_hint(&sample.name);
            let findings: Vec<Finding> = match whole {
                Some(_) => Vec::new(),
                None => sample
                    .columns
                    .iter()
                    .filter_map(|c| column_finding(&sample, c, today))
                    .collect(),
            };
            let secrets = sample
                .columns
                .iter()
                .filter(|c| !findings.iter().any(|f| f.column == c.name))
                .filter_map(|c| {
                    framework::secret(&sample.name, &c.name, &c.type_name).map(|why| Secret {
                        column: c.name.clone(),
                        type_name: c.type_name.clone(),
                        why,
                    })
                })
                .collect();
            TableProposal {
                framework: framework::framework_of(&sample.name),
                sample,
                whole,
                findings,
                secrets,
            }
        })
        .collect();
    let people: BTreeSet<String> = proposals
        .iter()
        .filter(|p| {
            p.whole.is_none()
                && (holds_people(&p.findings)
                    || (names::is_person_table(&p.sample.name)
                        && p.findings.iter().any(|f| names::is_bare_name(&f.column))))
        })
        .map(|p| p.sample.name.clone())
        .collect();
    for proposal in proposals.iter_mut().filter(|p| p.whole.is_none()) {
        let mut keys: Vec<(String, String)> = Vec::new();
        if people.contains(&proposal.sample.name) {
            promote_on_people(proposal);
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
                    found.confidence = Confidence::High;
                    found.holds = Holds::Key;
                    found.evidence = vec![reason];
                }
                None => {
                    let secret = framework::secret(&proposal.sample.name, &column, &type_name);
                    proposal.secrets.retain(|s| s.column != column);
                    proposal.findings.push(Finding {
                        column,
                        type_name,
                        category: Category::Identifying,
                        strength: Strength::Strong,
                        confidence: Confidence::High,
                        holds: Holds::Key,
                        secret,
                        json: false,
                        evidence: vec![reason],
                    })
                }
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

/// The comment beside a proposed line: confidence and evidence.
fn comment(confidence: Confidence, evidence: &[String]) -> String {
    one_line(&format!("{}: {}", confidence.as_str(), evidence.join("; ")))
}

/// The table's `default`: what a restricted role without its own rule gets. Tables holding only Art.
/// 9/10 data, and tables that could not be sampled, are denied; framework tables the application
/// writes and that hold nothing personal (sequence tables, locks) are writable; every other table is
/// readable (SELECT only), its personal and secret columns NULL.
fn table_default(proposal: &TableProposal) -> &'static str {
    if proposal.whole.is_some() || proposal.sample.error.is_some() {
        "deny"
    } else if framework::written(&proposal.sample.name).is_some()
        && proposal.findings.is_empty()
        && proposal.secrets.is_empty()
    {
        "write"
    } else {
        "read"
    }
}

/// A table with nothing to list: no finding (not even a weak one), no secret, not a whole table.
fn is_plain(proposal: &TableProposal) -> bool {
    proposal.whole.is_none() && proposal.findings.is_empty() && proposal.secrets.is_empty()
}

/// A table the draft leaves undeclared when tables not named are readable (`unlisted_tables =
/// "read"`): sampled, nothing personal (weak hints at most), no secret, not written by a framework,
/// not a migration tool's bookkeeping (which the tool looks up in the catalog: see
/// `framework::looked_up_in_catalog`). It is then read as the base table, SELECT only, and plans as
/// the owner's query does (an ORM's `GROUP BY` of the primary key needs the table itself, not a view).
fn is_unlisted(proposal: &TableProposal) -> bool {
    !framework::looked_up_in_catalog(&proposal.sample.name)
        && proposal.whole.is_none()
        && proposal.sample.error.is_none()
        && proposal.secrets.is_empty()
        && proposal
            .findings
            .iter()
            .all(|f| f.strength == Strength::Weak)
        && table_default(proposal) == "read"
}

/// Renders the proposal as a policy file for `maschera policy check`, with the roles of `template`.
pub fn render(proposals: &[TableProposal], sample_size: usize, template: Template) -> String {
    let mut out = String::new();
    let frameworks: BTreeSet<&str> = proposals.iter().filter_map(|p| p.framework).collect();
    let _ = writeln!(
        out,
        "# Policy draft proposed by `maschera discover` from up to {sample_size} sampled rows per table.\n\
         # Review it: a column is listed because its name or its sampled values look personal; the comment\n\
         # beside it gives the confidence (high, medium, low) and the evidence (the name pattern, how many\n\
         # sampled values matched). Weak hints are left commented out. Columns not listed were found to\n\
         # hold no personal data. Secrets (password hashes, session data, tokens) have the category\n\
         # `secret`: no restricted role reads them unless its rule names them.\n\
         #\n\
         # Every declared table has a `default`: what a role without its own rule gets. `read`: its\n\
         # columns that are not personal, SELECT only; the roles below have `dropped_columns = \"null\"`,\n\
         # so a personal or secret column keeps its place as NULL and an ORM's select of every mapped\n\
         # column works. Roles have rules only where they see more (a masked or plain personal column)\n\
         # or write."
    );
    let _ = writeln!(out, "\n[settings]");
    let unlisted_read = !frameworks.is_empty();
    if unlisted_read {
        let _ = writeln!(
            out,
            "# The schema has tables of {}: the framework's next upgrade may add tables\n\
             # that the application reads on every page, so tables this file does not name (those created\n\
             # after this draft, and those below in which nothing personal was found) are readable as they\n\
             # are stored, SELECT only, never writable, by restricted roles. Declare new tables that hold\n\
             # personal data as they come, or make this \"deny\" and declare every table.\n\
             unlisted_tables = \"read\"\n",
            frameworks.into_iter().collect::<Vec<_>>().join(", ")
        );
        let unlisted: Vec<&TableProposal> = proposals.iter().filter(|p| is_unlisted(p)).collect();
        if !unlisted.is_empty() {
            let _ = writeln!(
                out,
                "# ---- tables in which no personal data was found ({}), read as unlisted tables",
                unlisted.len()
            );
            for proposal in &unlisted {
                render_unlisted(&mut out, proposal);
            }
            out.push('\n');
        }
    } else {
        let _ = writeln!(
            out,
            "# Tables created after this draft are denied to restricted roles until declared.\n\
             unlisted_tables = \"deny\"\n"
        );
    }
    let declared = |p: &&TableProposal| !(unlisted_read && is_unlisted(p));
    let plain: Vec<&TableProposal> = proposals
        .iter()
        .filter(declared)
        .filter(|p| is_plain(p))
        .collect();
    if !plain.is_empty() {
        let _ = writeln!(
            out,
            "# ---- tables in which no personal data was found ({}) and tables not sampled\n[tables]",
            plain.len()
        );
        for proposal in plain {
            render_plain(&mut out, proposal);
        }
        out.push('\n');
    }
    for proposal in proposals.iter().filter(declared).filter(|p| !is_plain(p)) {
        render_table(&mut out, proposal);
    }
    render_roles(&mut out, proposals, template);
    out
}

/// One comment line for a table left undeclared, with its weak hints.
fn render_unlisted(out: &mut String, proposal: &TableProposal) {
    let table = &proposal.sample;
    let schema = if table.schema == "public" {
        String::new()
    } else {
        format!("{}.", table.schema)
    };
    let mut line = format!(
        "# {schema}{}: {} rows sampled",
        table.name, table.rows_sampled
    );
    if let Some(framework) = proposal.framework {
        let _ = write!(line, "; a {framework} framework table");
    }
    let hints: Vec<String> = proposal
        .findings
        .iter()
        .map(|f| format!("{} ({})", f.column, f.category.as_str()))
        .collect();
    if !hints.is_empty() {
        let _ = write!(line, "; weak hints: {}", hints.join(", "));
    }
    let _ = writeln!(out, "{}", one_line(&line));
}

/// One line under `[tables]` for a table with nothing to list.
fn render_plain(out: &mut String, proposal: &TableProposal) {
    let table = &proposal.sample;
    let schema = if table.schema == "public" {
        String::new()
    } else {
        format!("schema = {}, ", toml_string(&table.schema))
    };
    let why = match (&table.error, proposal.framework) {
        (Some(error), _) => format!(
            "Not sampled ({}): review it by hand; denied until you do",
            one_line(error)
        ),
        (None, Some(framework)) => format!(
            "{} rows sampled; nothing personal; {framework} framework table",
            table.rows_sampled
        ),
        (None, None) => format!("{} rows sampled; nothing personal", table.rows_sampled),
    };
    let _ = writeln!(
        out,
        "{} = {{ {schema}default = \"{}\" }}  # {why}",
        toml_key(&table.name),
        table_default(proposal)
    );
}

fn render_table(out: &mut String, proposal: &TableProposal) {
    let table = &proposal.sample;
    let key = toml_key(&table.name);
    let schema_line = if table.schema == "public" {
        String::new()
    } else {
        format!("schema = {}\n", toml_string(&table.schema))
    };
    if let Some(category) = proposal.whole {
        let _ = writeln!(
            out,
            "[tables.{key}]\n{schema_line}# The table's name says {}: every column is personal data of that category.\n\
             # Denied to every restricted role (no `default`, no rule).\n\
             personal = \"{}\"\n",
            match category {
                Category::Criminal => "criminal convictions or offences (GDPR Art. 10)",
                _ => "special category data (GDPR Art. 9)",
            },
            category.as_str()
        );
        return;
    }
    let _ = write!(out, "[tables.{key}]\n{schema_line}");
    if let Some(framework) = proposal.framework {
        let writes = match framework::written(&table.name) {
            Some(_) => "; the application writes it on ordinary requests (see the roles' rules)",
            None => ", read by the application",
        };
        let _ = writeln!(out, "# A {framework} framework table{writes}.");
    }
    match &table.error {
        Some(error) => {
            let _ = writeln!(
                out,
                "# Not sampled ({}): review it by hand; denied to restricted roles until you do.\n\
                 # The columns below are proposed by their names alone.",
                one_line(error)
            );
        }
        None => {
            let _ = writeln!(out, "# {} rows sampled", table.rows_sampled);
        }
    }
    if table.error.is_none()
        && proposal
            .findings
            .iter()
            .all(|f| f.strength == Strength::Weak)
    {
        let _ = writeln!(out, "# No personal data found.");
    }
    let _ = writeln!(
        out,
        "default = \"{}\"\n[tables.{key}.columns]",
        table_default(proposal)
    );
    for finding in &proposal.findings {
        let prefix = if finding.strength == Strength::Weak {
            "# "
        } else {
            ""
        };
        let category = match finding.secret {
            Some(_) => "secret",
            None => finding.category.as_str(),
        };
        let _ = writeln!(
            out,
            "{prefix}{} = {{ category = \"{category}\", type = {} }}  # {}",
            toml_key(&finding.column),
            toml_string(&finding.type_name),
            comment(finding.confidence, &finding.evidence)
        );
    }
    for secret in &proposal.secrets {
        let _ = writeln!(
            out,
            "{} = {{ category = \"secret\", type = {} }}  # {}",
            toml_key(&secret.column),
            toml_string(&secret.type_name),
            comment(Confidence::High, &[format!("secret: {}", secret.why)])
        );
    }
    out.push('\n');
}

/// The rule of a restricted role for one table, as an inline TOML table, when the role needs one: it
/// sees a personal column plain or masked, or writes the table. `None`: the table's `default` is
/// enough (its personal and secret columns NULL).
fn rule(profile: template::Profile, proposal: &TableProposal) -> Option<String> {
    if proposal.whole.is_some() || proposal.sample.error.is_some() {
        return None;
    }
    let written = framework::written(&proposal.sample.name);
    // Shown columns `"*"` does not cover (secrets, Art. 9/10) are named even with `"*"`.
    let mut shown: Vec<(String, bool)> = Vec::new();
    let mut nulled: Vec<String> = Vec::new();
    let mut masks: Vec<String> = Vec::new();
    for finding in proposal
        .findings
        .iter()
        .filter(|f| f.strength == Strength::Strong)
    {
        let key = toml_key(&finding.column);
        let special = finding.secret.is_some()
            || matches!(
                finding.category,
                Category::SpecialCategory | Category::Criminal
            );
        // The application reads and writes these tables whole on every request (a session by its key).
        if written.is_some() {
            shown.push((finding.column.clone(), special));
            continue;
        }
        match template::action(profile, finding, type_family(&finding.type_name)) {
            None => shown.push((finding.column.clone(), special)),
            Some("null") if !special => nulled.push(key),
            Some("null") => {}
            Some(action) => masks.push(format!("{key} = \"{action}\"")),
        }
    }
    if written.is_some() {
        shown.extend(proposal.secrets.iter().map(|s| (s.column.clone(), true)));
    }
    let writes = written
        .map(|w| w.iter().map(|x| toml_string(x)).collect::<Vec<_>>())
        .unwrap_or_default();
    if shown.is_empty() && masks.is_empty() && writes.is_empty() {
        return None;
    }
    // `show = ["*"]` and the NULL columns, or the shown columns: whichever names fewer.
    let show: Vec<String> = if shown.len() > nulled.len() + 1 {
        masks.extend(nulled.iter().map(|c| format!("{c} = \"null\"")));
        std::iter::once("\"*\"".to_string())
            .chain(
                shown
                    .iter()
                    .filter(|(_, s)| *s)
                    .map(|(c, _)| toml_string(c)),
            )
            .collect()
    } else {
        shown.iter().map(|(c, _)| toml_string(c)).collect()
    };
    let mut parts: Vec<String> = Vec::new();
    if !show.is_empty() {
        parts.push(format!("show = [{}]", show.join(", ")));
    }
    if !masks.is_empty() {
        parts.push(format!("columns = {{ {} }}", masks.join(", ")));
    }
    if !writes.is_empty() {
        parts.push(format!("writes = [{}]", writes.join(", ")));
    }
    Some(format!("{{ {} }}", parts.join(", ")))
}

fn render_roles(out: &mut String, proposals: &[TableProposal], template: Template) {
    let _ = writeln!(
        out,
        "# ---- roles of the template `{}`: review names, purposes and lawful bases, add `filter`s and\n\
         # `writes` where a role needs them. Hidden values are NULL or masked, never dropped\n\
         # (`dropped_columns = \"null\"`), so that ORMs selecting every mapped column keep working.\n",
        match template {
            Template::Reader => "reader",
            Template::Crm => "crm",
        }
    );
    for role in template.roles() {
        let _ = writeln!(
            out,
            "[roles.{}]\ndescription = {}\npurpose = {}\nlawful_basis = {}",
            role.name,
            toml_string(role.description),
            toml_string(role.purpose),
            toml_string(role.lawful_basis)
        );
        let Some(profile) = role.profile else {
            let _ = writeln!(out, "unrestricted = true\n");
            continue;
        };
        let _ = writeln!(out, "dropped_columns = \"null\"");
        let rules: Vec<String> = proposals
            .iter()
            .filter_map(|p| rule(profile, p).map(|r| format!("{} = {r}", toml_key(&p.sample.name))))
            .collect();
        if !rules.is_empty() {
            let _ = writeln!(out, "\n[roles.{}.tables]\n{}", role.name, rules.join("\n"));
        }
        out.push('\n');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sampled column (also for the other discovery modules' tests).
    pub(crate) fn column(name: &str, type_name: &str, values: &[&str]) -> ColumnSample {
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
                ("city".into(), Category::Location, Strength::Strong),
            ]
        );
        assert_eq!(
            categories(&proposals[1]),
            vec![("person_id".into(), Category::Identifying, Strength::Strong)]
        );
        assert_eq!(
            proposals[0].personal_columns(),
            ["id", "contact_info", "fiscal", "city"]
        );
        let city = &proposals[0].findings[3];
        assert_eq!(city.confidence, Confidence::Medium);
        assert_eq!(
            city.evidence,
            ["name matches \"city\"", "on a table of people"]
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
                ("payload".into(), Category::Contact, Strength::Strong),
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
        let text = render(&proposals, 100, Template::Reader);
        assert!(text.contains("[tables.health_records]\n"), "{text}");
        assert!(text.contains("personal = \"special_category\""), "{text}");
        assert!(
            text.contains("products = { default = \"read\" }  # 1 rows sampled; nothing personal"),
            "{text}"
        );
        assert!(
            text.contains("unlisted_tables = \"deny\""),
            "no framework: {text}"
        );
        let parsed: toml::Table = toml::from_str(&text).expect("the output is TOML");
        assert!(parsed["tables"].get("products").is_some());
        assert_eq!(toml_key("weird key"), "\"weird key\"");
    }

    #[test]
    fn migration_bookkeeping_is_declared_so_the_tool_finds_it_in_the_catalog() {
        let alembic = table(
            "alembic_version",
            vec![column(
                "version_num",
                "character varying(32)",
                &["c941aaca38c2"],
            )],
        );
        let archive = table("archive", vec![column("id", "integer", &["1"])]);
        let proposals = propose(vec![alembic, archive], 20_000);
        let text = render(&proposals, 100, Template::Reader);
        assert!(
            text.contains("unlisted_tables = \"read\""),
            "Alembic found: {text}"
        );
        // The bookkeeping is declared (a view in each role's schema, found by `has_table`); a table
        // with nothing personal is left to unlisted_tables.
        assert!(
            text.contains("alembic_version = { default = \"read\" }"),
            "{text}"
        );
        assert!(text.contains("\n# archive: 1 rows sampled\n"), "{text}");
        assert!(!text.contains("# alembic_version:"), "{text}");
    }

    #[test]
    fn types_that_are_never_free_text_or_contact_data() {
        let flags = table(
            "accounts",
            vec![
                column("id", "integer", &["1", "2"]),
                column("email_verified", "boolean", &["true", "false"]),
                column("has_notes", "boolean", &["t", "f"]),
                column("notes_count", "integer", &["3", "0"]),
                column("description", "integer", &["3", "0"]),
                column("message_length", "numeric(6,0)", &["3", "0"]),
                column(
                    "email_sent_at",
                    "timestamp with time zone",
                    &["2024-01-31 10:11:12+00"],
                ),
                column("comment_date", "date", &["2024-01-31"]),
                column(
                    "settings",
                    "jsonb",
                    &[
                        r#"{"theme": "dark", "language": "it", "notify_by_email": true, "page_size": 50, "layout": "two columns with a wide sidebar"}"#,
                        r#"{"email_template": "welcome", "options": {"digest": "weekly"}}"#,
                    ],
                ),
                column(
                    "options",
                    "text",
                    &[
                        r#"{"columns": ["name", "stage"], "description": "Default list view of the deals page"}"#,
                    ],
                ),
                column("email_template", "text", &["welcome", "reminder"]),
                column("message_id", "character varying(200)", &[]),
            ],
        );
        let notes = table(
            "log",
            vec![
                column(
                    "change_message",
                    "text",
                    &[r#"[{"changed": {"fields": ["Email", "Stage"]}}]"#],
                ),
                column(
                    "notes",
                    "jsonb",
                    &[r#"["Called back, she asked for a quote on the premium plan"]"#],
                ),
            ],
        );
        let proposals = propose(vec![flags, notes], 20_000);
        assert!(
            proposals[0].findings.is_empty(),
            "{:?}",
            proposals[0].findings
        );
        assert_eq!(
            categories(&proposals[1]),
            vec![("notes".into(), Category::FreeText, Strength::Strong)],
            "prose in a document named as notes is free text; a list of changed fields is not"
        );
    }

    #[test]
    fn a_reference_tables_names_are_labels_not_free_text() {
        let reasons = table(
            "crm_closingreason",
            vec![
                column("id", "integer", &["1", "2", "3"]),
                column(
                    "name",
                    "character varying(70)",
                    &["Lost to a competitor", "No budget this year", "Went silent"],
                ),
            ],
        );
        let proposal = &propose(vec![reasons], 20_000)[0];
        assert_eq!(
            categories(proposal),
            vec![("name".into(), Category::Identifying, Strength::Weak)],
            "a hint, commented out in the draft"
        );
    }

    #[test]
    fn denormalised_names_handles_and_postal_data() {
        let contacts = table(
            "crm_contact",
            vec![
                column("id", "bigint", &["1", "2"]),
                column(
                    "full_name",
                    "character varying(200)",
                    &["Mario Rossi", "Anna Bianchi"],
                ),
                column("skype", "character varying(50)", &["mario.rossi", "anna.b"]),
                column("zip_code", "character varying(10)", &["20100", "00184"]),
                column("zipcode", "text", &["20100"]),
                column("city_name", "text", &["Milano", "Roma"]),
                column("po_box", "text", &["PO Box 12"]),
                column("geburtsdatum", "date", &["1980-01-01"]),
                column("telefono", "text", &["+39 347 1234567"]),
                column("search_vector", "tsvector", &["'mario':1 'rossi':2"]),
            ],
        );
        let company = table(
            "company",
            vec![
                column("id", "bigint", &["1"]),
                column("name", "text", &["ACME S.p.A."]),
            ],
        );
        let user = table(
            "users",
            vec![
                column("id", "bigint", &["1"]),
                column("name", "text", &["Mario Rossi"]),
            ],
        );
        let proposals = propose(vec![contacts, company, user], 20_000);
        use Category::*;
        assert_eq!(
            categories(&proposals[0]),
            vec![
                ("id".into(), Identifying, Strength::Strong),
                ("full_name".into(), Identifying, Strength::Strong),
                ("skype".into(), Contact, Strength::Strong),
                ("zip_code".into(), Location, Strength::Strong),
                ("zipcode".into(), Location, Strength::Strong),
                ("city_name".into(), Location, Strength::Strong),
                ("po_box".into(), Location, Strength::Strong),
                ("geburtsdatum".into(), Identifying, Strength::Strong),
                ("telefono".into(), Contact, Strength::Strong),
                ("search_vector".into(), FreeText, Strength::Strong),
            ]
        );
        assert_eq!(proposals[0].findings[1].holds, Holds::PersonName);
        assert_eq!(proposals[0].findings[8].confidence, Confidence::High);
        assert_eq!(
            categories(&proposals[1]),
            vec![("name".into(), Identifying, Strength::Weak)],
            "a company's name is only a hint"
        );
        assert_eq!(
            categories(&proposals[2]),
            vec![
                ("id".into(), Identifying, Strength::Strong),
                ("name".into(), Identifying, Strength::Strong)
            ],
            "a user's name is the person's"
        );
    }

    /// A Django-like schema: framework tables with secrets, a table of people, a history of changes
    /// holding e-mail addresses in JSON.
    fn django() -> Vec<TableSample> {
        let mut user = table(
            "auth_user",
            vec![
                column("id", "integer", &["1", "2"]),
                column(
                    "password",
                    "character varying(128)",
                    &["pbkdf2_sha256$1", "pbkdf2_sha256$2"],
                ),
                column("last_login", "timestamp with time zone", &[]),
                column("is_superuser", "boolean", &["false"]),
                column(
                    "username",
                    "character varying(150)",
                    &["mrossi", "abianchi"],
                ),
                column(
                    "email",
                    "character varying(254)",
                    &["m.rossi@example.org", "a.b@example.org"],
                ),
            ],
        );
        user.rows_sampled = 2;
        let session = table(
            "django_session",
            vec![
                column("session_key", "character varying(40)", &["k1"]),
                column("session_data", "text", &["eyJfYXV0aF91c2VyX2lkIjoiMSJ9:1"]),
                column(
                    "expire_date",
                    "timestamp with time zone",
                    &["2030-01-01 00:00:00+00"],
                ),
            ],
        );
        let mut history = table(
            "crm_history",
            vec![
                column("id", "bigint", &["1", "2", "3"]),
                column("user_id", "integer", &["1", "2", "1"]),
                column(
                    "changes",
                    "jsonb",
                    &[
                        r#"{"email": {"old": "x.y@example.org", "new": "z.w@example.org"}}"#,
                        r#"{"stage": {"old": "lead", "new": "won"}}"#,
                        r#"{"email": {"old": "q@example.org", "new": "r.s@example.org"}}"#,
                    ],
                ),
            ],
        );
        history.foreign_keys = vec![("user_id".into(), "auth_user".into())];
        let health = table("health_records", vec![column("id", "bigint", &["1"])]);
        vec![user, session, history, health]
    }

    #[test]
    fn framework_tables_keep_the_application_working() {
        let proposals = propose(django(), 20_000);
        assert_eq!(proposals[0].framework, Some("Django"));
        assert_eq!(
            proposals[0].secrets,
            [Secret {
                column: "password".into(),
                type_name: "character varying(128)".into(),
                why: "a secret (password hash, token or key)"
            }]
        );
        let session = &proposals[1];
        assert_eq!(session.secrets.len(), 1, "session_key");
        assert_eq!(session.findings[0].column, "session_data");
        assert!(session.findings[0].secret.is_some());
        assert_eq!(
            proposals[2].personal_columns(),
            ["user_id", "changes"],
            "a history is not a table of people"
        );
        let changes = &proposals[2].findings[1];
        assert_eq!(
            (changes.column.as_str(), changes.category),
            ("changes", Category::Contact)
        );
        assert_eq!(changes.confidence, Confidence::High);
        for template in [Template::Reader, Template::Crm] {
            let text = render(&proposals, 100, template);
            let policy = policy::model::Policy::parse("draft.toml", &text)
                .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
            use policy::access::Action;
            let secret = Some(Category::Secret);
            for role in policy.roles.values().filter(|r| !r.unrestricted) {
                let user = &role.rules["auth_user"];
                assert!(!user.deny && !user.writes.update, "{text}");
                assert_eq!(user.action_for("password", secret), Action::Null);
                assert_eq!(user.action_for("is_superuser", None), Action::Show);
                // The application looks its sessions up by key and writes them on every request.
                let session = &role.rules["django_session"];
                assert_eq!(session.action_for("session_data", secret), Action::Show);
                assert_eq!(session.action_for("session_key", secret), Action::Show);
                assert!(session.writes.insert && session.writes.update, "{text}");
                assert!(!role.rules.contains_key("health_records"), "denied");
                let history = &role.rules["crm_history"];
                assert!(!history.writes.insert, "{text}");
            }
            assert_eq!(
                policy.settings.unlisted_tables,
                policy::access::UnlistedTables::Read,
                "a framework's future tables stay readable"
            );
        }
        let text = render(&proposals, 100, Template::Reader);
        assert!(
            text.contains(
                "email = { category = \"contact\", type = \"character varying(254)\" }  \
                 # high: name matches \"email\"; 2/2 sampled values (100%) are e-mail addresses"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "auth_user = { show = [\"id\"], columns = { username = \"mask.initial\", email = \"mask.email\" } }"
            ),
            "{text}"
        );
        assert!(
            text.contains("changes = \"json.redact\""),
            "a history's JSON keeps its shape: {text}"
        );
        assert!(
            text.contains("password = { category = \"secret\""),
            "{text}"
        );
        assert!(
            text.contains("# A Django framework table, read by the application."),
            "{text}"
        );
        assert!(
            !text.contains("example.org"),
            "no sampled value in the draft"
        );
    }
}
