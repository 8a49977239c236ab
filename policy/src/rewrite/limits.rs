//! Bounds on the work one message asks of the parser, checked by a linear pass over its tokens
//! *before* any syntax tree is built: statements and tokens per message, and per statement the
//! longest chain of operators, the set operations (`UNION`, `EXCEPT`, `INTERSECT`) and the depth of
//! parentheses. sqlparser builds `1+1+...+1` and `SELECT 1 UNION ALL SELECT 1 ...` left-deep in a
//! loop, so its own recursion counter never sees their depth; every later walk of the tree (the
//! analyzer, `Display`, `Visit`, `Drop`) recurses once per level. Bounding the token shapes bounds
//! the depth of every tree the proxy builds, and [`PARSE_STACK_BYTES`] is a stack on which the
//! deepest tree the [`Limits::CEILING`] allows is parsed, rewritten, printed and dropped (tested in
//! a debug build with the worst shapes at the ceiling).
//!
//! Big `IN` lists and bulk `VALUES` are flat (commas, not operators): an operator chain is counted
//! between commas, summed over the enclosing parentheses, so they pass at any length the token
//! bound allows.
//!
//! Not for: where parsing runs (the proxy's parse threads have [`PARSE_STACK_BYTES`] of stack), or
//! limits on what PostgreSQL does with a statement.

use std::sync::RwLock;

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::Refusal;

/// The bounds on one message (see the module documentation). `[limits]` in the proxy's
/// configuration sets them; none may exceed [`Limits::CEILING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Statements in one message (a simple Query may hold several).
    pub max_statements: usize,
    /// Tokens (words, constants, operators, punctuation; not whitespace or comments) in one message.
    pub max_tokens: usize,
    /// The longest chain of operators in one statement: operators between two commas, summed over
    /// the parentheses around them (`a + b * c` is 2, `(a + b) + c` is 2, `f(a + b, c)` is 1).
    pub max_operators: usize,
    /// `UNION`, `EXCEPT` and `INTERSECT` in one statement.
    pub max_set_operations: usize,
    /// Nesting of parentheses and brackets in one statement.
    pub max_nesting: usize,
}

impl Limits {
    /// What lets ORMs and migrations through: thousands of statements in a migration script,
    /// bulk inserts of tens of thousands of rows, `WHERE` clauses of hundreds of conditions.
    pub const DEFAULT: Limits = Limits {
        max_statements: 10_000,
        max_tokens: 1_000_000,
        max_operators: 2_000,
        max_set_operations: 500,
        max_nesting: 64,
    };

    /// The most any configuration may allow: [`PARSE_STACK_BYTES`] holds the trees these allow.
    /// (Tokens: a 16 MiB message holds at most about 8 million.)
    pub const CEILING: Limits = Limits {
        max_statements: 1_000_000,
        max_tokens: 8_000_000,
        max_operators: 10_000,
        max_set_operations: 2_000,
        max_nesting: 200,
    };

    /// `Err` naming the first bound above [`Limits::CEILING`] or at zero.
    pub fn validate(&self) -> Result<(), String> {
        let pairs = [
            (
                "max_statements",
                self.max_statements,
                Self::CEILING.max_statements,
            ),
            ("max_tokens", self.max_tokens, Self::CEILING.max_tokens),
            (
                "max_operators",
                self.max_operators,
                Self::CEILING.max_operators,
            ),
            (
                "max_set_operations",
                self.max_set_operations,
                Self::CEILING.max_set_operations,
            ),
            ("max_nesting", self.max_nesting, Self::CEILING.max_nesting),
        ];
        for (name, value, ceiling) in pairs {
            if value == 0 || value > ceiling {
                return Err(format!("{name} must be between 1 and {ceiling}"));
            }
        }
        Ok(())
    }

