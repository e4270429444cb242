//! The scan under [`super::check`] and [`super::repair`]: a damaged file
//! opened as leniently as redb allows ([`Source`]), and every table read
//! in key order where a panic is caught. Past a stretch that cannot be
//! read, an integer-keyed table resumes at the next series, so a damaged
//! page costs the records it holds; a string-keyed table (small) loses
//! the rest of it. Good records can be copied into another file ([`Sink`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError,
};

use redb::StorageBackend;

use super::{BadRecord, CheckReport};
use crate::error::{Error, Result};
use crate::store::codec::{Codec, decode_series, group_members};
use crate::store::guard::catch;
use crate::store::migrations;
use crate::store::overlay::Overlay;
use crate::store::tables::{
    ALERTS, BASELINES, DAY, DELTAS, HOUR, META, MINUTE, MINUTE_GROUPS, RETENTION, SERIES, SERVICES,
    THRESHOLDS,
};

/// Most unreadable stretches one table may show before the scan gives up
/// on the rest of it.
const MAX_FAILURES: u32 = 64;

/// Most attempts in a row that read nothing (the next series starts in
/// the same damaged page, or the table's root is gone) before the scan
/// gives up on the rest of a table.
const MAX_STALLED: u32 = 8;

/// Keys of the integer-keyed tables, whose scan can resume past damage.
/// (redb's key types are generic over a lifetime; these methods pin it
/// down for the three concrete keys.)
pub(super) trait IntKey: redb::Key + Copy + Ord + Debug + 'static {
    fn sid(self) -> u64;
    fn first_of(sid: u64) -> Self;
    fn parts(self) -> (u64, i64, u64);
    fn from_parts(p: (u64, i64, u64)) -> Self;
    fn range(
        t: &redb::ReadOnlyTable<Self, &'static [u8]>,
        from: Option<Self>,
    ) -> Result<redb::Range<'static, Self, &'static [u8]>>;
    fn owned(k: &redb::AccessGuard<'_, Self>) -> Self;
    fn insert(t: &mut redb::Table<'_, Self, &'static [u8]>, k: Self, v: &[u8]) -> Result<()>;
    fn remove(t: &mut redb::Table<'_, Self, &'static [u8]>, k: Self) -> Result<()>;
}

macro_rules! int_key {
    ($t:ty, |$s:ident| $sid:expr, |$i:ident| $first:expr, |$k:ident| $parts:expr, |$p:ident| $from:expr) => {
        impl IntKey for $t {
            fn sid(self) -> u64 {
                let $s = self;
                $sid
            }
            fn first_of($i: u64) -> Self {
                $first
            }
            fn parts(self) -> (u64, i64, u64) {
                let $k = self;
                $parts
            }
            fn from_parts($p: (u64, i64, u64)) -> Self {
                $from
            }
            fn range(
                t: &redb::ReadOnlyTable<Self, &'static [u8]>,
                from: Option<Self>,
            ) -> Result<redb::Range<'static, Self, &'static [u8]>> {
                Ok(match from {
                    Some(k) => t.range(k..)?,
                    None => t.range::<Self>(..)?,
                })
            }
            fn owned(k: &redb::AccessGuard<'_, Self>) -> Self {
                k.value()
            }
            fn insert(
                t: &mut redb::Table<'_, Self, &'static [u8]>,
                k: Self,
                v: &[u8],
            ) -> Result<()> {
                t.insert(k, v)?;
                Ok(())
            }
            fn remove(t: &mut redb::Table<'_, Self, &'static [u8]>, k: Self) -> Result<()> {
                t.remove(k)?;
                Ok(())
            }
        }
    };
}

int_key!(u64, |s| s, |i| i, |k| (k, 0, 0), |p| p.0);
int_key!(
    (u64, i64),
    |s| s.0,
    |i| (i, i64::MIN),
    |k| (k.0, k.1, 0),
    |p| (p.0, p.1)
);
int_key!((u64, i64, u64), |s| s.0, |i| (i, i64::MIN, 0), |k| k, |p| p);

