//! Login protection: after too many failed attempts per user and per client address, further attempts
//! are refused for a cooling-off period. Not for: checking passwords.
//! INTERFACE STUB: the auth work stream replaces the bodies; the signatures are the contract.

use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSettings {
    /// Failed attempts allowed within `window` before the user or address is locked.
    pub max_failures: u32,
    pub window: Duration,
    /// How long a lock lasts.
    pub cooldown: Duration,
}

/// Shared between all connections (interior mutability; cheap to call on every login).
#[derive(Debug)]
pub struct Lockout {}

/// Refused because of too many failures; retry after the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedOut {
    pub retry_after: Duration,
}

impl Lockout {
    pub fn new(_settings: LockoutSettings) -> Lockout {
        unimplemented!("auth work stream")
    }

    /// Whether a login attempt of `user` from `addr` may proceed now.
    pub fn check(&self, _user: &str, _addr: IpAddr) -> Result<(), LockedOut> {
        unimplemented!("auth work stream")
    }

    /// Records a failed attempt; returns `Some` when this failure starts a lock (for the log).
    pub fn record_failure(&self, _user: &str, _addr: IpAddr) -> Option<LockedOut> {
        unimplemented!("auth work stream")
    }

    /// Records a success, clearing the user's and the address's failures.
    pub fn record_success(&self, _user: &str, _addr: IpAddr) {
        unimplemented!("auth work stream")
    }
}
