//! End users and PostgreSQL's transactions, through the demo's application user `crm`: an implicit
//! transaction ends with its error, so a client that sends its next statement as soon as it has the
//! error (before PostgreSQL's ReadyForQuery; tokio-postgres does) may switch the end user at once,
//! while an error inside a transaction block leaves the block and its end user in force.

use crate::demo::Demo;
use crate::end_user::{connect, token};
use bytes::BytesMut;
use maschera_tests::clients::{simple_column, simple_refusal};
use maschera_tests::proxy::{raw_login, read_message};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The demo, tokens of sam and tom, and a raw session of its application user `crm`.
pub(crate) async fn start() -> (Demo, String, String, TcpStream) {
    let demo = Demo::start();
    let config = demo.facts.config.clone();
    let (sam, tom) = (token(&config, "sam"), token(&config, "tom"));
    let crm = demo.user("crm");
    let uri: tokio_postgres::Config = crm.uri.parse().unwrap();
    let (port, database) = (uri.get_ports()[0], uri.get_dbname().unwrap());
    let raw = raw_login(port, "crm", &crm.password, database).await;
    (demo, sam, tom, raw)
}

/// Reads messages up to one of type `until`; returns the types and bodies read, that one included.
async fn read_until(stream: &mut TcpStream, until: u8) -> Vec<(u8, Vec<u8>)> {
    let mut read = Vec::new();
    loop {
        let message = read_message(stream).await;
        let done = message.0 == until;
        read.push(message);
        if done {
            return read;
        }
    }
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    let mut fields = body;
    while let Some((&kind, rest)) = fields.split_first() {
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        if kind == b'C' {
            return String::from_utf8_lossy(&rest[..end]).into_owned();
        }
        fields = rest.get(end + 1..).unwrap_or_default();
    }
    String::new()
}

fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).unwrap();
    out
}

/// Parse, Bind and Execute of `sql` (unnamed, no parameters), without Sync.
fn unnamed(sql: &str) -> BytesMut {
    crate::end_user_drivers::extended(sql, false)
}

fn sync() -> BytesMut {
    let mut out = BytesMut::new();
    frontend::sync(&mut out);
    out
}

