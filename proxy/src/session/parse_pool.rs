//! The parse threads: where statements that miss the rewrite cache are parsed, rewritten or
//! inspected, off the session threads, so that one heavy message delays only its own session.
//!
//! - A bounded number of threads, each with [`PARSE_STACK_BYTES`] of stack: the depth of every tree
//!   is bounded before it is built (`policy::rewrite::limits`), and this stack holds the deepest.
//! - A fair share per user: one user's jobs occupy at most `per_user` threads at once, the others
//!   wait in that user's queue, and a free thread takes the next job round-robin over the users
//!   with work; so one user's many sessions cannot occupy every parse thread.
//! - The budget of one job is bounded by the limits on the message (tokens, statements, operators),
//!   and a session has at most one job at a time (its relay waits for the decision).
//!
//! A job that panics gives `None` (the session refuses the message); the thread goes on.
//! Not for: the decisions themselves (see `enforce`, `schema_change`, `audit_trail`) or cache hits,
//! which stay on the session's thread.

use policy::rewrite::limits::PARSE_STACK_BYTES;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use tokio::sync::oneshot;
use tracing::warn;

type Job = Box<dyn FnOnce() + Send>;

/// The parse threads and their queues.
pub struct ParsePool {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    per_user: usize,
}

#[derive(Default)]
struct Queue {
    /// Per user: jobs waiting and jobs running.
    users: HashMap<Arc<str>, UserJobs>,
    /// Users with waiting jobs, in the order their turn comes.
    turns: VecDeque<Arc<str>>,
}

#[derive(Default)]
struct UserJobs {
    waiting: VecDeque<Job>,
    running: usize,
}

impl Queue {
    /// The next job a thread may run (the first user in turn below its share), moving that user to
    /// the back of the turns.
    fn take(&mut self, per_user: usize) -> Option<(Arc<str>, Job)> {
        let at = self.turns.iter().position(|user| {
            self.users
                .get(user)
                .is_some_and(|jobs| jobs.running < per_user && !jobs.waiting.is_empty())
        })?;
        let user = self.turns.remove(at)?;
        let jobs = self.users.get_mut(&user)?;
        let job = jobs.waiting.pop_front()?;
        jobs.running += 1;
        if !jobs.waiting.is_empty() {
            self.turns.push_back(user.clone());
        }
        Some((user, job))
    }

    fn done(&mut self, user: &Arc<str>) {
        if let Some(jobs) = self.users.get_mut(user) {
            jobs.running -= 1;
            if jobs.running == 0 && jobs.waiting.is_empty() {
                self.users.remove(user);
            } else if !jobs.waiting.is_empty() && !self.turns.contains(user) {
                self.turns.push_back(user.clone());
            }
        }
    }
}

impl ParsePool {
    /// Starts `threads` parse threads (0: as many as cores, at least 2); one user may occupy
    /// `per_user` of them at once (0: half, at least 1).
    pub fn start(threads: usize, per_user: usize) -> std::io::Result<ParsePool> {
        let threads = match threads {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            n => n,
        };
        let per_user = match per_user {
            0 => (threads / 2).max(1),
            n => n.min(threads),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            per_user,
        });
        for index in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("maschera-parse-{index}"))
                .stack_size(PARSE_STACK_BYTES)
                .spawn(move || shared.serve())?;
        }
        Ok(ParsePool { shared })
    }

    /// Runs `job` on a parse thread in `user`'s share; `None` if it panicked.
    pub fn run<T: Send + 'static>(
        &self,
        user: Arc<str>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(job));
            if outcome.is_err() {
                warn!("a parse job panicked; its message is refused");
            }
            let _ = done.send(outcome.ok());
        });
        {
            let mut queue = self.shared.lock();
            let jobs = queue.users.entry(user.clone()).or_default();
            jobs.waiting.push_back(job);
            if jobs.waiting.len() == 1 && !queue.turns.contains(&user) {
                queue.turns.push_back(user);
            }
        }
        self.shared.work.notify_one();
        async move { result.await.ok().flatten() }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent across a panic: jobs run outside the lock.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&self) {
        let mut queue = self.lock();
        loop {
            let Some((user, job)) = queue.take(self.per_user) else {
                queue = self.work.wait(queue).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            drop(queue);
            job();
            queue = self.lock();
            queue.done(&user);
            // The user's next job may now run on another thread that found none within the share.
            self.work.notify_one();
        }
    }
}

static POOL: OnceLock<ParsePool> = OnceLock::new();

/// Starts the process's parse threads (once; later calls keep the first pool).
pub fn configure(threads: usize, per_user: usize) -> std::io::Result<()> {
    if POOL.get().is_none() {
        let pool = ParsePool::start(threads, per_user)?;
        let _ = POOL.set(pool);
    }
    Ok(())
}

/// The process's parse threads (started with the defaults if [`configure`] was not called);
/// `None` when they could not be started (the caller refuses the message rather than parse it on
/// its own thread).
pub fn pool() -> Option<&'static ParsePool> {
    if POOL.get().is_none() {
        match ParsePool::start(0, 0) {
            Ok(pool) => {
                let _ = POOL.set(pool);
            }
            Err(error) => {
                warn!(%error, "the parse threads could not be started");
                return None;
            }
        }
    }
    POOL.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_user_occupies_at_most_its_share_and_another_user_goes_first() {
        let pool = ParsePool::start(2, 1).unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let running = Arc::new(AtomicUsize::new(0));
        let heavy: Arc<str> = Arc::from("heavy");
        // Three blocking jobs of one user: only one runs at a time.
        let mut waits = Vec::new();
        for _ in 0..3 {
            let (gate, running) = (gate.clone(), running.clone());
            waits.push(pool.run(heavy.clone(), move || {
                running.fetch_add(1, Ordering::SeqCst);
                let _ = gate.lock().unwrap().recv();
            }));
        }
        let mut waits = waits.into_iter();
        let first = tokio::spawn(waits.next().unwrap());
        // Another user's job runs on the other thread while the heavy user's jobs wait.
        let light =
            tokio::time::timeout(Duration::from_secs(10), pool.run(Arc::from("light"), || 42))
                .await;
        assert_eq!(light.unwrap(), Some(42));
        assert_eq!(running.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        first.await.unwrap().unwrap();
        for wait in waits {
            wait.await.unwrap();
        }
        assert_eq!(running.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_panicking_job_gives_none_and_the_thread_goes_on() {
        let pool = ParsePool::start(1, 1).unwrap();
        let user: Arc<str> = Arc::from("u");
        assert_eq!(
            pool.run(user.clone(), || -> u8 { panic!("boom") }).await,
            None
        );
        assert_eq!(pool.run(user, || 7).await, Some(7));
    }
}
