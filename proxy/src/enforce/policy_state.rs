//! The policy the proxy enforces, as loaded: the parsed policy file, the live catalog it was compiled
//! against, one compiled `RoleAccess` per role, the upstream logins of the restricted roles and a
//! rewrite cache. A [`PolicyHandle`] holds the current [`PolicyState`] and swaps it atomically on
//! reload (SIGHUP or a change of the policy or credentials file); sessions keep the state they
//! started with. An invalid new policy keeps the old one. After a schema change the policy is
//! compiled against the changed catalog tolerating drift (a column the policy names but the
//! database no longer has is simply absent from the views); the drift is logged and
//! `maschera policy check --upstream` reports it. Its connections to PostgreSQL (catalog, view
//! rebuild) use the `[upstream]` TLS settings like the sessions.
//!
//! Not for: deciding about statements or logins (see `enforce`), or writing the policy into the
//! database (see `policy_apply`).

use crate::admin::credentials::Credentials;
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::{PolicyConfig, UpstreamConfig};
use crate::net::upstream::UpstreamTarget;
use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use policy::Policy;
use policy::access::{Catalog, RoleAccess, TableName};
use policy::apply_sql::LiveState;
use policy::rewrite::RewriteCache;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// Statement shapes the rewrite cache keeps per loaded policy (all roles together).
const CACHE_CAPACITY: usize = 10_000;

/// One loaded, compiled policy. Immutable: a reload builds a new one.
pub struct PolicyState {
    pub policy: Policy,
    pub catalog: Catalog,
    /// The sequences each table's column defaults use (granted with inserts through a view).
    pub sequences: BTreeMap<TableName, Vec<TableName>>,
    /// The prefix of this database's role logins (empty: `maschera_`).
    pub login_prefix: String,
    /// Each table's primary key columns (the write triggers of the views find rows by them).
    pub primary_keys: BTreeMap<TableName, Vec<String>>,
    /// The role the compiled schemas are given to when a schema change rebuilds them (see `LiveState`).
    pub objects_owner: Option<String>,
    /// Restricted roles whose database objects are not as `policy apply` left them, with the objects:
    /// their users are refused (see `compiled_objects`).
    pub incomplete: BTreeMap<String, Vec<String>>,
    /// The key the proxy seals the attributes it sends with (`policy::attribute_seal`), as
    /// `policy apply` stored it; `None` before the first apply of a version that makes one (the
    /// filters then read no attribute: no rows).
    pub attribute_key: Option<Vec<u8>>,
    roles: BTreeMap<String, Arc<RoleAccess>>,
    credentials: Credentials,
    pub cache: RewriteCache,
}

/// Whether a policy that no longer fits the catalog is refused (start, reload of the files) or
/// compiled as far as the catalog allows (after a schema change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    Refuse,
    Tolerate,
}

/// Compiles every role of `policy` against `catalog` even where they no longer fit (a table or
/// column the policy names is missing, a type changed): what is missing is left out of the
/// access, so the views and the rewriter fail closed on it. Returns the drift as messages.
pub fn compile_tolerating_drift(
    policy: &Policy,
    catalog: &Catalog,
) -> (BTreeMap<String, RoleAccess>, Vec<String>) {
    let access = policy
        .roles
        .values()
        .map(|role| (role.name.clone(), policy.role_access(role, catalog)))
        .collect();
    let drift = policy
        .check_against(catalog)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.message)
        .collect();
    (access, drift)
}

impl PolicyState {
    /// Compiles `policy` against the live database and checks that every restricted role has a
    /// login; a policy that does not fit the database is refused.
    pub fn build(policy: Policy, live: LiveState, credentials: Credentials) -> Result<PolicyState> {
        Self::build_with(policy, live, credentials, Drift::Refuse)
    }

    fn build_with(
        policy: Policy,
        live: LiveState,
        credentials: Credentials,
        drift: Drift,
    ) -> Result<PolicyState> {
        let compiled = match drift {
            Drift::Refuse => policy.compile(&live.catalog).map_err(|diagnostics| {
                anyhow::anyhow!("the policy does not fit the database:\n{diagnostics}")
            })?,
            Drift::Tolerate => {
                let (compiled, drift) = compile_tolerating_drift(&policy, &live.catalog);
                if !drift.is_empty() {
                    warn!(
                        drift = %drift.join("; "),
                        "the policy no longer fits the changed schema: what it names and the database lacks is left out of the views; fix the policy and run `maschera policy apply`"
                    );
                }
                compiled
            }
        };
        for role in policy.restricted_roles() {
            let Some(login) = credentials.login(&role.name) else {
                bail!(
                    "the credentials file has no login for role {:?}: run `maschera policy apply` with --credentials pointing at it",
                    role.name
                );
            };
            if login.user != live.login(role) {
                bail!(
                    "the credentials file gives role {:?} the login {:?}, but this database's login prefix makes it {:?}: \
                     apply the policy with the same --login-prefix as the configuration's `login_prefix`",
                    role.name,
                    login.user,
                    live.login(role)
                );
            }
        }
        Ok(PolicyState {
            roles: compiled
                .into_iter()
                .map(|(name, access)| (name, Arc::new(access)))
                .collect(),
            policy,
            login_prefix: live.login_prefix,
            catalog: live.catalog,
            sequences: live.sequences,
            primary_keys: live.primary_keys,
            objects_owner: live.objects_owner,
            incomplete: BTreeMap::new(),
            attribute_key: None,
            credentials,
            cache: RewriteCache::new(CACHE_CAPACITY),
        })
    }