/// The regions a simple Query returns (its DataRows' first column), and its ReadyForQuery status.
async fn regions(stream: &mut TcpStream) -> (Vec<String>, u8) {
    stream
        .write_all(&query("SELECT DISTINCT region FROM contacts ORDER BY 1"))
        .await
        .unwrap();
    let mut regions = Vec::new();
    let mut status = 0;
    for (tag, body) in read_until(stream, b'Z').await {
        match tag {
            b'D' => {
                let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                regions.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            b'E' => panic!("regions refused: {}", String::from_utf8_lossy(&body)),
            b'Z' => status = body[0],
            _ => {}
        }
    }
    (regions, status)
}

/// The race of pipelining clients, made deterministic with the raw protocol: a failing statement
/// of an extended-protocol batch is answered with its error at once, and PostgreSQL waits for the
/// Sync; the client then sends Sync and `SET maschera.end_user` in one write, so the proxy decides
/// the switch before the failed batch's ReadyForQuery. The implicit transaction ended with its
/// error: the switch is served (it was refused with 25001 "already ran as another end user"), and
/// the next statement runs as the new end user. Then the same with tokio-postgres in both
/// protocols, many times; and inside a transaction block an error does not end the block: the
/// switch is refused until ROLLBACK.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_ends_the_implicit_transaction_so_the_next_switch_is_served() {
    let (demo, sam, tom, mut raw) = start().await;
    let crm = demo.user("crm");

    for round in 0..6 {
        let (who, token) = if round % 2 == 0 {
            ("sam", &sam)
        } else {
            ("tom", &tom)
        };
        raw.write_all(&unnamed("SELECT * FROM no_such_table"))
            .await
            .unwrap();
        let answers = read_until(&mut raw, b'E').await;
        let (_, error) = answers.last().unwrap();
        // No such table (42P01), or refused by the proxy (42501) with no end user yet.
        assert!(
            matches!(sqlstate(error).as_str(), "42P01" | "42501"),
            "round {round}: {}",
            String::from_utf8_lossy(error)
        );
        let mut write = sync();
        write.extend_from_slice(&query(&format!("SET maschera.end_user = '{token}'")));
        raw.write_all(&write).await.unwrap();
        let failed_batch = read_until(&mut raw, b'Z').await;
        assert_eq!(failed_batch.last().unwrap().1, b"I", "round {round}");
        let switch = read_until(&mut raw, b'Z').await;
        let tags: Vec<u8> = switch.iter().map(|(tag, _)| *tag).collect();
        if let Some((_, error)) = switch.iter().find(|(tag, _)| *tag == b'E') {
            panic!(
                "round {round}: the switch to {who} right after an error was refused: {} {}",
                sqlstate(error),
                String::from_utf8_lossy(error)
            );
        }
        assert_eq!(tags, b"CZ", "round {round}");
        let (seen, status) = regions(&mut raw).await;
        assert_eq!(status, b'I');
        match who {
            "sam" => assert_eq!(seen, ["north"], "round {round}: sam"),
            _ => assert_eq!(seen.len(), 3, "round {round}: tom sees every region"),
        }
    }

    // tokio-postgres returns the error before the ReadyForQuery is back, in both protocols.
    let client = connect(&crm.uri).await;
    for round in 0..40 {
        let token = if round % 2 == 0 { &sam } else { &tom };
        if round % 4 < 2 {
            client
                .simple_query("SELECT * FROM no_such_table")
                .await
                .unwrap_err();
        } else {
            client
                .query("SELECT * FROM no_such_table WHERE id = $1", &[&1i64])
                .await
                .unwrap_err();
        }
        if let Err(err) = client
            .batch_execute(&format!("SET maschera.end_user = '{token}'"))
            .await
        {
            panic!("round {round}: the switch after an error was refused: {err:?}");
        }
        let regions = simple_column(&client, "SELECT count(DISTINCT region) FROM contacts").await;
        let expected = if round % 2 == 0 { "1" } else { "3" };
        assert_eq!(regions, [expected], "round {round}");
    }

    // Inside a block an error leaves the block (status E) and its end user: a switch is refused
    // until ROLLBACK, in one Query ("BEGIN; bad") as after a BEGIN of its own.
    client
        .batch_execute(&format!("SET maschera.end_user = '{sam}'"))
        .await
        .unwrap();
    // (A statement PostgreSQL fails: one the proxy refuses is never sent, nor its Query's BEGIN.)
    for begin in ["BEGIN; SELECT 1 / 0", "BEGIN"] {
        if begin == "BEGIN" {
            client.batch_execute(begin).await.unwrap();
            simple_column(&client, "SELECT count(*) FROM contacts").await;
            client.simple_query("SELECT 1 / 0").await.unwrap_err();
        } else {
            client.simple_query(begin).await.unwrap_err();
        }
        let (code, message) =
            simple_refusal(&client, &format!("SET maschera.end_user = '{tom}'")).await;
        assert!(
            matches!(code.as_str(), "25001" | "25P02"),
            "{begin}: {code} {message}"
        );
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            simple_column(&client, "SELECT DISTINCT region FROM contacts").await,
            ["north"],
            "{begin}: still sam"
        );
    }
    client
        .batch_execute(&format!("SET maschera.end_user = '{tom}'"))
        .await
        .unwrap();
    assert_eq!(
        simple_column(&client, "SELECT count(DISTINCT region) FROM contacts").await,
        ["3"]
    );
}

/// A simple Query's answers, up to its ReadyForQuery, as (type, text) pairs: CommandComplete's
/// tag, ErrorResponse's SQLSTATE, NoticeResponse's SQLSTATE, ReadyForQuery's status, DataRow's
/// first column; RowDescription left out.
async fn run(stream: &mut TcpStream, sql: &str) -> Vec<(char, String)> {
    stream.write_all(&query(sql)).await.unwrap();
    read_until(stream, b'Z')
        .await
        .into_iter()
        .filter(|(tag, _)| *tag != b'T')
        .map(|(tag, body)| {
            let text = match tag {
                b'C' => String::from_utf8_lossy(&body[..body.len() - 1]).into_owned(),
                b'E' | b'N' => sqlstate(&body),
                b'Z' => (body[0] as char).to_string(),
                b'D' => {
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                    String::from_utf8_lossy(&body[6..6 + len]).into_owned()
                }
                _ => String::new(),
            };
            (tag as char, text)
        })
        .collect()
}

fn answers(list: &[(char, &str)]) -> Vec<(char, String)> {
    list.iter().map(|(t, s)| (*t, s.to_string())).collect()
}

