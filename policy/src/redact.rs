//! The `redact` action, defined once: the SQL expression that replaces, inside free text, every e-mail
//! address, IBAN, national identifier and phone number by a placeholder (`[email]`, `[iban]`,
//! `[national id]`, `[phone]`) and keeps the rest of the text. Built from PostgreSQL's own
//! `regexp_replace` (no function to install, nothing a role must be granted, planned inline); the
//! role's views compute it, and `maschera dump` reads those views (or their SELECT), so both redact
//! the same. Not for: names or street addresses inside the text (no pattern finds those; a column
//! that holds them is `drop`ped), or deciding who may write a redacted column (see the rewriter).

/// One pattern (PostgreSQL advanced regular expression), what replaces a match, and the flags.
struct Pattern {
    regex: &'static str,
    replacement: &'static str,
    flags: &'static str,
}

/// The patterns in the order they apply: e-mail addresses first (their digits are not phones), then
/// IBANs (grouped by spaces or dashes or not, either case), national identifiers (Italian codice fiscale in
/// either case, US SSN, Spanish DNI/NIE, UK National Insurance number), and last any run of 7 or more
/// digits with up to two spaces, dashes, dots, underscores or slashes between them, an optional
/// `+39`/`0039`/`(+39)` prefix and an optional area code in parentheses, which is how phone numbers are
/// written, letters right before or after included (`tel3331234567`, `3331234567ext`: attack round 5);
/// dates such as `2024-06-01` or `01/06/2024` are left alone; other long numbers, such as order or
/// card numbers, become `[phone]` too (`ORD1234567` becomes `ORD[phone]`).
const PATTERNS: &[Pattern] = &[
    Pattern {
        regex: r"[[:alnum:]._%+-]+@[[:alnum:]-]+(\.[[:alnum:]-]+)*\.[[:alpha:]]{2,}",
        replacement: "[email]",
        flags: "g",
    },
    Pattern {
        regex: r"\m[A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?\M",
        replacement: "[iban]",
        flags: "gi",
    },
    Pattern {
        regex: concat!(
            r"\m(?:[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]",
            r"|[0-9]{3}-[0-9]{2}-[0-9]{4}",
            r"|[XYZ]?[0-9]{7,8}-?[A-Z]",
            r"|[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D])\M"
        ),
        replacement: "[national id]",
        flags: "gi",
    },
    Pattern {
        regex: concat!(
            r"(^|[^0-9+])(?:\(?(?:\+|00)[0-9]{1,3}\)?[ ./_-]{0,2})?(?:\([0-9]{1,4}\)[ ./_-]{0,2})?",
            r"(?![0-9]{4}-[0-9]{2}-[0-9]{2}(?:[^0-9]|$))",
            r"(?![0-9]{1,2}[./-][0-9]{1,2}[./-][0-9]{2,4}(?:[^0-9]|$))",
            r"[0-9](?:[ ./_-]{0,2}[0-9]){6,}(?![0-9])"
        ),
        replacement: r"\1[phone]",
        flags: "g",
    },
];

/// The placeholders redaction writes, in the order the patterns apply.
pub const PLACEHOLDERS: &[&str] = &["[email]", "[iban]", "[national id]", "[phone]"];

/// An escape-string literal (`E'...'`), so that the backslashes of the patterns mean the same
/// whatever the session's `standard_conforming_strings`.
pub(crate) fn escaped_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The SQL expression (of type text) that redacts `text`, itself an SQL expression of type text.
/// NULL stays NULL. Every pattern needs a digit or an `@`, so text without either (most free text)
/// skips the regular expressions: a third of the cost on the reference CRM's notes.
pub fn sql_expression(text: &str) -> String {
    let redacted = PATTERNS.iter().fold(text.to_string(), |inner, p| {
        format!(
            "regexp_replace({inner}, {}, {}, '{}')",
            escaped_literal(p.regex),
            escaped_literal(p.replacement),
            p.flags
        )
    });
    format!("CASE WHEN {text} ~ '[0-9@]' THEN {redacted} ELSE {text} END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expression_nests_one_regexp_replace_per_pattern_with_escaped_backslashes() {
        let sql = sql_expression("\"notes\"::text");
        assert!(sql.starts_with(
            "CASE WHEN \"notes\"::text ~ '[0-9@]' THEN \
             regexp_replace(regexp_replace(regexp_replace(regexp_replace(\"notes\"::text, "
        ));
        assert!(sql.ends_with(" ELSE \"notes\"::text END"));
        assert_eq!(sql.matches("regexp_replace(").count(), PATTERNS.len());
        assert!(sql.contains(r"E'\\m[A-Z]{2}[0-9]{2}"), "{sql}");
        assert!(sql.contains(r"E'\\1[phone]', 'g')"), "{sql}");
        assert!(!sql.contains("''"), "no pattern has a quote: {sql}");
        for placeholder in PLACEHOLDERS {
            assert!(sql.contains(placeholder), "{placeholder}");
        }
    }
}
