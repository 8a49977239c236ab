//! Maschera: a PostgreSQL wire-protocol proxy that enforces a GDPR policy and records every access to
//! personal data. See `DESIGN.md` in the shared notes and the README for the big picture.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod password;
pub mod lockout;
pub mod scram;
pub mod users;
pub mod user_cmd;
pub mod policy_cmd;
pub mod audit;
pub mod audit_cmd;
pub mod crm;
pub mod discover;