    /// sqlparser's own recursion limit for a text within these bounds: high enough that the
    /// bounds, not the parser, refuse deep nesting (a parenthesis can cost it a few levels).
    fn recursion_limit(&self) -> usize {
        self.max_nesting * 4 + 64
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The stack a thread needs to parse, rewrite, print and drop a statement within
/// [`Limits::CEILING`] (debug builds need several times what release builds do).
pub const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

static LIMITS: RwLock<Limits> = RwLock::new(Limits::DEFAULT);

/// Sets the bounds every parse of this process checks; `Err` (and nothing set) when one exceeds the
/// ceiling.
pub fn set_limits(limits: Limits) -> Result<(), String> {
    limits.validate()?;
    *LIMITS.write().unwrap_or_else(|p| p.into_inner()) = limits;
    Ok(())
}

/// The bounds in force.
pub fn limits() -> Limits {
    *LIMITS.read().unwrap_or_else(|p| p.into_inner())
}

/// Why a bounded parse gave no statements.
#[derive(Debug)]
pub enum ParseFailure {
    /// The text exceeds a bound (54000 or 54001): refuse it, whatever the role.
    TooBig(Refusal),
    /// sqlparser could not parse it.
    Unparsable(ParserError),
}

thread_local! {
    /// Texts [`parse_bounded`] was given on this thread.
    static PARSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many texts [`parse_bounded`] was given on the current thread so far: lets a test check that
/// a statement is parsed once however many parts look at it.
pub fn parses_on_this_thread() -> u64 {
    PARSES.with(std::cell::Cell::get)
}

/// Tokenizes `sql`, checks the bounds in force, and only then parses it. Run it on a thread with
/// [`PARSE_STACK_BYTES`] of stack.
pub fn parse_bounded(sql: &str) -> Result<Vec<Statement>, ParseFailure> {
    PARSES.with(|parses| parses.set(parses.get() + 1));
    let dialect = PostgreSqlDialect {};
    let mut tokens = Vec::new();
    Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location_into_buf(&mut tokens)
        .map_err(|e| ParseFailure::Unparsable(e.into()))?;
    let limits = limits();
    check_tokens(&tokens, &limits).map_err(ParseFailure::TooBig)?;
    parser(&dialect, &limits)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(ParseFailure::Unparsable)
}

/// Whether `sql` is within the bounds in force (tokenizes it; builds no tree). Text that does not
/// tokenize passes: whoever parses it finds it unparsable.
pub fn check(sql: &str) -> Result<(), Refusal> {
    let mut tokens = Vec::new();
    match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location_into_buf(&mut tokens) {
        Ok(()) => check_tokens(&tokens, &limits()),
        Err(_) => Ok(()),
    }
}

/// A parser whose recursion limit fits `limits`.
pub(crate) fn parser<'d>(dialect: &'d PostgreSqlDialect, limits: &Limits) -> Parser<'d> {
    Parser::new(dialect).with_recursion_limit(limits.recursion_limit())
}

/// What the pass counts in the statement being read.
#[derive(Default)]
struct Counting {
    /// Operators since the last comma at each open parenthesis level (the outermost first).
    segments: Vec<usize>,
    /// Their sum: the operator chain at the current position.
    chain: usize,
    set_operations: usize,
    /// Whether it holds any token (empty statements between `;;` are not counted).
    started: bool,
}

/// Checks `tokens` (a whole message) against `limits`: one pass, no tree.
pub(crate) fn check_tokens(tokens: &[TokenWithSpan], limits: &Limits) -> Result<(), Refusal> {
    let mut statements = 0usize;
    let mut counted = 0usize;
    let mut current = Counting::default();
    for token in tokens {
        let token = &token.token;
        if matches!(token, Token::Whitespace(_) | Token::EOF) {
            continue;
        }
        counted += 1;
        if counted > limits.max_tokens {
            return Err(Refusal::limit_exceeded(format!(
                "program limit exceeded: the message holds more than {} tokens (max_tokens in the proxy's [limits]); send it in smaller parts",
                limits.max_tokens
            )));
        }
        if matches!(token, Token::SemiColon) {
            current = Counting::default();
            continue;
        }
        if !current.started {
            current.started = true;
            statements += 1;
            if statements > limits.max_statements {
                return Err(Refusal::limit_exceeded(format!(
                    "program limit exceeded: the message holds more than {} statements (max_statements in the proxy's [limits]); send them in several messages",
                    limits.max_statements
                )));
            }
            current.segments.push(0);
        }
        let too_complex = |what: String| {
            let mut refusal = Refusal::too_complex(format!(
                "statement too complex: it {what}; simplify it or split it into several statements"
            ));
            refusal.statement_index = statements - 1;
            refusal
        };
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                // A subscript also deepens the expression it follows (`a[1][1]...`).
                if matches!(token, Token::LBracket) && current.operator() > limits.max_operators {
                    return Err(too_complex(too_many_operators(limits)));
                }
                current.segments.push(0);
                if current.segments.len() - 1 > limits.max_nesting {
                    return Err(too_complex(format!(
                        "nests parentheses more than {} deep (max_nesting in the proxy's [limits])",
                        limits.max_nesting
                    )));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if current.segments.len() > 1 {
                    let closed = current.segments.pop().unwrap_or(0);
                    current.chain -= closed;
                }
            }
            Token::Comma => {
                if let Some(segment) = current.segments.last_mut() {
                    current.chain -= *segment;
                    *segment = 0;
                }
            }
            _ => {
                if is_set_operation(token) {
                    current.set_operations += 1;
                    if current.set_operations > limits.max_set_operations {
                        return Err(too_complex(format!(
                            "combines more than {} queries with UNION, EXCEPT or INTERSECT (max_set_operations in the proxy's [limits])",
                            limits.max_set_operations
                        )));
                    }
                } else if is_operator(token) && current.operator() > limits.max_operators {
                    return Err(too_complex(too_many_operators(limits)));
                }
            }
        }
    }
    Ok(())
}

