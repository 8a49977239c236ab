//! The access log's writer: appends a group of sealed records to the current file (one write and, with
//! `sync`, one fsync, then all their answers), rotates files by size and age keeping the chain, writes
//! signed checkpoints, and reports whether it can still write. Whoever commits a group uses it (see
//! `group_commit`: the session that waits, or the log's writer thread).
//! Not for: deciding what to record (the session does) or reading the log (see `verify`, `search`).
//!
//! Durability: with `sync`, `AuditLog::record` returns once its record is on stable storage; with `batch`,
//! once it is written to the file, which is fsynced every `batch_interval_ms`. When a write or fsync fails,
//! the records of that group get an error (nothing is acknowledged that is not written), the file is cut
//! back to its last durable length, and `is_healthy()` turns false until a write succeeds again.

#![allow(
    unsafe_code,
    reason = "libc::fallocate and libc::flock on the access log's files"
)]

use crate::audit::AuditError;
use crate::audit::chain::{self, ChainKey, GENESIS, Mac32};
use crate::audit::clock::Clock;
use crate::audit::config::{AuditConfig, Durability};
use crate::audit::files;
use crate::audit::group_commit::{Queued, RecordState};
use crate::audit::keys::ChainSecret;
use crate::audit::prepared::{self, Entry};
use crate::audit::record::{Checkpoint, CheckpointReason, Event, EventKind, FileLink, Record};
use crate::audit::sinks::{Sealed, SinkSet};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How much space the current file reserves ahead of its records at a time (see [`OpenFile::reserve`]).
const PREALLOCATE: u64 = 1 << 20;

/// Room the current file must be able to grow by before a log that failed counts as healthy again:
/// a small record that fits in the space a failed write left does not mean the disk has room.
const HEADROOM: i64 = 64 * 1024;

/// The chain's position: what the next record chains to, and with which key.
struct ChainState {
    key: ChainKey,
    prev_mac: Mac32,
    next_seq: u64,
}

impl ChainState {
    fn snapshot(&self) -> ChainState {
        ChainState {
            key: self.key.snapshot(),
            prev_mac: self.prev_mac,
            next_seq: self.next_seq,
        }
    }
}

/// The file being appended to.
struct OpenFile {
    file: File,
    name: String,
    /// Length up to which the file is known good (written; and fsynced with `sync`).
    len: u64,
    /// The file's size on disk: `len` plus the space reserved ahead (see [`PREALLOCATE`]).
    allocated: u64,
    /// After a reservation failed, the length before which none is tried again.
    retry_reserve_at: u64,
    opened: Instant,
    records: u64,
}

impl OpenFile {
    /// Reserves space ahead of `len` when the next `need` bytes do not fit: the file's size then
    /// covers the next writes, so that fsyncing them writes no inode (here about a quarter less CPU
    /// per fsync, and a third less time). The space reads as NUL bytes, which readers skip (see
    /// `files::read_lines`); closing the file cuts it off. Where it cannot be reserved (disk full,
    /// file system without `fallocate`, size limit) writes simply extend the file.
    fn reserve(&mut self, need: u64) {
        use std::os::fd::AsRawFd;
        if self.len + need <= self.allocated || self.len < self.retry_reserve_at {
            return;
        }
        let (Ok(offset), Ok(length)) = (
            i64::try_from(self.allocated.max(self.len)),
            i64::try_from(PREALLOCATE.max(need)),
        ) else {
            return;
        };
        // SAFETY: fallocate on a descriptor we own; mode 0 grows the file over zeroed space.
        if unsafe { libc::fallocate(self.file.as_raw_fd(), 0, offset, length) } == 0 {
            self.allocated = (offset + length) as u64;
        } else {
            self.retry_reserve_at = self.len + PREALLOCATE;
        }
    }

    /// Cuts the reserved space off and makes the file's content and length durable (`synced`: its
    /// content already is).
    fn close(&self, synced: bool) -> std::io::Result<()> {
        let reserved = self.allocated > self.len;
        if reserved {
            self.file.set_len(self.len)?;
        }
        if reserved || !synced {
            self.file.sync_all()?;
        }
        Ok(())
    }
}

/// A record's sequence number and where it is answered.
type Answer = (u64, Arc<RecordState>);

