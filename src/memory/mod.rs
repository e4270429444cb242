//! The memory manager (MemoryManager of the design): measures memory,
//! keeps the pressure level, runs cleanup strategies, and holds the level
//! the admission gate reads.
//!
//! Rooms: `source.rs` measures (real or injected), `level.rs` turns a ratio
//! into a level with hysteresis, `cleanup.rs` the strategy trait and its
//! runner, `builtin.rs` scopemon's own strategies. The engine calls
//! [`MemoryManager::check`] from its `memory` background task.
//!
//! Invariants:
//! - the pressure base is min(`memory.budget`, cgroup limit, system total);
//!   the ratio is this process's resident set (or the cgroup's usage, when
//!   limited) over that base;
//! - the gate ([`MemoryManager::level`]) is one relaxed atomic load and
//!   never takes a lock; only a check writes the level;
//! - every level change is logged and counted; entering high runs the
//!   cleanups for high, entering critical those for critical (a level that
//!   stays runs nothing more: the flush keeps running on its own).

mod builtin;
mod cleanup;
mod level;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::MemoryConfig;
use crate::error::{Error, Result};

pub(crate) use builtin::{EngineMemory, builtins};
pub(crate) use cleanup::Cleanups;
pub use cleanup::{CleanupError, CleanupRecord, CleanupReport, CleanupTrigger, MemoryCleanup};
pub use level::{PressureLevel, Thresholds};
pub use source::{CgroupMemory, ManualMemory, MemoryReading, MemorySource, SystemMemory};

/// The figures of one check.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MemoryFigures {
    /// The system's total memory.
    pub total: u64,
    /// The system's available memory.
    pub available: u64,
    /// The system's used memory (total − available).
    pub system: u64,
    /// This process's resident set.
    pub process: u64,
    /// The pressure base: min(budget, cgroup limit, system total).
    pub base: u64,
    /// What the ratio counts: process memory, or cgroup usage when limited.
    pub used: u64,
    /// `used / base`.
    pub ratio: f64,
}

impl MemoryFigures {
    /// The figures of a reading under an optional configured budget.
    pub fn of(r: &MemoryReading, budget: Option<u64>) -> MemoryFigures {
        let mut base = r.total;
        if let Some(b) = budget {
            base = base.min(b);
        }
        if let Some(c) = r.cgroup {
            base = base.min(c.limit);
        }
        let base = base.max(1);
        let used = r.cgroup.map_or(r.process, |c| c.current);
        MemoryFigures {
            total: r.total,
            available: r.available,
            system: r.total.saturating_sub(r.available),
            process: r.process,
            base,
            used,
            ratio: used as f64 / base as f64,
        }
    }
}

/// A source that cannot measure (the platform is not supported): every
/// check fails and the level stays where it is.
struct Unavailable(String);

impl MemorySource for Unavailable {
    fn read(&mut self) -> Result<MemoryReading> {
        Err(Error::Internal(self.0.clone()))
    }
}

/// The real source, or one that says why there is none.
pub(crate) fn system_source() -> Box<dyn MemorySource> {
    match SystemMemory::new() {
        Ok(s) => Box::new(s),
        Err(e) => {
            tracing::warn!(error = %e, "memory cannot be measured here; pressure stays low");
            Box::new(Unavailable(e.to_string()))
        }
    }
}

/// The manager: level, last figures, strategies and counters.
pub(crate) struct MemoryManager {
    budget: Option<u64>,
    thresholds: Thresholds,
    source: Mutex<Box<dyn MemorySource>>,
    level: AtomicU8,
    last: Mutex<Option<MemoryFigures>>,
    /// Level changes, by the level entered.
    changes: [AtomicU64; 4],
    cleanups: Cleanups,
}

impl MemoryManager {
    pub(crate) fn new(config: &MemoryConfig, source: Box<dyn MemorySource>) -> MemoryManager {
        MemoryManager {
            budget: config.budget,
            thresholds: Thresholds::of(config),
            source: Mutex::new(source),
            level: AtomicU8::new(PressureLevel::Low.as_u8()),
            last: Mutex::new(None),
            changes: Default::default(),
            cleanups: Cleanups::default(),
        }
    }

