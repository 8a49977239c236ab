//! End users behind one application login (issue 22), as the demo serves them: the application user
//! `crm` of `maschera demo`, tokens from `maschera end-user token`, and real clients (tokio-postgres
//! in both protocols, psql, psycopg) alternating end users on one connection.

use crate::demo::Demo;
use maschera_tests::clients::{error_of, simple_column, simple_refusal, simple_rows};
use maschera_tests::maschera_bin;
use std::path::Path;

/// `maschera end-user token` for `end_user` of the demo.
pub(crate) fn token(config: &Path, end_user: &str) -> String {
    let out = std::process::Command::new(maschera_bin())
        .args(["end-user", "token", "--config"])
        .arg(config)
        .args(["--end-user", end_user, "--ttl", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "end-user token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The same token with one character of its claims changed.
fn tampered(token: &str) -> String {
    let at = token.find('.').unwrap() + 10;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

pub(crate) async fn connect(uri: &str) -> tokio_postgres::Client {
    maschera_tests::connect(uri)
        .await
        .unwrap_or_else(|e| panic!("connecting to {uri}: {e}"))
}

/// Every line of the demo's access log.
fn access_log(dir: &Path) -> String {
    let mut records = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            records.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    records
}

/// The demo scenario of the issue, through one connection of `crm`: no end user → 42501 on
/// personal data; sam's token → only north's contacts; tom's → masked e-mails; a tampered token
/// refused without echo, the next statement served; the access log names sam, tom and crm. Then
/// the transaction semantics of the routes and the extended protocol's `set_config`.
#[tokio::test(flavor = "multi_thread")]
async fn one_application_login_serves_each_end_user_as_their_role() {
    let demo = Demo::start();
    let config = demo.facts.config.clone();
    let crm_facts = demo.user("crm");
    assert!(crm_facts.application && crm_facts.role.is_none());
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    let crm = connect(&crm_facts.uri).await;
    let sam_direct = connect(&demo.user("sam").uri).await;
    let tom_direct = connect(&demo.user("tom").uri).await;
    let emails = "SELECT email FROM contacts ORDER BY id LIMIT 5";

    // No end user: no personal data, but the session works.
    let (code, message) = simple_refusal(&crm, "SELECT email FROM contacts").await;
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("no end user is set"), "{message}");
    assert_eq!(simple_column(&crm, "SELECT 1").await, ["1"]);

    // sam: only north's contacts, as sam himself sees them.
    crm.batch_execute(&format!("SET maschera.end_user = '{sam}'"))
        .await
        .unwrap();
    let regions = simple_column(&crm, "SELECT DISTINCT region FROM contacts").await;
    assert_eq!(regions, ["north"]);
    assert_eq!(
        simple_rows(&crm, emails).await,
        simple_rows(&sam_direct, emails).await
    );

    // tom: masked e-mails, as tom sees them; every region.
    crm.batch_execute(&format!("SET maschera.end_user TO '{tom}'"))
        .await
        .unwrap();
    let masked = simple_column(&crm, emails).await;
    assert_eq!(masked, simple_column(&tom_direct, emails).await);
    assert!(masked.iter().all(|e| e.contains("***@")), "{masked:?}");
    let regions = simple_column(&crm, "SELECT DISTINCT region FROM contacts ORDER BY 1").await;
    assert_eq!(regions.len(), 3, "{regions:?}");

    // A tampered token: refused naming the check, never echoed; the session goes on as tom.
    let bad = tampered(&sam);
    let (code, message) = simple_refusal(&crm, &format!("SET maschera.end_user = '{bad}'")).await;
    assert!(
        matches!(code.as_str(), "28000" | "42501"),
        "{code} {message}"
    );
    assert!(
        message.contains("signature") || message.contains("claims"),
        "{message}"
    );
    for part in bad.split('.') {
        assert!(!message.contains(part), "the token is echoed: {message}");
    }
    assert_eq!(simple_column(&crm, emails).await, masked);

    // Only the exact routes: a switch inside a multi-statement Query is refused like any
    // `maschera.*` setting.
    let (code, _) = simple_refusal(&crm, &format!("BEGIN; SET maschera.end_user = '{sam}'")).await;
    assert_eq!(code, "42501");
    // A transaction is served as the end user of its first statement: switching after it is
    // refused, and the session goes on as before.
    crm.batch_execute("BEGIN").await.unwrap();
    simple_rows(&crm, emails).await;
    let (code, message) =
        simple_refusal(&crm, &format!("SET LOCAL maschera.end_user = '{sam}'")).await;
    assert_eq!(code, "25001", "{message}");
    crm.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(simple_column(&crm, emails).await, masked, "tom again");
    // A fresh token of the same end user is not a switch.
    crm.batch_execute("BEGIN").await.unwrap();
    let tom_again = token(&config, "tom");
    crm.batch_execute(&format!("SET LOCAL maschera.end_user = '{tom_again}'"))
        .await
        .unwrap();
    crm.batch_execute("COMMIT").await.unwrap();

    // The extended protocol: set_config with a bound parameter, then prepared statements.
    let row = crm
        .query_one("SELECT set_config('maschera.end_user', $1, false)", &[&sam])
        .await
        .unwrap();
    let shown: String = row.get(0);
    assert!(
        !shown.contains(&sam[..20]),
        "set_config answers with the token id, not the token"
    );
    let outside_north = || async {
        let row = crm
            .query_one(
                "SELECT count(*) FROM contacts WHERE region <> $1",
                &[&"north"],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(outside_north().await, 0, "sam sees north only");
    let bad_bound = crm
        .query_one("SELECT set_config('maschera.end_user', $1, false)", &[&bad])
        .await
        .unwrap_err();
    let (code, message) = error_of(&bad_bound);
    assert_eq!(code, "28000", "{message}");
    assert_eq!(outside_north().await, 0, "still sam after a refused token");

    // RESET: no end user again.
    crm.batch_execute("RESET maschera.end_user").await.unwrap();
    let (code, _) = simple_refusal(&crm, "SELECT email FROM contacts").await;
    assert_eq!(code, "42501");

    // The access log names the application login and both end users, never a token.
    drop((crm, sam_direct, tom_direct));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let records = access_log(&demo.facts.audit_log);
    for end_user in ["sam", "tom"] {
        let found = records.lines().any(|l| {
            l.contains(r#""user":"crm""#)
                && l.contains(&format!(r#""end_user":"{end_user}""#))
                && l.contains("contacts")
        });
        let crm: Vec<&str> = records
            .lines()
            .filter(|l| l.contains(r#""user":"crm""#))
            .collect();
        assert!(
            found,
            "no statement of crm for {end_user} in the access log: {crm:#?}"
        );
    }
    assert!(
        records.contains(r#""event":"end_user""#) && records.contains("end-user token refused"),
        "the refused token is in the access log"
    );
    for secret in [&sam, &tom, &bad] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!records.contains(signature), "a token in the access log");
    }
}

/// psycopg (extended protocol, server-side binding) alternating sam and tom on one connection of
/// `crm`, by `set_config` with a bound parameter and by `SET`: each sees exactly its own cells;
/// a statement prepared for one end user is refused for the other (26000), and the connection goes
/// on. psql sets the end user with `SET` in simple protocol.
#[tokio::test(flavor = "multi_thread")]
async fn psycopg_and_psql_alternate_end_users_on_one_connection() {
    let demo = Demo::start();
    let config = demo.facts.config.clone();
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    let script = r#"
import sys, psycopg
uri, sam, tom = sys.argv[1:4]
with psycopg.connect(uri, autocommit=True, prepare_threshold=None) as conn:
    for round in range(3):
        conn.execute("SELECT set_config('maschera.end_user', %s, false)", [sam])
        regions = sorted({r[0] for r in conn.execute("SELECT region FROM contacts")})
        print("sam", round, ",".join(regions))
        conn.execute("SELECT set_config('maschera.end_user', %s, false)", [tom])
        emails = [r[0] for r in conn.execute("SELECT email FROM contacts ORDER BY id LIMIT 5")]
        print("tom", round, all("***@" in e for e in emails), len(emails))
    conn.execute("RESET maschera.end_user")
    try:
        conn.execute("SELECT email FROM contacts LIMIT 1")
        print("none", "served")
    except psycopg.Error as e:
        print("none", e.sqlstate)
with psycopg.connect(uri, autocommit=True, prepare_threshold=0) as conn:
    conn.execute("SELECT set_config('maschera.end_user', %s, false)", [sam])
    print("prepared sam", conn.execute("SELECT count(*) FROM contacts WHERE region = %s", ["south"]).fetchone()[0])
    conn.execute("SELECT set_config('maschera.end_user', %s, false)", [tom])
    try:
        conn.execute("SELECT count(*) FROM contacts WHERE region = %s", ["south"]).fetchone()
        print("prepared tom served")
    except psycopg.Error as e:
        print("prepared tom", e.sqlstate)
    print("after", conn.execute("SELECT 1").fetchone()[0])
"#;
    let uri = &demo.user("crm").uri;
    let out = maschera_tests::clients::python(script, &[uri, &sam, &tom]);
    let lines: Vec<&str> = out.lines().collect();
    let mut expected = Vec::new();
    for round in 0..3 {
        expected.push(format!("sam {round} north"));
        expected.push(format!("tom {round} True 5"));
    }
    expected.extend(
        [
            "none 42501",
            "prepared sam 0",
            "prepared tom 26000",
            "after 1",
        ]
        .map(String::from),
    );
    assert_eq!(lines, expected, "{out}");

    // psql: simple protocol, the token in a SET; a bad one refused and the next statement served.
    let psql = maschera_tests::psql(
        uri,
        &[
            "-A",
            "-t",
            "-c",
            &format!("SET maschera.end_user = '{sam}'"),
            "-c",
            "SELECT DISTINCT region FROM contacts",
            "-c",
            &format!("SET maschera.end_user = '{}'", tampered(&tom)),
            "-c",
            "SELECT count(DISTINCT region) FROM contacts",
        ],
    );
    assert!(psql.stdout.lines().any(|l| l == "north"), "{psql:?}");
    assert!(psql.stderr.contains("signature"), "{psql:?}");
    assert!(!psql.stderr.contains(&tom[tom.len() - 20..]), "{psql:?}");
    assert!(psql.stdout.lines().any(|l| l == "1"), "still sam: {psql:?}");
}

/// Every kind of bad token sent as `crm`, signed with the demo's own key where the check is not the
/// signature's: refused with the check it failed (28000, or 42501 for the application's bounds),
/// never echoed, recorded in the access log, and the session goes on; past `max_failures` (20) bad
/// tokens from one application login and address, tokens are refused with 53300, good ones too.
#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_by_their_check_and_limited() {
    use maschera::config::end_users::KeyAlgorithm;
    use maschera::end_user::sign::{TokenRequest, sign_pem};
    let demo = Demo::start();
    let private = std::fs::read(demo.dir().join("end-user-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = TokenRequest {
        end_user: "sam".into(),
        role: Some("sales".into()),
        attributes: [("region".to_string(), "north".to_string())].into(),
        issuer: Some("maschera-demo".into()),
        audience: Some("maschera".into()),
        issued: now,
        expires: now + 300,
        not_before: None,
        jti: None,
    };
    let sign = |change: &dyn Fn(&mut TokenRequest), kid: &str| {
        let mut request = base.clone();
        change(&mut request);
        sign_pem(&request, KeyAlgorithm::EdDSA, Some(kid), &private).unwrap()
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "expired",
            sign(&|r| r.expires = now - 120, "demo"),
            "28000",
            "expired",
        ),
        (
            "not yet valid",
            sign(&|r| r.not_before = Some(now + 300), "demo"),
            "28000",
            "not valid yet",
        ),
        (
            "lifetime",
            sign(&|r| r.expires = now + 7200, "demo"),
            "28000",
            "lives longer",
        ),
        (
            "audience",
            sign(&|r| r.audience = Some("other".into()), "demo"),
            "28000",
            "audience",
        ),
        (
            "issuer",
            sign(&|r| r.issuer = Some("other".into()), "demo"),
            "28000",
            "issuer",
        ),
        (
            "unknown kid",
            sign(&|_| {}, "retired"),
            "28000",
            "key (kid)",
        ),
        (
            "role",
            sign(&|r| r.role = Some("dpo".into()), "demo"),
            "42501",
            "role",
        ),
        (
            "attribute",
            sign(
                &|r| {
                    r.attributes.insert("region".into(), "south".into());
                },
                "demo",
            ),
            "42501",
            "attributes",
        ),
        (
            "unknown end user",
            sign(
                &|r| {
                    r.end_user = "nobody".into();
                    r.role = None;
                },
                "demo",
            ),
            "42501",
            "not in the users file",
        ),
        ("malformed", "not-a-token".into(), "28000", "well-formed"),
        ("oversized", "x".repeat(9000), "28000", "longer than"),
    ];
    let crm = connect(&demo.user("crm").uri).await;
    for (case, token, code, says) in &cases {
        let (got, message) =
            simple_refusal(&crm, &format!("SET maschera.end_user = '{token}'")).await;
        assert_eq!((got.as_str(), case), (*code, case), "{message}");
        assert!(message.contains(says), "{case}: {message}");
        let tail = &token[token.len().saturating_sub(16)..];
        assert!(
            !message.contains(tail),
            "{case}: the token is echoed: {message}"
        );
        assert_eq!(
            simple_column(&crm, "SELECT 1").await,
            ["1"],
            "{case}: the session goes on"
        );
    }
    let good = sign(&|_| {}, "demo");
    crm.batch_execute(&format!("SET maschera.end_user = '{good}'"))
        .await
        .unwrap();
    assert_eq!(
        simple_column(&crm, "SELECT DISTINCT region FROM contacts").await,
        ["north"]
    );
    // 11 bad tokens so far; 9 more reach the limit of 20, then even a good one is refused.
    for _ in 0..9 {
        let (code, _) = simple_refusal(&crm, "SET maschera.end_user = 'bad'").await;
        assert_eq!(code, "28000");
    }
    let (code, message) = simple_refusal(&crm, &format!("SET maschera.end_user = '{good}'")).await;
    assert_eq!(code, "53300", "{message}");
    assert!(
        message.contains("too many bad end-user tokens"),
        "{message}"
    );
    assert_eq!(
        simple_column(&crm, "SELECT DISTINCT region FROM contacts").await,
        ["north"],
        "the end user set before stays"
    );
    drop(crm);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let records = access_log(&demo.facts.audit_log);
    for label in [
        "expired",
        "not_yet_valid",
        "audience",
        "unknown_key",
        "role_not_allowed",
        "oversized",
    ] {
        let refused = format!("end-user token refused: {label}");
        assert!(
            records.contains(&refused),
            "no {refused:?} in the access log"
        );
    }
}

/// pgjdbc (server-side prepared statements from the second execution) alternating sam and tom on
/// one connection of `crm` by `set_config`: each sees its own cells; a statement prepared for sam,
/// executed for tom, is refused (26000) and pgjdbc prepares it again, rewritten for tom.
#[test]
fn pgjdbc_alternates_end_users_on_one_connection() {
    let demo = Demo::start();
    let config = demo.facts.config.clone();
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    let stdout = crate::end_user_drivers::run_pgjdbc(&demo, "EndUserClient", [&sam, &tom], &[]);
    let mut expected = Vec::new();
    for round in 0..3 {
        expected.push(format!("sam {round} north"));
        expected.push(format!("tom {round} true 5"));
    }
    expected.extend(["prepared sam 0", "prepared sam 0"].map(String::from));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..8], expected, "{stdout}");
    // pgjdbc prepares the statement again itself on the 26000 for a statement prepared for sam,
    // now rewritten for tom (support sees every region).
    let south: i64 = lines[8]
        .strip_prefix("prepared tom served ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .parse()
        .unwrap();
    assert!(south > 0, "{stdout}");
    assert_eq!(lines[9..], ["after 1"], "{stdout}");
}

/// Transaction pooling (`[pool] mode = "transaction"`, one connection per pool) and an application
/// user: each transaction of `crm` is served from the pool of its end user's role login and
/// attributes (sam's north sales login, tom's support login), the application's own statements
/// from its own; three clients alternate sam and tom on their connections at once, by `SET` and by
/// `set_config`, with HS256 tokens (the secret from the environment): each sees exactly its cells,
/// and the access log names crm with sam and tom. A session pinned to its connection by session
/// state it created cannot run another end user's statements there (0A000), and goes on as the
/// end user it is pinned to.
#[tokio::test(flavor = "multi_thread")]
async fn transaction_pooling_serves_each_end_user_from_its_roles_pool() {
    use maschera::config::end_users::KeyAlgorithm;
    use maschera::end_user::sign::{TokenRequest, sign_pem};
    const SECRET_ENV: &str = "MASCHERA_TEST_END_USER_SECRET";
    const SECRET: &str = "a test secret of at least thirty-two bytes";
    // SAFETY: set before the proxy starts and before any other thread reads the environment of
    // this test's process (nextest runs each test in a process of its own).
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let sections = format!(
        "[pool]\nmode = \"transaction\"\nsize = 1\nacquire_timeout_seconds = 20\n\n\
         [end_users]\nkeys = [{{ kid = \"hs\", algorithm = \"HS256\", secret_env = \"{SECRET_ENV}\" }}]\n"
    );
    let crm = maschera_tests::Fixture::crm(200)
        .users([
            ("sam", "sales", &[("region", "north")][..]),
            ("tom", "support", &[]),
        ])
        .access_log("pooled-end-users")
        .config(|options| options.sections = sections)
        .before_proxy(|pg| {
            use maschera::users::application::{Application, AttributeBounds};
            let path = pg.dir().join("users.toml");
            let mut users = maschera::users::UserStore::load(&path).unwrap();
            let application = Application {
                roles: vec!["sales".into(), "support".into()],
                attributes: AttributeBounds::UsersFile,
                keys: Vec::new(),
            };
            let user = maschera::users::User {
                name: "crm".into(),
                role: String::new(),
                attributes: Default::default(),
                verifier: maschera::net::scram::Verifier::from_password(
                    &maschera_tests::crm_proxy::crm_password("crm"),
                    4096,
                ),
            };
            users.insert_application(user, application).unwrap();
            users.save(&path).unwrap();
        })
        .start()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |end_user: &str| {
        let request = TokenRequest {
            end_user: end_user.into(),
            role: None,
            attributes: Default::default(),
            issuer: None,
            audience: None,
            issued: now,
            expires: now + 300,
            not_before: None,
            jti: None,
        };
        sign_pem(&request, KeyAlgorithm::HS256, Some("hs"), SECRET.as_bytes()).unwrap()
    };
    let (sam, tom) = (token("sam"), token("tom"));
    let emails = "SELECT email FROM contacts ORDER BY id LIMIT 5";
    let mut clients = Vec::new();
    for client in 0..3 {
        let app = crm.through_proxy("crm").await;
        let (sam, tom) = (sam.clone(), tom.clone());
        clients.push(tokio::spawn(async move {
            let (code, message) = simple_refusal(&app, "SELECT email FROM contacts").await;
            assert_eq!(code, "42501", "client {client}: {message}");
            assert_eq!(simple_column(&app, "SELECT 1").await, ["1"]);
            for round in 0..4 {
                app.batch_execute(&format!("SET maschera.end_user = '{sam}'"))
                    .await
                    .unwrap();
                let regions = simple_column(&app, "SELECT DISTINCT region FROM contacts").await;
                assert_eq!(regions, ["north"], "client {client} round {round}: sam");
                app.query_one("SELECT set_config('maschera.end_user', $1, false)", &[&tom])
                    .await
                    .unwrap();
                let masked = simple_column(&app, emails).await;
                assert!(masked.iter().all(|e| e.contains("***@")), "{masked:?}");
                let regions =
                    simple_column(&app, "SELECT count(DISTINCT region) FROM contacts").await;
                assert_eq!(regions, ["3"], "client {client} round {round}: tom");
                app.batch_execute("RESET maschera.end_user").await.unwrap();
                let (code, _) = simple_refusal(&app, "SELECT email FROM contacts").await;
                assert_eq!(code, "42501", "client {client} round {round}: none");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }

    // Pinned by a session-level SET the pool does not follow, as sam: tom's statements are
    // refused, sam's served.
    let app = crm.through_proxy("crm").await;
    app.batch_execute(&format!("SET maschera.end_user = '{sam}'"))
        .await
        .unwrap();
    app.batch_execute("SET work_mem = '8MB'").await.unwrap();
    app.batch_execute(&format!("SET maschera.end_user = '{tom}'"))
        .await
        .unwrap();
    let (code, message) = simple_refusal(&app, "SELECT count(*) FROM contacts").await;
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("pinned"), "{message}");
    app.batch_execute(&format!("SET maschera.end_user = '{sam}'"))
        .await
        .unwrap();
    assert_eq!(
        simple_column(&app, "SELECT DISTINCT region FROM contacts").await,
        ["north"]
    );
    drop(app);

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let records = maschera_tests::access_log_records(&crm.audit_dir());
    for end_user in ["sam", "tom"] {
        let found = records.iter().any(|r| {
            r["user"] == "crm" && r["end_user"] == end_user && r.to_string().contains("contacts")
        });
        assert!(
            found,
            "no statement of crm for {end_user} in the access log"
        );
    }
}

/// `maschera user add --application` writes the application's bounds to the users file, `user
/// list --json` marks it, and an application without a role it may act as is refused.
#[test]
fn user_add_application_writes_its_bounds() {
    use maschera::users::application::AttributeBounds;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let run = |args: &[&str]| {
        let mut child = std::process::Command::new(maschera_bin())
            .arg("user")
            .args(args)
            .args(["--password-stdin", "--users"])
            .arg(&users)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"Crm-app-p4ss#Wq8!zR-long\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = run(&[
        "add",
        "crm",
        "--application",
        "--end-user-role",
        "sales",
        "--end-user-role",
        "support",
        "--end-user-attr",
        "region=north,south",
        "--key",
        "k1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = maschera::users::UserStore::load(&users).unwrap();
    let crm = store.application("crm").expect("an application user");
    assert_eq!(crm.roles, ["sales", "support"]);
    assert_eq!(crm.keys, ["k1"]);
    let AttributeBounds::Values(values) = &crm.attributes else {
        panic!("{:?}", crm.attributes)
    };
    assert_eq!(values["region"], ["north", "south"]);
    assert_eq!(store.get("crm").unwrap().role, "", "no role of its own");
    let list = std::process::Command::new(maschera_bin())
        .args(["user", "list", "--json", "--users"])
        .arg(&users)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        listed[0]["application"],
        serde_json::Value::Bool(true),
        "{listed}"
    );
    let out = run(&["add", "erp", "--application"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least one role"), "{stderr}");
}

/// A cancel request of an application session reaches the connection serving it at that moment:
/// `crm` runs a statement that would not end for tom (his own upstream connection, not the
/// session's first), and the client's cancel stops it (57014); the session goes on as tom.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_reaches_the_end_users_connection() {
    let demo = Demo::start();
    let tom = token(&demo.facts.config, "tom");
    let crm = connect(&demo.user("crm").uri).await;
    assert_eq!(simple_column(&crm, "SELECT 1").await, ["1"]);
    crm.batch_execute(&format!("SET maschera.end_user = '{tom}'"))
        .await
        .unwrap();
    let cancel = crm.cancel_token();
    let endless = "SELECT count(*) FROM contacts a, contacts b, contacts c, contacts d";
    let running = crm.simple_query(endless);
    let canceller = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    };
    let (ran, ()) = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::join!(running, canceller)
    })
    .await
    .expect("the cancel did not stop the statement");
    let (code, message) = error_of(&ran.expect_err("cancelled"));
    assert_eq!(code, "57014", "{message}");
    let regions = simple_column(&crm, "SELECT count(DISTINCT region) FROM contacts").await;
    assert_eq!(regions, ["3"], "still tom");
}
