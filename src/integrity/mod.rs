//! The integrity of a stopped store: [`check`] finds damaged bytes,
//! [`repair`] leaves a store that opens and answers.
//!
//! A check has two halves. redb's own verification checks the checksum
//! of every page of the committed trees (it catches a flipped byte
//! anywhere in live data, even one that still decodes); it runs through
//! [`Overlay`], so the check never writes the file. Then a logical scan
//! reads every record of every table and decodes the ones scopemon
//! decodes, with redb's decoders run where a panic is caught: a damaged
//! page costs the records it holds, and the scan goes on at the next
//! series.
//!
//! Invariants:
//! - [`check`] never changes the file (writes go to memory);
//! - [`repair`] never makes things worse silently: when redb's repair
//!   (back to the last intact commit) leaves records that do not decode,
//!   they are deleted and counted per table; when the file cannot be
//!   repaired in place, everything readable is copied into a new file and
//!   the damaged one is kept beside it (`scopemon.redb.damaged-<unix s>`);
//!   the report says which, and what was dropped;
//! - a repaired store is checked again before [`repair`] returns.

mod scan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::guard::{catch, guard};
use crate::store::tables::{DAY, DELTAS, HOUR, MINUTE, MINUTE_GROUPS, SERIES};
use crate::store::{self, migrations};

use scan::{Sink, Source, open_overlay, remove_keys, scan, table_len};

/// A record that failed to decode, or a stretch of a table that could not
/// be read (`key` is then `after <last key read>`).
#[derive(Debug, Clone, Serialize)]
pub struct BadRecord {
    /// `series`, `deltas`, `minute`, `hour`, `day`, another table, or
    /// `store` when the file cannot be opened at all.
    pub table: &'static str,
    /// Its key, as printed.
    pub key: String,
    /// Why it failed.
    pub error: String,
}

impl BadRecord {
    /// True for a stretch that could not be read (records lost, count unknown).
    pub fn is_unreadable(&self) -> bool {
        self.key.starts_with("after ") || self.table == "store"
    }
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (table, key, error) = (self.table, &self.key, &self.error);
        match table {
            "store" => write!(f, "the store: {error}"),
            "series" => write!(f, "series {key}: {error}"),
            "deltas" => write!(f, "delta {key}: {error}"),
            "minute" | "hour" | "day" => write!(f, "{table} bucket {key}: {error}"),
            _ => write!(f, "{table} {key}: {error}"),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The store file.
    pub path: PathBuf,
    /// Its schema version (0 when it cannot be read).
    pub schema_version: u64,
    /// True when redb's verification passed (every page's checksum).
    pub intact: bool,
    /// What redb's verification found when it did not pass.
    pub integrity: Option<String>,
    /// Records read in the series catalog.
    pub series: u64,
    /// Delta records read (not yet rolled up).
    pub deltas: u64,
    /// Minute bucket records read.
    pub minute: u64,
    /// Minute groups read (sealed hours' minute records, schema 5).
    pub minute_groups: u64,
    /// Hour bucket records read.
    pub hour: u64,
    /// Day bucket records read.
    pub day: u64,
    /// Records that failed to decode and stretches that could not be read.
    pub bad: Vec<BadRecord>,
}

impl CheckReport {
    /// True when redb's verification passed and every record decoded.
    pub fn is_clean(&self) -> bool {
        self.intact && self.bad.is_empty()
    }
}

/// redb's verification: `None` when every page's checksum holds.
fn verify(path: &Path) -> Result<Option<String>> {
    let mut db = match open_overlay(path, false)? {
        Ok(db) => db,
        Err(why) => return Ok(Some(why)),
    };
    Ok(match catch(|| db.check_integrity()) {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) => Some(
            "page checksums fail in the last commit; redb can roll back to the last intact one"
                .to_owned(),
        ),
        Ok(Err(e)) => Some(format!("page checksums fail: {e}")),
        Err(panic) => Some(format!("redb's verification panicked: {panic}")),
    })
}

