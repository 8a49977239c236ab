//! What an unrestricted role's statements touch, found without rewriting them, for the access log:
//! the policy tables each statement names and their categories ([`statements`]), behind a cheap
//! test that skips texts naming no policy table ([`may_name_one_of`]). The text is parsed once,
//! by whichever part looks first ([`ParsedOnce`]): the access log's inspection here, the catalog
//! change of an `ALTER TABLE` (see `alter_catalog`) for the proxy's schema-change wrapping.
//!
//! Not for: restricted roles (the rewriter reports what their statements touch) or writing the
//! log (the proxy does).

use crate::access::{Catalog, RoleAccess};
use crate::rewrite::TableUse;
use crate::rewrite::limits::{self, ParseFailure};
use sqlparser::ast::Statement;
use std::cell::OnceCell;

/// One statement text, parsed (within the parser's bounds) at most once, when first asked.
pub struct ParsedOnce<'t> {
    text: &'t str,
    parsed: OnceCell<Result<Vec<Statement>, ParseFailure>>,
}

impl<'t> ParsedOnce<'t> {
    pub fn new(text: &'t str) -> Self {
        ParsedOnce {
            text,
            parsed: OnceCell::new(),
        }
    }

    pub fn text(&self) -> &'t str {
        self.text
    }

    /// The text's statements; an error when it does not parse or exceeds the bounds.
    pub fn statements(&self) -> Result<&[Statement], &ParseFailure> {
        self.parsed
            .get_or_init(|| limits::parse_bounded(self.text))
            .as_deref()
    }
}

/// What one statement of an unrestricted role touches.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// `select`, `insert`, ... (see [`statement_kind`]).
    pub kind: &'static str,
    /// The statement as PostgreSQL will see it, one statement of the text.
    pub text: String,
    /// The policy tables it names, with their categories for the role.
    pub tables: Vec<TableUse>,
}

/// What each of `statements` touches (`None`: no policy table of `role`).
pub fn statements(
    statements: &[Statement],
    role: &RoleAccess,
    catalog: &Catalog,
) -> Vec<Option<Inspected>> {
    statements
        .iter()
        .map(|statement| {
            let tables: Vec<TableUse> =
                crate::rewrite::inspect_parsed(std::slice::from_ref(statement), role, catalog)
                    .into_iter()
                    .filter(|used| role.tables.contains_key(&used.table))
                    .collect();
            (!tables.is_empty()).then(|| Inspected {
                kind: statement_kind(statement),
                text: statement.to_string(),
                tables,
            })
        })
        .collect()
}

/// Whether `sql` may name one of `names` (lower case): one of them as a whole word, or a
/// Unicode-escaped identifier (`U&"..."`) that could spell one. A substring test, no parsing.
pub fn may_name_one_of(names: &[String], sql: &[u8]) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$';
    let escaped = sql.windows(3).any(|w| w.eq_ignore_ascii_case(b"u&\""));
    escaped
        || names.iter().any(|name| {
            let name = name.as_bytes();
            sql.windows(name.len()).enumerate().any(|(at, w)| {
                w.eq_ignore_ascii_case(name)
                    && !at.checked_sub(1).and_then(|i| sql.get(i)).is_some_and(word)
                    && !sql.get(at + name.len()).is_some_and(word)
            })
        })
}

/// The kind of a statement, as the access log names it.
pub fn statement_kind(statement: &Statement) -> &'static str {
    match statement {
        Statement::Query(_) => "select",
        Statement::Insert(_) => "insert",
        Statement::Update { .. } => "update",
        Statement::Delete(_) => "delete",
        Statement::Copy { .. } => "copy",
        Statement::Explain { .. } => "explain",
        Statement::Merge { .. } => "merge",
        Statement::Declare { .. } => "cursor",
        Statement::Prepare { .. } => "prepare",
        Statement::CreateTable(_) | Statement::CreateView { .. } => "create",
        Statement::AlterTable { .. } => "alter",
        Statement::Drop { .. } => "drop",
        Statement::Truncate { .. } => "truncate",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::TableName;
    use crate::rewrite::fixture;

    #[test]
    fn only_whole_policy_table_names_take_the_slow_path() {
        let names = ["contacts".to_string()];
        for sql in [
            "SELECT * FROM contacts",
            "select * from public.CONTACTS where id = 1",
            "SELECT 1 FROM \"contacts\"",
            "SELECT * FROM U&\"cont\\0061cts\"",
        ] {
            assert!(may_name_one_of(&names, sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT * FROM contacts_archive",
            "SELECT mycontacts FROM t",
            "SELECT 1",
        ] {
            assert!(!may_name_one_of(&names, sql.as_bytes()), "{sql}");
        }
    }

    /// The access log's inspection and the catalog change of an `ALTER TABLE` look at one parse of
    /// the text: however many parts ask, the parser runs once.
    #[test]
    fn one_parse_serves_the_access_log_and_the_schema_change() {
        // The fixture's `dpo` lists no tables; the inspection reads only the role's table list.
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        let sql = "SELECT email FROM contacts WHERE id = 1; ALTER TABLE contacts ADD COLUMN nick text; SELECT 1";
        let before = limits::parses_on_this_thread();
        let parsed = ParsedOnce::new(sql);
        let parsed_statements = parsed.statements().expect("parses");
        let inspected = statements(parsed_statements, &role, &catalog);
        let alters = crate::alter_catalog::alter_tables(parsed.statements().expect("parsed"));
        let changed = crate::alter_catalog::changed_catalog(&catalog, &alters).expect("modelled");
        assert_eq!(limits::parses_on_this_thread() - before, 1);

        let kinds: Vec<Option<&str>> = inspected
            .iter()
            .map(|i| i.as_ref().map(|i| i.kind))
            .collect();
        assert_eq!(kinds, [Some("select"), Some("alter"), None]);
        let contacts = TableName::new("public", "contacts");
        assert_eq!(inspected[0].as_ref().unwrap().tables[0].table, contacts);
        assert!(
            changed.tables[&contacts].iter().any(|c| c.name == "nick"),
            "{:?}",
            changed.tables[&contacts]
        );
    }
}
