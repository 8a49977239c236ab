//! The access log end to end inside the library: logs written by the real writer, then checked by
//! `verify` as they are and after each kind of tampering; restarts, rotation, concurrency, write failures.

use super::config::{AuditConfig, Durability};
use super::keys::ChainSecret;
use super::record::{ColumnAction, ColumnTouched, Event, EventKind, Outcome, TableTouched};
use super::verify::{Report, Verdict, verify};
use super::{AuditError, AuditLog, files};
use ed25519_dalek::SigningKey;
use policy::access::{Category, TableName};
use std::path::{Path, PathBuf};

const SECRET: [u8; 32] = [1; 32];
const SIGNING: [u8; 32] = [2; 32];

fn config(dir: &Path) -> AuditConfig {
    let mut config = AuditConfig::new(dir);
    config.instance = Some("test".into());
    config.checkpoint_seconds = 0;
    config.checkpoint_records = 0;
    config
}

fn open(config: &AuditConfig) -> Result<AuditLog, AuditError> {
    AuditLog::open_with_keys(
        config,
        ChainSecret::from_bytes(SECRET.to_vec()),
        SigningKey::from_bytes(&SIGNING),
    )
}

fn statement(user: &str, n: u64) -> Event {
    let mut event = Event::new(EventKind::Statement);
    event.user = Some(user.into());
    event.role = Some("support".into());
    event.client = Some("10.0.0.5:50000".into());
    event.statement_kind = Some("select".into());
    event.statement = Some("SELECT email FROM customers WHERE id = $1".into());
    event.tables = vec![TableTouched {
        table: TableName::new("public", "customers"),
        columns: vec![ColumnTouched {
            name: "email".into(),
            category: Some(Category::Contact),
            action: ColumnAction::Masked,
        }],
        row_filtered: false,
        operations: vec!["read".into()],
        categories: Vec::new(),
    }];
    event.rows = Some(n);
    event.duration_us = Some(100 + n);
    event
}

/// A statement's access record as sent: no rows, duration or outcome yet.
fn unanswered(user: &str, n: u64) -> Event {
    let mut event = statement(user, n);
    (event.rows, event.duration_us, event.outcome) = (None, None, Outcome::Unknown);
    event
}

/// The lines of the folder's only file, as JSON, with `keep` saying which.
fn json_records(
    dir: &Path,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> (String, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(only_file(dir)).unwrap();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r| keep(r))
        .collect();
    (text, records)
}

async fn write(config: &AuditConfig, count: u64) -> Vec<u64> {
    let log = open(config).expect("open the log");
    let mut seqs = Vec::new();
    for n in 0..count {
        seqs.push(log.record(statement("anna", n)).await.expect("record"));
    }
    log.shutdown().await.expect("shutdown");
    seqs
}

fn check(paths: &[PathBuf]) -> Report {
    let public = SigningKey::from_bytes(&SIGNING).verifying_key();
    verify(
        paths,
        &ChainSecret::from_bytes(SECRET.to_vec()),
        &public,
        false,
    )
    .expect("verify runs")
}

fn check_dir(dir: &Path) -> Report {
    check(&[dir.to_path_buf()])
}

