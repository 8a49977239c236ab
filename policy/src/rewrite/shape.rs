//! The shape of a statement text: a small lexer that follows PostgreSQL's token rules (with
//! `standard_conforming_strings` on) and lifts every string and number constant out into a numbered
//! slot `$100000`, `$100001`, ..., so that statements differing only in their constants share one
//! cached rewrite. The same lexer finds the slots in a rewritten text to put the constants back.
//! Not a parser: anything unusual (Unicode escapes, bit strings, constants glued to identifiers)
//! makes the text "unshaped" and it simply takes the uncached path.

/// Slot numbers start here: far above any real parameter (`$1` .. `$65535`).
pub(crate) const SLOT_BASE: usize = 100_000;

/// Whether `literal`, the text of a constant token (`'...'`, `E'...'`, a number, `$$...$$`), is a
/// plain string literal holding a backslash (which `backslash.rs` sends upstream as `E'...'`).
pub(crate) fn plain_with_backslash(literal: &str) -> bool {
    literal.starts_with('\'') && literal.contains('\\')
}

/// A text with its constants lifted out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape<'t> {
    /// The text with each constant replaced by its slot.
    pub text: String,
    /// The constants' original text, in slot order.
    pub literals: Vec<&'t str>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The end of a `'...'` constant starting at `start` (the quote), or `None` if unterminated.
fn quoted_end(bytes: &[u8], start: usize, backslash_escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of a `"..."` identifier.
fn identifier_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            if bytes.get(i + 1) == Some(&b'"') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The end of a dollar-quoted constant whose opening tag spans `start..tag_end`.
fn dollar_end(text: &str, start: usize, tag_end: usize) -> Option<usize> {
    let tag = &text[start..tag_end];
    text[tag_end..].find(tag).map(|at| tag_end + at + tag.len())
}

/// The end of a `/* */` comment (they nest in PostgreSQL).
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The end of a number starting at `start`: digits, optional fraction, optional exponent. `None`
/// when an identifier character follows (`0x1F`, `1_000`, `1abc`: left to the uncached path).
fn number_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1) != Some(&b'.') {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    if i < bytes.len() && (is_ident_char(bytes[i]) || bytes[i] == b'.') {
        return None;
    }
    Some(i)
}

/// One token the shape lexer cares about.
pub enum Token {
    /// A constant to lift, spanning the range.
    Constant,
    /// A `$n` parameter with its number.
    Parameter(usize),
    /// Anything else (copied as is).
    Other,
}

/// Lexes `text`, calling `emit` for each token with its range. Stops with `None` on anything the
/// lexer does not handle exactly like PostgreSQL. (Also the proxy's pinning check, to tell live
/// words from words in literals, quoted identifiers and comments.)
pub fn lex(text: &str, mut emit: impl FnMut(Token, usize, usize)) -> Option<()> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        match b {
            b'\'' => {
                i = quoted_end(bytes, i, false)?;
                emit(Token::Constant, start, i);
            }
            b'"' => {
                i = identifier_end(bytes, i)?;
                emit(Token::Other, start, i);
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(bytes.len(), |at| i + at + 1);
                emit(Token::Other, start, i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(bytes, i)?;
                emit(Token::Other, start, i);
            }
            b'$' => {
                let mut j = i + 1;
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                    if j < bytes.len() && is_ident_char(bytes[j]) {
                        return None;
                    }
                    let number = text[i + 1..j].parse().ok()?;
                    emit(Token::Parameter(number), start, j);
                    i = j;
                } else {
                    while j < bytes.len() && bytes[j] != b'$' && is_ident_char(bytes[j]) {
                        j += 1;
                    }
                    if bytes.get(j) != Some(&b'$') {
                        return None;
                    }
                    i = dollar_end(text, i, j + 1)?;
                    emit(Token::Constant, start, i);
                }
            }
            b'0'..=b'9' => {
                i = number_end(bytes, i)?;
                emit(Token::Constant, start, i);
            }
            b'.' if bytes.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                i = number_end(bytes, i + 1)?;
                emit(Token::Constant, start, i);
            }
            _ if is_ident_start(b) => {
                while i < bytes.len() && is_ident_char(bytes[i]) {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'\'') {
                    // E'...' is a constant with backslash escapes; any other prefix (U&, B, X, N, a
                    // type name without a space) is left to the uncached path.
                    if i - start != 1 || !(b == b'e' || b == b'E') {
                        return None;
                    }
                    i = quoted_end(bytes, i, true)?;
                    emit(Token::Constant, start, i);
                } else if bytes.get(i) == Some(&b'&') && i - start == 1 && (b == b'u' || b == b'U')
                {
                    return None;
                } else {
                    emit(Token::Other, start, i);
                }
            }
            _ => {
                i += 1;
                while i < bytes.len() && !text.is_char_boundary(i) {
                    i += 1;
                }
                emit(Token::Other, start, i);
            }
        }
    }
    Some(())
}

