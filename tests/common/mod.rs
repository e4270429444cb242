//! Setup shared by the integration tests: engines on a temp dir driven by a
//! manual clock, and the fixed times tests start from.
//!
//! Each test binary includes this module (`mod common;`) and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use scopemon::{Config, DAY_MS, ManualClock, Monitor};

/// A UTC midnight in 2027, far from any real clock.
pub const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

/// An engine on `config` whose time is `clock` and whose background tasks
/// the test drives itself (`Monitor::run_due_tasks`, or `flush`/`rollup`).
pub fn open_with(config: Config, clock: &ManualClock) -> Monitor {
    Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor")
}

/// [`open_with`] the default configuration storing in `dir`.
pub fn open(dir: &Path, clock: &ManualClock) -> Monitor {
    open_with(Config::with_data_dir(dir), clock)
}

/// An engine whose memory readings come from `memory` (the test sets them)
/// and whose time is `clock`; background tasks driven by the test.
pub fn open_with_memory(
    config: Config,
    clock: &ManualClock,
    memory: &scopemon::ManualMemory,
) -> Monitor {
    Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .memory_source(Box::new(memory.clone()))
        .open()
        .expect("open monitor")
}

/// A reading of a 1000-byte system with `process` bytes resident and no
/// cgroup limit: the pressure ratio is `process / 1000`.
pub fn reading(process: u64) -> scopemon::MemoryReading {
    scopemon::MemoryReading {
        total: 1000,
        available: 500,
        process,
        cgroup: None,
    }
}
