//! Proof that the re-serialized text reads back as exactly the analysed tree, so that a serializer
//! quirk (an unescaped quote, a lost keyword or parenthesis) never lets PostgreSQL read something
//! else. Not for deciding what a role may do (the analyzer does) or for producing the text (the
//! sqlparser serializer does).
//!
//! Two ways to the same conclusion, "sqlparser reads the upstream text `S` back as the analysed tree
//! `A'`"; anything that passes neither is refused with 0A000:
//!
//! 1. **Token check** (cheap, tried first): tokenize `S` with sqlparser's tokenizer (no parser) and
//!    compare its tokens, one by one, with the client's own tokens `T` with the rewriter's name edits
//!    applied. The tree `A` was parsed from `T`, and `A'` is `A` with exactly those edits, because
//!    every change the analyzer makes to a tree goes through [`Edits`]: a table name replaced by
//!    the role's view or the schema-qualified base table ([`NameEdit`], with `AS "table"` added when
//!    the name had no alias), or some other change, which turns this check off. Why equal tokens
//!    give an equal tree:
//!    - sqlparser's parser sees only the token sequence (tokens compare by value: a string's
//!      unescaped content, an identifier's text and quote style, a keyword's spelling, so `E'..'`,
//!      dollar quoting, `""` and `''` escapes are all compared after unescaping, as the parser sees
//!      them). It skips whitespace except in a few places, none reachable here: comments (optimizer
//!      hints in the PostgreSQL dialect), `:name` / `@name` placeholders, and COPY's inline data.
//!      Texts with a comment, `:` or `@` token, COPY statements and several statements take the
//!      full check.
//!    - At an edit, `T` holds the original name (identifiers separated by periods) in a table
//!      position of a plain `FROM`/`JOIN`/DML target (no arguments, hints, sample or version clause:
//!      the analyzer refuses those), and `S` holds the new name, two quoted identifiers, followed by
//!      the same tokens, or by `AS "table"` and then the same tokens where the name had no alias.
//!      The parser reads a table name as identifiers separated by periods and then an optional
//!      alias, deciding by the tokens that follow, so it reads `S` as `A` with the same edits: `A'`.
//!
//!    Spelling differences (`select` written in lower case, `!=`, `timestamptz`, a comment) make
//!    the tokens differ and fall back to the full check, never the other way. Debug builds (tests,
//!    the fuzz target) run the full check as well whenever the token check accepts and assert that
//!    it accepts too.
//! 2. **Full check**: parse `S` again with sqlparser and compare the trees.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use super::refusal::Refusal;

/// One table name the analyzer replaced in the tree.
#[derive(Debug)]
pub(crate) struct NameEdit {
    /// The name as parsed from the client's text (its identifiers carry their token positions).
    pub original: ObjectName,
    pub replacement: ObjectName,
    /// The alias added after the replacement (`AS "table"`), where the name had none.
    pub alias: Option<Ident>,
}

/// Every change the analyzer made to a statement's tree.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    pub names: Vec<NameEdit>,
    /// A change other than a [`NameEdit`] (SHOW's variable, COPY's source): only the full check.
    pub other: bool,
}

/// The client's tokens of a one-statement text, without whitespace and the surrounding `;`, when
/// the token check may use them.
pub(crate) struct ClientTokens(Vec<TokenWithSpan>);

impl ClientTokens {
    /// `None` when the text holds a token the check must not skip over (a comment, `:`, `@`) or
    /// more than one statement.
    pub(crate) fn new(tokens: &[TokenWithSpan]) -> Option<Self> {
        let mut significant = Vec::with_capacity(tokens.len());
        for token in tokens {
            match &token.token {
                Token::Whitespace(Whitespace::Space | Whitespace::Tab | Whitespace::Newline) => {}
                Token::Whitespace(_) | Token::Colon | Token::AtSign => return None,
                _ => significant.push(token.clone()),
            }
        }
        let start = significant
            .iter()
            .position(|t| t.token != Token::SemiColon)
            .unwrap_or(significant.len());
        let end = significant
            .iter()
            .rposition(|t| t.token != Token::SemiColon)
            .map_or(start, |i| i + 1);
        significant.truncate(end);
        significant.drain(..start);
        if significant.iter().any(|t| t.token == Token::SemiColon) {
            return None;
        }
        Some(Self(significant))
    }
}

