//! Admission of authenticated sessions, so that one user or one role cannot take every connection
//! slot of PostgreSQL or every statement the proxy can run: how many sessions each user and each role
//! may hold at once (checked after authentication, before the upstream login, refused with FATAL
//! 53300), and how many statements per second a user may start (a token bucket per user, checked when
//! a Query or Parse arrives, refused with ERROR 53300 and counted like every refused statement). An [`Admitted`] guard holds the session's
//! places and gives them back when it is dropped, however the session ends.
//!
//! Defaults (see `[limits]` in `config`): a user may hold half and a role three quarters of the
//! sessions PostgreSQL accepts from ordinary logins (`max_connections` minus
//! `superuser_reserved_connections`, read at start; 100 until it can be read), so that other
//! users and roles keep room; the statement rate is not limited unless configured.
//! A session in transaction pooling holds no PostgreSQL session of its own (its pool's `size` and
//! `max_per_login` bound those), so its automatic limits are half and three quarters of the
//! proxy's own client slots (`[limits] max_connections`) instead, counted apart from the sessions
//! that hold a backend; limits set in the configuration count every client session alike.
//! Not for: the proxy-wide connection limit (`[limits] max_connections`, in `server`), failed logins
//! (see `lockout`) or the size of one message's work.

use crate::config::Limits;
use crate::enforce::prepared_cap::PreparedCap;
use crate::net::upstream::UpstreamTarget;
use crate::session::Decision;
use crate::wire::client_error::ClientError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// SQLSTATE `too_many_connections`, for sessions and statement rates alike.
pub const TOO_MANY: &str = "53300";

/// PostgreSQL's own default `max_connections`, assumed when the server's cannot be read.
const ASSUMED_UPSTREAM_SLOTS: usize = 100;

/// How long one reading of PostgreSQL's `max_connections` may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an unreachable PostgreSQL is asked again for its `max_connections`.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Session and statement limits of the whole proxy, shared by every connection.
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    /// 0: not limited. Set from the configuration, or at start from PostgreSQL's slots.
    per_user: AtomicUsize,
    per_role: AtomicUsize,
    /// The limits of pooled sessions: configured, or from the proxy's client slots.
    pooled_per_user: usize,
    pooled_per_role: usize,
    configured_per_user: Option<usize>,
    /// `[limits.user_max_sessions]`: users with a limit of their own.
    user_max_sessions: BTreeMap<String, usize>,
    configured_per_role: Option<usize>,
    statements_per_second: u32,
    /// `[limits] max_prepared_statements` (0: no bound), per session.
    max_prepared: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Sessions that hold a PostgreSQL session of their own.
    dedicated: Counts,
    /// Sessions in transaction pooling.
    pooled: Counts,
    buckets: HashMap<String, Bucket>,
}

#[derive(Default)]
struct Counts {
    users: HashMap<String, usize>,
    roles: HashMap<String, usize>,
}

/// A refused session or statement: SQLSTATE, the message for the client, the metric's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
    pub reason: &'static str,
}

impl From<Refused> for ClientError {
    fn from(refused: Refused) -> Self {
        ClientError::new(refused.code, refused.message)
    }
}

/// A session's places (one of its user's, one of its role's), given back on drop.
pub struct Admitted {
    inner: Arc<Inner>,
    user: String,
    role: String,
    pooled: bool,
}

