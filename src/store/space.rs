//! Whether the store can take writes: the state a failed write leaves (redb
//! refuses every write after an I/O error until the file is closed and
//! reopened), and the free space of the data directory's file system.
//!
//! Invariants:
//! - `needs_reopen` is set by every write that failed with an I/O error
//!   (a failed commit included, which may nevertheless be durable) and is
//!   cleared only by a successful reopen ([`super::Store::reopen`]);
//! - `failing` holds the last write error until a flush commits (or, with
//!   nothing to flush, a probe write does), so ingest answers `507
//!   insufficient_storage` from the first failed write until the store has
//!   proved it takes the writes that matter again. (A small write can
//!   succeed on a full disk, in pages redb freed inside its file; health
//!   probes therefore do not clear it.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::Error;

/// The store's write health (see the module doc).
#[derive(Debug, Default)]
pub struct WriteHealth {
    needs_reopen: AtomicBool,
    failing: Mutex<Option<String>>,
    failures: AtomicU64,
    reopens: AtomicU64,
}

impl WriteHealth {
    /// A write failed with `err`; `reopen`: redb now refuses writes until
    /// the database is reopened.
    pub(super) fn write_failed(&self, err: &Error, reopen: bool) {
        if reopen {
            self.needs_reopen.store(true, Ordering::SeqCst);
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.failing.lock() = Some(err.to_string());
    }

    /// A flush committed: the store takes writes.
    pub(super) fn write_succeeded(&self) {
        if self.failing.lock().take().is_some() {
            tracing::info!("the store takes writes again");
        }
    }

    /// The database was reopened.
    pub(super) fn reopened(&self) {
        self.needs_reopen.store(false, Ordering::SeqCst);
        self.reopens.fetch_add(1, Ordering::Relaxed);
    }

    /// True once a write failed with an I/O error, until a reopen.
    pub fn needs_reopen(&self) -> bool {
        self.needs_reopen.load(Ordering::SeqCst)
    }

    /// The last write error, while no commit has succeeded since.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().clone()
    }

    /// Writes that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Reopens since start.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }
}

/// True for the errors after which redb refuses writes until the database
/// is reopened (an I/O error, or its latched echo).
pub(crate) fn is_io_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Storage(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed)
    )
}

/// (available to unprivileged users, total) bytes of the file system
/// holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs(3) reads the NUL-terminated path and fills the struct
    // we own; the zeroed struct is a valid value of this plain C type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let (frsize, avail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    let frsize = frsize.max(1);
    Ok((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    use super::disk_space;

    /// statvfs answers for a directory that exists (some space, no more
    /// available than in all) and fails for one that does not.
    #[test]
    fn disk_space_reads_the_file_system_and_fails_for_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let (avail, total) = disk_space(dir.path()).unwrap();
        assert!(total > 0 && avail <= total, "{avail} of {total}");
        assert!(disk_space(&dir.path().join("missing")).is_err());
    }
}
