//! Login protection: after too many failed attempts per user and per client address, further attempts
//! are refused for a cooling-off period. Not for: checking passwords.
//!
//! Failures are counted in a sliding window (`window`); the `max_failures`-th failure within it locks the
//! user name (whether or not it exists) and, separately, the client address, for `cooldown`. A success
//! clears both counters. `max_failures = 0` turns the protection off. Memory is bounded: when a table
//! reaches its limit, entries with nothing left to remember are pruned and, if an attacker keeps it full
//! anyway, the least recently active unlocked entries are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most entries kept per table (user names, addresses) before pruning.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSettings {
    /// Failed attempts allowed within `window` before the user or address is locked.
    pub max_failures: u32,
    pub window: Duration,
    /// How long a lock lasts.
    pub cooldown: Duration,
}

/// Shared between all connections (interior mutability; cheap to call on every login).
pub struct Lockout {
    settings: LockoutSettings,
    max_entries: usize,
    state: Mutex<State>,
}

/// Refused because of too many failures; retry after the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedOut {
    pub retry_after: Duration,
}

#[derive(Default)]
struct State {
    users: Table<String>,
    addrs: Table<IpAddr>,
}

/// Failure records of one kind of key.
struct Table<K> {
    entries: HashMap<K, Record>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Record {
    /// Times of the recent failures, oldest first; never more than `max_failures`.
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Record {
    fn lock_remaining(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// True when the record no longer affects any decision.
    fn is_expired(&self, now: Instant, window: Duration) -> bool {
        self.lock_remaining(now).is_none()
            && self
                .failures
                .back()
                .is_none_or(|&last| now.saturating_duration_since(last) >= window)
    }
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn check(&self, key: &K, now: Instant) -> Result<(), LockedOut> {
        match self.entries.get(key).and_then(|r| r.lock_remaining(now)) {
            Some(retry_after) => Err(LockedOut { retry_after }),
            None => Ok(()),
        }
    }

    /// Records a failure; returns the new lock when this failure starts one.
    fn fail(
        &mut self,
        key: &K,
        now: Instant,
        settings: &LockoutSettings,
        max_entries: usize,
    ) -> Option<LockedOut> {
        if !self.entries.contains_key(key) && self.entries.len() >= max_entries {
            self.make_room(now, settings.window, max_entries);
        }
        let record = self.entries.entry(key.clone()).or_default();
        record.last_seen = Some(now);
        if record.lock_remaining(now).is_some() {
            return None;
        }
        while record
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= settings.window)
        {
            record.failures.pop_front();
        }
        record.failures.push_back(now);
        if record.failures.len() < settings.max_failures as usize {
            return None;
        }
        record.failures.clear();
        record.locked_until = Some(now + settings.cooldown);
        Some(LockedOut {
            retry_after: settings.cooldown,
        })
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops expired records; if the table is still full, forgets the least recently active unlocked
    /// records until it is at 90% of its limit (so this runs rarely even under a spray of names).
    fn make_room(&mut self, now: Instant, window: Duration, max_entries: usize) {
        self.entries.retain(|_, r| !r.is_expired(now, window));
        let target = max_entries - max_entries / 10;
        if self.entries.len() < max_entries {
            return;
        }
        let mut unlocked: Vec<(Option<Instant>, K)> = self
            .entries
            .iter()
            .filter(|(_, r)| r.lock_remaining(now).is_none())
            .map(|(k, r)| (r.last_seen, k.clone()))
            .collect();
        unlocked.sort_by_key(|(last_seen, _)| *last_seen);
        let excess = self.entries.len().saturating_sub(target);
        for (_, key) in unlocked.into_iter().take(excess) {
            self.entries.remove(&key);
        }
    }
}

impl fmt::Debug for Lockout {
    /// Settings only: the tables hold user names and addresses, which stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lockout")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Lockout {
    pub fn new(settings: LockoutSettings) -> Lockout {
        Lockout::with_capacity(settings, MAX_ENTRIES)
    }

    fn with_capacity(settings: LockoutSettings, max_entries: usize) -> Lockout {
        Lockout {
            settings,
            max_entries: max_entries.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.max_failures > 0
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a single step.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a login attempt of `user` from `addr` may proceed now.
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), LockedOut> {
        self.check_at(user, addr, Instant::now())
    }

    fn check_at(&self, user: &str, addr: IpAddr, now: Instant) -> Result<(), LockedOut> {
        if !self.enabled() {
            return Ok(());
        }
        let state = self.state();
        let by_user = state.users.check(&user.to_string(), now);
        let by_addr = state.addrs.check(&addr, now);
        match (by_user, by_addr) {
            (Err(a), Err(b)) => Err(LockedOut {
                retry_after: a.retry_after.max(b.retry_after),
            }),
            (Err(lock), _) | (_, Err(lock)) => Err(lock),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns `Some` when this failure starts a lock (for the log).
    pub fn record_failure(&self, user: &str, addr: IpAddr) -> Option<LockedOut> {
        self.record_failure_at(user, addr, Instant::now())
    }

    fn record_failure_at(&self, user: &str, addr: IpAddr, now: Instant) -> Option<LockedOut> {
        if !self.enabled() {
            return None;
        }
        let mut state = self.state();
        let (settings, max) = (&self.settings, self.max_entries);
        let by_user = state.users.fail(&user.to_string(), now, settings, max);
        let by_addr = state.addrs.fail(&addr, now, settings, max);
        by_user.or(by_addr)
    }

    /// Records a success, clearing the user's and the address's failures.
    pub fn record_success(&self, user: &str, addr: IpAddr) {
        let mut state = self.state();
        state.users.clear(&user.to_string());
        state.addrs.clear(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn lockout(max_failures: u32) -> Lockout {
        Lockout::new(LockoutSettings {
            max_failures,
            window: 60 * SECOND,
            cooldown: 300 * SECOND,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn locks_the_user_after_max_failures_and_unlocks_after_cooldown() {
        let lock = lockout(3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(lock.record_failure_at("sam", a, t0), None);
        assert_eq!(lock.record_failure_at("sam", a, t0 + SECOND), None);
        assert!(lock.check_at("sam", a, t0 + SECOND).is_ok());
        let started = lock.record_failure_at("sam", a, t0 + 2 * SECOND);
        assert_eq!(started.map(|l| l.retry_after), Some(300 * SECOND));

        let now = t0 + 3 * SECOND;
        assert_eq!(
            lock.check_at("sam", ip("10.0.0.2"), now)
                .unwrap_err()
                .retry_after,
            299 * SECOND
        );
        assert!(
            lock.check_at("ana", a, now).is_err(),
            "the address is locked too"
        );
        assert!(
            lock.check_at("ana", ip("10.0.0.2"), now).is_ok(),
            "others are not"
        );

        let later = t0 + 303 * SECOND;
        assert!(
            lock.check_at("sam", a, later).is_ok(),
            "unlocked after the cooldown"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let lock = lockout(3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        lock.record_failure_at("sam", a, t0);
        lock.record_failure_at("sam", a, t0 + 30 * SECOND);
        assert_eq!(lock.record_failure_at("sam", a, t0 + 61 * SECOND), None);
        assert!(lock.check_at("sam", a, t0 + 61 * SECOND).is_ok());
        assert!(lock.record_failure_at("sam", a, t0 + 62 * SECOND).is_some());
    }

    #[test]
    fn the_address_is_locked_for_a_spray_of_user_names() {
        let lock = lockout(3);
        let t0 = Instant::now();
        let a = ip("2001:db8::1");
        for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
            let started = lock.record_failure_at(user, a, t0 + i as u32 * SECOND);
            assert_eq!(started.is_some(), i == 2);
        }
        assert!(lock.check_at("u4", a, t0 + 3 * SECOND).is_err());
    }

    #[test]
    fn success_clears_the_failures() {
        let lock = lockout(3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        lock.record_failure_at("sam", a, t0);
        lock.record_failure_at("sam", a, t0);
        lock.record_success("sam", a);
        assert_eq!(lock.record_failure_at("sam", a, t0), None);
        assert_eq!(lock.record_failure_at("sam", a, t0), None);
        assert!(lock.check_at("sam", a, t0).is_ok());
    }

    #[test]
    fn zero_max_failures_disables_the_protection() {
        let lock = lockout(0);
        let a = ip("10.0.0.1");
        for _ in 0..10 {
            assert_eq!(lock.record_failure("sam", a), None);
        }
        assert!(lock.check("sam", a).is_ok());
    }

    #[test]
    fn memory_stays_bounded_and_locks_survive_pruning() {
        let settings = LockoutSettings {
            max_failures: 2,
            window: 60 * SECOND,
            cooldown: 300 * SECOND,
        };
        let lock = Lockout::with_capacity(settings, 100);
        let t0 = Instant::now();
        let attacker = ip("10.0.0.9");
        lock.record_failure_at("victim", ip("10.0.0.1"), t0);
        lock.record_failure_at("victim", ip("10.0.0.2"), t0);
        for i in 0..1000u32 {
            let addr = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            lock.record_failure_at(&format!("user{i}"), addr, t0 + SECOND);
        }
        lock.record_failure_at("again", attacker, t0 + 2 * SECOND);
        let state = lock.state();
        assert!(state.users.entries.len() <= 100);
        assert!(state.addrs.entries.len() <= 100);
        drop(state);
        assert!(
            lock.check_at("victim", ip("10.0.0.3"), t0 + 2 * SECOND)
                .is_err()
        );
    }

    #[test]
    fn real_clock_locks_now_and_unlocks_after_the_cooldown() {
        let lock = Lockout::new(LockoutSettings {
            max_failures: 1,
            window: 60 * SECOND,
            cooldown: 2 * SECOND,
        });
        let a = ip("127.0.0.1");
        assert!(lock.record_failure("sam", a).is_some());
        assert!(lock.check("sam", a).is_err());
        std::thread::sleep(3 * SECOND);
        assert!(lock.check("sam", a).is_ok());
    }
}