pub(super) struct Writer {
    dir: PathBuf,
    /// Held (flock) for the writer's life: one writer per folder.
    _lock: File,
    instance: String,
    /// `instance` as a JSON string.
    instance_json: String,
    clock: Clock,
    durability: Durability,
    batch_interval: Duration,
    rotate_bytes: u64,
    rotate_age: Duration,
    checkpoint_every: Option<Duration>,
    checkpoint_records: u64,
    signing: SigningKey,
    chain: ChainState,
    epoch_nonce: String,
    epoch_seq: u64,
    /// The file being written, `None` after a rotation whose new file could not be created yet.
    current: Option<OpenFile>,
    /// The last file that was closed (or found at start), to link from the next one.
    prev_file: Option<String>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced_since: Option<Instant>,
    /// The transaction being written holds only follow-ups: with `sync`, leave its fsync to the next
    /// group (or the batch timer).
    defer_sync: bool,
    healthy: Arc<AtomicBool>,
    sinks: SinkSet,
    /// Lines built but not yet written.
    pending: String,
    /// Records of `pending`, for the sinks once durable.
    pending_records: Vec<Sealed>,
    /// Set by a test to make the next commit panic, to see the log fail closed.
    #[cfg(test)]
    pub(super) panic_in_next_commit: bool,
    /// The JSON of the record being sealed (kept to reuse its allocation).
    body: Vec<u8>,
}

/// Where the chain stood at the end of the folder's newest file.
struct Tail {
    file: String,
    last_seq: u64,
    last_mac: Mac32,
}

fn find_tail(dir: &Path) -> Result<Option<Tail>, AuditError> {
    for path in files::list_dir(dir)?.iter().rev() {
        let lines = files::read_lines(path)?;
        let Some(last) = lines.complete.last() else {
            // Created by a crash before its first record was durable: keep it aside, as evidence.
            let aside = path.with_extension("jsonl.empty");
            std::fs::rename(path, &aside).map_err(|e| AuditError::Io {
                path: path.clone(),
                source: e,
            })?;
            tracing::warn!(file = %aside.display(), "audit log file without a complete record set aside");
            continue;
        };
        let unreadable = || {
            AuditError::Config(format!(
                "the last record of {} is unreadable; run `maschera audit verify` and move the file aside",
                path.display()
            ))
        };
        let (body, mac) = chain::unseal(last).ok_or_else(unreadable)?;
        #[derive(serde::Deserialize)]
        struct Seq {
            seq: u64,
        }
        let seq: Seq = serde_json::from_str(&body).map_err(|_| unreadable())?;
        return Ok(Some(Tail {
            file: files::base_name(path),
            last_seq: seq.seq,
            last_mac: mac,
        }));
    }
    Ok(None)
}

/// Takes the folder's lock file so that no second process (or log) writes the same chain.
fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::Io {
            path: path.clone(),
            source: e,
        })?;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AuditError::Config(format!(
            "{} is in use by another access log writer",
            dir.display()
        )));
    }
    Ok(file)
}