fn only_file(dir: &Path) -> PathBuf {
    let files = files::list_dir(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn broken(report: &Report) -> &super::verify::Break {
    match &report.verdict {
        Verdict::Broken(b) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn a_written_log_verifies_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seqs = write(&config(dir.path()), 10).await;
    assert_eq!(seqs, (2..12).collect::<Vec<_>>(), "seq 1 is the file start");
    let report = check_dir(dir.path());
    assert_eq!(report.verdict, Verdict::Whole, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.records, 12, "file start + 10 + shutdown checkpoint");
    let text = std::fs::read_to_string(only_file(dir.path())).unwrap();
    assert!(
        text.contains(r#""category":"contact","action":"masked""#),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains(r#""reason":"shutdown""#)
    );
}

#[tokio::test]
async fn modifying_a_field_breaks_the_chain_at_that_line() {
    let dir = tempfile::tempdir().unwrap();
    write(&config(dir.path()), 5).await;
    let file = only_file(dir.path());
    edit_lines(&file, |lines| {
        lines[3] = lines[3].replace(r#""rows":2"#, r#""rows":0"#)
    });
    let report = check_dir(dir.path());
    let b = broken(&report);
    assert_eq!((b.line, b.seq), (4, Some(4)), "{b}");
    assert!(b.why.contains("MAC"), "{b}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn deleting_inserting_and_swapping_lines_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    write(&config(dir.path()), 6).await;
    let file = only_file(dir.path());
    let original = std::fs::read_to_string(&file).unwrap();

    edit_lines(&file, |lines| {
        lines.remove(2);
    });
    let b = broken(&check_dir(dir.path())).clone();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("missing"), "deletion: {b}");

    std::fs::write(&file, &original).unwrap();
    edit_lines(&file, |lines| {
        let copy = lines[2].clone();
        lines.insert(3, copy);
    });
    let b = broken(&check_dir(dir.path())).clone();
    assert_eq!(b.line, 4);
    assert!(b.why.contains("inserted"), "insertion: {b}");

    std::fs::write(&file, &original).unwrap();
    edit_lines(&file, |lines| lines.swap(2, 3));
    let b = broken(&check_dir(dir.path())).clone();
    assert_eq!(b.line, 3, "swap: {b}");

    std::fs::write(&file, &original).unwrap();
    edit_lines(&file, |lines| {
        // A record forged with a correct-looking seq and a made-up MAC.
        let forged = lines[2].replace(r#""user":"anna""#, r#""user":"eve""#);
        lines[2] = forged;
    });
    assert!(broken(&check_dir(dir.path())).why.contains("MAC"));
}

#[tokio::test]
async fn truncating_the_tail_or_removing_the_last_checkpoint_leaves_an_unsealed_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_records = 3;
    write(&cfg, 10).await;
    let file = only_file(dir.path());
    let original = std::fs::read_to_string(&file).unwrap();

    edit_lines(&file, |lines| {
        lines.pop();
    });
    let report = check_dir(dir.path());
    assert_eq!(report.exit_code(), 2, "{report:?}");
    assert!(
        matches!(report.verdict, Verdict::Unsealed { unsealed_records, .. } if unsealed_records > 0)
    );

    std::fs::write(&file, &original).unwrap();
    edit_lines(&file, |lines| {
        let last_periodic = lines
            .iter()
            .rposition(|l| l.contains(r#""reason":"periodic""#))
            .unwrap();
        lines.truncate(last_periodic + 1);
    });
    let report = check_dir(dir.path());
    assert!(
        matches!(
            report.verdict,
            Verdict::Unsealed {
                unsealed_records: 0,
                last_checkpoint_seq: Some(_),
                ..
            }
        ),
        "cut right after a periodic checkpoint: {report:?}"
    );

    std::fs::write(&file, format!("{original}{{\"seq\":")).unwrap();
    let report = check_dir(dir.path());
    assert!(
        matches!(report.verdict, Verdict::Unsealed { torn: true, .. }),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write(&config(dir.path()), 2).await;
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let report = verify(
        &[dir.path().to_path_buf()],
        &ChainSecret::from_bytes(SECRET.to_vec()),
        &other,
        false,
    )
    .unwrap();
    assert!(broken(&report).why.contains("signature"), "{report:?}");
    let report = verify(
        &[dir.path().to_path_buf()],
        &ChainSecret::from_bytes(vec![7; 32]),
        &other,
        false,
    )
    .unwrap();
    assert!(
        broken(&report).why.contains("MAC"),
        "a wrong secret: {report:?}"
    );
}

#[tokio::test]
async fn rotation_keeps_the_chain_and_changes_to_the_set_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rotate_bytes = 2_000;
    let seqs = write(&cfg, 40).await;
    let list = files::list_dir(dir.path()).unwrap();
    assert!(list.len() >= 3, "{list:?}");
    let report = check_dir(dir.path());
    assert_eq!(report.verdict, Verdict::Whole, "{report:?}");
    assert_eq!(report.last_seq, Some(seqs.last().unwrap() + 1));
    let backup = tempfile::tempdir().unwrap();
    let restore = || {
        for f in files::list_dir(dir.path()).unwrap() {
            std::fs::remove_file(f).unwrap();
        }
        for f in files::list_dir(backup.path()).unwrap() {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    };
    for f in &list {
        std::fs::copy(f, backup.path().join(f.file_name().unwrap())).unwrap();
    }

    edit_lines(&list[1], |lines| {
        lines[2] = lines[2].replace(r#""user":"anna""#, r#""user":"bert""#)
    });
    let b = broken(&check_dir(dir.path())).clone();
    assert_eq!(
        b.file,
        files::base_name(&list[1]),
        "change in a middle file: {b}"
    );

    restore();
    std::fs::remove_file(&list[1]).unwrap();
    let b = broken(&check_dir(dir.path())).clone();
    assert!(b.why.contains("missing"), "a middle file deleted: {b}");

    // The newest file removed looks like a crash between closing a file and starting the next
    // (as a truncation after a checkpoint does): never whole, and the report says why.
    let assert_crash_remnant = |note: &str| {
        let report = check_dir(dir.path());
        let unsealed = matches!(
            report.verdict,
            Verdict::Unsealed {
                unsealed_records: 0,
                ..
            }
        );
        assert!(
            unsealed && report.notes.iter().any(|n| n.contains(note)),
            "{report:?}"
        );
    };
    restore();
    std::fs::remove_file(list.last().unwrap()).unwrap();
    assert_crash_remnant("rotation checkpoint and no file follows");

    // A crash between creating the next file and writing its first record leaves it empty.
    restore();
    std::fs::write(list.last().unwrap(), b"").unwrap();
    assert_crash_remnant("is empty");

    // An empty file before the last one is no crash remnant.
    restore();
    std::fs::write(&list[1], b"").unwrap();
    let b = broken(&check_dir(dir.path())).clone();
    assert!(
        b.why.contains("no complete record"),
        "a middle file emptied: {b}"
    );

    restore();
    edit_lines(&list[0], |lines| {
        lines.pop();
    });
    let b = broken(&check_dir(dir.path())).clone();
    assert_eq!(
        b.file,
        files::base_name(&list[1]),
        "the rotation checkpoint of a middle file removed: {b}"
    );

    restore();
    let (a, c) = (&list[0], &list[1]);
    let tmp = dir.path().join("tmp");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(c, a).unwrap();
    std::fs::rename(&tmp, c).unwrap();
    assert_eq!(check_dir(dir.path()).exit_code(), 1, "two files swapped");

    restore();
    let partial = check(&list[1..]);
    assert!(broken(&partial).why.contains("--partial"), "{partial:?}");
    let public = SigningKey::from_bytes(&SIGNING).verifying_key();
    let partial = verify(
        &list[1..],
        &ChainSecret::from_bytes(SECRET.to_vec()),
        &public,
        true,
    )
    .unwrap();
    assert_eq!(partial.verdict, Verdict::Whole, "{partial:?}");
}

#[tokio::test]
async fn a_restart_continues_the_chain_even_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let first = write(&cfg, 3).await;
    // An unclean stop: the shutdown checkpoint never made it.
    edit_lines(&only_file(dir.path()), |lines| {
        lines.pop();
    });
    let second = write(&cfg, 3).await;
    assert_eq!(
        second[0],
        first.last().unwrap() + 2,
        "seq continues after the restart's file start"
    );
    let report = check_dir(dir.path());
    assert_eq!(report.verdict, Verdict::Whole, "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.contains("uncleanly")),
        "{:?}",
        report.notes
    );
    let third = write(&cfg, 1).await;
    assert!(third[0] > second[2]);
    assert_eq!(check_dir(dir.path()).verdict, Verdict::Whole);
}

#[tokio::test]
async fn callers_cannot_write_the_logs_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&config(dir.path())).unwrap();
    for kind in [EventKind::Checkpoint, EventKind::FileStart] {
        assert!(matches!(
            log.record(Event::new(kind)).await,
            Err(AuditError::ReservedKind(_))
        ));
    }
    let receipt = log.submit(statement("anna", 1));
    assert!(
        receipt.durable().await.is_ok(),
        "submit queues at once, durable waits"
    );
    log.shutdown().await.unwrap();
    assert!(matches!(
        log.record(statement("anna", 1)).await,
        Err(AuditError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_are_all_durable_in_sequence_order() {
    for durability in [Durability::Sync, Durability::Batch] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.durability = durability;
        cfg.checkpoint_records = 50;
        cfg.rotate_bytes = 50_000;
        let log = open(&cfg).unwrap();
        let mut tasks = Vec::new();
        for task in 0..32 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..25 {
                    acked.push(
                        log.record(statement(&format!("user{task}"), n))
                            .await
                            .unwrap(),
                    );
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        log.shutdown().await.unwrap();
        let mut in_files = Vec::new();
        for file in files::list_dir(dir.path()).unwrap() {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                in_files.push(value["seq"].as_u64().unwrap());
            }
        }
        assert!(
            in_files.windows(2).all(|w| w[1] == w[0] + 1),
            "{durability:?}: contiguous seqs in file order"
        );
        acked.sort();
        acked.dedup();
        assert_eq!(acked.len(), 32 * 25);
        assert!(
            acked.iter().all(|s| in_files.binary_search(s).is_ok()),
            "every acknowledged record is in the files"
        );
        assert_eq!(
            check_dir(dir.path()).verdict,
            Verdict::Whole,
            "{durability:?}"
        );
    }
}

/// A log in a folder that can be taken away (a regular file takes its place, so no new file can be
/// created) and given back. Every group starts a new file, so each needs the folder. One record
/// (user `anna`) is written before anything is taken away.
struct VanishingFolder {
    log_dir: PathBuf,
    moved: PathBuf,
}

impl VanishingFolder {
    async fn open(dir: &Path) -> (VanishingFolder, AuditLog) {
        let log_dir = dir.join("log");
        let mut cfg = config(&log_dir);
        cfg.rotate_bytes = 1;
        let log = open(&cfg).unwrap();
        log.record(statement("anna", 1)).await.unwrap();
        let moved = dir.join("moved");
        (VanishingFolder { log_dir, moved }, log)
    }

    fn take_away(&self) {
        std::fs::rename(&self.log_dir, &self.moved).unwrap();
        std::fs::write(&self.log_dir, "not a folder").unwrap();
    }

    fn give_back(&self) {
        std::fs::remove_file(&self.log_dir).unwrap();
        std::fs::rename(&self.moved, &self.log_dir).unwrap();
    }

    /// Every line of every file of the log.
    fn lines(&self) -> Vec<String> {
        files::list_dir(&self.log_dir)
            .unwrap()
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }
}

#[tokio::test]
async fn an_unwritable_log_refuses_records_and_recovers_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, log) = VanishingFolder::open(dir.path()).await;
    assert!(log.is_healthy());

    folder.take_away();
    let err = log.record(statement("lost", 2)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unwritable(_)), "{err}");
    assert!(!log.is_healthy());
    assert!(
        log.record(statement("lost", 3)).await.is_err(),
        "still refused"
    );

    folder.give_back();
    log.record(statement("bert", 4)).await.unwrap();
    assert!(log.is_healthy(), "healthy again once a write succeeds");
    log.shutdown().await.unwrap();

    let report = check_dir(&folder.log_dir);
    assert_eq!(report.verdict, Verdict::Whole, "{report:?}");
    let all: String = folder.lines().concat();
    assert!(all.contains(r#""user":"anna""#) && all.contains(r#""user":"bert""#));
    assert!(
        !all.contains(r#""user":"lost""#),
        "refused records are not in the log"
    );
}

#[test]
fn opening_a_log_where_no_folder_can_be_made_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = open(&config(&file.join("log"))).expect_err("cannot open under a regular file");
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
}

#[tokio::test]
async fn records_reach_a_syslog_collector_over_udp() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.syslog = Some(format!("udp://{}", collector.local_addr().unwrap()));
    let log = open(&cfg).unwrap();
    let mut refused = statement("anna", 0);
    refused.outcome = Outcome::Refused {
        sqlstate: "42501".into(),
        message: Some("column ssn is not visible".into()),
    };
    log.record(refused).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut messages = Vec::new();
    while !messages
        .iter()
        .any(|m: &String| m.contains("\"user\":\"anna\""))
    {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), collector.recv(&mut buf))
            .await
            .expect("a datagram arrives")
            .unwrap();
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let message = messages.last().unwrap();
    assert!(
        message.starts_with("<108>1 "),
        "log audit facility, warning severity: {message}"
    );
    assert!(
        message.contains(" test maschera ") && message.contains(" statement [maschera@32473 seq="),
        "{message}"
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_writer_per_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&config(dir.path())).unwrap();
    let err = open(&config(dir.path())).expect_err("a second writer is refused");
    assert!(err.to_string().contains("in use"), "{err}");
    first.shutdown().await.unwrap();
    drop(first);
    let again = open(&config(dir.path())).expect("free again after shutdown");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn periodic_checkpoints_are_written_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_seconds = 1;
    let log = open(&cfg).unwrap();
    log.record(statement("anna", 1)).await.unwrap();
    let file = only_file(dir.path());
    let mut sealed = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&file)
            .unwrap()
            .contains(r#""reason":"periodic""#)
        {
            sealed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(sealed, "a periodic checkpoint seals the idle log");
    let report = check_dir(dir.path());
    assert!(
        matches!(
            report.verdict,
            Verdict::Unsealed {
                unsealed_records: 0,
                ..
            }
        ),
        "everything up to the periodic checkpoint is sealed: {report:?}"
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_follow_up_points_at_its_record_and_search_joins_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&config(dir.path())).unwrap();
    let access = |n| log.submit(unanswered("anna", n));
    let outcome = |rows, outcome| {
        let mut event = Event::new(EventKind::Outcome);
        event.user = Some("anna".into());
        (event.rows, event.outcome, event.duration_us) = (Some(rows), outcome, Some(7));
        event
    };
    let answered = access(1);
    let follow_up = log.submit_follow_up(outcome(3, Outcome::Ok), &answered);
    let failed = access(2);
    let error = Outcome::Error {
        sqlstate: "22012".into(),
    };
    let _ = log.submit_follow_up(outcome(0, error.clone()), &failed);
    // A statement whose outcome never came (a crash): its access record alone.
    let unanswered = access(3);
    let seq = answered.durable().await.unwrap();
    let failed_seq = failed.durable().await.unwrap();
    let unanswered_seq = unanswered.durable().await.unwrap();
    assert!(follow_up.durable().await.unwrap() > seq);
    log.shutdown().await.unwrap();
    assert_eq!(check_dir(dir.path()).verdict, Verdict::Whole);

    let (text, outcomes) = json_records(dir.path(), |r| r["event"] == "outcome");
    assert_eq!(outcomes.len(), 2, "{text}");
    assert_eq!(outcomes[0]["statement_seq"], seq);
    assert_eq!(outcomes[0]["rows"], 3);
    assert_eq!(outcomes[1]["statement_seq"], failed_seq);

    let mut entries = Vec::new();
    let filter = super::search::Filter::default();
    super::search::scan(&[dir.path().to_path_buf()], &filter, |e| entries.push(e)).unwrap();
    let joined: Vec<(u64, Option<u64>, &str)> = entries
        .iter()
        .map(|e| {
            let event = &e.record.event;
            (e.record.seq, event.rows, event.outcome.as_str())
        })
        .collect();
    assert_eq!(
        joined,
        vec![
            (seq, Some(3), "ok"),
            (failed_seq, Some(0), "error"),
            (unanswered_seq, None, "unknown")
        ],
        "one entry per statement, outcome records joined in"
    );
    assert!(entries[0].follow_up.is_some() && entries[2].follow_up.is_none());
    let errors = super::search::Filter {
        outcome: Some("error".into()),
        ..Default::default()
    };
    let mut found = 0;
    super::search::scan(&[dir.path().to_path_buf()], &errors, |_| found += 1).unwrap();
    assert_eq!(found, 1, "the outcome filter sees the joined outcome");
}

#[tokio::test]
async fn a_follow_up_of_a_record_that_failed_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, log) = VanishingFolder::open(dir.path()).await;
    folder.take_away();
    let lost = log.submit(statement("lost", 2));
    let lost_follow_up = log.submit_follow_up(Event::new(EventKind::Outcome), &lost);
    assert!(lost.durable().await.is_err());
    assert!(lost_follow_up.durable().await.is_err());
    folder.give_back();
    // The numbers of the failed records are given to later ones; no follow-up points at them.
    let kept = log.submit(statement("bert", 3));
    let late_follow_up = log.submit_follow_up(Event::new(EventKind::Outcome), &kept);
    let kept_seq = kept.durable().await.unwrap();
    late_follow_up.durable().await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(check_dir(&folder.log_dir).verdict, Verdict::Whole);
    let outcomes: Vec<serde_json::Value> = folder
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["statement_seq"], kept_seq);
}

/// A prepared event is written as the plain event with the same fields: after the envelope (`seq`
/// and `time`, which differ) the two lines are the same bytes up to the MAC, the log verifies whole,
/// and a sink gets the prepared record's fields and line.
#[tokio::test]
async fn prepared_records_are_written_as_their_plain_events() {
    use super::prepared::{PreparedEvent, What, Who};
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.instance = Some("proxy \"a\" \u{e8}".into());
    cfg.syslog = Some(format!("udp://{}", collector.local_addr().unwrap()));
    let log = open(&cfg).unwrap();
    let plain = statement("anna", 0);
    let mut session = plain.clone();
    session.session = Some("9".into());
    session.application_name = Some("crm-web".into());
    let who = Who::new(&session);
    let what = What::new(
        plain.statement_kind.clone(),
        plain.statement.clone(),
        plain.tables.clone(),
    );
    let mut access = PreparedEvent::new(EventKind::Statement, &who);
    access.what = Some(what.clone());
    access.outcome = Outcome::Refused {
        sqlstate: "42501".into(),
        message: Some("column \"ssn\" is not visible".into()),
    };
    let mut outcome = PreparedEvent::new(EventKind::Outcome, &Who::new(&session));
    outcome.rows = Some(4);
    outcome.duration_us = Some(250);
    outcome.detail = Some("a\tb".into());

    let plain_access = log.submit(access.to_event());
    let prepared_access = log.submit(access.clone());
    let plain_seq = log.submit_follow_up(outcome.to_event(), &plain_access);
    let prepared_seq = log.submit_follow_up(outcome.clone(), &prepared_access);
    let (first, second) = (
        plain_access.durable().await,
        prepared_access.durable().await,
    );
    assert_eq!(first.unwrap() + 1, second.unwrap());
    plain_seq.durable().await.unwrap();
    let prepared_seq = prepared_seq.durable().await.unwrap();
    log.shutdown().await.unwrap();

    let lines = files::read_lines(&only_file(dir.path())).unwrap().complete;
    let bodies: Vec<String> = lines[1..5]
        .iter()
        .map(|line| super::chain::unseal(line).expect("sealed").0)
        .collect();
    // Without the envelope, and without the number of the record an outcome follows.
    let after_envelope = |body: &str| {
        let rest = &body[body.find(",\"instance\":").unwrap()..];
        match rest.split_once("\"statement_seq\":") {
            Some((head, tail)) => format!("{head}{}", tail.trim_start_matches(char::is_numeric)),
            None => rest.to_owned(),
        }
    };
    for pair in bodies.chunks(2) {
        assert_eq!(after_envelope(&pair[0]), after_envelope(&pair[1]));
        let value = |body: &str| {
            let mut value: serde_json::Value = serde_json::from_str(body).unwrap();
            let object = value.as_object_mut().unwrap();
            object.remove("seq").unwrap();
            object.remove("time").unwrap();
            object.remove("statement_seq");
            value
        };
        assert_eq!(value(&pair[0]), value(&pair[1]));
    }
    assert!(
        bodies[1].contains("\"instance\":\"proxy \\\"a\\\" \u{e8}\""),
        "{}",
        bodies[1]
    );
    assert!(bodies[3].contains("\"statement_seq\":"), "{}", bodies[3]);
    assert_eq!(check_dir(dir.path()).verdict, Verdict::Whole);

    let mut buf = vec![0u8; 65536];
    let marker = format!("seq=\"{}\"", prepared_seq - 2);
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), collector.recv(&mut buf))
            .await
            .expect("a datagram arrives")
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains(&marker) {
            assert!(message.starts_with("<108>1 "), "a refusal: {message}");
            assert!(message.ends_with(&lines[2]), "{message}");
            break;
        }
    }
}

#[tokio::test]
async fn a_completion_goes_into_its_queued_record_or_else_into_a_follow_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = open(&config).unwrap();
    let access = |n| log.submit(unanswered("anna", n));
    let completion = |rows| super::Completion {
        outcome: Outcome::Ok,
        rows: Some(rows),
        duration_us: Some(9),
        detail: None,
    };
    let follow_up = |c: super::Completion| {
        let mut event = Event::new(EventKind::Outcome);
        event.user = Some("anna".into());
        c.apply(&mut event);
        event
    };
    let queued = access(1);
    log.complete(&queued, completion(4), follow_up);
    let queued_seq = queued.durable().await.unwrap();
    // Written already (a later record's wait committed the group): its completion becomes an
    // `outcome` record.
    let written = access(2);
    log.record(statement("bert", 3)).await.unwrap();
    log.complete(&written, completion(5), follow_up);
    let written_seq = written.durable().await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(check_dir(dir.path()).verdict, Verdict::Whole);

    let (text, records) = json_records(dir.path(), |r| {
        r["event"] != "checkpoint" && r["event"] != "file_start"
    });
    assert_eq!(records.len(), 4, "{text}");
    assert_eq!(records[0]["seq"], queued_seq);
    assert_eq!(records[0]["rows"], 4);
    assert_eq!(records[0]["outcome"]["result"], "ok");
    assert_eq!(records[0]["duration_us"], 9);
    assert_eq!(records[1]["seq"], written_seq);
    assert_eq!(records[1]["outcome"]["result"], "unknown");
    assert_eq!(records[3]["event"], "outcome");
    assert_eq!(records[3]["statement_seq"], written_seq);
    assert_eq!(records[3]["rows"], 5);
}

