//! Faults around the proxy, with a real PostgreSQL and the real `maschera serve`: the upstream
//! restarting under load or missing at start, clients that send nothing or one byte a second,
//! the connection limit under load, garbage in the TLS handshake, and SIGTERM under load.
//! Each test asserts what a client sees (clean errors, service resuming, nothing hanging) with
//! generous upper bounds only. Not for: the protocol details of one session (see `wire`).

mod crm_work;

use bytes::BytesMut;
use crm_work::Work;
use maschera_tests::crm_proxy::{CRM_DB, CRM_PSEUDONYM_KEY, CrmUser, apply_policy};
use maschera_tests::proxy::write_test_certificates;
use maschera_tests::{CrmProxy, Fixture, PgServer, Proxy, ProxyOptions, TEST_USER, pg_and_proxy};
use postgres_protocol::message::frontend;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;

/// Upper bound for anything that must "not hang".
const BOUND: Duration = Duration::from_secs(45);

/// SQLSTATEs a client may see when the database behind the proxy goes away or comes back.
const UPSTREAM_GONE: &[SqlState] = &[
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::CONNECTION_FAILURE,
    SqlState::CONNECTION_EXCEPTION,
    SqlState::CONNECTION_DOES_NOT_EXIST,
    SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
];

/// A clean error: a SQLSTATE from `expected`, or the connection closed (no protocol confusion,
/// no internal error). Returns a description of an unclean one.
fn unclean(err: &tokio_postgres::Error, expected: &[SqlState]) -> Option<String> {
    match err.code() {
        Some(code) if expected.contains(code) => None,
        Some(_) => Some(err.to_string()),
        None if err.is_closed() => None,
        None if err
            .to_string()
            .starts_with("error communicating with the server") =>
        {
            None
        }
        None => Some(err.to_string()),
    }
}

/// What a load worker saw.
#[derive(Debug, Default)]
struct Tally {
    statements: u64,
    clean_errors: u64,
    unclean: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.statements += other.statements;
        self.clean_errors += other.clean_errors;
        self.unclean.extend(other.unclean);
    }

    fn record(&mut self, err: &tokio_postgres::Error, expected: &[SqlState]) {
        match unclean(err, expected) {
            None => self.clean_errors += 1,
            Some(what) => self.unclean.push(what),
        }
    }
}

/// Statements run by the load so far, across workers.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Waits until the load has run `more` statements beyond `from` (bounded).
async fn wait_for_statements(more: u64) {
    let target = STATEMENTS.load(Ordering::Relaxed) + more;
    let waited = tokio::time::timeout(BOUND, async {
        while STATEMENTS.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the load did not get going within {BOUND:?}"
    );
}

/// `clients` workers that connect through the proxy and run a short statement in a loop until
/// `stop`, reconnecting after an error (with a pause); every error is classified against `expected`.
fn load(
    uri: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
    expected: &'static [SqlState],
) -> JoinSet<Tally> {
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let uri = uri.to_owned();
        let stop = stop.clone();
        set.spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let client = match maschera_tests::connect(&uri).await {
                    Ok(client) => client,
                    Err(err) => {
                        let err = err
                            .downcast::<tokio_postgres::Error>()
                            .expect("a tokio-postgres error");
                        tally.record(&err, expected);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .query_one("select count(*) from generate_series(1, 200)", &[])
                        .await
                    {
                        Ok(row) => {
                            assert_eq!(row.get::<_, i64>(0), 200);
                            tally.statements += 1;
                            STATEMENTS.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            tally.record(&err, expected);
                            break;
                        }
                    }
                }
            }
            tally
        });
    }
    set
}

/// Stops the load and collects every worker's tally; panics if a worker does not finish in time.
async fn finish(stop: &AtomicBool, mut set: JoinSet<Tally>) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    let joined = tokio::time::timeout(BOUND, async {
        while let Some(tally) = set.join_next().await {
            total.add(tally.expect("load worker"));
        }
    })
    .await;
    assert!(joined.is_ok(), "load workers hang after {BOUND:?}");
    total
}

