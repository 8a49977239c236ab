//! Maschera: a PostgreSQL wire-protocol proxy that enforces a GDPR policy and records every access to
//! personal data. See the README (its threat model and repository layout) for the big picture.
//!
//! The layers, lowest first (each uses only the ones before it; `.ci/module_cycles.py` checks):
//! `wire`, `net`, `admin`, `session`, `enforce`, `server`, `ops`, `cli`. Beside them, used across
//! layers: `config`, `users`, `audit`, `pool`, `end_user`, `metrics`. A module is `pub` only when
//! `tests/`, `fuzz/` or the benches use it.

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
