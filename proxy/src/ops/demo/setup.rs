//! What the demo sets up before serving: the private PostgreSQL with the reference CRM and its policy,
//! the demo users with generated passwords, a self-signed certificate and the configuration file, all in
//! one temporary folder. Not for: serving or printing (see the parent module and `facts`).

use crate::admin::credentials::generate_password;
use crate::admin::policy_apply::{ApplyOutcome, ApplyRequest, apply_policy};
use crate::config::Config;
use crate::net::scram::{DEFAULT_ITERATIONS, Verifier};
use crate::ops::crm::{self, CrmOptions};
use crate::ops::embedded_pg::{PgServer, PgServerOptions, write_private};
use crate::users::{User, UserStore};
use anyhow::{Context, Result, anyhow, bail};
use policy::model::Policy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tracing::info;

/// The reference policy, built into the binary so that the demo works from any folder.
pub const POLICY: &str = include_str!("../../../../examples/crm/policy.toml");

/// Database the demo creates and the proxy serves.
pub const DATABASE: &str = "crm";

/// The private PostgreSQL's `max_connections`: the proxy's default `[limits]` then let one user hold
/// half of them (see `admission`).
const PG_MAX_CONNECTIONS: u32 = 1000;

/// A demo user of the reference CRM.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    pub name: &'static str,
    pub role: &'static str,
    pub attributes: &'static [(&'static str, &'static str)],
}

/// The demo users of `crm-reference.md`.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        name: "dora",
        role: "dpo",
        attributes: &[],
    },
    DemoUser {
        name: "sam",
        role: "sales",
        attributes: &[("region", "north")],
    },
    DemoUser {
        name: "sara",
        role: "sales",
        attributes: &[("region", "south")],
    },
    DemoUser {
        name: "mia",
        role: "marketing",
        attributes: &[],
    },
    DemoUser {
        name: "tom",
        role: "support",
        attributes: &[],
    },
    DemoUser {
        name: "ana",
        role: "analyst",
        attributes: &[],
    },
];

/// The demo's application user: one login for the CRM's end users (see `end_user`).
pub const DEMO_APPLICATION: &str = "crm";
/// The roles the demo's application may act as for its end users.
const DEMO_APPLICATION_ROLES: &[&str] = &["sales", "marketing", "support", "analyst"];

/// Files of the temporary folder, relative to it (the configuration names them relatively too).
const CONFIG_FILE: &str = "maschera.toml";
const USERS_FILE: &str = "users.toml";
const CREDENTIALS_FILE: &str = "credentials.toml";
const POLICY_FILE: &str = "policy.toml";
const CERT_FILE: &str = "tls-cert.pem";
const KEY_FILE: &str = "tls-key.pem";
const AUDIT_DIR: &str = "audit";
const AUDIT_KEY: &str = "audit.key";
const AUDIT_SIGNING_KEY: &str = "audit-signing.key";
const AUDIT_PUBLIC_KEY: &str = "audit-public.key";
const END_USER_KEY: &str = "end-user-key.pem";
const END_USER_PUBLIC_KEY: &str = "end-user-public.pem";

/// Everything the demo set up. Dropping it stops PostgreSQL and removes the temporary folder.
pub struct Demo {
    pub pg: PgServer,
    pub listen: SocketAddr,
    pub config: Config,
    /// Generated passwords, in the order of [`DEMO_USERS`], then the application user's.
    pub passwords: Vec<String>,
    /// `created_at` of a north contact with an active marketing consent, unique among contacts: a
    /// contact every role can find by a column it sees.
    pub sample_created_at: String,
}

impl Demo {
    /// The temporary folder (PostgreSQL's data and the demo's files).
    pub fn dir(&self) -> &Path {
        self.pg.dir()
    }

    /// The access log's folder (files `audit-<first seq>.jsonl`).
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join(AUDIT_DIR)
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir().join(CONFIG_FILE)
    }
}

/// Sets everything up; on error whatever was started is stopped and removed.
pub async fn set_up(
    listen: SocketAddr,
    contacts: u64,
    pool_mode: crate::pool::PoolMode,
) -> Result<Demo> {
    info!("starting a private PostgreSQL");
    // Room for a few hundred sessions of one demo user beside everybody else's (see `[limits]`).
    let options = PgServerOptions {
        settings: vec![format!("max_connections = {PG_MAX_CONNECTIONS}")],
        ..PgServerOptions::default()
    };
    let pg = tokio::task::spawn_blocking(move || PgServer::start_with(options))
        .await
        .context("starting PostgreSQL")??;
    info!(dir = %pg.dir().display(), port = pg.port(), "PostgreSQL is up");
    pg.connect("postgres")
        .await?
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .context("creating the database")?;
    let mut client = pg.connect(DATABASE).await?;
    info!(contacts, "loading the reference CRM");
    crm::load(
        &client,
        &CrmOptions {
            contacts,
            ..CrmOptions::default()
        },
    )
    .await
    .context("loading the reference CRM")?;
    info!("applying examples/crm/policy.toml");
    let dir = pg.dir().to_path_buf();
    apply_reference_policy(&mut client, &dir).await?;
    let sample_created_at = sample_contact(&client).await?;
    let passwords = write_users(&dir)?;
    write_certificate(&dir)?;
    write_audit_keys(&dir)?;
    write_end_user_keys(&dir)?;
    let config_file = dir.join(CONFIG_FILE);
    let mut config_text = config_text(listen, &pg);
    if pool_mode == crate::pool::PoolMode::Transaction {
        config_text.push_str("\n[pool]\nmode = \"transaction\"\n");
    }
    write_private(&config_file, &config_text)?;
    let config = Config::load(&config_file)?;
    Ok(Demo {
        pg,
        listen,
        config,
        passwords,
        sample_created_at,
    })
}

