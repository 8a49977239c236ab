//! Decides per statement type what a restricted role may run: queries and DML are analysed and
//! rewritten, COPY is turned into `COPY (SELECT ...) TO STDOUT` over the view, EXPLAIN / PREPARE /
//! DECLARE rewrite their inner statement, settings go through `settings.rs`, transaction and cursor
//! control pass, and DDL, maintenance and anything unknown are refused.

use sqlparser::ast::{
    CopySource, CopyTarget, DeclareType, DiscardObject, Expr, Reset, Set, Statement, TableFactor,
    Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::report::TableOperation;
use super::scope::{ItemKind, Scope, fold, fold_name, plain_table};
use super::settings;
use super::{SessionEffect, StatementKind};

/// What the analysis of one statement concluded, besides its rewritten tree.
pub(crate) struct Outcome {
    pub kind: StatementKind,
    pub returns_rows: bool,
    pub effect: Option<SessionEffect>,
}

impl Outcome {
    fn new(kind: StatementKind, returns_rows: bool) -> Self {
        Self {
            kind,
            returns_rows,
            effect: None,
        }
    }
}

/// Statement keywords that define or change objects or privileges.
const DDL: &[&str] = &[
    "CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT", "TRUNCATE", "RENAME", "SECURITY",
];
/// Statement keywords for maintenance and procedures, refused for restricted roles.
const PRIVILEGED: &[&str] = &[
    "CALL", "VACUUM", "ANALYZE", "LOCK", "CLUSTER", "REINDEX", "REFRESH", "LOAD", "KILL",
];

/// The leading keywords of a statement (`CREATE TABLE`), never its identifiers or literals.
fn statement_keywords(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words: Vec<&str> = text
        .split_whitespace()
        .take(4)
        .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    // `CREATE TABLE IF NOT EXISTS` (Sequelize's `sync()`) is a CREATE TABLE, not a "CREATE TABLE IF NOT".
    while matches!(words.last(), Some(&"IF" | &"NOT")) {
        words.pop();
    }
    if words.is_empty() {
        "this statement".to_string()
    } else {
        words.join(" ")
    }
}

/// What a refused `CREATE FUNCTION`/`PROCEDURE` adds to its message: why, and what to send instead
/// (ORMs wrap an INSERT in a temporary function to catch a unique violation: Sequelize's
/// `findOrCreate`).
fn routine_hint(keywords: &str) -> &'static str {
    if keywords.starts_with("CREATE")
        && (keywords.contains("FUNCTION") || keywords.contains("PROCEDURE"))
    {
        "; a function's body would run unchecked by Maschera, so a restricted role creates none, temporary (pg_temp) ones included: send its statements directly (for an INSERT that may hit a unique key, INSERT ... ON CONFLICT DO NOTHING or a SAVEPOINT around it)"
    } else {
        ""
    }
}

/// The value of a `SET` argument as PostgreSQL would take it, for the settings check.
fn setting_value(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s)
            | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: s, .. }) => {
                s.clone()
            }
            Value::Number(n, _) => n.clone(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => fold(ident),
        other => other.to_string(),
    }
}

/// The index of the first statement of `sql` that starts with the keyword `DO` (after
/// whitespace and comments), which sqlparser cannot parse: such text is refused as a DO block
/// rather than as unparsable. `None` when there is none or the text does not even tokenize.
pub(crate) fn do_block_index(sql: &str) -> Option<usize> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut index = 0;
    let mut at_start = true;
    for token in tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if !at_start {
                    index += 1;
                }
                at_start = true;
            }
            Token::Word(word) if at_start => {
                if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("do") {
                    return Some(index);
                }
                at_start = false;
            }
            _ => at_start = false,
        }
    }
    None
}

/// `SHOW` forms whose words are PostgreSQL's own grammar, not a setting name.
const SHOW_PHRASES: &[&[&str]] = &[
    &["time", "zone"],
    &["transaction", "isolation", "level"],
    &["session", "authorization"],
];

