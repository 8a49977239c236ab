//! Real client libraries and ORMs through the proxy enforcing the reference policy: psql's describe
//! commands, SQLAlchemy 2 + psycopg 3, node-postgres, pgjdbc and Django, each as `dora` (dpo,
//! unrestricted) and `sam` (sales, region north). The client scripts live in `tests/compat/` and print
//! one `op<TAB>outcome<TAB>detail` line per operation; these tests hold what each user must get
//! (pass, or refused with a given SQLSTATE) and fail on any `broken` line (a client crash).
//! The suite runs twice: in session mode, and with every user in transaction mode
//! (`[pool] mode = "transaction"`, the `_in_transaction_mode` twins of each test), where each
//! transaction may be served by another upstream connection of the user's pool.
//! COMPATIBILITY.md is the table of these expectations.

use maschera_tests::crm_proxy::{CRM_DB, crm_password};
use maschera_tests::{CrmProxy, Fixture};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Contacts the generator writes: enough for pages and streaming in batches.
const CONTACTS: u64 = 200;

/// How long one client run may take on a loaded machine (a JVM compiling its source included).
const CLIENT_LIMIT: Duration = Duration::from_secs(300);

/// What a user must get for one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Succeeds, and its detail contains this text.
    Pass(&'static str),
    /// Refused by the database with this SQLSTATE.
    Refused(&'static str),
}
pub(crate) use Expect::{Pass, Refused};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// Runs a client to completion (killed after [`CLIENT_LIMIT`]) and returns its outcome lines by
/// operation. Panics, with its output, if it did not finish by printing `done`.
pub(crate) fn run_client(mut command: Command, what: &str) -> BTreeMap<String, (String, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|err| panic!("{what} could not start: {err}"));
    let deadline = Instant::now() + CLIENT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && stdout.lines().any(|l| l == "done"),
        "{what} did not finish ({status:?}):\n{stdout}\n---- stderr ----\n{stderr}"
    );
    eprintln!("---- {what} ----\n{stdout}");
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let op = parts.next()?;
            let outcome = parts.next()?;
            Some((
                op.to_owned(),
                (outcome.to_owned(), parts.next().unwrap_or("").to_owned()),
            ))
        })
        .collect()
}

/// Checks every expected operation and that no operation ended `broken`.
pub(crate) fn check(
    what: &str,
    outcomes: &BTreeMap<String, (String, String)>,
    expected: &[(&str, Expect)],
) {
    let mut failures = Vec::new();
    for (op, (outcome, detail)) in outcomes {
        if outcome == "broken" {
            failures.push(format!("{op}: broken: {detail}"));
        }
    }
    for (op, expect) in expected {
        let Some((outcome, detail)) = outcomes.get(*op) else {
            failures.push(format!("{op}: not run"));
            continue;
        };
        let ok = match expect {
            Pass(text) => outcome == "pass" && detail.contains(text),
            Refused(state) => outcome == "refused" && detail.starts_with(state),
        };
        if !ok {
            failures.push(format!("{op}: expected {expect:?}, got {outcome} {detail}"));
        }
    }
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

/// Asserts that the proxy refused no statement as unparseable (SQLSTATE 0A000): every statement the
/// clients sent was understood by the parser. The refusal reasons are in the proxy's debug log.
pub(crate) fn assert_parser_understood_everything(env: &CrmProxy) {
    let log = env.proxy.log();
    let unsupported: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("statement refused") && line.contains("0A000"))
        .collect();
    assert!(
        unsupported.is_empty(),
        "statements refused as not supported:\n{}",
        unsupported.join("\n")
    );
}

/// How the proxy gives the clients their upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One upstream connection per client session (the default).
    Session,
    /// Every user in transaction mode, on pools of [`TRANSACTION_POOL_SIZE`] connections.
    Transaction,
}

/// Connections per pool in transaction mode: few, so that the clients' sessions (an ORM opens
/// several) share them.
const TRANSACTION_POOL_SIZE: usize = 3;

