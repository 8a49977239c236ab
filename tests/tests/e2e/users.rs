//! `maschera user ...` through the real binary, and the verifiers it writes checked by PostgreSQL itself.

use maschera_tests::{PgServer, maschera_bin};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const STRONG: &str = "violet-harbour-quietly-37-lantern";
const STRONG_2: &str = "Ochre falcon sings under 9 bridges";

/// Runs `maschera user <args>` with `stdin` as standard input.
fn maschera_user(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(maschera_bin())
        .arg("user")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run maschera");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// The verifier line of `user` in the users file.
fn verifier_of(file: &Path, user: &str) -> String {
    let store = maschera::users::UserStore::load(file).unwrap();
    store.get(user).expect("the user exists").verifier.to_text()
}

#[test]
fn user_add_list_passwd_remove_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let users = file.to_str().unwrap();

    let add = [
        "add",
        "sam",
        "--role",
        "sales",
        "--attr",
        "region=north",
        "--password-stdin",
    ];
    let out = maschera_user(
        &[&add[..], &["--users", users]].concat(),
        &format!("{STRONG}\n"),
    );
    assert_ok(&out);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the users file is readable by its owner only");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(STRONG), "no password in the file:\n{text}");
    assert!(text.contains("SCRAM-SHA-256$4096:"), "{text}");

    let again = maschera_user(
        &[&add[..], &["--users", users]].concat(),
        &format!("{STRONG}\n"),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let add_ann = [
        "add",
        "ann",
        "--role",
        "analyst",
        "--password-stdin",
        "--users",
        users,
    ];
    for (weak, reason) in [
        ("Xq7#pL2!", "too short"),
        ("password1234", "too easy to guess"),
    ] {
        let out = maschera_user(&add_ann, &format!("{weak}\n"));
        assert_eq!(out.status.code(), Some(1), "a weak password is refused");
        assert!(stderr(&out).contains(reason), "{}", stderr(&out));
        assert!(!stderr(&out).contains(weak), "the password is not echoed");
    }
    let out = maschera_user(&add_ann, STRONG_2);
    assert_ok(&out);

    let list = maschera_user(&["list", "--users", users], "");
    assert_ok(&list);
    assert_eq!(stdout(&list), "ann\tanalyst\t\nsam\tsales\tregion=north\n");
    let json = maschera_user(&["list", "--json", "--users", users], "");
    assert_ok(&json);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"name": "ann", "role": "analyst", "attributes": {}},
            {"name": "sam", "role": "sales", "attributes": {"region": "north"}},
        ])
    );
    assert!(
        !stdout(&json).contains("SCRAM"),
        "list never shows verifiers"
    );

    let before = verifier_of(&file, "sam");
    let out = maschera_user(
        &["passwd", "sam", "--password-stdin", "--users", users],
        "short\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        verifier_of(&file, "sam"),
        before,
        "a refused password changes nothing"
    );
    let out = maschera_user(
        &["passwd", "sam", "--password-stdin", "--users", users],
        STRONG_2,
    );
    assert_ok(&out);
    assert_ne!(verifier_of(&file, "sam"), before);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("region = \"north\"")
    );

    assert_ok(&maschera_user(&["remove", "sam", "--users", users], ""));
    let out = maschera_user(&["remove", "sam", "--users", users], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no user \"sam\""), "{}", stderr(&out));
    assert_eq!(
        stdout(&maschera_user(&["list", "--users", users], "")),
        "ann\tanalyst\t\n"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "still 0600 after rewrites");
}

#[test]
fn user_commands_find_the_users_file_through_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("maschera.toml");
    std::fs::write(&config, "[users]\nfile = \"users.toml\"\n").unwrap();
    let config = config.to_str().unwrap();
    let out = maschera_user(
        &[
            "--config",
            config,
            "add",
            "tom",
            "--role",
            "support",
            "--password-stdin",
        ],
        STRONG,
    );
    assert_ok(&out);
    assert!(
        dir.path().join("users.toml").exists(),
        "relative to the configuration's folder"
    );
    let list = maschera_user(&["list", "--config", config], "");
    assert_eq!(stdout(&list), "tom\tsupport\t\n");

    let out = maschera_user(&["list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--users"), "{}", stderr(&out));
}

#[test]
fn users_file_errors_name_the_file_and_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    std::fs::write(
        &file,
        "[users.sam]\nrole = \"sales\"\nverifier = \"SCRAM-SHA-256$4096:abc\"\n",
    )
    .unwrap();
    let out = maschera_user(&["list", "--users", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("users.toml") && message.contains("\"sam\""),
        "{message}"
    );
    assert!(message.contains("verifier"), "{message}");
}

/// The verifier `maschera user add` writes is one PostgreSQL itself accepts: stored as a role's
/// password, it lets tokio-postgres log in with the password (SCRAM-SHA-256 over TCP) and refuses a
/// wrong one. A password that SASLprep changes (U+2163 ROMAN NUMERAL FOUR becomes "IV", U+00A0 a space)
/// proves both sides normalise alike.
#[tokio::test]
async fn postgres_accepts_the_verifiers_maschera_writes() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let users = file.to_str().unwrap();
    let admin = pg.connect("postgres").await.unwrap();

    let normalised = "Chapter \u{2163}:\u{a0}violet harbour lantern";
    for (name, password) in [("sam", STRONG), ("ana", normalised)] {
        let out = maschera_user(
            &[
                "add",
                name,
                "--role",
                "sales",
                "--password-stdin",
                "--users",
                users,
            ],
            password,
        );
        assert_ok(&out);
        let verifier = verifier_of(&file, name);
        assert!(!verifier.contains('\''));
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{verifier}'"))
            .await
            .unwrap();
        let stored: String = admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, verifier, "PostgreSQL stored the verifier as it is");

        let login = |password: &str| {
            let mut config = tokio_postgres::Config::new();
            config
                .host(pg.host())
                .port(pg.port())
                .user(name)
                .password(password)
                .dbname("postgres");
            async move { config.connect(tokio_postgres::NoTls).await }
        };
        let (client, connection) = login(password)
            .await
            .expect("PostgreSQL accepts the password");
        tokio::spawn(connection);
        let who: String = client
            .query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, name);

        let Err(err) = login("violet-harbour-quietly-37-lanterns").await else {
            panic!("PostgreSQL accepted a wrong password");
        };
        let code = err.as_db_error().map(|e| e.code().code().to_string());
        assert_eq!(code.as_deref(), Some("28P01"), "{err}");
    }
}
