//! Maschera: a PostgreSQL wire-protocol proxy that enforces a GDPR policy and records every access to
//! personal data. See `DESIGN.md` in the shared notes and the README for the big picture.

pub mod audit;
pub mod audit_cmd;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod embedded_pg;
pub mod lockout;
pub mod metrics;
pub mod password;
pub mod policy_apply;
pub mod policy_cmd;
pub mod scram;
pub mod user_cmd;
pub mod users;
pub mod crm;
pub mod discover;