/// Makes `SHOW name` serialize as PostgreSQL reads it. sqlparser keeps only the words of a
/// `SHOW` (`SHOW maschera.region` and `SHOW maschera region` give the same tree) and writes them
/// separated by spaces, which PostgreSQL rejects for a dotted name: several words that are not one
/// of PostgreSQL's phrases become one quoted, dotted setting name (`SHOW "maschera.region"`).
/// Reading a setting needs no check: the role's own login's privileges apply, and the caller may
/// read its own attributes (it cannot change them).
fn show_variable(variable: &mut Vec<sqlparser::ast::Ident>) {
    if variable.len() < 2 {
        return;
    }
    let words: Vec<String> = variable.iter().map(fold).collect();
    let phrase = variable.iter().all(|w| w.quote_style.is_none())
        && SHOW_PHRASES
            .iter()
            .any(|p| p.len() == words.len() && p.iter().zip(&words).all(|(a, b)| a == b));
    if !phrase {
        *variable = vec![super::scope::quoted(&words.join("."))];
    }
}

impl<'a> Analyzer<'a> {
    /// Analyses one top-level statement, rewriting it in place.
    pub(crate) fn statement(&mut self, statement: &mut Statement) -> Result<Outcome, Refusal> {
        match statement {
            Statement::Query(query) => {
                self.query(query, None)?;
                Ok(Outcome::new(StatementKind::Select, true))
            }
            Statement::Insert(insert) => {
                let returns_rows = insert.returning.is_some();
                self.dml(statement, None)?;
                Ok(Outcome::new(StatementKind::Insert, returns_rows))
            }
            Statement::Update(update) => {
                let returns_rows = update.returning.is_some();
                self.dml(statement, None)?;
                Ok(Outcome::new(StatementKind::Update, returns_rows))
            }
            Statement::Delete(delete) => {
                let returns_rows = delete.returning.is_some();
                self.dml(statement, None)?;
                Ok(Outcome::new(StatementKind::Delete, returns_rows))
            }
            Statement::Copy { .. } => self.copy(statement),
            Statement::Explain {
                analyze,
                options,
                statement: inner,
                describe_alias,
                ..
            } => {
                // EXPLAIN option values decide whether it runs the statement: never cached by shape.
                if options.is_some() {
                    self.value_sensitive = true;
                }
                let analyze_option = options.iter().flatten().any(|o| {
                    matches!(fold(&o.name).as_str(), "analyze" | "analyse")
                        && o.arg.as_ref().is_none_or(|arg| {
                            !matches!(
                                setting_value(arg).to_ascii_lowercase().as_str(),
                                "false" | "off" | "0"
                            )
                        })
                });
                if *analyze || analyze_option {
                    return Err(Refusal::denied(
                        "permission denied: EXPLAIN ANALYZE counts rows the role's filter removed",
                    ));
                }
                if !matches!(describe_alias, sqlparser::ast::DescribeAlias::Explain) {
                    return Err(Refusal::unsupported(
                        "DESCRIBE is not supported by PostgreSQL",
                    ));
                }
                self.explainable(inner)?;
                Ok(Outcome::new(StatementKind::Explain, true))
            }
            Statement::Prepare {
                name,
                statement: inner,
                ..
            } => {
                let inner_outcome = self.explainable(inner)?;
                let mut outcome = Outcome::new(StatementKind::Prepare, false);
                outcome.effect = Some(SessionEffect::Prepare {
                    name: fold(name),
                    kind: inner_outcome.kind,
                    returns_rows: inner_outcome.returns_rows,
                });
                Ok(outcome)
            }
            Statement::Execute {
                name: Some(name),
                parameters,
                immediate: false,
                into,
                using,
                ..
            } if into.is_empty() && using.is_empty() => {
                let name = fold_name(name)?.join(".");
                self.check_exprs(parameters, &Scope::new(None))?;
                let mut outcome = Outcome::new(StatementKind::Execute, true);
                outcome.effect = Some(SessionEffect::Execute { name });
                Ok(outcome)
            }
            Statement::Deallocate { name, .. } => {
                let mut outcome = Outcome::new(StatementKind::Deallocate, false);
                outcome.effect = Some(SessionEffect::Deallocate { name: fold(name) });
                Ok(outcome)
            }
            Statement::Declare { stmts } => {
                let mut names = Vec::new();
                for declare in stmts.iter_mut() {
                    let (Some(DeclareType::Cursor), Some(query)) =
                        (&declare.declare_type, &mut declare.for_query)
                    else {
                        return Err(Refusal::unsupported(
                            "DECLARE other than a cursor is not supported",
                        ));
                    };
                    self.query(query, None)?;
                    names.extend(declare.names.iter().map(fold));
                }
                let mut outcome = Outcome::new(StatementKind::Cursor, false);
                outcome.effect = Some(SessionEffect::DeclareCursor { names });
                Ok(outcome)
            }
            Statement::Fetch { into: None, .. } => Ok(Outcome::new(StatementKind::Cursor, true)),
            Statement::Close { .. } => Ok(Outcome::new(StatementKind::Cursor, false)),
            Statement::StartTransaction {
                statements,
                exception: None,
                ..
            } if statements.is_empty() => Ok(Outcome::new(StatementKind::Transaction, false)),
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => {
                Ok(Outcome::new(StatementKind::Transaction, false))
            }
            Statement::Set(set) => self.set(set),
            Statement::Reset(reset) => {
                self.value_sensitive = true;
                match &reset.reset {
                    // The session attributes are startup parameters of the upstream connection
                    // (its session defaults): RESET ALL falls back to them, as DISCARD ALL does
                    // (asyncpg's pool resets every connection it gets back with it).
                    Reset::ALL => Ok(Outcome::new(StatementKind::Set, false)),
                    Reset::SessionAuthorization => Err(Refusal::denied(
                        "permission denied: RESET SESSION AUTHORIZATION is not allowed",
                    )),
                    Reset::ConfigurationParameter(name) => {
                        settings::check_reset(&fold_name(name)?.join("."))?;
                        Ok(Outcome::new(StatementKind::Set, false))
                    }
                }
            }
            Statement::ShowVariable { variable } => {
                self.edits.other = true;
                show_variable(variable);
                Ok(Outcome::new(StatementKind::Show, true))
            }
            Statement::Discard { object_type } => {
                let mut outcome = Outcome::new(StatementKind::Discard, false);
                if matches!(object_type, DiscardObject::ALL) {
                    outcome.effect = Some(SessionEffect::SessionReset);
                }
                Ok(outcome)
            }
            Statement::LISTEN { channel } => {
                super::channels::check_statement(self.role, "listen", channel)?;
                Ok(Outcome::new(StatementKind::Notify, false))
            }
            Statement::UNLISTEN { channel } => {
                super::channels::check_statement(self.role, "unlisten", channel)?;
                Ok(Outcome::new(StatementKind::Notify, false))
            }
            Statement::NOTIFY { channel, .. } => {
                super::channels::check_statement(self.role, "notify", channel)?;
                Ok(Outcome::new(StatementKind::Notify, false))
            }
            other => {
                let keywords = statement_keywords(other);
                let first = keywords.split(' ').next().unwrap_or("");
                if DDL.contains(&first) {
                    Err(Refusal::denied(format!(
                        "permission denied: {keywords} is DDL, not allowed for role {}{}",
                        self.role.role,
                        routine_hint(&keywords)
                    )))
                } else if PRIVILEGED.contains(&first) {
                    Err(Refusal::denied(format!(
                        "permission denied: {keywords} is not allowed for role {}",
                        self.role.role
                    )))
                } else {
                    Err(Refusal::unsupported(format!(
                        "{keywords} is not supported for restricted roles"
                    )))
                }
            }
        }
    }

