//! The rewrite cache: rewrites per role and statement shape (constants lifted out by `shape.rs`), so
//! that the same statement with other constants (`pgbench -M simple`, ORMs without server-side
//! prepare) costs a lexer pass and a hash lookup. A shape is cached only when the full analysis
//! says no constant influenced the decision, the shape alone gives the same analysis, and filling
//! the shape's rewrite with the constants gives exactly the full rewrite. Refusals are not cached.
//!
//! One cache belongs to one loaded policy: build a new one when the policy is reloaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::shape::{self, Shape, Template};
use super::{Refusal, Rewritten, RewrittenStatement};
use crate::access::{Catalog, RoleAccess};

/// What the cache knows about one role and shape.
enum Entry {
    /// A constant's value matters (SET, COPY, regclass, ...) or the shape does not round-trip.
    Uncacheable,
    /// The rewritten statements as templates, with the analysis that does not depend on constants.
    Templates(Vec<(Template, RewrittenStatement)>),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Served from a cached shape.
    pub hits: u64,
    /// Analysed in full, then remembered.
    pub misses: u64,
    /// Analysed in full because the text or its shape is not cacheable.
    pub uncacheable: u64,
}

/// Which entry point a text came through (a Parse statement may not hold several statements).
#[derive(Clone, Copy)]
enum Mode {
    SimpleQuery,
    Prepared,
}

type Full = fn(&str, &RoleAccess, &Catalog) -> Result<Rewritten, Refusal>;

/// A concurrent cache in front of [`super::rewrite`] and [`super::rewrite_prepared`].
pub struct RewriteCache {
    entries: quick_cache::sync::Cache<String, Arc<Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    uncacheable: AtomicU64,
}

impl RewriteCache {
    /// A cache holding up to `capacity` shapes (all roles together).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            uncacheable: AtomicU64::new(0),
        }
    }

    /// Same result as [`super::rewrite`], cached by shape.
    pub fn rewrite(
        &self,
        sql: &str,
        role: &RoleAccess,
        catalog: &Catalog,
    ) -> Result<Rewritten, Refusal> {
        self.cached(Mode::SimpleQuery, sql, role, catalog, super::rewrite)
    }

    /// Same result as [`super::rewrite_prepared`], cached by shape.
    pub fn rewrite_prepared(
        &self,
        sql: &str,
        role: &RoleAccess,
        catalog: &Catalog,
    ) -> Result<Rewritten, Refusal> {
        self.cached(Mode::Prepared, sql, role, catalog, super::rewrite_prepared)
    }

    /// The rewrite of a simple-query text if the cache holds its shape; `None` when it would have
    /// to be analysed (a miss or an uncacheable text: then call [`RewriteCache::rewrite`]).
    pub fn rewrite_if_cached(&self, sql: &str, role: &RoleAccess) -> Option<Rewritten> {
        self.hit(Mode::SimpleQuery, sql, role)
    }

    /// The rewrite of a Parse statement if the cache holds its shape (see
    /// [`RewriteCache::rewrite_if_cached`]).
    pub fn rewrite_prepared_if_cached(&self, sql: &str, role: &RoleAccess) -> Option<Rewritten> {
        self.hit(Mode::Prepared, sql, role)
    }

    fn hit(&self, mode: Mode, sql: &str, role: &RoleAccess) -> Option<Rewritten> {
        if role.unrestricted {
            return Some(Rewritten::Unchanged);
        }
        let shape = shape::lift(sql)?;
        let entry = self.entries.get(&key(mode, &shape, role))?;
        let Entry::Templates(statements) = entry.as_ref() else {
            return None;
        };
        let rewritten = fill(statements, &shape.literals)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(rewritten)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            uncacheable: self.uncacheable.load(Ordering::Relaxed),
        }
    }

    fn cached(
        &self,
        mode: Mode,
        sql: &str,
        role: &RoleAccess,
        catalog: &Catalog,
        full: Full,
    ) -> Result<Rewritten, Refusal> {
        if role.unrestricted {
            return Ok(Rewritten::Unchanged);
        }
        let Some(shape) = shape::lift(sql) else {
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
            return full(sql, role, catalog);
        };
        let key = key(mode, &shape, role);
        if let Some(entry) = self.entries.get(&key) {
            if let Entry::Templates(statements) = entry.as_ref()
                && let Some(rewritten) = fill(statements, &shape.literals)
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(rewritten);
            }
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
            return full(sql, role, catalog);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let result = full(sql, role, catalog);
        if let Ok(Rewritten::Statements(real)) = &result {
            let entry = learn(real, &shape, role, catalog, full);
            self.entries.insert(key, Arc::new(entry));
        }
        result
    }
}

/// The cache key of a role's shape.
fn key(mode: Mode, shape: &Shape<'_>, role: &RoleAccess) -> String {
    let mut key = String::with_capacity(role.role.len() + shape.text.len() + 3);
    key.push_str(&role.role);
    key.push('\0');
    key.push(match mode {
        Mode::SimpleQuery => 'Q',
        Mode::Prepared => 'P',
    });
    key.push_str(&shape.text);
    key
}

fn fill(statements: &[(Template, RewrittenStatement)], literals: &[&str]) -> Option<Rewritten> {
    let mut out = Vec::with_capacity(statements.len());
    for (template, statement) in statements {
        let mut statement = statement.clone();
        statement.sql = template.fill(literals)?;
        out.push(statement);
    }
    Some(Rewritten::Statements(out))
}

