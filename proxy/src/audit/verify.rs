//! Checks that a set of log files is whole: every MAC recomputed from the chain secret, every checkpoint
//! signature checked with the public key, sequence numbers contiguous, files linked in order, and the
//! last file sealed by a shutdown checkpoint. Reports the first broken record.
//! Not for: searching (see `search`) or writing.
//!
//! Verdicts (and the exit codes of `maschera audit verify`):
//! - whole (0): every record checks and the last file ends with a shutdown checkpoint;
//! - broken (1): a record was modified, deleted, inserted or reordered, a file is missing, renamed or
//!   swapped, or a checkpoint is forged; the first such record is named (file, line, seq, why);
//! - unsealed (2): everything checks, but records follow the last checkpoint of the last file (the proxy
//!   is running, or crashed, or records after that checkpoint were cut off: nothing can tell which).

use crate::audit::AuditError;
use crate::audit::chain::{self, ChainKey, GENESIS, Mac32};
use crate::audit::files;
use crate::audit::keys::ChainSecret;
use crate::audit::record::{Checkpoint, CheckpointReason, EventKind, FileLink};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Most key steps an epoch may span before one file of a partial set (guards against absurd seqs).
const MAX_STEPS: u64 = 1 << 32;

/// Where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.why)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Whole,
    /// Records after the last checkpoint of the last file; `torn` when a partial last line follows them.
    Unsealed {
        last_checkpoint_seq: Option<u64>,
        unsealed_records: u64,
        torn: bool,
    },
    Broken(Break),
}

/// The result of a verification.
#[derive(Debug, Clone)]
pub struct Report {
    pub files: usize,
    /// Records checked (including checkpoints and file starts).
    pub records: u64,
    pub last_seq: Option<u64>,
    /// Facts worth knowing that do not break the chain (e.g. an unclean stop followed by a restart).
    pub notes: Vec<String>,
    pub verdict: Verdict,
}

impl Report {
    /// 0 whole, 1 broken, 2 unsealed tail.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Whole => 0,
            Verdict::Broken(_) => 1,
            Verdict::Unsealed { .. } => 2,
        }
    }
}

/// The fields verification reads from each record.
#[derive(Deserialize)]
struct Header {
    seq: u64,
    #[serde(default)]
    instance: String,
    event: EventKind,
    #[serde(default)]
    link: Option<FileLink>,
    #[serde(default)]
    checkpoint: Option<Checkpoint>,
}

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Checkpoint(CheckpointReason),
    Unsealed,
}

struct PreviousFile {
    name: String,
    last_mac: Mac32,
    ending: Ending,
}

struct Verifier<'a> {
    secret: &'a ChainSecret,
    public: &'a VerifyingKey,
    partial: bool,
    key: Option<ChainKey>,
    epoch_nonce: String,
    prev_mac: Mac32,
    expected_seq: Option<u64>,
    previous: Option<PreviousFile>,
    records: u64,
    since_checkpoint: u64,
    last_checkpoint_seq: Option<u64>,
    notes: Vec<String>,
}