/// Opens the file through an [`Overlay`] (nothing written to it);
/// `Ok(Err(why))` when redb cannot open it. `verify` runs redb's full
/// verification and repair (in memory) as part of the open.
pub(super) fn open_overlay(
    path: &Path,
    verify: bool,
) -> Result<std::result::Result<Database, String>> {
    if std::fs::metadata(path)?.len() == 0 {
        return Ok(Err("the file is empty".to_owned()));
    }
    let backend = Overlay::open(path)?;
    let opened = catch(|| {
        Database::builder()
            .set_check_integrity_on_open(verify)
            .create_with_backend(backend)
    });
    match opened {
        Ok(Ok(db)) => Ok(Ok(db)),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(Error::StoreLocked {
            path: path.to_path_buf(),
        }),
        Ok(Err(e)) => Ok(Err(format!("redb cannot open it: {e}"))),
        Err(panic) => Ok(Err(format!("redb panicked opening it: {panic}"))),
    }
}

/// A damaged file opened for reading, as leniently as redb allows.
pub(super) enum Source {
    /// Read-only in `SingleWriter` mode, which loads no allocator state (a
    /// damaged allocator page does not stop the reading).
    ReadOnly(redb::ReadOnlyDatabase),
    /// Opened for writing (through an [`Overlay`]): redb's crash recovery
    /// runs in memory, for a file a read-only open refuses.
    Writable(Database),
}

impl Source {
    /// Opens `path` without writing it and begins reading: the source, a
    /// read transaction and the schema version (0 when unreadable), or
    /// `Ok(Err(why))` when redb cannot read it at all. A truncated file is
    /// read as if padded with zeros to its stored length.
    pub(super) fn open_read(
        path: &Path,
    ) -> Result<std::result::Result<(Source, ReadTransaction, u64), String>> {
        let why = match Source::open(path, None)? {
            Ok(src) => match src.begin_read() {
                Ok((txn, v)) => return Ok(Ok((src, txn, v))),
                Err(e) => format!("no read transaction: {e}"),
            },
            Err(why) => why,
        };
        let Some(len) = stored_length(path) else {
            return Ok(Err(why));
        };
        Ok(match Source::open(path, Some(len))? {
            Ok(src) => match src.begin_read() {
                Ok((txn, v)) => Ok((src, txn, v)),
                Err(_) => Err(why),
            },
            Err(_) => Err(why),
        })
    }

    /// Opens `path` without writing it (seen `pad` bytes long when given);
    /// `Ok(Err(why))` when redb cannot.
    fn open(path: &Path, pad: Option<u64>) -> Result<std::result::Result<Source, String>> {
        let ro = catch(|| -> Result<_> {
            let backend = Overlay::open(path)?;
            if let Some(len) = pad {
                backend.set_len(len)?;
            }
            Ok(Database::builder()
                .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
                .open_read_only_with_backend(backend))
        });
        match ro {
            Ok(Ok(Ok(db))) => return Ok(Ok(Source::ReadOnly(db))),
            Ok(Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen))) => {
                return Err(Error::StoreLocked {
                    path: path.to_path_buf(),
                });
            }
            Ok(Err(e)) => return Err(e),
            _ => {}
        }
        Ok(open_overlay(path, false)?.map(Source::Writable))
    }

    /// A read transaction and the schema version (0 when unreadable).
    fn begin_read(&self) -> Result<(ReadTransaction, u64)> {
        let version =
            |v: std::result::Result<Result<u64>, String>| v.ok().and_then(|r| r.ok()).unwrap_or(0);
        Ok(match self {
            Source::ReadOnly(db) => (
                db.begin_read()?,
                version(catch(|| migrations::recorded_version(db))),
            ),
            Source::Writable(db) => (
                db.begin_read()?,
                version(catch(|| migrations::recorded_version(db))),
            ),
        })
    }
}

/// The length a truncated file should have, as redb reports it when
/// asked to open it for writing (through an [`Overlay`]).
fn stored_length(path: &Path) -> Option<u64> {
    let why = match open_overlay(path, false) {
        Ok(Err(why)) => why,
        _ => return None,
    };
    let digits: String = why
        .split("layout_len=")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Where a scan's good records go (a salvage copies them), and which bad
/// keys it remembers (an in-place repair deletes them).
pub(super) struct Sink<'a> {
    pub(super) to: Option<&'a Database>,
    pub(super) bad_keys: BTreeMap<&'static str, Vec<(u64, i64, u64)>>,
    /// Records copied per table.
    pub(super) copied: BTreeMap<&'static str, u64>,
}

impl Sink<'_> {
    pub(super) fn none() -> Sink<'static> {
        Sink {
            to: None,
            bad_keys: BTreeMap::new(),
            copied: BTreeMap::new(),
        }
    }
}

/// Records per write transaction when copying.
const BATCH: usize = 10_000;

