//! Cleanup strategies and their runner.
//!
//! A [`MemoryCleanup`] frees what it can for a pressure level and says how
//! many bytes that was. Library users implement it for their own caches;
//! scopemon's own strategies are in `builtin.rs`.
//!
//! Invariants:
//! - strategies run in ascending [`MemoryCleanup::priority`] order (ties in
//!   registration order), one at a time, and two runs never overlap;
//! - each strategy runs on its own thread and is waited for at most its
//!   [`MemoryCleanup::timeout`]: a hung strategy is abandoned (and skipped
//!   by later runs until it returns), so it cannot block the others;
//! - an error, a panic or a timeout is recorded and logged, and the next
//!   strategy runs all the same;
//! - every run of every strategy is recorded (level, strategy, bytes freed,
//!   duration, error); the last [`HISTORY`] records are kept in memory.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::level::PressureLevel;
use crate::model::format_ts;

/// Records kept in the cleanup history.
pub const HISTORY: usize = 100;

/// How long a strategy is waited for unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a strategy returns when it fails.
pub type CleanupError = Box<dyn std::error::Error + Send + Sync>;

/// A way to free memory under pressure.
pub trait MemoryCleanup: Send + Sync + 'static {
    /// A short stable name (shown in reports and the history).
    fn name(&self) -> &str;

    /// Lower runs first.
    fn priority(&self) -> u32;

    /// Frees what this strategy frees at `level`; returns the bytes freed
    /// (`Ok(0)` when it has nothing to do at that level).
    fn cleanup(&self, level: PressureLevel) -> Result<u64, CleanupError>;

    /// How long a run is waited for before it is abandoned.
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }
}

/// Why cleanups ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupTrigger {
    /// The periodic check entered high or critical.
    Pressure,
    /// `request_cleanup` / `POST /v1/memory/cleanup`.
    Request,
}

/// One strategy's run.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupRecord {
    /// When the run started (RFC 3339).
    pub at: String,
    /// The level it ran for.
    pub level: PressureLevel,
    /// The strategy's name.
    pub strategy: String,
    /// Bytes it freed (0 on error).
    pub bytes_freed: u64,
    /// How long it ran (or was waited for), milliseconds.
    pub duration_ms: f64,
    /// What went wrong; `None` when it succeeded.
    pub error: Option<String>,
}

/// One run of every strategy.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// When the run started (RFC 3339).
    pub at: String,
    /// The level the strategies ran for.
    pub level: PressureLevel,
    /// Why they ran.
    pub trigger: CleanupTrigger,
    /// Bytes freed by all of them.
    pub bytes_freed: u64,
    /// Each strategy's record, in the order they ran.
    pub strategies: Vec<CleanupRecord>,
}

struct Entry {
    strategy: Arc<dyn MemoryCleanup>,
    /// Set while a run of this strategy is in progress (or abandoned).
    busy: Arc<AtomicBool>,
}

/// Cleanup outcomes since start, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct CleanupCounters {
    /// Strategy runs.
    pub runs: AtomicU64,
    /// Strategy runs that failed, panicked or timed out.
    pub failures: AtomicU64,
    /// Bytes freed by all of them.
    pub freed: AtomicU64,
}

/// The registered strategies, the history and the runner.
#[derive(Default)]
pub(crate) struct Cleanups {
    entries: RwLock<Vec<Entry>>,
    run_lock: Mutex<()>,
    history: Mutex<VecDeque<CleanupRecord>>,
    last: Mutex<Option<CleanupReport>>,
    pub(crate) counters: CleanupCounters,
}

impl Cleanups {
    /// Adds a strategy (after those of the same priority).
    pub(crate) fn register(&self, strategy: Arc<dyn MemoryCleanup>) {
        let mut entries = self.entries.write();
        let at = entries.partition_point(|e| e.strategy.priority() <= strategy.priority());
        entries.insert(
            at,
            Entry {
                strategy,
                busy: Arc::new(AtomicBool::new(false)),
            },
        );
    }

    /// Names of the strategies in the order they run.
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<String> {
        let entries = self.entries.read();
        entries
            .iter()
            .map(|e| e.strategy.name().to_owned())
            .collect()
    }

