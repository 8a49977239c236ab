//! The Maschera policy: the model DBAs write (roles, categories, actions, row filters), its validation,
//! its compilation to PostgreSQL objects, and the statement rewriter. Pure functions: no I/O, no async.

pub mod access;
pub mod rewrite;
