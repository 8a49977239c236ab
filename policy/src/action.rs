//! The column actions of the policy file (`show`, `mask.last(4)`, `bucket(1000)`, ...): their syntax, how
//! they print, and which column types each one fits. Not for: the SQL an action becomes (see `apply_sql` and `db_lock`).

use crate::access::Action;
use sqlparser::ast::{Expr, UnaryOperator};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// Every action as it is written, for error messages and the README.
pub const ACTION_SYNTAX: &[&str] = &[
    "show",
    "drop",
    "null",
    "constant(<literal>)",
    "mask.email",
    "mask.last(<n>)",
    "mask.first(<n>)",
    "mask.initial",
    "partial(<prefix>, '<padding>', <suffix>)",
    "hash",
    "pseudonym",
    "pseudonym.table",
    "redact",
    "year",
    "month",
    "bucket(<width>)",
    "json.mask",
    "json.redact",
];

const ACTION_NAMES: &[&str] = &[
    "show",
    "drop",
    "null",
    "constant",
    "mask.email",
    "mask.last",
    "mask.first",
    "mask.initial",
    "partial",
    "hash",
    "pseudonym",
    "pseudonym.table",
    "redact",
    "year",
    "month",
    "bucket",
    "json.mask",
    "json.redact",
];

/// Why an action string is not valid, with what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub message: String,
    pub help: String,
}

fn valid_actions() -> String {
    format!("valid actions: {}", ACTION_SYNTAX.join(", "))
}

/// Parses an action as written in the policy file, e.g. `mask.last(4)`.
pub fn parse_action(text: &str) -> Result<Action, ActionError> {
    let text = text.trim();
    let (name, args) = match text.find('(') {
        Some(open) if text.ends_with(')') => {
            (text[..open].trim(), Some(&text[open + 1..text.len() - 1]))
        }
        Some(_) => {
            return Err(ActionError {
                message: format!("action `{text}` has an unclosed parenthesis"),
                help: valid_actions(),
            });
        }
        None => (text, None),
    };
    let no_args = |action: Action| match args {
        None => Ok(action),
        Some(_) => Err(ActionError {
            message: format!("action `{name}` takes no arguments"),
            help: format!("write `{name}`"),
        }),
    };
    let needs = |syntax: &str| ActionError {
        message: format!("action `{text}` needs its arguments"),
        help: format!("write `{syntax}`"),
    };
    match name {
        "show" => no_args(Action::Show),
        "drop" => no_args(Action::Drop),
        "null" => no_args(Action::Null),
        "mask.email" => no_args(Action::MaskEmail),
        "mask.initial" => no_args(Action::MaskInitial),
        "hash" => no_args(Action::Hash),
        "pseudonym" => no_args(Action::Pseudonym),
        "pseudonym.table" => no_args(Action::TablePseudonym),
        "redact" => no_args(Action::Redact),
        "year" => no_args(Action::Year),
        "month" => no_args(Action::Month),
        "json.mask" => no_args(Action::JsonMask),
        "json.redact" => no_args(Action::JsonRedact),
        "mask.last" => Ok(Action::MaskLast(count(
            args.ok_or_else(|| needs("mask.last(<n>)"))?,
            "mask.last(<n>)",
        )?)),
        "mask.first" => Ok(Action::MaskFirst(count(
            args.ok_or_else(|| needs("mask.first(<n>)"))?,
            "mask.first(<n>)",
        )?)),
        "bucket" => {
            let width = count(
                args.ok_or_else(|| needs("bucket(<width>)"))?,
                "bucket(<width>)",
            )?;
            if width == 0 {
                return Err(ActionError {
                    message: "bucket width must be at least 1".into(),
                    help: "write e.g. `bucket(1000)`".into(),
                });
            }
            Ok(Action::Bucket(u64::from(width)))
        }
        "partial" => {
            partial(args.ok_or_else(|| needs("partial(<prefix>, '<padding>', <suffix>)"))?)
        }
        "constant" => constant(args.ok_or_else(|| needs("constant(<literal>)"))?),
        "deny" => Err(ActionError {
            message: "`deny` applies to a whole table, not to a column".into(),
            help: "write `deny = true` in the role's rule for the table, or `drop` for the column"
                .into(),
        }),
        other => {
            let help = match crate::diagnostics::did_you_mean(other, ACTION_NAMES.iter().copied()) {
                Some(close) => {
                    let syntax = ACTION_SYNTAX
                        .iter()
                        .find(|s| s.split('(').next() == Some(close))
                        .unwrap_or(&close);
                    let written = match args {
                        Some(a) if syntax.contains('(') => format!("{close}({a})"),
                        _ => syntax.to_string(),
                    };
                    format!("did you mean `{written}`? {}", valid_actions())
                }
                None => valid_actions(),
            };
            Err(ActionError {
                message: format!("unknown action `{text}`"),
                help,
            })
        }
    }
}

