//! Write-back: what a restricted role may write to a column it does not read as stored (masked,
//! generalised, pseudonymised, nulled or redacted), as both locks enforce it. An ORM saves every mapped
//! column, the masked ones with the value it read: written back unchanged, such a value keeps the stored
//! one; any other value is refused (42501, naming the column); on insert it may only be NULL (the table's
//! default is stored). A column the policy marks `writable` (see the policy README) stores a changed value
//! instead.
//!
//! This module holds the pieces both locks share: the refusal messages of the write path (the views'
//! `INSTEAD OF` triggers and the [`WRITE_BACK_FUNCTION`] raise exactly these texts, and the proxy's error
//! scrub lets exactly these texts through, see [`messages`]), the function that the proxy wraps a
//! written-back value in (so that the statement refuses a changed value by itself, trigger or not), and
//! the type of a view column (for a typed NULL to compare an inserted value with).
//!
//! Not for: deciding which statements may write (the rewriter's `dml.rs`), or the triggers themselves
//! (`db_lock.rs`).

use std::collections::BTreeSet;

use crate::access::{Action, RoleAccess, TableAccess};
use crate::step::{FUNCTION_SEARCH_PATH, Step, quote_ident};

/// The function a written-back value is wrapped in: `write_back(new, shown, refusal)` returns `new` when
/// it is not distinct from `shown` (the value as the role reads it) and raises 42501 with `refusal`
/// otherwise.
pub const WRITE_BACK_FUNCTION: &str = "maschera_private.write_back";

/// Which write a column refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
}

/// The refusal of a value written to `column` of `view` that policy role `role` does not read as stored.
pub fn column_refusal(role: &str, view: &str, column: &str, kind: WriteKind) -> String {
    let instead = match kind {
        WriteKind::Insert => "leave it out or write NULL (the table's default is stored)",
        WriteKind::Update => {
            "only the value as the role reads it, written back unchanged, is accepted (the stored value is kept)"
        }
    };
    format!("column \"{column}\" of \"{view}\" is not writable for policy role {role}: {instead}")
}

/// The refusal of a changed value of `column`, a key other tables' foreign keys reference: a change
/// would fail on, cascade into or leave dangling rows the role may not see, and its error (23503)
/// would tell that they exist (a health record of a contact the role sees, say).
pub fn referenced_key_refusal(role: &str, view: &str, column: &str) -> String {
    format!(
        "column \"{column}\" of \"{view}\" is a key that other tables refer to: policy role {role} may not change it \
         (only the value as the role reads it, written back unchanged, is accepted)"
    )
}

/// The refusal of a write the policy does not give the role (`verb`: `insert into`, `update`,
/// `delete from`).
pub fn operation_refusal(role: &str, view: &str, verb: &str) -> String {
    format!("policy role {role} may not {verb} \"{view}\"")
}

/// The refusal of an update or a delete that the policy gives the role but the view's write triggers
/// cannot make, since they cannot tell the table's rows apart (`verb`: `update`, `delete from`).
pub fn unkeyed_refusal(role: &str, view: &str, verb: &str) -> String {
    format!(
        "policy role {role} may {verb} \"{view}\", but its view cannot tell the rows apart: the table's primary key is not shown to the role as stored (for a table without one, every column must be): add a primary key, or show its columns"
    )
}

/// The refusal of a write through a view whose guard found the protection changed.
pub fn incomplete_refusal(role: &str, view: &str) -> String {
    format!(
        "the database objects of policy role {role} on \"{view}\" are incomplete (a policy or row-level security was changed outside maschera): run maschera policy apply"
    )
}

/// Every message the write path may raise for `role`: fixed texts made of the role's name and the names
/// of its views and their shown columns, nothing else. The proxy's error scrub lets a 42501 with one of
/// these texts through; any other message from database code stays withheld, so a function cannot pass
/// a value through this path (the texts hold no value and are all known in advance).
pub fn messages(role: &RoleAccess) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for access in role.tables.values() {
        let TableAccess::View(view) = access else {
            continue;
        };
        let name = view.view.as_str();
        for column in view.columns.iter().filter(|c| c.action != Action::Drop) {
            for kind in [WriteKind::Insert, WriteKind::Update] {
                out.insert(column_refusal(&role.role, name, &column.name, kind));
            }
            out.insert(referenced_key_refusal(&role.role, name, &column.name));
        }
        for verb in ["insert into", "update", "delete from"] {
            out.insert(operation_refusal(&role.role, name, verb));
        }
        for verb in ["update", "delete from"] {
            out.insert(unkeyed_refusal(&role.role, name, verb));
        }
        out.insert(incomplete_refusal(&role.role, name));
    }
    out
}

