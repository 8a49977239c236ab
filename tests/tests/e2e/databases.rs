//! Database routing: a session goes to the database its client names, never silently elsewhere.
//! Django's test runner through the proxy creates, uses and drops `test_<db>` and leaves the real
//! database untouched; psql and tokio-postgres get the database they ask for; a restricted user
//! asking for a database without a policy, or anyone asking for one the configuration does not
//! allow, gets FATAL 3D000; two databases of one cluster with two policies and two login prefixes
//! each serve their own policy, and re-applying one leaves the other's logins alone.

use maschera_tests::crm::load_crm;
use maschera_tests::crm_proxy::{
    AppliedPolicy, CRM_DB, CRM_PSEUDONYM_KEY, apply_policy, apply_reference_policy, crm_password,
    write_crm_users,
};
use maschera_tests::{
    CrmProxy, Fixture, PgServer, Proxy, ProxyOptions, Ran, access_log_records, access_log_section,
    block_on, maschera_bin, psql,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Contacts per CRM database: routing needs rows, not volume.
const CONTACTS: u64 = 50;
/// The second database's role logins.
const CRM2_PREFIX: &str = "maschera_crm2_";

/// The reference CRM behind the proxy, which also lets unrestricted users reach `postgres`, `other`
/// and any `test_*` database.
async fn start_routing() -> CrmProxy {
    Fixture::crm(CONTACTS)
        .config(|proxy| {
            proxy.upstream_extra = r#"databases = ["postgres", "other", "test_*"]"#.into()
        })
        .start()
        .await
        .expect("CRM behind the proxy")
}

/// Connects through the proxy as a CRM demo user to `db`.
async fn connect_as(
    proxy: &Proxy,
    user: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let uri = proxy.uri_as(user, &crm_password(user), db);
    let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn current_database(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("current_database()")
        .get(0)
}

/// The SQLSTATE and message a refused login got.
async fn refused_login(proxy: &Proxy, user: &str, db: &str) -> (String, String) {
    let err = match connect_as(proxy, user, db).await {
        Ok(_) => panic!("{user} must not reach database {db}"),
        Err(err) => err,
    };
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{user} to {db}: a PostgreSQL error, got {err}"));
    (
        db_error.code().code().to_owned(),
        db_error.message().to_owned(),
    )
}

#[test]
fn clients_get_the_database_they_name() {
    block_on(async {
        let crm = start_routing().await;
        crm.pg.create_database("other").unwrap();
        crm.pg
            .psql("other", &["-c", "CREATE TABLE only_here (x int)"])
            .unwrap();

        for db in [CRM_DB, "other", "postgres"] {
            let dora = connect_as(&crm.proxy, "dora", db).await.expect("dora");
            assert_eq!(current_database(&dora).await, db, "dora asked for {db}");
        }
        let dora = connect_as(&crm.proxy, "dora", "other").await.unwrap();
        let rows = dora.query("SELECT * FROM only_here", &[]).await.unwrap();
        assert!(rows.is_empty(), "the table of database other is there");
        let sam = connect_as(&crm.proxy, "sam", CRM_DB).await.expect("sam");
        assert_eq!(current_database(&sam).await, CRM_DB);

        // psql -d other.
        let uri = crm.proxy.uri_as("dora", &crm_password("dora"), "other");
        let out = psql(&uri, &["-A", "-t", "-c", "SELECT current_database()"]);
        assert_eq!(out.ok_stdout("psql -d other").trim(), "other");

        // CREATE DATABASE / DROP DATABASE on the unrestricted session's own connection.
        let admin = connect_as(&crm.proxy, "dora", "postgres").await.unwrap();
        admin
            .batch_execute("CREATE DATABASE test_made")
            .await
            .unwrap();
        let made = connect_as(&crm.proxy, "dora", "test_made").await.unwrap();
        assert_eq!(current_database(&made).await, "test_made");
        drop(made);
        // The proxy's session to test_made ends a moment after the client's.
        let mut dropped = Err(String::new());
        for _ in 0..50 {
            dropped = admin
                .batch_execute("DROP DATABASE test_made")
                .await
                .map_err(|e| e.to_string());
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        dropped.expect("DROP DATABASE through the proxy");
        let left = crm
            .pg
            .execute("SELECT count(*) FROM pg_database WHERE datname = 'test_made'")
            .unwrap();
        assert_eq!(left.trim(), "0");
    });
}

#[test]
fn a_database_without_a_policy_or_not_allowed_is_refused_with_3d000() {
    block_on(async {
        let crm = start_routing().await;
        crm.pg.create_database("other").unwrap();
        crm.pg.create_database("secret").unwrap();

        // A restricted user asking for a database without a policy.
        let (code, message) = refused_login(&crm.proxy, "sam", "other").await;
        assert_eq!(code, "3D000", "{message}");
        assert!(
            message.contains("\"other\" has no Maschera policy")
                && message.contains("role \"sales\" is restricted"),
            "{message}"
        );
        let (code, _) = refused_login(&crm.proxy, "sam", "test_crm").await;
        assert_eq!(code, "3D000");
        // A database the configuration does not allow, for anyone (it exists upstream).
        for user in ["dora", "sam"] {
            let (code, message) = refused_login(&crm.proxy, user, "secret").await;
            assert_eq!(code, "3D000", "{message}");
            assert!(
                message.contains("\"secret\" is not served by this proxy"),
                "{message}"
            );
        }
        // Allowed but missing upstream: PostgreSQL's own answer.
        let (code, message) = refused_login(&crm.proxy, "dora", "test_missing").await;
        assert_eq!(code, "3D000");
        assert!(message.contains("does not exist"), "{message}");
        // The refused logins never reached PostgreSQL as the user (no session to `secret`).
        let sessions = crm
            .pg
            .execute("SELECT count(*) FROM pg_stat_activity WHERE datname IN ('other', 'secret')")
            .unwrap();
        assert_eq!(sessions.trim(), "0");
        // The user still gets their own database.
        let sam = connect_as(&crm.proxy, "sam", CRM_DB).await.expect("sam");
        assert_eq!(current_database(&sam).await, CRM_DB);
    });
}

/// Runs `maschera policy apply` of `applied` on `db` with `login_prefix`; returns success and stderr.
fn apply_with_prefix(
    pg: &PgServer,
    db: &str,
    applied: &AppliedPolicy,
    login_prefix: &str,
) -> (bool, String) {
    let out = Command::new(maschera_bin())
        .args(["policy", "apply"])
        .arg(&applied.policy)
        .args(["--upstream", &pg.uri(db), "--credentials"])
        .arg(&applied.credentials)
        .args(["--login-prefix", login_prefix])
        .env("MASCHERA_PSEUDONYM_KEY", CRM_PSEUDONYM_KEY)
        .output()
        .expect("maschera policy apply");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The logins of the cluster whose name starts with `maschera_`.
fn logins(pg: &PgServer) -> Vec<String> {
    pg.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'maschera%' ORDER BY 1")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn first_email(proxy: &Proxy, db: &str) -> String {
    let sam = connect_as(proxy, "sam", db)
        .await
        .unwrap_or_else(|e| panic!("sam to {db}: {e}"));
    assert_eq!(current_database(&sam).await, db);
    sam.query_one("SELECT email FROM contacts ORDER BY id LIMIT 1", &[])
        .await
        .unwrap_or_else(|e| panic!("sam reads contacts in {db}: {e}"))
        .get(0)
}

#[test]
fn two_databases_with_two_policies_and_login_prefixes_in_one_cluster() {
    block_on(async {
        let pg = PgServer::start().unwrap();
        load_crm(&pg, CRM_DB, CONTACTS, 1).await.unwrap();
        load_crm(&pg, "crm2", CONTACTS, 2).await.unwrap();
        let crm1 = apply_reference_policy(&pg, CRM_DB, CRM_PSEUDONYM_KEY).unwrap();
        // The second database's policy: sales sees e-mail addresses masked.
        let reference = std::fs::read_to_string(&crm1.policy).unwrap();
        let masked = reference.replace(
            "show = [\"id\", \"first_name\", \"last_name\", \"email\", \"phone\", \"street_address\"]\n\
             columns = { birth_date = \"year\", tax_code = \"mask.last(4)\" }",
            "show = [\"id\", \"first_name\", \"last_name\", \"phone\", \"street_address\"]\n\
             columns = { birth_date = \"year\", tax_code = \"mask.last(4)\", email = \"mask.email\" }",
        );
        assert_ne!(
            masked, reference,
            "the sales rule of the reference policy changed"
        );
        let crm2 = AppliedPolicy {
            policy: pg.dir().join("policy-crm2.toml"),
            credentials: pg.dir().join("logins-crm2.toml"),
        };
        std::fs::write(&crm2.policy, &masked).unwrap();

        // Applied with the default prefix, crm2's policy would take over crm's logins: refused.
        let (ok, stderr) = apply_with_prefix(&pg, "crm2", &crm2, "");
        assert!(!ok, "crm2 with crm's login prefix must fail");
        assert!(
            stderr.contains("`maschera_") && stderr.contains("another --login-prefix"),
            "{stderr}"
        );
        let (ok, stderr) = apply_with_prefix(&pg, "crm2", &crm2, CRM2_PREFIX);
        assert!(ok, "{stderr}");
        let both = logins(&pg);
        // The owner roles of the views follow the logins' prefix: one per database.
        for login in [
            "maschera_sales",
            "maschera_sales_owner",
            "maschera_crm2_sales",
            "maschera_crm2_sales_owner",
            "maschera_crm2_support",
            "maschera_crm2_support_owner",
        ] {
            assert!(both.contains(&login.to_string()), "{login} in {both:?}");
        }

        let users = pg.dir().join("users.toml");
        write_crm_users(&users, maschera_tests::crm_proxy::CRM_USERS, 4096).unwrap();
        let audit_dir = pg.dir().to_path_buf();
        let sections = format!(
            "\n[databases.crm2]\npolicy = {:?}\ncredentials = {:?}\nlogin_prefix = \"{CRM2_PREFIX}\"\n",
            crm2.policy.display().to_string(),
            crm2.credentials.display().to_string(),
        );
        let proxy = Proxy::start(
            &pg,
            ProxyOptions {
                database: CRM_DB.into(),
                users_file: Some(users),
                policy: crm1.proxy_section(None),
                audit: access_log_section(&audit_dir, "databases"),
                sections,
                ..ProxyOptions::default()
            },
        )
        .unwrap();

        let check = |label: &'static str| {
            let proxy = &proxy;
            async move {
                let plain = first_email(proxy, CRM_DB).await;
                assert!(
                    plain.contains('@') && !plain.contains("***"),
                    "{label}: sales sees e-mail addresses in crm: {plain}"
                );
                let masked = first_email(proxy, "crm2").await;
                assert!(
                    masked.contains("***@"),
                    "{label}: sales sees e-mail addresses masked in crm2: {masked}"
                );
            }
        };
        check("after both applies").await;

        // Re-applying one database's policy leaves the other's logins and sessions alone.
        apply_policy(&pg, CRM_DB, &crm1, CRM_PSEUDONYM_KEY).unwrap();
        assert_eq!(
            logins(&pg),
            both,
            "re-applying crm changed the cluster's logins"
        );
        check("after re-applying crm").await;
        let (ok, stderr) = apply_with_prefix(&pg, "crm2", &crm2, CRM2_PREFIX);
        assert!(ok, "{stderr}");
        assert_eq!(
            logins(&pg),
            both,
            "re-applying crm2 changed the cluster's logins"
        );
        check("after re-applying crm2").await;

        // A schema change in crm2 by its unrestricted user rebuilds crm2's views for crm2's logins.
        let dora = connect_as(&proxy, "dora", "crm2").await.unwrap();
        dora.batch_execute("BEGIN; ALTER TABLE contacts ADD COLUMN nickname text")
            .await
            .unwrap();
        let granted: bool = dora
            .query_one(
                "SELECT has_table_privilege('maschera_crm2_sales', 'maschera_sales.contacts', 'SELECT')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            granted,
            "the views recompiled in the transaction are crm2's logins'"
        );
        dora.batch_execute("COMMIT").await.unwrap();
        check("after a schema change in crm2").await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        check("after the views of crm2 were rebuilt").await;

        // An anonymised copy of crm2 as sales sees it, through crm2's login.
        let dump = Command::new(maschera_bin())
            .arg("dump")
            .arg(&crm2.policy)
            .args(["--upstream", &pg.uri("crm2"), "--role", "sales"])
            .args(["--attr", "region=north", "--login-prefix", CRM2_PREFIX])
            .output()
            .expect("maschera dump");
        let dumped = Ran::of(dump).ok_stdout("maschera dump");
        assert!(
            dumped.contains("COPY ") && dumped.contains("***@"),
            "crm2's dump for sales has masked e-mail addresses"
        );

        // The access log says which database each session was in.
        let log: PathBuf = audit_dir.join("audit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let found = loop {
            let all = access_log_records(&log);
            let in_crm2 = all
                .iter()
                .filter(|r| r["user"] == "sam" && r["database"] == "crm2")
                .map(|r| r["event"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>();
            if in_crm2.iter().any(|e| e == "statement") || std::time::Instant::now() > deadline {
                break in_crm2;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(found.iter().any(|e| e == "login_ok"), "{found:?}");
        assert!(found.iter().any(|e| e == "statement"), "{found:?}");
    });
}

/// The Django project of `tests/compat/django_testdb`, through the proxy to `db` as `user`.
fn manage(proxy: &Proxy, user: &str, db: &str, args: &[&str]) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/django_testdb");
    Command::new("python3")
        .current_dir(&dir)
        .arg("manage.py")
        .args(args)
        .env("MASCHERA_DB_HOST", "127.0.0.1")
        .env("MASCHERA_DB_PORT", proxy.port().to_string())
        .env("MASCHERA_DB_USER", user)
        .env("MASCHERA_DB_PASSWORD", crm_password(user))
        .env("MASCHERA_DB_NAME", db)
        .stdin(Stdio::null())
        .output()
        .expect("python3 manage.py")
}

/// Row counts of the real database, read directly (not through the proxy).
fn counts(pg: &PgServer) -> String {
    pg.psql(
        CRM_DB,
        &[
            "-c",
            "SELECT (SELECT count(*) FROM contacts), (SELECT count(*) FROM deals), \
             (SELECT count(*) FROM probe_note), (SELECT count(*) FROM auth_group), \
             (SELECT count(*) FROM django_content_type)",
        ],
    )
    .unwrap()
}

#[test]
fn a_django_test_run_uses_its_test_database_and_leaves_the_real_one_untouched() {
    block_on(async {
        let crm = start_routing().await;
        // The project's tables in the real database, with rows of their own.
        let migrated = manage(&crm.proxy, "dora", CRM_DB, &["migrate", "--noinput"]);
        Ran::of(migrated).ok_stdout("manage.py migrate");
        crm.pg
            .psql(
                CRM_DB,
                &[
                    "-c",
                    "INSERT INTO probe_note (text) VALUES ('real one'), ('real two'), ('real three'); \
                     INSERT INTO auth_group (name) VALUES ('real group')",
                ],
            )
            .unwrap();
        let before = counts(&crm.pg);

        let run = manage(
            &crm.proxy,
            "dora",
            CRM_DB,
            &["test", "--noinput", "-v", "2"],
        );
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(run.status.success(), "manage.py test failed:\n{output}");
        assert!(
            output.contains("Creating test database for alias 'default'")
                && output.contains("Ran 3 tests")
                && output.contains("\nOK"),
            "{output}"
        );
        assert_eq!(
            counts(&crm.pg),
            before,
            "the real database changed:\n{output}"
        );
        let left = crm
            .pg
            .execute("SELECT count(*) FROM pg_database WHERE datname = 'test_crm'")
            .unwrap();
        assert_eq!(left.trim(), "0", "the test database is dropped afterwards");
    });
}
