//! The proxy's users file: who may log in, with which role and attributes, and their SCRAM verifier.
//! Never a password. Not for: authentication itself (see `scram`) or lockout (see `lockout`).
//! INTERFACE STUB: the auth work stream replaces the bodies; the signatures are the contract.

use crate::scram::Verifier;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A role of the policy, e.g. `sales`.
    pub role: String,
    /// Attributes the row filters read, e.g. `region = "north"`.
    pub attributes: BTreeMap<String, String>,
    pub verifier: Verifier,
}

/// The users file loaded in memory.
#[derive(Debug, Clone, Default)]
pub struct UserStore {
    users: BTreeMap<String, User>,
}

impl UserStore {
    pub fn load(_path: &Path) -> anyhow::Result<UserStore> {
        unimplemented!("auth work stream")
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }
}
