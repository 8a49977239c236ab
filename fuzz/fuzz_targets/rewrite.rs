//! The statement rewriter on any text, for every role of the reference CRM policy, through both
//! entry points (simple query and Parse). Never a panic; whenever a restricted role's statement is
//! accepted, the rewritten SQL parses back and names no base table of the policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::access::{Catalog, RoleAccess};
use policy::rewrite::{self, Rewritten, fixture};
use std::sync::OnceLock;

#[path = "../../policy/tests/base_tables/mod.rs"]
mod base_tables;

fn reference() -> &'static (Catalog, Vec<RoleAccess>) {
    static REFERENCE: OnceLock<(Catalog, Vec<RoleAccess>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let roles = fixture::ROLES.iter().map(|r| fixture::role(r)).collect();
        (fixture::catalog(), roles)
    })
}

fn check(role: &RoleAccess, sql: &str, accepted: &Rewritten) {
    if role.unrestricted {
        return;
    }
    for statement in accepted.statements() {
        match base_tables::base_table_named(&statement.sql, role) {
            Ok(None) => {}
            Ok(Some(table)) => panic!(
                "role {} reaches base table {table}: {sql:?} became {:?}",
                role.role, statement.sql
            ),
            Err(e) => panic!("rewritten SQL does not parse back: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let (catalog, roles) = reference();
    for role in roles {
        if let Ok(out) = rewrite::rewrite(sql, role, catalog) {
            check(role, sql, &out);
        }
        if let Ok(out) = rewrite::rewrite_prepared(sql, role, catalog) {
            check(role, sql, &out);
        }
    }
});
