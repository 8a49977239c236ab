//! Transaction pooling (`[pool] mode = "transaction"`) with a real PostgreSQL and the real
//! `maschera serve`: clients of different roles and attributes interleaving on pools of one
//! connection each see exactly their own rows; session state (a temporary table, a SET) stays
//! with its client (pinned, or following it) and never reaches another; a client gone mid-transaction leaves no transaction or lock
//! behind; a full pool answers 53300 after the acquire timeout; many clients use no more backends
//! than the pool's size; a cancel reaches the backend serving the client; a warm pool survives a
//! PostgreSQL restart with clean errors.
//! Not for: session mode (every other module).

use maschera_tests::crm_proxy::CrmUser;
use maschera_tests::{Fixture, PgServer, Proxy, ProxyOptions, pg_and_proxy};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The `[pool]` section of transaction mode with `size` connections per pool.
pub(crate) fn pool_section(size: usize, extra: &str) -> String {
    format!("[pool]\nmode = \"transaction\"\nsize = {size}\nacquire_timeout_seconds = 3\n{extra}\n")
}

/// A PostgreSQL without the CRM behind a proxy in transaction mode (no policy: every statement
/// passes).
pub(crate) fn pooled_proxy(size: usize, extra: &str) -> (PgServer, Proxy) {
    pg_and_proxy(ProxyOptions {
        sections: pool_section(size, extra),
        ..Default::default()
    })
}

pub(crate) async fn connect(proxy: &Proxy) -> Client {
    maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect through the proxy")
}

/// The rows of `sql` (simple protocol), as text (NULL as `NULL`).
pub(crate) async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    maschera_tests::clients::simple_rows(client, sql)
        .await
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect()
}

/// Runs `work` to its end (panicking with the first failure) while sampling `count` (a query
/// giving one number) through `observer` every 20 ms; returns the largest number seen.
pub(crate) async fn most_while(
    mut work: tokio::task::JoinSet<()>,
    observer: &Client,
    count: &str,
) -> usize {
    let mut most = 0;
    loop {
        tokio::select! {
            done = work.join_next() => match done {
                Some(result) => result.expect("a client failed"),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                let n: usize = rows(observer, count).await[0][0].parse().unwrap();
                most = most.max(n);
            }
        }
    }
    let n: usize = rows(observer, count).await[0][0].parse().unwrap();
    most.max(n)
}

/// The SQLSTATE and message of a failed statement.
pub(crate) fn failure(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {err:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// The CRM of `fixture` with these users, served in transaction mode on pools of one backend.
async fn crm_on_pools_of_one(
    users: impl IntoIterator<Item = CrmUser>,
    fixture: Fixture,
) -> maschera_tests::CrmProxy {
    fixture
        .users(users)
        .config(|options| options.sections = pool_section(1, ""))
        .start()
        .await
        .expect("start the CRM")
}

const REGIONS: &str = "SELECT DISTINCT region FROM contacts ORDER BY 1";

#[tokio::test]
async fn roles_and_attributes_interleaving_on_pools_of_one_connection_see_only_their_own_rows() {
    let users: [CrmUser; 3] = [
        ("dora", "dpo", &[]),
        ("sam", "sales", &[("region", "north")]),
        ("sara", "sales", &[("region", "south")]),
    ];
    let crm = crm_on_pools_of_one(users, Fixture::crm(200)).await;
    let sam = crm.through_proxy("sam").await;
    let sara = crm.through_proxy("sara").await;
    let dora = crm.through_proxy("dora").await;
    let all_regions = rows(&dora, REGIONS).await;
    assert!(all_regions.len() > 2, "{all_regions:?}");
    for round in 0..5 {
        assert_eq!(rows(&sam, REGIONS).await, [["north"]], "round {round}");
        assert_eq!(rows(&sara, REGIONS).await, [["south"]], "round {round}");
        assert_eq!(rows(&dora, REGIONS).await, all_regions, "round {round}");
        // Extended protocol with the unnamed statement.
        let typed = sara.query_typed(REGIONS, &[]).await.expect("sara extended");
        let regions: Vec<String> = typed.iter().map(|r| r.get(0)).collect();
        assert_eq!(regions, ["south"], "round {round}");
    }
    // Inside a transaction block sam holds the one connection of the north pool; another north
    // client waits for it, and each sees its own transaction.
    let sam2 = crm.through_proxy("sam").await;
    sam.simple_query("BEGIN").await.unwrap();
    assert_eq!(rows(&sam, REGIONS).await, [["north"]]);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let got = rows(&sam2, "SELECT count(*) > 0 FROM contacts").await;
        (got, started.elapsed())
    });
    // sara's pool is another one: she is served while sam's transaction is open.
    assert_eq!(rows(&sara, REGIONS).await, [["south"]]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sam.simple_query("COMMIT").await.unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, [["t"]]);
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    // One backend per pool: the two sales pools (north, south) and the dpo's.
    let owner = crm.owner().await;
    let backends = rows(
        &owner,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND pid <> pg_backend_pid() AND datname = current_database()",
    )
    .await;
    let backends: usize = backends[0][0].parse().unwrap();
    assert!(backends <= 3, "{backends} backends for 3 pools of one");
}

