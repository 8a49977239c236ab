//! Row filters: the SQL boolean expression a role's rule gives for a table, with `attr('name')` standing for
//! the caller's attribute. Parses it (so a broken filter is caught by `policy check`) and compiles each
//! `attr('x')` into `(SELECT maschera_private.attribute('<namespace>.x'))` (a subquery, so that
//! PostgreSQL evaluates it once per statement as an initplan): the setting when the proxy's seal of it
//! verifies (`attribute_seal`), else NULL, so a caller without the attribute, or one that set it
//! itself, compares with NULL and sees no rows. Not for: resolving the tables and columns it names
//! (PostgreSQL does that when `policy apply` creates the view, `policy check --upstream` asks it).

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Spanned, Value,
    visit_expressions_mut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// A row filter ready to go into a view's WHERE clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    /// The filter as SQL, attributes replaced by setting reads.
    pub sql: String,
    /// The attribute names it reads.
    pub attributes: BTreeSet<String>,
}

/// Why a filter is not valid; `line`/`column` are 1-based positions inside the filter text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub message: String,
    pub help: String,
    pub line: usize,
    pub column: usize,
}

/// The PostgreSQL setting that carries attribute `name`, e.g. `maschera.region`.
pub fn attribute_setting(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The SQL expression that reads attribute `name` (NULL when the session does not have it, or has
/// it without the proxy's seal).
pub fn attribute_read_sql(namespace: &str, name: &str) -> String {
    crate::attribute_seal::read_sql(&attribute_setting(namespace, name))
}

/// Parses `text` as a boolean SQL expression and replaces each `attr('name')` with a read of the
/// setting; `declared` are the attributes the role declares.
pub fn compile_filter(
    text: &str,
    namespace: &str,
    declared: &[String],
) -> Result<CompiledFilter, FilterError> {
    let dialect = PostgreSqlDialect {};
    let mut expr = Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut parser| {
            let expr = parser.parse_expr()?;
            let next = parser.peek_token();
            if next.token != Token::EOF {
                return Err(sqlparser::parser::ParserError::ParserError(format!(
                    "unexpected `{}` after the filter expression at Line: {}, Column: {}",
                    next.token, next.span.start.line, next.span.start.column
                )));
            }
            Ok(expr)
        })
        .map_err(|err| {
            let message = err.to_string();
            let (message, line, column) = split_location(&message);
            FilterError {
                message: format!("row filter does not parse: {message}"),
                help: "write one SQL boolean expression, e.g. `region = attr('region')` or \
                       `contact_id IN (SELECT id FROM contacts WHERE region = attr('region'))`"
                    .into(),
                line,
                column,
            }
        })?;
    let mut attributes = BTreeSet::new();
    let mut failure = None;
    let _ = visit_expressions_mut(&mut expr, |e| {
        let Expr::Function(function) = &*e else {
            return ControlFlow::Continue(());
        };
        let is_attr = matches!(function.name.0.as_slice(),
            [ObjectNamePart::Identifier(ident)] if ident.value.eq_ignore_ascii_case("attr"));
        if !is_attr {
            return ControlFlow::Continue(());
        }
        let location = e.span().start;
        let fail = |message: String, help: String| FilterError {
            message,
            help,
            line: location.line.max(1) as usize,
            column: location.column.max(1) as usize,
        };
        let name = match &function.args {
            FunctionArguments::List(list) if list.args.len() == 1 && list.clauses.is_empty() => {
                match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                        Value::SingleQuotedString(name) => Some(name.clone()),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(name) = name else {
            failure = Some(fail(
                "attr() takes one attribute name in single quotes".into(),
                "write e.g. attr('region')".into(),
            ));
            return ControlFlow::Break(());
        };
        if !declared.contains(&name) {
            let names: Vec<&str> = declared.iter().map(String::as_str).collect();
            failure = Some(fail(
                format!("attribute `{name}` is not declared by the role"),
                format!(
                    "add it to the role's `attributes = [...]`; {}",
                    crate::diagnostics::suggest(&name, &names, "attributes")
                ),
            ));
            return ControlFlow::Break(());
        }
        match parse_read(namespace, &name) {
            Some(read) => *e = read,
            None => {
                failure = Some(fail(
                    format!("attribute name `{name}` is not valid"),
                    "use letters, digits and _".into(),
                ));
                return ControlFlow::Break(());
            }
        }
        attributes.insert(name);
        ControlFlow::Continue(())
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(CompiledFilter {
        sql: expr.to_string(),
        attributes,
    })
}

fn parse_read(namespace: &str, name: &str) -> Option<Expr> {
    if !crate::access::is_identifier(name) {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&attribute_read_sql(namespace, name))
        .ok()?
        .parse_expr()
        .ok()
}

/// Splits sqlparser's " at Line: 3, Column: 7" suffix off a message.
fn split_location(message: &str) -> (String, usize, usize) {
    if let Some(at) = message.rfind(" at Line: ") {
        let rest = &message[at + " at Line: ".len()..];
        let mut parts = rest.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (message[..at].to_string(), line, column);
        }
    }
    (message.to_string(), 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<String> {
        vec!["region".to_string()]
    }

    #[test]
    fn attributes_compile_to_setting_reads() {
        let f = compile_filter("region = attr('region')", "maschera", &declared()).unwrap();
        assert_eq!(
            f.sql,
            "region = (SELECT maschera_private.attribute('maschera.region'))"
        );
        assert_eq!(f.attributes.into_iter().collect::<Vec<_>>(), ["region"]);
    }

    #[test]
    fn subqueries_are_allowed_and_attributes_inside_them_compile() {
        let f = compile_filter(
            "contact_id IN (SELECT id FROM contacts WHERE region = attr('region'))",
            "acme",
            &declared(),
        )
        .unwrap();
        assert_eq!(
            f.sql,
            "contact_id IN (SELECT id FROM contacts WHERE region = (SELECT maschera_private.attribute('acme.region')))"
        );
    }

    #[test]
    fn a_filter_that_does_not_parse_says_where() {
        let err = compile_filter("region = = 'north'", "maschera", &declared()).unwrap_err();
        assert!(
            err.message.starts_with("row filter does not parse"),
            "{}",
            err.message
        );
        assert_eq!((err.line, err.column), (1, 10));
        let err = compile_filter("true; DROP TABLE contacts", "maschera", &declared()).unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
    }

    #[test]
    fn undeclared_or_malformed_attributes_are_refused() {
        let err = compile_filter("region = attr('regoin')", "maschera", &declared()).unwrap_err();
        assert!(err.message.contains("`regoin` is not declared"));
        assert!(err.help.contains("did you mean `region`?"));
        assert_eq!((err.line, err.column), (1, 10));
        let err = compile_filter("region = attr(region)", "maschera", &declared()).unwrap_err();
        assert!(err.message.contains("single quotes"));
    }
}
