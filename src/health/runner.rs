//! Running checks: one tokio task per check on the daemon's runtime, each
//! on its own interval, each run bounded by the check's timeout.
//!
//! Invariants:
//! - a run that exceeds its timeout is cancelled and recorded as unhealthy
//!   at the timeout; a run that panics is recorded as unhealthy. Neither
//!   touches any other check's task;
//! - a check never runs twice at once: its task runs, records, then sleeps
//!   until `interval` after the run started, or until woken (heartbeat,
//!   `?fresh=true`), whichever comes first;
//! - runners hold the aggregator weakly and watch its shutdown signal: a
//!   stopped or dropped aggregator ends them, also mid-run;
//! - every time is tokio time, so tests drive them with
//!   `tokio::time::pause()`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::aggregator::Inner;
use super::check::{CheckResult, HealthCheck};
use crate::model::format_duration_ms;

/// What one runner needs.
pub(super) struct Runner {
    pub(super) inner: Weak<Inner>,
    pub(super) name: String,
    /// The registration this runner belongs to (a re-registration under the
    /// same name gets a new one; results of the old are dropped).
    pub(super) id: u64,
    pub(super) check: Arc<dyn HealthCheck>,
    pub(super) wake: Arc<Notify>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

/// Starts a runner on `rt`; its tracing span names the check.
pub(super) fn spawn(rt: &Handle, r: Runner) -> JoinHandle<()> {
    let span = tracing::info_span!("health_check", check = %r.name);
    rt.spawn(run(r).instrument(span))
}

async fn run(mut r: Runner) {
    loop {
        if *r.shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let Some(seq) = r.inner.upgrade().and_then(|i| i.begin_run(&r.name, r.id)) else {
            return;
        };
        let (check, timeout) = (r.check.clone(), r.timeout);
        let (result, took) = tokio::select! {
            out = execute(check, timeout) => out,
            _ = r.shutdown.changed() => return,
        };
        match r.inner.upgrade() {
            Some(inner) => inner.record(&r.name, r.id, seq, result, took),
            None => return,
        }
        tokio::select! {
            () = tokio::time::sleep_until(started + r.interval) => {}
            () = r.wake.notified() => {}
            _ = r.shutdown.changed() => return,
        }
    }
}

/// Aborts the task when dropped (a cancelled run leaves nothing behind).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One run of `check`, bounded by `timeout`: its result and how long it
/// took. The check runs as its own task, so a panic is caught as a
/// `JoinError` and a hung check is aborted at the timeout.
pub(super) async fn execute(
    check: Arc<dyn HealthCheck>,
    timeout: Duration,
) -> (CheckResult, Duration) {
    let started = Instant::now();
    let mut task = AbortOnDrop(tokio::spawn(async move { check.check().await }));
    let result = match tokio::time::timeout(timeout, &mut task.0).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_panic() => CheckResult::unhealthy("the check panicked"),
        Ok(Err(e)) => CheckResult::unhealthy(format!("the check did not finish: {e}")),
        Err(_) => {
            let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
            CheckResult::unhealthy(format!(
                "no answer within the {} timeout",
                format_duration_ms(ms)
            ))
        }
    };
    (result, started.elapsed())
}
