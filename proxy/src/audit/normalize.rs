//! Statement text safe for the access log: every literal (strings, numbers, dollar-quoted bodies, bit
//! and byte strings) replaced by a placeholder `$n`, comments removed, whitespace collapsed.
//! Not for: parsing or rewriting statements (the policy crate does); this only tokenizes.
//!
//! Placeholders continue after the highest `$n` the statement already uses, as `pg_stat_statements`
//! does. Text the tokenizer rejects is not logged at all: the result is then `None`.

use policy::rewrite::limits::is_literal;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// The statement with its literals replaced, or `None` when it cannot be tokenized.
pub fn normalize(sql: &str) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut next = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<u32>().ok()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(sql.len());
    let mut space = false;
    for token in &tokens {
        let text = match token {
            Token::Whitespace(Whitespace::Space | Whitespace::Tab | Whitespace::Newline) => {
                space = true;
                continue;
            }
            Token::Whitespace(_) => {
                // Comments can hold anything: drop them.
                space = true;
                continue;
            }
            Token::EOF => continue,
            Token::Word(_) | Token::Placeholder(_) => token.to_string(),
            Token::Char(c) if c.is_ascii_punctuation() => c.to_string(),
            Token::Char(_) => "?".to_string(),
            t if is_literal(t) => {
                next += 1;
                format!("${next}")
            }
            other => other.to_string(),
        };
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push_str(&text);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_numbered_placeholders() {
        assert_eq!(
            normalize("SELECT name FROM customers WHERE email = 'anna@example.it' AND id > 42")
                .as_deref(),
            Some("SELECT name FROM customers WHERE email = $1 AND id > $2")
        );
        assert_eq!(
            normalize("UPDATE c SET note = $1 WHERE id = 7 -- 'hidden'").as_deref(),
            Some("UPDATE c SET note = $1 WHERE id = $2"),
            "existing parameters are kept, numbering continues, comments go"
        );
        assert_eq!(
            normalize("SELECT \"Email\" FROM t").as_deref(),
            Some("SELECT \"Email\" FROM t")
        );
    }

    #[test]
    fn no_literal_survives() {
        let secrets = [
            "SELECT * FROM c WHERE ssn = 'RSSMRA80A01H501U'",
            "SELECT * FROM c WHERE ssn = E'RSSMRA80A01H501U\\n'",
            "SELECT * FROM c WHERE ssn = U&'RSSMRA80A01H501U'",
            "SELECT * FROM c WHERE ssn = $$RSSMRA80A01H501U$$",
            "SELECT * FROM c WHERE ssn = $tag$RSSMRA80A01H501U$tag$",
            "SELECT * FROM c WHERE ssn = N'RSSMRA80A01H501U'",
            "SELECT * FROM c WHERE ssn = X'DEADBEEF' OR b = B'1010101'",
            "INSERT INTO c (ssn, iban) VALUES ('RSSMRA80A01H501U', 'IT60X0542811101000000123456')",
            "SELECT * FROM c /* RSSMRA80A01H501U */ WHERE phone = 3331234567",
            "SELECT * FROM c WHERE born = DATE '1980-01-01' AND income > 1234.56e3",
            "SELECT * FROM c WHERE tags @> '{RSSMRA80A01H501U}' AND x = -3331234567",
            "SELECT * FROM c WHERE ssn = 'it''s RSSMRA80A01H501U'",
        ];
        for sql in secrets {
            let out = normalize(sql).expect("tokenizes");
            for leaked in [
                "RSSMRA80A01H501U",
                "IT60X0542811101000000123456",
                "DEADBEEF",
                "1010101",
                "3331234567",
                "1980",
                "1234",
                "it''s",
                "it's",
            ] {
                assert!(
                    !out.contains(leaked),
                    "{leaked} survived in {out:?} (from {sql:?})"
                );
            }
            assert!(out.contains("$1"), "{out}");
        }
    }

    #[test]
    fn untokenizable_text_is_not_logged() {
        assert_eq!(normalize("SELECT 'unterminated RSSMRA80A01H501U"), None);
    }
}
