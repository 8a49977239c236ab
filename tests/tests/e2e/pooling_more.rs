//! Transaction pooling, the features beyond the first cut (issue 21): `set_config` of a harmless
//! setting follows its client like a SET; `min_idle` connections are opened and kept; the statement
//! cache of a connection is capped; a cancel racing the end of a transaction never reaches the
//! next client of its backend; many clients on a small pool all finish.
//! Not for: what `pooling` covers (isolation, pins, the acquire timeout, restarts, drivers).

use super::pooling::{connect, failure, pooled_proxy, rows};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[tokio::test]
async fn a_set_config_of_a_harmless_setting_follows_its_client_without_pinning() {
    let (_pg, proxy) = pooled_proxy(2, "");
    let setter = connect(&proxy).await;
    let other = connect(&proxy).await;
    // As Django sets its time zone: a simple query with quoted literals.
    let set = "SELECT set_config('application_name', 'set by setter', false)";
    assert_eq!(rows(&setter, set).await, [["set by setter"]]);
    for _ in 0..5 {
        assert_eq!(
            rows(&setter, "SHOW application_name").await,
            [["set by setter"]]
        );
        assert_ne!(
            rows(&other, "SHOW application_name").await,
            [["set by setter"]]
        );
    }
    assert!(!proxy.log().contains("session pinned"), "{}", proxy.log());
}

/// How many times the cancel race is tried.
const CANCEL_ROUNDS: usize = 300;