/// Accepts `sql`, the serialization of `statement`, when it provably reads back as `statement`.
pub(crate) fn verify(
    sql: &str,
    statement: &Statement,
    client: Option<&ClientTokens>,
    edits: &Edits,
) -> Result<(), Refusal> {
    let token_check = !edits.other
        && !matches!(statement, Statement::Copy { .. })
        && client.is_some_and(|client| same_tokens(&client.0, &edits.names, sql));
    if token_check {
        debug_assert!(
            reparses_to(sql, statement),
            "token check accepted a text that does not parse back: {sql}"
        );
        return Ok(());
    }
    if reparses_to(sql, statement) {
        Ok(())
    } else {
        Err(Refusal::unsupported(
            "statement not supported by the Maschera parser: it does not re-serialize faithfully",
        ))
    }
}

/// The full check: `sql` parses to exactly one statement, equal to `statement`.
fn reparses_to(sql: &str, statement: &Statement) -> bool {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(reparsed) => reparsed.len() == 1 && &reparsed[0] == statement,
        Err(_) => false,
    }
}

/// Whether the tokens of `sql` are the client's tokens with `edits` applied.
fn same_tokens(client: &[TokenWithSpan], edits: &[NameEdit], sql: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location()
    else {
        return false;
    };
    let mut serialized = tokens.iter().map(|t| &t.token).filter(|t| {
        !matches!(
            t,
            Token::Whitespace(Whitespace::Space | Whitespace::Tab | Whitespace::Newline)
        )
    });
    let mut applied = 0;
    let mut i = 0;
    while i < client.len() {
        let at = client[i].span.start;
        if let Some(edit) = edits
            .iter()
            .find(|e| first_span_start(&e.original) == Some(at))
        {
            let Some(consumed) = name_tokens(&client[i..], &edit.original) else {
                return false;
            };
            i += consumed;
            if !replacement_follows(&mut serialized, edit) {
                return false;
            }
            applied += 1;
        } else {
            if serialized.next() != Some(&client[i].token) {
                return false;
            }
            i += 1;
        }
    }
    applied == edits.len() && serialized.next().is_none()
}

fn first_span_start(name: &ObjectName) -> Option<sqlparser::tokenizer::Location> {
    match name.0.first()? {
        ObjectNamePart::Identifier(ident) => Some(ident.span.start),
        ObjectNamePart::Function(_) => None,
    }
}

fn word(ident: &Ident) -> Token {
    Token::make_word(&ident.value, ident.quote_style)
}

/// How many client tokens spell `name` (identifiers separated by periods), if they do.
fn name_tokens(client: &[TokenWithSpan], name: &ObjectName) -> Option<usize> {
    let mut i = 0;
    for (n, part) in name.0.iter().enumerate() {
        let ObjectNamePart::Identifier(ident) = part else {
            return None;
        };
        if n > 0 {
            (client.get(i)?.token == Token::Period).then_some(())?;
            i += 1;
        }
        let token = client.get(i)?;
        match &token.token {
            Token::Word(w) if w.value == ident.value && w.quote_style == ident.quote_style => {}
            _ => return None,
        }
        i += 1;
    }
    (i > 0).then_some(i)
}

