//! Drivers that begin transactions and prepare statements in the extended protocol, through the
//! demo's application user `crm` (issue 22): pgjdbc without autocommit sends its `BEGIN` in the
//! batch of the transaction's first statement, named once prepared; the proxy holds it until the
//! transaction's end user is known (`end_user::held`), so the end user is set as the first
//! statement of each transaction. A statement prepared for one end user and executed for another
//! (pgjdbc, psycopg with `prepare_threshold=0`) is refused with 26000 saying what to do.

use crate::demo::Demo;
use crate::end_user::token;
use bytes::BytesMut;
use maschera_tests::proxy::read_message;
use postgres_protocol::message::frontend;
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What the pgjdbc client `class` of `tests/compat/end_user` prints, run as `crm` with the tokens
/// of sam and tom and `extra` arguments (it must succeed).
pub(crate) fn run_pgjdbc(demo: &Demo, class: &str, tokens: [&str; 2], extra: &[&str]) -> String {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).is_file(),
        "pgjdbc is not installed: apt-get install libpostgresql-jdbc-java"
    );
    let crm = demo.user("crm");
    let address = crm.uri.rsplit('@').next().unwrap();
    let url = format!("jdbc:postgresql://{address}");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/end_user");
    let out = std::process::Command::new("java")
        .current_dir(&source)
        .args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", jar])
        .arg(format!("{class}.java"))
        .args([url.as_str(), "crm", &crm.password])
        .args(tokens)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{class} {extra:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// With `prepareThreshold` 5 (pgjdbc's default: its `BEGIN`, `COMMIT` and `ROLLBACK` are named
/// statements from their first or fifth use), 1 and 0 (nothing prepared by name but those): sam
/// and tom alternate transaction by transaction by `SET LOCAL maschera.end_user` and by
/// `set_config(..., true)` with a bound parameter, each seeing exactly their cells (sam: north
/// only; tom: every region, masked e-mails); a transaction of only the end user, committed or
/// rolled back, leaves no end user; a statement error and a bad token fail the transaction (25P02
/// until ROLLBACK) and the next one is served; a statement prepared in sam's transactions and
/// executed in tom's is refused with 26000 saying why and what to do (pgjdbc cannot prepare it again
/// by itself inside a transaction), or, with `prepareThreshold=0`, served as tom.
#[test]
fn pgjdbc_without_autocommit_sets_the_end_user_per_transaction() {
    pgjdbc_without_autocommit(&[], &["5", "1", "0"]);
}

/// The same in transaction mode (`--pool-mode transaction`: each transaction from its end user's
/// pool, the held BEGIN replayed on the connection taken for the first statement), with
/// `prepareThreshold` 5 and 0 (with 1 the `SET LOCAL` route is a named statement whose `SET`
/// pins the session: README, transaction mode).
#[test]
fn pgjdbc_without_autocommit_in_transaction_mode() {
    pgjdbc_without_autocommit(&["--pool-mode", "transaction"], &["5", "0"]);
}

/// `EndUserTransactions.java` through a demo started with `demo_args`, once per threshold.
fn pgjdbc_without_autocommit(demo_args: &[&str], thresholds: &[&str]) {
    let demo = Demo::start_with(demo_args);
    let config = demo.facts.config.clone();
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    for &threshold in thresholds {
        let stdout = run_pgjdbc(&demo, "EndUserTransactions", [&sam, &tom], &[threshold]);
        let lines: Vec<&str> = stdout.lines().collect();
        let mut expected: Vec<String> = (0..4)
            .flat_map(|r| [format!("sam {r} north"), format!("tom {r} 3 true")])
            .collect();
        expected.extend(
            [
                "none 42501",
                "rolled back 1",
                "error 22012",
                "after error 25P02",
                "bad 28000",
                "after bad 25P02",
                "next north",
                "prepared sam 0",
            ]
            .map(String::from),
        );
        assert!(lines.len() == expected.len() + 2, "{threshold}: {stdout}");
        assert_eq!(lines[..expected.len()], expected, "{threshold}: {stdout}");
        let prepared = lines[expected.len()];
        if threshold == "0" {
            assert_eq!(prepared, "prepared tom served true", "{stdout}");
        } else {
            assert!(
                prepared.starts_with("prepared tom 26000 ")
                    && prepared.contains("was prepared for another end user")
                    && prepared.contains("prepareThreshold=0"),
                "{threshold}: {stdout}"
            );
        }
        assert_eq!(lines[expected.len() + 1], "last 3", "{threshold}: {stdout}");
        assert!(!stdout.contains(&sam) && !stdout.contains(&tom));
    }
}

/// psycopg with `prepare_threshold=0` (every statement prepared by name on its first execution),
/// without autocommit: the end user set by `set_config(..., true)` per transaction; a statement
/// prepared in sam's transaction and executed in tom's is refused with 26000 and a message that
/// says to prepare it again or how to stop psycopg preparing; the next transaction is served.
#[test]
fn psycopg_statement_prepared_for_one_end_user_is_refused_for_another() {
    let demo = Demo::start();
    let config = demo.facts.config.clone();
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    let crm = demo.user("crm");
    let script = r#"
import sys, psycopg
uri, sam, tom = sys.argv[1:4]
as_user = "SELECT set_config('maschera.end_user', %s, true)"
count = "SELECT count(*) FROM contacts WHERE region = %s"
with psycopg.connect(uri, prepare_threshold=0) as conn:
    conn.execute(as_user, [sam])
    print("sam", conn.execute(count, ["south"]).fetchone()[0])
    conn.commit()
    conn.execute(as_user, [tom])
    try:
        print("tom served", conn.execute(count, ["south"]).fetchone()[0] > 0)
    except psycopg.Error as e:
        print("tom", e.sqlstate, "another end user" in str(e), "prepare_threshold=None" in str(e))
    conn.rollback()
    conn.execute(as_user, [tom])
    print("after", len(conn.execute("SELECT DISTINCT region FROM contacts").fetchall()))
    conn.commit()
"#;
    let out = maschera_tests::clients::python(script, &[&crm.uri, &sam, &tom]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["sam 0", "tom 26000 True True", "after 3"], "{out}");
}

/// Parse, Bind, Describe (portal) and Execute of `sql`, unnamed, as libpq's `PQsendQueryParams`
/// sends them (psycopg's pipeline mode); without the Describe as pgjdbc sends them.
pub(crate) fn extended(sql: &str, describe: bool) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::parse("", sql, [], &mut out).unwrap();
    frontend::bind(
        "",
        "",
        [],
        std::iter::empty::<&[u8]>(),
        |_: &[u8], _: &mut BytesMut| Ok(postgres_protocol::IsNull::No),
        [],
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    if describe {
        frontend::describe(b'P', "", &mut out).unwrap();
    }
    frontend::execute("", 0, &mut out).unwrap();
    out
}

/// The batches (each ended by Sync) written at once.
fn batches(batches: &[&[BytesMut]]) -> BytesMut {
    let mut out = BytesMut::new();
    for batch in batches {
        for messages in *batch {
            out.extend_from_slice(messages);
        }
        frontend::sync(&mut out);
    }
    out
}

/// The answers up to the next ReadyForQuery, as text: `1`, `2`, `n`, `T`, `D:<first column>`,
/// `C:<tag>`, `E:<SQLSTATE>`, `N:<SQLSTATE>`, `Z:<status>`.
async fn answers(stream: &mut TcpStream) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let (tag, body) = read_message(stream).await;
        let field = |kind: u8| {
            let mut fields = &body[..];
            while let Some((&k, rest)) = fields.split_first() {
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                if k == kind {
                    return String::from_utf8_lossy(&rest[..end]).into_owned();
                }
                fields = rest.get(end + 1..).unwrap_or_default();
            }
            String::new()
        };
        out.push(match tag {
            b'C' => format!("C:{}", String::from_utf8_lossy(&body[..body.len() - 1])),
            b'E' | b'N' => format!("{}:{}", tag as char, field(b'C')),
            b'D' => {
                let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                format!("D:{}", String::from_utf8_lossy(&body[6..6 + len]))
            }
            b'Z' => format!("Z:{}", body[0] as char),
            other => (other as char).to_string(),
        });
        if tag == b'Z' {
            return out;
        }
    }
}