impl Writer {
    /// Takes the folder's lock, finds where its chain stands and starts a new file linked to it.
    pub(super) fn open(
        config: &AuditConfig,
        secret: &ChainSecret,
        signing: SigningKey,
        sinks: SinkSet,
        healthy: Arc<AtomicBool>,
    ) -> Result<Writer, AuditError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| AuditError::Io {
            path: config.dir.clone(),
            source: e,
        })?;
        let lock = lock_dir(&config.dir)?;
        let tail = find_tail(&config.dir)?;
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let next_seq = tail.as_ref().map_or(1, |t| t.last_seq + 1);
        let seconds = |s: u64| Duration::from_secs(s.max(1));
        let instance = config.instance_name();
        let mut writer = Writer {
            dir: config.dir.clone(),
            _lock: lock,
            instance_json: serde_json::to_string(&instance).unwrap_or_else(|_| "\"\"".into()),
            instance,
            clock: Clock::default(),
            durability: config.durability,
            batch_interval: config.batch_interval(),
            rotate_bytes: config.rotate_bytes.max(1),
            rotate_age: seconds(config.rotate_seconds),
            checkpoint_every: (config.checkpoint_seconds > 0)
                .then(|| seconds(config.checkpoint_seconds)),
            checkpoint_records: config.checkpoint_records,
            signing,
            chain: ChainState {
                key: ChainKey::epoch(secret.bytes(), &nonce),
                prev_mac: tail.as_ref().map_or(GENESIS, |t| t.last_mac),
                next_seq,
            },
            epoch_nonce: hex::encode(nonce),
            epoch_seq: next_seq,
            current: None,
            prev_file: tail.map(|t| t.file),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            unsynced_since: None,
            defer_sync: false,
            healthy,
            sinks,
            pending: String::new(),
            pending_records: Vec::new(),
            body: Vec::new(),
            #[cfg(test)]
            panic_in_next_commit: false,
        };
        writer
            .transaction(|w| w.open_file())
            .map_err(|e| AuditError::Io {
                path: config.dir.clone(),
                source: e,
            })?;
        Ok(writer)
    }

    /// When the writer must act without a record: periodic checkpoint, batch fsync.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let checkpoint = self
            .checkpoint_every
            .filter(|_| self.since_checkpoint > 0)
            .map(|d| self.last_checkpoint + d);
        let sync = self.unsynced_since.map(|t| t + self.batch_interval);
        checkpoint.into_iter().chain(sync).min()
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        if self
            .unsynced_since
            .is_some_and(|t| now >= t + self.batch_interval)
        {
            let result = self.current.as_ref().map_or(Ok(()), |f| f.file.sync_data());
            // On failure, retry one interval later (not in a tight loop).
            self.unsynced_since = result.is_err().then_some(now);
            let healthy = result.is_ok() && self.still_healthy();
            self.set_health(healthy, "fsync", result.err());
        }
        let periodic = self
            .checkpoint_every
            .is_some_and(|d| now >= self.last_checkpoint + d);
        if periodic && self.since_checkpoint > 0 {
            let result = self.prepare_file().and_then(|()| {
                self.transaction(|w| w.append_checkpoint(CheckpointReason::Periodic))
            });
            if result.is_err() {
                // Retry one period later (not in a tight loop); records may restore health sooner.
                self.last_checkpoint = now;
            }
            self.finish(result, Vec::new());
        }
    }

    fn set_health(&self, ok: bool, what: &str, error: Option<std::io::Error>) {
        let was = self.healthy.swap(ok, Ordering::SeqCst);
        match (was, ok, error) {
            (_, false, Some(e)) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "audit log {what} failed")
            }
            (false, true, _) => {
                tracing::info!(dir = %self.dir.display(), "audit log writable again")
            }
            _ => {}
        }
    }

    /// Appends a group of events with one write (and, with `sync`, one fsync unless the group holds
    /// only follow-ups, which the next fsync covers), then answers each.
    pub(super) fn commit(&mut self, group: Vec<Queued>) {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_in_next_commit) {
            panic!("a commit panics (test)");
        }
        if let Err(e) = self.prepare_file() {
            let answers = group.into_iter().map(|q| (0, q.state)).collect();
            return self.finish(Err(e), answers);
        }
        let mut answers = Vec::with_capacity(group.len());
        let awaited = group.iter().any(|q| q.follows.is_none());
        let result = self.transaction(|w| {
            for queued in group {
                let mut event = queued.event;
                queued.state.take(&mut event);
                if let Some(follows) = &queued.follows {
                    match follows.seq.load(Ordering::SeqCst) {
                        0 => {
                            let why = "the record it follows is not in the log".to_owned();
                            queued.state.answer(Err(AuditError::Unwritable(why)));
                            continue;
                        }
                        seq => event.set_statement_seq(seq),
                    }
                }
                let seq = w.append(event, None, None);
                queued.state.seq.store(seq, Ordering::SeqCst);
                answers.push((seq, queued.state));
            }
            w.defer_sync = !awaited;
            if w.checkpoint_records > 0 && w.since_checkpoint >= w.checkpoint_records {
                w.append_checkpoint(CheckpointReason::Periodic)?;
            }
            Ok(())
        });
        self.finish(result, answers);
    }

    /// Makes sure a file is open for the next records: rotates when the current one is due (a signed
    /// rotation checkpoint closes it), and creates the next file when none is open.
    fn prepare_file(&mut self) -> std::io::Result<()> {
        let due = self.current.as_ref().is_some_and(|f| {
            f.records > 1 && (f.len >= self.rotate_bytes || f.opened.elapsed() >= self.rotate_age)
        });
        if due {
            self.transaction(|w| w.append_checkpoint(CheckpointReason::Rotation))?;
            if let Some(closing) = self.current.take() {
                if let Err(e) = closing.close(self.unsynced_since.is_none()) {
                    self.current = Some(closing);
                    return Err(e);
                }
                self.unsynced_since = None;
                self.prev_file = Some(closing.name);
            }
        }
        if self.current.is_none() {
            self.transaction(|w| w.open_file())?;
        }
        Ok(())
    }

    fn finish(&mut self, result: std::io::Result<()>, answers: Vec<Answer>) {
        match result {
            Ok(()) => {
                let healthy = self.still_healthy();
                self.set_health(healthy, "write", None);
                for (seq, state) in answers {
                    state.answer(Ok(seq));
                }
                self.sinks.send(std::mem::take(&mut self.pending_records));
            }
            Err(e) => {
                let message = e.to_string();
                self.set_health(false, "write", Some(e));
                for (_, state) in answers {
                    // Cut back out of the file: its follow-ups must not point at its number.
                    state.seq.store(0, Ordering::SeqCst);
                    state.answer(Err(AuditError::Unwritable(message.clone())));
                }
            }
        }
    }

    /// After a successful write: healthy, or recovered once the file has room again.
    fn still_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst) || self.has_headroom()
    }

    /// Whether the current file can grow by [`HEADROOM`] (space reserved past its end, its length
    /// unchanged; file systems without `fallocate` are taken at their word).
    fn has_headroom(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(current) = &self.current else {
            return false;
        };
        let end = i64::try_from(current.len).unwrap_or(i64::MAX);
        // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves the file's length as it is.
        let reserved = unsafe {
            libc::fallocate(
                current.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                end,
                HEADROOM,
            )
        };
        reserved == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP)
    }

    /// Runs `body` (which appends lines to `pending`), then writes them; on any error the chain and the
    /// file go back to where they were, so that the log holds no record that was not acknowledged.
    fn transaction(
        &mut self,
        body: impl FnOnce(&mut Writer) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let chain = self.chain.snapshot();
        let file_state = self
            .current
            .as_ref()
            .map(|f| (f.name.clone(), f.len, f.records));
        let since_checkpoint = self.since_checkpoint;
        let result = body(self).and_then(|()| self.write_pending());
        self.defer_sync = false;
        if result.is_err() {
            self.pending.clear();
            self.pending_records.clear();
            self.chain = chain;
            self.since_checkpoint = since_checkpoint;
            self.cut_back(file_state);
        }
        result
    }

    /// Undoes a failed write: cuts the current file back to its good length, or drops a file created
    /// during the failed transaction.
    fn cut_back(&mut self, before: Option<(String, u64, u64)>) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        match before {
            Some((name, len, records)) if name == current.name => {
                current.records = records;
                if let Err(e) = current.file.set_len(len) {
                    tracing::error!(file = %current.name, error = %e, "cannot cut a failed write back; starting a new file");
                    let name = current.name.clone();
                    self.current = None;
                    self.prev_file = Some(name);
                } else {
                    current.len = len;
                    current.allocated = len;
                }
            }
            _ => {
                // The file was created in this transaction: remove it so the next attempt can recreate it.
                let name = current.name.clone();
                self.current = None;
                let _ = std::fs::remove_file(self.dir.join(&name));
            }
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let current = self
            .current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open log file"))?;
        current.reserve(self.pending.len() as u64);
        current
            .file
            .write_all_at(self.pending.as_bytes(), current.len)?;
        match self.durability {
            Durability::Sync if !self.defer_sync => {
                current.file.sync_data()?;
                self.unsynced_since = None;
            }
            _ => {
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
        }
        current.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Builds one sealed line into `pending`; returns its sequence number.
    fn append(
        &mut self,
        event: impl Into<Entry>,
        link: Option<FileLink>,
        checkpoint: Option<Checkpoint>,
    ) -> u64 {
        let seq = self.chain.next_seq;
        let time = self.clock.now();
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        // The record's fields, for the sinks (a prepared event's only when a sink wants them).
        let record = match event.into() {
            Entry::Plain(event) => {
                let record = Record {
                    seq,
                    time: time.to_owned(),
                    instance: self.instance.clone(),
                    event: *event,
                    link,
                    checkpoint,
                };
                // Records hold only strings, numbers and lists: serializing them cannot fail.
                if serde_json::to_writer(&mut body, &record).is_err() {
                    body.clear();
                    body.extend_from_slice(format!("{{\"seq\":{seq}}}").as_bytes());
                }
                Some(record)
            }
            // What serde writes for its `Record` (envelope, then the event's members), its parts
            // rendered already; it never has a link or a checkpoint.
            Entry::Prepared(event) => {
                prepared::member(&mut body, br#"{"seq":"#, seq);
                body.extend_from_slice(br#","time":""#);
                body.extend_from_slice(time.as_bytes());
                body.extend_from_slice(br#"","instance":"#);
                body.extend_from_slice(self.instance_json.as_bytes());
                body.push(b',');
                event.write_members(&mut body);
                body.push(b'}');
                self.sinks.is_active().then(|| Record {
                    seq,
                    time: time.to_owned(),
                    instance: self.instance.clone(),
                    event: event.to_event(),
                    link,
                    checkpoint,
                })
            }
        };
        // Both paths write UTF-8 only.
        let body_text = std::str::from_utf8(&body).unwrap_or("{}");
        let mac = self
            .chain
            .key
            .mac(&self.chain.prev_mac, body_text.as_bytes());
        self.chain.key.advance();
        self.chain.prev_mac = mac;
        self.chain.next_seq += 1;
        self.since_checkpoint += 1;
        if let Some(current) = self.current.as_mut() {
            current.records += 1;
        }
        let start = self.pending.len();
        chain::seal_into(&mut self.pending, body_text, &mac);
        if self.sinks.is_active()
            && let Some(record) = record
        {
            let line = self.pending[start..].to_owned();
            self.pending_records.push(Sealed { record, line });
        }
        self.pending.push('\n');
        self.body = body;
        seq
    }

    fn append_checkpoint(&mut self, reason: CheckpointReason) -> std::io::Result<()> {
        let current = self
            .current
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no open log file"))?;
        let seq = self.chain.next_seq;
        let message = chain::checkpoint_message(
            seq,
            &self.chain.prev_mac,
            &current.name,
            current.records,
            &self.instance,
        );
        let checkpoint = Checkpoint {
            reason,
            head: hex::encode(self.chain.prev_mac),
            file: current.name.clone(),
            records_in_file: current.records,
            signature: chain::sign(&self.signing, &message),
        };
        self.append(Event::new(EventKind::Checkpoint), None, Some(checkpoint));
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Creates the next file and makes its first record (the link to the previous file) durable.
    fn open_file(&mut self) -> std::io::Result<()> {
        let name = files::file_name(self.chain.next_seq);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(&name))?;
        self.current = Some(OpenFile {
            file,
            name,
            len: 0,
            allocated: 0,
            retry_reserve_at: 0,
            opened: Instant::now(),
            records: 0,
        });
        let link = FileLink {
            prev_file: self.prev_file.clone(),
            prev_mac: self
                .prev_file
                .as_ref()
                .map(|_| hex::encode(self.chain.prev_mac)),
            epoch_nonce: self.epoch_nonce.clone(),
            epoch_seq: self.epoch_seq,
        };
        self.append(Event::new(EventKind::FileStart), Some(link), None);
        self.write_pending()?;
        if let Some(current) = &self.current {
            current.file.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()
    }

    pub(super) fn seal_for_shutdown(&mut self) -> Result<(), AuditError> {
        // No rotation here: the shutdown checkpoint closes the current file.
        let result = match self.current {
            None => self.transaction(|w| w.open_file()),
            Some(_) => Ok(()),
        };
        let result = result
            .and_then(|()| self.transaction(|w| w.append_checkpoint(CheckpointReason::Shutdown)));
        let result = result.and_then(|()| self.current.as_ref().map_or(Ok(()), |f| f.close(false)));
        self.finish_shutdown(result)
    }

    fn finish_shutdown(&mut self, result: std::io::Result<()>) -> Result<(), AuditError> {
        let ok = result.is_ok();
        let message = result.as_ref().err().map(|e| e.to_string());
        self.set_health(ok, "shutdown checkpoint", result.err());
        self.sinks.send(std::mem::take(&mut self.pending_records));
        self.sinks.close();
        match message {
            None => Ok(()),
            Some(m) => Err(AuditError::Unwritable(m)),
        }
    }
}
