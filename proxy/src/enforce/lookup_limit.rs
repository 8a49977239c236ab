//! The rate limit of lookups (`lookup = [...]` in a role's table rule, see `policy::lookup_sql`):
//! each value a statement looks a masked column up by takes one lookup from the user's allowance,
//! `lookups_per_minute` of the role (a token bucket per user name, shared by all the user's sessions,
//! refilled continuously). A statement that needs more than is left is refused as a whole (53400),
//! and nothing of it runs. In the extended protocol the lookups are taken at each Bind of the
//! statement (every execution), not at Parse; `PREPARE` of a statement with a lookup is refused
//! (its `EXECUTE`s could not be counted).
//!
//! Not for: recording lookups (the access log records them as columns with action `lookup`) or
//! deciding which predicates are lookups (the rewriter does).

use policy::rewrite::{Refusal, RewrittenStatement, SqlState, StatementKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Users whose allowance is full again are forgotten once this many are remembered.
const PRUNE_AT: usize = 10_000;

/// One user's allowance.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every user's allowance in this proxy process.
fn buckets() -> &'static Mutex<HashMap<String, Bucket>> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Bucket>>> = OnceLock::new();
    BUCKETS.get_or_init(Default::default)
}

/// Takes `count` lookups from `user`'s allowance of `per_minute` a minute, or refuses.
pub fn take(user: &str, role: &str, per_minute: u32, count: u32) -> Result<(), Refusal> {
    if count == 0 {
        return Ok(());
    }
    let capacity = f64::from(per_minute.max(1));
    let now = Instant::now();
    let mut buckets = buckets().lock().unwrap_or_else(PoisonError::into_inner);
    if buckets.len() >= PRUNE_AT {
        buckets.retain(|_, b| {
            b.tokens + now.duration_since(b.at).as_secs_f64() * capacity / 60.0 < capacity
        });
    }
    let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
        tokens: capacity,
        at: now,
    });
    let refilled = now.duration_since(bucket.at).as_secs_f64() * capacity / 60.0;
    bucket.tokens = (bucket.tokens + refilled).min(capacity);
    bucket.at = now;
    if bucket.tokens + 1e-9 < f64::from(count) {
        return Err(Refusal {
            sqlstate: SqlState::ConfigurationLimitExceeded,
            message: format!(
                "too many lookups: role {role} allows {per_minute} lookups of masked columns per minute and user, \
                 and this statement needs {count}; try again later"
            ),
            tables: Vec::new(),
            statement_index: 0,
        });
    }
    bucket.tokens -= f64::from(count);
    Ok(())
}

/// The lookups of a statement: how many values it looks masked columns up by.
fn count(statement: &RewrittenStatement) -> u32 {
    statement
        .tables
        .iter()
        .flat_map(|table| table.columns.values())
        .fold(0u32, |sum, column| sum.saturating_add(column.lookups))
}

/// One user's allowance under one role: what a decision takes lookups from (on a parse thread
/// too). Cheap to clone.
#[derive(Clone)]
pub struct LookupAllowance {
    user: Arc<str>,
    role: Arc<str>,
    per_minute: u32,
}

impl LookupAllowance {
    fn take(&self, count: u32) -> Result<(), Refusal> {
        take(&self.user, &self.role, self.per_minute, count)
    }

    /// A simple query: its lookups are taken now (`PREPARE` with a lookup is refused).
    pub fn query(&self, statements: &[RewrittenStatement]) -> Result<(), Refusal> {
        let mut total = 0u32;
        for (index, statement) in statements.iter().enumerate() {
            let n = count(statement);
            if n > 0 && statement.kind == StatementKind::Prepare {
                return Err(Refusal {
                    sqlstate: SqlState::FeatureNotSupported,
                    message: "a lookup of a masked column cannot be prepared with PREPARE: send it as a query or through the extended protocol".into(),
                    tables: Vec::new(),
                    statement_index: index,
                });
            }
            total = total.saturating_add(n);
        }
        self.take(total)
    }
}

/// The lookups of a prepared statement (its statements at Parse), taken at each Bind.
pub fn prepared(statements: &[RewrittenStatement]) -> u32 {
    statements.iter().map(count).fold(0u32, u32::saturating_add)
}

/// One session's view of the limit: the allowance, and the lookups of each prepared statement (by
/// name) to take at each Bind. Owned by the session's hook.
pub struct SessionLookups {
    allowance: LookupAllowance,
    prepared: HashMap<Vec<u8>, u32>,
}

impl SessionLookups {
    pub fn new(user: &str, role: &str, per_minute: u32) -> Self {
        SessionLookups {
            allowance: LookupAllowance {
                user: Arc::from(user),
                role: Arc::from(role),
                per_minute,
            },
            prepared: HashMap::new(),
        }
    }

    pub fn allowance(&self) -> &LookupAllowance {
        &self.allowance
    }

    /// A Parse: remember the statement's lookups (see [`prepared`]) under its name.
    pub fn parse(&mut self, name: Vec<u8>, lookups: u32) {
        if lookups > 0 {
            self.prepared.insert(name, lookups);
        } else {
            self.prepared.remove(&name);
        }
    }

    /// A Bind of the prepared `statement`: each execution takes the statement's lookups.
    pub fn bind(&self, statement: &[u8]) -> Result<(), Refusal> {
        let n = self.prepared.get(statement).copied().unwrap_or(0);
        self.allowance.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_per_user_and_a_statement_over_it_takes_nothing() {
        assert!(take("limit-a", "support", 3, 2).is_ok());
        let refused = take("limit-a", "support", 3, 2).unwrap_err();
        assert_eq!(refused.sqlstate.code(), "53400");
        assert!(
            refused.message.contains("role support allows 3 lookups"),
            "{}",
            refused.message
        );
        // The refused statement took nothing: one is left.
        assert!(take("limit-a", "support", 3, 1).is_ok());
        assert!(take("limit-a", "support", 3, 1).is_err());
        // Another user has an allowance of their own.
        assert!(take("limit-b", "support", 3, 3).is_ok());
        assert!(take("limit-b", "support", 3, 0).is_ok());
    }
}