/// The extended-protocol `BEGIN` held, in the raw protocol: every answer in PostgreSQL's order and
/// the statuses the client expects, with and without Describe, the end user set by `SET LOCAL` in
/// the `BEGIN`'s batch, the `BEGIN` and the first statement in one batch (the replay ends the
/// cycle unseen), a statement pipelined behind the batch that set the end user (refused, 0A000),
/// `COMMIT` with nothing run (no warning), a
/// refused token failing the block (25P02 until it ends, `COMMIT` answering `ROLLBACK`).
#[tokio::test(flavor = "multi_thread")]
async fn an_extended_begin_is_held_with_postgresqls_answers_in_order() {
    let (_demo, sam, tom, mut raw) = crate::end_user_transactions::start().await;
    let set_local = |token: &str| format!("SET LOCAL maschera.end_user = '{token}'");
    let regions = "SELECT DISTINCT region FROM contacts ORDER BY 1";
    let steps: Vec<(BytesMut, Vec<&str>)> = vec![
        (
            batches(&[&[extended("BEGIN", true), extended(&set_local(&sam), true)]]),
            vec!["1", "2", "n", "C:BEGIN", "1", "2", "n", "C:SET", "Z:T"],
        ),
        (
            batches(&[&[extended(regions, true)]]),
            vec!["1", "2", "T", "D:north", "C:SELECT 1", "Z:T"],
        ),
        (
            batches(&[&[extended("COMMIT", false)]]),
            vec!["1", "2", "C:COMMIT", "Z:I"],
        ),
        // pgjdbc's shape: no Describe; the first statement in the BEGIN's batch.
        (
            batches(&[&[extended("BEGIN", false), extended(&set_local(&tom), false)]]),
            vec!["1", "2", "C:BEGIN", "1", "2", "C:SET", "Z:T"],
        ),
        (
            batches(&[&[extended(
                "SELECT count(DISTINCT region) FROM contacts",
                true,
            )]]),
            vec!["1", "2", "T", "D:3", "C:SELECT 1", "Z:T"],
        ),
        (
            batches(&[&[extended("ROLLBACK", false)]]),
            vec!["1", "2", "C:ROLLBACK", "Z:I"],
        ),
        (
            batches(&[&[extended("BEGIN", false)]]),
            vec!["1", "2", "C:BEGIN", "Z:T"],
        ),
        (
            batches(&[&[extended("COMMIT", false)]]),
            vec!["1", "2", "C:COMMIT", "Z:I"],
        ),
    ];
    for (write, expected) in steps {
        raw.write_all(&write).await.unwrap();
        assert_eq!(answers(&mut raw).await, expected);
    }
    // Pipelined: the first statement sent before the answers to the batch that set the end user
    // are back is refused (its transaction's connection is not the end user's yet), failing the
    // transaction as an error does; the next one is served.
    raw.write_all(&batches(&[
        &[extended("BEGIN", true), extended(&set_local(&sam), true)],
        &[extended(regions, false)],
        &[extended("COMMIT", false)],
    ]))
    .await
    .unwrap();
    assert_eq!(
        answers(&mut raw).await,
        ["1", "2", "n", "C:BEGIN", "1", "2", "n", "C:SET", "Z:T"]
    );
    assert_eq!(answers(&mut raw).await, ["E:0A000", "Z:E"]);
    assert_eq!(answers(&mut raw).await, ["1", "2", "C:ROLLBACK", "Z:I"]);
    // The BEGIN and a statement in one batch, with a session-level end user.
    raw.write_all(&batches(&[&[extended(
        &format!("SET maschera.end_user = '{tom}'"),
        false,
    )]]))
    .await
    .unwrap();
    assert_eq!(answers(&mut raw).await, ["1", "2", "C:SET", "Z:I"]);
    raw.write_all(&batches(&[&[
        extended("BEGIN", false),
        extended("SELECT count(DISTINCT region) FROM contacts", false),
    ]]))
    .await
    .unwrap();
    assert_eq!(
        answers(&mut raw).await,
        ["1", "2", "C:BEGIN", "1", "2", "D:3", "C:SELECT 1", "Z:T"]
    );
    raw.write_all(&batches(&[&[extended("ROLLBACK", false)]]))
        .await
        .unwrap();
    assert_eq!(answers(&mut raw).await, ["1", "2", "C:ROLLBACK", "Z:I"]);
    // A refused token fails the held block.
    let bad = format!("{}x", &sam[..sam.len() - 1]);
    raw.write_all(&batches(&[&[
        extended("BEGIN", false),
        extended(&set_local(&bad), false),
    ]]))
    .await
    .unwrap();
    assert_eq!(
        answers(&mut raw).await,
        ["1", "2", "C:BEGIN", "E:28000", "Z:E"]
    );
    raw.write_all(&batches(&[&[extended("SELECT 1", false)]]))
        .await
        .unwrap();
    assert_eq!(answers(&mut raw).await, ["E:25P02", "Z:E"]);
    raw.write_all(&batches(&[&[extended("COMMIT", false)]]))
        .await
        .unwrap();
    assert_eq!(answers(&mut raw).await, ["1", "2", "C:ROLLBACK", "Z:I"]);
    raw.write_all(&batches(&[&[extended(regions, false)]]))
        .await
        .unwrap();
    assert_eq!(
        answers(&mut raw).await,
        [
            "1",
            "2",
            "D:centre",
            "D:north",
            "D:south",
            "C:SELECT 3",
            "Z:I"
        ],
        "tom, the session's end user, after the failed block"
    );
}
