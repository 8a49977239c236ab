//! The SQL expression a column becomes under its action, in a role's view and in the functions of the
//! database lock: masks, generalisations, hashes and pseudonyms, `redact`, and the JSON masks that keep
//! a document valid. Pure text; below `apply_sql` and `db_lock`, which both use it.
//! Not for: deciding a column's action (see `compile`) or the objects that use the expression.

use crate::access::{Action, TableName};
use crate::action::is_json_type;
use crate::step::{quote_ident, quote_literal};
use crate::{pseudonym, redact};

/// The SQL expression a view uses for a column under `action`; `None` for `Drop`.
pub fn column_expression(
    table: &TableName,
    column: &str,
    data_type: &str,
    action: &Action,
) -> Option<String> {
    let c = quote_ident(column);
    let text = format!("{c}::text");
    let expr = match action {
        Action::Drop => return None,
        Action::Show => return Some(c),
        Action::Null => format!("NULL::{data_type}"),
        Action::Constant(literal) => format!("CAST({literal} AS {data_type})"),
        Action::MaskEmail => format!(
            "CASE WHEN {c} IS NULL THEN NULL WHEN {text} = '' THEN '' WHEN strpos({text}, '@') > 1 \
             THEN left({text}, 1) || '***' || substr({text}, strpos({text}, '@')) ELSE '***' END"
        ),
        Action::MaskLast(n) => {
            format!("repeat('*', greatest(length({text}) - {n}, 0)) || right({text}, {n})")
        }
        Action::MaskFirst(n) => {
            format!("left({text}, {n}) || repeat('*', greatest(length({text}) - {n}, 0))")
        }
        Action::MaskInitial => format!("left({text}, 1) || '.'"),
        Action::Partial {
            prefix,
            padding,
            suffix,
        } => {
            let pad = quote_literal(padding);
            format!(
                "CASE WHEN {c} IS NULL THEN NULL WHEN length({text}) > {} \
                 THEN left({text}, {prefix}) || {pad} || right({text}, {suffix}) ELSE {pad} END",
                prefix + suffix
            )
        }
        Action::Hash | Action::Pseudonym | Action::TablePseudonym => {
            let key = pseudonym::key_name(action).unwrap_or("pseudonym");
            let scope = pseudonym::scope(action, table, column).unwrap_or_default();
            pseudonym::sql_expression(key, &scope, &text)
        }
        Action::Redact => redact::sql_expression(&text),
        Action::Year => format!("CAST(date_trunc('year', {c}) AS {data_type})"),
        Action::Month => format!("CAST(date_trunc('month', {c}) AS {data_type})"),
        Action::Bucket(width) => {
            format!("CAST(floor({c}::numeric / {width}) * {width} AS {data_type})")
        }
        Action::JsonMask | Action::JsonRedact => json_expression(&c, data_type, action),
    };
    Some(format!("{expr} AS {c}"))
}

/// One token of a JSON text: a string (group 1) with the colon that makes it a key (group 2), or a
/// run of anything else (group 3: punctuation, numbers, `true`, `false`, `null`, white space). A string
/// with a raw control character or an invalid escape is no token (a text value then fails the length
/// check below and gets the fallback; json and jsonb values never hold one). No lookahead: PostgreSQL
/// runs this as a DFA, twice as fast.
const JSON_TOKEN: &str =
    r#"("(?:[^"\\[:cntrl:]]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")(\s*:)?|([^"]+)"#;
/// A string token that `json #>> '{}'` cannot turn into text (`\u0000`, a surrogate escape).
const UNTEXTABLE: &str = r"\\u(0000|[dD][89a-fA-F])";
/// What may stand between strings in a JSON text.
const JSON_OTHER: &str = r"^([][{}:,[:space:]0-9eE.+-]|true|false|null)*$";
/// The alias of the token table inside a JSON mask's subquery (unlikely to shadow a column).
const TOKENS: &str = "maschera_json";