    /// The current level: one atomic load (the admission gate).
    #[inline]
    pub(crate) fn level(&self) -> PressureLevel {
        PressureLevel::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// The last check's figures (`None` before a successful check).
    pub(crate) fn figures(&self) -> Option<MemoryFigures> {
        *self.last.lock()
    }

    /// The last check's ratio (0 before one).
    pub(crate) fn ratio(&self) -> f64 {
        self.figures().map_or(0.0, |f| f.ratio)
    }

    /// Level changes so far, by the level entered (low first).
    pub(crate) fn changes(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.changes[i].load(Ordering::Relaxed))
    }

    pub(crate) fn cleanups(&self) -> &Cleanups {
        &self.cleanups
    }

    /// Measures, moves the level, and — when `react` and the level rose
    /// into high or critical — runs that level's cleanups.
    pub(crate) fn check(&self, now_ms: i64, react: bool) -> Result<MemoryFigures> {
        // Held to the end: checks (the task's and `Monitor::check_memory`)
        // take turns, so level changes are counted once.
        let mut source = self.source.lock();
        let f = MemoryFigures::of(&source.read()?, self.budget);
        *self.last.lock() = Some(f);
        let old = self.level();
        let new = self.thresholds.next(old, f.ratio);
        if new == old {
            return Ok(f);
        }
        self.level.store(new.as_u8(), Ordering::Relaxed);
        self.changes[usize::from(new.as_u8())].fetch_add(1, Ordering::Relaxed);
        let (used, base) = (f.used, f.base);
        if new > old {
            tracing::warn!(from = %old, to = %new, ratio = f.ratio, used, base, "memory pressure rose");
        } else {
            tracing::info!(from = %old, to = %new, ratio = f.ratio, used, base, "memory pressure fell");
        }
        if react && new > old && new >= PressureLevel::High {
            self.cleanups.run(new, CleanupTrigger::Pressure, now_ms);
        }
        drop(source);
        Ok(f)
    }

    /// Runs every strategy for `level` now.
    pub(crate) fn request_cleanup(&self, level: PressureLevel, now_ms: i64) -> CleanupReport {
        self.cleanups.run(level, CleanupTrigger::Request, now_ms)
    }

    /// Adds a strategy.
    pub(crate) fn register(&self, strategy: Arc<dyn MemoryCleanup>) {
        self.cleanups.register(strategy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(process: u64) -> MemoryReading {
        MemoryReading {
            total: 1000,
            available: 600,
            process,
            cgroup: None,
        }
    }

    #[test]
    fn the_base_is_the_smallest_of_budget_cgroup_and_system() {
        let f = MemoryFigures::of(&reading(100), None);
        assert_eq!((f.base, f.used, f.system), (1000, 100, 400));
        assert_eq!(MemoryFigures::of(&reading(100), Some(200)).ratio, 0.5);
        let mut r = reading(100);
        r.cgroup = Some(CgroupMemory {
            limit: 400,
            current: 300,
        });
        let f = MemoryFigures::of(&r, Some(500));
        assert_eq!((f.base, f.used), (400, 300), "cgroup usage over its limit");
    }

    #[test]
    fn checks_move_the_level_count_changes_and_react_once() {
        let src = ManualMemory::new(reading(100));
        let m = MemoryManager::new(&MemoryConfig::default(), Box::new(src.clone()));
        assert_eq!(m.check(0, true).unwrap().ratio, 0.1);
        assert_eq!(m.level(), PressureLevel::Low);
        src.set_process(950);
        m.check(0, true).unwrap();
        assert_eq!(m.level(), PressureLevel::Critical);
        assert!(
            m.cleanups().last().is_some(),
            "entering critical cleaned up"
        );
        m.check(0, true).unwrap();
        src.set_process(860);
        m.check(0, true).unwrap();
        assert_eq!(m.level(), PressureLevel::Critical, "within the margin");
        src.set_process(100);
        m.check(0, true).unwrap();
        assert_eq!(m.level(), PressureLevel::Low);
        assert_eq!(m.changes(), [1, 0, 0, 1]);
    }
}
