//! Which pinning words of a statement text are live SQL that creates session state, decided from the
//! statement's tokens (the rewriter's lexer, `policy::rewrite::lex`) rather than its raw
//! words: string literals (`'...'`, `E'...'`, `$tag$...$tag$`), quoted identifiers and comments are
//! skipped, and a word pins only where it can create state: `TEMP`/`TEMPORARY` after `CREATE`,
//! `GLOBAL`, `LOCAL`, `OR REPLACE` or `INTO` (`SELECT ... INTO TEMP`), `HOLD` after `WITH`, `LISTEN`
//! as a statement's first word; `set_config`, the session advisory lock functions and `pg_temp`
//! wherever they appear outside quotes. So pgjdbc's `getTables`, whose query names
//! `'TEMPORARY TABLE'`, pins nothing.
//! It runs only on statements where `pinning`'s word check found a pinning word (the hot path pays
//! nothing more). Where the tokens cannot be trusted the caller falls back to that word check
//! (pins): text the lexer does not handle exactly (unterminated literals or comments, `U&'...'`,
//! bit strings), a backslash in a plain literal (`standard_conforming_strings = off` would end it
//! elsewhere), and `DO` blocks (their body is code that runs now; `pinning` pins every one anyway).
//! Not for: state created out of sight of the text (inside a function: see `hidden_state`).

use policy::rewrite::{LexToken, lex};

/// Where a pinning word counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Only directly after one of these words.
    After(&'static [&'static str]),
    /// Only as the first word of a statement.
    First,
    /// Anywhere outside literals, quoted identifiers and comments.
    Anywhere,
}

/// The reason of the first word of `sql` that counts, `place` telling where each pinning word
/// counts (`None`: not a pinning word); `Err` when the tokens cannot be trusted.
pub fn live<R: Copy>(
    sql: &[u8],
    place: impl Fn(&[u8]) -> Option<(R, Place)>,
) -> Result<Option<R>, Untrusted> {
    let text = std::str::from_utf8(sql).map_err(|_| Untrusted)?;
    let mut previous: Option<&str> = None;
    let mut first = true;
    let mut found = None;
    let mut untrusted = false;
    lex(text, |token, start, end| {
        if found.is_some() || untrusted {
            return;
        }
        let token_text = &text[start..end];
        let word = match token {
            LexToken::Constant => {
                untrusted = token_text.starts_with('\'') && token_text.contains('\\');
                None
            }
            LexToken::Parameter(_) => None,
            LexToken::Other => {
                let lead = token_text.as_bytes().first().copied().unwrap_or_default();
                if lead.is_ascii_whitespace()
                    || token_text.starts_with("--")
                    || token_text.starts_with("/*")
                {
                    return;
                }
                if lead == b';' {
                    previous = None;
                    first = true;
                    return;
                }
                (lead.is_ascii_alphabetic() || lead == b'_' || lead >= 0x80).then_some(token_text)
            }
        };
        let Some(word) = word else {
            previous = None;
            first = false;
            return;
        };
        if first && word.eq_ignore_ascii_case("do") {
            untrusted = true;
            return;
        }
        if let Some((reason, at)) = place(word.as_bytes()) {
            let counts = match at {
                Place::Anywhere => true,
                Place::First => first,
                Place::After(before) => {
                    previous.is_some_and(|p| before.iter().any(|b| p.eq_ignore_ascii_case(b)))
                }
            };
            if counts {
                found = Some(reason);
            }
        }
        previous = Some(word);
        first = false;
    })
    .ok_or(Untrusted)?;
    if untrusted {
        return Err(Untrusted);
    }
    Ok(found)
}

/// The statement's tokens cannot be trusted to tell live words (see the module doc).
#[derive(Debug, PartialEq, Eq)]
pub struct Untrusted;

#[cfg(test)]
mod tests {
    use super::*;

    fn place(word: &[u8]) -> Option<(&'static str, Place)> {
        let word = word.to_ascii_lowercase();
        match &word[..] {
            b"temp" | b"temporary" => Some(("temp", Place::After(&["create", "local", "into"]))),
            b"listen" => Some(("listen", Place::First)),
            b"pg_temp" => Some(("pg_temp", Place::Anywhere)),
            _ => None,
        }
    }

    #[test]
    fn words_count_only_outside_quotes_and_comments_and_in_place() {
        for (sql, expected) in [
            ("CREATE TEMP TABLE t (a int)", Ok(Some("temp"))),
            (
                "create /* a */ temporary -- b\n table t (a int)",
                Ok(Some("temp")),
            ),
            ("SELECT 1; create local temp table t ()", Ok(Some("temp"))),
            ("SELECT * INTO TEMP t FROM x", Ok(Some("temp"))),
            ("select 1; listen x", Ok(Some("listen"))),
            ("CREATE TABLE pg_temp.t ()", Ok(Some("pg_temp"))),
            ("SELECT CASE WHEN x THEN 'TEMPORARY TABLE' END", Ok(None)),
            ("SELECT E'it''s \\' temp', $$ create temp $$, $1", Ok(None)),
            ("SELECT \"create\" temp FROM x /* create temp */", Ok(None)),
            ("SELECT $q$ $$ create temp $q$, 'listen'", Ok(None)),
            ("SELECT temp FROM readings WHERE listen", Ok(None)),
            ("SELECT 'a\\'; create temp table t()", Err(Untrusted)),
            ("SELECT 'unterminated create temp", Err(Untrusted)),
            ("/* create temp", Err(Untrusted)),
            ("DO $$ BEGIN CREATE TEMP TABLE t (); END $$", Err(Untrusted)),
        ] {
            assert_eq!(live(sql.as_bytes(), place), expected, "{sql}");
        }
    }
}
