//! The parts of the reference CRM setup that tests also use one by one: the CRM database's name, the
//! demo users `dora` (dpo) and `sam` (sales, region north) and their passwords, writing a users file,
//! and applying a policy with the real `maschera policy apply`. The whole setup is
//! [`crate::Fixture`]. Not for: assertions.

use crate::{PgServer, examples_dir, maschera_bin};
use anyhow::{Context, Result, bail};
use maschera::net::scram::Verifier;
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

    /// Options for a proxy that serves `database` under this policy to the users of `users_file`.
    pub fn proxy_options(&self, database: &str, users_file: PathBuf) -> crate::proxy::ProxyOptions {
        crate::proxy::ProxyOptions {
            database: database.into(),
            users_file: Some(users_file),
            policy: self.proxy_section(None),
            ..Default::default()
        }
    }
}

/// Copies `examples/crm/policy.toml` beside the server's data and applies it to `db` with the real
/// binary (`maschera policy apply`), with `pseudonym_key` as the key.
pub fn apply_reference_policy(
    pg: &PgServer,
    db: &str,
    pseudonym_key: &str,
) -> Result<AppliedPolicy> {
    apply_edited_policy(pg, db, pseudonym_key, |text| text)
}

/// Writes `examples/crm/policy.toml` as `edit` turns its text beside the server's data and applies
/// it to `db` with the real binary, with `pseudonym_key` as the key.
pub fn apply_edited_policy(
    pg: &PgServer,
    db: &str,
    pseudonym_key: &str,
    edit: impl FnOnce(String) -> String,
) -> Result<AppliedPolicy> {
    apply_example_edited(pg, db, "crm/policy.toml", pseudonym_key, edit)
}

/// Copies the policy file `example` of `examples/` (e.g. `django-crm/policy.toml`) beside the
/// server's data and applies it to `db` with the real binary, with `pseudonym_key` as the key.
pub fn apply_example_policy(
    pg: &PgServer,
    db: &str,
    example: &str,
    pseudonym_key: &str,
) -> Result<AppliedPolicy> {
    apply_example_edited(pg, db, example, pseudonym_key, |text| text)
}

fn apply_example_edited(
    pg: &PgServer,
    db: &str,
    example: &str,
    pseudonym_key: &str,
    edit: impl FnOnce(String) -> String,
) -> Result<AppliedPolicy> {
    let dir = pg.dir();
    let applied = AppliedPolicy {
        policy: dir.join("policy.toml"),
        credentials: dir.join("logins.toml"),
    };
    let text = std::fs::read_to_string(examples_dir().join(example))?;
    std::fs::write(&applied.policy, edit(text))?;
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
    apply_policy_with(pg, db, applied, pseudonym_key, &[])
}

/// [`apply_policy`] with more arguments (`--rotate`).
pub fn apply_policy_with(
    pg: &PgServer,
    db: &str,
    applied: &AppliedPolicy,
    pseudonym_key: &str,
    extra: &[&str],
) -> Result<()> {
    let out = Command::new(maschera_bin())
        .args(["policy", "apply"])
        .arg(&applied.policy)
        .args(["--upstream", &pg.uri(db), "--credentials"])
        .arg(&applied.credentials)
        .args(extra)
        .env("MASCHERA_PSEUDONYM_KEY", pseudonym_key)
        .output()
        .context("run maschera policy apply")?;
    if !out.status.success() {
        bail!("policy apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
