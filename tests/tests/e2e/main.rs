//! All end-to-end tests, in one binary so they build once and run in parallel under nextest.
//! Each work area owns one module.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]
#![allow(unsafe_code, reason = "libc::kill and std::env::set_var in tests")]

mod apply_locks;
mod applyowner;
mod attack_round3;
mod attack_round4;
mod attack_round5;
mod attribute_seal;
mod audit;
mod catalog;
mod compat;
mod compat_more;
mod compat_orms;
mod crm;
mod databases;
mod dblock;
mod dblock_cost;
mod dblock_speed;
mod demo;
mod discover;
mod discover_crm;
mod discover_real;
mod dpo;
mod end_user;
mod end_user_drivers;
mod end_user_integrations;
mod end_user_transactions;
mod enforce;
mod faults;
mod foreign_keys;
mod framework;
mod harness;
mod lifecycle;
mod limits;
mod login_defaults;
mod lookup;
mod messages;
mod ops;
mod orm_node;
mod parse_limits;
mod plan_cache;
mod plan_cache_default;
mod policy;
mod pooling;
mod pooling_faults;
mod pooling_hidden_state;
mod pooling_more;
mod pooling_stall;
mod pooling_state;
mod real_crm;
mod redact;
mod row_oracles;
mod users;
mod wire;
mod writeback;
