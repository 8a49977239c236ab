//! Maschera: a PostgreSQL wire-protocol proxy that enforces a GDPR policy and records every access to
//! personal data. See `DESIGN.md` in the shared notes and the README for the big picture.

pub mod audit;
pub mod audit_cmd;
pub mod audit_trail;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod client_auth;
pub mod config;
pub mod credentials;
pub mod crm;
pub mod demo;
pub mod discover;
pub mod dump;
pub mod embedded_pg;
pub mod enforce;
pub mod frame;
pub mod lifecycle;
pub mod lockout;
pub mod metrics;
pub mod password;
pub mod policy_apply;
pub mod policy_cmd;
pub mod policy_state;
pub mod relay_buffer;
pub mod schema_change;
pub mod scram;
pub mod serve_cmd;
pub mod server;
pub mod session;
pub mod startup;
pub mod tls;
pub mod upstream;
pub mod user_cmd;
pub mod users;
pub mod workers;
