//! The one fixture builder of the end-to-end tests: a private PostgreSQL (or one the test started),
//! the reference CRM filled by the real generator (or its schema with hand-chosen rows), the
//! reference policy (or an edited copy) applied by `maschera policy apply`, the proxy's users in a
//! users file, and `maschera serve` enforcing the policy, all set up by
//! `Fixture::crm(contacts)...start()`. A test says only what differs from the reference setup
//! (seed, policy edit, users, PostgreSQL settings, proxy configuration, an access log). Also the
//! handles a test needs on the result (connections through the proxy, straight as a role's login or
//! as the owner), and [`pg_and_proxy`] for the tests of the proxy core that need no CRM. Not for:
//! assertions (those live in `tests/tests/e2e/`), or setups whose apply is itself under test (a
//! non-superuser owner, two databases in one cluster): those call `crm_proxy`'s parts one by one.

use crate::crm::load_crm;
use crate::crm_proxy::{
    AppliedPolicy, CRM_DB, CRM_PSEUDONYM_KEY, CRM_USERS, CrmUser, apply_edited_policy,
    crm_password, write_crm_users,
};
use crate::{PgServer, PgServerOptions, Proxy, ProxyOptions, access_log_section, connect};
use anyhow::Result;
use tokio_postgres::Client;

/// What turns the reference policy's text into the one applied.
type PolicyEdit = Box<dyn FnOnce(String) -> String + Send>;

/// What runs on the server between the policy apply and the proxy's start.
type Prepare = Box<dyn FnOnce(&PgServer) + Send>;

/// How the reference CRM behind the proxy is set up; [`Fixture::start`] starts it.
pub struct Fixture {
    data: Data,
    seed: u64,
    pg: PgServerOptions,
    server: Option<PgServer>,
    before_proxy: Option<Prepare>,
    edit: Option<PolicyEdit>,
    key: String,
    users: Vec<CrmUser>,
    scram_iterations: u32,
    poll_seconds: Option<u64>,
    access_log: Option<String>,
    proxy: ProxyOptions,
}

/// What the CRM holds.
enum Data {
    /// Contacts made by the real generator (`maschera::ops::crm::load`).
    Generated(u64),
    /// The CRM schema with these hand-chosen rows (SQL run by psql).
    Rows(&'static str),
}

impl Fixture {
    /// The reference CRM with `contacts` generated contacts (seed 1), the reference policy applied
    /// with [`CRM_PSEUDONYM_KEY`], the demo users [`CRM_USERS`] (verifiers of 4096 SCRAM
    /// iterations), and the proxy with its default options and no policy polling.
    pub fn crm(contacts: u64) -> Fixture {
        Fixture {
            data: Data::Generated(contacts),
            seed: 1,
            pg: PgServerOptions::default(),
            server: None,
            before_proxy: None,
            edit: None,
            key: CRM_PSEUDONYM_KEY.to_owned(),
            users: CRM_USERS.to_vec(),
            scram_iterations: 4096,
            poll_seconds: None,
            access_log: None,
            proxy: ProxyOptions::default(),
        }
    }

    /// [`Fixture::crm`] with the CRM schema holding the hand-chosen `rows` (SQL) in place of
    /// generated contacts.
    pub fn crm_rows(rows: &'static str) -> Fixture {
        Fixture {
            data: Data::Rows(rows),
            ..Fixture::crm(0)
        }
    }

    /// Sets up the CRM on `pg` (e.g. a server with TLS) instead of starting a server.
    pub fn on(mut self, pg: PgServer) -> Fixture {
        self.server = Some(pg);
        self
    }

    /// Calls `prepare(pg)` once the CRM and the policy are in place, before the proxy starts (e.g.
    /// to tighten `pg_hba.conf`).
    pub fn before_proxy(mut self, prepare: impl FnOnce(&PgServer) + Send + 'static) -> Fixture {
        self.before_proxy = Some(Box::new(prepare));
        self
    }

    /// The generator's seed.
    pub fn seed(mut self, seed: u64) -> Fixture {
        self.seed = seed;
        self
    }

    /// How PostgreSQL starts, as `configure` adjusts the default (e.g. its settings).
    pub fn pg(mut self, configure: impl FnOnce(&mut PgServerOptions)) -> Fixture {
        configure(&mut self.pg);
        self
    }

    /// Applies the reference policy's text as `edit` turns it.
    pub fn policy(mut self, edit: impl FnOnce(String) -> String + Send + 'static) -> Fixture {
        self.edit = Some(Box::new(edit));
        self
    }

    /// The pseudonym key of `policy apply`.
    pub fn pseudonym_key(mut self, key: &str) -> Fixture {
        self.key = key.to_owned();
        self
    }

