//! The reference CRM behind the proxy, the way a CRM developer meets it: a private PostgreSQL with the
//! CRM filled by the real generator, `examples/crm/policy.toml` applied by `maschera policy apply`, the
//! demo users `dora` (dpo) and `sam` (sales, region north) in a users file, and `maschera serve`
//! enforcing the policy. For tests that drive client libraries against it. Not for: assertions.

use crate::{PgServer, Proxy, ProxyOptions, crm::load_crm, examples_dir, maschera_bin};
use anyhow::{Context, Result, bail};
use maschera::scram::Verifier;
use maschera::users::{User, UserStore};
use std::path::PathBuf;
use std::process::Command;

/// The CRM database.
pub const CRM_DB: &str = "crm";

/// A demo user: (name, role, attributes as (name, value)).
pub type CrmUser = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The demo users it serves.
pub const CRM_USERS: &[CrmUser] = &[
    ("dora", "dpo", &[]),
    ("sam", "sales", &[("region", "north")]),
];

/// The password of a demo user.
pub fn crm_password(user: &str) -> String {
    format!("Crm-{user}-p4ss#Wq8!zR")
}

/// PostgreSQL with the CRM and the proxy enforcing the reference policy in front of it.
pub struct CrmProxy {
    pub pg: PgServer,
    pub proxy: Proxy,
}

impl CrmProxy {
    /// Starts everything with `contacts` generated contacts (seed 1).
    pub async fn start(contacts: u64) -> Result<CrmProxy> {
        let pg = PgServer::start()?;
        load_crm(&pg, CRM_DB, contacts, 1).await?;
        let applied = apply_reference_policy(&pg, CRM_DB, "crm-proxy-test-pseudonym-key")?;
        let users = pg.dir().join("users.toml");
        write_crm_users(&users)?;
        let options = ProxyOptions {
            database: CRM_DB.into(),
            users_file: Some(users),
            policy: applied.proxy_section(None),
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start(&pg, options)?;
        Ok(CrmProxy { pg, proxy })
    }

    /// A connection URI through the proxy as a demo user.
    pub fn uri(&self, user: &str) -> String {
        self.proxy.uri_as(user, &crm_password(user), CRM_DB)
    }
}

/// Writes the users file of [`CRM_USERS`] (with [`crm_password`]) to `path`.
pub fn write_crm_users(path: &std::path::Path) -> Result<()> {
    let mut store = UserStore::default();
    for (name, role, attributes) in CRM_USERS {
        store.insert(User {
            name: (*name).to_owned(),
            role: (*role).to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            verifier: Verifier::from_password(&crm_password(name), 4096),
        })?;
    }
    store.save(path)?;
    Ok(())
}

/// The reference policy as `maschera policy apply` installed it: the files the proxy's `[policy]` reads.
pub struct AppliedPolicy {
    /// A copy of `examples/crm/policy.toml` in the server's folder (tests may edit it to reload).
    pub policy: PathBuf,
    /// The role logins the apply wrote.
    pub credentials: PathBuf,
}

impl AppliedPolicy {
    /// The body of the proxy's `[policy]` section, with `poll_seconds` when given.
    pub fn proxy_section(&self, poll_seconds: Option<u64>) -> String {
        let mut section = format!(
            "file = {:?}\ncredentials = {:?}",
            self.policy.display().to_string(),
            self.credentials.display().to_string()
        );
        if let Some(seconds) = poll_seconds {
            section.push_str(&format!("\npoll_seconds = {seconds}"));
        }
        section
    }
}

/// Copies `examples/crm/policy.toml` beside the server's data and applies it to `db` with the real
/// binary (`maschera policy apply`), with `pseudonym_key` as the key.
pub fn apply_reference_policy(
    pg: &PgServer,
    db: &str,
    pseudonym_key: &str,
) -> Result<AppliedPolicy> {
    let dir = pg.dir();
    let policy = dir.join("policy.toml");
    std::fs::copy(examples_dir().join("crm/policy.toml"), &policy)?;
    let credentials = dir.join("logins.toml");
    let out = Command::new(maschera_bin())
        .args(["policy", "apply"])
        .arg(&policy)
        .args(["--upstream", &pg.uri(db), "--credentials"])
        .arg(&credentials)
        .env("MASCHERA_PSEUDONYM_KEY", pseudonym_key)
        .output()
        .context("run maschera policy apply")?;
    if !out.status.success() {
        bail!("policy apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(AppliedPolicy {
        policy,
        credentials,
    })
}