    /// The compiled access of role `name`, if the policy has it.
    pub fn role(&self, name: &str) -> Option<Arc<RoleAccess>> {
        self.roles.get(name).cloned()
    }

    /// The attribute names role `name` declares (empty for unknown roles).
    pub fn role_attributes(&self, name: &str) -> &[String] {
        self.policy
            .roles
            .get(name)
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default()
    }

    /// The upstream login of a restricted role.
    pub fn login(&self, role: &str) -> Option<crate::net::upstream::Login> {
        self.credentials
            .login(role)
            .map(|login| crate::net::upstream::Login {
                user: login.user.clone(),
                password: Some(login.password.clone()),
            })
    }
}

/// The current policy, swapped atomically on reload.
pub struct PolicyHandle {
    current: ArcSwap<PolicyState>,
    config: PolicyConfig,
    upstream: UpstreamTarget,
    /// Held by a view rebuild: two sessions' schema changes rebuild one after the other.
    rebuilding: tokio::sync::Mutex<()>,
}

impl PolicyHandle {
    /// Loads and compiles the configured policy against the live catalog; an error says why the
    /// proxy cannot start.
    pub async fn load(config: &PolicyConfig, upstream: &UpstreamConfig) -> Result<PolicyHandle> {
        let upstream = UpstreamTarget::new(upstream)?;
        let state = load_state(config, &upstream, Drift::Refuse).await?;
        info!(
            database = %upstream.config().database,
            file = %config.file.display(),
            roles = state.roles.len(),
            tables = state.catalog.tables.len(),
            "policy loaded"
        );
        Ok(PolicyHandle {
            current: ArcSwap::from_pointee(state),
            config: config.clone(),
            upstream,
            rebuilding: tokio::sync::Mutex::new(()),
        })
    }

    /// The policy new sessions get.
    pub fn current(&self) -> Arc<PolicyState> {
        self.current.load_full()
    }

    /// Loads the files and the catalog again; on success new sessions get the new policy, on
    /// failure the old one stays and the error says why.
    pub async fn reload(&self) -> Result<()> {
        self.reload_with(Drift::Refuse).await
    }

    async fn reload_with(&self, drift: Drift) -> Result<()> {
        let state = load_state(&self.config, &self.upstream, drift).await?;
        self.current.store(Arc::new(state));
        metrics::counter!("maschera_policy_reloads_total").increment(1);
        Ok(())
    }

