//! The access log's handle and its group commit: sessions queue records without waking anyone, and
//! a group (every queued record: one write and, with `sync`, one fsync) is committed only when a
//! session waits for one of its records, or when records have waited `batch_interval_ms`.
//! Not for: building lines, files and the chain (see `writer`), or deciding what to record (the session).
//!
//! Who commits: with `sync`, the log's writer thread, woken by the first session that waits (one
//! wake-up per group; the fsync must not stall the other sessions of that session's worker). With
//! `batch` a group is only a write, so the waiting session writes it itself: no thread hand-off at all.
//! The writer thread also runs the timers (the `batch` fsync, periodic checkpoints, records nobody
//! waits for) and seals the log when it closes.
//!
//! Sessions whose records went into a group before their answers came find them durable when they
//! do, at no cost.

use crate::audit::AuditError;
use crate::audit::config::{AuditConfig, Durability};
use crate::audit::keys::{self, ChainSecret};
use crate::audit::prepared::Entry;
use crate::audit::record::{Event, Outcome};
use crate::audit::sinks::SinkSet;
use crate::audit::writer::Writer;
use ed25519_dalek::SigningKey;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// Most records committed by one write and fsync.
const MAX_GROUP: usize = 4096;

/// A handle on the access log; cheap to clone, one per session. The log seals itself with a shutdown
/// checkpoint when [`AuditLog::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

/// Owned by the handles only: dropping the last one closes the log.
struct Handle {
    log: Arc<Shared>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the handles, the receipts and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Used only by the thread that set `Queue::committing`.
    writer: Mutex<Writer>,
    /// Told after each commit: waiters look at their records again.
    committed: Notify,
    healthy: Arc<AtomicBool>,
    writer_thread: OnceLock<std::thread::Thread>,
    /// A session waits for a record: the writer thread commits the queue now.
    nudged: AtomicBool,
    /// Whether a waiting session writes the queue itself (`batch`: a write, no fsync) instead of
    /// waking the writer thread (`sync`: the fsync must not stall the session's worker).
    commit_inline: bool,
    batch_interval: Duration,
}

/// Records queued and not yet taken by a commit.
struct Queue {
    records: Vec<Queued>,
    /// When the oldest of `records` was queued.
    oldest: Option<Instant>,
    /// Whether a thread is committing (it alone uses the writer meanwhile).
    committing: bool,
    state: LogState,
}

enum LogState {
    Open,
    /// Closing: the writer thread commits what is queued, seals the log and answers here.
    Closing(Option<oneshot::Sender<Result<(), AuditError>>>),
    /// Sealed: nothing more is written.
    Closed,
}

impl AuditLog {
    /// Opens the log described by `config`, reading its keys from the configured files or environment.
    /// Must run inside a tokio runtime when a PostgreSQL or syslog sink is configured.
    pub fn open(config: &AuditConfig) -> Result<AuditLog, AuditError> {
        let secret = keys::chain_secret(&config.chain_secret_source())?;
        let signing = keys::signing_key(&config.signing_key_source())?;
        Self::open_with_keys(config, secret, signing)
    }

