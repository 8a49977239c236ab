//! Proof that the re-serialized text reads back as exactly the analysed tree, so that a serializer
//! quirk (an unescaped quote, a lost keyword or parenthesis) never lets PostgreSQL read something
//! else. Not for deciding what a role may do (the analyzer does) or for producing the text (the
//! sqlparser serializer does).
//!
//! Three ways to the same conclusion, "sqlparser reads the upstream text `S` back as the analysed
//! tree `A'`"; anything that passes none is refused with 0A000:
//!
//! 1. **Token check** (a few microseconds): tokenize `S` with sqlparser's tokenizer (no parser) and
//!    compare its tokens, one by one, with the client's own tokens `T` with the rewriter's name edits
//!    applied. The tree `A` was parsed from `T`, and `A'` is `A` with exactly those edits, because
//!    every change the analyzer makes to a tree goes through [`Edits`]: a table name replaced by
//!    the role's view or the schema-qualified base table ([`NameEdit`], with `AS "table"` added when
//!    the name had no alias), or some other change (SHOW's variable, COPY's source, a
//!    `schema.table.column` shortened to `table.column`), which turns this check off. Why equal tokens
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
//!    the tokens differ and fall back to the full check, never the other way.
//! 2. **Text check** (cheaper still, tried before the token check, and only a shortcut to its
//!    conclusion): `S` is byte for byte the client's text (without surrounding whitespace and
//!    `;`) with each edited name's text replaced by the new name as the serializer writes it
//!    (plus ` AS "table"`), which must begin and end with `"` and tokenize, on its own, as the
//!    edit's identifiers. Every edited name must stand between delimiters: whitespace, `(` or `,`
//!    before it, whitespace, `)`, `,`, `;` or the end after it. sqlparser's tokenizer scans left to
//!    right, taking the longest token; its look-ahead past a token only follows fixed patterns
//!    (`e+` and digits of an exponent, `U&'`, `->`, `._`, `\r\n`), none of which runs through
//!    those delimiters, and it remembers only the previous token, which matters only when the next
//!    character is a `.` or a digit. So the tokens before an edited
//!    name end at the delimiter in both texts, the new name's tokens end at its closing quote (the
//!    next character is a delimiter, not a second `"`), and from the delimiter after it the text
//!    and the tokens are the same again: the tokens of `S` are the client's tokens with the edits
//!    applied, which is what the token check compares.
//! 3. **Full check**: parse `S` again with sqlparser and compare the trees.
//!
//! Debug builds (tests, the fuzz target) run the slower checks as well whenever a faster one
//! accepts and assert that they accept too.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, TokenizerError, Whitespace};

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
    /// A change other than a [`NameEdit`] (SHOW's variable, COPY's source, a shortened column
    /// reference): only the full check.
    pub other: bool,
}

/// The client's tokens of a one-statement text, without whitespace and the surrounding `;`, when
/// the token check may use them.
pub(crate) struct ClientTokens<'t> {
    text: &'t str,
    tokens: Vec<TokenWithSpan>,
}

impl<'t> ClientTokens<'t> {
    /// `None` when the text holds a token the check must not skip over (a comment, `:`, `@`) or
    /// more than one statement.
    pub(crate) fn new(text: &'t str, tokens: &[TokenWithSpan]) -> Option<Self> {
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
        Some(Self {
            text,
            tokens: significant,
        })
    }
}

/// Accepts `sql`, the serialization of `statement`, when it provably reads back as `statement`.
pub(crate) fn verify(
    sql: &str,
    statement: &Statement,
    client: Option<&ClientTokens<'_>>,
    edits: &Edits,
) -> Result<(), Refusal> {
    let client = client.filter(|_| !edits.other && !matches!(statement, Statement::Copy { .. }));
    let faithful = match client {
        Some(client) if same_text(client, &edits.names, sql) => {
            debug_assert!(
                token_check(client, &edits.names, sql) && reparses_to(sql, statement),
                "text check accepted a text that does not tokenize or parse back: {sql}"
            );
            true
        }
        // The tokens of `sql` serve the token check and, if it fails, the full check.
        Some(client) => match tokenize(sql, client.tokens.len() * 2 + 16) {
            Ok(tokens) if same_tokens(&client.tokens, &edits.names, &tokens) => {
                debug_assert!(
                    reparses_to(sql, statement),
                    "token check accepted a text that does not parse back: {sql}"
                );
                true
            }
            Ok(tokens) => parses_to(tokens, statement),
            Err(_) => false,
        },
        None => reparses_to(sql, statement),
    };
    if faithful {
        Ok(())
    } else {
        Err(Refusal::unsupported(
            "statement not supported by the Maschera parser: it does not re-serialize faithfully",
        ))
    }
}