impl Admission {
    /// Limits as configured; automatic ones stay at [`ASSUMED_UPSTREAM_SLOTS`] until
    /// [`Admission::read_upstream_slots`].
    pub fn new(limits: &Limits) -> Admission {
        let inner = Arc::new(Inner {
            per_user: AtomicUsize::new(0),
            per_role: AtomicUsize::new(0),
            pooled_per_user: limits
                .max_sessions_per_user
                .unwrap_or((limits.max_connections / 2).max(1)),
            pooled_per_role: limits
                .max_sessions_per_role
                .unwrap_or((limits.max_connections * 3 / 4).max(1)),
            configured_per_user: limits.max_sessions_per_user,
            user_max_sessions: limits.user_max_sessions.clone(),
            configured_per_role: limits.max_sessions_per_role,
            statements_per_second: limits.max_statements_per_second_per_user,
            max_prepared: limits.max_prepared_statements,
            held: Mutex::new(Held::default()),
        });
        let admission = Admission { inner };
        admission.set_upstream_slots(ASSUMED_UPSTREAM_SLOTS);
        admission
    }

    /// Reads how many sessions PostgreSQL accepts from ordinary logins, for the automatic limits
    /// (only when one of them is automatic). When PostgreSQL cannot be reached, the assumed 100 hold
    /// (with a warning) and a background task tries again every [`RETRY_INTERVAL`] until it succeeds.
    pub async fn read_upstream_slots(&self, upstream: &Arc<UpstreamTarget>) {
        let inner = &self.inner;
        if inner.configured_per_user.is_some() && inner.configured_per_role.is_some() {
            return;
        }
        if let Err(err) = inner.read_upstream_slots(upstream).await {
            warn!(
                error = %format!("{err:#}"),
                assumed = ASSUMED_UPSTREAM_SLOTS,
                "could not read PostgreSQL's max_connections for the automatic session limits; trying again in the background"
            );
            let (inner, upstream) = (inner.clone(), upstream.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    if inner.read_upstream_slots(&upstream).await.is_ok() {
                        break;
                    }
                }
            });
        }
    }

    fn set_upstream_slots(&self, slots: usize) {
        self.inner.set_upstream_slots(slots);
    }

    pub fn per_user(&self) -> usize {
        self.inner.per_user.load(Ordering::Relaxed)
    }

    pub fn per_role(&self) -> usize {
        self.inner.per_role.load(Ordering::Relaxed)
    }

    /// Takes a place for a session of `user` with `role` (`pooled`: in transaction pooling), or
    /// says which limit it exceeds.
    pub fn admit(&self, user: &str, role: &str, pooled: bool) -> Result<Admitted, Refused> {
        let (automatic_user, per_role) = if pooled {
            (self.inner.pooled_per_user, self.inner.pooled_per_role)
        } else {
            (self.per_user(), self.per_role())
        };
        let (per_user, user_option) = match self.inner.user_max_sessions.get(user) {
            Some(&own) => (own, "user_max_sessions"),
            None => (automatic_user, "max_sessions_per_user"),
        };
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        let counts = held.counts(pooled);
        let user_count = counts.users.get(user).copied().unwrap_or(0);
        let role_count = counts.roles.get(role).copied().unwrap_or(0);
        let exceeded = if per_user > 0 && user_count >= per_user {
            Some(("user", user, per_user, user_option))
        } else if per_role > 0 && role_count >= per_role {
            Some(("role", role, per_role, "max_sessions_per_role"))
        } else {
            None
        };
        if let Some((kind, name, limit, option)) = exceeded {
            return Err(Refused {
                code: TOO_MANY,
                message: format!(
                    "too many connections for {kind} {name:?} (limit {limit}, [limits] {option})"
                ),
                reason: option,
            });
        }
        *counts.users.entry(user.to_owned()).or_default() += 1;
        *counts.roles.entry(role.to_owned()).or_default() += 1;
        Ok(Admitted {
            inner: self.inner.clone(),
            user: user.to_owned(),
            role: role.to_owned(),
            pooled,
        })
    }

    /// The check of the user's statement rate a session's hook makes first (`None`: not limited).
    pub fn rate_limit(&self, admitted: &Admitted) -> Option<RateLimit> {
        let prepared = PreparedCap::new(self.inner.max_prepared);
        if self.inner.statements_per_second == 0 && prepared.is_none() {
            return None;
        }
        Some(RateLimit {
            inner: self.inner.clone(),
            user: admitted.user.clone(),
            prepared,
        })
    }
}

