//! What one audited statement costs the access log: its access record and its completion (in that
//! record while the writer has not taken it, else an `outcome` record), built
//! by the session's real `Trail` (as a CRM point lookup of 8 sessions builds them), queued, serialized,
//! sealed and written by the real writer (`durability = "batch"`, no fsync during the run), then awaited.
//! Not for: fsync latency (that is the disk's; see `bench/run`) or pass/fail checks.
//!
//! Prints wall time and process CPU time (worker and writer threads together) per statement, for
//! several rounds and their median. Run: `cargo bench -p maschera --bench audit_records`.

#![allow(unsafe_code, reason = "libc calls, std::env::set_var")]

use maschera::audit::keys::ChainSecret;
use maschera::audit::{AuditConfig, AuditLog, Durability};
use maschera::enforce::audit_trail::{SessionIdentity, Trail};
use maschera::session::ServerEvent;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;
const STATEMENTS: usize = 40_000;
const ROUNDS: usize = 7;
/// Statements whose completions are awaited together (sessions overlap their records).
const WAVE: usize = 64;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Lines of the log's files: statement records, outcome records, and the log's own few.
fn lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("log folder")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "jsonl"))
        .map(|entry| {
            let text = std::fs::read(entry.path()).expect("log file");
            text.iter().filter(|&&b| b == b'\n').count()
        })
        .sum()
}

async fn round(dir: &std::path::Path) -> (f64, f64, f64) {
    let mut config = AuditConfig::new(dir);
    config.instance = Some("bench-proxy".into());
    config.durability = Durability::Batch;
    config.batch_interval_ms = 3_600_000;
    let log = Arc::new(
        AuditLog::open_with_keys(
            &config,
            ChainSecret::from_bytes(vec![7; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .expect("open the log"),
    );
    let rewritten = policy::rewrite::rewrite(
        "SELECT id, first_name, last_name, email, phone, city, region FROM contacts WHERE id = 42",
        &policy::rewrite::fixture::role("support"),
        &policy::rewrite::fixture::catalog(),
    )
    .expect("rewritten");
    let statements = rewritten.statements();
    let mut sessions: Vec<Trail> = (0..SESSIONS)
        .map(|n| {
            let who = SessionIdentity {
                session: format!("{}", 1000 + n),
                client: format!("10.1.1.{n}:5{n}000"),
                user: "tom".into(),
                role: "support".into(),
                database: "crm".into(),
                application_name: (n % 2 == 0).then(|| "crm-web".to_string()),
                end_user: None,
            };
            Trail::new(log.clone(), who)
        })
        .collect();
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut holds = Vec::with_capacity(WAVE);
    for n in 0..STATEMENTS {
        let trail = &mut sessions[n % SESSIONS];
        // Each statement is its session's next cycle, as the relay numbers them.
        let cycle = (n / SESSIONS) as u64 + 1;
        trail.query(statements, cycle).expect("log writable");
        trail.on_server_event(ServerEvent::CommandComplete { tag: "SELECT 1" }, cycle);
        trail.on_server_event(ServerEvent::Ready { status: b'I' }, cycle);
        holds.extend(trail.hold());
        if holds.len() == WAVE {
            for hold in holds.drain(..) {
                hold.await.expect("durable");
            }
        }
    }
    for hold in holds.drain(..) {
        hold.await.expect("durable");
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / STATEMENTS as f64;
    let (wall, cpu) = (per(wall.elapsed()), per(cpu_time() - cpu));
    drop(sessions);
    log.shutdown().await.expect("shutdown");
    (wall, cpu, lines(dir) as f64 / STATEMENTS as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for n in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (wall, cpu, lines) = runtime.block_on(round(dir.path()));
        println!(
            "round {n}: {wall:.2} µs wall, {cpu:.2} µs CPU per statement ({lines:.2} lines each)"
        );
        walls.push(wall);
        cpus.push(cpu);
    }
    println!(
        "median of {ROUNDS} rounds x {STATEMENTS} statements: {:.2} µs wall, {:.2} µs CPU per statement",
        median(walls),
        median(cpus)
    );
}