/// Lifts the constants out of `text`; `None` when the text is not plain enough to be shaped.
pub(crate) fn lift(text: &str) -> Option<Shape<'_>> {
    let mut shape = Shape {
        text: String::with_capacity(text.len() + 16),
        literals: Vec::new(),
    };
    let mut too_high = false;
    let mut backslash = false;
    lex(text, |token, start, end| match token {
        Token::Constant => {
            // Sent upstream as E'...' by the full path (`backslash.rs`): never filled in as is.
            backslash |= plain_with_backslash(&text[start..end]);
            shape.text.push('$');
            shape
                .text
                .push_str(&(SLOT_BASE + shape.literals.len()).to_string());
            shape.literals.push(&text[start..end]);
        }
        Token::Parameter(n) => {
            too_high |= n >= SLOT_BASE;
            shape.text.push_str(&text[start..end]);
        }
        Token::Other => shape.text.push_str(&text[start..end]),
    })?;
    (!too_high && !backslash).then_some(shape)
}

/// A rewritten text split at its slots, to be filled with another statement's constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// Text pieces; a slot sits between consecutive pieces.
    pieces: Vec<String>,
    /// The constant index of each slot (`pieces.len() - 1` of them).
    slots: Vec<usize>,
}

impl Template {
    /// Splits a rewritten text at its slot placeholders.
    pub(crate) fn new(rewritten: &str) -> Option<Template> {
        let mut template = Template {
            pieces: Vec::new(),
            slots: Vec::new(),
        };
        let mut last = 0;
        lex(rewritten, |token, start, end| {
            if let Token::Parameter(n) = token
                && n >= SLOT_BASE
            {
                template.pieces.push(rewritten[last..start].to_string());
                template.slots.push(n - SLOT_BASE);
                last = end;
            }
        })?;
        template.pieces.push(rewritten[last..].to_string());
        Some(template)
    }

    /// The text with each slot replaced by its constant; `None` if a slot has no constant.
    pub(crate) fn fill(&self, literals: &[&str]) -> Option<String> {
        let mut out =
            String::with_capacity(self.pieces.iter().map(String::len).sum::<usize>() + 32);
        for (index, piece) in self.pieces.iter().enumerate() {
            out.push_str(piece);
            if let Some(slot) = self.slots.get(index) {
                out.push_str(literals.get(*slot)?);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_lifted_and_everything_else_kept() {
        let shape = lift(
            "SELECT * FROM t WHERE a = 'x''y' AND b = 1.5e3 AND c = $1 -- 'no'\n AND d = $$z$$",
        )
        .unwrap();
        assert_eq!(
            shape.text,
            "SELECT * FROM t WHERE a = $100000 AND b = $100001 AND c = $1 -- 'no'\n AND d = $100002"
        );
        assert_eq!(shape.literals, ["'x''y'", "1.5e3", "$$z$$"]);
        let shape =
            lift("SELECT E'a\\'b', \"we'ird\", t1.c2 /* 'c' /* nested */ 'd' */ FROM t1").unwrap();
        assert_eq!(
            shape.text,
            "SELECT $100000, \"we'ird\", t1.c2 /* 'c' /* nested */ 'd' */ FROM t1"
        );
        assert_eq!(shape.literals, ["E'a\\'b'"]);
    }

    #[test]
    fn a_backslash_does_not_escape_in_standard_strings() {
        let mut constants = Vec::new();
        lex("SELECT 'a\\', b FROM t", |token, start, end| {
            if let Token::Constant = token {
                constants.push((start, end));
            }
        })
        .unwrap();
        assert_eq!(constants, [(7, 11)]);
        // Such a text is not shaped: its literal goes upstream as E'a\\' (`backslash.rs`).
        assert!(lift("SELECT 'a\\', b FROM t").is_none());
    }

    #[test]
    fn unusual_constants_are_not_shaped() {
        for text in [
            "SELECT U&'x'",
            "SELECT B'101'",
            "SELECT X'1F'",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 'open",
            "SELECT $100000",
            "SELECT $a$ open",
        ] {
            assert!(lift(text).is_none(), "{text}");
        }
    }

    #[test]
    fn templates_refill_slots_and_leave_parameters() {
        let template =
            Template::new("SELECT a FROM \"s\".\"t\" WHERE b = $100001 AND c = $1 AND d = $100000")
                .unwrap();
        assert_eq!(
            template.fill(&["'x'", "2"]).unwrap(),
            "SELECT a FROM \"s\".\"t\" WHERE b = 2 AND c = $1 AND d = 'x'"
        );
        assert!(template.fill(&["'x'"]).is_none());
        let quoted = Template::new("SELECT \"$100000\"").unwrap();
        assert_eq!(quoted.fill(&[]).unwrap(), "SELECT \"$100000\"");
    }
}
