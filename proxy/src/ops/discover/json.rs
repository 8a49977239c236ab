//! JSON documents for discovery: reads sampled `json`/`jsonb` values (or text holding JSON) and says
//! which personal values they hold: e-mail addresses, phone numbers, identifiers and IBANs anywhere in
//! them, and strings under keys named like personal data (`first_name`, `email`, `phone`). A document
//! with none of these (settings, options, feature flags) holds no personal data, whatever its size.
//! Not for: the detectors themselves (see `detect`) or the column's category (see `propose`).

use super::detect::{self, Kind};
use super::names::{self, Strength};
use policy::access::Category;
use std::collections::{BTreeMap, BTreeSet};

/// What the sampled documents of one column hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DocumentScan {
    /// Values that are JSON objects or arrays.
    pub documents: usize,
    /// Documents holding at least one personal value.
    pub with_personal: usize,
    /// Documents holding each kind of recognised value.
    pub kinds: BTreeMap<Kind, usize>,
    /// Documents holding a value under a key named like personal data, by the key's category.
    pub named: BTreeMap<Category, usize>,
    /// The personal keys seen (only keys that are themselves named like personal data, never values).
    pub keys: BTreeSet<String>,
    /// Documents holding prose (a string of several words), which may name anyone.
    pub prose: usize,
}

impl DocumentScan {
    /// The categories found, most documents first.
    pub fn categories(&self) -> Vec<Category> {
        let mut counts: BTreeMap<Category, usize> = BTreeMap::new();
        for (kind, n) in &self.kinds {
            *counts.entry(kind.category()).or_default() += n;
        }
        for (category, n) in &self.named {
            *counts.entry(*category).or_default() += n;
        }
        let mut categories: Vec<(Category, usize)> = counts.into_iter().collect();
        categories.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        categories.into_iter().map(|(c, _)| c).collect()
    }

    /// What was found, as evidence: counts, kinds and key names, never a value.
    pub fn evidence(&self) -> String {
        let mut found: Vec<String> = self.kinds.keys().map(|k| k.label().to_string()).collect();
        if !self.named.is_empty() {
            found.push("values under personal keys".into());
        }
        let mut text = format!(
            "{}/{} sampled JSON documents ({}%) hold {}",
            self.with_personal,
            self.documents,
            percent(self.with_personal, self.documents),
            found.join(", ")
        );
        if !self.keys.is_empty() {
            let keys: Vec<&str> = self.keys.iter().map(String::as_str).take(6).collect();
            text.push_str(&format!(" (keys {})", keys.join(", ")));
        }
        text
    }
}

/// `part` of `whole` in whole percent.
pub fn percent(part: usize, whole: usize) -> usize {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// Reads `values` as JSON documents: `None` when fewer than half of them are JSON objects or arrays.
pub fn scan(values: &[String]) -> Option<DocumentScan> {
    let mut scan = DocumentScan::default();
    for value in values {
        let trimmed = value.trim_start();
        if !trimmed.starts_with(['{', '[']) {
            continue;
        }
        let Ok(document) = serde_json::from_str::<serde_json::Value>(trimmed) else {
            continue;
        };
        scan.documents += 1;
        let mut found = Found::default();
        walk(&document, None, &mut found);
        scan.prose += usize::from(found.prose);
        if found.kinds.is_empty() && found.named.is_empty() {
            continue;
        }
        scan.with_personal += 1;
        for kind in found.kinds {
            *scan.kinds.entry(kind).or_default() += 1;
        }
        for category in found.named {
            *scan.named.entry(category).or_default() += 1;
        }
        scan.keys.extend(found.keys);
    }
    (scan.documents * 2 >= values.len() && scan.documents > 0).then_some(scan)
}

/// What one document holds.
#[derive(Default)]
struct Found {
    kinds: BTreeSet<Kind>,
    named: BTreeSet<Category>,
    keys: BTreeSet<String>,
    prose: bool,
}

/// The category a key's name gives its value, if the name is a plain identifier named like personal
/// data (strong hints only: `name` alone is as often a product's or a setting's).
fn personal_key(key: &str) -> Option<Category> {
    let plain = key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let hint = names::column_rule(key).filter(|h| plain && h.strength == Strength::Strong)?;
    (!matches!(
        hint.category,
        Category::FreeText | Category::SpecialCategory | Category::Criminal
    ))
    .then_some(hint.category)
}

fn walk(value: &serde_json::Value, key: Option<&str>, found: &mut Found) {
    use serde_json::Value;
    let record = |kind: Option<Kind>, found: &mut Found| {
        if let Some(key) = key.filter(|k| personal_key(k).is_some()) {
            found.keys.insert(key.to_string());
        }
        match kind {
            Some(kind) => {
                found.kinds.insert(kind);
            }
            None => {
                if let Some(category) = key.and_then(personal_key) {
                    found.named.insert(category);
                }
            }
        }
    };
    match value {
        Value::String(text) => match detect::classify_value(text) {
            Some(Kind::FreeText) | None => {
                found.prose |= detect::is_free_text(text);
                // A string that is not one identifier may still quote some ("call +39 ...").
                for kind in detect::kinds_inside(text) {
                    record(Some(kind), found);
                }
                if !text.trim().is_empty() && key.and_then(personal_key).is_some() {
                    record(None, found);
                }
            }
            Some(kind) => record(Some(kind), found),
        },
        Value::Number(_) if key.and_then(personal_key).is_some() => record(None, found),
        Value::Array(items) => items.iter().for_each(|item| walk(item, key, found)),
        Value::Object(fields) => fields
            .iter()
            .for_each(|(k, v)| walk(v, Some(k.as_str()), found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn configuration_holds_nothing_personal() {
        let scan = scan(&values(&[
            r#"{"theme": "dark", "language": "it", "notify_by_email": true, "page_size": 50}"#,
            r#"{"email_template": "welcome", "phone_type": "mobile", "items": [1, 2, 3]}"#,
            r#"{"name": "Default pipeline", "stages": ["lead", "won"], "description": "The sales pipeline of the team"}"#,
        ]))
        .expect("documents");
        assert_eq!(scan.documents, 3);
        assert_eq!(scan.with_personal, 0, "{scan:?}");
        assert_eq!(scan.prose, 1, "the pipeline's description");
        assert!(scan.categories().is_empty());
    }

    #[test]
    fn history_with_contact_values_and_names() {
        let scan = scan(&values(&[
            r#"{"field": "email", "old": "a.b@example.org", "new": "c.d@example.org"}"#,
            r#"{"changes": [{"phone": ["+39 347 1234567", "+39 347 7654321"]}]}"#,
            r#"{"first_name": "Mario", "last_name": "Rossi"}"#,
            r#"{"stage": "won"}"#,
        ]))
        .expect("documents");
        assert_eq!(scan.with_personal, 3);
        assert_eq!(scan.kinds[&Kind::Email], 1);
        assert_eq!(scan.kinds[&Kind::Phone], 1);
        assert_eq!(scan.named[&Category::Identifying], 1);
        let evidence = scan.evidence();
        assert!(evidence.starts_with("3/4 sampled JSON documents (75%) hold e-mail addresses"));
        assert!(
            evidence.contains("keys first_name, last_name, phone"),
            "{evidence}"
        );
        assert!(!evidence.contains("Mario") && !evidence.contains("example.org"));
    }

    #[test]
    fn plain_text_is_not_a_document() {
        assert_eq!(scan(&values(&["hello there", "{not json", "42"])), None);
        assert_eq!(scan(&[]), None);
    }
}
