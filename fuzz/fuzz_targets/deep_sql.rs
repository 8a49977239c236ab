//! Deep and wide statements through the entry points the proxy's parse threads use, on a thread
//! with their stack ([`PARSE_STACK_BYTES`]): the bytes are a small program that builds long operator
//! chains, set operations, parentheses, nested subqueries and functions, CTE chains and nested CTEs,
//! cast and subscript chains, `NOT` prefixes, IN lists and many statements, combined and nested in
//! any order, up to sizes far beyond the bounds (but `max_tokens`: the text stays under 256 KiB). For every role of the reference policy the
//! rewrite cache's entry point (restricted roles) and the bounded parse, print and inspection of
//! the access log (unrestricted roles) must return, never panic or overflow the stack (an abort is
//! a crash), and whatever is refused for its size is refused with 54000 or 54001.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::access::{Catalog, RoleAccess};
use policy::rewrite::limits::{self, PARSE_STACK_BYTES, ParseFailure};
use policy::rewrite::{self, RewriteCache, SqlState, fixture};
use std::sync::{Arc, OnceLock};

struct Reference {
    catalog: Catalog,
    roles: Vec<RoleAccess>,
    cache: RewriteCache,
}

fn reference() -> Arc<Reference> {
    static REFERENCE: OnceLock<Arc<Reference>> = OnceLock::new();
    REFERENCE
        .get_or_init(|| {
            Arc::new(Reference {
                catalog: fixture::catalog(),
                roles: fixture::ROLES.iter().map(|r| fixture::role(r)).collect(),
                cache: RewriteCache::new(1000),
            })
        })
        .clone()
}

/// Reads the program: each step is an opcode byte and a 16-bit count.
struct Program<'d> {
    data: &'d [u8],
}

impl Program<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    fn count(&mut self) -> usize {
        let high = self.byte().unwrap_or(0) as usize;
        let low = self.byte().unwrap_or(1) as usize;
        // Mostly small, sometimes up to ~80,000.
        if high & 0x80 != 0 {
            ((high & 0x7f) << 8 | low) * 5 / 2
        } else {
            low + (high & 0x07)
        }
    }
}

/// The largest text built: far beyond every bound but `max_tokens`, and quick enough in an
/// unoptimised build (`fuzz/run --smoke`).
const MAX_TEXT: usize = 256 << 10;

/// Builds the statement text the program describes, at most about [`MAX_TEXT`].
fn build(data: &[u8]) -> String {
    let mut program = Program { data };
    let mut expr = String::from("id");
    let mut statements = 1usize;
    let mut tail = String::new();
    while let Some(op) = program.byte() {
        let n = program.count();
        if expr.len().saturating_mul(2) + n * 40 > MAX_TEXT {
            break;
        }
        expr = match op % 13 {
            0 => format!("{}{expr}{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{expr}{}", " + 1".repeat(n)),
            2 => format!("{expr}{}", " OR id = 1 AND true".repeat(n)),
            3 => format!("{expr}{}", "::int".repeat(n)),
            4 => format!("{expr}{}", "[1]".repeat(n)),
            5 => format!("{}{expr}", "NOT ".repeat(n)),
            6 => format!(
                "{}{expr}{}",
                "(SELECT ".repeat(n),
                " FROM contacts)".repeat(n)
            ),
            7 => format!("{}{expr}{}", "abs(".repeat(n), ")".repeat(n)),
            8 => format!("{expr} IN (1{})", ", 2".repeat(n)),
            9 => {
                tail.push_str(&" UNION ALL SELECT id FROM contacts".repeat(n));
                expr
            }
            10 => {
                let mut with = String::from("(WITH c0 AS (SELECT id FROM contacts)");
                for i in 1..n.min(2_000) {
                    with.push_str(&format!(", c{i} AS (SELECT id FROM c{})", i - 1));
                }
                with.push_str(&format!(" SELECT {expr} FROM c{})", n.clamp(1, 2_000) - 1));
                with
            }
            11 => format!(
                "{}{expr}{}",
                "(SELECT * FROM (WITH a AS (SELECT ".repeat(n),
                " AS id FROM contacts) SELECT * FROM a) s)".repeat(n)
            ),
            _ => {
                statements = statements.saturating_add(n);
                expr
            }
        };
    }
    let one = format!("SELECT {expr} FROM contacts{tail}");
    let mut sql = String::with_capacity((one.len() + 10) * statements.min(1000));
    for _ in 1..statements.min(12_000) {
        sql.push_str("SELECT 1;");
    }
    sql.push_str(&one);
    sql
}

fn sized(sqlstate: SqlState) -> bool {
    matches!(
        sqlstate,
        SqlState::StatementTooComplex | SqlState::ProgramLimitExceeded
    )
}

fuzz_target!(|data: &[u8]| {
    let sql = build(data);
    let reference = reference();
    let run = std::thread::Builder::new()
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || {
            for role in &reference.roles {
                if role.unrestricted {
                    // What the access log does for an unrestricted role's statement.
                    let checked = limits::check(&sql);
                    match limits::parse_bounded(&sql) {
                        Ok(statements) => {
                            assert!(checked.is_ok(), "parsed beyond the bounds");
                            for statement in &statements {
                                let text = statement.to_string();
                                let _ = rewrite::inspect(&text, role, &reference.catalog);
                            }
                        }
                        Err(ParseFailure::TooBig(refusal)) => assert!(sized(refusal.sqlstate)),
                        Err(ParseFailure::Unparsable(_)) => {}
                    }
                    continue;
                }
                for prepared in [false, true] {
                    let result = if prepared {
                        reference.cache.rewrite_prepared(&sql, role, &reference.catalog)
                    } else {
                        reference.cache.rewrite(&sql, role, &reference.catalog)
                    };
                    if let Err(refusal) = result
                        && sized(refusal.sqlstate)
                    {
                        assert!(refusal.message.contains("too complex") || refusal.message.contains("limit"));
                    }
                }
            }
        })
        .expect("spawn a parse thread");
    if let Err(panic) = run.join() {
        std::panic::resume_unwind(panic);
    }
});
