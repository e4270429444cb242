//! Backup and restore of a store file.
//!
//! Invariants:
//! - **One snapshot.** [`backup`] copies every table from ONE redb read
//!   transaction, so the copy is the store as it was at one commit: a flush,
//!   rollup or compaction committed meanwhile is wholly absent, never half
//!   present, and each sample is in exactly one of deltas/minute/hour/day as
//!   in any reader's snapshot. Writers go on during the copy (redb's MVCC);
//!   the only cost is that pages freed meanwhile are reclaimed after it.
//! - **Hot data is not in the file.** Samples still in memory are in no
//!   snapshot; the live backup (`Monitor::backup`) flushes first, through
//!   the engine's normal flush, so everything accepted before the call is in
//!   the copy.
//! - **Every table or nothing.** The tables of the current schema are copied
//!   by their typed definitions; a table this module does not know (a newer
//!   schema, a table added without a line here) fails the backup instead of
//!   being left out. The copy carries `meta.schema_version`, so it opens as
//!   a normal store.
//! - **Complete or absent.** A backup is written under a temporary name next
//!   to its target, committed durably, fsynced, and only then renamed into
//!   place (the directory fsynced after); a failed backup removes its
//!   temporary. Without `overwrite`, an existing target is never replaced.
//! - **Restore checks before it replaces.** [`restore`] opens the source
//!   read-only (a redb file with a known schema version: 1 up to
//!   [`migrations::CURRENT`]), refuses a store in the data directory that a
//!   process holds (always) or that holds any record (unless `force`), then
//!   copies the source next to the store, runs redb's integrity check and
//!   the pending migrations on that copy, and renames it over the store: the
//!   data directory holds the old store or the whole new one, never a mix.
//!   A source that fails any check changes nothing.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use redb::{
    Database, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value, WriteTransaction,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::tables::{
    ALERTS, BASELINES, DAY, DELTAS, HOUR, META, MINUTE, MINUTE_GROUPS, RETENTION, SERIES, SERVICES,
    THRESHOLDS,
};
use crate::store::{DB_FILE, create_data_dir, db_path, migrations};

/// What [`backup`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Records copied, per table (in copy order).
    pub records: Vec<(String, u64)>,
}

impl BackupReport {
    /// Records copied, all tables together.
    pub fn total_records(&self) -> u64 {
        self.records.iter().map(|(_, n)| n).sum()
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The store file now holding the restored data.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Schema version of the backup (the store is migrated to the current one).
    pub schema_version: u64,
    /// True when a store was replaced (it held data only with `force`).
    pub replaced: bool,
}

/// Writes a consistent copy of `db` (one read transaction) to `to`. Fails
/// with [`Error::WouldOverwrite`] when `to` exists and `overwrite` is false.
pub fn backup(db: &impl ReadableDatabase, to: &Path, overwrite: bool) -> Result<BackupReport> {
    if !overwrite && to.exists() {
        return Err(exists(to));
    }
    let tmp = temp_beside(to, "partial")?;
    let snapshot = db.begin_read()?;
    let written = write_copy(&snapshot, &tmp);
    drop(snapshot);
    let records = match written.and_then(|r| sync_file(&tmp).map(|()| r)) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    publish(&tmp, to, overwrite)?;
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes: crate::store::file_len(to)?,
        records,
    })
}

/// A fresh redb file at `tmp` holding every table of `src`, committed
/// durably and closed.
fn write_copy(src: &ReadTransaction, tmp: &Path) -> Result<Vec<(String, u64)>> {
    let db = Database::builder()
        .set_cache_size(crate::store::DEFAULT_CACHE_SIZE)
        .create(tmp)
        .map_err(|e| io_or_storage(e, "create the backup file", tmp))?;
    let txn = db.begin_write()?;
    let records = copy_tables(src, &txn)?;
    txn.commit()?;
    db.close()?;
    Ok(records)
}

