//! Operations built on the proxy's library: the anonymised dump, the data lifecycle (forget,
//! export, retention), the demo, the reference CRM generator, discovery of personal data, the
//! embedded PostgreSQL server, and the cap on what reaches the operational log.
//! Not for: the command-line parsing of these jobs (see `cli`) or the proxy's relay.

pub(crate) mod calendar;
pub mod crm;
pub mod demo;
pub mod discover;
pub(crate) mod dump;
pub mod embedded_pg;
pub mod lifecycle;
pub(crate) mod log_cap;