#[tokio::test]
async fn a_temp_table_or_a_set_of_one_client_stays_invisible_to_others() {
    let (_pg, proxy) = pooled_proxy(3, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    a.simple_query("CREATE TEMP TABLE mine (secret text)")
        .await
        .unwrap();
    a.simple_query("INSERT INTO mine VALUES ('only a')")
        .await
        .unwrap();
    let c = connect(&proxy).await;
    c.simple_query("SET application_name = 'set by c'")
        .await
        .unwrap();
    // a keeps its connection (pinned by the temporary table); c's setting follows c to
    // connections opened with it, and the connection it ran on is closed, not given back (the last
    // connection given back is the next one handed out, so b would meet either otherwise).
    for _ in 0..10 {
        let err = b
            .simple_query("SELECT * FROM mine")
            .await
            .expect_err("b saw a's temporary table");
        assert_eq!(failure(&err).0, "42P01");
        let name = rows(&b, "SHOW application_name").await;
        assert_ne!(name, [["set by c"]]);
    }
    assert_eq!(rows(&a, "SELECT secret FROM mine").await, [["only a"]]);
    assert_eq!(rows(&c, "SHOW application_name").await, [["set by c"]]);
    // When a leaves, its connection (with the table) is closed, not handed to the next client.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = connect(&proxy).await;
    for _ in 0..3 {
        let err = d
            .simple_query("SELECT * FROM mine")
            .await
            .expect_err("d saw the temporary table of a client that left");
        assert_eq!(failure(&err).0, "42P01");
    }
}

#[tokio::test]
async fn a_client_gone_mid_transaction_leaves_no_transaction_or_lock_behind() {
    let (pg, proxy) = pooled_proxy(1, "");
    let owner = pg.connect("postgres").await.unwrap();
    owner
        .simple_query("CREATE TABLE guarded (id int)")
        .await
        .unwrap();
    {
        let gone = connect(&proxy).await;
        gone.simple_query(
            "BEGIN; LOCK TABLE guarded IN ACCESS EXCLUSIVE MODE; SELECT pg_advisory_xact_lock(7)",
        )
        .await
        .unwrap();
        // Dropped here: the connection closes with the transaction open.
    }
    let next = connect(&proxy).await;
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        rows(
            &next,
            "SELECT pg_try_advisory_xact_lock(7), (SELECT count(*) FROM guarded), now() = statement_timestamp()",
        ),
    )
    .await
    .expect("the next client was not blocked by the gone one's lock");
    assert_eq!(got, [["t", "0", "t"]], "after {:?}", started.elapsed());
    let left = rows(
        &owner,
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
    )
    .await;
    assert_eq!(left, [["0"]]);
}

#[tokio::test]
async fn a_full_pool_answers_53300_after_the_acquire_timeout() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let holder = connect(&proxy).await;
    holder.simple_query("BEGIN").await.unwrap();
    let waiter = connect(&proxy).await;
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("a connection while the only one is held");
    let waited = started.elapsed();
    let (code, message) = failure(&err);
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("acquire_timeout_seconds"), "{message}");
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
    // The holder goes on.
    holder.simple_query("COMMIT").await.unwrap();
    assert_eq!(rows(&holder, "SELECT 1").await, [["1"]]);
}

