//! The redb file: opening (with lock detection and schema migrations), the
//! series catalog, the flush writer and the rollups.
//!
//! Where data lives at any moment (each accepted sample in exactly one):
//! 1. hot buckets in memory (`hot`), until a flush takes them;
//! 2. `deltas`: one record per (series, minute), written (and merged into)
//!    by each flush;
//! 3. `minute`/`hour`/`day` records, into which a rollup moves closed
//!    minutes' deltas — all three resolutions and the delta deletion in one
//!    write transaction, so a reader's snapshot never counts a delta twice.

pub mod codec;
pub mod flush;
pub mod guard;
pub mod migrations;
pub mod overlay;
pub mod tables;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::store::codec::SeriesRecord;
use crate::store::tables::SERIES;

/// Every series in the catalog of `db` (a writable or read-only handle).
pub fn load_series(db: &impl ReadableDatabase) -> Result<Vec<(u64, SeriesRecord)>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SERIES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push((k.value(), codec::decode_series(v.value())?));
    }
    Ok(out)
}

/// Opens the store in `data_dir` read-only: nothing, not even redb's
/// header, is written. Fails when a writer holds it or when it needs crash
/// recovery (which only a writable open performs).
pub fn open_read_only(data_dir: &Path) -> Result<redb::ReadOnlyDatabase> {
    let path = db_path(data_dir);
    if !path.exists() {
        return Err(Error::NotFound(format!("no store at {}", path.display())));
    }
    let db = Database::builder()
        .open_read_only(&path)
        .map_err(|e| map_open_error(e, &path))?;
    let found = migrations::recorded_version(&db)?;
    if found != migrations::CURRENT {
        return Err(Error::SchemaTooOld {
            path,
            found,
            supported: migrations::CURRENT,
        });
    }
    Ok(db)
}

/// A write transaction holding its writer's turn (see [`Store::begin_write`]).
pub struct Write<'a> {
    // Field order matters: the transaction drops (aborts) before the turn
    // is handed on.
    txn: redb::WriteTransaction,
    _turn: parking_lot::FairMutexGuard<'a, ()>,
}

impl Write<'_> {
    /// Commits, then hands the turn on.
    pub fn commit(self) -> Result<()> {
        self.txn.commit()?;
        Ok(())
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        &self.txn
    }
}

impl std::ops::DerefMut for Write<'_> {
    fn deref_mut(&mut self) -> &mut redb::WriteTransaction {
        &mut self.txn
    }
}

/// File name of the store inside the data directory.
pub const DB_FILE: &str = "scopemon.redb";

/// Path of the store file in `data_dir` (the one place that joins them).
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Creates `data_dir` (and its parents) when missing; the error names the
/// path, and says so when it exists but is not a directory.
pub fn create_data_dir(data_dir: &Path) -> Result<()> {
    let unusable = |source| Error::DataDir {
        action: "create the data directory",
        path: data_dir.to_path_buf(),
        source,
    };
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(unusable(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(unusable)
}

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Create the directory and file when missing.
    pub create: bool,
    /// Apply pending migrations (otherwise an old schema is an error).
    pub migrate: bool,
    /// redb's page cache in bytes (redb's own default is 1 GiB).
    pub cache_size: usize,
    /// Verify every page's checksum before trusting the file (redb's
    /// `check_integrity_on_open`; it reads the whole file): a file altered
    /// since redb wrote it is refused as `Corrupted` instead of answering
    /// from damaged pages.
    pub verify: bool,
}

/// The page cache a store gets unless configured (`storage.cache_size`).
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            migrate: true,
            cache_size: DEFAULT_CACHE_SIZE,
            verify: true,
        }
    }
}

/// An open store file.
pub struct Store {
    db: Database,
    path: PathBuf,
    schema_version: u64,
    /// Writers take turns in arrival order. redb's own write lock is not
    /// fair: a compactor committing batch after batch re-took it before a
    /// waiting flush for up to 420 ms (benches/COMPACTION_RESULTS.md).
    write_turn: parking_lot::FairMutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn map_open_error(e: redb::DatabaseError, path: &Path) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::StoreLocked {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => Error::DataDir {
            action: "open the store file",
            path: path.to_path_buf(),
            source,
        },
        other => Error::Storage(other.into()),
    }
}