    /// Reloads on SIGHUP and, every `poll_seconds`, when the policy or credentials file changed;
    /// each attempt is recorded in `audit` (outcome and reason, never the file's content).
    pub fn watch(self: Arc<Self>, audit: Option<Arc<AuditLog>>) -> Result<()> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let poll = Duration::from_secs(self.config.poll_seconds);
        tokio::spawn(async move {
            let mut seen = self.stamps();
            loop {
                let reason = tokio::select! {
                    _ = hangup.recv() => "SIGHUP",
                    _ = tokio::time::sleep(poll), if !poll.is_zero() => {
                        let now = self.stamps();
                        if now == seen {
                            continue;
                        }
                        "file changed"
                    }
                };
                seen = self.stamps();
                let mut event = Event::new(EventKind::PolicyReload);
                event.detail = Some(format!("{reason}: {}", self.config.file.display()));
                let database = &self.upstream.config().database;
                event.database = Some(database.clone());
                match self.reload().await {
                    Ok(()) => info!(reason, database, "policy reloaded"),
                    Err(err) => {
                        warn!(reason, database, error = %format!("{err:#}"), "policy reload failed; keeping the previous policy");
                        event.outcome = Outcome::Error {
                            sqlstate: "F0000".into(),
                        };
                    }
                }
                if let Some(log) = &audit {
                    drop(log.submit(event));
                }
            }
        });
        Ok(())
    }

    /// After a schema change: drops and recreates every restricted role's views and grants from the
    /// live catalog in one transaction on an admin connection, then reloads the policy. The policy
    /// is compiled tolerating drift: what it names and the database lacks is left out.
    pub async fn recreate_views(&self) -> Result<()> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let state = self.current();
        let policy = &state.policy;
        let (client, connection) = admin_connect(&self.upstream).await?;
        client.batch_execute("BEGIN").await?;
        for step in policy::apply_sql::drop_views_steps(policy) {
            client.batch_execute(&step.sql).await?;
        }
        let live =
            crate::admin::policy_apply::read_live_state_for(&client, &self.config.login_prefix)
                .await?;
        let (access, _) = compile_tolerating_drift(policy, &live.catalog);
        for step in policy::apply_sql::recreate_views_steps(policy, &access, &live) {
            if step.secret.is_some() {
                bail!("recreating the views needs a secret; run `maschera policy apply`");
            }
            client
                .batch_execute(&step.sql)
                .await
                .context("recreating the views")?;
        }
        client.batch_execute("COMMIT").await?;
        drop(client);
        let _ = connection.await;
        self.reload_with(Drift::Tolerate).await
    }

    fn stamps(&self) -> [Option<SystemTime>; 2] {
        [
            modified(&self.config.file),
            modified(&self.config.credentials),
        ]
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn load_state(
    config: &PolicyConfig,
    upstream: &UpstreamTarget,
    drift: Drift,
) -> Result<PolicyState> {
    let text = std::fs::read_to_string(&config.file)
        .with_context(|| format!("reading policy file {}", config.file.display()))?;
    let policy = Policy::parse(&config.file.display().to_string(), &text)
        .map_err(|diagnostics| anyhow::anyhow!("invalid policy file:\n{diagnostics}"))?;
    let credentials = Credentials::load(&config.credentials)?;
    let (live, incomplete, attribute_key) =
        read_live_state(upstream, &policy, &config.login_prefix).await?;
    let mut state = PolicyState::build_with(policy, live, credentials, drift)?;
    if attribute_key.is_none() && state.policy.restricted_roles().next().is_some() {
        warn!(
            "the database has no key for the attributes' seals: the row filters read no attribute (no rows) until `maschera policy apply` runs"
        );
    }
    state.attribute_key = attribute_key;
    for (role, objects) in &incomplete {
        warn!(
            role,
            "{}; its users are refused",
            crate::admin::compiled_objects::incomplete_message(role, objects)
        );
    }
    state.incomplete = incomplete;
    // A login may have changed its own password or settings straight on PostgreSQL.
    let roles = state.policy.restricted_roles().map(|r| r.name.as_str());
    use crate::admin::login_check::{Finding, problems};
    for finding in problems(upstream, &state.credentials, roles).await {
        match finding {
            Finding::Error(problem) => tracing::error!("{problem}"),
            Finding::Warning(problem) => warn!("{problem}"),
        }
    }
    Ok(state)
}

/// How long a reload waits for a schema change in progress to commit.
const OBJECTS_LOCK_WAIT: &str = "30s";

/// Reads the catalog and the column defaults' sequences over a short-lived connection as the
/// proxy's own `[upstream]` login.
/// Also checks that each restricted role's compiled objects are whole, and reads the key of the
/// attributes' seals.
async fn read_live_state(
    upstream: &UpstreamTarget,
    policy: &Policy,
    login_prefix: &str,
) -> Result<(LiveState, BTreeMap<String, Vec<String>>, Option<Vec<u8>>)> {
    let (client, connection) = admin_connect(upstream).await?;
    // Under the objects' lock, which a schema change holds while it recompiles the views in its
    // transaction: the catalog and the objects are read as a whole, never half rebuilt (which would
    // refuse every restricted role until the next reload). Waited for at most `lock_timeout`.
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{OBJECTS_LOCK_WAIT}'; SELECT {}",
            policy::apply_sql::OBJECTS_LOCK
        ))
        .await
        .context("waiting for the compiled objects' lock")?;
    let live = crate::admin::policy_apply::read_live_state_for(&client, login_prefix).await;
    let incomplete = match &live {
        Ok(live) => crate::admin::compiled_objects::incomplete_roles(&client, policy, live).await,
        Err(_) => Ok(BTreeMap::new()),
    };
    client.batch_execute("COMMIT").await?;
    // After the transaction: the key table is missing before the first apply.
    let attribute_key = client
        .query_opt(
            &format!(
                "SELECT key FROM {}.keys WHERE name = '{}'",
                policy::model::PRIVATE_SCHEMA,
                policy::attribute_seal::KEY_NAME
            ),
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get::<_, Vec<u8>>(0));
    drop(client);
    let _ = connection.await;
    Ok((live?, incomplete?, attribute_key))
}

/// A connection as the proxy's own `[upstream]` login (see `admin_connect`).
pub(crate) use crate::admin::admin_connect::connect_target as admin_connect;