fn count(arg: &str, syntax: &str) -> Result<u32, ActionError> {
    arg.trim().parse::<u32>().map_err(|_| ActionError {
        message: format!("`{}` is not a whole number", arg.trim()),
        help: format!("write `{syntax}` with a number such as 4"),
    })
}

fn partial(args: &str) -> Result<Action, ActionError> {
    let syntax_help = || {
        "write `partial(<prefix>, '<padding>', <suffix>)`, e.g. `partial(2, '***', 2)`".to_string()
    };
    let first_comma = args.find(',');
    let last_comma = args.rfind(',');
    let (Some(first), Some(last)) = (first_comma, last_comma) else {
        return Err(ActionError {
            message: "partial needs three arguments".into(),
            help: syntax_help(),
        });
    };
    if first == last {
        return Err(ActionError {
            message: "partial needs three arguments".into(),
            help: syntax_help(),
        });
    }
    let prefix = count(&args[..first], "partial(<prefix>, '<padding>', <suffix>)")?;
    let suffix = count(
        &args[last + 1..],
        "partial(<prefix>, '<padding>', <suffix>)",
    )?;
    let padding = args[first + 1..last].trim();
    let inner = padding
        .strip_prefix('\'')
        .and_then(|p| p.strip_suffix('\''));
    match inner {
        Some(inner) if !inner.contains('\'') => Ok(Action::Partial {
            prefix,
            padding: inner.to_string(),
            suffix,
        }),
        _ => Err(ActionError {
            message: format!(
                "padding {padding} must be a single-quoted string without quotes inside"
            ),
            help: syntax_help(),
        }),
    }
}

fn constant(literal: &str) -> Result<Action, ActionError> {
    let bad = || {
        ActionError {
        message: format!("`{}` is not a SQL literal", literal.trim()),
        help: "write a string such as constant('n/a'), a number such as constant(0), or constant(true)".into(),
    }
    };
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(literal)
        .map_err(|_| bad())?;
    let expr = parser.parse_expr().map_err(|_| bad())?;
    if parser.peek_token().token != Token::EOF {
        return Err(bad());
    }
    let is_literal = match &expr {
        Expr::Value(_) => true,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => matches!(**expr, Expr::Value(_)),
        _ => false,
    };
    if !is_literal {
        return Err(bad());
    }
    Ok(Action::Constant(expr.to_string()))
}

/// How an action is written in the policy file.
pub fn action_text(action: &Action) -> String {
    match action {
        Action::Show => "show".into(),
        Action::Drop => "drop".into(),
        Action::Null => "null".into(),
        Action::Constant(literal) => format!("constant({literal})"),
        Action::MaskEmail => "mask.email".into(),
        Action::MaskLast(n) => format!("mask.last({n})"),
        Action::MaskFirst(n) => format!("mask.first({n})"),
        Action::MaskInitial => "mask.initial".into(),
        Action::Partial {
            prefix,
            padding,
            suffix,
        } => format!("partial({prefix}, '{padding}', {suffix})"),
        Action::Hash => "hash".into(),
        Action::Pseudonym => "pseudonym".into(),
        Action::TablePseudonym => "pseudonym.table".into(),
        Action::Redact => "redact".into(),
        Action::Year => "year".into(),
        Action::Month => "month".into(),
        Action::Bucket(width) => format!("bucket({width})"),
        Action::JsonMask => "json.mask".into(),
        Action::JsonRedact => "json.redact".into(),
    }
}

/// The kind of a PostgreSQL column type, as far as actions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFamily {
    Text,
    Date,
    Timestamp,
    Number,
    Other,
    /// No type known (the policy declares none and no live catalog was given): no check is possible.
    Unknown,
}

/// The type name a catalog derived from the policy alone uses for columns whose type is not declared.
pub const UNKNOWN_TYPE: &str = "unknown";

pub fn type_family(data_type: &str) -> TypeFamily {
    let t = data_type.trim().to_ascii_lowercase();
    let base = t
        .split('(')
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches("[]");
    if t.ends_with("[]") {
        return TypeFamily::Other;
    }
    match base {
        "" | UNKNOWN_TYPE => TypeFamily::Unknown,
        "text" | "character varying" | "varchar" | "character" | "char" | "bpchar" | "citext"
        | "name" => TypeFamily::Text,
        "date" => TypeFamily::Date,
        b if b.starts_with("timestamp") => TypeFamily::Timestamp,
        "smallint" | "integer" | "int" | "bigint" | "int2" | "int4" | "int8" | "numeric"
        | "decimal" | "real" | "double precision" | "float4" | "float8" | "money" => {
            TypeFamily::Number
        }
        _ => TypeFamily::Other,
    }
}

