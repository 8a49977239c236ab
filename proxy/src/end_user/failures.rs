//! Bad end-user tokens counted per application user and client address: beyond `max_failures` in
//! `failure_window_seconds`, every token from that pair is refused (53300) until the window has
//! passed, so that one misbehaving client cannot try tokens without end, and cannot lock a whole
//! application out either (the login lockout, see `lockout`, is apart from this).
//!
//! Not for: verifying tokens (see `token`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pairs remembered at most; beyond, the pairs with no failure in the window are forgotten.
const MAX_PAIRS: usize = 10_000;

/// The failures of every (application user, client address) pair of one proxy.
#[derive(Debug)]
pub struct TokenFailures {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<(String, IpAddr), VecDeque<Instant>>>,
}

impl TokenFailures {
    pub fn new(max: u32, window: Duration) -> Self {
        TokenFailures {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `application` from `address` may present a token now.
    pub fn allowed(&self, application: &str, address: IpAddr) -> bool {
        self.allowed_at(application, address, Instant::now())
    }

    fn allowed_at(&self, application: &str, address: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (application.to_owned(), address);
        let Some(times) = seen.get_mut(&key) else {
            return true;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        (times.len() as u32) < self.max
    }

    /// A bad token from `application` at `address`.
    pub fn failed(&self, application: &str, address: IpAddr) {
        self.failed_at(application, address, Instant::now());
    }

    fn failed_at(&self, application: &str, address: IpAddr, now: Instant) {
        if self.max == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_PAIRS {
            let window = self.window;
            seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let times = seen.entry((application.to_owned(), address)).or_default();
        times.push_back(now);
        while times.len() > self.max as usize {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_application_and_address_within_the_window() {
        let failures = TokenFailures::new(2, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        failures.failed_at("crm", a, start);
        assert!(failures.allowed_at("crm", a, start));
        failures.failed_at("crm", a, start);
        assert!(!failures.allowed_at("crm", a, start));
        assert!(failures.allowed_at("crm", b, start), "another address");
        assert!(failures.allowed_at("erp", a, start), "another application");
        assert!(failures.allowed_at("crm", a, start + Duration::from_secs(61)));
        let off = TokenFailures::new(0, Duration::from_secs(60));
        off.failed_at("crm", a, start);
        assert!(off.allowed_at("crm", a, start));
    }
}