/// redb's verification, then every record decoded (see the module doc).
/// `progress` is called with (records done, records total). Never writes
/// the file.
pub fn check(data_dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<CheckReport> {
    let path = crate::offline::require_store(data_dir)?;
    guard(data_dir, "checking the store", || {
        let integrity = verify(&path)?;
        let mut report = CheckReport {
            path: path.clone(),
            schema_version: 0,
            intact: integrity.is_none(),
            integrity,
            series: 0,
            deltas: 0,
            minute: 0,
            minute_groups: 0,
            hour: 0,
            day: 0,
            bad: Vec::new(),
        };
        match Source::open_read(&path)? {
            Ok((_src, txn, version)) => {
                report.schema_version = version;
                scan(&txn, &mut report, &mut progress, &mut Sink::none())?;
            }
            Err(why) => report.bad.push(BadRecord {
                table: "store",
                key: String::new(),
                error: why,
            }),
        }
        Ok(report)
    })
}

/// How [`repair`] went about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairMethod {
    /// The store was clean; nothing was changed.
    NothingToDo,
    /// redb's own repair (back to the last intact commit when a checksum
    /// failed), then the records that do not decode deleted.
    InPlace,
    /// Everything readable copied into a new file; the damaged one kept.
    Copied,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The check before.
    pub before: CheckReport,
    /// How.
    pub method: RepairMethod,
    /// Records dropped, per table (those that did not decode, or that
    /// could not be read), where the table's header still gives its size.
    pub removed: BTreeMap<&'static str, u64>,
    /// Stretches that could not be read, per table: their records are
    /// lost (how many is unknown when the table's header is gone too).
    pub unreadable: BTreeMap<&'static str, u64>,
    /// Where the damaged file was kept ([`RepairMethod::Copied`]).
    pub damaged_copy: Option<PathBuf>,
    /// The check after.
    pub after: CheckReport,
}

/// Repairs the store in `data_dir` (see the module doc) and checks it
/// again; `progress` follows the first check. A file nothing can be read
/// from is [`Error::StoreCorrupted`] (restore a backup).
pub fn repair(data_dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<RepairReport> {
    let before = check(data_dir, &mut progress)?;
    if before.is_clean() {
        return Ok(RepairReport {
            after: before.clone(),
            before,
            method: RepairMethod::NothingToDo,
            removed: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            damaged_copy: None,
        });
    }
    let path = before.path.clone();
    let readable = !before.bad.iter().any(BadRecord::is_unreadable);
    let (method, (removed, unreadable), damaged_copy) =
        guard(data_dir, "repairing the store", || {
            if readable && let Some(removed) = in_place(&path)? {
                return Ok((RepairMethod::InPlace, (removed, BTreeMap::new()), None));
            }
            let (dropped, kept) = salvage(data_dir, &path)?;
            Ok((RepairMethod::Copied, dropped, Some(kept)))
        })?;
    let after = check(data_dir, |_, _| {})?;
    Ok(RepairReport {
        before,
        method,
        removed,
        unreadable,
        damaged_copy,
        after,
    })
}

fn empty_report(path: &Path) -> CheckReport {
    CheckReport {
        path: path.to_path_buf(),
        schema_version: 0,
        intact: true,
        integrity: None,
        series: 0,
        deltas: 0,
        minute: 0,
        minute_groups: 0,
        hour: 0,
        day: 0,
        bad: Vec::new(),
    }
}

/// redb's repair on open, then the records that do not decode deleted;
/// `None` when that cannot be done (redb cannot repair the file, or parts
/// of it cannot be read), for [`salvage`] to take over.
fn in_place(path: &Path) -> Result<Option<BTreeMap<&'static str, u64>>> {
    let opened = catch(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .open(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(Error::StoreLocked {
                path: path.to_path_buf(),
            });
        }
        _ => return Ok(None),
    };
    let mut report = empty_report(path);
    let mut copy = Sink::none();
    let txn = db.begin_read()?;
    scan(&txn, &mut report, &mut |_, _| {}, &mut copy)?;
    drop(txn);
    if report.bad.iter().any(BadRecord::is_unreadable) {
        return Ok(None);
    }
    let w = db.begin_write()?;
    for (name, keys) in &copy.bad_keys {
        match *name {
            "series" => remove_keys(&w, SERIES, keys)?,
            "deltas" => remove_keys(&w, DELTAS, keys)?,
            "minute" => remove_keys(&w, MINUTE, keys)?,
            "minute_groups" => remove_keys(&w, MINUTE_GROUPS, keys)?,
            "hour" => remove_keys(&w, HOUR, keys)?,
            "day" => remove_keys(&w, DAY, keys)?,
            _ => return Ok(None),
        }
    }
    w.commit()?;
    Ok(Some(
        copy.bad_keys
            .iter()
            .map(|(name, keys)| (*name, keys.len() as u64))
            .collect(),
    ))
}

/// Every table scopemon keeps.
const TABLES: [&str; 11] = [
    "series",
    "deltas",
    "minute",
    "hour",
    "day",
    "alerts",
    "meta",
    "retention",
    "baselines",
    "thresholds",
    "services",
];

