//! The session workers: a few threads (half the cores by default), each running its own
//! single-threaded tokio runtime. The listener hands each accepted connection to the worker with
//! the fewest sessions, and the session stays on that thread for its whole life: both directions
//! of the relay, their I/O readiness and their wake-ups never cross threads. (A multi-threaded
//! runtime spent a sizeable share of each transaction on futex wake-ups of parked workers and on
//! tasks moving between them; see bench/profile-notes.md.)
//! Not for: what a session does (see `server`), or tasks that are not sessions (they run on the
//! runtime that called [`Workers::start`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::warn;

/// A session's work, started on a worker from the connection it serves.
pub type Handler =
    Arc<dyn Fn(TcpStream, SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

enum Command {
    /// Serve this connection (taken off the listener's runtime, to be registered with the worker's).
    Serve(std::net::TcpStream, SocketAddr),
    /// Stop every running session now.
    Abort,
}

struct Worker {
    commands: mpsc::UnboundedSender<Command>,
    sessions: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
    /// Signalled whenever a session ends.
    ended: Arc<Notify>,
}

impl Workers {
    /// Starts `count` workers (at least one; 0 means [`default_count`]).
    pub fn start(count: usize, handler: Handler) -> std::io::Result<Workers> {
        let count = match count {
            0 => default_count(std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        };
        let ended = Arc::new(Notify::new());
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            // Sessions need sockets and timers only: without the signal and process drivers a
            // worker does less each time it wakes up.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (commands, inbox) = mpsc::unbounded_channel();
            let sessions = Arc::new(AtomicUsize::new(0));
            let tracker = SessionTracker {
                sessions: sessions.clone(),
                ended: ended.clone(),
            };
            let handler = handler.clone();
            let thread = std::thread::Builder::new()
                .name(format!("maschera-worker-{index}"))
                .spawn(move || runtime.block_on(serve(inbox, handler, tracker)))?;
            workers.push(Worker {
                commands,
                sessions,
                thread,
            });
        }
        Ok(Workers { workers, ended })
    }

    /// Hands a connection accepted on the caller's runtime to the least busy worker.
    pub fn dispatch(&self, tcp: TcpStream, addr: SocketAddr) {
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(err) => {
                warn!(error = %err, "could not hand a connection to a worker");
                return;
            }
        };
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
        else {
            return;
        };
        // Counted here, not on the worker, so that the next dispatch already sees it.
        worker.sessions.fetch_add(1, Ordering::Relaxed);
        if worker.commands.send(Command::Serve(tcp, addr)).is_err() {
            worker.sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sessions running on all workers.
    pub fn active(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until no session runs.
    pub async fn idle(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// Stops every running session.
    pub fn abort(&self) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Abort);
        }
    }

    /// Stops the workers once their sessions have ended (or been aborted) and waits for their
    /// threads.
    pub async fn join(self) {
        let threads: Vec<_> = self
            .workers
            .into_iter()
            .map(|w| {
                drop(w.commands);
                w.thread
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Workers started when none are configured: half the cores, at least one. The proxy usually
/// shares its host with PostgreSQL or the application, and one worker already relays tens of
/// thousands of statements a second. On 2 cores shared with PostgreSQL, one worker spent a fifth
/// to a quarter less CPU per transaction than two, at the same throughput (bench/profile-notes.md).
pub fn default_count(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Counts a worker's sessions; each session holds a [`SessionCount`] until it ends.
#[derive(Clone)]
struct SessionTracker {
    sessions: Arc<AtomicUsize>,
    ended: Arc<Notify>,
}

/// One running session; dropped (also when aborted) when the session ends.
struct SessionCount(SessionTracker);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
        self.0.ended.notify_waiters();
    }
}

/// A worker's loop: start the sessions it is handed, reap the ones that ended.
async fn serve(
    mut inbox: mpsc::UnboundedReceiver<Command>,
    handler: Handler,
    tracker: SessionTracker,
) {
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                Some(Command::Serve(tcp, addr)) => {
                    let count = SessionCount(tracker.clone());
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => {
                            let session = handler(tcp, addr);
                            running.spawn(async move {
                                session.await;
                                drop(count);
                            });
                        }
                        Err(err) => warn!(error = %err, "a worker could not take a connection"),
                    }
                }
                Some(Command::Abort) => running.abort_all(),
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_count;

    #[test]
    fn the_default_is_half_the_cores_and_at_least_one() {
        assert_eq!(default_count(1), 1);
        assert_eq!(default_count(2), 1);
        assert_eq!(default_count(3), 1);
        assert_eq!(default_count(8), 4);
    }
}