#[tokio::test]
async fn a_cancel_at_the_end_of_a_transaction_never_reaches_the_next_client_of_its_backend() {
    // One connection: whatever the canceller's transaction ran on serves the bystander next.
    let (_pg, proxy) = pooled_proxy(1, "");
    let canceller = connect(&proxy).await;
    let bystander = connect(&proxy).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let watching = {
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(err) = bystander
                    .simple_query("SELECT pg_sleep(0.002), 'bystander'")
                    .await
                {
                    return Err(failure(&err));
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let token = canceller.cancel_token();
    let mut cancelled = 0;
    for round in 0..CANCEL_ROUNDS {
        let statement = canceller.simple_query("BEGIN; SELECT pg_sleep(0.004); COMMIT");
        // The cancel is sent at some moment of the transaction, often as it ends.
        let delay = Duration::from_micros(500 + (round as u64 * 7919) % 6000);
        let cancel = async {
            tokio::time::sleep(delay).await;
            token.cancel_query(tokio_postgres::NoTls).await
        };
        let (ran, sent) = tokio::join!(statement, cancel);
        sent.expect("the cancel request");
        match ran {
            Ok(_) => {}
            Err(err) => {
                assert_eq!(failure(&err).0, "57014", "round {round}");
                cancelled += 1;
                // The cancel aborted the transaction block; the rest of the query was skipped.
                canceller.simple_query("ROLLBACK").await.expect("rollback");
            }
        }
        if watching.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let bystander = watching.await.unwrap();
    assert_eq!(
        bystander,
        Ok(()),
        "the bystander was hit by another client's cancel (after {} statements)",
        served.load(Ordering::Relaxed)
    );
    println!(
        "{cancelled} of {CANCEL_ROUNDS} transactions cancelled, the bystander ran {} statements",
        served.load(Ordering::Relaxed)
    );
    // The cancels did reach the canceller's own transactions, and the bystander was served.
    assert!(cancelled > 0);
    assert!(served.load(Ordering::Relaxed) > 0);
}

/// The process ids of the client backends other than `observer`'s own.
async fn backends(observer: &Client) -> Vec<String> {
    rows(
        observer,
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND pid <> pg_backend_pid() ORDER BY pid",
    )
    .await
    .into_iter()
    .map(|row| row[0].clone())
    .collect()
}

/// Polls `backends` until `done` holds for them (at most 20 s); returns the last seen.
async fn backends_until(observer: &Client, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = backends(observer).await;
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn min_idle_connections_are_opened_kept_and_replaced_within_the_pool_size() {
    let (pg, proxy) = pooled_proxy(3, "min_idle = 2\nidle_timeout_seconds = 1");
    let owner = pg.connect("postgres").await.unwrap();
    assert!(backends(&owner).await.is_empty());
    // The pool exists once its first client logged in: two connections wait for clients.
    let first = connect(&proxy).await;
    let opened = backends_until(&owner, |b| b.len() >= 2).await;
    assert_eq!(opened.len(), 2, "{opened:?}");
    // Three clients inside transactions take all three connections of the pool, and none more
    // is opened to keep two idle (size 3).
    let mut holders = Vec::new();
    for _ in 0..3 {
        let holder = connect(&proxy).await;
        holder.simple_query("BEGIN; SELECT 1").await.unwrap();
        holders.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(backends(&owner).await.len(), 3);
    for holder in &holders {
        holder.simple_query("COMMIT").await.unwrap();
    }
    // Idle past idle_timeout_seconds: closed down to min_idle.
    let kept = backends_until(&owner, |b| b.len() == 2).await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    // PostgreSQL ends them: the reaper replaces them with new ones.
    owner
        .simple_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let replaced = backends_until(&owner, |b| {
        b.len() == 2 && b.iter().all(|pid| !kept.contains(pid))
    })
    .await;
    assert!(
        replaced.len() == 2 && replaced.iter().all(|pid| !kept.contains(pid)),
        "{kept:?} then {replaced:?}"
    );
    assert_eq!(rows(&first, "SELECT 7").await, [["7"]]);
}

/// Statements a client prepares in the cap test: more than the default cap of 200.
const STATEMENTS: i32 = 300;

#[tokio::test]
async fn a_connection_holds_at_most_its_statement_cap_and_every_statement_still_runs() {
    // One connection, the default cap (200 statements per connection).
    let (_pg, proxy) = pooled_proxy(1, "");
    let client = connect(&proxy).await;
    let other = connect(&proxy).await;
    let held = "SELECT count(*)::int FROM pg_prepared_statements";
    let mut statements = Vec::new();
    for i in 0..STATEMENTS {
        let statement = client
            .prepare(&format!("SELECT {i}::int AS n"))
            .await
            .expect("prepare");
        statements.push(statement);
        // Another client's statements interleave on the same connection.
        if i % 50 == 0 {
            let theirs = other
                .prepare(&format!("SELECT {i}::int + 1000"))
                .await
                .unwrap();
            assert_eq!(
                other
                    .query_one(&theirs, &[])
                    .await
                    .unwrap()
                    .get::<_, i32>(0),
                i + 1000
            );
        }
    }
    let count: i32 = client.query_one(held, &[]).await.unwrap().get(0);
    assert!(
        (1..=200).contains(&count),
        "{count} statements on the connection"
    );
    // All 300 still run, in order and in reverse (those closed are prepared again).
    for (i, statement) in statements
        .iter()
        .enumerate()
        .chain(statements.iter().enumerate().rev())
    {
        let n: i32 = client.query_one(statement, &[]).await.unwrap().get(0);
        assert_eq!(n, i as i32);
    }
    let count: i32 = other.query_one(held, &[]).await.unwrap().get(0);
    assert!(
        (1..=200).contains(&count),
        "{count} statements on the connection"
    );
    println!("{count} statements held on the connection after {STATEMENTS} were prepared");
}

/// Clients of the exhaustion test, and the pool they share.
const CROWD: usize = 60;
const CROWD_POOL: usize = 2;

#[tokio::test]
async fn sixty_clients_on_a_pool_of_two_all_finish_and_none_hangs() {
    let (pg, proxy) = pooled_proxy(CROWD_POOL, "");
    let owner = pg.connect("postgres").await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..CROWD {
        clients.push(connect(&proxy).await);
    }
    let started = Instant::now();
    let mut work = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        work.spawn(async move {
            for round in 0..3 {
                // A transaction block holds its connection over several round trips.
                client.simple_query("BEGIN").await.expect("begin");
                let got = rows(&client, &format!("SELECT {i} + {round}, pg_sleep(0.001)")).await;
                assert_eq!(got[0][0], (i + round).to_string());
                client.simple_query("COMMIT").await.expect("commit");
            }
        });
    }
    let count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND pid <> pg_backend_pid()";
    let most = tokio::time::timeout(
        Duration::from_secs(120),
        super::pooling::most_while(work, &owner, count),
    )
    .await
    .expect("a client hung");
    println!(
        "{CROWD} clients x 3 transactions on a pool of {CROWD_POOL}: {:?}, at most {most} backends",
        started.elapsed()
    );
    assert!((1..=CROWD_POOL).contains(&most), "{most} backends");
}

#[tokio::test]
async fn a_client_inside_a_transaction_when_postgresql_restarts_gets_a_clean_error() {
    let (pg, proxy) = pooled_proxy(2, "");
    let inside = connect(&proxy).await;
    let idle = connect(&proxy).await;
    assert_eq!(rows(&idle, "SELECT 1").await, [["1"]]);
    inside.simple_query("BEGIN").await.unwrap();
    assert_eq!(rows(&inside, "SELECT 2").await, [["2"]]);
    pg.stop().expect("stop PostgreSQL");
    pg.start_again().expect("start PostgreSQL again");
    // The transaction's backend is gone: its client gets PostgreSQL's error or a closed
    // connection, never a hang, an answer from another backend, or a panic of the proxy.
    let err = tokio::time::timeout(Duration::from_secs(20), inside.simple_query("SELECT 3"))
        .await
        .expect("the client inside the transaction hung")
        .expect_err("its transaction's backend is gone");
    if let Some(db) = err.as_db_error() {
        assert!(
            ["57P01", "08006", "57P03"].contains(&db.code().code()),
            "{db:?}"
        );
    } else {
        assert!(inside.is_closed(), "{err:?}");
    }
    // The idle client and new clients go on with fresh backends.
    assert_eq!(rows(&idle, "SELECT 4").await, [["4"]]);
    let fresh = connect(&proxy).await;
    assert_eq!(rows(&fresh, "SELECT 5").await, [["5"]]);
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}