/// Consumes the tokens of the edit's replacement name and added alias from `serialized`.
fn replacement_follows<'t>(
    serialized: &mut impl Iterator<Item = &'t Token>,
    edit: &NameEdit,
) -> bool {
    for (n, part) in edit.replacement.0.iter().enumerate() {
        let ObjectNamePart::Identifier(ident) = part else {
            return false;
        };
        if n > 0 && serialized.next() != Some(&Token::Period) {
            return false;
        }
        if serialized.next() != Some(&word(ident)) {
            return false;
        }
    }
    match &edit.alias {
        None => true,
        Some(alias) => {
            serialized.next() == Some(&Token::make_keyword("AS"))
                && serialized.next() == Some(&word(alias))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{analyzer::Analyzer, fixture, parse};

    /// A statement as the rewriter prepares it: the rewritten tree, its serialization, the client's
    /// tokens and the edits.
    struct Prepared {
        sql: String,
        statement: Statement,
        client: Option<ClientTokens>,
        edits: Edits,
    }

    fn prepare(role: &str, sql: &str) -> Prepared {
        let role = fixture::role(role);
        let catalog = fixture::catalog();
        let (mut statements, client) = parse(sql, &role).expect("parses");
        assert_eq!(statements.len(), 1, "{sql}");
        let mut statement = statements.pop().expect("one statement");
        let mut analyzer = Analyzer::new(&role, &catalog);
        analyzer.statement(&mut statement).expect("accepted");
        Prepared {
            sql: statement.to_string(),
            statement,
            client,
            edits: analyzer.edits,
        }
    }

    impl Prepared {
        fn token_check(&self, sql: &str) -> bool {
            !self.edits.other
                && self
                    .client
                    .as_ref()
                    .is_some_and(|c| same_tokens(&c.0, &self.edits.names, sql))
        }
    }

    #[test]
    fn the_corpus_mostly_passes_the_token_check() {
        let mut passed = 0;
        for (role, sql) in fixture::CORPUS {
            let prepared = prepare(role, sql);
            if prepared.token_check(&prepared.sql) {
                passed += 1;
                assert!(reparses_to(&prepared.sql, &prepared.statement), "{sql}");
            }
        }
        // Only SHOW (its variable is rewritten) and the two statements with a keyword in lower
        // case (`interval`, `::timestamptz`), which the serializer spells in upper case, take the
        // full check.
        assert_eq!(passed, fixture::CORPUS.len() - 3);
    }

    #[test]
    fn renamed_tables_and_added_aliases_pass_the_token_check() {
        for (role, sql) in [
            (
                "sales",
                "SELECT c.first_name FROM contacts c WHERE c.id = 1",
            ),
            (
                "sales",
                "SELECT first_name FROM public.contacts WHERE id = 1",
            ),
            ("sales", "SELECT city FROM \"contacts\" WHERE id = $1"),
            ("sales", "DELETE FROM deals WHERE id = 99"),
            (
                "support",
                "UPDATE tickets SET status = 'closed' WHERE id = 12",
            ),
            (
                "sales",
                "INSERT INTO interactions (contact_id, channel) VALUES (7, 'call')",
            ),
        ] {
            let prepared = prepare(role, sql);
            assert!(!prepared.edits.names.is_empty(), "{sql}");
            assert!(
                prepared.token_check(&prepared.sql),
                "{sql} -> {}",
                prepared.sql
            );
        }
    }

    #[test]
    fn comments_placeholders_copy_and_show_take_the_full_check() {
        for sql in [
            "SELECT 1 -- note",
            "SELECT /* note */ 1",
            "SELECT 1; SELECT 2",
        ] {
            let (_, client) = parse(sql, &fixture::role("sales")).expect("parses");
            assert!(client.is_none() || sql.contains(';'), "{sql}");
        }
        let (_, client) = parse("SELECT 1; SELECT 2", &fixture::role("sales")).expect("parses");
        assert!(client.is_none());
        assert!(prepare("sales", "SHOW TimeZone").edits.other);
        assert!(
            prepare("sales", "COPY (SELECT city FROM contacts) TO STDOUT")
                .edits
                .other
        );
    }

    /// A serializer quirk is simulated by a wrong text for the analysed tree: the token check must
    /// not accept it, and `verify` must refuse it, exactly as the full re-parse alone did.
    #[test]
    fn unfaithful_texts_are_refused_as_the_full_check_refuses_them() {
        let cases: &[(&str, &str, &str)] = &[
            // An unescaped quote turns the rest into SQL.
            ("sales", "SELECT 'it''s' AS x", "SELECT 'it's' AS x"),
            (
                "sales",
                "SELECT city FROM contacts WHERE city = 'a'' OR true --'",
                "SELECT city FROM \"maschera_sales\".\"contacts\" WHERE city = 'a' OR true --'",
            ),
            // Dollar quoting and E'' strings must keep their content.
            ("sales", "SELECT $$a'b$$ AS x", "SELECT 'a'b' AS x"),
            ("sales", "SELECT $t$a$$b$t$ AS x", "SELECT $$a$$b$$ AS x"),
            ("sales", "SELECT E'a\\'b' AS x", "SELECT 'a\\'b' AS x"),
            ("sales", "SELECT E'a\\\\' AS x", "SELECT E'a\\' AS x"),
            // Unicode escapes: sqlparser reads U&"ph\006fne" as `U & "ph\006fne"`.
            (
                "marketing",
                "SELECT U&\"ph\\006fne\" FROM contacts",
                "SELECT \"phone\" FROM \"maschera_marketing\".\"contacts\"",
            ),
            // A comment swallowing the rest.
            (
                "sales",
                "SELECT '--' AS x, 1 AS y",
                "SELECT -- AS x, 1 AS y",
            ),
            (
                "sales",
                "SELECT '/*' AS x, 1 AS y",
                "SELECT /* AS x, 1 AS y",
            ),
            // Operator precedence and nested casts.
            ("sales", "SELECT (1 + 2) * 3 AS x", "SELECT 1 + 2 * 3 AS x"),
            ("sales", "SELECT - (1 - 2) AS x", "SELECT - 1 - 2 AS x"),
            (
                "sales",
                "SELECT ((1)::TEXT)::INT AS x",
                "SELECT 1::TEXT::INT AS x",
            ),
            (
                "sales",
                "SELECT NOT (true = false) AS x",
                "SELECT NOT true = false AS x",
            ),
            // Identifiers that need quotes.
            ("sales", "SELECT 1 AS \"select\"", "SELECT 1 AS select"),
            ("sales", "SELECT 1 AS \"A b\"", "SELECT 1 AS A b"),
            ("sales", "SELECT 1 AS \"a\"\"b\"", "SELECT 1 AS \"a\"b\""),
            // A lost keyword.
            (
                "sales",
                "SELECT DISTINCT city FROM contacts",
                "SELECT city FROM \"maschera_sales\".\"contacts\"",
            ),
            (
                "sales",
                "SELECT city FROM contacts WHERE NOT id = 1",
                "SELECT city FROM \"maschera_sales\".\"contacts\" WHERE id = 1",
            ),
            // A renamed table printed without its quotes, or the added alias lost.
            (
                "sales",
                "SELECT first_name FROM contacts",
                "SELECT first_name FROM maschera_sales.contacts",
            ),
            (
                "sales",
                "SELECT id FROM contacts",
                "SELECT id FROM contacts",
            ),
        ];
        for (role, client, wrong) in cases {
            let prepared = prepare(role, client);
            assert!(
                reparses_to(&prepared.sql, &prepared.statement),
                "{client}: the real serialization is faithful"
            );
            assert!(!prepared.token_check(wrong), "{client} -> {wrong}");
            assert!(
                !reparses_to(wrong, &prepared.statement),
                "{client} -> {wrong}"
            );
            let refusal = verify(
                wrong,
                &prepared.statement,
                prepared.client.as_ref(),
                &prepared.edits,
            )
            .expect_err(wrong);
            assert_eq!(
                refusal.sqlstate,
                crate::rewrite::SqlState::FeatureNotSupported
            );
        }
    }
}