impl Store {
    /// Opens (creating and migrating as allowed) the store in `data_dir`.
    pub fn open(data_dir: &Path, opts: OpenOptions) -> Result<Store> {
        let path = db_path(data_dir);
        if !path.exists() {
            if !opts.create {
                return Err(Error::NotFound(format!(
                    "no store at {} (start `scopemon serve` or check --data-dir)",
                    path.display()
                )));
            }
            create_data_dir(data_dir)?;
        }
        // A file from a newer scopemon is refused before anything opens it
        // for writing (opening for writing alone updates redb's header).
        if let Some(found) = path
            .exists()
            .then(|| Self::read_only_version(&path))
            .transpose()?
            .flatten()
            && found > migrations::CURRENT
        {
            return Err(Error::SchemaTooNew {
                path,
                found,
                supported: migrations::CURRENT,
            });
        }
        let db = Database::builder()
            .set_cache_size(opts.cache_size)
            .set_check_integrity_on_open(opts.verify)
            .create(&path)
            .map_err(|e| map_open_error(e, &path))?;
        let found = migrations::recorded_version(&db)?;
        if found > migrations::CURRENT {
            return Err(Error::SchemaTooNew {
                path,
                found,
                supported: migrations::CURRENT,
            });
        }
        // A new, empty file is always initialised; an existing old one only
        // when migrating is allowed.
        if found < migrations::CURRENT && found > 0 && !opts.migrate {
            return Err(Error::SchemaTooOld {
                path,
                found,
                supported: migrations::CURRENT,
            });
        }
        migrations::apply(&db, found)?;
        Ok(Store {
            db,
            path,
            schema_version: migrations::CURRENT,
            write_turn: parking_lot::FairMutex::new(()),
        })
    }

    /// The schema version of a file, read without writing to it; `None`
    /// when it cannot be opened read-only (e.g. it needs crash recovery,
    /// which only a writable open performs).
    fn read_only_version(path: &Path) -> Result<Option<u64>> {
        match Database::builder().open_read_only(path) {
            Ok(db) => Ok(Some(migrations::recorded_version(&db)?)),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::StoreLocked {
                path: path.to_path_buf(),
            }),
            Err(_) => Ok(None),
        }
    }

    /// The schema version of the store in `data_dir`, changing nothing
    /// when possible (a file needing crash recovery is recovered first).
    pub fn inspect_version(data_dir: &Path) -> Result<u64> {
        let path = db_path(data_dir);
        if !path.exists() {
            return Err(Error::NotFound(format!("no store at {}", path.display())));
        }
        if let Some(v) = Self::read_only_version(&path)? {
            return Ok(v);
        }
        let db = Database::builder()
            .create(&path)
            .map_err(|e| map_open_error(e, &path))?;
        migrations::recorded_version(&db)
    }

    /// Begins a write transaction, in turn with every other writer of this
    /// store. The turn ends when the transaction is committed or dropped.
    pub fn begin_write(&self) -> Result<Write<'_>> {
        let turn = self.write_turn.lock();
        Ok(Write {
            txn: self.db.begin_write()?,
            _turn: turn,
        })
    }

    /// The redb database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Mutable access (compaction, integrity checks).
    pub fn db_mut(&mut self) -> &mut Database {
        &mut self.db
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version of the open file.
    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }

    /// Every series in the catalog.
    pub fn load_series(&self) -> Result<Vec<(u64, SeriesRecord)>> {
        load_series(&self.db)
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Proves the file takes writes: writes `value` under
    /// `meta.health_probe` in a write transaction (in turn with every other
    /// writer), commits, and reads it back in a new read transaction.
    /// Returns what was read (`None` when the key was missing).
    pub fn probe(&self, value: u64) -> Result<Option<u64>> {
        let txn = self.begin_write()?;
        txn.open_table(tables::META)?
            .insert(tables::HEALTH_PROBE_KEY, value)?;
        txn.commit()?;
        let read = self.db.begin_read()?;
        let found = read
            .open_table(tables::META)?
            .get(tables::HEALTH_PROBE_KEY)?
            .map(|v| v.value());
        Ok(found)
    }
}
