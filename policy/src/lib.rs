//! The Maschera policy: the model DBAs write (roles, categories, actions, row filters), its validation,
//! its compilation to PostgreSQL objects, and the statement rewriter. Pure functions: no I/O, no async.

#![forbid(unsafe_code)]

pub mod access;
pub mod action;
pub mod alter_catalog;
pub mod apply_sql;
pub mod attribute_seal;
pub mod cascade;
mod column_sql;
pub mod compile;
pub mod controller;
pub mod db_lock;
pub mod diagnostics;
pub mod erasure;
mod file;
pub mod filter;
pub mod framework;
pub mod inspect;
pub mod lookup_sql;
pub mod model;
pub mod pool_guard;
pub mod pseudonym;
pub mod redact;
pub mod register;
pub mod retention;
pub mod rewrite;
pub mod step;
mod validate;
pub mod write_back;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use model::Policy;
