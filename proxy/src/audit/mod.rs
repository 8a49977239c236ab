//! The access log: a durable, tamper-evident, searchable record of every access to personal data, every
//! refused statement, logins, lockouts and policy changes (GDPR Art. 30, 32, 33).
//! Not for: deciding what a statement touches (the policy rewriter does) or operational logs (tracing).
//!
//! The session builds an [`Event`] (statement already normalized with [`normalize()`]; a statement's
//! records as a [`PreparedEvent`] of parts rendered once per session and statement), queues it with
//! [`AuditLog::submit`] and awaits the [`Receipt`] before it forwards the statement's completion (see
//! `audit_trail`); when the log cannot be written, the receipt fails and [`AuditLog::is_healthy`] turns
//! false, and the session refuses statements that touch personal data. Auditors use [`verify`], [`search`] and [`report`] (the `maschera audit` commands).

pub(crate) mod chain;
mod clock;
pub(crate) mod config;
pub mod files;
mod group_commit;
pub mod keys;
pub mod normalize;
pub(crate) mod prepared;
pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod search;
mod sinks;
pub mod verify;
mod writer;

pub use config::{AuditConfig, Durability};
pub use group_commit::{AuditLog, Completion, Receipt};
pub use normalize::normalize;
pub use prepared::{Entry, PreparedEvent, What, Who};
pub use record::{ColumnAction, ColumnTouched, Event, EventKind, Outcome, Record, TableTouched};

use std::path::PathBuf;

/// What can go wrong with the access log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A record could not be made durable; it is not in the log.
    #[error("the access log cannot be written: {0}")]
    Unwritable(String),
    #[error("the access log is closed")]
    Closed,
    #[error("event kind {0} is written by the access log itself")]
    ReservedKind(&'static str),
    #[error("{what} {why}")]
    Key { what: String, why: String },
    #[error("audit configuration: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
#[cfg(test)]
mod tests;
