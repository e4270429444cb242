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
//!    Compaction later folds a sealed hour's `minute` records into a few
//!    `minute_groups` entries (runs of consecutive minutes), also in one
//!    transaction (`group.rs`).

pub mod codec;
pub mod flush;
pub mod group;
pub mod guard;
pub mod limited;
pub mod migrations;
pub mod overlay;
pub mod repack;
pub mod space;
pub mod tables;

use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::store::codec::SeriesRecord;
use crate::store::limited::{DiskBudget, LimitedBackend};
use crate::store::space::WriteHealth;
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
    // Nothing is migrated here: a newer file is too new, any other version
    // (an unwritten one included) too old.
    refuse_schema(&path, found, false)?;
    if found != migrations::CURRENT {
        return Err(Error::SchemaTooOld {
            path,
            found,
            supported: migrations::CURRENT,
        });
    }
    Ok(db)
}

/// A writer's turn: every write transaction, and a reopen, happen while one
/// is held (see [`Store::turn`]).
pub struct Turn<'a>(#[allow(dead_code)] parking_lot::FairMutexGuard<'a, ()>);

/// A write transaction holding its writer's turn (see [`Store::begin_write`]).
pub struct Write<'a> {
    // Field order matters: the transaction drops (aborts) before the turn
    // is handed on.
    txn: redb::WriteTransaction,
    store: &'a Store,
    _turn: Turn<'a>,
}

impl Write<'_> {
    /// Commits, then hands the turn on. A failed commit (other than a
    /// poisoned transaction) may already be durable, and redb then refuses
    /// every read and write until the file is reopened: the store is
    /// reopened at once, still in this writer's turn, so readers are back
    /// before the error returns, and the caller reads back what landed.
    /// (If the reopen fails, [`WriteHealth::needs_reopen`] stays set and
    /// the flusher retries it.)
    pub fn commit(self) -> Result<()> {
        let Write { txn, store, _turn } = self;
        match txn.commit() {
            Ok(()) => Ok(()),
            Err(redb::CommitError::TransactionPoisoned) => {
                Err(redb::CommitError::TransactionPoisoned.into())
            }
            Err(e) => {
                let err = Error::from(e);
                store.health.write_failed(&err, true);
                if let Err(again) = store.reopen(&_turn) {
                    tracing::warn!(error = %again, "reopening the store failed; retried by the flusher");
                }
                Err(err)
            }
        }
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

/// A read transaction on the open database. It holds the database's read
/// side, so a reopen ([`Store::reopen`]) waits for it to end instead of
/// pulling the file from under it.
pub struct Read<'a> {
    // The transaction ends before the database may be swapped.
    txn: redb::ReadTransaction,
    _db: DbRef<'a>,
}

impl std::ops::Deref for Read<'_> {
    type Target = redb::ReadTransaction;
    fn deref(&self) -> &redb::ReadTransaction {
        &self.txn
    }
}

/// The open database, borrowed (see [`Store::db`]).
pub type DbRef<'a> = parking_lot::MappedRwLockReadGuard<'a, Database>;

/// Opens (creating) the redb file at `path` with `opts`' cache and disk.
fn open_db(path: &Path, opts: &OpenOptions) -> Result<Database> {
    let mut builder = Database::builder();
    builder
        .set_cache_size(opts.cache_size)
        .set_check_integrity_on_open(opts.verify);
    let opened = match &opts.disk_budget {
        Some(budget) => LimitedBackend::open(path, budget.clone())
            .and_then(|backend| builder.create_with_backend(backend)),
        None => builder.create(path),
    };
    opened.map_err(|e| map_open_error(e, path))
}

/// Size in bytes of the file at `path`; the error names it.
pub fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::DataDir {
            action: "read the size of",
            path: path.to_path_buf(),
            source,
        })
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
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the directory and file when missing.
    pub create: bool,
    /// Apply pending migrations (otherwise an old schema is an error).
    pub migrate: bool,
    /// redb's page cache in bytes (redb's own default is 1 GiB).
    pub cache_size: usize,
    /// Fault tests: the file's writes fail with `ENOSPC` once this budget
    /// is spent ([`limited`]). `None`: the real file, unlimited.
    pub disk_budget: Option<DiskBudget>,
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
            disk_budget: None,
            verify: true,
        }
    }
}