/// The `[pool]` section of `mode` (empty in session mode).
pub(crate) fn pool_section(mode: Mode) -> String {
    match mode {
        Mode::Session => String::new(),
        Mode::Transaction => format!(
            "[pool]\nmode = \"transaction\"\nsize = {TRANSACTION_POOL_SIZE}\n\
             acquire_timeout_seconds = 20\n"
        ),
    }
}

fn start(mode: Mode) -> CrmProxy {
    maschera_tests::block_on(
        Fixture::crm(CONTACTS)
            .user(("tom", "support", &[]))
            .config(|options| options.sections.push_str(&pool_section(mode)))
            .start(),
    )
    .expect("CRM behind the proxy")
}

/// After a run: in transaction mode the sessions were served by pools (the proxy says so when a
/// session starts), and the sessions pinned to their connection were pinned for `pins` only (the
/// reasons of COMPATIBILITY.md's transaction-mode column).
pub(crate) fn assert_mode(env: &CrmProxy, mode: Mode, pins: &[&str]) {
    let log = env.proxy.log();
    let pooled = log.contains("session started in transaction mode");
    assert_eq!(pooled, mode == Mode::Transaction, "{mode:?}");
    let pinned: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("session pinned"))
        .filter_map(|l| l.split("reason=\"").nth(1)?.split('"').next())
        .collect();
    let expected = match mode {
        Mode::Session => Default::default(),
        Mode::Transaction => pins.iter().copied().collect(),
    };
    assert_eq!(pinned, expected, "sessions pinned in {mode:?} mode");
}

/// psql through the proxy: (success, stdout + stderr).
fn psql(env: &CrmProxy, user: &str, command: &str) -> (bool, String) {
    let ran = maschera_tests::psql(&env.uri(user), &["-v", "ON_ERROR_STOP=1", "-c", command]);
    (ran.ok, format!("{}{}", ran.stdout, ran.stderr))
}