/// sqlparser's tokens of `sql`, as its parser reads them (escapes resolved).
fn tokenize(sql: &str, capacity: usize) -> Result<Vec<TokenWithSpan>, TokenizerError> {
    let mut tokens = Vec::with_capacity(capacity);
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location_into_buf(&mut tokens)
        .map(|()| tokens)
}

/// The full check: `sql` parses to exactly one statement, equal to `statement`.
fn reparses_to(sql: &str, statement: &Statement) -> bool {
    tokenize(sql, sql.len() / 2).is_ok_and(|tokens| parses_to(tokens, statement))
}

/// The full check on tokens already made.
fn parses_to(tokens: Vec<TokenWithSpan>, statement: &Statement) -> bool {
    // The recursion limit the statement was parsed with.
    let dialect = PostgreSqlDialect {};
    match super::limits::parser(&dialect, &super::limits::limits())
        .with_tokens_with_locations(tokens)
        .parse_statements()
    {
        Ok(reparsed) => reparsed.len() == 1 && &reparsed[0] == statement,
        Err(_) => false,
    }
}

/// The token check on a text.
fn token_check(client: &ClientTokens<'_>, edits: &[NameEdit], sql: &str) -> bool {
    tokenize(sql, client.tokens.len() * 2 + 16)
        .is_ok_and(|tokens| same_tokens(&client.tokens, edits, &tokens))
}

/// Whether `sql` is the client's text itself (without the surrounding whitespace and `;`) with
/// each edited name's text replaced by the new name's, which gives the tokens [`same_tokens`]
/// requires without tokenizing `sql` (see the module doc).
fn same_text(client: &ClientTokens<'_>, edits: &[NameEdit], sql: &str) -> bool {
    let text = client.text;
    let (Some(first), Some(last)) = (client.tokens.first(), client.tokens.last()) else {
        return false;
    };
    let (Some(start), Some(end)) = (offset(text, first.span.start), offset(text, last.span.end))
    else {
        return false;
    };
    if text[start..].starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
        return false;
    }
    let mut sites = Vec::with_capacity(edits.len());
    for edit in edits {
        let Some(site) = edit_site(text, edit) else {
            return false;
        };
        sites.push(site);
    }
    sites.sort_unstable_by_key(|site| site.0);
    let mut rest = sql;
    let mut at = start;
    for (site_start, site_end, edit) in sites {
        if site_start < at || site_end > end {
            return false;
        }
        let Some(after) = rest.strip_prefix(&text[at..site_start]) else {
            return false;
        };
        let Some(after) = strip_replacement(after, edit) else {
            return false;
        };
        rest = after;
        at = site_end;
    }
    rest == &text[at..end]
}

/// The byte range of an edited name in the client's text, when it stands between delimiters that
/// end any token: whitespace, `(` or `,` before it; whitespace, `)`, `,`, `;` or the end after it.
fn edit_site<'e>(text: &str, edit: &'e NameEdit) -> Option<(usize, usize, &'e NameEdit)> {
    let ObjectNamePart::Identifier(first) = edit.original.0.first()? else {
        return None;
    };
    let ObjectNamePart::Identifier(last) = edit.original.0.last()? else {
        return None;
    };
    let start = offset(text, first.span.start)?;
    let end = offset(text, last.span.end)?;
    let before = text[..start].chars().next_back()?;
    let after = text[end..].chars().next();
    let delimited = matches!(before, ' ' | '\t' | '\n' | '(' | ',')
        && matches!(
            after,
            None | Some(' ' | '\t' | '\n' | '\r' | ')' | ',' | ';')
        );
    (start < end && delimited).then_some((start, end, edit))
}