    /// The statements EXPLAIN and PREPARE may wrap.
    fn explainable(&mut self, inner: &mut Statement) -> Result<Outcome, Refusal> {
        match inner {
            Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_) => self.statement(inner),
            _ => Err(Refusal::unsupported(
                "only SELECT, INSERT, UPDATE and DELETE can be explained or prepared",
            )),
        }
    }

    fn set(&mut self, set: &mut Set) -> Result<Outcome, Refusal> {
        self.value_sensitive = true;
        match set {
            Set::SingleAssignment {
                variable,
                values,
                hivevar: false,
                ..
            } => {
                let name = fold_name(variable)?.join(".");
                let values: Vec<String> = values.iter().map(setting_value).collect();
                // ORMs set the search_path they were configured with; setting it to exactly the
                // catalog's path changes nothing (pg_catalog stays implicitly first).
                let same_search_path = name == "search_path" && values == self.catalog.search_path;
                if !same_search_path {
                    settings::check_set(&name, &values)?;
                }
            }
            Set::SetTimeZone { .. } => settings::check_set("timezone", &[])?,
            Set::SetNames { charset_name, .. } => {
                settings::check_set("client_encoding", &[fold(charset_name)])?
            }
            Set::SetNamesDefault {} => {}
            Set::SetTransaction { .. } => {
                return Ok(Outcome::new(StatementKind::Transaction, false));
            }
            Set::SetRole { .. } => {
                return Err(Refusal::denied(
                    "permission denied: SET ROLE is not allowed through Maschera",
                ));
            }
            Set::SetSessionAuthorization(_) => {
                return Err(Refusal::denied(
                    "permission denied: SET SESSION AUTHORIZATION is not allowed through Maschera",
                ));
            }
            _ => {
                return Err(Refusal::unsupported(
                    "this form of SET is not supported by PostgreSQL",
                ));
            }
        }
        Ok(Outcome::new(StatementKind::Set, false))
    }

    fn copy(&mut self, statement: &mut Statement) -> Result<Outcome, Refusal> {
        self.value_sensitive = true;
        self.edits.other = true;
        let Statement::Copy {
            source,
            to,
            target,
            values,
            ..
        } = statement
        else {
            return Err(Refusal::unsupported("not a COPY"));
        };
        if !values.is_empty() {
            return Err(Refusal::unsupported(
                "COPY with inline data is not supported",
            ));
        }
        match target {
            CopyTarget::Stdin | CopyTarget::Stdout => {}
            CopyTarget::File { .. } | CopyTarget::Program { .. } => {
                return Err(Refusal::denied(
                    "permission denied: COPY to or from a file or program",
                ));
            }
        }
        let level = Scope::new(None);
        if !*to {
            let CopySource::Table {
                table_name,
                columns,
            } = source
            else {
                return Err(Refusal::unsupported("COPY (query) FROM is not valid"));
            };
            let mut factor = plain_table(table_name.clone());
            let item = self.table_reference(&mut factor, &level, TableOperation::Insert)?;
            let TableFactor::Table { name, .. } = factor else {
                return Err(Refusal::unsupported("COPY target"));
            };
            return match item.kind {
                ItemKind::Base { .. } => {
                    *table_name = name;
                    Ok(Outcome::new(StatementKind::Copy, false))
                }
                ItemKind::View { .. } => {
                    self.copy_into_view(&item, columns, table_name, name)?;
                    Ok(Outcome::new(StatementKind::Copy, false))
                }
                _ => Err(Refusal::denied(
                    "permission denied: COPY FROM into this relation",
                )),
            };
        }
        match source {
            CopySource::Query(query) => {
                self.query(query, None)?;
            }
            CopySource::Table {
                table_name,
                columns,
            } => {
                let mut factor = plain_table(table_name.clone());
                let item = self.table_reference(&mut factor, &level, TableOperation::Read)?;
                let mut select_level = Scope::new(None);
                select_level.items.push(item.clone());
                let names: Vec<String> = if columns.is_empty() {
                    self.log_whole_row(&item);
                    item.visible_columns().unwrap_or_default()
                } else {
                    let names: Vec<String> = columns.iter().map(fold).collect();
                    for name in &names {
                        self.unqualified_column(name, &select_level)?;
                    }
                    names
                };
                let TableFactor::Table { name, .. } = factor else {
                    return Err(Refusal::unsupported("COPY source"));
                };
                match item.kind {
                    ItemKind::View { .. } => {
                        let list: Vec<String> = names
                            .iter()
                            .map(|n| super::scope::quoted(n).to_string())
                            .collect();
                        let select = format!("SELECT {} FROM {name}", list.join(", "));
                        let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, &select)
                            .map_err(|_| {
                                Refusal::unsupported("COPY of this table cannot be rewritten")
                            })?;
                        let Some(Statement::Query(query)) = parsed.pop() else {
                            return Err(Refusal::unsupported(
                                "COPY of this table cannot be rewritten",
                            ));
                        };
                        *source = CopySource::Query(query);
                    }
                    ItemKind::Base { .. } => *table_name = name,
                    _ => {
                        return Err(Refusal::denied(
                            "permission denied: COPY of a system relation",
                        ));
                    }
                }
            }
        }
        Ok(Outcome::new(StatementKind::Copy, true))
    }
}