    /// The proxy's users, in place of [`CRM_USERS`].
    pub fn users(mut self, users: impl IntoIterator<Item = CrmUser>) -> Fixture {
        self.users = users.into_iter().collect();
        self
    }

    /// One more user of the proxy.
    pub fn user(mut self, user: CrmUser) -> Fixture {
        self.users.push(user);
        self
    }

    /// SCRAM iterations of the users' verifiers (the clients' cost of a login; the proxy's is the
    /// same at any count).
    pub fn scram_iterations(mut self, iterations: u32) -> Fixture {
        self.scram_iterations = iterations;
        self
    }

    /// `[policy] poll_seconds`.
    pub fn poll_seconds(mut self, seconds: u64) -> Fixture {
        self.poll_seconds = Some(seconds);
        self
    }

    /// An access log in `<server folder>/audit` with fresh keys, written as `instance` (see
    /// [`CrmProxy::audit_dir`]).
    pub fn access_log(mut self, instance: &str) -> Fixture {
        self.access_log = Some(instance.to_owned());
        self
    }

    /// The proxy's options as `configure` adjusts them (`database`, `users_file` and `policy` are
    /// filled in by [`Fixture::start`], and `audit` when [`Fixture::access_log`] is asked for).
    pub fn config(mut self, configure: impl FnOnce(&mut ProxyOptions)) -> Fixture {
        configure(&mut self.proxy);
        self
    }

    /// Starts PostgreSQL, loads the CRM, applies the policy, writes the users and starts the proxy.
    pub async fn start(self) -> Result<CrmProxy> {
        let pg = match self.server {
            Some(pg) => pg,
            None => PgServer::start_with(self.pg)?,
        };
        match self.data {
            Data::Generated(contacts) => {
                load_crm(&pg, CRM_DB, contacts, self.seed).await?;
            }
            Data::Rows(rows) => {
                pg.create_crm_schema(CRM_DB)?;
                pg.psql(CRM_DB, &["-c", rows])?;
            }
        }
        let edit = self.edit.unwrap_or_else(|| Box::new(|text| text));
        let applied = apply_edited_policy(&pg, CRM_DB, &self.key, edit)?;
        let dir = pg.dir().to_path_buf();
        let users = dir.join("users.toml");
        write_crm_users(&users, &self.users, self.scram_iterations)?;
        let mut options = ProxyOptions {
            database: CRM_DB.into(),
            users_file: Some(users),
            policy: applied.proxy_section(self.poll_seconds),
            ..self.proxy
        };
        if let Some(instance) = &self.access_log {
            options.audit = access_log_section(&dir, instance);
        }
        if let Some(prepare) = self.before_proxy {
            prepare(&pg);
        }
        let proxy = Proxy::start(&pg, options.clone())?;
        Ok(CrmProxy {
            pg,
            proxy,
            applied,
            options,
        })
    }
}

/// PostgreSQL with the CRM and the proxy enforcing the applied policy in front of it.
pub struct CrmProxy {
    pub pg: PgServer,
    pub proxy: Proxy,
    /// The policy files the proxy serves (tests may edit the policy and reload).
    pub applied: AppliedPolicy,
    /// The options the proxy was started with (to start another one like it).
    pub options: ProxyOptions,
}

impl CrmProxy {
    /// A connection URI through the proxy as a user of the fixture.
    pub fn uri(&self, user: &str) -> String {
        self.proxy.uri_as(user, &crm_password(user), CRM_DB)
    }

    /// The access log's folder (when the fixture asked for one).
    pub fn audit_dir(&self) -> std::path::PathBuf {
        self.pg.dir().join("audit")
    }

    /// A connection through the proxy as a user of the fixture.
    pub async fn through_proxy(&self, user: &str) -> Client {
        connect(&self.uri(user))
            .await
            .expect("connect through the proxy")
    }

    /// Straight to PostgreSQL as the role's login (no proxy).
    pub async fn straight(&self, role: &str) -> Client {
        let credentials =
            maschera::admin::credentials::Credentials::load(&self.applied.credentials)
                .expect("the credentials file the apply wrote");
        let login = credentials.login(role).expect("login");
        connect(&self.pg.uri_as(&login.user, &login.password, CRM_DB))
            .await
            .expect("connect as the login")
    }

    /// Straight to PostgreSQL as the superuser that owns the CRM.
    pub async fn owner(&self) -> Client {
        self.pg.connect(CRM_DB).await.expect("owner")
    }
}

/// A private PostgreSQL without the CRM and the proxy configured by `options` in front of it.
pub fn pg_and_proxy(options: ProxyOptions) -> (PgServer, Proxy) {
    let pg = PgServer::start().expect("start PostgreSQL");
    let proxy = Proxy::start(&pg, options).expect("start the proxy");
    (pg, proxy)
}
