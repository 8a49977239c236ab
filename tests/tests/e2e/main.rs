//! All end-to-end tests, in one binary so they build once and run in parallel under nextest.
//! Each work area owns one module.

mod audit;
mod catalog;
mod compat;
mod crm;
mod dblock;
mod demo;
mod discover;
mod enforce;
mod faults;
mod harness;
mod lifecycle;
mod limits;
mod policy;
mod users;
mod wire;
