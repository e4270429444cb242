//! Measurement: where the memory manager's figures come from, behind the
//! [`MemorySource`] trait so tests inject readings ([`ManualMemory`]).
//!
//! The real source ([`SystemMemory`]) reads the system's total and
//! available memory and this process's resident set through `sysinfo`, and
//! the cgroup v2 `memory.max` / `memory.current` of the process's own
//! cgroup (from `/proc/self/cgroup` under `/sys/fs/cgroup`) when it has a
//! limit. Invariant: a reading never fails for want of a cgroup — no
//! cgroup, cgroup v1 or `memory.max = max` all mean "not limited".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::error::{Error, Result};

/// The cgroup v2 figures of a limited process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// `memory.max`, bytes.
    pub limit: u64,
    /// `memory.current`, bytes.
    pub current: u64,
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReading {
    /// The system's total memory, bytes.
    pub total: u64,
    /// The system's available memory (`MemAvailable`), bytes.
    pub available: u64,
    /// This process's resident set, bytes.
    pub process: u64,
    /// The cgroup limit and usage, when the process runs under a limit.
    pub cgroup: Option<CgroupMemory>,
}

/// Where readings come from. The manager calls `read` once per check, from
/// one thread at a time.
pub trait MemorySource: Send {
    /// Measures now.
    fn read(&mut self) -> Result<MemoryReading>;
}

/// The real source: `sysinfo` for the system and this process, the cgroup
/// v2 files for a container's limit.
pub struct SystemMemory {
    sys: System,
    pid: Pid,
    cgroup_dir: Option<PathBuf>,
}

impl std::fmt::Debug for SystemMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemMemory")
            .field("pid", &self.pid)
            .field("cgroup_dir", &self.cgroup_dir)
            .finish()
    }
}

impl SystemMemory {
    /// Measures this process, with the cgroup found under `/sys/fs/cgroup`.
    pub fn new() -> Result<SystemMemory> {
        let sys = System::new()
            .map_err(|e| Error::Internal(format!("cannot read system memory: {e}")))?;
        let pid = sysinfo::get_current_pid()
            .map_err(|e| Error::Internal(format!("cannot find this process's pid: {e}")))?;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Ok(SystemMemory {
            sys,
            pid,
            cgroup_dir: cgroup_dir(Path::new("/sys/fs/cgroup"), &own),
        })
    }
}

impl MemorySource for SystemMemory {
    fn read(&mut self) -> Result<MemoryReading> {
        self.sys.refresh_memory();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let process = self.sys.process(self.pid).map_or(0, |p| p.memory());
        Ok(MemoryReading {
            total: self.sys.total_memory(),
            available: self.sys.available_memory(),
            process,
            cgroup: self.cgroup_dir.as_deref().and_then(read_cgroup),
        })
    }
}

/// The cgroup v2 directory of the process whose `/proc/self/cgroup` text is
/// `own`, under `root`, when it has a `memory.max` file (the root cgroup
/// has none; a cgroup v1 host has no `0::` line).
pub(crate) fn cgroup_dir(root: &Path, own: &str) -> Option<PathBuf> {
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = root.join(rel.trim().trim_start_matches('/'));
    [dir, root.to_path_buf()]
        .into_iter()
        .find(|d| d.join("memory.max").is_file())
}

/// Reads `memory.max` and `memory.current` of a cgroup v2 directory;
/// `None` when unlimited (`max`) or unreadable.
pub(crate) fn read_cgroup(dir: &Path) -> Option<CgroupMemory> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let limit = read("memory.max")?.trim().parse::<u64>().ok()?;
    let current = read("memory.current")?.trim().parse::<u64>().ok()?;
    Some(CgroupMemory { limit, current })
}

/// A source whose readings the test sets, shared by its clones (the memory
/// counterpart of [`ManualClock`](crate::ManualClock)).
#[derive(Debug, Clone, Default)]
pub struct ManualMemory(Arc<Mutex<MemoryReading>>);

impl ManualMemory {
    /// A source answering `reading` until [`ManualMemory::set`].
    pub fn new(reading: MemoryReading) -> ManualMemory {
        ManualMemory(Arc::new(Mutex::new(reading)))
    }

    /// What the next check reads.
    pub fn set(&self, reading: MemoryReading) {
        *self.0.lock() = reading;
    }

    /// Changes only the process's resident set.
    pub fn set_process(&self, bytes: u64) {
        self.0.lock().process = bytes;
    }
}

impl MemorySource for ManualMemory {
    fn read(&mut self) -> Result<MemoryReading> {
        Ok(*self.0.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_source_measures_this_process() {
        let r = SystemMemory::new().unwrap().read().unwrap();
        assert!(r.total > 0 && r.available <= r.total, "{r:?}");
        assert!(r.process > 0 && r.process < r.total, "{r:?}");
    }

    #[test]
    fn cgroup_v2_limits_are_read_and_max_means_unlimited() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("system.slice/app.scope");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "536870912\n").unwrap();
        std::fs::write(dir.join("memory.current"), "1048576\n").unwrap();
        let own = "0::/system.slice/app.scope\n";
        let found = cgroup_dir(root.path(), own).unwrap();
        assert_eq!(found, dir);
        assert_eq!(
            read_cgroup(&found),
            Some(CgroupMemory {
                limit: 512 << 20,
                current: 1 << 20
            })
        );
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(read_cgroup(&found), None);
        // cgroup v1 only, or no cgroup file at all: not limited
        assert_eq!(cgroup_dir(root.path(), "4:memory:/x\n"), None);
        assert_eq!(cgroup_dir(root.path(), ""), None);
    }
}
