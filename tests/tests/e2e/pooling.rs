//! Transaction pooling (`[pool] mode = "transaction"`) with a real PostgreSQL and the real
//! `maschera serve`: clients of different roles and attributes interleaving on pools of one
//! connection each see exactly their own rows; session state (a temporary table, a SET) pins its
//! client and never reaches another; a client gone mid-transaction leaves no transaction or lock
//! behind; a full pool answers 53300 after the acquire timeout; many clients use no more backends
//! than the pool's size; a cancel reaches the backend serving the client; a warm pool survives a
//! PostgreSQL restart with clean errors.
//! Not for: session mode (every other module).

use maschera_tests::crm_proxy::CrmUser;
use maschera_tests::{Fixture, PgServer, Proxy, ProxyOptions, pg_and_proxy};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The `[pool]` section of transaction mode with `size` connections per pool.
fn pool_section(size: usize, extra: &str) -> String {
    format!("[pool]\nmode = \"transaction\"\nsize = {size}\nacquire_timeout_seconds = 3\n{extra}\n")
}

/// A PostgreSQL without the CRM behind a proxy in transaction mode (no policy: every statement
/// passes).
fn pooled_proxy(size: usize, extra: &str) -> (PgServer, Proxy) {
    pg_and_proxy(ProxyOptions {
        sections: pool_section(size, extra),
        ..Default::default()
    })
}

async fn connect(proxy: &Proxy) -> Client {
    maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect("connect through the proxy")
}

/// The rows of `sql` (simple protocol), as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of a failed statement.
fn failure(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {err:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

const REGIONS: &str = "SELECT DISTINCT region FROM contacts ORDER BY 1";

#[tokio::test]
async fn roles_and_attributes_interleaving_on_pools_of_one_connection_see_only_their_own_rows() {
    let users: [CrmUser; 3] = [
        ("dora", "dpo", &[]),
        ("sam", "sales", &[("region", "north")]),
        ("sara", "sales", &[("region", "south")]),
    ];
    let crm = Fixture::crm(200)
        .users(users)
        .config(|options| options.sections = pool_section(1, ""))
        .start()
        .await
        .expect("start the CRM");
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
async fn a_temp_table_or_a_set_pins_its_client_and_stays_invisible_to_others() {
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
    // a and c keep their connections; b's transactions run on the third, and would run on a's or
    // c's (the last given back is the next handed out) if they were given back.
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
    let mut most = 0;
    let count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND pid <> pg_backend_pid()";
    loop {
        tokio::select! {
            done = work.join_next() => match done {
                Some(result) => result.expect("a client failed"),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                let n: usize = rows(&owner, count).await[0][0].parse().unwrap();
                most = most.max(n);
            }
        }
    }
    let n: usize = rows(&owner, count).await[0][0].parse().unwrap();
    most = most.max(n);
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