impl Inner {
    async fn read_upstream_slots(&self, upstream: &UpstreamTarget) -> anyhow::Result<()> {
        let slots = upstream_slots(upstream).await?;
        self.set_upstream_slots(slots);
        info!(
            upstream_slots = slots,
            per_user = self.per_user.load(Ordering::Relaxed),
            per_role = self.per_role.load(Ordering::Relaxed),
            "sessions allowed per user and per role (0: no limit)"
        );
        Ok(())
    }

    fn set_upstream_slots(&self, slots: usize) {
        let per_user = self.configured_per_user.unwrap_or((slots / 2).max(1));
        let per_role = self.configured_per_role.unwrap_or((slots * 3 / 4).max(1));
        self.per_user.store(per_user, Ordering::Relaxed);
        self.per_role.store(per_role, Ordering::Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        let counts = held.counts(self.pooled);
        release(&mut counts.users, &self.user);
        release(&mut counts.roles, &self.role);
        // The user's bucket stays (one per user of the users file), so that logging in again does
        // not refill it.
    }
}

impl Held {
    fn counts(&mut self, pooled: bool) -> &mut Counts {
        if pooled {
            &mut self.pooled
        } else {
            &mut self.dedicated
        }
    }
}

fn release(counts: &mut HashMap<String, usize>, name: &str) {
    if let Some(count) = counts.get_mut(name) {
        *count -= 1;
        if *count == 0 {
            counts.remove(name);
        }
    }
}

/// Sessions PostgreSQL accepts from logins without superuser rights.
/// Bounded by [`READ_TIMEOUT`], so that a PostgreSQL that does not answer cannot hold up the start.
async fn upstream_slots(upstream: &UpstreamTarget) -> anyhow::Result<usize> {
    let read = async {
        let (client, connection) = crate::enforce::policy_state::admin_connect(upstream).await?;
        let row = client
            .query_one(
                "SELECT current_setting('max_connections')::int \
                        - current_setting('superuser_reserved_connections')::int",
                &[],
            )
            .await?;
        drop(client);
        let _ = connection.await;
        anyhow::Ok(usize::try_from(row.get::<_, i32>(0)).unwrap_or(0).max(1))
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {READ_TIMEOUT:?}"))?
}

/// A token bucket: `capacity` statements at once, refilled at `capacity` per second.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks the user's statement rate on each Query and Parse, and the named statements the session
/// holds (`prepared_cap`), before the session's own decision.
pub struct RateLimit {
    inner: Arc<Inner>,
    user: String,
    prepared: Option<PreparedCap>,
}

impl RateLimit {
    /// The refusal of a Query or Parse beyond the user's rate or of a Parse of one named statement
    /// too many (`frame`: the message); `None`: the session decides.
    pub fn check(&mut self, tag: u8, frame: &[u8]) -> Option<Decision> {
        if let Some(refused) = self.prepared.as_mut().and_then(|cap| cap.check(frame)) {
            return Some(refused);
        }
        if self.inner.statements_per_second > 0 && matches!(tag, b'Q' | b'P') {
            let limit = self.inner.statements_per_second;
            let rate = f64::from(limit);
            let now = Instant::now();
            let allowed = {
                let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
                held.buckets
                    .entry(self.user.clone())
                    .or_insert(Bucket {
                        tokens: rate,
                        at: now,
                    })
                    .take(rate, now)
            };
            if !allowed {
                // No user name: the refusal's reason goes to the operational log.
                let message = format!(
                    "too many statements per second for this user (limit {limit}, [limits] max_statements_per_second_per_user)"
                );
                return Some(ClientError::new(TOO_MANY, message).into());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: Option<usize>, per_role: Option<usize>) -> Limits {
        Limits {
            max_sessions_per_user: per_user,
            max_sessions_per_role: per_role,
            ..Limits::default()
        }
    }

    #[test]
    fn a_user_over_its_limit_is_refused_and_its_places_come_back_on_drop() {
        let admission = Admission::new(&limits(Some(2), Some(3)));
        let a = admission.admit("sam", "sales", false).unwrap();
        let _b = admission.admit("sam", "sales", false).unwrap();
        let refused = admission.admit("sam", "sales", false).err().unwrap();
        assert_eq!(refused.code, "53300");
        assert_eq!(
            refused.message,
            "too many connections for user \"sam\" (limit 2, [limits] max_sessions_per_user)"
        );
        let _c = admission.admit("sara", "sales", false).unwrap();
        let refused = admission.admit("sara", "sales", false).err().unwrap();
        assert!(
            refused
                .message
                .contains("role \"sales\" (limit 3, [limits] max_sessions_per_role)"),
            "{}",
            refused.message
        );
        assert!(admission.admit("dora", "dpo", false).is_ok());
        drop(a);
        assert!(admission.admit("sara", "sales", false).is_ok());
    }

    #[test]
    fn a_user_with_a_limit_of_its_own_gets_it() {
        let mut limits = limits(Some(1), Some(0));
        limits.user_max_sessions.insert("etl".into(), 3);
        let admission = Admission::new(&limits);
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit("etl", "sales", false))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        let refused = admission.admit("etl", "sales", false).err().unwrap();
        assert_eq!(refused.reason, "user_max_sessions");
        assert!(
            refused
                .message
                .ends_with("(limit 3, [limits] user_max_sessions)"),
            "{}",
            refused.message
        );
        let _sam = admission.admit("sam", "sales", false).unwrap();
        assert!(admission.admit("sam", "sales", false).is_err());
    }

    #[test]
    fn automatic_limits_leave_room_for_others_and_zero_means_none() {
        let admission = Admission::new(&limits(None, None));
        admission.set_upstream_slots(997);
        assert_eq!((admission.per_user(), admission.per_role()), (498, 747));
        let admission = Admission::new(&limits(Some(0), Some(0)));
        let held: Vec<_> = (0..300)
            .map(|_| admission.admit("sam", "sales", false))
            .collect();
        assert!(held.iter().all(Result::is_ok));
    }

    #[test]
    fn pooled_sessions_are_limited_by_the_proxys_slots_not_postgresqls() {
        let admission = Admission::new(&Limits {
            max_connections: 3000,
            ..limits(None, None)
        });
        admission.set_upstream_slots(100);
        let dedicated: Vec<_> = (0..50)
            .map(|_| admission.admit("sam", "sales", false))
            .collect();
        assert!(dedicated.iter().all(Result::is_ok));
        assert!(admission.admit("sam", "sales", false).is_err());
        // 1,000 pooled sessions of the same user fit (half of 3,000 client slots), apart from the
        // 50 that hold a backend; the 1,501st is refused.
        let pooled: Vec<_> = (0..1500)
            .map(|_| admission.admit("sam", "sales", true))
            .collect();
        assert!(pooled.iter().all(Result::is_ok));
        let refused = admission.admit("sam", "sales", true).err().unwrap();
        assert!(
            refused.message.contains("limit 1500"),
            "{}",
            refused.message
        );
        // A configured limit counts every client session alike.
        let admission = Admission::new(&limits(Some(2), None));
        let _a = admission.admit("sam", "sales", true).unwrap();
        let _b = admission.admit("sam", "sales", true).unwrap();
        assert!(admission.admit("sam", "sales", true).is_err());
    }

    #[test]
    fn the_bucket_allows_its_rate_and_refills() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            at: start,
        };
        assert!(bucket.take(2.0, start));
        assert!(bucket.take(2.0, start));
        assert!(!bucket.take(2.0, start));
        assert!(bucket.take(2.0, start + std::time::Duration::from_millis(600)));
    }
}