#[tokio::test]
async fn fifty_clients_use_no_more_backends_than_the_pool_size() {
    let (pg, proxy) = pooled_proxy(5, "");
    let owner = pg.connect("postgres").await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(connect(&proxy).await);
    }
    let mut work = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        work.spawn(async move {
            for round in 0..20 {
                let sql = format!("SELECT {i} * 1000 + {round}");
                let got = rows(&client, &sql).await;
                assert_eq!(got, [[(i * 1000 + round).to_string()]]);
                let int4 = tokio_postgres::types::Type::INT4;
                let typed = client
                    .query_typed("SELECT $1::int + 1", &[(&(i as i32), int4)])
                    .await
                    .expect("extended");
                assert_eq!(typed[0].get::<_, i32>(0), i as i32 + 1);
            }
        });
    }
    let count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND pid <> pg_backend_pid()";
    let most = most_while(work, &owner, count).await;
    println!("at most {most} backends for 50 clients");
    assert!((1..=5).contains(&most), "{most} backends for a pool of 5");
}

#[tokio::test]
async fn a_cancel_reaches_the_backend_serving_the_client() {
    let (_pg, proxy) = pooled_proxy(2, "");
    let sleeper = connect(&proxy).await;
    let other = connect(&proxy).await;
    let token = sleeper.cancel_token();
    let sleeping = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The other client's transactions go on, on the other connection.
    assert_eq!(rows(&other, "SELECT 2").await, [["2"]]);
    let started = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let err = sleeping
        .await
        .unwrap()
        .expect_err("the sleep was cancelled");
    assert_eq!(failure(&err).0, "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(rows(&other, "SELECT 3").await, [["3"]]);
}

#[tokio::test]
async fn a_warm_pool_survives_a_postgresql_restart_with_clean_errors() {
    let (pg, proxy) = pooled_proxy(3, "");
    let clients = [connect(&proxy).await, connect(&proxy).await];
    for client in &clients {
        assert_eq!(rows(client, "SELECT 1").await, [["1"]]);
    }
    pg.stop().expect("stop PostgreSQL");
    pg.start_again().expect("start PostgreSQL again");
    // The pooled connections PostgreSQL ended are replaced: between transactions the clients hold
    // none, so they go on.
    for client in &clients {
        assert_eq!(rows(client, "SELECT 4").await, [["4"]]);
    }
    let fresh = connect(&proxy).await;
    assert_eq!(rows(&fresh, "SELECT 5").await, [["5"]]);
}

/// Two sessions of sam (region north) with server-side prepared statements: `a` holds a connection
/// in a transaction every other round, so `b` runs its statements on the other connection, then on
/// `a`'s once it is given back (where the proxy prepares them lazily); each checks every answer.
const PSYCOPG_CLIENT: &str = r#"
import sys, psycopg
uri = sys.argv[1]
a = psycopg.connect(uri, prepare_threshold=0, autocommit=True)
b = psycopg.connect(uri, prepare_threshold=0, autocommit=True)
count_q = "SELECT count(*) FROM contacts WHERE id > %s"
region_q = "SELECT DISTINCT region FROM contacts WHERE id > %s"
expected = a.execute(count_q, (0,)).fetchone()[0]
assert expected > 0
for round in range(6):
    if round % 2 == 0:
        a.execute("BEGIN")
        assert a.execute(count_q, (0,)).fetchone()[0] == expected
    assert b.execute(count_q, (0,)).fetchone()[0] == expected
    regions = [r[0] for r in b.execute(region_q, (0,)).fetchall()]
    assert regions == ["north"], regions
    if round % 2 == 0:
        a.execute("COMMIT")
assert len(b._prepared._names) >= 2, "psycopg did not prepare on the server"
print("done")
"#;

const NODE_CLIENT: &str = r#"
const { Client } = require('pg');
const check = (ok, what) => { if (!ok) throw new Error(what); };
(async () => {
  const uri = process.argv[process.argv.length - 1];
  const a = new Client({ connectionString: uri });
  const b = new Client({ connectionString: uri });
  await a.connect();
  await b.connect();
  const count = { name: 'count', text: 'SELECT count(*)::int AS n FROM contacts WHERE id > $1', values: [0] };
  const regions = { name: 'regions', text: 'SELECT DISTINCT region FROM contacts WHERE id > $1', values: [0] };
  const expected = (await a.query(count)).rows[0].n;
  check(expected > 0, 'no contacts');
  for (let round = 0; round < 6; round++) {
    if (round % 2 === 0) {
      await a.query('BEGIN');
      check((await a.query(count)).rows[0].n === expected, 'a count');
    }
    check((await b.query(count)).rows[0].n === expected, 'b count');
    const seen = (await b.query(regions)).rows.map((r) => r.region);
    check(JSON.stringify(seen) === '["north"]', 'regions ' + JSON.stringify(seen));
    if (round % 2 === 0) await a.query('COMMIT');
  }
  await a.end();
  await b.end();
  console.log('done');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const JDBC_CLIENT: &str = r#"
import java.sql.*;
import java.util.*;

public class PooledClient {
    static long count(PreparedStatement ps) throws SQLException {
        ps.setInt(1, 0);
        try (ResultSet rs = ps.executeQuery()) { rs.next(); return rs.getLong(1); }
    }

    static void check(boolean ok, String what) { if (!ok) throw new IllegalStateException(what); }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", "1");
        try (Connection a = DriverManager.getConnection(args[0], props);
             Connection b = DriverManager.getConnection(args[0], props)) {
            PreparedStatement ac = a.prepareStatement("SELECT count(*) FROM contacts WHERE id > ?");
            PreparedStatement bc = b.prepareStatement("SELECT count(*) FROM contacts WHERE id > ?");
            PreparedStatement br = b.prepareStatement("SELECT DISTINCT region FROM contacts WHERE id > ?");
            long expected = count(ac);
            check(expected > 0, "no contacts");
            for (int round = 0; round < 6; round++) {
                if (round % 2 == 0) {
                    a.setAutoCommit(false);
                    check(count(ac) == expected, "a count");
                }
                check(count(bc) == expected, "b count");
                br.setInt(1, 0);
                List<String> seen = new ArrayList<>();
                try (ResultSet rs = br.executeQuery()) { while (rs.next()) seen.add(rs.getString(1)); }
                check(seen.equals(List.of("north")), "regions " + seen);
                if (round % 2 == 0) {
                    a.commit();
                    a.setAutoCommit(true);
                }
            }
            check(bc.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), "not server-prepared");
        }
        System.out.println("done");
    }
}
"#;

/// Runs a client program to its end; panics with its output unless it printed `done`.
fn run_client(mut command: std::process::Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "done"),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn psycopg_node_postgres_and_pgjdbc_prepared_statements_follow_their_clients_across_connections() {
    use maschera_tests::crm_proxy::{CRM_DB, crm_password};
    use std::process::Command;
    let crm = maschera_tests::block_on(
        Fixture::crm(200)
            .config(|options| options.sections = pool_section(2, ""))
            .start(),
    )
    .expect("start the CRM");
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("pooled_client.py");
    std::fs::write(&python, PSYCOPG_CLIENT).unwrap();
    let mut psycopg = Command::new("python3");
    psycopg.arg(&python).arg(crm.uri("sam"));
    run_client(psycopg, "psycopg");
    let node_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/node");
    assert!(
        node_dir.join("node_modules/pg").is_dir(),
        "node-postgres is not installed: run `npm install` in {}",
        node_dir.display()
    );
    let mut node = Command::new("node");
    node.current_dir(&node_dir)
        .args(["-e", NODE_CLIENT, "--"])
        .arg(crm.uri("sam"));
    run_client(node, "node-postgres");
    let java_file = dir.path().join("PooledClient.java");
    std::fs::write(&java_file, JDBC_CLIENT).unwrap();
    let url = format!("jdbc:postgresql://127.0.0.1:{}/{CRM_DB}", crm.proxy.port());
    let mut java = Command::new("java");
    java.args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp"])
        .arg("/usr/share/java/postgresql.jar")
        .arg(&java_file)
        .args([url.as_str(), "sam", &crm_password("sam")]);
    run_client(java, "pgjdbc");
    // No session was pinned for a prepared statement: they moved between connections.
    assert!(
        !crm.proxy.log().contains("session pinned"),
        "{}",
        crm.proxy.log()
    );
}

/// The statement records of the access log folder `dir`, each with the outcome and rows of its
/// `outcome` record merged in when it has one (a statement's own record carries them when it
/// completed before the record was written).
fn statements(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let records = maschera_tests::access_log_records(dir);
    let mut statements: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "statement")
        .cloned()
        .collect();
    for outcome in records.iter().filter(|r| r["event"] == "outcome") {
        let of = &outcome["statement_seq"];
        if let Some(statement) = statements.iter_mut().find(|s| &s["seq"] == of) {
            for key in ["rows", "outcome"] {
                if !outcome[key].is_null() {
                    statement[key] = outcome[key].clone();
                }
            }
        }
    }
    statements
}

