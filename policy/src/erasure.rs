//! How erasure on request (GDPR Art. 17, `maschera forget`) treats a table, beyond its foreign keys:
//! rows kept for a legal obligation with named columns masked instead of deleted, and links — columns
//! that refer to another table without a foreign key. Pure validation; not for running it.

use crate::file::ErasureFile;
use crate::model::DeclaredColumn;
pub use crate::model::{Erasure, Link};
use crate::retention::{RetentionError, parse_masks};
use std::collections::BTreeMap;

pub(crate) fn parse_erasure(
    file: &ErasureFile,
    columns: &BTreeMap<String, DeclaredColumn>,
) -> Result<Erasure, Vec<RetentionError>> {
    let mut errors = Vec::new();
    let keep = parse_masks(&file.keep, columns, &mut errors);
    let mut links = Vec::new();
    for (column, target) in &file.links {
        match target.get_ref().rsplit_once('.') {
            Some((table, target_column)) if !table.is_empty() && !target_column.is_empty() => links
                .push(Link {
                    column: column.get_ref().clone(),
                    target_table: table.to_string(),
                    target_column: target_column.to_string(),
                }),
            _ => errors.push(RetentionError {
                span: target.span(),
                message: format!("link `{}` is not `table.column`", target.get_ref()),
                help: Some("e.g. `contact_email = \"contacts.email\"`".into()),
            }),
        }
    }
    match errors.is_empty() {
        true => Ok(Erasure { keep, links }),
        false => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    #[test]
    fn keep_and_links_are_read() {
        let policy = Policy::parse(
            "p.toml",
            r#"
[tables.contacts.columns]
email = "contact"
[tables.invoices.columns]
contact_id = { category = "identifying", type = "bigint" }
[tables.invoices.erasure]
keep = { contact_id = "null" }
links = { contact_id = "contacts.id" }
"#,
        )
        .expect("valid");
        let erasure = &policy.tables["invoices"].erasure;
        assert_eq!(erasure.keep.len(), 1);
        assert_eq!(erasure.links[0].target_table, "contacts");
        assert!(
            Policy::parse("p.toml", "[tables.t.erasure]\nlinks = { a = \"nodot\" }\n").is_err()
        );
    }
}
