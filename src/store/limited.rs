//! A disk that fills up on command: a redb [`StorageBackend`] over the real
//! file whose writes fail with `ENOSPC` ("No space left on device") once a
//! byte budget is spent, and succeed again when the budget is raised; and
//! whose `fsync`s can be made to fail (after the data reached the file, so
//! a commit that reports an error may nevertheless have landed).
//!
//! It exists for fault tests (the full-disk path must be tested
//! deterministically, not only on a small tmpfs) and is selected with
//! `MonitorBuilder::disk_budget`. It models a file system: only bytes
//! written past the file's written extent need new space (rewriting pages
//! inside the file, as redb's header and recycled pages do, always
//! succeeds), growing the file with `set_len` is free (sparse), and a
//! write that does not fit fails whole (nothing of it is written).
//! Invariant: with the budget never exhausted and no sync fault armed it
//! behaves exactly as redb's own `FileBackend` (every call is forwarded).

use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The new space a [`LimitedBackend`] may still take, and the `fsync`s and
/// reads it is to fail; shared with the test that sets them.
#[derive(Debug, Clone, Default)]
pub struct DiskBudget(Arc<Faults>);

#[derive(Debug)]
struct Faults {
    bytes: AtomicU64,
    failing_syncs: AtomicU64,
    /// When set, the next failing `fsync` also makes every read fail from
    /// then on (until healed): a disk that stops answering mid-commit.
    reads_fail_after_sync: std::sync::atomic::AtomicBool,
    reads_failing: std::sync::atomic::AtomicBool,
    /// Reads still to fail, one at a time (a disk with a transient error).
    failing_reads: AtomicU64,
    /// End of the bytes written so far: what the file system holds for the
    /// file, across reopens (the file's length may include holes that a
    /// failed write's `set_len` left). `u64::MAX` until the first open.
    written_end: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            bytes: AtomicU64::new(u64::MAX),
            failing_syncs: AtomicU64::new(0),
            reads_fail_after_sync: std::sync::atomic::AtomicBool::new(false),
            reads_failing: std::sync::atomic::AtomicBool::new(false),
            failing_reads: AtomicU64::new(0),
            written_end: AtomicU64::new(u64::MAX),
        }
    }
}

impl DiskBudget {
    /// A budget of `bytes` of new space.
    pub fn new(bytes: u64) -> Self {
        let b = DiskBudget::default();
        b.set(bytes);
        b
    }

    /// Sets the new space that may still be taken (`u64::MAX`: unlimited).
    pub fn set(&self, bytes: u64) {
        self.0.bytes.store(bytes, Ordering::SeqCst);
    }

    /// The new space that may still be taken.
    pub fn remaining(&self) -> u64 {
        self.0.bytes.load(Ordering::SeqCst)
    }

    /// Makes the next `n` `fsync`s fail with `EIO` (what they were to sync
    /// is already written to the file).
    pub fn fail_next_syncs(&self, n: u64) {
        self.0.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// Makes the next `fsync` fail with `EIO` and every read after it fail
    /// too, until [`DiskBudget::heal_reads`]: the store cannot be reopened
    /// nor the failed commit read back, so its flush stays unsettled.
    pub fn fail_next_sync_then_reads(&self) {
        self.0.reads_fail_after_sync.store(true, Ordering::SeqCst);
        self.fail_next_syncs(1);
    }

    /// Reads succeed again.
    pub fn heal_reads(&self) {
        self.0.reads_failing.store(false, Ordering::SeqCst);
    }

    /// Makes the next `n` reads fail with `EIO`, and the reads after them
    /// succeed: a transient read error, after which redb refuses every
    /// access until the file is reopened.
    pub fn fail_next_reads(&self, n: u64) {
        self.0.failing_reads.store(n, Ordering::SeqCst);
    }

    /// Spends `n` bytes, or fails (spending nothing) when fewer remain.
    fn spend(&self, n: u64) -> std::io::Result<()> {
        self.0
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .map(|_| ())
            .map_err(|_| no_space())
    }

    /// True (and one fewer armed) when this `fsync` is to fail.
    fn sync_fails(&self) -> bool {
        self.0
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOSPC)
}

/// redb's file backend with a [`DiskBudget`].
#[derive(Debug)]
pub struct LimitedBackend {
    inner: FileBackend,
    budget: DiskBudget,
}

impl LimitedBackend {
    /// Opens (creating) the file at `path` as redb's `Builder::create` does.
    pub fn open(path: &Path, budget: DiskBudget) -> Result<Self, redb::DatabaseError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        let len = file
            .metadata()
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?
            .len();
        // The first open takes the file as fully written; later opens of
        // the same budget keep what it recorded.
        let _ = budget.0.written_end.compare_exchange(
            u64::MAX,
            len,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        Ok(LimitedBackend {
            inner: FileBackend::new(file)?,
            budget,
        })
    }
}

impl StorageBackend for LimitedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let transient = || {
            self.budget
                .0
                .failing_reads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if self.budget.0.reads_failing.load(Ordering::SeqCst) || transient() {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)?;
        self.budget.0.written_end.fetch_min(len, Ordering::SeqCst);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()?;
        if self.budget.sync_fails() {
            if self
                .budget
                .0
                .reads_fail_after_sync
                .swap(false, Ordering::SeqCst)
            {
                self.budget.0.reads_failing.store(true, Ordering::SeqCst);
            }
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        let written_end = &self.budget.0.written_end;
        let from = offset.max(written_end.load(Ordering::SeqCst));
        self.budget.spend(end.saturating_sub(from))?;
        self.inner.write(offset, data)?;
        written_end.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