/// The type of a view column computed by `action` over a column of type `data_type` (as
/// `column_sql::column_expression` computes it): the text masks, hashes, pseudonyms and `redact` give
/// `text`, the others keep the column's type.
pub fn view_type<'t>(action: &Action, data_type: &'t str) -> &'t str {
    match action {
        Action::MaskEmail
        | Action::MaskLast(_)
        | Action::MaskFirst(_)
        | Action::MaskInitial
        | Action::Partial { .. }
        | Action::Hash
        | Action::Pseudonym
        | Action::TablePseudonym
        | Action::Redact => "text",
        Action::Show
        | Action::Drop
        | Action::Null
        | Action::Constant(_)
        | Action::Year
        | Action::Month
        | Action::Bucket(_)
        | Action::JsonMask
        | Action::JsonRedact => data_type,
    }
}

/// Whether values of `data_type` have no equality operator (`json`, `xml`, the geometric types and
/// arrays of them): a value written back is then compared with the one the role reads by its text.
pub fn compared_as_text(data_type: &str) -> bool {
    let base = data_type
        .trim()
        .trim_end_matches("[]")
        .trim()
        .to_ascii_lowercase();
    matches!(
        base.as_str(),
        "json" | "xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle"
    )
}

/// `expr` as write-back compares it: itself, or its text for a type without equality
/// ([`compared_as_text`]).
pub fn comparable(expr: &str, data_type: &str) -> String {
    if compared_as_text(data_type) {
        format!("CAST({expr} AS text)")
    } else {
        expr.to_string()
    }
}

/// Creates [`WRITE_BACK_FUNCTION`] (idempotent), callable by `logins` only (the proxy's statements run as
/// them; [`crate::db_lock::intact_function_steps`] gives them the schema). It
/// reads nothing: it compares its two arguments.
pub fn function_steps(logins: &[String]) -> Vec<Step> {
    let mut steps = vec![
        Step::plain(format!(
            "CREATE OR REPLACE FUNCTION {WRITE_BACK_FUNCTION}(new_value anyelement, shown_value anyelement, refusal text) \
             RETURNS anyelement LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = {FUNCTION_SEARCH_PATH} \
             AS $maschera_body$ BEGIN IF new_value IS DISTINCT FROM shown_value THEN \
             RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = refusal; END IF; RETURN new_value; END $maschera_body$"
        )),
        Step::plain(format!(
            "REVOKE ALL ON FUNCTION {WRITE_BACK_FUNCTION}(anyelement, anyelement, text) FROM PUBLIC"
        )),
    ];
    for login in logins {
        steps.push(Step::plain(format!(
            "GRANT EXECUTE ON FUNCTION {WRITE_BACK_FUNCTION}(anyelement, anyelement, text) TO {}",
            quote_ident(login)
        )));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_without_equality_are_compared_by_their_text() {
        assert_eq!(comparable("NEW.doc", "json"), "CAST(NEW.doc AS text)");
        assert_eq!(comparable("NEW.doc", "JSON[]"), "CAST(NEW.doc AS text)");
        assert_eq!(comparable("NEW.doc", "jsonb"), "NEW.doc");
        assert_eq!(comparable("NEW.at", "timestamp with time zone"), "NEW.at");
        assert!(compared_as_text("point"));
    }

    #[test]
    fn view_types_follow_the_view_expressions() {
        assert_eq!(view_type(&Action::MaskLast(4), "character(16)"), "text");
        assert_eq!(view_type(&Action::Year, "date"), "date");
        assert_eq!(view_type(&Action::Null, "numeric(12,2)"), "numeric(12,2)");
        assert_eq!(view_type(&Action::Redact, "text"), "text");
    }

    #[test]
    fn refusals_name_the_column_and_what_is_accepted() {
        let m = column_refusal("sales", "contacts", "tax_code", WriteKind::Update);
        assert!(m.starts_with("column \"tax_code\" of \"contacts\""), "{m}");
        assert!(m.contains("written back unchanged"), "{m}");
    }
}
