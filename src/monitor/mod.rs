//! [`Monitor`]: the embeddable engine (PerformanceMonitor of the design),
//! the public face over [`engine`]'s state and the background [`Tasks`].
//! The HTTP server and the CLI are thin layers over it.
//!
//! ```no_run
//! use std::time::Duration;
//! use scopemon::{Config, Monitor};
//! let monitor = Monitor::open(Config::with_data_dir("./data"))?;
//! monitor.record_latency("production", "foundation.config.get", Duration::from_micros(1500), &[("cache", "miss")])?;
//! let handle = monitor.latency_handle("production", "db.query", &[])?;
//! handle.record(Duration::from_micros(420));
//! monitor.close()?;
//! # Ok::<(), scopemon::Error>(())
//! ```
//!
//! Rooms: `engine.rs` owns the state and the jobs, `record.rs` the recording
//! API, `read.rs` queries and the admin API (retention, compaction,
//! baselines, thresholds, alerts). Background jobs capture the engine
//! weakly, so dropping the `Monitor` ends them.

mod engine;
mod memory;
mod read;
mod record;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde::Serialize;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::memory::MemorySource;
use crate::store::flush::{FlushReport, RollupReport};
use crate::store::guard::guard;
use crate::store::limited::DiskBudget;
use crate::tasks::{Schedule, TaskStatus, Tasks};

use engine::Engine;
pub use engine::OWN_NAMESPACE;
pub use memory::{MemoryStats, MemoryStatus};
pub use read::SeriesInfo;
pub use record::{MAX_FUTURE_MS, Sample};

/// Figures about the engine itself (for `/metrics` and health).
#[derive(Debug, Clone, Serialize)]
pub struct EngineStats {
    /// Known series.
    pub series: usize,
    /// Series holding hot data.
    pub hot_series: usize,
    /// Bytes held by hot buckets (counted exactly: every bucket's struct and
    /// histogram counts).
    pub hot_bytes: usize,
    /// `storage.max_hot_bytes`: HTTP ingest answers 429 at this.
    pub max_hot_bytes: u64,
    /// redb's page cache (`storage.cache_size`), part of the process' memory.
    pub cache_size: u64,
    /// Bytes that cache holds now.
    pub cache_used_bytes: usize,
    /// Flushes completed.
    pub flushes: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// Unix ms of the last successful flush (0 = none yet).
    pub last_flush_ms: i64,
    /// The last flush's report.
    pub last_flush: Option<FlushReport>,
    /// The last rollup's report.
    pub last_rollup: Option<RollupReport>,
    /// Store file size.
    pub file_bytes: u64,
    /// Store writes that failed (I/O errors, a full disk).
    pub store_write_failures: u64,
    /// Times the store was reopened after a failed write.
    pub store_reopens: u64,
    /// False from a failed store write until one succeeds again.
    pub store_writable: bool,
}

/// Builder for [`Monitor`].
pub struct MonitorBuilder {
    config: Config,
    clock: SharedClock,
    background: bool,
    memory: Option<Box<dyn MemorySource>>,
    disk_budget: Option<DiskBudget>,
}

