//! The statement rewriter: for a restricted role, every statement is parsed with sqlparser, every
//! table reference resolved against the live catalog and mapped to the role's view, everything the
//! role may not do refused, and the statement re-serialized from the syntax tree (never the client's
//! text), which must provably read back as the analysed tree (`faithful.rs`). Unrestricted roles
//! pass unchanged. Pure: no I/O, no async; the proxy calls it per statement and caches through
//! [`RewriteCache`].
//!
//! Not for: the wire protocol, keeping prepared statements or cursors per session (the proxy does,
//! guided by [`SessionEffect`]), or compiling the views (the policy compiler does).
//!
//! Entry points: [`rewrite`] for a simple-query text (several statements), [`rewrite_prepared`] for
//! the one statement of a Parse message (with `$n` parameters), [`inspect`] for the audit record of
//! an unrestricted role, and [`RewriteCache`] in front of both.

mod analyzer;
mod backslash;
mod cache;
mod catalog_schema;
mod channels;
mod copy_in;
mod dml;
mod do_nothing;
mod expr;
mod faithful;
pub mod fixture;
mod functions;
mod group_by;
pub mod limits;
mod lookup;
mod query;
mod refusal;
mod report;
mod scope;
mod settings;
mod shape;
mod statement;
mod system;
mod table_stats;
mod write_back;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_rules_tests;

use std::fmt::Write as _;
use std::sync::Arc;

use sqlparser::ast::{Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::ParserError;
use sqlparser::tokenizer::Tokenizer;

pub use cache::{CacheStats, RewriteCache};
pub use channels::channel_name_problem;
pub use refusal::{Refusal, SqlState};
pub use report::{ColumnAction, ColumnUse, TableOperation, TableRoute, TableUse};
pub use settings::{RESERVED_NAMESPACE, check_startup_parameter};
pub use shape::{Token as LexToken, lex};

use crate::access::{Catalog, RoleAccess, TableAccess};
use analyzer::Analyzer;
use faithful::ClientTokens;

/// What kind of statement this is, for the proxy's protocol handling and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Copy,
    Explain,
    Set,
    Show,
    Transaction,
    Prepare,
    Execute,
    Deallocate,
    /// DECLARE, FETCH, CLOSE.
    Cursor,
    Discard,
    /// LISTEN, UNLISTEN, NOTIFY.
    Notify,
}

/// A session-level consequence the proxy must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// `DISCARD ALL` passed upstream: it resets every setting, including the caller's attributes in
    /// the reserved namespace. The proxy must set the attributes again before the next statement.
    SessionReset,
    /// `PREPARE name AS ...` (inner statement already rewritten): the proxy remembers what
    /// `EXECUTE name` will be (its kind, whether it returns rows, and this statement's tables).
    Prepare {
        name: String,
        kind: StatementKind,
        returns_rows: bool,
    },
    /// `EXECUTE name`: the proxy takes the tables and row shape from the matching PREPARE.
    Execute { name: String },
    /// `DEALLOCATE name` (`all` for `DEALLOCATE ALL`).
    Deallocate { name: String },
    /// `DECLARE name CURSOR FOR ...`.
    DeclareCursor { names: Vec<String> },
}

/// One statement as it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenStatement {
    /// The SQL to send upstream: re-serialized from the rewritten syntax tree.
    pub sql: String,
    pub kind: StatementKind,
    /// The tables touched, with columns, categories and actions, for the access log (shared with
    /// the cache: cloning is cheap).
    pub tables: Arc<[TableUse]>,
    /// Whether the statement returns rows (SELECT, RETURNING, EXPLAIN, SHOW, FETCH, COPY TO; for
    /// EXECUTE, look at the PREPARE).
    pub returns_rows: bool,
    pub effect: Option<SessionEffect>,
    /// Whether no literal's value influenced the decision (so the shape may be cached).
    pub(crate) literal_independent: bool,
}

/// The result of rewriting a statement text for a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// The role is unrestricted: forward the client's text unchanged (use [`inspect`] for the
    /// access log when it is wanted).
    Unchanged,
    /// Forward these statements, in order. Empty for an empty query string.
    Statements(Vec<RewrittenStatement>),
}

