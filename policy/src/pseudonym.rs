//! The keyed pseudonyms (`pseudonym`, `pseudonym.table`) and the salted `hash`, defined once: the
//! lowercase hex of SHA-256 over the key, a scope and the value's text. The scope is empty for
//! `pseudonym` (so `contacts.id` and every `contact_id` give the same pseudonym and joins work),
//! `schema.table:` for `pseudonym.table` (a table's own ids join to nothing else), and
//! `schema.table.column:` for `hash`. [`sql_expression`] is that for the views (the key read from the
//! owner-only key table, never in the SQL text); [`Keyed`] computes the same in Rust for `maschera
//! dump`, which pseudonymises while streaming. Not for: where keys come from or how they are stored
//! (`policy apply` does that).

use crate::access::{Action, TableName, ViewAccess};
use crate::model::PRIVATE_SCHEMA;
use sha2::{Digest, Sha256};

/// The name of the key (row of `maschera_private.keys`) an action reads, if it is keyed.
pub fn key_name(action: &Action) -> Option<&'static str> {
    match action {
        Action::Pseudonym | Action::TablePseudonym => Some("pseudonym"),
        Action::Hash => Some("hash"),
        _ => None,
    }
}

/// The scope that precedes the value's text for a keyed action on `table.column`.
pub fn scope(action: &Action, table: &TableName, column: &str) -> Option<String> {
    match action {
        Action::Pseudonym => Some(String::new()),
        Action::TablePseudonym => Some(format!("{}.{}:", table.schema, table.name)),
        Action::Hash => Some(format!("{}.{}.{column}:", table.schema, table.name)),
        _ => None,
    }
}

/// The `ORDER BY` of a role's view that shows a keyed column (`pseudonym`, `pseudonym.table`, `hash`):
/// those columns, in view order. Without it the rows come in the table's physical order, which for
/// rows never updated is the order of their clear serial ids, so the k-th pseudonym of an unordered
/// read (or of `row_number() OVER ()`, a cursor, `LIMIT`/`OFFSET` paging, `string_agg` without its own
/// order) would be clear id k. Sorted by the pseudonyms the rows come in an order the role can compute
/// itself from what it sees: it tells nothing more. The cost: such a view is no longer flattened into
/// the caller's query, and every read computes the pseudonyms and sorts (policy/README.md has figures).
pub fn keyed_order(access: &ViewAccess) -> Option<String> {
    let keyed: Vec<String> = access
        .columns
        .iter()
        .filter(|c| key_name(&c.action).is_some())
        .map(|c| crate::step::quote_ident(&c.name))
        .collect();
    (!keyed.is_empty()).then(|| format!(" ORDER BY {}", keyed.join(", ")))
}

/// The SQL that reads key `name` (only the owner of the key table can run it).
pub fn key_read(name: &str) -> String {
    format!("(SELECT key FROM {PRIVATE_SCHEMA}.keys WHERE name = '{name}')")
}

/// The SQL expression of the pseudonym of `text` (an SQL expression of type text) under key `key`
/// and `scope`.
pub fn sql_expression(key: &str, scope: &str, text: &str) -> String {
    format!("encode({}, 'hex')", digest_expression(key, scope, text))
}

/// The SQL expression of the digest (bytea) whose hex is [`sql_expression`]: sorted as bytes it is in
/// the pseudonyms' order (`maschera dump` sorts by it and computes the hex itself).
pub fn digest_expression(key: &str, scope: &str, text: &str) -> String {
    let input = if scope.is_empty() {
        text.to_string()
    } else {
        format!("{} || {text}", crate::step::quote_literal(scope))
    };
    format!("sha256({} || convert_to({input}, 'UTF8'))", key_read(key))
}

/// A key ready to pseudonymise values, as [`sql_expression`] does in PostgreSQL.
#[derive(Clone)]
pub struct Keyed {
    keyed: Sha256,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Keyed {
    pub fn new(key: &[u8]) -> Keyed {
        let mut keyed = Sha256::new();
        keyed.update(key);
        Keyed { keyed }
    }

    /// Appends the pseudonym of `value` (the value's text, UTF-8) under `scope` to `out`.
    pub fn write_hex(&self, scope: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let digest = self
            .keyed
            .clone()
            .chain_update(scope)
            .chain_update(value)
            .finalize();
        for byte in digest {
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_separate_tables_but_not_the_contact_pseudonyms() {
        let deals = TableName::new("public", "deals");
        assert_eq!(
            scope(&Action::Pseudonym, &deals, "contact_id").as_deref(),
            Some("")
        );
        assert_eq!(
            scope(&Action::TablePseudonym, &deals, "id").as_deref(),
            Some("public.deals:")
        );
        assert_eq!(scope(&Action::Show, &deals, "id"), None);
        let key = Keyed::new(b"k");
        let (mut plain, mut scoped) = (Vec::new(), Vec::new());
        key.write_hex(b"", b"7", &mut plain);
        key.write_hex(b"public.deals:", b"7", &mut scoped);
        assert_eq!(plain.len(), 64);
        assert_ne!(plain, scoped);
        assert_eq!(
            sql_expression("pseudonym", "public.deals:", "\"id\"::text"),
            "encode(sha256((SELECT key FROM maschera_private.keys WHERE name = 'pseudonym') || \
             convert_to('public.deals:' || \"id\"::text, 'UTF8')), 'hex')"
        );
    }
}