    /// Opens the log with keys the caller already holds. A new file starts, linked to the last record
    /// of the folder's newest file; the secret is erased once the epoch's first key is derived.
    pub fn open_with_keys(
        config: &AuditConfig,
        secret: ChainSecret,
        signing: SigningKey,
    ) -> Result<AuditLog, AuditError> {
        if config.group_commit_us.is_some() {
            tracing::warn!(
                "[audit] group_commit_us is no longer used: a group is committed when a session \
                 waits for one of its records, else after batch_interval_ms"
            );
        }
        let sinks = SinkSet::start(config)?;
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer::open(config, &secret, signing, sinks, healthy.clone())?;
        drop(secret);
        let log = Arc::new(Shared {
            queue: Mutex::new(Queue {
                records: Vec::new(),
                oldest: None,
                committing: false,
                state: LogState::Open,
            }),
            writer: Mutex::new(writer),
            committed: Notify::new(),
            healthy,
            writer_thread: OnceLock::new(),
            nudged: AtomicBool::new(false),
            commit_inline: config.durability == Durability::Batch,
            batch_interval: config.batch_interval(),
        });
        let writer_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_log.run_writer_thread())
            .map_err(|e| AuditError::Io {
                path: config.dir.clone(),
                source: e,
            })?;
        let _ = log.writer_thread.set(thread.thread().clone());
        Ok(AuditLog {
            handle: Arc::new(Handle {
                log,
                writer_thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Appends one event ([`Event`] or [`PreparedEvent`](crate::audit::PreparedEvent)); returns its
    /// sequence number once it is durable (see the `writer` module).
    /// An error means the event is not in the log: the caller must not answer as if it were.
    pub async fn record(&self, event: impl Into<Entry>) -> Result<u64, AuditError> {
        self.submit(event).durable().await
    }

    /// Queues one event at once and returns a receipt to await its durability later, so that a
    /// session can overlap the log's fsync with work of its own (e.g. the upstream query).
    pub fn submit(&self, event: impl Into<Entry>) -> Receipt {
        self.queue(event.into(), None)
    }

    /// Queues a follow-up of the record `of` was given for (e.g. a statement's `outcome` record): the
    /// writer sets its `statement_seq` to that record's sequence number. Nobody waits for a follow-up:
    /// it goes with the next commit (or after `batch_interval_ms`). It is dropped (its receipt fails)
    /// when the record it follows did not make it into the log.
    pub fn submit_follow_up(&self, event: impl Into<Entry>, of: &Receipt) -> Receipt {
        self.queue(event.into(), Some(of.state.clone()))
    }

    /// Records how the statement of the record `of` was given for ended. While that record is still
    /// queued (the usual case: records are committed when a session waits for one), the completion is
    /// written into the record itself, one line instead of two; otherwise it is queued as the record's
    /// follow-up, the event `follow_up` builds from it (nobody waits for it).
    pub fn complete<E: Into<Entry>>(
        &self,
        of: &Receipt,
        completion: Completion,
        follow_up: impl FnOnce(Completion) -> E,
    ) {
        let mut slot = of.state.lock_slot();
        if matches!(*slot, Slot::Open) {
            *slot = Slot::Completed(completion);
            return;
        }
        drop(slot);
        let _ = self.submit_follow_up(follow_up(completion), of);
    }

    fn queue(&self, event: Entry, follows: Option<Arc<RecordState>>) -> Receipt {
        let log = self.handle.log.clone();
        let state = Arc::new(RecordState::default());
        if event.kind().is_reserved() {
            state.answer(Err(AuditError::ReservedKind(event.kind().as_str())));
            return Receipt { state, log };
        }
        let mut queue = log.lock_queue();
        if !matches!(queue.state, LogState::Open) {
            state.answer(Err(AuditError::Closed));
        } else {
            queue.oldest.get_or_insert_with(Instant::now);
            queue.records.push(Queued {
                event,
                state: state.clone(),
                follows,
            });
        }
        drop(queue);
        Receipt { state, log }
    }

    /// Makes the next commit of this log panic (a test of failing closed).
    #[cfg(test)]
    pub(super) fn panic_in_next_commit(&self) {
        self.handle.log.lock_writer().panic_in_next_commit = true;
    }

    /// Whether the last attempt to write succeeded. When false, refuse statements that touch personal data.
    pub fn is_healthy(&self) -> bool {
        self.handle.log.healthy.load(Ordering::SeqCst)
    }

    /// Writes the records still queued, then a signed shutdown checkpoint, and stops the log.
    /// Later `record` calls fail with [`AuditError::Closed`].
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (done, answer) = oneshot::channel();
        self.handle.log.close(Some(done));
        let result = answer.await.map_err(|_| AuditError::Closed)?;
        let thread = self
            .handle
            .writer_thread
            .lock()
            .map(|mut t| t.take())
            .unwrap_or(None);
        if let Some(thread) = thread {
            // The thread has answered and only returns now; joining takes no time.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The writer thread seals the log; nobody waits for its answer.
        self.log.close(None);
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the queued records to commit them, unless another thread is committing or the log is
    /// sealed. The caller must hand them to [`Shared::commit`].
    fn lead(&self) -> Option<Vec<Queued>> {
        let mut queue = self.lock_queue();
        if queue.committing || matches!(queue.state, LogState::Closed) {
            return None;
        }
        queue.committing = true;
        let take = queue.records.len().min(MAX_GROUP);
        let group: Vec<Queued> = queue.records.drain(..take).collect();
        queue.oldest = (!queue.records.is_empty()).then(Instant::now);
        Some(group)
    }

    /// Commits a group taken by [`Shared::lead`], then runs `also` with the writer (timers, sealing),
    /// and lets the next leader in.
    fn commit(&self, group: Vec<Queued>, also: impl FnOnce(&mut Writer)) {
        let _leading = Leading(self);
        let mut writer = self.lock_writer();
        if !group.is_empty() {
            writer.commit(group);
        }
        also(&mut writer);
    }

    fn is_closed(&self) -> bool {
        matches!(self.lock_queue().state, LogState::Closed)
    }

    /// Has the writer thread commit the queue now.
    fn nudge(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        if let Some(thread) = self.writer_thread.get() {
            thread.unpark();
        }
    }

    /// Starts closing the log: later records are refused, the writer thread commits what is queued
    /// and seals the log, then answers `done`.
    fn close(&self, done: Option<oneshot::Sender<Result<(), AuditError>>>) {
        let mut queue = self.lock_queue();
        match &mut queue.state {
            LogState::Open => queue.state = LogState::Closing(done),
            LogState::Closing(waiting @ None) => *waiting = done,
            LogState::Closing(Some(_)) | LogState::Closed => {
                if let Some(done) = done {
                    let _ = done.send(Err(AuditError::Closed));
                }
            }
        }
        drop(queue);
        if let Some(thread) = self.writer_thread.get() {
            thread.unpark();
        }
    }

    /// The writer thread: commits records nobody waited for within `batch_interval`, runs the writer's
    /// timers (batch fsync, periodic checkpoint) and, once the log closes, seals it.
    fn run_writer_thread(&self) {
        loop {
            let oldest = {
                let queue = self.lock_queue();
                if !matches!(queue.state, LogState::Open) {
                    break;
                }
                queue.oldest
            };
            // A waiting session: commit now, without looking at the timers first.
            if !self.nudged.swap(false, Ordering::SeqCst) {
                let now = Instant::now();
                let deadline = [
                    self.lock_writer().next_deadline(),
                    oldest.map(|t| t + self.batch_interval),
                    Some(now + self.batch_interval),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
                if deadline > now {
                    std::thread::park_timeout(deadline - now);
                    continue;
                }
            }
            match self.lead() {
                Some(group) => self.commit(group, |writer| writer.on_timers()),
                // A session is committing: look again shortly.
                None => std::thread::park_timeout(Duration::from_millis(1)),
            }
        }
        self.seal();
    }

    /// Commits everything still queued, writes the shutdown checkpoint and answers the closer.
    fn seal(&self) {
        loop {
            let Some(group) = self.lead() else {
                if self.is_closed() {
                    // Closed by a commit that failed (see `Leading`).
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(1));
                continue;
            };
            if self.lock_queue().records.is_empty() {
                let mut result = Ok(());
                self.commit(group, |writer| result = writer.seal_for_shutdown());
                let mut queue = self.lock_queue();
                let state = std::mem::replace(&mut queue.state, LogState::Closed);
                drop(queue);
                self.committed.notify_waiters();
                if let LogState::Closing(Some(done)) = state {
                    let _ = done.send(result);
                }
                return;
            }
            self.commit(group, |_| {});
        }
    }
}

/// Held while committing: lets the next leader in when the commit ends. A commit that panicked left
/// the chain in an unknown state, so then the log closes instead: nothing more is written, every
/// record still waiting fails and the log reports itself unhealthy (statements that touch personal
/// data are refused), rather than sessions waiting for ever.
struct Leading<'a>(&'a Shared);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let log = self.0;
        let mut queue = log.lock_queue();
        queue.committing = false;
        if std::thread::panicking() {
            log.healthy.store(false, Ordering::SeqCst);
            tracing::error!("the access log's writer failed; the log is closed");
            let why = "the access log's writer failed (see the proxy's log)";
            for queued in queue.records.drain(..) {
                queued
                    .state
                    .answer(Err(AuditError::Unwritable(why.to_owned())));
            }
            if let LogState::Closing(Some(done)) =
                std::mem::replace(&mut queue.state, LogState::Closed)
            {
                let _ = done.send(Err(AuditError::Unwritable(why.to_owned())));
            }
        }
        drop(queue);
        log.committed.notify_waiters();
    }
}

/// An event queued by [`AuditLog::submit`].
#[must_use = "a record counts only once `durable` returned Ok"]
pub struct Receipt {
    state: Arc<RecordState>,
    log: Arc<Shared>,
}

impl Receipt {
    /// Waits until the event is durable; returns its sequence number, or why it is not in the log.
    /// Costs nothing when it already is. Otherwise the queue is committed now: with `sync` by the
    /// writer thread, with `batch` by this session unless a commit is running (then it waits for
    /// that one and looks again).
    pub async fn durable(self) -> Result<u64, AuditError> {
        loop {
            let notified = self.log.committed.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a commit finishing meanwhile is not missed.
            notified.as_mut().enable();
            if let Some(answer) = self.state.answered() {
                return answer;
            }
            // Only after a failed commit: a sealed log answered every record it took.
            if self.log.is_closed() {
                return Err(AuditError::Closed);
            }
            if !self.log.commit_inline {
                self.log.nudge();
                notified.await;
                continue;
            }
            match self.log.lead() {
                Some(group) if group.is_empty() => {
                    // Not answered, not queued, nobody committing: cannot happen; fail closed.
                    self.log.commit(group, |_| {});
                    return self.state.answered().unwrap_or(Err(AuditError::Closed));
                }
                Some(group) => self.log.commit(group, |_| {}),
                None => notified.await,
            }
        }
    }
}

/// How a statement ended: its outcome, rows and duration (and a note without personal values).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub outcome: Outcome,
    pub rows: Option<u64>,
    pub duration_us: Option<u64>,
    pub detail: Option<String>,
}

impl Completion {
    /// Writes the completion into `event` (a statement record or its `outcome` follow-up).
    pub fn apply(self, event: &mut Event) {
        self.fill(
            &mut event.outcome,
            &mut event.rows,
            &mut event.duration_us,
            &mut event.detail,
        );
    }

    /// Writes the completion into a record's fields; a detail already there stays unless the
    /// completion brings one.
    pub(crate) fn fill(
        self,
        outcome: &mut Outcome,
        rows: &mut Option<u64>,
        duration_us: &mut Option<u64>,
        detail: &mut Option<String>,
    ) {
        *outcome = self.outcome;
        *rows = self.rows;
        *duration_us = self.duration_us;
        if self.detail.is_some() {
            *detail = self.detail;
        }
    }
}

/// What the session and the writer share about one queued record.
#[derive(Default)]
pub(super) struct RecordState {
    /// The record's sequence number once it is appended (0 while it is not in the file).
    pub(super) seq: AtomicU64,
    /// Whether its completion can still be written into it (see [`AuditLog::complete`]).
    slot: Mutex<Slot>,
    /// Set once: its sequence number when durable, or why it is not in the log.
    answer: OnceLock<Result<u64, AuditError>>,
}

impl RecordState {
    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer takes the record: the completion given so far goes into it; a later one becomes
    /// a follow-up.
    pub(super) fn take(&self, event: &mut Entry) {
        if let Slot::Completed(completion) = std::mem::replace(&mut *self.lock_slot(), Slot::Taken)
        {
            event.complete(completion);
        }
    }

    /// Settles the record: durable with its number, or not in the log.
    pub(super) fn answer(&self, answer: Result<u64, AuditError>) {
        let _ = self.answer.set(answer);
    }

    fn answered(&self) -> Option<Result<u64, AuditError>> {
        self.answer.get().map(|answer| match answer {
            Ok(seq) => Ok(*seq),
            Err(AuditError::Closed) => Err(AuditError::Closed),
            Err(AuditError::ReservedKind(kind)) => Err(AuditError::ReservedKind(kind)),
            Err(other) => Err(AuditError::Unwritable(match other {
                AuditError::Unwritable(why) => why.clone(),
                other => other.to_string(),
            })),
        })
    }
}

#[derive(Default)]
enum Slot {
    /// Queued, not taken by the writer yet.
    #[default]
    Open,
    /// Its completion came before the writer took it.
    Completed(Completion),
    /// Being written or written: its completion is a follow-up.
    Taken,
}

/// One event on its way into the log.
pub(super) struct Queued {
    pub(super) event: Entry,
    pub(super) state: Arc<RecordState>,
    /// For a follow-up: the record it completes, whose sequence number goes into `statement_seq`.
    pub(super) follows: Option<Arc<RecordState>>,
}