/// `text` after the edit's replacement (and added alias) as the serializer writes them, if it
/// starts with them and they begin and end with a quote and tokenize as the edit's identifiers.
fn strip_replacement<'s>(text: &'s str, edit: &NameEdit) -> Option<&'s str> {
    let mut written = edit.replacement.to_string();
    if let Some(alias) = &edit.alias {
        written.push_str(" AS ");
        written.push_str(&alias.to_string());
    }
    if !(written.starts_with('"') && written.ends_with('"')) {
        return None;
    }
    let rest = text.strip_prefix(written.as_str())?;
    let tokens = tokenize(&written, 8).ok()?;
    let mut tokens = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| **t != Token::Whitespace(Whitespace::Space));
    (replacement_follows(&mut tokens, edit) && tokens.next().is_none()).then_some(rest)
}

/// The byte offset of a tokenizer location (1-based line and column in characters; lines end at
/// `\n`) in `text`.
fn offset(text: &str, at: sqlparser::tokenizer::Location) -> Option<usize> {
    let mut line_start = 0;
    for _ in 1..at.line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let line = &text[line_start..];
    match line.char_indices().nth(column) {
        Some((i, _)) => Some(line_start + i),
        None => (line.chars().count() == column).then_some(text.len()),
    }
}

/// Whether `tokens` (of the serialized text) are the client's tokens with `edits` applied.
fn same_tokens(client: &[TokenWithSpan], edits: &[NameEdit], tokens: &[TokenWithSpan]) -> bool {
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
    struct Prepared<'t> {
        sql: String,
        statement: Statement,
        client: Option<ClientTokens<'t>>,
        edits: Edits,
    }

    fn prepare<'t>(role: &str, sql: &'t str) -> Prepared<'t> {
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

    impl Prepared<'_> {
        fn text_check(&self, sql: &str) -> bool {
            !self.edits.other
                && self
                    .client
                    .as_ref()
                    .is_some_and(|c| same_text(c, &self.edits.names, sql))
        }

        fn token_check(&self, sql: &str) -> bool {
            !self.edits.other
                && self
                    .client
                    .as_ref()
                    .is_some_and(|c| token_check(c, &self.edits.names, sql))
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
                assert!(prepared.text_check(&prepared.sql), "{sql}");
            } else {
                assert!(!prepared.text_check(&prepared.sql), "{sql}");
            }
        }
        // Only SHOW (its variable is rewritten), the catalog query naming schema `public` (the
        // role's view schema added: catalog_schema.rs) and the two statements with a keyword in
        // lower case (`interval`, `::timestamptz`), which the serializer spells in upper case, take
        // the full check.
        assert_eq!(passed, fixture::CORPUS.len() - 4);
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
            assert!(prepared.token_check(&prepared.sql), "{sql}");
            assert!(prepared.text_check(&prepared.sql), "{sql}");
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
        let shortened = prepare("sales", "SELECT public.contacts.city FROM public.contacts");
        assert!(shortened.edits.other);
        assert!(reparses_to(&shortened.sql, &shortened.statement));
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
            assert!(!prepared.text_check(wrong), "{client} -> {wrong}");
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

    #[test]
    fn names_glued_to_other_tokens_skip_the_text_check() {
        for sql in [
            "SELECT * FROM contacts\"c\" WHERE id = 1",
            "SELECT * FROM\"contacts\" WHERE id = 1",
            "SELECT c.city FROM contacts AS c,deals WHERE c.id = 1",
        ] {
            let prepared = prepare("sales", sql);
            let written = prepared.sql.clone();
            assert!(reparses_to(&written, &prepared.statement), "{sql}");
            assert!(!prepared.text_check(&written), "{sql} -> {written}");
        }
        // Between delimiters, on several lines, with non-ASCII text before the name.
        let sql = "SELECT 'é' AS \"ü\",\n  city\nFROM\n  contacts\nWHERE (id = 1)";
        let prepared = prepare("sales", sql);
        let written = sql.replace("contacts", "\"maschera_sales\".\"contacts\"");
        assert!(prepared.text_check(&written), "{written}");
        assert!(prepared.token_check(&written), "{written}");
        assert!(!prepared.text_check(&written.replace("  city", " city")));
    }
}