/// Records dropped and stretches unreadable, per table.
type Dropped = (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>);

/// Copies everything readable that decodes into a new file, which then
/// takes the store's place; the damaged file is kept beside it. Returns
/// what was dropped and where the damaged file is.
fn salvage(data_dir: &Path, path: &Path) -> Result<(Dropped, PathBuf)> {
    let unreadable = |why: String| Error::StoreCorrupted {
        path: path.to_path_buf(),
        what: "repairing the store",
        detail: format!("{why}; nothing can be copied out of it: restore a backup"),
    };
    let (src, txn, version) = Source::open_read(path)?.map_err(unreadable)?;
    // 0: the version cannot be read; the tables are taken to be current.
    if version != migrations::CURRENT && version != 0 {
        return Err(unreadable(format!(
            "schema version {version}, not {}",
            migrations::CURRENT
        )));
    }
    let tmp = data_dir.join(format!("{}.repairing", store::DB_FILE));
    let _ = std::fs::remove_file(&tmp);
    let dst = Database::builder().create(&tmp)?;
    migrations::apply(&dst, 0)?;
    let mut copy = Sink {
        to: Some(&dst),
        bad_keys: BTreeMap::new(),
        copied: BTreeMap::new(),
    };
    let mut report = empty_report(path);
    scan(&txn, &mut report, &mut |_, _| {}, &mut copy)?;
    let mut unreadable = BTreeMap::new();
    for b in report.bad.iter().filter(|b| b.is_unreadable()) {
        *unreadable.entry(b.table).or_insert(0) += 1;
    }
    let removed = TABLES
        .iter()
        .filter(|t| **t != "meta")
        .filter_map(|t| {
            let had = table_len(&txn, t).unwrap_or(0);
            let kept = copy.copied.get(t).copied().unwrap_or(0);
            (had > kept).then_some((*t, had - kept))
        })
        .collect();
    drop(txn);
    drop(copy);
    dst.close()?;
    drop(src);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = data_dir.join(format!("{}.damaged-{secs}", store::DB_FILE));
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| Error::DataDir {
            action: "move the repaired store into place",
            path: to.to_path_buf(),
            source,
        })
    };
    moved(path, &kept)?;
    moved(&tmp, path)?;
    Ok(((removed, unreadable), kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpenOptions, Store};
    use crate::{Config, Kind, ManualClock, Monitor, Outcome, Sample};
    use redb::ReadableTable;

    /// A store with one series and 30 minute records; returns its dir.
    fn store(dir: &Path) {
        let clock = std::sync::Arc::new(ManualClock::new(1_800_000_000_000));
        let m = Monitor::builder(Config::with_data_dir(dir))
            .clock(clock.clone())
            .background(false)
            .open()
            .unwrap();
        for i in 0..30 {
            m.record(&Sample {
                namespace: "ns",
                metric: "m",
                kind: Kind::Latency,
                value: 10.0,
                tags: &[],
                outcome: Outcome::Ok,
                timestamp_ms: Some(1_800_000_000_000 - 3_600_000 + i * 60_000),
            })
            .unwrap();
        }
        m.close().unwrap();
    }

    #[test]
    fn a_record_that_does_not_decode_is_found_and_deleted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        let key = {
            let s = Store::open(dir.path(), OpenOptions::default()).unwrap();
            let w = s.begin_write().unwrap();
            let key = {
                let mut t = w.open_table(MINUTE).unwrap();
                let key = t.first().unwrap().map(|(k, _)| k.value()).unwrap();
                t.insert(key, b"not a record".as_slice()).unwrap();
                key
            };
            w.commit().unwrap();
            key
        };
        let file = store::db_path(dir.path());
        let bytes = std::fs::read(&file).unwrap();
        let r = check(dir.path(), |_, _| {}).unwrap();
        assert!(r.intact && !r.is_clean(), "{r:?}");
        assert_eq!((r.bad.len(), r.bad[0].table), (1, "minute"), "{r:?}");
        assert_eq!(r.bad[0].key, format!("{key:?}"));
        assert!(
            std::fs::read(&file).unwrap() == bytes,
            "check wrote the file"
        );
        let r = repair(dir.path(), |_, _| {}).unwrap();
        assert_eq!(r.method, RepairMethod::InPlace);
        assert_eq!(r.removed.get("minute"), Some(&1));
        assert!(r.after.is_clean() && r.after.minute == 29, "{:?}", r.after);
        let again = repair(dir.path(), |_, _| {}).unwrap();
        assert_eq!(again.method, RepairMethod::NothingToDo);
    }
}