async fn apply_reference_policy(client: &mut tokio_postgres::Client, dir: &Path) -> Result<()> {
    let policy = Policy::parse("examples/crm/policy.toml", POLICY).map_err(|diagnostics| {
        anyhow!(
            "the built-in policy does not parse: {}",
            join_lines(&diagnostics.0)
        )
    })?;
    std::fs::write(dir.join(POLICY_FILE), POLICY)?;
    let request = ApplyRequest {
        credentials: dir.join(CREDENTIALS_FILE),
        rotate: false,
        pseudonym_key: None,
        dry_run: false,
    };
    match apply_policy(client, &policy, &request).await? {
        ApplyOutcome::Applied { .. } => Ok(()),
        ApplyOutcome::Invalid(diagnostics) => bail!(
            "the built-in policy does not fit the CRM: {}",
            join_lines(&diagnostics)
        ),
        ApplyOutcome::DryRun { .. } => bail!("policy apply ran as a dry run"),
    }
}

fn join_lines(items: &[impl std::fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// See [`Demo::sample_created_at`].
async fn sample_contact(client: &tokio_postgres::Client) -> Result<String> {
    let row = client
        .query_opt(
            "SELECT c.created_at::text FROM contacts c \
             WHERE c.region = 'north' \
               AND EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id \
                           AND k.purpose = 'marketing' AND k.withdrawn_at IS NULL) \
               AND NOT EXISTS (SELECT 1 FROM contacts d WHERE d.created_at = c.created_at AND d.id <> c.id) \
             ORDER BY c.id LIMIT 1",
            &[],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| anyhow!("the CRM has no north contact with a marketing consent"))
}

/// Writes the users file with a new password for each demo user; returns the passwords.
fn write_users(dir: &Path) -> Result<Vec<String>> {
    let mut store = UserStore::default();
    let mut passwords = Vec::new();
    for user in DEMO_USERS {
        let password = generate_password();
        store
            .insert(User {
                name: user.name.into(),
                role: user.role.into(),
                attributes: user
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                verifier: Verifier::from_password(&password, DEFAULT_ITERATIONS),
            })
            .map_err(|err| anyhow!("demo user {}: {err}", user.name))?;
        passwords.push(password);
    }
    let password = generate_password();
    let application = crate::users::application::Application {
        roles: DEMO_APPLICATION_ROLES
            .iter()
            .map(|r| r.to_string())
            .collect(),
        attributes: crate::users::application::AttributeBounds::UsersFile,
        keys: Vec::new(),
    };
    let user = User {
        name: DEMO_APPLICATION.into(),
        role: String::new(),
        attributes: Default::default(),
        verifier: Verifier::from_password(&password, DEFAULT_ITERATIONS),
    };
    store
        .insert_application(user, application)
        .map_err(|err| anyhow!("demo application user: {err}"))?;
    passwords.push(password);
    store.save(&dir.join(USERS_FILE))?;
    Ok(passwords)
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, so that `sslmode=require` works.
fn write_certificate(dir: &Path) -> Result<()> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .context("creating the self-signed certificate")?;
    std::fs::write(dir.join(CERT_FILE), certified.cert.pem())?;
    write_private(&dir.join(KEY_FILE), &certified.signing_key.serialize_pem())
}

/// The access log's chain secret, checkpoint signing key and public verification key.
fn write_audit_keys(dir: &Path) -> Result<()> {
    let (secret, signing, public) = crate::audit::keys::generate();
    write_private(&dir.join(AUDIT_KEY), &format!("{secret}\n"))?;
    write_private(&dir.join(AUDIT_SIGNING_KEY), &format!("{signing}\n"))?;
    write_private(&dir.join(AUDIT_PUBLIC_KEY), &format!("{public}\n"))
}

/// The Ed25519 key pair that signs the demo's end-user tokens (`maschera end-user token`).
fn write_end_user_keys(dir: &Path) -> Result<()> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .context("creating the end-user signing key")?;
    write_private(&dir.join(END_USER_KEY), &pair.serialize_pem())?;
    std::fs::write(dir.join(END_USER_PUBLIC_KEY), pair.public_key_pem())?;
    Ok(())
}

/// The proxy's configuration: the same file `maschera serve --config` reads.
fn config_text(listen: SocketAddr, pg: &PgServer) -> String {
    format!(
        r#"# Written by `maschera demo`: the configuration the demo's proxy runs with.
listen = "{listen}"

[tls]
mode = "optional"
cert = "{CERT_FILE}"
key = "{KEY_FILE}"

[upstream]
host = "{host}"
port = {port}
database = "{DATABASE}"
tls = "off"
user = "{superuser}"
password = "{password}"

[users]
file = "{USERS_FILE}"

[limits]
shutdown_timeout_seconds = 5

[policy]
file = "{POLICY_FILE}"
credentials = "{CREDENTIALS_FILE}"

[audit]
dir = "{AUDIT_DIR}"
instance = "demo"
key_file = "{AUDIT_KEY}"
signing_key_file = "{AUDIT_SIGNING_KEY}"
public_key_file = "{AUDIT_PUBLIC_KEY}"

[end_users]
issuer = "maschera-demo"
audience = "maschera"
keys = [{{ kid = "demo", algorithm = "EdDSA", public_key = "{END_USER_PUBLIC_KEY}", private_key = "{END_USER_KEY}" }}]
"#,
        host = pg.host(),
        port = pg.port(),
        superuser = crate::ops::embedded_pg::SUPERUSER,
        password = pg.password(),
    )
}
