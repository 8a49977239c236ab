//! Which database a session goes to, and under which policy: the database the client names in its
//! startup message (PostgreSQL's default, the user name, when it names none), never another one.
//!
//! - A *served* database (`[upstream] database` with `[policy]`, or `[databases.<name>]`) has its
//!   own loaded policy ([`PolicyHandle`]: catalog, compiled roles, rewrite cache, reload, schema
//!   changes) and its users are served by that policy, as `enforce` decides.
//! - Another database is reached only when the configuration allows it (`[upstream] databases`:
//!   names, `"*"` or `"prefix*"`) and only by an unrestricted user: a role that every served policy
//!   naming it marks unrestricted (with no policy configured at all, every user). The session then
//!   passes through on the proxy's own `[upstream]` login, so `CREATE DATABASE` and `DROP DATABASE`
//!   run on that connection as they would on PostgreSQL.
//! - Anything else is refused with FATAL 3D000 and a message saying why, before any upstream
//!   connection is made.
//!
//! Not for: deciding about statements or logins within a database (see `enforce`), loading a
//! policy (see `policy_state`) or the configuration's syntax (see `config`).

use crate::config::Config;
use crate::enforce::LoginRefusal;
use crate::enforce::policy_state::PolicyHandle;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The served databases and the patterns of the others clients may name.
#[derive(Default)]
pub struct Routing {
    served: BTreeMap<String, Arc<PolicyHandle>>,
    /// `[upstream] databases` plus `[upstream] database`.
    allowed: Vec<String>,
}

/// Where a session goes.
pub enum Route {
    /// A served database: its policy decides how the user is served.
    Served(Arc<PolicyHandle>),
    /// An allowed database without a policy, for an unrestricted user: everything passes.
    PassThrough,
}

impl Routing {
    /// Loads the policy of every served database (each compiled against its own database's catalog).
    pub async fn load(config: &Config) -> Result<Routing> {
        let mut served = BTreeMap::new();
        for (database, policy) in config.served_databases() {
            let mut upstream = config.upstream.clone();
            upstream.database = database.clone();
            let handle = PolicyHandle::load(&policy, &upstream)
                .await
                .with_context(|| format!("loading the policy of database {database:?}"))?;
            served.insert(database, Arc::new(handle));
        }
        let mut allowed = config.upstream.databases.clone();
        allowed.push(config.upstream.database.clone());
        Ok(Routing { served, allowed })
    }

    /// The served databases and their policies.
    pub fn served(&self) -> impl Iterator<Item = (&str, &Arc<PolicyHandle>)> {
        self.served
            .iter()
            .map(|(name, handle)| (name.as_str(), handle))
    }

    /// Where a user of `role` asking for `database` goes, or why it may not.
    pub fn route(&self, database: &str, role: &str) -> Result<Route, LoginRefusal> {
        if let Some(handle) = self.served.get(database) {
            return Ok(Route::Served(handle.clone()));
        }
        if !self.allows(database) {
            return Err(LoginRefusal {
                code: "3D000",
                message: format!(
                    "database \"{database}\" is not served by this proxy: the proxy's configuration \
                     must list it in [upstream] databases or give it a [databases.{database}] section"
                ),
            });
        }
        if self.unrestricted(role) {
            return Ok(Route::PassThrough);
        }
        Err(LoginRefusal {
            code: "3D000",
            message: format!(
                "database \"{database}\" has no Maschera policy, and role \"{role}\" is restricted: \
                 it may only connect to a database whose policy names it"
            ),
        })
    }

    fn allows(&self, database: &str) -> bool {
        self.allowed
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => database.starts_with(prefix),
                None => pattern == database,
            })
    }

    /// Whether `role` is unrestricted everywhere: every served policy that names it says so (and
    /// one does), or no policy is configured at all.
    fn unrestricted(&self, role: &str) -> bool {
        if self.served.is_empty() {
            return true;
        }
        let mut named = false;
        for handle in self.served.values() {
            if let Some(access) = handle.current().role(role) {
                if !access.unrestricted {
                    return false;
                }
                named = true;
            }
        }
        named
    }
}

/// The database a client asks for: its `database` startup parameter, or (as in PostgreSQL) its
/// user name when it gives none.
pub fn requested_database<'a>(params: &'a [(String, String)], user: &'a str) -> &'a str {
    params
        .iter()
        .find(|(name, _)| name == "database")
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
        .unwrap_or(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(allowed: &[&str]) -> Routing {
        Routing {
            served: BTreeMap::new(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_configured_names_and_patterns_are_allowed() {
        let r = routing(&["crm", "test_*"]);
        assert!(r.allows("crm"));
        assert!(r.allows("test_crm"));
        assert!(!r.allows("crm2"));
        assert!(!r.allows("postgres"));
        assert!(routing(&["*"]).allows("anything"));
        let refused = match r.route("postgres", "dpo") {
            Err(refusal) => refusal,
            Ok(_) => panic!("postgres is not allowed"),
        };
        assert_eq!(refused.code, "3D000");
        assert!(refused.message.contains("\"postgres\" is not served"));
        // No policy configured: every user is unrestricted.
        assert!(matches!(r.route("test_x", "sales"), Ok(Route::PassThrough)));
    }

    #[test]
    fn the_database_is_the_one_named_else_the_user_name() {
        let params = vec![("database".to_string(), "test_crm".to_string())];
        assert_eq!(requested_database(&params, "dora"), "test_crm");
        assert_eq!(requested_database(&[], "dora"), "dora");
        let empty = vec![("database".to_string(), String::new())];
        assert_eq!(requested_database(&empty, "dora"), "dora");
    }
}