/// `BEGIN; SET LOCAL maschera.end_user = '<token>'; ...; COMMIT`, as psycopg and SQLAlchemy send it
/// without autocommit: the proxy answers the BEGIN, holds it back until the transaction's first
/// statement, and replays it on that statement's end user's connection. In the raw protocol:
/// PostgreSQL's answers and statuses as the client expects them (BEGIN with its modes, a ROLLBACK
/// or COMMIT with nothing replayed, a refused token failing the block: 25P02, COMMIT answering
/// ROLLBACK); with psycopg without autocommit, sam and tom alternate transaction by transaction,
/// by `SET LOCAL` and by `set_config(..., true)`, each seeing exactly their cells, and after each
/// transaction no end user is left; `SET LOCAL` outside a transaction warns and does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn set_local_after_begin_serves_the_transaction_as_its_end_user() {
    let (demo, sam, tom, mut raw) = start().await;
    let crm = demo.user("crm");

    // A held block ended with nothing replayed; a refused token fails the block, as an error in a
    // block does.
    let bad = format!("SET LOCAL maschera.end_user = '{}x'", &sam[..sam.len() - 1]);
    let steps: [(&str, &[(char, &str)]); 6] = [
        ("BEGIN", &[('C', "BEGIN"), ('Z', "T")]),
        ("ROLLBACK", &[('C', "ROLLBACK"), ('Z', "I")]),
        ("START TRANSACTION READ ONLY", &[('C', "BEGIN"), ('Z', "T")]),
        (&bad, &[('E', "28000"), ('Z', "E")]),
        ("SELECT 1", &[('E', "25P02"), ('Z', "E")]),
        ("COMMIT", &[('C', "ROLLBACK"), ('Z', "I")]),
    ];
    for (sql, expected) in steps {
        assert_eq!(run(&mut raw, sql).await, answers(expected), "{sql}");
    }
    // The end user set after BEGIN serves the transaction; it ends with it.
    for (who, token) in [("sam", &sam), ("tom", &tom), ("sam", &sam)] {
        assert_eq!(
            run(&mut raw, "BEGIN ISOLATION LEVEL REPEATABLE READ").await,
            answers(&[('C', "BEGIN"), ('Z', "T")])
        );
        let set = format!("SET LOCAL maschera.end_user = '{token}'");
        assert_eq!(
            run(&mut raw, &set).await,
            answers(&[('C', "SET"), ('Z', "T")])
        );
        let (seen, status) = regions(&mut raw).await;
        assert_eq!(status, b'T');
        match who {
            "sam" => assert_eq!(seen, ["north"]),
            _ => assert_eq!(seen.len(), 3, "tom sees every region"),
        }
        assert_eq!(
            run(&mut raw, "SHOW transaction_isolation").await,
            answers(&[('D', "repeatable read"), ('C', "SHOW"), ('Z', "T")]),
            "the replayed BEGIN kept its modes"
        );
        assert_eq!(
            run(&mut raw, "COMMIT").await,
            answers(&[('C', "COMMIT"), ('Z', "I")])
        );
        assert_eq!(
            run(&mut raw, "SELECT email FROM contacts LIMIT 1").await,
            answers(&[('E', "42501"), ('Z', "I")]),
            "no end user after the transaction"
        );
    }

    let script = r#"
import sys, psycopg
from psycopg import sql
uri, sam, tom = sys.argv[1:4]
with psycopg.connect(uri) as conn:
    for round in range(3):
        for who, token in (("sam", sam), ("tom", tom)):
            if round == 2:
                conn.execute("SELECT set_config('maschera.end_user', %s, true)", [token])
            else:
                conn.execute(sql.SQL("SET LOCAL maschera.end_user = {}").format(token))
            regions = sorted({r[0] for r in conn.execute("SELECT region FROM contacts")})
            emails = [r[0] for r in conn.execute("SELECT email FROM contacts ORDER BY id LIMIT 3")]
            print(who, round, len(regions), regions[0] if who == "sam" else "-", all("***@" in e for e in emails))
            conn.commit()
    try:
        conn.execute("SELECT email FROM contacts LIMIT 1")
        print("none served")
    except psycopg.Error as e:
        print("none", e.sqlstate)
        conn.rollback()
with psycopg.connect(uri, autocommit=True) as conn:
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.sqlstate))
    conn.execute(sql.SQL("SET LOCAL maschera.end_user = {}").format(sam))
    print("outside", notices)
    try:
        conn.execute("SELECT email FROM contacts LIMIT 1")
        print("outside served")
    except psycopg.Error as e:
        print("outside", e.sqlstate)
"#;
    let out = maschera_tests::clients::python(script, &[&crm.uri, &sam, &tom]);
    let lines: Vec<&str> = out.lines().collect();
    let mut expected = Vec::new();
    for round in 0..3 {
        expected.push(format!("sam {round} 1 north False"));
        expected.push(format!("tom {round} 3 - True"));
    }
    expected.extend(["none 42501", "outside ['25P01']", "outside 42501"].map(String::from));
    assert_eq!(lines, expected, "{out}");
}