#[tokio::test]
async fn refusals_and_the_access_log_are_those_of_session_mode() {
    let users: [CrmUser; 2] = [
        ("sam", "sales", &[("region", "north")]),
        ("sara", "sales", &[("region", "south")]),
    ];
    let crm = crm_on_pools_of_one(users, Fixture::crm(200).access_log("pooled")).await;
    let sam = crm.through_proxy("sam").await;
    let sara = crm.through_proxy("sara").await;
    let sam_rows = rows(&sam, "SELECT email FROM contacts").await.len();
    let err = sam
        .simple_query("SELECT * FROM health_records")
        .await
        .expect_err("health records are not sam's");
    let (code, message) = failure(&err);
    assert_eq!(code, "42501");
    assert!(message.contains("health_records"), "{message}");
    // The refusal left the pooled connection usable, for sam and for the next client of the pool.
    let sara_rows = rows(&sara, "SELECT email FROM contacts").await.len();
    assert_eq!(rows(&sam, REGIONS).await, [["north"]]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = statements(&crm.audit_dir());
        let complete = found.iter().all(|s| s["outcome"]["result"] != "unknown");
        if (found.len() >= 4 && complete) || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of = |user: &str, result: &str| {
        found
            .iter()
            .filter(|s| s["user"] == user && s["outcome"]["result"] == result)
            .cloned()
            .collect::<Vec<_>>()
    };
    let sam_ok = of("sam", "ok");
    assert_eq!(sam_ok.len(), 2, "{found:?}");
    assert_eq!(sam_ok[0]["rows"], sam_rows as u64, "{found:?}");
    let refused = of("sam", "refused");
    assert_eq!(refused.len(), 1, "{found:?}");
    assert_eq!(refused[0]["outcome"]["sqlstate"], "42501");
    let sara_ok = of("sara", "ok");
    assert_eq!(sara_ok.len(), 1, "{found:?}");
    assert_eq!(sara_ok[0]["rows"], sara_rows as u64, "{found:?}");
}

#[tokio::test]
async fn the_demo_in_transaction_mode_serves_sam_and_sara_on_at_most_twenty_backends_each() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("demo.log");
    let port = maschera_tests::pg::free_port();
    let mut child = std::process::Command::new(maschera_tests::maschera_bin())
        .args([
            "demo",
            "--json",
            "--pool-mode",
            "transaction",
            "--contacts",
            "300",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn maschera demo");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || std::io::BufReader::new(stdout).lines().next())
        .await
        .unwrap();
    let facts: serde_json::Value = match line {
        Some(Ok(line)) => serde_json::from_str(&line).expect("the JSON line"),
        other => {
            let _ = child.kill();
            panic!(
                "no JSON line ({other:?}):\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
    };
    let uri = |user: &str| {
        facts["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == user)
            .and_then(|u| u["uri"].as_str())
            .unwrap()
            .to_owned()
    };
    let upstream = maschera_tests::connect(facts["upstream"].as_str().unwrap())
        .await
        .unwrap();
    // 25 clients of each region, more than a pool's 20 backends, all connected before they work.
    let mut connected = Vec::new();
    for i in 0..50 {
        let (user, region) = if i % 2 == 0 {
            ("sam", "north")
        } else {
            ("sara", "south")
        };
        let client = maschera_tests::connect(&uri(user)).await.expect("connect");
        connected.push((user, region, client));
    }
    let mut clients = tokio::task::JoinSet::new();
    for (user, region, client) in connected {
        clients.spawn(async move {
            for _ in 0..10 {
                assert_eq!(rows(&client, REGIONS).await, [[region]], "{user}");
            }
        });
    }
    let count = "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '%sales%'";
    let most = most_while(clients, &upstream, count).await;
    println!("at most {most} backends of the sales login for 50 clients");
    // SAFETY: kill(2) on the pid of our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    // In session mode each of the 50 clients would hold a backend of its own.
    assert!(
        (1..=40).contains(&most),
        "{most} backends for two pools of 20"
    );
}
