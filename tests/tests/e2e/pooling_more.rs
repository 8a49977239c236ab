//! Transaction pooling, the features beyond the first cut (issue 21): `set_config` of a harmless
//! setting follows its client like a SET; `min_idle` connections are opened and kept; the statement
//! cache of a connection is capped; a cancel racing the end of a transaction never reaches the
//! next client of its backend; many clients on a small pool all finish.
//! Not for: what `pooling` covers (isolation, pins, the acquire timeout, restarts, drivers).

use super::pooling::{connect, failure, pooled_proxy, rows};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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
