//! The reference CRM behind the proxy with an edited copy of the reference policy: for tests of a
//! policy feature that the reference matrix does not have (redaction variants, lookups), through
//! the proxy, straight at PostgreSQL as a role's login, and as the owner. Also the simple-protocol
//! helpers those tests share (rows as text, the SQLSTATE and message of a refusal). Not for:
//! assertions, or the unedited reference setup (see `crm_proxy::CrmProxy`).

use crate::crm::load_crm;
use crate::crm_proxy::{
    AppliedPolicy, CRM_DB, CrmUser, apply_policy, crm_password, write_crm_users,
};
use crate::{PgServer, Proxy, ProxyOptions, access_log_section, connect, examples_dir};
use tokio_postgres::{Client, SimpleQueryMessage};

/// What [`PolicyCrm::start`] sets up.
pub struct PolicyCrmSetup<'a> {
    /// Generated contacts, and the generator's seed.
    pub contacts: u64,
    pub seed: u64,
    /// The pseudonym key of `policy apply`.
    pub key: &'a str,
    /// The proxy's users.
    pub users: &'a [CrmUser],
    /// Write an access log (in `<server folder>/audit`, as this instance).
    pub audit: Option<&'a str>,
}

/// PostgreSQL with the CRM, the edited policy applied, and the proxy enforcing it.
pub struct PolicyCrm {
    pub pg: PgServer,
    pub proxy: Proxy,
    pub applied: AppliedPolicy,
}

impl PolicyCrm {
    /// Starts everything; `edit` turns the reference policy's text into the one applied.
    pub async fn start(
        setup: PolicyCrmSetup<'_>,
        edit: impl FnOnce(String) -> String,
    ) -> PolicyCrm {
        let pg = PgServer::start().expect("start PostgreSQL");
        load_crm(&pg, CRM_DB, setup.contacts, setup.seed)
            .await
            .expect("CRM");
        let dir = pg.dir().to_path_buf();
        let applied = AppliedPolicy {
            policy: dir.join("policy.toml"),
            credentials: dir.join("logins.toml"),
        };
        let text = std::fs::read_to_string(examples_dir().join("crm/policy.toml")).unwrap();
        std::fs::write(&applied.policy, edit(text)).unwrap();
        apply_policy(&pg, CRM_DB, &applied, setup.key).expect("policy apply");
        let users = dir.join("users.toml");
        write_crm_users(&users, setup.users, 4096).expect("users");
        let proxy = Proxy::start(
            &pg,
            ProxyOptions {
                database: CRM_DB.into(),
                users_file: Some(users),
                policy: applied.proxy_section(None),
                audit: setup
                    .audit
                    .map(|instance| access_log_section(&dir, instance))
                    .unwrap_or_default(),
                ..ProxyOptions::default()
            },
        )
        .expect("proxy");
        PolicyCrm { pg, proxy, applied }
    }

    /// The access log's folder (when the setup asked for one).
    pub fn audit_dir(&self) -> std::path::PathBuf {
        self.pg.dir().join("audit")
    }

    pub async fn through_proxy(&self, user: &str) -> Client {
        connect(&self.proxy.uri_as(user, &crm_password(user), CRM_DB))
            .await
            .expect("connect through the proxy")
    }

    /// Straight to PostgreSQL as the role's login (no proxy).
    pub async fn straight(&self, role: &str) -> Client {
        let credentials =
            maschera::credentials::Credentials::load(&self.applied.credentials).unwrap();
        let login = credentials.login(role).expect("login");
        connect(&self.pg.uri_as(&login.user, &login.password, CRM_DB))
            .await
            .expect("connect as the login")
    }

    pub async fn owner(&self) -> Client {
        self.pg.connect(CRM_DB).await.expect("owner")
    }
}

/// Every row of `sql` (simple protocol), as text, NULL as `None`; panics on an error.
pub async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The first column of every row of `sql` that is not NULL.
pub async fn simple_column(client: &Client, sql: &str) -> Vec<String> {
    simple_rows(client, sql)
        .await
        .into_iter()
        .filter_map(|mut r| r.remove(0))
        .collect()
}

/// The SQLSTATE and message of an error that is an ErrorResponse.
pub fn error_of(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The SQLSTATE and message with which `sql` (simple protocol) is refused; panics if it runs.
pub async fn simple_refusal(client: &Client, sql: &str) -> (String, String) {
    let err = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("expected `{sql}` to be refused"));
    error_of(&err)
}

/// Runs a Python script (e.g. with psycopg) with `args`; panics unless it exits with 0, and returns
/// what it printed.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python3: {printed}{errors}");
    printed
}