fn too_many_operators(limits: &Limits) -> String {
    format!(
        "chains more than {} operators in one expression (max_operators in the proxy's [limits])",
        limits.max_operators
    )
}

impl Counting {
    /// Counts an operator at the current position; returns the chain there.
    fn operator(&mut self) -> usize {
        if let Some(segment) = self.segments.last_mut() {
            *segment += 1;
        }
        self.chain += 1;
        self.chain
    }
}

/// Whether `token` is a constant (a number or any kind of string literal).
pub fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

fn is_set_operation(token: &Token) -> bool {
    matches!(token, Token::Word(w) if matches!(w.keyword, Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT))
}

/// Whether `token` can join two expressions into a deeper one (an infix, prefix or postfix operator,
/// `::`, `.`, a keyword operator). Counting too many only makes the bound stricter.
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::OPERATOR
        ),
        token if is_literal(token) => false,
        Token::Placeholder(_)
        | Token::Comma
        | Token::Whitespace(_)
        | Token::SemiColon
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::EOF => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{SqlState, fixture, inspect, rewrite};

    /// Runs `f` on a thread with `stack` bytes of stack (an overflow aborts the test binary).
    fn on_stack<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// The worst shapes at `limits`: each is within them, and as deep as they allow.
    fn worst_shapes(l: &Limits) -> Vec<(&'static str, String)> {
        let ops = l.max_operators;
        let nest = l.max_nesting;
        let mut cte = String::from("WITH c0 AS (SELECT 1 AS x)");
        for i in 1..500 {
            cte.push_str(&format!(", c{i} AS (SELECT x FROM c{})", i - 1));
        }
        cte.push_str(" SELECT x FROM c499");
        vec![
            ("sum", format!("SELECT 1{}", "+1".repeat(ops))),
            (
                "and",
                format!(
                    "SELECT 1 FROM contacts WHERE true{}",
                    " AND id = 1".repeat(ops / 2)
                ),
            ),
            ("cast", format!("SELECT 1{}", "::int".repeat(ops))),
            ("not", format!("SELECT {}true", "NOT ".repeat(ops))),
            ("subscript", format!("SELECT x{}", "[1]".repeat(ops / 2))),
            (
                "union",
                format!(
                    "SELECT 1{}",
                    " UNION ALL SELECT 1".repeat(l.max_set_operations)
                ),
            ),
            (
                "parens",
                format!("SELECT {}1{}", "(".repeat(nest), ")".repeat(nest)),
            ),
            (
                "functions",
                format!("SELECT {}1{}", "abs(".repeat(nest), ")".repeat(nest)),
            ),
            (
                "scalar subqueries",
                format!("SELECT {}1{}", "(SELECT ".repeat(nest), ")".repeat(nest)),
            ),
            (
                "nested CTEs",
                format!(
                    "{}SELECT 1{}",
                    "SELECT * FROM (WITH a AS (".repeat(nest / 2),
                    ") SELECT * FROM a) s".repeat(nest / 2)
                ),
            ),
            ("CTE chain", cte),
            (
                "deep and long",
                format!(
                    "SELECT {}1{}{}",
                    "(".repeat(nest),
                    "+1".repeat(ops - 1),
                    ")".repeat(nest)
                ),
            ),
        ]
    }

    #[test]
    fn the_worst_shapes_at_the_ceiling_parse_rewrite_print_and_drop_on_the_parse_stack() {
        // In a debug build (the tests'), frames are several times those of a release build.
        for (what, sql) in worst_shapes(&Limits::CEILING) {
            let result = on_stack(PARSE_STACK_BYTES, move || {
                set_limits(Limits::CEILING).unwrap();
                let catalog = fixture::catalog();
                let tokens = {
                    let mut tokens = Vec::new();
                    Tokenizer::new(&PostgreSqlDialect {}, &sql)
                        .tokenize_with_location_into_buf(&mut tokens)
                        .unwrap();
                    tokens
                };
                check_tokens(&tokens, &Limits::CEILING)?;
                let rewritten = rewrite(&sql, &fixture::role("sales"), &catalog);
                let _ = inspect(&sql, &fixture::role("dpo"), &catalog);
                let statements = parse_bounded(&sql).map_err(|e| match e {
                    ParseFailure::TooBig(refusal) => refusal,
                    ParseFailure::Unparsable(e) => Refusal::unparsable(&e.to_string()),
                })?;
                let printed = statements[0].to_string();
                drop(statements);
                let _ = inspect(&printed, &fixture::role("dpo"), &catalog);
                rewritten.map(|_| ())
            });
            // Parsed, analysed, printed and dropped without overflowing; the analyzer may still
            // refuse what is deeper than it analyses.
            if let Err(refusal) = result {
                assert!(
                    matches!(
                        refusal.sqlstate,
                        SqlState::StatementTooComplex | SqlState::InsufficientPrivilege
                    ) || refusal.message.contains("not supported"),
                    "{what}: {refusal:?}"
                );
            }
        }
        set_limits(Limits::DEFAULT).unwrap();
    }

    fn refusal_of(sql: &str, limits: &Limits) -> Option<Refusal> {
        let mut tokens = Vec::new();
        Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location_into_buf(&mut tokens)
            .unwrap();
        check_tokens(&tokens, limits).err()
    }

    #[test]
    fn one_more_than_each_bound_is_refused_with_its_sqlstate_and_name() {
        let l = Limits {
            max_statements: 5,
            max_tokens: 200,
            max_operators: 10,
            max_set_operations: 3,
            max_nesting: 4,
        };
        for (what, sql) in worst_shapes(&l) {
            if what == "CTE chain" {
                continue;
            }
            assert_eq!(refusal_of(&sql, &l), None, "{what}: {sql}");
        }
        let cases = [
            (
                "SELECT 1;".repeat(6),
                SqlState::ProgramLimitExceeded,
                "max_statements",
            ),
            (
                format!("SELECT 1{}", ", 1".repeat(100)),
                SqlState::ProgramLimitExceeded,
                "max_tokens",
            ),
            (
                format!("SELECT 1{}", "+1".repeat(11)),
                SqlState::StatementTooComplex,
                "max_operators",
            ),
            (
                format!("SELECT x{}", "[1]".repeat(11)),
                SqlState::StatementTooComplex,
                "max_operators",
            ),
            (
                format!("SELECT 1{}", " UNION SELECT 1".repeat(4)),
                SqlState::StatementTooComplex,
                "max_set_operations",
            ),
            (
                format!("SELECT {}1{}", "(".repeat(5), ")".repeat(5)),
                SqlState::StatementTooComplex,
                "max_nesting",
            ),
        ];
        for (sql, sqlstate, name) in cases {
            let refusal = refusal_of(&sql, &l).unwrap_or_else(|| panic!("not refused: {sql}"));
            assert_eq!(refusal.sqlstate, sqlstate, "{sql}");
            assert!(refusal.message.contains(name), "{}", refusal.message);
            assert!(!refusal.message.contains("SELECT"), "{}", refusal.message);
        }
    }

    #[test]
    fn in_lists_bulk_values_and_statements_in_one_text_are_flat() {
        let l = Limits::DEFAULT;
        let in_list = format!(
            "SELECT * FROM contacts WHERE id IN (1{})",
            ", -1".repeat(50_000)
        );
        let values = format!(
            "INSERT INTO t VALUES (1, 'a'::text, now() - interval '1 day'){}",
            ", (-1, 'b'::text, now() - interval '1 day')".repeat(20_000)
        );
        let or_chain = format!(
            "SELECT 1 FROM t WHERE {}",
            "(a = 1 AND b = 2) OR ".repeat(600) + "false"
        );
        let separate = "SELECT 1 + 1 + 1 + 1;".repeat(5_000);
        for sql in [in_list, values, or_chain, separate] {
            assert_eq!(refusal_of(&sql, &l), None, "{}", &sql[..60]);
        }
        // The chain is per statement: the sum of many short statements does not count.
        let second = format!("SELECT 1; SELECT 1{}", "+1".repeat(l.max_operators + 1));
        assert_eq!(refusal_of(&second, &l).unwrap().statement_index, 1);
    }

    #[test]
    fn the_configured_limits_must_stay_within_the_ceiling() {
        assert!(Limits::DEFAULT.validate().is_ok());
        assert!(Limits::CEILING.validate().is_ok());
        let too_deep = Limits {
            max_nesting: Limits::CEILING.max_nesting + 1,
            ..Limits::DEFAULT
        };
        assert!(too_deep.validate().unwrap_err().contains("max_nesting"));
        assert!(
            Limits {
                max_tokens: 0,
                ..Limits::DEFAULT
            }
            .validate()
            .is_err()
        );
    }
}