/// Copies every table of the current schema, then checks that `src` holds
/// no other table.
fn copy_tables(src: &ReadTransaction, dst: &WriteTransaction) -> Result<Vec<(String, u64)>> {
    let records = vec![
        guarded(META, || copy_table(src, dst, META))?,
        guarded(SERIES, || copy_table(src, dst, SERIES))?,
        guarded(DELTAS, || copy_table(src, dst, DELTAS))?,
        guarded(MINUTE, || copy_table(src, dst, MINUTE))?,
        guarded(MINUTE_GROUPS, || copy_table(src, dst, MINUTE_GROUPS))?,
        guarded(HOUR, || copy_table(src, dst, HOUR))?,
        guarded(DAY, || copy_table(src, dst, DAY))?,
        guarded(RETENTION, || copy_table(src, dst, RETENTION))?,
        guarded(BASELINES, || copy_table(src, dst, BASELINES))?,
        guarded(THRESHOLDS, || copy_table(src, dst, THRESHOLDS))?,
        guarded(ALERTS, || copy_table(src, dst, ALERTS))?,
        guarded(SERVICES, || copy_table(src, dst, SERVICES))?,
    ];
    let unknown: Vec<String> = src
        .list_tables()?
        .map(|t| t.name().to_owned())
        .chain(src.list_multimap_tables()?.map(|t| t.name().to_owned()))
        .filter(|name| !records.iter().any(|(known, _)| known == name))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Internal(format!(
            "the store has tables this scopemon cannot copy ({}); no backup was written",
            unknown.join(", ")
        )));
    }
    Ok(records)
}

/// Runs one table's copy where a panic in redb's decoders (damaged bytes)
/// becomes [`Error::Corrupt`] naming the table.
fn guarded<K: Key + 'static, V: Value + 'static>(
    def: TableDefinition<K, V>,
    copy: impl FnOnce() -> Result<u64>,
) -> Result<(String, u64)> {
    let name = def.name().to_owned();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(copy)) {
        Ok(r) => r.map(|n| (name, n)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a record could not be decoded");
            Err(Error::Corrupt {
                table: "backup source",
                detail: format!("reading table {name} failed: {detail}"),
            })
        }
    }
}

/// Every record of `def` in `src`, inserted into `dst`; returns how many.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Restores the backup `from` into `data_dir` (see the module invariants).
pub fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<RestoreReport> {
    let schema_version = verify_source(from)?;
    let target = db_path(data_dir);
    let replaced = target.exists();
    if replaced {
        check_target(&target, force)?;
    }
    create_data_dir(data_dir)?;
    let tmp = temp_beside(&target, "restore")?;
    let staged = stage(from, &tmp, schema_version).and_then(|()| sync_file(&tmp));
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    publish(&tmp, &target, true)?;
    Ok(RestoreReport {
        bytes: crate::store::file_len(&target)?,
        path: target,
        schema_version,
        replaced,
    })
}

/// The schema version of the backup `from`, opened read-only (nothing in
/// it changes); [`Error::NotAStore`] when it is not a scopemon store.
fn verify_source(from: &Path) -> Result<u64> {
    let not_a_store = |reason: String| Error::NotAStore {
        path: from.to_path_buf(),
        reason,
    };
    if !from.is_file() {
        return Err(Error::NotFound(format!(
            "no backup file at {}",
            from.display()
        )));
    }
    let db = match Database::builder().open_read_only(from) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(Error::StoreLocked {
                path: from.to_path_buf(),
            });
        }
        Err(e) => return Err(not_a_store(format!("it does not open as a redb file: {e}"))),
    };
    let found = migrations::recorded_version(&db)
        .map_err(|e| not_a_store(format!("its schema version cannot be read: {e}")))?;
    if found == 0 {
        return Err(not_a_store("it records no schema version".into()));
    }
    if found > migrations::CURRENT {
        return Err(Error::SchemaTooNew {
            path: from.to_path_buf(),
            found,
            supported: migrations::CURRENT,
        });
    }
    Ok(found)
}

/// Refuses a store that a process holds, or (without `force`) one that
/// holds a record or cannot be inspected.
fn check_target(target: &Path, force: bool) -> Result<()> {
    let refuse = |what: String| {
        Error::WouldOverwrite(format!(
            "the store {} {what}; restoring would replace it (pass --force to do so)",
            target.display()
        ))
    };
    match Database::builder().open_read_only(target) {
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::StoreLocked {
            path: target.to_path_buf(),
        }),
        _ if force => Ok(()),
        Err(e) => Err(refuse(format!("cannot be inspected ({e})"))),
        Ok(db) => match records_outside_meta(&db) {
            Ok(0) => Ok(()),
            Ok(n) => Err(refuse(format!("holds {n} records"))),
            Err(e) => Err(refuse(format!("cannot be inspected ({e})"))),
        },
    }
}