fn psql_describe_commands_show_each_user_its_own_relations_in(mode: Mode) {
    let env = start(mode);
    for user in ["dora", "sam"] {
        for command in [r"\d", r"\dt", r"\d+ contacts", r"\dn", r"\du"] {
            let (ok, out) = psql(&env, user, command);
            assert!(ok, "{user} {command}: {out}");
        }
    }
    let (_, dora) = psql(&env, "dora", r"\d+ contacts");
    assert!(
        dora.contains(r#"Table "public.contacts""#) && dora.contains("character(16)"),
        "dora describes the base table: {dora}"
    );
    let (_, sam) = psql(&env, "sam", r"\d+ contacts");
    assert!(
        sam.contains(r#"View "maschera_sales.contacts""#)
            && !sam.contains("character(16)")
            && sam.contains("tax_code"),
        "sam describes its view (tax_code masked to text): {sam}"
    );
    let (_, sam) = psql(&env, "sam", r"\d");
    for table in ["contacts", "consents", "deals", "interactions", "tickets"] {
        assert!(sam.contains(table), "sam's \\d lists {table}: {sam}");
    }
    assert!(
        !sam.contains("health_records") && !sam.contains("public |"),
        "sam's \\d shows only its views: {sam}"
    );
    let (_, sam) = psql(&env, "sam", r"\dt");
    assert!(
        sam.contains("Did not find any relations"),
        "sam has views, not tables: {sam}"
    );
    let (_, dora) = psql(&env, "dora", r"\dt");
    assert!(dora.contains("health_records"), "dora's \\dt: {dora}");
    assert_parser_understood_everything(&env);
    assert_mode(&env, mode, &[]);
}

/// `python3 <script> <uri> <user>` in `tests/compat/`.
pub(crate) fn python(script: &str, env: &CrmProxy, user: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .current_dir(compat_dir())
        .arg(script)
        .args([&env.uri(user), user]);
    command
}

fn sqlalchemy_core_orm_and_server_side_cursors_in(mode: Mode) {
    let env = start(mode);
    let shared: &[(&str, Expect)] = &[
        ("connect", Pass("")),
        ("orm_filter", Pass("count=")),
        ("orm_paginate", Pass("first=")),
        ("orm_relationship", Pass("deals=")),
        ("prepared_repeat", Pass("server_prepared=True")),
        ("aggregates", Pass("stages=")),
        ("create", Pass("email=compat")),
        ("update", Pass("city=Genova")),
        ("rollback", Pass("city=Genova stage=won")),
        ("delete", Pass("gone=True")),
    ];
    let dora = run_client(
        python("sqlalchemy_client.py", &env, "dora"),
        "SQLAlchemy as dora",
    );
    check("SQLAlchemy as dora", &dora, shared);
    check(
        "SQLAlchemy as dora",
        &dora,
        &[
            ("core_select", Pass("rows=5")),
            ("reflect", Pass("health_records")),
            ("orm_list", Pass("'centre', 'north', 'south'")),
            ("stream_results", Pass("streamed=200")),
            ("yield_per", Pass("yielded=")),
            ("create_full_model", Pass("")),
            ("update_masked_column", Pass("")),
            ("update_write_back", Pass("tax=")),
            ("insert_other_region", Pass("")),
            ("write_consents", Pass("")),
            ("select_health_records", Pass("n=")),
            ("reflect_health_records", Pass("rows=")),
        ],
    );
    let sam = run_client(
        python("sqlalchemy_client.py", &env, "sam"),
        "SQLAlchemy as sam",
    );
    check("SQLAlchemy as sam", &sam, shared);
    check(
        "SQLAlchemy as sam",
        &sam,
        &[
            ("core_select", Pass("tax_codes=['****")),
            (
                "reflect",
                Pass("tables=consents,contacts,deals,interactions,tickets contacts=id,first_name"),
            ),
            ("orm_list", Pass("regions=['north']")),
            ("stream_results", Pass("streamed=")),
            ("yield_per", Pass("yielded=")),
            // Write-back: NULL in a new row's masked columns stores the defaults, the masked values
            // read and written back keep the stored ones, a changed one is refused.
            ("create_full_model", Pass("")),
            ("update_write_back", Pass("tax=****")),
            ("update_masked_column", Refused("42501")),
            ("insert_other_region", Refused("42501")),
            ("write_consents", Refused("42501")),
            ("select_health_records", Refused("42501")),
            ("reflect_health_records", Pass("absent")),
        ],
    );
    let tom = run_client(
        python("sqlalchemy_client.py", &env, "tom"),
        "SQLAlchemy as tom",
    );
    check(
        "SQLAlchemy as tom",
        &tom,
        &[
            (
                "support_ticket_save",
                Pass("subject=mail me at [email] status=closed"),
            ),
            ("support_ticket_changed", Refused("42501")),
        ],
    );
    assert_parser_understood_everything(&env);
    assert_mode(&env, mode, &[]);
}

fn node_postgres_plain_and_prepared_statements_in(mode: Mode) {
    let env = start(mode);
    let node_dir = compat_dir().join("node");
    assert!(
        node_dir.join("node_modules/pg").is_dir(),
        "node-postgres is not installed: run `npm install` in {}",
        node_dir.display()
    );
    let node = |user: &str| {
        let mut command = Command::new("node");
        command
            .current_dir(&node_dir)
            .arg("client.js")
            .args([&env.uri(user), user]);
        command
    };
    let shared: &[(&str, Expect)] = &[
        ("connect", Pass("")),
        ("plain_select", Pass("rows=5")),
        ("parameterised", Pass("n=")),
        ("join_aggregate", Pass("stages=")),
        ("rows_mode_array", Pass("rows=3")),
        ("transaction_write", Pass("city=Genova")),
        ("savepoint_rollback", Pass("stage=open")),
        ("delete", Pass("deleted=1")),
        ("after_refusal", Pass("rows=1")),
    ];
    let dora = run_client(node("dora"), "node-postgres as dora");
    check("node-postgres as dora", &dora, shared);
    check(
        "node-postgres as dora",
        &dora,
        &[
            ("named_prepared", Pass("rows=8")),
            ("insert_other_region", Pass("")),
            ("select_health_records", Pass("n=")),
        ],
    );
    let sam = run_client(node("sam"), "node-postgres as sam");
    check("node-postgres as sam", &sam, shared);
    check(
        "node-postgres as sam",
        &sam,
        &[
            ("plain_select", Pass("tax=****")),
            ("named_prepared", Pass("rows=")),
            ("insert_other_region", Refused("42501")),
            ("select_health_records", Refused("42501")),
        ],
    );
    assert_parser_understood_everything(&env);
    assert_mode(&env, mode, &[]);
}

/// The pgjdbc jar of Debian's `libpostgresql-jdbc-java`.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn pgjdbc_metadata_prepared_batch_and_streaming_in(mode: Mode) {
    let env = start(mode);
    assert!(
        Path::new(PGJDBC_JAR).is_file(),
        "pgjdbc is not installed: apt-get install libpostgresql-jdbc-java"
    );
    let url = format!("jdbc:postgresql://127.0.0.1:{}/{CRM_DB}", env.proxy.port());
    let java = |user: &str| {
        let mut command = Command::new("java");
        command
            .current_dir(compat_dir().join("java"))
            .args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", PGJDBC_JAR])
            .arg("JdbcClient.java")
            .args([&url, user, &crm_password(user)]);
        command
    };
    let shared: &[(&str, Expect)] = &[
        ("connect", Pass("PostgreSQL")),
        ("metadata_tables", Pass("contacts")),
        ("prepared_past_threshold", Pass("server_prepared=true")),
        ("aggregates", Pass("stages=")),
        ("batch_insert", Pass("batched=20")),
        ("streaming_fetch_size", Pass("streamed=")),
        ("update_delete", Pass("updated=20 deleted=20")),
    ];
    let dora = run_client(java("dora"), "pgjdbc as dora");
    check("pgjdbc as dora", &dora, shared);
    check(
        "pgjdbc as dora",
        &dora,
        &[
            ("current_schema", Pass("schema=public")),
            (
                "metadata_tables",
                Pass("tables=consents,contacts,deals,health_records"),
            ),
            ("metadata_columns", Pass("tax_code:bpchar")),
            ("metadata_primary_keys", Pass("pk=public.id")),
            ("prepared_past_threshold", Pass("rows=10")),
            ("insert_other_region", Pass("")),
            ("select_health_records", Pass("n=")),
            ("after_refusal", Pass("n=200")),
        ],
    );
    let sam = run_client(java("sam"), "pgjdbc as sam");
    check("pgjdbc as sam", &sam, shared);
    check(
        "pgjdbc as sam",
        &sam,
        &[
            ("current_schema", Pass("schema=maschera_sales")),
            (
                "metadata_tables",
                Pass("tables=consents,contacts,deals,interactions,tickets "),
            ),
            ("metadata_columns", Pass("tax_code:text")),
            ("metadata_primary_keys", Pass("pk=")),
            ("insert_other_region", Refused("42501")),
            ("select_health_records", Refused("42501")),
            ("after_refusal", Pass("n=")),
        ],
    );
    assert_parser_understood_everything(&env);
    // pgjdbc's `getTables` query names 'TEMPORARY TABLE' in a literal, which pins nothing
    // (COMPATIBILITY.md, transaction mode).
    assert_mode(&env, mode, &[]);
}

fn django_orm_over_the_crm_models_in(mode: Mode) {
    let env = start(mode);
    let django = |user: &str, migrate: bool| {
        let mut command = python("django/client.py", &env, user);
        if migrate {
            command.arg("--migrate");
        }
        command
    };
    let shared: &[(&str, Expect)] = &[
        ("filter", Pass("count=")),
        ("paginate", Pass("page=2 of ")),
        ("iterate", Pass("iterated=")),
        ("related", Pass("deal_contact_region=")),
        ("aggregates", Pass("stages=")),
        ("create", Pass("deals=1")),
        ("update", Pass("city=Genova stage=won")),
        ("transactions", Pass("city=Genova stage=won")),
        ("select_for_update", Pass("locked=1")),
        ("delete", Pass("gone=True")),
        ("after_refusal", Pass("n=")),
    ];
    let dora = run_client(django("dora", true), "Django as dora");
    check("Django as dora", &dora, shared);
    check(
        "Django as dora",
        &dora,
        &[
            ("migrate", Pass("groups=1")),
            ("introspect", Pass("health_records")),
            ("list", Pass("'centre', 'north', 'south'")),
            ("create_full_model", Pass("")),
            ("update_full_save", Pass("")),
            ("update_changed_masked", Pass("")),
            ("update_other_region", Pass("updated=1")),
            ("health_records", Pass("n=")),
        ],
    );
    let sam = run_client(django("sam", false), "Django as sam");
    check("Django as sam", &sam, shared);
    check(
        "Django as sam",
        &sam,
        &[
            (
                "introspect",
                Pass("tables=consents,contacts,deals,interactions,tickets contacts=id,"),
            ),
            ("list", Pass("regions=['north'] tax=****")),
            ("create_full_model", Pass("")),
            ("update_full_save", Pass("tax=****")),
            ("update_changed_masked", Refused("42501")),
            ("update_other_region", Refused("42501")),
            ("health_records", Refused("42501")),
        ],
    );
    // Support: tickets, consents and interactions through the full models.
    let tom = run_client(django("tom", false), "Django as tom");
    check(
        "Django as tom",
        &tom,
        &[
            (
                "support_tickets",
                Pass("subject=mail me at [email] status=closed"),
            ),
            ("support_ticket_changed", Refused("42501")),
            ("support_consents", Pass("withdrawn=True")),
            ("support_interactions", Pass("notes=called back on [phone]")),
            ("health_records", Refused("42501")),
        ],
    );
    let stored = env
        .pg
        .psql(
            CRM_DB,
            &["-Atc", "SELECT subject FROM tickets WHERE id = 250000"],
        )
        .expect("owner query");
    assert_eq!(stored.trim(), "mail me at t250000@example.it");
    assert_parser_understood_everything(&env);
    // `QuerySet.iterator()` in autocommit declares a cursor `WITH HOLD`: that session keeps its
    // connection (as with pgbouncer, `DISABLE_SERVER_SIDE_CURSORS` avoids it).
    assert_mode(&env, mode, &["cursor WITH HOLD"]);
}

/// Each test of the suite twice: `session` in session mode, `transaction` in transaction mode.
macro_rules! in_both_modes {
    ($($run:ident: $session:ident, $transaction:ident;)*) => {$(
        #[test]
        fn $session() {
            $run(Mode::Session);
        }

        #[test]
        fn $transaction() {
            $run(Mode::Transaction);
        }
    )*};
}

in_both_modes! {
    psql_describe_commands_show_each_user_its_own_relations_in:
        psql_describe_commands_show_each_user_its_own_relations,
        psql_describe_commands_show_each_user_its_own_relations_in_transaction_mode;
    sqlalchemy_core_orm_and_server_side_cursors_in:
        sqlalchemy_core_orm_and_server_side_cursors,
        sqlalchemy_core_orm_and_server_side_cursors_in_transaction_mode;
    node_postgres_plain_and_prepared_statements_in:
        node_postgres_plain_and_prepared_statements,
        node_postgres_plain_and_prepared_statements_in_transaction_mode;
    pgjdbc_metadata_prepared_batch_and_streaming_in:
        pgjdbc_metadata_prepared_batch_and_streaming,
        pgjdbc_metadata_prepared_batch_and_streaming_in_transaction_mode;
    django_orm_over_the_crm_models_in:
        django_orm_over_the_crm_models,
        django_orm_over_the_crm_models_in_transaction_mode;
}
