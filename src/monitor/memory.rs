//! The memory API of [`Monitor`] and the engine's side of the memory room:
//! the `memory` task's check (which also records the figures as
//! `resource_usage` series in namespace `scopemon`), and what the built-in
//! cleanup strategies may do to the engine ([`EngineMemory`]).

use std::sync::{Arc, Weak};

use serde::Serialize;

use super::Monitor;
use super::engine::Engine;
use crate::error::{Error, Result};
use crate::memory::{
    CleanupRecord, CleanupReport, EngineMemory, MemoryCleanup, PressureLevel, builtins,
};
use crate::model::Kind;

/// What `GET /v1/memory` answers (bytes; `threshold_percentage` is the
/// fraction used of the pressure base `budget`).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStatus {
    /// The system's total memory.
    pub total_memory: u64,
    /// This process's resident set.
    pub process_memory: u64,
    /// The system's used memory (total − available).
    pub system_memory: u64,
    /// The system's available memory.
    pub available_memory: u64,
    /// The pressure base: min(`memory.budget`, cgroup limit, system total).
    pub budget: u64,
    /// Process memory (or cgroup usage, when limited) ÷ `budget`.
    pub threshold_percentage: f64,
    /// The current level.
    pub pressure_level: PressureLevel,
    /// Series holding hot data.
    pub hot_series: usize,
    /// Bytes held by hot buckets.
    pub hot_bytes: usize,
    /// The last cleanup run (by pressure or on request).
    pub last_cleanup: Option<CleanupReport>,
}

/// Memory manager counters since start, for `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStats {
    /// Level changes, by the level entered: low, medium, high, critical.
    pub level_changes: [u64; 4],
    /// Strategy runs.
    pub cleanup_runs: u64,
    /// Strategy runs that failed, panicked or timed out.
    pub cleanup_failures: u64,
    /// Bytes the strategies reported freed.
    pub cleanup_freed_bytes: u64,
}

/// The figures recorded as scopemon's own series at every check.
const OWN_SERIES: [&str; 5] = [
    "memory.total",
    "memory.process",
    "memory.system",
    "memory.available",
    "memory.pressure",
];

impl Engine {
    /// Registers the built-in strategies and takes the first measurement
    /// (without cleanups or own series: nothing is hot yet).
    pub(super) fn start_memory(self: &Arc<Engine>) {
        let weak: Weak<dyn EngineMemory> = Arc::downgrade(self) as Weak<dyn EngineMemory>;
        for s in builtins(weak) {
            self.memory.register(s);
        }
        if let Err(err) = self.memory.check(self.clock.now_ms(), false) {
            tracing::warn!(error = %err, "first memory check failed");
        }
    }

    /// The `memory` task: measures, moves the level (running cleanups on
    /// entering high or critical), and records the figures.
    pub(super) fn check_memory(&self, now: i64) -> Result<()> {
        let f = self.memory.check(now, true)?;
        let values = [
            f.total as f64,
            f.process as f64,
            f.system as f64,
            f.available as f64,
            f.ratio * 100.0,
        ];
        for (metric, v) in OWN_SERIES.into_iter().zip(values) {
            self.record_own(metric, Kind::ResourceUsage, v, &[], now);
        }
        Ok(())
    }
}

impl EngineMemory for Engine {
    fn flush(&self) -> Result<()> {
        Engine::flush(self, self.clock.now_ms()).map(|_| ())
    }

    fn hot_bytes(&self) -> usize {
        self.registry.hot_bytes()
    }

    fn evict_idle(&self) -> usize {
        self.registry.evict_idle()
    }

    fn shrink_maps(&self) -> usize {
        self.registry.shrink_maps()
    }

    fn drop_caches(&self) -> usize {
        self.baselines.clear()
    }
}

impl Monitor {
    /// Memory figures, level and the last cleanup (`GET /v1/memory`), as of
    /// the last check (every `memory.check_interval`).
    pub fn memory(&self) -> MemoryStatus {
        let e = &self.engine;
        let f = e.memory.figures().unwrap_or_default();
        MemoryStatus {
            total_memory: f.total,
            process_memory: f.process,
            system_memory: f.system,
            available_memory: f.available,
            budget: f.base,
            threshold_percentage: f.ratio,
            pressure_level: e.memory.level(),
            hot_series: e.registry.hot_series(),
            hot_bytes: e.registry.hot_bytes(),
            last_cleanup: e.memory.cleanups().last(),
        }
    }

    /// The current memory pressure level (one atomic load).
    #[inline]
    pub fn pressure_level(&self) -> PressureLevel {
        self.engine.memory.level()
    }

    /// The admission gate, for the embedder's own operations too: `Err`
    /// ([`Error::MemoryPressureCritical`]) at critical pressure, else the
    /// level. One atomic load, no lock.
    #[inline]
    pub fn check_operation_allowed(&self) -> Result<PressureLevel> {
        match self.engine.memory.level() {
            PressureLevel::Critical => Err(Error::MemoryPressureCritical {
                ratio: self.engine.memory.ratio(),
            }),
            level => Ok(level),
        }
    }

    /// Measures memory now, as the `memory` task does (level, cleanups on
    /// entering high or critical, own series), and answers the new status.
    pub fn check_memory(&self) -> Result<MemoryStatus> {
        self.engine.check_memory(self.engine.clock.now_ms())?;
        Ok(self.memory())
    }

    /// Adds a cleanup strategy (run with the built-in ones, by priority).
    pub fn register_cleanup(&self, strategy: Box<dyn MemoryCleanup>) {
        self.engine.memory.register(Arc::from(strategy));
    }

    /// Runs every cleanup strategy for `priority` now, on this thread
    /// (each bounded by its timeout); answers what each freed.
    pub fn request_cleanup(&self, priority: PressureLevel) -> CleanupReport {
        let now = self.engine.clock.now_ms();
        self.engine.memory.request_cleanup(priority, now)
    }

    /// The last 100 strategy runs, oldest first.
    pub fn cleanup_history(&self) -> Vec<CleanupRecord> {
        self.engine.memory.cleanups().history()
    }

    /// Level changes and cleanup outcomes since start.
    pub fn memory_stats(&self) -> MemoryStats {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.engine.memory;
        let c = &m.cleanups().counters;
        MemoryStats {
            level_changes: m.changes(),
            cleanup_runs: c.runs.load(Relaxed),
            cleanup_failures: c.failures.load(Relaxed),
            cleanup_freed_bytes: c.freed.load(Relaxed),
        }
    }
}