/// Records in every table but `meta` (which even a new store fills).
fn records_outside_meta(db: &impl ReadableDatabase) -> Result<u64> {
    let txn = db.begin_read()?;
    let mut n = 0;
    for handle in txn.list_tables()? {
        if handle.name() != META.name() {
            n += txn.open_untyped_table(handle)?.len()?;
        }
    }
    Ok(n)
}

/// Copies `from` to `tmp`, checks the copy's integrity and migrates it.
fn stage(from: &Path, tmp: &Path, version: u64) -> Result<()> {
    std::fs::copy(from, tmp).map_err(|source| Error::DataDir {
        action: "copy the backup to",
        path: tmp.to_path_buf(),
        source,
    })?;
    let mut db = Database::builder()
        .set_cache_size(crate::store::DEFAULT_CACHE_SIZE)
        .open(tmp)
        .map_err(|e| io_or_storage(e, "open the copy of the backup", tmp))?;
    let intact = db.check_integrity().map_err(|e| Error::NotAStore {
        path: from.to_path_buf(),
        reason: format!("redb's integrity check failed: {e}"),
    })?;
    if !intact {
        return Err(Error::NotAStore {
            path: from.to_path_buf(),
            reason: "redb's integrity check found damage (it needed repair)".into(),
        });
    }
    migrations::apply(&db, version)?;
    db.close()?;
    Ok(())
}