/// Reads every table of `db` into `report` (see [`check`]); good records
/// go to `copy.to` when set.
pub(super) fn scan(
    txn: &ReadTransaction,
    report: &mut CheckReport,
    progress: &mut dyn FnMut(u64, u64),
    copy: &mut Sink<'_>,
) -> Result<()> {
    let total: u64 = ["series", "deltas", "minute", "minute_groups", "hour", "day"]
        .iter()
        .map(|n| table_len(txn, n).unwrap_or(0))
        .sum();
    let mut done = 0u64;
    let mut tick = |progress: &mut dyn FnMut(u64, u64)| {
        done += 1;
        progress(done, total.max(done));
    };
    let bad = &mut report.bad;
    let mut sids = Vec::new();
    report.series = scan_int(txn, SERIES, "series", &[], bad, copy, |k, v| {
        tick(progress);
        decode_series(v)?;
        sids.push(k);
        Ok(())
    })?;
    let mut codec = Codec::new();
    let mut bucket = |v: &[u8], progress: &mut dyn FnMut(u64, u64)| {
        tick(progress);
        codec.decode(v).map(|_| ())
    };
    report.deltas = scan_int(txn, DELTAS, "deltas", &sids, bad, copy, |_, v| {
        bucket(v, progress)
    })?;
    for (name, def, count) in [
        ("minute", MINUTE, &mut report.minute),
        ("hour", HOUR, &mut report.hour),
        ("day", DAY, &mut report.day),
    ] {
        *count = scan_int(txn, def, name, &sids, bad, copy, |_, v| bucket(v, progress))?;
    }
    // A group is good when its framing and every member decode.
    report.minute_groups = scan_int(
        txn,
        MINUTE_GROUPS,
        "minute_groups",
        &sids,
        bad,
        copy,
        |k, v| {
            for (_, member) in group_members(k.1, v)? {
                bucket(member, progress)?;
            }
            Ok(())
        },
    )?;
    scan_int(txn, ALERTS, "alerts", &[], bad, copy, |_, _| Ok(()))?;
    scan_side(txn, bad, copy)
}

/// The string-keyed tables: read whole (they are small); a failure loses
/// the rest of that table.
fn scan_side(txn: &ReadTransaction, bad: &mut Vec<BadRecord>, copy: &mut Sink<'_>) -> Result<()> {
    let mut meta: Vec<(String, u64)> = Vec::new();
    read_str(txn, META, "meta", bad, |k, v| meta.push((k.to_owned(), v)));
    let mut sides = Vec::new();
    for (name, def) in [
        ("retention", RETENTION),
        ("baselines", BASELINES),
        ("thresholds", THRESHOLDS),
        ("services", SERVICES),
    ] {
        let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
        read_str(txn, def, name, bad, |k, v| {
            rows.push((k.to_owned(), v.to_vec()))
        });
        sides.push((name, def, rows));
    }
    let Some(to) = copy.to else { return Ok(()) };
    let w = to.begin_write()?;
    {
        let mut t = w.open_table(META)?;
        for (k, v) in &meta {
            if k != migrations::SCHEMA_VERSION_KEY {
                t.insert(k.as_str(), *v)?;
            }
        }
        for (name, def, rows) in &sides {
            let mut t = w.open_table(*def)?;
            for (k, v) in rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            copy.copied.insert(name, rows.len() as u64);
        }
    }
    w.commit()?;
    Ok(())
}

/// Every entry of a string-keyed table, handed to `visit` until one
/// cannot be read.
fn read_str<V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<&str, V>,
    name: &'static str,
    bad: &mut Vec<BadRecord>,
    mut visit: impl FnMut(&str, V::SelfType<'_>),
) {
    let mut last: Option<String> = None;
    let outcome = catch(|| -> Result<()> {
        let table = match txn.open_table(def) {
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            other => other?,
        };
        for entry in table.iter()? {
            let (k, v) = entry?;
            visit(k.value(), v.value());
            last = Some(k.value().to_owned());
        }
        Ok(())
    });
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(panic) => format!("a read panicked: {panic}"),
    };
    bad.push(BadRecord {
        table: name,
        key: format!("after {}", last.as_deref().unwrap_or("the start")),
        error: format!("unreadable: {error}"),
    });
}