impl Rewritten {
    /// The statements (empty for [`Rewritten::Unchanged`]).
    pub fn statements(&self) -> &[RewrittenStatement] {
        match self {
            Rewritten::Unchanged => &[],
            Rewritten::Statements(statements) => statements,
        }
    }

    /// The text to forward for a simple query: the statements joined by `;`, or `original` when
    /// unchanged.
    pub fn sql<'t>(&'t self, original: &'t str) -> std::borrow::Cow<'t, str> {
        match self {
            Rewritten::Unchanged => std::borrow::Cow::Borrowed(original),
            Rewritten::Statements(statements) => std::borrow::Cow::Owned(
                statements
                    .iter()
                    .map(|s| s.sql.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n"),
            ),
        }
    }
}

/// Parses `sql`, keeping the client's tokens for the re-serialization check when the text is
/// one statement.
fn parse<'t>(
    sql: &'t str,
    role: &RoleAccess,
) -> Result<(Vec<Statement>, Option<ClientTokens<'t>>), Refusal> {
    let dialect = PostgreSqlDialect {};
    // About one token per four bytes of SQL: sized once instead of grown.
    let mut tokens = Vec::with_capacity(sql.len() / 4 + 8);
    let tokenized = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location_into_buf(&mut tokens)
        .map_err(ParserError::from);
    let limits = limits::limits();
    // The bounds first: no tree is built for a text beyond them.
    if tokenized.is_ok() {
        limits::check_tokens(&tokens, &limits)?;
    }
    let parsed = tokenized.and_then(|()| {
        let client = ClientTokens::new(sql, &tokens);
        limits::parser(&dialect, &limits)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map(|statements| (statements, client))
    });
    parsed.map_err(|e| match statement::do_block_index(sql) {
        Some(index) => {
            let mut refusal = Refusal::denied(format!(
                "permission denied: DO blocks (anonymous code blocks) run procedural code, not allowed for role {}",
                role.role
            ));
            refusal.statement_index = index;
            refusal
        }
        None => Refusal::unparsable(&e.to_string()),
    })
}

/// Rewrites a simple-query text (one or more statements) for `role`.
///
/// All statements are analysed before any is forwarded: if one is refused, the whole text is
/// refused (nothing runs), and the refusal says which statement (`statement_index`).
pub fn rewrite(sql: &str, role: &RoleAccess, catalog: &Catalog) -> Result<Rewritten, Refusal> {
    if role.unrestricted {
        return Ok(Rewritten::Unchanged);
    }
    let (statements, client) = parse(sql, role)?;
    let client = client.filter(|_| statements.len() == 1);
    let mut out = Vec::with_capacity(statements.len());
    for (index, statement) in statements.into_iter().enumerate() {
        let rewritten = rewrite_statement(statement, role, catalog, client.as_ref(), sql.len())
            .map_err(|mut refusal| {
                refusal.statement_index = index;
                refusal
            })?;
        out.push(rewritten);
    }
    Ok(Rewritten::Statements(out))
}

/// Rewrites the single statement of an extended-protocol Parse message (it may hold `$n`
/// parameters). An empty statement gives no statements; several statements are refused, as
/// PostgreSQL does.
pub fn rewrite_prepared(
    sql: &str,
    role: &RoleAccess,
    catalog: &Catalog,
) -> Result<Rewritten, Refusal> {
    if role.unrestricted {
        return Ok(Rewritten::Unchanged);
    }
    let (mut statements, client) = parse(sql, role)?;
    if statements.len() > 1 {
        return Err(Refusal::unsupported(
            "cannot insert multiple commands into a prepared statement",
        ));
    }
    match statements.pop() {
        None => Ok(Rewritten::Statements(Vec::new())),
        Some(statement) => Ok(Rewritten::Statements(vec![rewrite_statement(
            statement,
            role,
            catalog,
            client.as_ref(),
            sql.len(),
        )?])),
    }
}