/// Turns a full rewrite into templates, if the shape provably gives the same rewrite.
fn learn(
    real: &[RewrittenStatement],
    shape: &Shape<'_>,
    role: &RoleAccess,
    catalog: &Catalog,
    full: Full,
) -> Entry {
    if real.iter().any(|s| !s.literal_independent) {
        return Entry::Uncacheable;
    }
    let Ok(Rewritten::Statements(shaped)) = full(&shape.text, role, catalog) else {
        return Entry::Uncacheable;
    };
    if shaped.len() != real.len() {
        return Entry::Uncacheable;
    }
    let mut templates = Vec::with_capacity(real.len());
    for (shaped, real) in shaped.iter().zip(real) {
        let same_analysis = shaped.literal_independent
            && shaped.kind == real.kind
            && shaped.returns_rows == real.returns_rows
            && shaped.effect == real.effect
            && shaped.tables == real.tables;
        let Some(template) = Template::new(&shaped.sql) else {
            return Entry::Uncacheable;
        };
        if !same_analysis || template.fill(&shape.literals).as_deref() != Some(real.sql.as_str()) {
            return Entry::Uncacheable;
        }
        let mut statement = real.clone();
        statement.sql = String::new();
        templates.push((template, statement));
    }
    Entry::Templates(templates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{SqlState, fixture, rewrite};

    #[test]
    fn same_shape_with_other_constants_hits_and_equals_the_full_rewrite() {
        let cache = RewriteCache::new(100);
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        for id in 1..5 {
            let sql = format!("SELECT first_name FROM contacts WHERE id = {id} AND city = 'c{id}'");
            assert_eq!(
                cache.rewrite(&sql, &role, &catalog),
                rewrite(&sql, &role, &catalog)
            );
        }
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 3,
                misses: 1,
                uncacheable: 0
            }
        );
    }

    #[test]
    fn only_what_the_cache_holds_is_served_without_analysis() {
        let cache = RewriteCache::new(100);
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        let sql = "SELECT first_name FROM contacts WHERE id = 1";
        assert_eq!(cache.rewrite_if_cached(sql, &role), None);
        assert_eq!(cache.stats(), CacheStats::default());
        let full = cache.rewrite(sql, &role, &catalog).unwrap();
        let other = "SELECT first_name FROM contacts WHERE id = 2";
        assert_eq!(
            cache.rewrite_if_cached(other, &role),
            Some(rewrite(other, &role, &catalog).unwrap())
        );
        assert_ne!(cache.rewrite_if_cached(sql, &role), None);
        assert_eq!(cache.rewrite_prepared_if_cached(sql, &role), None);
        assert!(matches!(full, Rewritten::Statements(_)));
        assert_eq!(
            cache.rewrite_if_cached(sql, &fixture::role("dpo")),
            Some(Rewritten::Unchanged)
        );
    }

    #[test]
    fn roles_do_not_share_entries_and_refusals_are_not_cached() {
        let cache = RewriteCache::new(100);
        let catalog = fixture::catalog();
        let sql = "SELECT phone FROM contacts WHERE id = 1";
        assert!(
            cache
                .rewrite(sql, &fixture::role("sales"), &catalog)
                .is_ok()
        );
        let refusal = cache
            .rewrite(sql, &fixture::role("marketing"), &catalog)
            .unwrap_err();
        assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege);
        assert!(
            cache
                .rewrite(sql, &fixture::role("marketing"), &catalog)
                .is_err()
        );
    }

    #[test]
    fn value_sensitive_statements_always_take_the_full_path() {
        let cache = RewriteCache::new(100);
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        for sql in ["SET application_name = 'a'", "SET application_name = 'b'"] {
            assert!(cache.rewrite(sql, &role, &catalog).is_ok());
        }
        assert!(
            cache
                .rewrite("SET search_path = 'x'", &role, &catalog)
                .is_err()
        );
        for sql in [
            "SELECT 'public.contacts'::regclass",
            "SELECT 'public.deals'::regclass",
        ] {
            assert_eq!(
                cache.rewrite(sql, &role, &catalog),
                rewrite(sql, &role, &catalog)
            );
        }
        assert_eq!(cache.stats().hits, 0);
    }

    #[test]
    fn prepared_statements_are_cached_apart_from_simple_queries() {
        let cache = RewriteCache::new(100);
        let role = fixture::role("sales");
        let catalog = fixture::catalog();
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        assert!(cache.rewrite_prepared(sql, &role, &catalog).is_err());
        let sql = "SELECT city FROM contacts WHERE id = $1 LIMIT 10";
        let first = cache.rewrite_prepared(sql, &role, &catalog).unwrap();
        let second = cache.rewrite_prepared(sql, &role, &catalog).unwrap();
        assert_eq!(first, second);
        assert!(cache.rewrite("SELECT 1; SELECT 2", &role, &catalog).is_ok());
        assert!(
            cache
                .rewrite_prepared("SELECT 1; SELECT 2", &role, &catalog)
                .is_err()
        );
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn the_corpus_gives_the_same_result_cached_and_uncached() {
        let cache = RewriteCache::new(1000);
        let catalog = fixture::catalog();
        for (role, sql) in fixture::CORPUS {
            let role = fixture::role(role);
            let full = rewrite(sql, &role, &catalog);
            assert!(full.is_ok(), "{sql}: {full:?}");
            for _ in 0..2 {
                assert_eq!(cache.rewrite(sql, &role, &catalog), full, "{sql}");
            }
            let bumped = sql.replace('7', "8").replace("'open'", "'won'");
            assert_eq!(
                cache.rewrite(&bumped, &role, &catalog),
                rewrite(&bumped, &role, &catalog),
                "{bumped}"
            );
        }
        assert!(
            cache.stats().hits as usize > fixture::CORPUS.len(),
            "{:?}",
            cache.stats()
        );
    }
}