/// Whether `action` can apply to a column of type `data_type`; if not, what types it needs.
pub fn check_fits(action: &Action, data_type: &str) -> Result<(), String> {
    let family = type_family(data_type);
    if family == TypeFamily::Unknown {
        return Ok(());
    }
    let (fits, needs) = match action {
        Action::MaskEmail
        | Action::MaskLast(_)
        | Action::MaskFirst(_)
        | Action::MaskInitial
        | Action::Partial { .. }
        | Action::Redact => (
            family == TypeFamily::Text,
            "a text column (text, varchar, char)",
        ),
        Action::Year | Action::Month => (
            matches!(family, TypeFamily::Date | TypeFamily::Timestamp),
            "a date or timestamp column",
        ),
        Action::Bucket(_) => (
            family == TypeFamily::Number,
            "a numeric column (integer, bigint, numeric, ...)",
        ),
        Action::JsonMask | Action::JsonRedact => {
            (fits_json_mask(data_type), "a json, jsonb or text column")
        }
        _ => (true, ""),
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "`{}` needs {needs}, but the column is `{data_type}`",
            action_text(action)
        ))
    }
}

/// Whether a column type is `json` or `jsonb` (what the JSON masks apply to).
pub fn is_json_type(data_type: &str) -> bool {
    matches!(
        data_type.trim().to_ascii_lowercase().as_str(),
        "json" | "jsonb"
    )
}

/// Whether a JSON mask fits a column of this type: json, jsonb, or text holding JSON (a text value
/// that is not JSON is masked whole: `***`, or redacted as `redact` does).
pub fn fits_json_mask(data_type: &str) -> bool {
    is_json_type(data_type) || type_family(data_type) == TypeFamily::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_and_prints_back() {
        for text in [
            "show",
            "drop",
            "null",
            "constant('n/a')",
            "constant('it''s')",
            "constant(true)",
            "constant(0)",
            "constant(-1.5)",
            "mask.email",
            "mask.last(4)",
            "mask.first(2)",
            "mask.initial",
            "partial(2, '***', 1)",
            "hash",
            "pseudonym",
            "pseudonym.table",
            "redact",
            "year",
            "month",
            "bucket(1000)",
            "json.mask",
            "json.redact",
        ] {
            let action = parse_action(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(action_text(&action), text);
        }
        assert_eq!(
            parse_action("partial(2, '', 0)"),
            Ok(Action::Partial {
                prefix: 2,
                padding: "".into(),
                suffix: 0
            })
        );
    }

    #[test]
    fn a_misspelt_action_suggests_the_right_one_and_lists_all() {
        let err = parse_action("mask.lst(4)").unwrap_err();
        assert_eq!(err.message, "unknown action `mask.lst(4)`");
        assert!(
            err.help.starts_with("did you mean `mask.last(4)`?"),
            "{}",
            err.help
        );
        assert!(err.help.contains("pseudonym"));
        let err = parse_action("pseudonim").unwrap_err();
        assert!(err.help.starts_with("did you mean `pseudonym`?"));
    }

    #[test]
    fn malformed_arguments_are_refused_with_the_syntax() {
        assert!(
            parse_action("mask.last")
                .unwrap_err()
                .help
                .contains("mask.last(<n>)")
        );
        assert!(
            parse_action("mask.last(x)")
                .unwrap_err()
                .message
                .contains("not a whole number")
        );
        assert!(
            parse_action("mask.last(4")
                .unwrap_err()
                .message
                .contains("unclosed")
        );
        assert!(
            parse_action("show(1)")
                .unwrap_err()
                .message
                .contains("takes no arguments")
        );
        assert!(parse_action("bucket(0)").is_err());
        assert!(parse_action("partial(1, 2)").is_err());
        assert!(parse_action("partial(1, x, 2)").is_err());
        assert!(
            parse_action("constant(now())")
                .unwrap_err()
                .message
                .contains("not a SQL literal")
        );
        assert!(parse_action("constant('a'); drop table x").is_err());
        assert!(
            parse_action("deny")
                .unwrap_err()
                .help
                .contains("deny = true")
        );
    }

    #[test]
    fn actions_are_checked_against_the_column_type() {
        assert!(check_fits(&Action::MaskEmail, "text").is_ok());
        assert!(check_fits(&Action::MaskLast(4), "character(16)").is_ok());
        assert!(
            check_fits(&Action::MaskEmail, "date")
                .unwrap_err()
                .contains("needs a text column")
        );
        assert!(
            check_fits(&Action::Year, "text")
                .unwrap_err()
                .contains("date or timestamp")
        );
        assert!(check_fits(&Action::Year, "timestamp with time zone").is_ok());
        assert!(check_fits(&Action::Bucket(10), "numeric(12,2)").is_ok());
        assert!(check_fits(&Action::Bucket(10), "text").is_err());
        assert!(check_fits(&Action::Pseudonym, "bigint").is_ok());
        assert!(check_fits(&Action::MaskEmail, UNKNOWN_TYPE).is_ok());
        assert!(check_fits(&Action::MaskEmail, "text[]").is_err());
        assert!(check_fits(&Action::Redact, "character varying(200)").is_ok());
        assert!(
            check_fits(&Action::Redact, "integer")
                .unwrap_err()
                .contains("needs a text column")
        );
        assert!(check_fits(&Action::TablePseudonym, "bigint").is_ok());
    }
}