/// Verifies files (folders are expanded to their log files) in chain order. With `partial`, the first
/// file may link an earlier file that is not given (e.g. removed by retention).
pub fn verify(
    paths: &[PathBuf],
    secret: &ChainSecret,
    public: &VerifyingKey,
    partial: bool,
) -> Result<Report, AuditError> {
    let files = files::expand(paths)?;
    if files.is_empty() {
        return Err(AuditError::Config("no log files to verify".into()));
    }
    let mut v = Verifier {
        secret,
        public,
        partial,
        key: None,
        epoch_nonce: String::new(),
        prev_mac: GENESIS,
        expected_seq: None,
        previous: None,
        records: 0,
        since_checkpoint: 0,
        last_checkpoint_seq: None,
        notes: Vec::new(),
    };
    let count = files.len();
    let mut torn_at_end = false;
    for (index, path) in files.iter().enumerate() {
        let name = files::base_name(path);
        let lines = files::read_lines(path)?;
        let last_file = index + 1 == count;
        let mut ending = Ending::Unsealed;
        if lines.complete.is_empty() && last_file && index > 0 && lines.torn.is_none() {
            // What a crash leaves between creating a file and writing its first record.
            v.notes.push(format!(
                "{name} is empty: the proxy stopped while starting it (the next start sets it aside)"
            ));
            break;
        }
        if lines.complete.is_empty() {
            return Ok(v.report(
                count,
                Verdict::Broken(brk(&name, 1, None, "the file holds no complete record")),
            ));
        }
        for (i, line) in lines.complete.iter().enumerate() {
            match v.check_line(&name, i + 1, line, i as u64) {
                Ok(kind_ending) => ending = kind_ending,
                Err(b) => return Ok(v.report(count, Verdict::Broken(b))),
            }
        }
        if lines.torn.is_some() {
            if last_file {
                torn_at_end = true;
            } else {
                v.notes.push(format!(
                    "{name} ends with a partial line (the proxy stopped while writing it)"
                ));
            }
        }
        v.previous = Some(PreviousFile {
            name,
            last_mac: v.prev_mac,
            ending,
        });
    }
    let last = v.previous.as_ref().map(|p| (p.name.clone(), p.ending));
    if let Some((name, Ending::Checkpoint(CheckpointReason::Rotation))) = &last {
        // A crash between closing a file and starting the next one leaves this; so does removing
        // the newest files, which a truncation after a checkpoint already looks like (unsealed).
        v.notes.push(format!(
            "{name} ends with a rotation checkpoint and no file follows it: the proxy stopped \
             before it started the next file, or the files after it were removed"
        ));
    }
    let verdict = match last {
        Some((_, Ending::Checkpoint(CheckpointReason::Shutdown))) if !torn_at_end => Verdict::Whole,
        _ => Verdict::Unsealed {
            last_checkpoint_seq: v.last_checkpoint_seq,
            unsealed_records: v.since_checkpoint,
            torn: torn_at_end,
        },
    };
    Ok(v.report(count, verdict))
}

fn brk(file: &str, line: usize, seq: Option<u64>, why: impl Into<String>) -> Break {
    Break {
        file: file.to_string(),
        line,
        seq,
        why: why.into(),
    }
}