impl MonitorBuilder {
    /// Uses `clock` instead of the system clock (background tasks follow it).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether background tasks get their own threads (default true).
    /// Without them the owner drives the same tasks with
    /// [`Monitor::run_due_tasks`], or calls [`Monitor::flush`] and
    /// [`Monitor::rollup`] itself.
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Measures memory with `source` instead of the system (tests inject
    /// readings with [`ManualMemory`](crate::ManualMemory)).
    pub fn memory_source(mut self, source: Box<dyn MemorySource>) -> Self {
        self.memory = Some(source);
        self
    }

    /// Fault tests: the store's writes fail with `ENOSPC` once `budget`
    /// bytes are written, until the test raises it (a disk filling up and
    /// freed again, deterministically).
    pub fn disk_budget(mut self, budget: DiskBudget) -> Self {
        self.disk_budget = Some(budget);
        self
    }

    /// Opens the store and starts the engine's tasks. Memory is measured
    /// once before it returns, so the admission gate starts at the level
    /// the process is at.
    pub fn open(self) -> Result<Monitor> {
        let source = self.memory.unwrap_or_else(crate::memory::system_source);
        let data_dir = self.config.storage.data_dir.clone();
        let clock = self.clock.clone();
        let disk_budget = self.disk_budget;
        let engine = guard(&data_dir, "opening the store", move || {
            Engine::open(self.config, clock, source, disk_budget)
        })?;
        let engine = Arc::new(engine);
        engine.start_memory();
        let tasks = Tasks::new(self.clock, self.background);
        register_tasks(&tasks, &engine)?;
        Ok(Monitor { engine, tasks })
    }
}

/// Registers the engine's periodic jobs. Each captures the engine weakly:
/// a job that outlives its engine does nothing.
fn register_tasks(tasks: &Tasks, engine: &Arc<Engine>) -> Result<()> {
    fn job(
        engine: &Arc<Engine>,
        f: impl Fn(&Engine, i64) -> Result<()> + Send + Sync + 'static,
    ) -> impl Fn(i64) -> Result<()> + Send + Sync + 'static {
        let weak: Weak<Engine> = Arc::downgrade(engine);
        let dir = engine.config.storage.data_dir.clone();
        move |now| {
            weak.upgrade().map_or(Ok(()), |e| {
                guard(&dir, "running a background task", || {
                    e.with_recovery(|| f(&e, now))
                })
            })
        }
    }
    let c = &engine.config;
    let flush_every = Schedule::Every(c.storage.flush_interval);
    let flush = tasks.register(
        "flush",
        flush_every,
        job(engine, |e, now| e.flush(now).map(|_| ())),
    )?;
    // Above three quarters of the hot-memory cap the flush runs at once.
    let mark = usize::try_from(c.storage.max_hot_bytes / 4 * 3).unwrap_or(usize::MAX);
    engine
        .registry
        .on_hot_bytes_above(mark, move || flush.wake());
    tasks.register("rollup", flush_every, job(engine, Engine::rollup_step))?;
    // Handles read the minute from an atomic: move it at every boundary.
    let minute = Schedule::Aligned(std::time::Duration::from_secs(60));
    tasks.register(
        "minute",
        minute,
        job(engine, |e, now| {
            e.registry.observe_time(now);
            Ok(())
        }),
    )?;
    let compact = Schedule::Every(c.storage.compact_interval);
    tasks.register(
        "compaction",
        compact,
        job(engine, |e, now| {
            e.compact(now, Default::default()).map(|_| ())
        }),
    )?;
    if let Some(delivery) = engine.alerts.delivery() {
        // Sends queued transitions; woken by every enqueue, and retried on
        // its own schedule. Each failed transition is counted and logged.
        let every = Schedule::Every(std::time::Duration::from_secs(10));
        let task = tasks.register(
            "alert-delivery",
            every,
            job(engine, |e, _| {
                e.alerts
                    .delivery()
                    .map_or(Ok(()), |d| d.run_once().map(|_| ()))
            }),
        )?;
        delivery.on_enqueue(move || task.wake());
    }
    let baselines = Schedule::Every(c.baseline.recompute_interval);
    tasks.register(
        "baseline",
        baselines,
        job(engine, |e, now| e.recompute_baselines(now).map(|_| ())),
    )?;
    let memory = Schedule::Every(c.memory.check_interval);
    tasks.register("memory", memory, job(engine, Engine::check_memory))?;
    Ok(())
}

/// The engine handle. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
pub struct Monitor {
    engine: Arc<Engine>,
    tasks: Tasks,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.engine.store)
            .finish()
    }
}

impl Monitor {
    /// Opens the store in `config.storage.data_dir` with the system clock
    /// and background tasks.
    pub fn open(config: Config) -> Result<Monitor> {
        Monitor::builder(config).open()
    }

