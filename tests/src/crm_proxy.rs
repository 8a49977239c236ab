//! The reference CRM behind the proxy, the way a CRM developer meets it: a private PostgreSQL with the
//! CRM filled by the real generator, `examples/crm/policy.toml` applied by `maschera policy apply`, the
//! demo users `dora` (dpo) and `sam` (sales, region north) in a users file, and `maschera serve`
//! enforcing the policy. For tests that drive client libraries against it. Not for: assertions.

use crate::{
    PgServer, PgServerOptions, Proxy, ProxyOptions, crm::load_crm, examples_dir, maschera_bin,
};
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

/// The pseudonym key the policy is applied with.
pub const CRM_PSEUDONYM_KEY: &str = "crm-proxy-test-pseudonym-key";

/// The demo users it serves by default.
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
    /// The policy files the proxy serves (tests may edit the policy and reload).
    pub applied: AppliedPolicy,
}

/// What [`CrmProxy::start_with`] sets up beyond the CRM and the reference policy.
pub struct CrmSetup {
    /// Generated contacts (seed 1).
    pub contacts: u64,
    /// The proxy's users.
    pub users: Vec<CrmUser>,
    /// How PostgreSQL starts (e.g. `max_connections`).
    pub pg: PgServerOptions,
    /// The proxy's options; `database`, `users_file` and `policy` are filled in.
    pub proxy: ProxyOptions,
    /// `[policy] poll_seconds` (None: the proxy's default).
    pub poll_seconds: Option<u64>,
    /// SCRAM iterations of the users' verifiers (the clients' cost of a login; the proxy's is the
    /// same at any count).
    pub scram_iterations: u32,
}

impl CrmSetup {
    /// [`CRM_USERS`], default servers, no polling.
    pub fn new(contacts: u64) -> CrmSetup {
        CrmSetup {
            contacts,
            users: CRM_USERS.to_vec(),
            pg: PgServerOptions::default(),
            proxy: ProxyOptions::default(),
            poll_seconds: None,
            scram_iterations: 4096,
        }
    }
}

impl CrmProxy {
    /// Starts everything with `contacts` generated contacts (seed 1).
    pub async fn start(contacts: u64) -> Result<CrmProxy> {
        Self::start_with(CrmSetup::new(contacts)).await
    }

    /// Starts everything as `setup` says.
    pub async fn start_with(setup: CrmSetup) -> Result<CrmProxy> {
        let pg = PgServer::start_with(setup.pg)?;
        load_crm(&pg, CRM_DB, setup.contacts, 1).await?;
        let applied = apply_reference_policy(&pg, CRM_DB, CRM_PSEUDONYM_KEY)?;
        let dir = pg.dir().to_path_buf();
        let users = dir.join("users.toml");
        write_crm_users(&users, &setup.users, setup.scram_iterations)?;
        let options = ProxyOptions {
            database: CRM_DB.into(),
            users_file: Some(users),
            policy: applied.proxy_section(setup.poll_seconds),
            ..setup.proxy
        };
        let proxy = Proxy::start(&pg, options)?;
        Ok(CrmProxy { pg, proxy, applied })
    }

    /// A connection URI through the proxy as a demo user.
    pub fn uri(&self, user: &str) -> String {
        self.proxy.uri_as(user, &crm_password(user), CRM_DB)
    }
}

/// Writes the users file of [`CRM_USERS`] (with [`crm_password`]) to `path`.
pub fn write_crm_users(
    path: &std::path::Path,
    users: &[CrmUser],
    scram_iterations: u32,
) -> Result<()> {
    let mut store = UserStore::default();
    for (name, role, attributes) in users {
        store.insert(User {
            name: (*name).to_owned(),
            role: (*role).to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            verifier: Verifier::from_password(&crm_password(name), scram_iterations),
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
    let applied = AppliedPolicy {
        policy: dir.join("policy.toml"),
        credentials: dir.join("logins.toml"),
    };
    std::fs::copy(examples_dir().join("crm/policy.toml"), &applied.policy)?;
    apply_policy(pg, db, &applied, pseudonym_key)?;
    Ok(applied)
}

/// Applies the policy file of `applied` (as it is now) to `db` with `maschera policy apply`,
/// keeping the logins its credentials file holds.
pub fn apply_policy(
    pg: &PgServer,
    db: &str,
    applied: &AppliedPolicy,
    pseudonym_key: &str,
) -> Result<()> {
    let out = Command::new(maschera_bin())
        .args(["policy", "apply"])
        .arg(&applied.policy)
        .args(["--upstream", &pg.uri(db), "--credentials"])
        .arg(&applied.credentials)
        .env("MASCHERA_PSEUDONYM_KEY", pseudonym_key)
        .output()
        .context("run maschera policy apply")?;
    if !out.status.success() {
        bail!("policy apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