impl Verifier<'_> {
    fn report(&self, files: usize, verdict: Verdict) -> Report {
        Report {
            files,
            records: self.records,
            last_seq: self.expected_seq.map(|s| s - 1),
            notes: self.notes.clone(),
            verdict,
        }
    }

    /// Checks one line; returns how the file ends if this is its last line.
    fn check_line(
        &mut self,
        file: &str,
        line_no: usize,
        line: &str,
        in_file: u64,
    ) -> Result<Ending, Break> {
        let (body, mac) = chain::unseal(line).ok_or_else(|| {
            brk(
                file,
                line_no,
                None,
                "not a sealed record (no MAC at its end)",
            )
        })?;
        let header: Header = serde_json::from_str(&body).map_err(|_| {
            brk(
                file,
                line_no,
                None,
                "not a record (unreadable JSON or missing fields)",
            )
        })?;
        let seq = header.seq;
        let fail = |why: String| brk(file, line_no, Some(seq), why);
        if in_file == 0 {
            self.start_file(file, &header).map_err(fail)?;
        } else if header.event == EventKind::FileStart || header.link.is_some() {
            return Err(fail(
                "a file_start record in the middle of a file (inserted or files merged)".into(),
            ));
        }
        if let Some(expected) = self.expected_seq {
            if seq > expected {
                return Err(fail(format!(
                    "expected seq {expected}: records {expected}..{} are missing (deleted)",
                    seq - 1
                )));
            }
            if seq < expected {
                return Err(fail(format!(
                    "expected seq {expected}: record inserted, duplicated or reordered"
                )));
            }
        }
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| fail("no key epoch".into()))?;
        if key.mac(&self.prev_mac, body.as_bytes()) != mac {
            return Err(fail(
                "MAC does not match: the record was modified, or inserted or moved here".into(),
            ));
        }
        let mut ending = Ending::Unsealed;
        if header.event == EventKind::Checkpoint {
            let reason = self
                .check_checkpoint(file, in_file, &header)
                .map_err(fail)?;
            ending = Ending::Checkpoint(reason);
            self.last_checkpoint_seq = Some(seq);
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        self.prev_mac = mac;
        if let Some(key) = self.key.as_mut() {
            key.advance();
        }
        self.expected_seq = Some(seq + 1);
        self.records += 1;
        Ok(ending)
    }

    /// Checks a file's first record: its link to the previous file and its key epoch.
    fn start_file(&mut self, file: &str, header: &Header) -> Result<(), String> {
        let link =
            match (&header.link, header.event) {
                (Some(link), EventKind::FileStart) => link,
                _ => return Err(
                    "the file does not start with its file_start record (its beginning was cut)"
                        .into(),
                ),
            };
        let prev_mac = match &link.prev_mac {
            Some(hex_mac) => {
                let mut mac = [0u8; 32];
                hex::decode_to_slice(hex_mac, &mut mac)
                    .map_err(|_| "malformed prev_mac".to_string())?;
                Some(mac)
            }
            None => None,
        };
        let new_epoch = link.epoch_seq == header.seq;
        match (&self.previous, &link.prev_file) {
            (None, None) => {
                if header.seq != 1 {
                    return Err("the chain's first file does not start at seq 1".into());
                }
                self.prev_mac = GENESIS;
                self.expected_seq = Some(1);
            }
            (None, Some(prev_name)) => {
                if !self.partial {
                    return Err(format!(
                        "links the previous file {prev_name}, which was not given (deleted? pass it, or use --partial)"
                    ));
                }
                self.prev_mac = prev_mac.ok_or("a link without prev_mac")?;
                self.expected_seq = Some(header.seq);
                self.notes.push(format!(
                    "partial set: the chain before {file} ({prev_name}) was not checked"
                ));
            }
            (Some(previous), None) => {
                return Err(format!(
                    "starts a new chain, but follows {}: files mixed from two logs?",
                    previous.name
                ));
            }
            (Some(previous), Some(prev_name)) => {
                if *prev_name != previous.name {
                    return Err(format!(
                        "links the previous file {prev_name}, but the file before it is {} (a file is missing, renamed or out of order)",
                        previous.name
                    ));
                }
                if prev_mac != Some(previous.last_mac) {
                    return Err(format!(
                        "does not link the last record of {}: records at the end of that file were deleted or added",
                        previous.name
                    ));
                }
                match (new_epoch, previous.ending) {
                    (true, Ending::Checkpoint(CheckpointReason::Shutdown)) => {}
                    (true, _) => self.notes.push(format!(
                        "{} was not closed by a shutdown checkpoint (the proxy stopped uncleanly); its records up to the restart are linked by {file}",
                        previous.name
                    )),
                    (false, Ending::Checkpoint(CheckpointReason::Rotation)) => {}
                    (false, Ending::Checkpoint(CheckpointReason::Shutdown)) => {
                        return Err(format!("continues the key epoch of {}, which was shut down", previous.name));
                    }
                    (false, _) => self.notes.push(format!(
                        "{} was closed without a rotation checkpoint (after a write error); {file} continues its chain",
                        previous.name
                    )),
                }
            }
        }
        if new_epoch || self.key.is_none() || self.epoch_nonce != link.epoch_nonce {
            if link.epoch_seq > header.seq || header.seq - link.epoch_seq > MAX_STEPS {
                return Err("implausible key epoch start".into());
            }
            if !new_epoch && self.key.is_some() {
                return Err("changes key epoch without a restart".into());
            }
            let nonce =
                hex::decode(&link.epoch_nonce).map_err(|_| "malformed epoch nonce".to_string())?;
            let mut key = ChainKey::epoch(self.secret.bytes(), &nonce);
            for _ in link.epoch_seq..header.seq {
                key.advance();
            }
            self.key = Some(key);
            self.epoch_nonce = link.epoch_nonce.clone();
        }
        Ok(())
    }

    fn check_checkpoint(
        &self,
        file: &str,
        in_file: u64,
        header: &Header,
    ) -> Result<CheckpointReason, String> {
        let cp = header
            .checkpoint
            .as_ref()
            .ok_or("a checkpoint record without its checkpoint fields")?;
        if cp.head != hex::encode(self.prev_mac) {
            return Err("the checkpoint's head is not the previous record's MAC".into());
        }
        if cp.file != file {
            return Err(format!(
                "the checkpoint belongs to file {} (file renamed or swapped)",
                cp.file
            ));
        }
        if cp.records_in_file != in_file {
            return Err(format!(
                "the checkpoint counts {} records before it in the file, there are {in_file}",
                cp.records_in_file
            ));
        }
        let message = chain::checkpoint_message(
            header.seq,
            &self.prev_mac,
            &cp.file,
            cp.records_in_file,
            &header.instance,
        );
        if !chain::signature_valid(self.public, &message, &cp.signature) {
            return Err("the checkpoint's signature does not verify with the public key".into());
        }
        Ok(cp.reason)
    }
}