/// `client`: the client's tokens when the text held only this statement; `text_len`: the length of
/// the client's text (to size the output).
fn rewrite_statement(
    mut statement: Statement,
    role: &RoleAccess,
    catalog: &Catalog,
    client: Option<&ClientTokens<'_>>,
    text_len: usize,
) -> Result<RewrittenStatement, Refusal> {
    let mut analyzer = Analyzer::new(role, catalog);
    let outcome = match analyzer.statement(&mut statement) {
        Ok(outcome) => outcome,
        Err(mut refusal) => {
            refusal.tables = analyzer.log.into_tables();
            return Err(refusal);
        }
    };
    let serialize = |statement: &Statement| {
        let mut sql = String::with_capacity(text_len + 64);
        write!(sql, "{statement}").map(|()| sql).map_err(|_| {
            Refusal::unsupported(
                "statement not supported by the Maschera parser: it cannot be serialized",
            )
        })
    };
    let mut sql = serialize(&statement)?;
    // Only a text with a backslash can hold a plain literal that reads differently upstream.
    if sql.contains('\\') && backslash::escape_plain_literals(&mut statement) {
        analyzer.edits.other = true;
        sql = serialize(&statement)?;
    }
    faithful::verify(&sql, &statement, client, &analyzer.edits)?;
    backslash::check_upstream_text(&sql)?;
    Ok(RewrittenStatement {
        sql,
        kind: outcome.kind,
        tables: analyzer.log.into_tables().into(),
        returns_rows: outcome.returns_rows,
        effect: outcome.effect,
        literal_independent: !analyzer.value_sensitive,
    })
}

/// For an unrestricted role's statement, the policy tables it names (for the access log), without
/// rewriting anything. Cheap but approximate: a CTE named like a table counts as the table.
/// Unparsable text gives an empty list (the statement still runs: the role is unrestricted).
pub fn inspect(sql: &str, role: &RoleAccess, catalog: &Catalog) -> Vec<TableUse> {
    let Ok(statements) = limits::parse_bounded(sql) else {
        return Vec::new();
    };
    inspect_parsed(&statements, role, catalog)
}

/// [`inspect`] of statements already parsed (with [`limits::parse_bounded`]).
pub fn inspect_parsed(
    statements: &[Statement],
    role: &RoleAccess,
    catalog: &Catalog,
) -> Vec<TableUse> {
    struct Relations<'c> {
        catalog: &'c Catalog,
        found: Vec<crate::access::TableName>,
        depth: usize,
    }
    impl Visitor for Relations<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, _expr: &sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
            self.depth += 1;
            if self.depth > expr::MAX_EXPR_DEPTH {
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _expr: &sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
            self.depth -= 1;
            std::ops::ControlFlow::Continue(())
        }
        fn pre_visit_relation(
            &mut self,
            relation: &sqlparser::ast::ObjectName,
        ) -> std::ops::ControlFlow<()> {
            if let Ok(parts) = scope::fold_name(relation) {
                let table = match parts.as_slice() {
                    [name] => self.catalog.resolve(None, name),
                    [schema, name] => self.catalog.resolve(Some(schema), name),
                    _ => None,
                };
                if let Some(table) = table.filter(|t| !self.found.contains(t)) {
                    self.found.push(table);
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut relations = Relations {
        catalog,
        found: Vec::new(),
        depth: 0,
    };
    for statement in statements {
        if statement.visit(&mut relations).is_break() {
            relations.depth = 0;
        }
        if let Statement::Copy {
            source: sqlparser::ast::CopySource::Table { table_name, .. },
            ..
        } = statement
        {
            let _ = relations.pre_visit_relation(table_name);
        }
    }
    relations
        .found
        .into_iter()
        .map(|table| {
            let categories = match role.tables.get(&table) {
                Some(TableAccess::Denied { categories }) => categories.clone(),
                Some(TableAccess::View(view)) => {
                    view.columns.iter().filter_map(|c| c.category).collect()
                }
                None => Default::default(),
            };
            TableUse {
                table,
                route: TableRoute::Unrestricted,
                operations: Vec::new(),
                filtered: false,
                columns: Default::default(),
                categories,
            }
        })
        .collect()
}