/// An open store file.
///
/// The database sits behind a lock so that it can be closed and reopened
/// in place after an I/O error ([`Store::reopen`]): readers hold its read
/// side for the life of their transaction ([`Read`]), a reopen its write
/// side, and writers their turn ([`Turn`]), which a reopen takes first.
/// Lock order: turn, then the engine's commit gate, then the database.
pub struct Store {
    /// `None` only between a failed reopen and the next successful one.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    schema_version: u64,
    opts: OpenOptions,
    /// Writers take turns in arrival order. redb's own write lock is not
    /// fair: a compactor committing batch after batch re-took it before a
    /// waiting flush for up to 420 ms (benches/COMPACTION_RESULTS.md).
    write_turn: parking_lot::FairMutex<()>,
    health: WriteHealth,
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

/// A schema version that may not be opened: newer than this build, or
/// older unless `migrate` (version 0, a new empty file, passes: a writable
/// open initialises it, a read-only one refuses it after this).
fn refuse_schema(path: &Path, found: u64, migrate: bool) -> Result<()> {
    if found > migrations::CURRENT {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: migrations::CURRENT,
        });
    }
    if found < migrations::CURRENT && found > 0 && !migrate {
        return Err(Error::SchemaTooOld {
            path: path.to_path_buf(),
            found,
            supported: migrations::CURRENT,
        });
    }
    Ok(())
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
        // A file this open may not use (from a newer scopemon, or older
        // while migrating is not allowed) is refused before anything opens
        // it for writing: opening for writing alone updates redb's header.
        // A file that needs crash recovery has no read-only answer; it is
        // checked again once open.
        if path.exists()
            && let Some(found) = Self::read_only_version(&path)?
        {
            refuse_schema(&path, found, opts.migrate)?;
        }
        let db = open_db(&path, &opts)?;
        let found = migrations::recorded_version(&db)?;
        refuse_schema(&path, found, opts.migrate)?;
        migrations::apply(&db, found)?;
        Ok(Store {
            db: RwLock::new(Some(db)),
            path,
            schema_version: migrations::CURRENT,
            opts,
            write_turn: parking_lot::FairMutex::new(()),
            health: WriteHealth::default(),
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

    /// Waits for this writer's turn (see [`Turn`]).
    pub fn turn(&self) -> Turn<'_> {
        Turn(self.write_turn.lock())
    }

    /// Begins a write transaction, in turn with every other writer of this
    /// store. The turn ends when the transaction is committed or dropped.
    pub fn begin_write(&self) -> Result<Write<'_>> {
        let turn = self.turn();
        let txn = self
            .db()?
            .begin_write()
            .map_err(|e| self.failed(e.into()))?;
        Ok(Write {
            txn,
            store: self,
            _turn: turn,
        })
    }

    /// Begins a read transaction (see [`Read`]).
    pub fn begin_read(&self) -> Result<Read<'_>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(Read { txn, _db: db })
    }

    /// Bytes redb's page cache holds now (read cache and write buffer;
    /// at most `storage.cache_size`), 0 while the store is reopening.
    pub fn cache_used_bytes(&self) -> usize {
        self.db().map_or(0, |db| db.cache_stats().used_bytes())
    }

    /// The open database; an error while it is closed after a failed
    /// reopen. A reader keeps the borrow while its transaction lives.
    pub fn db(&self) -> Result<DbRef<'_>> {
        parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref).map_err(|_| {
            Error::StoreUnavailable {
                path: self.path.clone(),
                reason: self
                    .health
                    .failing()
                    .unwrap_or_else(|| "it is being reopened".to_owned()),
            }
        })
    }

    /// Mutable access (compaction, integrity checks).
    pub fn db_mut(&mut self) -> Result<&mut Database> {
        let path = self.path.clone();
        self.db.get_mut().as_mut().ok_or(Error::StoreUnavailable {
            path,
            reason: "it is closed".to_owned(),
        })
    }

    /// Records a write that failed with `err` (an I/O error marks the
    /// store for a reopen) and hands the error back.
    pub fn failed(&self, err: Error) -> Error {
        let io = space::is_io_failure(&err);
        if io {
            self.health.write_failed(&err, true);
        }
        err
    }

    /// Whether the store takes writes (see [`WriteHealth`]).
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// A flush committed (or, with nothing to write, a probe did): the
    /// store takes writes again.
    pub fn writes_succeed(&self) {
        self.health.write_succeeded();
    }

    /// Closes the database and opens the file again, as redb requires after
    /// an I/O error (it refuses every write until then); redb recovers the
    /// file from its last durable commit. The caller holds the writers'
    /// turn, so no write transaction is live; readers finish first. On
    /// failure the store stays closed (readers get
    /// [`Error::StoreUnavailable`]) until a later reopen succeeds.
    pub fn reopen(&self, _turn: &Turn<'_>) -> Result<()> {
        let mut slot = self.db.write();
        if let Some(old) = slot.take()
            && let Err(e) = old.close()
        {
            tracing::debug!(error = %e, "closing the failed database");
        }
        // No full verification here: the file was verified when first
        // opened, and a reopen must be quick (readers wait for it).
        let opts = OpenOptions {
            verify: false,
            ..self.opts.clone()
        };
        let db = open_db(&self.path, &opts)?;
        *slot = Some(db);
        self.health.reopened();
        tracing::warn!(path = %self.path.display(), "store reopened after a write error");
        Ok(())
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
        load_series(&*self.db()?)
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
        let read = self.begin_read()?;
        let found = read
            .open_table(tables::META)?
            .get(tables::HEALTH_PROBE_KEY)?
            .map(|v| v.value());
        Ok(found)
    }
}
