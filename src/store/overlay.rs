//! A redb storage backend that reads a store file and never writes it:
//! writes land in memory. The integrity check runs redb's own
//! verification (which repairs as it goes) through it, so `scopemon check`
//! without `--repair` leaves the file byte-for-byte unchanged, and needs
//! no copy of it.
//!
//! Locks are the file's own (redb's `FileBackend` locking), so a check
//! and a running server exclude each other exactly as two servers do.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::path::Path;

use parking_lot::Mutex;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::error::{Error, Result};

/// Granularity of the in-memory writes.
const BLOCK: u64 = 4096;

/// The file for reads and locks, memory for writes.
#[derive(Debug)]
pub struct Overlay {
    file: FileBackend,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Length as redb sees it.
    len: u64,
    /// Length of the file underneath.
    file_len: u64,
    /// Blocks written, by index.
    blocks: HashMap<u64, Vec<u8>>,
}

impl Overlay {
    /// Opens `path` for reading (and locking).
    pub fn open(path: &Path) -> Result<Overlay> {
        // Read-write, so redb's exclusive locks can be taken on it; it is
        // never written through.
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::DataDir {
                action: "open the store file",
                path: path.to_path_buf(),
                source,
            })?;
        let file_len = file.metadata()?.len();
        Ok(Overlay {
            file: FileBackend::new(file)?,
            state: Mutex::new(State {
                len: file_len,
                file_len,
                blocks: HashMap::new(),
            }),
        })
    }

    /// One block as redb sees it: written, else the file's (zeros past its end).
    fn block(&self, st: &State, index: u64) -> std::io::Result<Vec<u8>> {
        if let Some(b) = st.blocks.get(&index) {
            return Ok(b.clone());
        }
        let mut buf = vec![0u8; BLOCK as usize];
        let start = index * BLOCK;
        if start < st.file_len {
            let n = (st.file_len - start).min(BLOCK) as usize;
            self.file.read(start, &mut buf[..n])?;
        }
        Ok(buf)
    }
}

fn past_end() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
}

impl StorageBackend for Overlay {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let st = self.state.lock();
        let end = offset + out.len() as u64;
        if end > st.len {
            return Err(past_end());
        }
        if st.blocks.is_empty() && end <= st.file_len {
            return self.file.read(offset, out);
        }
        let mut pos = offset;
        while pos < end {
            let index = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let n = ((BLOCK as usize) - within).min((end - pos) as usize);
            let block = self.block(&st, index)?;
            let at = (pos - offset) as usize;
            out[at..at + n].copy_from_slice(&block[within..within + n]);
            pos += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut st = self.state.lock();
        if len < st.len {
            // Bytes past the new end read as zeros if it grows again.
            let first = len.div_ceil(BLOCK);
            st.blocks.retain(|i, _| *i < first);
            if !len.is_multiple_of(BLOCK) {
                let index = len / BLOCK;
                let mut b = self.block(&st, index)?;
                b[(len % BLOCK) as usize..].fill(0);
                st.blocks.insert(index, b);
            }
            st.file_len = st.file_len.min(len);
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut st = self.state.lock();
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let n = ((BLOCK as usize) - within).min((end - pos) as usize);
            let mut block = self.block(&st, index)?;
            let at = (pos - offset) as usize;
            block[within..within + n].copy_from_slice(&data[at..at + n]);
            st.blocks.insert(index, block);
            pos += n as u64;
        }
        st.len = st.len.max(end);
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let o = Overlay::open(&path).unwrap();
        o.write(4090, &[1; 10]).unwrap();
        o.set_len(9000).unwrap();
        let mut out = vec![0u8; 20];
        o.read(4085, &mut out).unwrap();
        assert_eq!(&out[..5], &[7; 5]);
        assert_eq!(&out[5..15], &[1; 10]);
        assert_eq!(&out[15..], &[7; 5]);
        let mut tail = vec![9u8; 10];
        o.read(8990, &mut tail).unwrap();
        assert_eq!(tail, vec![0; 10]);
        assert!(o.read(8995, &mut [0u8; 10]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
    }

    /// Shrinking forgets everything past the new end, written or in the
    /// file: grown again, those bytes read as zeros.
    #[test]
    fn bytes_past_a_shrink_read_as_zeros_when_grown_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let o = Overlay::open(&path).unwrap();
        o.write(4090, &[1; 10]).unwrap(); // blocks 0 and 1
        o.write(9000, &[2; 10]).unwrap(); // block 2
        // Inside block 1: its written bytes past 4098 and all of block 2 go.
        o.set_len(4098).unwrap();
        assert_eq!(o.len().unwrap(), 4098);
        assert!(o.read(4090, &mut [0u8; 9]).is_err(), "read past the end");
        o.set_len(12_000).unwrap();
        let mut out = vec![9u8; 40];
        o.read(4080, &mut out).unwrap();
        assert_eq!(&out[..10], &[7; 10]); // the file's
        assert_eq!(&out[10..18], &[1; 8]); // written, kept
        assert_eq!(&out[18..], &[0; 22]); // past the shrink: zeros, not 1s or 7s
        let mut far = vec![9u8; 20];
        o.read(8995, &mut far).unwrap();
        assert_eq!(far, vec![0; 20], "block 2 and the file under it are gone");
        // A shrink to a block boundary keeps the block before it whole.
        o.set_len(4096).unwrap();
        o.set_len(5000).unwrap();
        let mut edge = vec![9u8; 12];
        o.read(4088, &mut edge).unwrap();
        assert_eq!(&edge[..2], &[7; 2]);
        assert_eq!(&edge[2..8], &[1; 6]);
        assert_eq!(&edge[8..], &[0; 4]);
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 10_000]);
    }
}