#[tokio::test]
async fn the_open_file_reserves_space_ahead_that_readers_skip_and_closing_cuts_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&config(dir.path())).unwrap();
    for n in 0..3 {
        log.record(statement("anna", n)).await.unwrap();
    }
    let path = only_file(dir.path());
    let live = std::fs::read(&path).unwrap();
    assert!(
        live.len() >= 1 << 20,
        "reserved ahead: {} bytes",
        live.len()
    );
    assert_eq!(live.last(), Some(&0));
    // Verifying the live file (as after a crash): its records are whole, only unsealed.
    let report = check(std::slice::from_ref(&path));
    assert_eq!(report.records, 4, "file start and three statements");
    log.shutdown().await.unwrap();
    let closed = std::fs::read(&path).unwrap();
    assert_eq!(closed.last(), Some(&b'\n'), "cut off at the last record");
    assert!(!closed.contains(&0));
    assert_eq!(check_dir(dir.path()).verdict, Verdict::Whole);
}

/// A commit that panics (a bug) must not leave sessions waiting for ever or let later records into a
/// chain in an unknown state: the record fails, the log closes and reports itself unhealthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_panics_closes_the_log_instead_of_hanging() {
    for durability in [Durability::Sync, Durability::Batch] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.durability = durability;
        let log = open(&cfg).unwrap();
        log.record(statement("anna", 1)).await.unwrap();
        log.panic_in_next_commit();
        // With `batch` the task commits (and panics) itself; with `sync` the writer thread does.
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.record(statement("bert", 2)).await }
        });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("an answer, not a hang");
        match answer {
            Ok(result) => assert!(result.is_err(), "{durability:?}: {result:?}"),
            Err(join) => assert!(join.is_panic(), "{durability:?}"),
        }
        assert!(!log.is_healthy(), "{durability:?}");
        assert!(matches!(
            log.record(statement("carl", 3)).await,
            Err(AuditError::Closed)
        ));
        assert!(log.shutdown().await.is_err(), "{durability:?}");
        // What was written before the failure is still a readable, chained log.
        let report = check_dir(dir.path());
        assert!(report.records >= 2, "{durability:?}: {}", report.records);
    }
}