/// The SQL expression (of the column's type) of `json.mask` or `json.redact` over column `c` (quoted)
/// of type `data_type`: the text is cut into tokens, each string that is not a key is replaced, and
/// the tokens are joined back in order, so the result is valid JSON with the same keys and shape. A
/// value that is not JSON throughout (a text column's plain text) gets the fallback instead: `"***"`
/// for json types, `***` or the redacted text for text. NULL and '' stay as they are. Built from
/// built-ins only (nothing to install or grant).
pub fn json_expression(c: &str, data_type: &str, action: &Action) -> String {
    let token = |group: u8| format!("{TOKENS}.maschera_token[{group}]");
    let (string, key, other) = (token(1), token(2), token(3));
    let value = match action {
        Action::JsonRedact => {
            let text = format!("({string}::pg_catalog.json #>> '{{}}')");
            format!(
                "CASE WHEN pg_catalog.strpos({string}, E'\\\\u') > 0 AND {string} ~ {untextable} THEN '\"***\"' \
                 ELSE pg_catalog.to_json({})::text END",
                redact::sql_expression(&text),
                untextable = redact::escaped_literal(UNTEXTABLE),
            )
        }
        _ => format!("CASE WHEN {string} = '\"\"' THEN '\"\"' ELSE '\"***\"' END"),
    };
    let fallback = match (is_json_type(data_type), action) {
        (true, _) => "'\"***\"'".to_string(),
        (false, Action::JsonRedact) => redact::sql_expression(&format!("{c}::text")),
        (false, _) => "'***'".to_string(),
    };
    // Text may hold anything between strings; json and jsonb only JSON (the regular expression is
    // the costlier part, so they skip it).
    let between = if is_json_type(data_type) {
        String::new()
    } else {
        format!(
            " AND pg_catalog.bool_and({other} IS NULL OR {other} ~ {})",
            redact::escaped_literal(JSON_OTHER)
        )
    };
    format!(
        "CASE WHEN {c} IS NULL THEN NULL WHEN {c}::text = '' THEN {c} ELSE CAST(COALESCE((SELECT \
         CASE WHEN pg_catalog.sum(pg_catalog.length(COALESCE({string} || COALESCE({key}, ''), {other}))) \
         = pg_catalog.length({c}::text){between} \
         THEN pg_catalog.string_agg(CASE WHEN {string} IS NULL THEN {other} \
         WHEN {key} IS NOT NULL THEN {string} || {key} ELSE {value} END, '' ORDER BY {TOKENS}.maschera_ord) END \
         FROM pg_catalog.regexp_matches({c}::text, {pattern}, 'g') \
         WITH ORDINALITY AS {TOKENS}(maschera_token, maschera_ord)), {fallback}) AS {data_type}) END",
        pattern = redact::escaped_literal(JSON_TOKEN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TableName {
        TableName::new("public", "contacts")
    }

    fn expr(column: &str, data_type: &str, action: Action) -> String {
        column_expression(&t(), column, data_type, &action).expect("not dropped")
    }

    #[test]
    fn every_action_has_its_sql() {
        assert_eq!(
            column_expression(&t(), "email", "text", &Action::Drop),
            None
        );
        assert_eq!(expr("email", "text", Action::Show), "\"email\"");
        assert_eq!(
            expr("email", "text", Action::Null),
            "NULL::text AS \"email\""
        );
        assert_eq!(
            expr("n", "integer", Action::Constant("0".into())),
            "CAST(0 AS integer) AS \"n\""
        );
        assert_eq!(
            expr("email", "text", Action::MaskEmail),
            "CASE WHEN \"email\" IS NULL THEN NULL WHEN \"email\"::text = '' THEN '' WHEN strpos(\"email\"::text, '@') > 1 THEN left(\"email\"::text, 1) \
             || '***' || substr(\"email\"::text, strpos(\"email\"::text, '@')) ELSE '***' END AS \"email\""
        );
        assert_eq!(
            expr("tax_code", "character(16)", Action::MaskLast(4)),
            "repeat('*', greatest(length(\"tax_code\"::text) - 4, 0)) || right(\"tax_code\"::text, 4) AS \"tax_code\""
        );
        assert_eq!(
            expr("phone", "text", Action::MaskFirst(2)),
            "left(\"phone\"::text, 2) || repeat('*', greatest(length(\"phone\"::text) - 2, 0)) AS \"phone\""
        );
        assert_eq!(
            expr("last_name", "text", Action::MaskInitial),
            "left(\"last_name\"::text, 1) || '.' AS \"last_name\""
        );
        assert_eq!(
            expr(
                "iban",
                "text",
                Action::Partial {
                    prefix: 2,
                    padding: "x'x".into(),
                    suffix: 3
                }
            ),
            "CASE WHEN \"iban\" IS NULL THEN NULL WHEN length(\"iban\"::text) > 5 THEN left(\"iban\"::text, 2) || 'x''x' \
             || right(\"iban\"::text, 3) ELSE 'x''x' END AS \"iban\""
        );
        assert_eq!(
            expr("email", "text", Action::Hash),
            "encode(sha256((SELECT key FROM maschera_private.keys WHERE name = 'hash') || \
             convert_to('public.contacts.email:' || \"email\"::text, 'UTF8')), 'hex') AS \"email\""
        );
        assert_eq!(
            expr("id", "bigint", Action::Pseudonym),
            "encode(sha256((SELECT key FROM maschera_private.keys WHERE name = 'pseudonym') || \
             convert_to(\"id\"::text, 'UTF8')), 'hex') AS \"id\""
        );
        assert_eq!(
            expr("born", "date", Action::Year),
            "CAST(date_trunc('year', \"born\") AS date) AS \"born\""
        );
        assert_eq!(
            expr("at", "timestamp with time zone", Action::Month),
            "CAST(date_trunc('month', \"at\") AS timestamp with time zone) AS \"at\""
        );
        assert_eq!(
            expr("amount", "numeric(12,2)", Action::Bucket(1000)),
            "CAST(floor(\"amount\"::numeric / 1000) * 1000 AS numeric(12,2)) AS \"amount\""
        );
        assert_eq!(expr("we\"ird", "text", Action::Show), "\"we\"\"ird\"");
    }
}
