//! The tokio runtime a command runs on, built here and nowhere else (the proxy's worker threads each
//! drive their own, see `workers`). Only the command line (`cli` and the `*_cmd` modules) calls it: the
//! domain modules (dump, lifecycle, crm, demo, ...) are async libraries that never build a runtime.
//! Not for: deciding what a command does.

use anyhow::{Context, Result};
use std::future::Future;

/// The kind of runtime a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread: the one-shot commands (policy, dump, forget, subject, retention) and `serve`, whose
    /// sessions run on the worker threads.
    CurrentThread,
    /// A thread per core: `crm load` (generation beside the COPY) and `demo` (PostgreSQL set-up beside
    /// the proxy).
    MultiThread,
}

/// Runs `work` to its end on a new runtime of `flavor`; the runtime, with any task still running on
/// it, is dropped before the result is returned.
pub fn block_on<T>(flavor: Flavor, work: impl Future<Output = Result<T>>) -> Result<T> {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(work);
    drop(runtime);
    result
}

#[cfg(test)]
mod tests {
    use super::{Flavor, block_on};
    use std::sync::Arc;

    /// `demo` relies on it: its folder is removed after the proxy's background tasks are gone.
    #[test]
    fn tasks_still_running_are_dropped_before_the_result_is_returned() {
        for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
            let held = Arc::new(());
            let in_task = held.clone();
            let answer = block_on(flavor, async move {
                tokio::spawn(async move {
                    let _held = in_task;
                    std::future::pending::<()>().await
                });
                tokio::task::yield_now().await;
                Ok(42)
            })
            .unwrap();
            assert_eq!(answer, 42);
            assert_eq!(Arc::strong_count(&held), 1, "{flavor:?}: the task is gone");
        }
    }

    #[test]
    fn an_error_of_the_work_is_returned() {
        let err = block_on::<()>(Flavor::CurrentThread, async {
            anyhow::bail!("no database")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "no database");
    }
}
