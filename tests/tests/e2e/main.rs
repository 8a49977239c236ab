//! All end-to-end tests, in one binary so they build once and run in parallel under nextest.
//! Each work area owns one module.

mod applyowner;
mod audit;
mod catalog;
mod compat;
mod crm;
mod databases;
mod dblock;
mod demo;
mod discover;
mod dpo;
mod enforce;
mod faults;
mod harness;
mod lifecycle;
mod limits;
mod ops;
mod parse_limits;
mod policy;
mod real_crm;
mod redact;
mod row_oracles;
mod users;
mod wire;
