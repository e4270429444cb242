//! scopemon's own cleanup strategies, acting on what the engine holds in
//! memory. They reach the engine through [`EngineMemory`] (implemented by
//! the monitor), held weakly: a strategy outliving its engine does nothing.
//!
//! | strategy | priority | medium | high | critical |
//! |---|---|---|---|---|
//! | `flush-hot` | 10 | – | flush hot data now | same |
//! | `evict-idle` | 20 | – | – | flush, then drop idle series' empty hot state |
//! | `drop-caches` | 30 | – | – | drop the in-memory baseline cache |
//! | `shrink-maps` | 40 | shrink registry maps | same | same |
//!
//! Invariant: no strategy loses a sample. Eviction only drops hot state
//! that holds no data (what holds data is flushed first, and what a flush
//! has not finished stays); dropped baselines stay in their table and are
//! recomputed by the next baseline run (alerts with a `baseline_factor`
//! skip their evaluation until then).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::cleanup::{CleanupError, MemoryCleanup};
use super::level::PressureLevel;
use crate::error::Result;

/// What the built-in strategies need from the engine.
pub(crate) trait EngineMemory: Send + Sync {
    /// Writes every hot bucket to the store now.
    fn flush(&self) -> Result<()>;
    /// Bytes held by hot buckets.
    fn hot_bytes(&self) -> usize;
    /// Drops the hot state of series holding no data; returns bytes freed.
    fn evict_idle(&self) -> usize;
    /// Shrinks the registry's maps to their contents; returns bytes freed.
    fn shrink_maps(&self) -> usize;
    /// Drops in-memory caches that can be rebuilt; returns bytes freed.
    fn drop_caches(&self) -> usize;
}

#[derive(Clone, Copy)]
enum Job {
    FlushHot,
    EvictIdle,
    DropCaches,
    ShrinkMaps,
}

struct Builtin {
    job: Job,
    engine: Weak<dyn EngineMemory>,
}

/// Flushing may wait for the writer behind a long compaction batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

impl MemoryCleanup for Builtin {
    fn name(&self) -> &str {
        match self.job {
            Job::FlushHot => "flush-hot",
            Job::EvictIdle => "evict-idle",
            Job::DropCaches => "drop-caches",
            Job::ShrinkMaps => "shrink-maps",
        }
    }

    fn priority(&self) -> u32 {
        match self.job {
            Job::FlushHot => 10,
            Job::EvictIdle => 20,
            Job::DropCaches => 30,
            Job::ShrinkMaps => 40,
        }
    }

    fn timeout(&self) -> Duration {
        match self.job {
            Job::FlushHot | Job::EvictIdle => FLUSH_TIMEOUT,
            Job::DropCaches | Job::ShrinkMaps => super::cleanup::DEFAULT_TIMEOUT,
        }
    }

    fn cleanup(&self, level: PressureLevel) -> std::result::Result<u64, CleanupError> {
        let Some(e) = self.engine.upgrade() else {
            return Ok(0);
        };
        use PressureLevel::*;
        let freed = match (self.job, level) {
            (Job::FlushHot, High | Critical) => {
                let before = e.hot_bytes();
                e.flush()?;
                before.saturating_sub(e.hot_bytes())
            }
            (Job::EvictIdle, Critical) => {
                e.flush()?;
                e.evict_idle()
            }
            (Job::DropCaches, Critical) => e.drop_caches(),
            (Job::ShrinkMaps, Medium | High | Critical) => e.shrink_maps(),
            _ => 0,
        };
        Ok(u64::try_from(freed).unwrap_or(u64::MAX))
    }
}

/// The built-in strategies over `engine`.
pub(crate) fn builtins(engine: Weak<dyn EngineMemory>) -> Vec<Arc<dyn MemoryCleanup>> {
    [
        Job::FlushHot,
        Job::EvictIdle,
        Job::DropCaches,
        Job::ShrinkMaps,
    ]
    .into_iter()
    .map(|job| {
        Arc::new(Builtin {
            job,
            engine: engine.clone(),
        }) as Arc<dyn MemoryCleanup>
    })
    .collect()
}
