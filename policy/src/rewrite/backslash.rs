//! Backslashes in plain string literals: the text sent upstream must read the same whatever the
//! session's `standard_conforming_strings`. The proxy reads `'...'` with it on (a backslash is a
//! character); the proxy pins the setting on in each session's startup packet, and this module is
//! the second wall: should the session still have it off (a server, database or role default that
//! reached it), `'a\'` would not end where the proxy read it, and the rest of the text, which the
//! proxy read as a literal, would run as SQL.
//! So a plain literal holding a backslash goes upstream as an `E'...'` literal of the same value
//! (read the same in both modes), a text whose constants hold a backslash is never served from the
//! shape cache, and a serialized text that still holds one in a plain literal is refused (0A000).
//! Not for: `E'...'` and dollar-quoted constants or quoted identifiers (no mode changes them), nor
//! the encoding of the text (the proxy refuses a client encoding other than UTF8).

use std::ops::ControlFlow;

use sqlparser::ast::{
    CopyLegacyOption, CopyOption, Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
};

use super::refusal::Refusal;
use super::shape::{Token, lex, plain_with_backslash};

/// Turns every plain string literal of `statement` that holds a backslash into an `E'...'` literal
/// of the same value; returns whether any was changed.
pub(crate) fn escape_plain_literals(statement: &mut Statement) -> bool {
    struct Escaper {
        changed: bool,
    }
    impl VisitorMut for Escaper {
        type Break = ();
        fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
            if let Value::SingleQuotedString(text) = &mut value.value
                && text.contains('\\')
            {
                value.value = Value::EscapedStringLiteral(std::mem::take(text));
                self.changed = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut escaper = Escaper { changed: false };
    let _ = statement.visit(&mut escaper);
    escaper.changed | drop_default_copy_null(statement)
}

/// COPY's options are strings that sqlparser always writes as plain literals, so none holding a
/// backslash can go upstream as `E'...'`. The one clients send is the text format's NULL string `\N`,
/// PostgreSQL's default there (psycopg2's `copy_from`/`copy_to` spell out `NULL AS '\N'`): left out,
/// the statement means the same in both modes. Any other option with a backslash stays and is
/// refused by [`check_upstream_text`].
fn drop_default_copy_null(statement: &mut Statement) -> bool {
    let Statement::Copy {
        options,
        legacy_options,
        ..
    } = statement
    else {
        return false;
    };
    let text_format = !legacy_options
        .iter()
        .any(|o| matches!(o, CopyLegacyOption::Csv(_) | CopyLegacyOption::Binary))
        && !options.iter().any(
            |o| matches!(o, CopyOption::Format(name) if !name.value.eq_ignore_ascii_case("text")),
        );
    if !text_format {
        return false;
    }
    let before = options.len() + legacy_options.len();
    options.retain(|o| !matches!(o, CopyOption::Null(s) if s == "\\N"));
    legacy_options.retain(|o| !matches!(o, CopyLegacyOption::Null(s) if s == "\\N"));
    before != options.len() + legacy_options.len()
}

/// Refuses `sql` (a serialized statement) when a plain string literal in it holds a backslash, or
/// when it holds a backslash where the lexer cannot tell (fail closed).
pub(crate) fn check_upstream_text(sql: &str) -> Result<(), Refusal> {
    if !sql.contains('\\') {
        return Ok(());
    }
    let mut plain = false;
    let lexed = lex(sql, |token, start, end| {
        if let Token::Constant = token {
            plain |= plain_with_backslash(&sql[start..end]);
        }
    });
    if lexed.is_none() || plain {
        return Err(Refusal::unsupported(
            "statement not supported through Maschera: a backslash in a string literal here would \
             read differently if standard_conforming_strings were off upstream; write the literal \
             as E'...' (a backslash doubled) or pass it as a parameter",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn escaped(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        escape_plain_literals(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn copy_text_format_default_null_is_left_out() {
        // psycopg2's copy_from and copy_to.
        assert_eq!(
            escaped(
                "COPY interactions (id,channel) FROM stdin WITH DELIMITER AS '\t' NULL AS '\\N'"
            ),
            "COPY interactions (id, channel) FROM STDIN DELIMITER '\t'"
        );
        assert_eq!(
            escaped("COPY interactions TO STDOUT (FORMAT text, NULL '\\N')"),
            "COPY interactions TO STDOUT (FORMAT text)"
        );
        // In CSV `\N` is not the default: it stays, and the text is refused.
        let csv = escaped("COPY interactions FROM STDIN WITH CSV NULL AS '\\N'");
        assert!(check_upstream_text(&csv).is_err(), "{csv}");
        let other = escaped("COPY interactions FROM STDIN NULL AS '\\x'");
        assert!(check_upstream_text(&other).is_err(), "{other}");
    }

    #[test]
    fn a_plain_literal_with_a_backslash_goes_upstream_as_an_escaped_literal() {
        assert_eq!(
            escaped("SELECT 'a\\', ' AS x; SET maschera.region TO south; --'"),
            "SELECT E'a\\\\', ' AS x; SET maschera.region TO south; --'"
        );
        assert_eq!(
            escaped("SELECT 1 WHERE 'x' LIKE 'a\\_%' ESCAPE '\\'"),
            "SELECT 1 WHERE 'x' LIKE E'a\\\\_%' ESCAPE E'\\\\'"
        );
        assert_eq!(escaped("SELECT E'a\\'b'"), "SELECT E'a\\'b'");
        assert_eq!(escaped("SELECT 'it''s'"), "SELECT 'it''s'");
    }

    #[test]
    fn the_rewrite_sends_the_literal_escaped_and_the_cache_never_fills_it_in() {
        let (role, catalog) = (
            super::super::fixture::role("sales"),
            super::super::fixture::catalog(),
        );
        let cache = super::super::RewriteCache::new(16);
        // The shape is cached from a text without a backslash first.
        for sql in [
            "SELECT 'x', ' AS y' FROM contacts",
            "SELECT 'a\\', ' AS x; SET maschera.region TO south; --' FROM contacts",
        ] {
            for rewritten in [
                super::super::rewrite(sql, &role, &catalog).unwrap(),
                cache.rewrite(sql, &role, &catalog).unwrap(),
            ] {
                let upstream = rewritten.sql(sql).into_owned();
                assert!(check_upstream_text(&upstream).is_ok(), "{upstream}");
                if sql.contains('\\') {
                    assert!(upstream.contains("E'a\\\\'"), "{upstream}");
                }
            }
        }
    }

    #[test]
    fn a_plain_literal_with_a_backslash_left_in_the_text_is_refused() {
        for sql in [
            "SELECT 'a\\'",
            "COPY (SELECT 1) TO STDOUT (NULL '\\')",
            "SELECT N'a\\'",
        ] {
            assert!(check_upstream_text(sql).is_err(), "{sql}");
        }
        for sql in [
            "SELECT E'a\\\\'",
            "SELECT $$a\\$$",
            "SELECT \"a\\b\" FROM t",
            "SELECT 'plain'",
        ] {
            assert!(check_upstream_text(sql).is_ok(), "{sql}");
        }
    }
}