/// Connects until it works or `BOUND` passes.
async fn connect_eventually(uri: &str) -> tokio_postgres::Client {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match maschera_tests::connect(uri).await {
            Ok(client) => return client,
            Err(err) if tokio::time::Instant::now() > deadline => {
                panic!("no session through the proxy within {BOUND:?}: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_under_load_gives_clean_errors_and_sessions_resume() {
    let (pg, proxy) = pg_and_proxy(ProxyOptions::default());
    let pg = Arc::new(pg);
    let uri = proxy.uri("postgres");
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&uri, 16, &stop, UPSTREAM_GONE);
    wait_for_statements(200).await;

    let server = pg.clone();
    blocking(move || server.stop()).await.expect("pg_ctl stop");
    let refused = maschera_tests::connect(&uri)
        .await
        .expect_err("no session while the database is down")
        .downcast::<tokio_postgres::Error>()
        .unwrap();
    assert_eq!(
        refused.code(),
        Some(&SqlState::CONNECTION_FAILURE),
        "{refused}"
    );
    let server = pg.clone();
    blocking(move || server.start_again())
        .await
        .expect("pg_ctl start");

    let client = connect_eventually(&uri).await;
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    wait_for_statements(100).await;
    let tally = finish(&stop, workers).await;
    println!("upstream restart under load: {tally:?}");
    assert!(
        tally.unclean.is_empty(),
        "unclean errors: {:?}",
        tally.unclean
    );
    assert!(tally.clean_errors >= 1, "the restart reached the clients");
    assert!(tally.statements > 0);
}

#[tokio::test]
async fn upstream_unreachable_at_start_then_served_once_back() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.stop().expect("pg_ctl stop");
    let proxy =
        Proxy::start(&pg, ProxyOptions::default()).expect("the proxy starts without its database");
    let err = maschera_tests::connect(&proxy.uri("postgres"))
        .await
        .expect_err("no database behind the proxy")
        .downcast::<tokio_postgres::Error>()
        .unwrap();
    assert_eq!(err.code(), Some(&SqlState::CONNECTION_FAILURE), "{err}");
    let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(
        message.contains("could not connect to the database server"),
        "{message}"
    );

    let pg = blocking(move || {
        pg.start_again().expect("pg_ctl start");
        pg
    })
    .await;
    let client = connect_eventually(&proxy.uri("postgres")).await;
    assert_eq!(
        client
            .query_one("select 8", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
    drop(pg);
}

/// Reads until the peer closes; true if it did within `BOUND`.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_one_byte_a_second_clients_time_out_without_starving_others() {
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        auth: "timeout_seconds = 3".into(),
        limits: "max_connections = 40".into(),
        ..Default::default()
    });
    let port = proxy.port();
    let mut idlers = JoinSet::new();
    for i in 0..20 {
        idlers.spawn(async move {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            if i % 2 == 1 {
                // One byte a second of a real startup message: never finishes within the timeout.
                let mut startup = BytesMut::new();
                frontend::startup_message(
                    [("user", TEST_USER), ("database", "postgres")],
                    &mut startup,
                )
                .unwrap();
                for byte in startup.iter().take(20) {
                    if tcp.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            closed_by_peer(&mut tcp).await
        });
    }
    // Meanwhile real clients come and go.
    for i in 0..10 {
        let client = maschera_tests::connect(&proxy.uri("postgres"))
            .await
            .expect("a real client is served next to idle ones");
        assert_eq!(
            client
                .query_one("select $1::int", &[&i])
                .await
                .unwrap()
                .get::<_, i32>(0),
            i
        );
    }
    let closed = tokio::time::timeout(BOUND + BOUND, async {
        let mut all = true;
        while let Some(closed) = idlers.join_next().await {
            all &= closed.unwrap();
        }
        all
    })
    .await
    .expect("idle connections end");
    assert!(
        closed,
        "every silent or trickling connection is closed by the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_under_load_answers_53300_and_frees_slots() {
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        limits: "max_connections = 6".into(),
        ..Default::default()
    });
    let uri = proxy.uri("postgres");
    // Six sessions (the limit) stay busy while others knock.
    let mut busy = JoinSet::new();
    for _ in 0..6 {
        let client = maschera_tests::connect(&uri)
            .await
            .expect("within the limit");
        busy.spawn(async move {
            for _ in 0..50 {
                client
                    .query_one("select count(*) from generate_series(1, 200)", &[])
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(client)
        });
    }
    for _ in 0..10 {
        let err = maschera_tests::connect(&uri)
            .await
            .expect_err("over the limit")
            .downcast::<tokio_postgres::Error>()
            .unwrap();
        assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");
        let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
        assert!(message.contains("too many clients"), "{message}");
    }
    let held = tokio::time::timeout(BOUND, busy.join_all())
        .await
        .expect("busy sessions finish");
    for client in held {
        client.expect("held sessions keep working next to refused ones");
    }
    let client = connect_eventually(&uri).await;
    client.query_one("select 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_tls_handshake_is_dropped_and_others_keep_working() {
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, key) = write_test_certificates(certs.path()).unwrap();
    let (_pg, proxy) = pg_and_proxy(ProxyOptions {
        tls: format!(
            "mode = \"optional\"\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    });
    let port = proxy.port();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut ssl_request = BytesMut::new();
    frontend::ssl_request(&mut ssl_request);
    // A truncated ClientHello record header claiming a huge body.
    let truncated_hello = [0x16u8, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00];

    let attempts: Vec<Vec<Vec<u8>>> = vec![
        // Direct TLS: a record header byte, then noise.
        vec![[&[0x16u8][..], &garbage].concat()],
        // SSLRequest answered `S`, then noise instead of a ClientHello.
        vec![ssl_request.to_vec(), garbage.clone()],
        // SSLRequest, then a ClientHello cut short and the connection left open.
        vec![ssl_request.to_vec(), truncated_hello.to_vec()],
        // Direct TLS with a truncated ClientHello.
        vec![truncated_hello.to_vec()],
    ];
    for (i, writes) in attempts.into_iter().enumerate() {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        for (n, bytes) in writes.iter().enumerate() {
            let _ = tcp.write_all(bytes).await;
            if n == 0 && writes.len() > 1 {
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer)
                    .await
                    .expect("answer to SSLRequest");
                assert_eq!(answer[0], b'S', "attempt {i}");
            }
        }
        assert!(
            closed_by_peer(&mut tcp).await,
            "attempt {i}: the proxy drops the connection"
        );
        let client = maschera_tests::connect(&proxy.uri("postgres"))
            .await
            .expect("a plaintext client is served after the garbage");
        client.query_one("select 1", &[]).await.unwrap();
    }
    assert!(
        proxy.log().contains("TLS"),
        "the handshake failures are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_within_the_timeout() {
    let (_pg, mut proxy) = pg_and_proxy(ProxyOptions {
        limits: "shutdown_timeout_seconds = 5".into(),
        ..Default::default()
    });
    let uri = proxy.uri("postgres");
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&uri, 16, &stop, &[SqlState::ADMIN_SHUTDOWN]);
    wait_for_statements(200).await;
    proxy.signal(libc::SIGTERM);
    let (status, _proxy) = blocking(move || {
        let status = proxy.wait_exit(BOUND);
        (status, proxy)
    })
    .await;
    let status = status.expect("the proxy exits within the bound");
    assert!(status.success(), "exit status {status}");
    let tally = finish(&stop, workers).await;
    println!("SIGTERM under load: {tally:?}");
    // After the exit, reconnect attempts find no listener: "error connecting to server".
    let unexpected: Vec<_> = tally
        .unclean
        .iter()
        .filter(|e| !e.starts_with("error connecting to server"))
        .collect();
    assert!(unexpected.is_empty(), "unclean errors: {unexpected:?}");
    assert!(tally.statements > 0);
}

/// `clients` workers over the demo users that connect through the proxy, run three rounds of
/// their role's CRM work, disconnect and start again, until `stop`.
fn crm_load(crm: &CrmProxy, clients: usize, stop: &Arc<AtomicBool>) -> JoinSet<Work> {
    let users = demo_users();
    let mut set = JoinSet::new();
    for i in 0..clients {
        let user = users[i % users.len()].0;
        let uri = crm.uri(user);
        let stop = stop.clone();
        set.spawn(async move {
            let mut work = Work::default();
            let mut seed = i as u64;
            while !stop.load(Ordering::Relaxed) {
                match maschera_tests::connect(&uri).await {
                    Ok(client) => {
                        let pause = Duration::from_millis(10);
                        crm_work::run(
                            &client,
                            user,
                            CONTACTS,
                            seed,
                            Some(3),
                            pause,
                            &stop,
                            &mut work,
                        )
                        .await;
                    }
                    Err(err) => work.add(Work {
                        unexpected: vec![format!("{user}: connect: {err:#}")],
                        unexpected_count: 1,
                        ..Work::default()
                    }),
                }
                seed += 3;
            }
            work
        });
    }
    set
}

/// Stops CRM workers and sums their work; panics if a worker does not finish in time.
async fn finish_work(stop: &AtomicBool, mut set: JoinSet<Work>) -> Work {
    stop.store(true, Ordering::Relaxed);
    let mut work = Work::default();
    let joined = tokio::time::timeout(BOUND, async {
        while let Some(done) = set.join_next().await {
            work.add(done.expect("load worker"));
        }
    })
    .await;
    assert!(joined.is_ok(), "load workers hang after {BOUND:?}");
    work
}

/// No error but the expected refusals, no wrong rows, and the refusals did happen.
fn assert_only_expected(work: &Work) {
    assert!(
        work.unexpected.is_empty(),
        "{} unexpected outcomes, first ones: {:#?}",
        work.unexpected_count,
        work.unexpected
    );
    assert!(work.refusals > 0, "the expected refusals happened");
}

/// Support's first name and email of contact 1 through a new session as `tom`; the email is
/// `None` when the proxy refuses it (42501 naming the column).
async fn support_view_of_contact_1(crm: &CrmProxy) -> (String, Option<String>) {
    let tom = maschera_tests::connect(&crm.uri("tom")).await.expect("tom");
    let first_name: String = tom
        .query_one("SELECT first_name FROM contacts WHERE id = 1", &[])
        .await
        .expect("support reads first names")
        .get(0);
    let email = match tom
        .query_one("SELECT email FROM contacts WHERE id = 1", &[])
        .await
    {
        Ok(row) => Some(row.get(0)),
        Err(err) => {
            assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
            let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
            assert!(message.contains("email"), "{message}");
            None
        }
    };
    (first_name, email)
}

/// The policy changes while clients of every role work: support's `first_name` goes from shown
/// to masked and its `email` from masked to dropped (`maschera policy apply` of the edited file,
/// then SIGHUP). Sessions started after the reload see the new policy; then an invalid policy
/// file and SIGHUP keep that policy, and the proxy logs why. The clients see no error but their
/// expected refusals throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_under_load_reaches_new_sessions_and_an_invalid_file_keeps_the_policy() {
    let crm = crm_fixture()
        .poll_seconds(0)
        .start()
        .await
        .expect("start the CRM");
    let admin = crm.pg.connect(CRM_DB).await.expect("admin connection");
    let (first_name, email): (String, String) = admin
        .query_one("SELECT first_name, email FROM contacts WHERE id = 1", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .expect("contact 1");
    let (seen, seen_email) = support_view_of_contact_1(&crm).await;
    assert_eq!(seen, first_name);
    let seen_email = seen_email.expect("support sees a masked email");
    assert!(
        seen_email.contains("***") && seen_email != email,
        "{seen_email}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workers = crm_load(&crm, 18, &stop);
    wait_for_statements(300).await;

    let policy = &crm.applied.policy;
    let text = std::fs::read_to_string(policy).unwrap();
    let edited = text.replace(
        "[roles.support.tables.contacts]\nshow = [\"id\", \"first_name\"]\n\
         columns = { last_name = \"mask.initial\", email = \"mask.email\",",
        "[roles.support.tables.contacts]\nshow = [\"id\"]\n\
         columns = { first_name = \"mask.initial\", last_name = \"mask.initial\", email = \"drop\",",
    );
    assert_ne!(
        edited, text,
        "the support rule of the reference policy moved"
    );
    std::fs::write(policy, edited).unwrap();
    tokio::task::block_in_place(|| {
        apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY)
            .expect("policy apply under load")
    });
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log_async("policy reloaded", 1).await;
    wait_for_statements(300).await;
    let initial = format!("{}.", first_name.chars().next().unwrap());
    assert_eq!(
        support_view_of_contact_1(&crm).await,
        (initial.clone(), None)
    );

    std::fs::write(policy, "[roles.sales\n").unwrap();
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy
        .wait_for_log_async("policy reload failed", 1)
        .await;
    let log = crm.proxy.log();
    assert!(log.contains("invalid policy file"), "the log says why");
    wait_for_statements(300).await;
    assert_eq!(support_view_of_contact_1(&crm).await, (initial, None));

    let work = finish_work(&stop, workers).await;
    println!("policy reload under load: {work:?}");
    assert_only_expected(&work);
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The demo users of the reference CRM (all six roles' users).
fn demo_users() -> Vec<CrmUser> {
    maschera::ops::demo::DEMO_USERS
        .iter()
        .map(|user| (user.name, user.role, user.attributes))
        .collect()
}

/// What one held session may add to the proxy's memory, in KiB (see the load test), with slack.
const RELAY_BUFFERS_KIB: u64 = 96;

/// Contacts of the CRM the load and reload tests run against.
const CONTACTS: u64 = 2000;

/// The CRM of the load and reload tests: every demo user, verifiers of 64 SCRAM iterations (a
/// client's PBKDF2 in the debug build would otherwise dominate a connection storm; the proxy's
/// side of SCRAM costs the same at any count), the proxy logging at `info`.
fn crm_fixture() -> Fixture {
    Fixture::crm(CONTACTS)
        .users(demo_users())
        .scram_iterations(64)
        .config(|proxy| proxy.log_level = "info".into())
}

/// Many clients held through the proxy at once, spread over every demo user of the reference CRM
/// (so over every role's upstream login), each running its role's mixed work (`crm_work`: simple
/// and extended protocol, reads, a write, an expected refusal) with the access log on, for a
/// while: no unexpected error or wrong row, every refusal the expected one, and the proxy's memory
/// bounded. `MASCHERA_LOAD_CLIENTS` (default 100) and `MASCHERA_LOAD_SECONDS` (default 20) scale it;
/// `tests/load/run` runs 1,000 clients for 60 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_clients_without_errors_and_with_flat_memory() {
    let clients = env_number("MASCHERA_LOAD_CLIENTS", 100);
    let seconds = env_number("MASCHERA_LOAD_SECONDS", 20);
    let logs = tempfile::tempdir().unwrap();
    let crm = crm_fixture()
        .pg(|pg| pg.settings = vec![format!("max_connections = {}", clients + 50)])
        .config(|proxy| {
            // Several workers (the default on small machines is one), so that sessions on
            // different threads share the access log and the listener spreads connections over them.
            proxy.limits = format!("max_connections = {}\nworker_threads = 3", clients + 10);
            proxy.auth = "timeout_seconds = 120".into();
            proxy.upstream_extra = "connect_timeout_seconds = 120".into();
            proxy.audit = maschera_tests::access_log_section(logs.path(), "load");
        })
        .start()
        .await
        .expect("start the CRM");
    let pid = crm.proxy.pid();
    let start_rss = rss_kib(pid);

    // Clients connect 16 at a time (a storm of 1,000 logins, each with its upstream login, would
    // meet the login timeouts on a loaded machine); every one is held until the end.
    let users = demo_users();
    let mut connecting = JoinSet::new();
    let mut sessions = Vec::new();
    for i in 0..clients {
        let user = users[i as usize % users.len()].0;
        let uri = crm.uri(user);
        connecting.spawn(async move { (user, maschera_tests::connect(&uri).await) });
        while connecting.len() >= 16 || (i + 1 == clients && !connecting.is_empty()) {
            let (user, client) = connecting.join_next().await.unwrap().unwrap();
            sessions.push((user, client.expect("every client gets a session")));
        }
    }
    let held_rss = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for (i, (user, client)) in sessions.into_iter().enumerate() {
        let stop = stop.clone();
        workers.spawn(async move {
            let mut work = Work::default();
            let pause = Duration::from_millis(20);
            crm_work::run(
                &client, user, CONTACTS, i as u64, None, pause, &stop, &mut work,
            )
            .await;
            work
        });
    }
    // RSS every tenth of the run.
    let mut samples = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(seconds * 100)).await;
        samples.push(rss_kib(pid));
        progress.push(STATEMENTS.load(Ordering::Relaxed));
    }
    let work = finish_work(&stop, workers).await;
    let half_rss = samples[4];
    let end_rss = samples[9];
    println!(
        "load: {clients} clients over {} demo users for {seconds} s: {} statements ({} expected \
         refusals), {} unexpected; proxy RSS {start_rss} KiB at start, {held_rss} KiB with all \
         clients in, {half_rss} KiB at half time, {end_rss} KiB at the end; every tenth: {samples:?} KiB after {progress:?} statements",
        users.len(),
        work.statements,
        work.refusals,
        work.unexpected_count,
    );
    assert_only_expected(&work);
    assert!(work.statements > clients, "the load ran");
    // The relay holds no buffer while a session waits and sizes one to the bytes at hand, so the
    // memory of a held session does not grow with its traffic: bounded overall, and flat (at most
    // 10 % plus 1 MiB) over the second half of the run, whatever the number of statements.
    assert!(
        end_rss <= held_rss + clients * RELAY_BUFFERS_KIB + 32 * 1024,
        "proxy memory grew from {held_rss} KiB to {end_rss} KiB with {clients} clients"
    );
    assert!(
        end_rss <= half_rss + half_rss / 10 + 1024,
        "proxy memory kept growing in the second half: {half_rss} KiB to {end_rss} KiB"
    );
}