/// Every entry of an integer-keyed table in key order, each handed to
/// `visit` (an error there marks that record bad). A stretch that cannot
/// be read (redb panics or errs, keys out of order) is recorded, and the
/// scan resumes at the next series (the next id in `sids`, or the next
/// integer when `sids` is empty). Returns the records read; good ones are
/// copied to `copy.to` when set.
#[allow(clippy::too_many_arguments)]
fn scan_int<K: IntKey>(
    txn: &ReadTransaction,
    def: TableDefinition<K, &[u8]>,
    name: &'static str,
    sids: &[u64],
    bad: &mut Vec<BadRecord>,
    copy: &mut Sink<'_>,
    mut visit: impl FnMut(K, &[u8]) -> Result<()>,
) -> Result<u64> {
    let (mut from, mut last): (Option<K>, Option<K>) = (None, None);
    let (mut read, mut failures, mut stalled) = (0u64, 0u32, 0u32);
    let mut batch: Vec<(K, Vec<u8>)> = Vec::new();
    loop {
        let (start, reached) = (from, last);
        let outcome = catch(|| -> Result<()> {
            let table = match txn.open_table(def) {
                Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                other => other?,
            };
            for entry in K::range(&table, start)? {
                let (k, v) = entry?;
                let key = K::owned(&k);
                if last.is_some_and(|l| key <= l) {
                    return Err(Error::Internal(format!("key {key:?} out of order")));
                }
                last = Some(key);
                read += 1;
                match visit(key, v.value()) {
                    Ok(()) if copy.to.is_some() => batch.push((key, v.value().to_vec())),
                    Ok(()) => {}
                    Err(e) => bad_record(bad, copy, name, key, e),
                }
                if batch.len() >= BATCH {
                    write_batch(copy, def, name, &mut batch)?;
                }
            }
            Ok(())
        });
        let error = match outcome {
            Ok(Ok(())) => break,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("a read panicked: {panic}"),
        };
        // One entry per damaged stretch: attempts that read nothing more
        // are the same stretch.
        if failures == 0 || last != reached {
            let after = last.map_or_else(|| "the start".to_owned(), |l| format!("{l:?}"));
            bad.push(BadRecord {
                table: name,
                key: format!("after {after}"),
                error: format!("unreadable: {error}"),
            });
            stalled = 0;
        } else {
            stalled += 1;
        }
        failures += 1;
        let current = last.or(start).map(K::sid);
        let next = if sids.is_empty() {
            current.map_or(Some(1), |s| s.checked_add(1))
        } else {
            sids.iter()
                .copied()
                .find(|&x| current.is_none_or(|c| x > c))
        };
        match next.map(K::first_of) {
            Some(n)
                if failures < MAX_FAILURES
                    && stalled < MAX_STALLED
                    && from.is_none_or(|f| n > f) =>
            {
                from = Some(n)
            }
            _ => break,
        }
    }
    write_batch(copy, def, name, &mut batch)?;
    Ok(read)
}

fn bad_record<K: IntKey>(
    bad: &mut Vec<BadRecord>,
    copy: &mut Sink<'_>,
    name: &'static str,
    key: K,
    e: Error,
) {
    bad.push(BadRecord {
        table: name,
        key: format!("{key:?}"),
        error: e.to_string(),
    });
    copy.bad_keys.entry(name).or_default().push(key.parts());
}

fn write_batch<K: IntKey>(
    copy: &mut Sink<'_>,
    def: TableDefinition<K, &[u8]>,
    name: &'static str,
    batch: &mut Vec<(K, Vec<u8>)>,
) -> Result<()> {
    let Some(to) = copy.to else {
        batch.clear();
        return Ok(());
    };
    let w = to.begin_write()?;
    {
        let mut t = w.open_table(def)?;
        for (k, v) in batch.iter() {
            K::insert(&mut t, *k, v)?;
        }
    }
    w.commit()?;
    *copy.copied.entry(name).or_default() += batch.len() as u64;
    batch.clear();
    Ok(())
}

pub(super) fn remove_keys<K: IntKey>(
    w: &redb::WriteTransaction,
    def: TableDefinition<K, &[u8]>,
    keys: &[(u64, i64, u64)],
) -> Result<()> {
    let mut t = w.open_table(def)?;
    for k in keys {
        K::remove(&mut t, K::from_parts(*k))?;
    }
    Ok(())
}

/// Records in table `name` as its header says; `None` when unreadable.
pub(super) fn table_len(txn: &ReadTransaction, name: &str) -> Option<u64> {
    catch(|| -> Result<u64> {
        let def = TableDefinition::<(), ()>::new(name);
        match txn.open_untyped_table(def) {
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            other => Ok(other?.len()?),
        }
    })
    .ok()
    .and_then(|r| r.ok())
}