    /// Runs every strategy for `level`, in priority order.
    pub(crate) fn run(
        &self,
        level: PressureLevel,
        trigger: CleanupTrigger,
        now_ms: i64,
    ) -> CleanupReport {
        let _one = self.run_lock.lock();
        let todo: Vec<(Arc<dyn MemoryCleanup>, Arc<AtomicBool>)> = self
            .entries
            .read()
            .iter()
            .map(|e| (e.strategy.clone(), e.busy.clone()))
            .collect();
        let mut records = Vec::with_capacity(todo.len());
        for (strategy, busy) in todo {
            let r = run_one(strategy, busy, level, now_ms);
            self.note(&r);
            records.push(r);
        }
        let report = CleanupReport {
            at: format_ts(now_ms),
            level,
            trigger,
            bytes_freed: records.iter().map(|r| r.bytes_freed).sum(),
            strategies: records,
        };
        tracing::info!(
            level = %level,
            trigger = ?trigger,
            freed = report.bytes_freed,
            strategies = report.strategies.len(),
            "memory cleanup done"
        );
        *self.last.lock() = Some(report.clone());
        report
    }

    fn note(&self, r: &CleanupRecord) {
        let c = &self.counters;
        c.runs.fetch_add(1, Ordering::Relaxed);
        c.freed.fetch_add(r.bytes_freed, Ordering::Relaxed);
        if let Some(e) = &r.error {
            c.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(strategy = %r.strategy, level = %r.level, error = %e, "memory cleanup strategy failed; the others ran");
        }
        let mut h = self.history.lock();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(r.clone());
    }

    /// The last [`HISTORY`] strategy runs, oldest first.
    pub(crate) fn history(&self) -> Vec<CleanupRecord> {
        self.history.lock().iter().cloned().collect()
    }

    /// The last run's report.
    pub(crate) fn last(&self) -> Option<CleanupReport> {
        self.last.lock().clone()
    }
}

type Outcome = std::thread::Result<Result<u64, CleanupError>>;

/// Runs one strategy on its own thread, waiting at most its timeout.
fn run_one(
    strategy: Arc<dyn MemoryCleanup>,
    busy: Arc<AtomicBool>,
    level: PressureLevel,
    now_ms: i64,
) -> CleanupRecord {
    let name = strategy.name().to_owned();
    let timeout = strategy.timeout();
    let started = Instant::now();
    let outcome = if busy.swap(true, Ordering::AcqRel) {
        Err("skipped: its previous run timed out and has not returned yet".to_owned())
    } else {
        spawn_and_wait(strategy, busy, level, timeout)
    };
    let (bytes_freed, error) = match outcome {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e)),
    };
    CleanupRecord {
        at: format_ts(now_ms),
        level,
        strategy: name,
        bytes_freed,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        error,
    }
}

fn spawn_and_wait(
    strategy: Arc<dyn MemoryCleanup>,
    busy: Arc<AtomicBool>,
    level: PressureLevel,
    timeout: Duration,
) -> Result<u64, String> {
    let (tx, rx) = mpsc::sync_channel::<Outcome>(1);
    let done = busy.clone();
    let spawned = std::thread::Builder::new()
        .name("memory-cleanup".into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| strategy.cleanup(level)));
            done.store(false, Ordering::Release);
            // The runner may have given up waiting: nobody to tell then.
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        busy.store(false, Ordering::Release);
        return Err(format!("cannot start its thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(Ok(n))) => Ok(n),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(&*panic))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "timed out after {} ms; abandoned",
            timeout.as_millis()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("ended without an answer".into()),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, u32, Result<u64, &'static str>);

    impl MemoryCleanup for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn priority(&self) -> u32 {
            self.1
        }
        fn cleanup(&self, _: PressureLevel) -> Result<u64, CleanupError> {
            self.2.map_err(Into::into)
        }
    }

    #[test]
    fn priority_order_errors_and_bounded_history() {
        let c = Cleanups::default();
        c.register(Arc::new(Fixed("late", 50, Ok(7))));
        c.register(Arc::new(Fixed("early", 1, Err("boom"))));
        c.register(Arc::new(Fixed("middle", 10, Ok(5))));
        assert_eq!(c.names(), ["early", "middle", "late"]);
        let r = c.run(PressureLevel::High, CleanupTrigger::Request, 0);
        assert_eq!(r.bytes_freed, 12);
        assert_eq!(r.strategies[0].error.as_deref(), Some("boom"));
        assert_eq!(r.strategies[2].bytes_freed, 7);
        for _ in 0..40 {
            c.run(PressureLevel::Critical, CleanupTrigger::Pressure, 0);
        }
        assert_eq!(c.history().len(), HISTORY);
        assert_eq!(c.counters.runs.load(Ordering::Relaxed), 123);
        assert_eq!(c.counters.failures.load(Ordering::Relaxed), 41);
    }
}