/// A temporary path next to `target` (same directory, so a rename is
/// atomic), removed first when a crashed run left one behind.
fn temp_beside(target: &Path, what: &str) -> Result<PathBuf> {
    let name = target
        .file_name()
        .map_or_else(|| DB_FILE.into(), |n| n.to_string_lossy().into_owned());
    let dir = parent_dir(target);
    if !dir.is_dir() {
        return Err(Error::DataDir {
            action: "write into",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let tmp = dir.join(format!(".{name}.{what}-{}", std::process::id()));
    match std::fs::remove_file(&tmp) {
        Ok(()) => Ok(tmp),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(tmp),
        Err(source) => Err(Error::DataDir {
            action: "remove the stale temporary file",
            path: tmp,
            source,
        }),
    }
}

/// Moves the finished `tmp` to `to` and makes the rename durable. Without
/// `overwrite` the move is a hard link, which fails if `to` appeared
/// meanwhile (falling back to a rename where links are unsupported).
fn publish(tmp: &Path, to: &Path, overwrite: bool) -> Result<()> {
    let moved = if overwrite {
        std::fs::rename(tmp, to)
    } else {
        match std::fs::hard_link(tmp, to) {
            Ok(()) => std::fs::remove_file(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(tmp);
                return Err(exists(to));
            }
            Err(_) => std::fs::rename(tmp, to),
        }
    };
    moved
        .and_then(|()| File::open(parent_dir(to))?.sync_all())
        .map_err(|source| {
            let _ = std::fs::remove_file(tmp);
            Error::DataDir {
                action: "move the finished file into place at",
                path: to.to_path_buf(),
                source,
            }
        })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn exists(to: &Path) -> Error {
    Error::WouldOverwrite(format!(
        "{} already exists; choose another file or pass --force to replace it",
        to.display()
    ))
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::DataDir {
            action: "sync",
            path: path.to_path_buf(),
            source,
        })
}

/// An I/O failure opening a file names it; anything else is redb's.
fn io_or_storage(e: redb::DatabaseError, action: &'static str, path: &Path) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => Error::DataDir {
            action,
            path: path.to_path_buf(),
            source,
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpenOptions, Store};

    /// Every record of `def` in `txn`, printed.
    fn dump<K: Key + 'static, V: Value + 'static>(
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Vec<String> {
        let t = txn.open_table(def).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                format!("{:?} => {:?}", k.value(), v.value())
            })
            .collect()
    }

    /// Every table of the schema, printed (one row each after `fill`).
    fn dump_all(txn: &ReadTransaction) -> Vec<Vec<String>> {
        vec![
            dump(txn, META),
            dump(txn, SERIES),
            dump(txn, DELTAS),
            dump(txn, MINUTE),
            dump(txn, MINUTE_GROUPS),
            dump(txn, HOUR),
            dump(txn, DAY),
            dump(txn, RETENTION),
            dump(txn, BASELINES),
            dump(txn, THRESHOLDS),
            dump(txn, ALERTS),
            dump(txn, SERVICES),
        ]
    }

    /// A store with one raw record in every table (the copy decodes
    /// nothing, so the bytes need not be valid records).
    fn filled(dir: &Path) -> Store {
        let store = Store::open(dir, OpenOptions::default()).unwrap();
        let w = store.begin_write().unwrap();
        w.open_table(META).unwrap().insert("flush_seq", 7).unwrap();
        w.open_table(SERIES).unwrap().insert(1, &b"s"[..]).unwrap();
        w.open_table(DELTAS)
            .unwrap()
            .insert((1, 60_000, 0), &b"d"[..])
            .unwrap();
        for t in [MINUTE, MINUTE_GROUPS, HOUR, DAY] {
            w.open_table(t).unwrap().insert((1, 0), &b"b"[..]).unwrap();
        }
        for t in [RETENTION, BASELINES, THRESHOLDS, SERVICES] {
            w.open_table(t).unwrap().insert("k", &b"v"[..]).unwrap();
        }
        w.open_table(ALERTS).unwrap().insert(3, &b"a"[..]).unwrap();
        w.commit().unwrap();
        store
    }

    #[test]
    fn the_copy_holds_every_table_record_for_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(&dir.path().join("src"));
        let to = dir.path().join("copy.redb");
        let r = backup(&*store.db().unwrap(), &to, false).unwrap();
        assert_eq!(r.bytes, std::fs::metadata(&to).unwrap().len());
        let src = store.db().unwrap().begin_read().unwrap();
        let names: Vec<String> = src
            .list_tables()
            .unwrap()
            .map(|t| t.name().into())
            .collect();
        assert_eq!(r.records.len(), names.len(), "{:?} vs {names:?}", r.records);
        assert!(r.records.iter().all(|(_, n)| *n >= 1), "{:?}", r.records);
        let copy = Database::builder().open_read_only(&to).unwrap();
        let dumped = dump_all(&copy.begin_read().unwrap());
        assert_eq!(dumped, dump_all(&src));
        assert_eq!(
            migrations::recorded_version(&copy).unwrap(),
            migrations::CURRENT
        );
        // Refused without overwrite, replaced with it; no temporary is left.
        let again = backup(&*store.db().unwrap(), &to, false).unwrap_err();
        assert_eq!(again.code(), "would_overwrite", "{again}");
        backup(&*store.db().unwrap(), &to, true).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "src dir and copy.redb only: {left:?}");
    }

    #[test]
    fn a_table_backup_does_not_know_fails_it_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        let extra: TableDefinition<u64, u64> = TableDefinition::new("extra");
        let w = store.begin_write().unwrap();
        w.open_table(extra).unwrap().insert(1, 1).unwrap();
        w.commit().unwrap();
        let to = dir.path().join("copy.redb");
        let err = backup(&*store.db().unwrap(), &to, false).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [DB_FILE], "nothing but the store is left");
    }

    #[test]
    fn restore_refuses_a_store_with_data_and_replaces_it_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let src = filled(&dir.path().join("src"));
        let file = dir.path().join("b.redb");
        backup(&*src.db().unwrap(), &file, false).unwrap();
        let target = dir.path().join("target");
        drop(filled(&target));
        let before = std::fs::read(db_path(&target)).unwrap();
        let err = restore(&file, &target, false).unwrap_err();
        assert_eq!(err.code(), "would_overwrite", "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(std::fs::read(db_path(&target)).unwrap() == before);
        let r = restore(&file, &target, true).unwrap();
        assert!(r.replaced && r.schema_version == migrations::CURRENT);
        let restored = Database::builder()
            .open_read_only(db_path(&target))
            .unwrap();
        let want = dump_all(&src.db().unwrap().begin_read().unwrap());
        assert_eq!(dump_all(&restored.begin_read().unwrap()), want);
        // A new, empty store is no obstacle.
        let empty = dir.path().join("empty");
        drop(Store::open(&empty, OpenOptions::default()).unwrap());
        assert!(restore(&file, &empty, false).unwrap().replaced);
    }

    #[test]
    fn restore_refuses_what_is_not_a_store_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
        let plain = dir.path().join("plain.redb");
        let db = Database::create(&plain).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(TableDefinition::<u64, u64>::new("x"))
            .unwrap()
            .insert(1, 1)
            .unwrap();
        w.commit().unwrap();
        drop(db);
        let target = dir.path().join("target");
        for from in [&junk, &plain] {
            let err = restore(from, &target, true).unwrap_err();
            assert_eq!(err.code(), "not_a_store", "{err}");
        }
        assert!(!target.exists());
        let err = restore(&dir.path().join("missing"), &target, true).unwrap_err();
        assert_eq!(err.code(), "not_found", "{err}");
    }
}
