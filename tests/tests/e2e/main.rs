//! All end-to-end tests, in one binary so they build once and run in parallel under nextest.
//! Each work area owns one module.

mod audit;
mod catalog;
mod harness;
mod crm;
mod discover;
mod faults;
mod policy;
mod users;
mod wire;
