//! The data lifecycle commands that change stored data: erasure on request (`forget`) and retention
//! (`retention run`), and what they share: the foreign keys of the live database, walked to find a row's
//! dependants. Not for: reading data as a role (see `dump`) or the policy's meaning (policy crate).

pub mod foreign_keys;
pub mod forget;
pub mod retention;
