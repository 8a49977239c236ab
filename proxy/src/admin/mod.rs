//! The proxy's administrative side of PostgreSQL: its own tokio-postgres connections (`admin_connect`),
//! the catalog it reads, `policy apply` and what it needs, the credentials file it writes, whether
//! the database lock's objects are whole, transaction pooling's event trigger, the CRM's definer
//! triggers that a login could steer, and reading a policy file for a command.
//! Not for: relaying client sessions (`session`) or deciding per statement (`enforce`).

pub(crate) mod admin_connect;
pub(crate) mod apply_privileges;
pub mod catalog;
pub(crate) mod compiled_objects;
pub mod credentials;
pub(crate) mod definer_triggers;
pub(crate) mod login_check;
pub mod policy_apply;
pub(crate) mod policy_file;
pub(crate) mod pool_guard;
