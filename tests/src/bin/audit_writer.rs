//! A tiny load generator for the access log, for the end-to-end tests and the benchmark: opens the log
//! of `--config FILE` (its `[audit]` section; keys from the files or environment it names), records
//! statement events from many tasks, and prints `acked <seq>` for each record `record` acknowledged.
//!
//! Usage: audit-writer --config FILE [--tasks N] [--count N (per task; 0 = until killed)]
//!        [--fsize-limit BYTES (a file size limit, as a full disk)] [--bench]
//!        [--work-us N (a simulated upstream query per statement)] [--overlap (submit the record before
//!        the query, await its durability after, instead of recording after the query)]
//!        [--no-log (only the simulated queries: the baseline)]
//! With `--bench` nothing is printed per record; the last line is `records <n> seconds <s> per_second <r>`.
//! Exit status: 0 all recorded, 3 the log refused a record (`error ...` and `healthy false` printed).

#![allow(unsafe_code, reason = "libc calls, std::env::set_var")]

use maschera::audit::{
    AuditConfig, AuditLog, ColumnAction, ColumnTouched, Event, EventKind, TableTouched,
};
use policy::access::{Category, TableName};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    config: String,
    tasks: usize,
    count: u64,
    fsize_limit: Option<u64>,
    bench: bool,
    work_us: u64,
    overlap: bool,
    no_log: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        config: String::new(),
        tasks: 8,
        count: 0,
        fsize_limit: None,
        bench: false,
        work_us: 0,
        overlap: false,
        no_log: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => out.config = value()?,
            "--tasks" => out.tasks = value()?.parse().map_err(|_| "--tasks: a number")?,
            "--count" => out.count = value()?.parse().map_err(|_| "--count: a number")?,
            "--fsize-limit" => {
                out.fsize_limit = Some(value()?.parse().map_err(|_| "--fsize-limit: a number")?)
            }
            "--bench" => out.bench = true,
            "--overlap" => out.overlap = true,
            "--no-log" => out.no_log = true,
            "--work-us" => out.work_us = value()?.parse().map_err(|_| "--work-us: a number")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.config.is_empty() {
        return Err("--config FILE is required".into());
    }
    Ok(out)
}

fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls with valid arguments; SIGXFSZ ignored so that writes past the limit fail
    // with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
    }
}

fn event(task: usize, n: u64) -> Event {
    let mut event = Event::new(EventKind::Statement);
    event.session = Some(format!("s{task}"));
    event.user = Some(format!("user{task}"));
    event.role = Some("support".into());
    event.client = Some("127.0.0.1:40000".into());
    event.statement_kind = Some("select".into());
    event.statement = Some("SELECT name, email FROM customers WHERE id = $1".into());
    event.tables = vec![TableTouched {
        table: TableName::new("public", "customers"),
        columns: vec![
            ColumnTouched {
                name: "name".into(),
                category: Some(Category::Identifying),
                action: ColumnAction::Shown,
            },
            ColumnTouched {
                name: "email".into(),
                category: Some(Category::Contact),
                action: ColumnAction::Masked,
            },
        ],
        row_filtered: true,
        operations: vec!["read".into()],
        categories: Vec::new(),
    }];
    event.rows = Some(n % 5);
    event.duration_us = Some(250);
    event
}

async fn simulated_query(work: std::time::Duration) {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("audit-writer: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(bytes) = args.fsize_limit {
        limit_file_size(bytes);
    }
    let config = match AuditConfig::from_proxy_config(std::path::Path::new(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("audit-writer: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match AuditLog::open(&config) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("audit-writer: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.tasks {
        let log = log.clone();
        let (count, bench, overlap, no_log) = (args.count, args.bench, args.overlap, args.no_log);
        let work = std::time::Duration::from_micros(args.work_us);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while count == 0 || n < count {
                let acked = if no_log {
                    simulated_query(work).await;
                    Ok(0)
                } else if overlap {
                    let receipt = log.submit(event(task, n));
                    simulated_query(work).await;
                    receipt.durable().await
                } else {
                    simulated_query(work).await;
                    log.record(event(task, n)).await
                };
                match acked {
                    Ok(seq) if !bench => println!("acked {seq}"),
                    Ok(_) => {}
                    Err(e) => {
                        println!("error {e}");
                        println!("healthy {}", log.is_healthy());
                        return Err(n);
                    }
                }
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut recorded = 0;
    let mut failed = false;
    for task in tasks {
        match task.await {
            Ok(Ok(n)) => recorded += n,
            Ok(Err(n)) => {
                recorded += n;
                failed = true;
            }
            Err(_) => failed = true,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let shutdown = log.shutdown().await;
    if args.bench {
        println!(
            "records {recorded} seconds {seconds:.3} per_second {:.0}",
            recorded as f64 / seconds
        );
    }
    let _ = std::io::stdout().flush();
    if failed || shutdown.is_err() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