    /// A builder for non-default clocks or no background threads.
    pub fn builder(config: Config) -> MonitorBuilder {
        MonitorBuilder {
            config,
            clock: Arc::new(SystemClock),
            background: true,
            memory: None,
            disk_budget: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The clock in use.
    pub fn now_ms(&self) -> i64 {
        self.engine.clock.now_ms()
    }

    /// The status of every background task (flush, rollup, minute,
    /// compaction, baseline, ...), in registration order.
    pub fn tasks(&self) -> Vec<TaskStatus> {
        self.tasks.statuses()
    }

    /// Runs every background task that is due at the clock's time, on the
    /// calling thread; returns how many ran. For monitors built with
    /// `background(false)`, whose owner drives time (tests, tools).
    pub fn run_due_tasks(&self) -> usize {
        self.tasks.run_due()
    }

    /// Figures about the engine.
    pub fn stats(&self) -> EngineStats {
        let e = &self.engine;
        let f = &e.flush_stats;
        EngineStats {
            series: e.registry.all().len(),
            hot_series: e.registry.hot_series(),
            hot_bytes: e.registry.hot_bytes(),
            max_hot_bytes: e.config.storage.max_hot_bytes,
            cache_size: e.config.storage.cache_size,
            cache_used_bytes: e.store.cache_used_bytes(),
            flushes: f.flushes.load(Ordering::Relaxed),
            flush_errors: f.errors.load(Ordering::Relaxed),
            last_flush_ms: f.last_ms.load(Ordering::Relaxed),
            last_flush: f.last.lock().clone(),
            last_rollup: f.last_rollup.lock().clone(),
            file_bytes: e.store.file_size().unwrap_or(0),
            store_write_failures: e.store.write_health().failures(),
            store_reopens: e.store.write_health().reopens(),
            store_writable: e.store.write_health().failing().is_none(),
        }
    }

    /// Bytes unflushed hot data holds now (one atomic load; `stats()` also
    /// walks every series). At `storage.max_hot_bytes` HTTP ingest refuses
    /// bodies (429) until the flush catches up; library recording is never
    /// refused for this, it has already woken the flush.
    pub fn hot_bytes(&self) -> usize {
        self.engine.registry.hot_bytes()
    }

    /// True while unflushed hot data is at `storage.max_hot_bytes` (see
    /// [`Monitor::hot_bytes`]).
    pub fn at_hot_cap(&self) -> bool {
        let cap = self.engine.config.storage.max_hot_bytes;
        u64::try_from(self.engine.registry.hot_bytes()).unwrap_or(u64::MAX) >= cap
    }

    /// False while the most recent flush attempt failed (the store is not
    /// taking writes); no I/O.
    pub fn is_healthy(&self) -> bool {
        !self.engine.flush_stats.last_failed.load(Ordering::Relaxed) && !self.is_closed()
    }

    /// True once [`Monitor::close`] has begun.
    pub fn is_closed(&self) -> bool {
        self.engine.closed.load(Ordering::Relaxed)
    }

    /// Stops the background tasks and writes everything still hot.
    /// Idempotent; also run (errors logged) when the monitor is dropped.
    pub fn close(&self) -> Result<()> {
        if self.engine.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(d) = self.engine.alerts.delivery() {
            let left = d.shutdown();
            if left > 0 {
                tracing::warn!(
                    transitions = left,
                    "alert transitions not delivered before shutdown (logged above)"
                );
            }
        }
        self.tasks.stop();
        // Samples recorded by racing threads before `closed` was seen are
        // in hot buckets; this flush writes them all.
        let now = self.engine.clock.now_ms();
        let flushed = self.guarded("flushing on close", || self.engine.flush(now));
        if let Err(err) = flushed {
            let (samples, buckets) = self.engine.unpersisted();
            tracing::error!(samples, buckets, error = %err, "accepted samples could not be written");
            return Err(Error::NotPersisted {
                samples,
                buckets,
                reason: err.to_string(),
            });
        }
        self.guarded("rolling up on close", || {
            self.engine.rollup(now, usize::MAX)
        })?;
        Ok(())
    }

    /// Why HTTP ingest must refuse a batch now (`507
    /// insufficient_storage`), if it must: a store write failed and none
    /// has succeeded since, or the data directory's disk has less than
    /// `storage.min_free_space` free. Library recording is never refused
    /// for this (it stays in memory, up to `storage.max_hot_bytes`).
    pub fn storage_refusal(&self) -> Option<Error> {
        self.engine.storage_refusal()
    }

    /// True while ingest is refused for storage: a store write failed and
    /// none has succeeded since, or the last [`Monitor::storage_refusal`]
    /// (every ingest and health round asks) found too little free space.
    /// No I/O: `/readyz` answers from it.
    pub fn storage_refused(&self) -> bool {
        self.engine.store.write_health().failing().is_some()
            || self.engine.storage_refused.load(Ordering::Relaxed)
    }

    /// Runs `f` over the store where damaged bytes (a panic in redb's
    /// decoders, a record that does not decode) become
    /// [`Error::StoreCorrupted`](crate::Error::StoreCorrupted) (see
    /// `store::guard`).
    fn guarded<T>(&self, what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        guard(&self.engine.config.storage.data_dir, what, f)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(error = %err, "final flush on drop failed");
        }
    }
}
