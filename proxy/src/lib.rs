//! Maschera: a PostgreSQL wire-protocol proxy that enforces a GDPR policy and records every access to
//! personal data. See the README (its threat model and repository layout) for the big picture.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod end_user;
pub mod enforce;
pub(crate) mod metrics;
pub mod net;
pub mod ops;
pub mod pool;
pub(crate) mod server;
pub mod session;
pub mod users;
pub mod wire;
