//! Cost of the statement rewriter per statement: uncached (parse, analyse, rewrite, serialize,
//! re-parse check) and cached (shape lexer, lookup, refill), over the CRM/ORM corpus of
//! `policy::rewrite::fixture::CORPUS` and pgbench's select-only statement.
//!
//! `cargo bench -p maschera-policy --bench rewrite` prints a corpus summary (median per statement,
//! with sqlparser's parse alone as the baseline of the same run, and the round trip alone: parse,
//! serialize, parse again and compare, the floor of a verified rewrite) before criterion's own
//! figures. With `REWRITE_BENCH_EACH=1` it also prints each statement's uncached median.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use policy::access::{Catalog, CatalogColumn, RoleAccess, TableName, UnlistedTables};
use policy::rewrite::{RewriteCache, fixture, rewrite};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The CRM catalog plus pgbench's tables, which the roles pass as unlisted base tables.
fn catalog() -> Catalog {
    let mut catalog = fixture::catalog();
    for (table, columns) in [
        (
            "pgbench_accounts",
            &["aid", "bid", "abalance", "filler"][..],
        ),
        ("pgbench_branches", &["bid", "bbalance", "filler"][..]),
        ("pgbench_tellers", &["tid", "bid", "tbalance", "filler"][..]),
        (
            "pgbench_history",
            &["tid", "bid", "aid", "delta", "mtime", "filler"][..],
        ),
    ] {
        let columns = columns
            .iter()
            .map(|name| CatalogColumn {
                name: name.to_string(),
                data_type: "integer".to_string(),
            })
            .collect();
        catalog
            .tables
            .insert(TableName::new("public", table), columns);
    }
    catalog
}

fn role(name: &str) -> RoleAccess {
    let mut role = fixture::role(name);
    role.unlisted = UnlistedTables::Pass;
    role
}

fn pgbench_select(aid: u32) -> String {
    format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median over statements of each statement's median time, uncached and cached.
fn corpus_summary() {
    let catalog = catalog();
    let mut statements: Vec<(RoleAccess, String)> = fixture::CORPUS
        .iter()
        .map(|(r, sql)| (role(r), sql.to_string()))
        .collect();
    statements.push((role("sales"), pgbench_select(1)));
    let cache = RewriteCache::new(10_000);
    let mut tokenized = Vec::new();
    let (mut parsed, mut round_trip, mut uncached, mut cached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (role, sql) in &statements {
        let mut runs = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            black_box(
                Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql))
                    .expect("corpus statement parses"),
            );
            runs.push(start.elapsed());
        }
        parsed.push(median(runs));
        let mut runs = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            black_box(
                sqlparser::tokenizer::Tokenizer::new(&PostgreSqlDialect {}, black_box(sql))
                    .tokenize_with_location()
                    .expect("corpus statement tokenizes"),
            );
            runs.push(start.elapsed());
        }
        tokenized.push(median(runs));
        let mut runs = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            let tree = Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql))
                .expect("corpus statement parses");
            let text = tree[0].to_string();
            let again =
                Parser::parse_sql(&PostgreSqlDialect {}, &text).expect("serialized text parses");
            black_box(again == tree);
            runs.push(start.elapsed());
        }
        round_trip.push(median(runs));
        let mut runs = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            black_box(rewrite(black_box(sql), role, &catalog).expect("corpus statement accepted"));
            runs.push(start.elapsed());
        }
        uncached.push(median(runs));
        let _ = cache.rewrite(sql, role, &catalog);
        let mut runs = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            black_box(
                cache
                    .rewrite(black_box(sql), role, &catalog)
                    .expect("corpus statement accepted"),
            );
            runs.push(start.elapsed());
        }
        cached.push(median(runs));
    }
    let slowest = uncached.iter().max().copied().unwrap_or_default();
    if std::env::var_os("REWRITE_BENCH_EACH").is_some() {
        for ((_, sql), time) in statements.iter().zip(&uncached) {
            println!("{:8.1} µs  {sql}", time.as_secs_f64() * 1e6);
        }
    }
    println!(
        "corpus of {} statements: sqlparser parse alone median {:.1} µs (baseline; tokenizer alone {:.1} µs); \
         round trip alone (parse, serialize, re-parse, compare) median {:.1} µs; \
         uncached rewrite median {:.1} µs (slowest {:.1} µs), cached median {:.2} µs; cache {:?}",
        statements.len(),
        median(parsed).as_secs_f64() * 1e6,
        median(tokenized).as_secs_f64() * 1e6,
        median(round_trip).as_secs_f64() * 1e6,
        median(uncached).as_secs_f64() * 1e6,
        slowest.as_secs_f64() * 1e6,
        median(cached).as_secs_f64() * 1e6,
        cache.stats()
    );
}

fn benches(c: &mut Criterion) {
    corpus_summary();
    let catalog = catalog();
    let sales = role("sales");
    c.bench_function("uncached/pgbench_select", |b| {
        let sql = pgbench_select(4242);
        b.iter(|| rewrite(black_box(&sql), &sales, &catalog))
    });
    c.bench_function("uncached/crm_join", |b| {
        let sql = fixture::CORPUS[2].1;
        b.iter(|| rewrite(black_box(sql), &sales, &catalog))
    });
    let cache = RewriteCache::new(10_000);
    let texts: Vec<String> = (0..1000).map(pgbench_select).collect();
    c.bench_function("cached/pgbench_select", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % texts.len();
            cache.rewrite(black_box(&texts[i]), &sales, &catalog)
        })
    });
    c.bench_function("cached/crm_join", |b| {
        let sql = fixture::CORPUS[2].1;
        b.iter(|| cache.rewrite(black_box(sql), &sales, &catalog))
    });
}

criterion_group! {
    name = rewrite_benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(rewrite_benches);
