//! Operations on a stopped store: integrity check, compaction, retention
//! overrides, schema migrations, and opening the store to query it. The
//! `scopemon` commands are thin layers over these functions (argument
//! parsing, progress bars, tables); embedders can call them as well.
//!
//! Invariants:
//! - Nothing here creates a store: a data directory without a store file is
//!   [`Error::NotFound`] naming the path ([`require_store`]).
//! - Another process holding the store (a running `scopemon serve`) is
//!   [`Error::StoreLocked`]; the file is not touched.
//! - Only [`migrate`] (and [`open`], as a [`Monitor`] does) applies schema
//!   migrations; the other operations refuse an old schema with
//!   [`Error::SchemaTooOld`] before opening the file for writing, so they
//!   leave it byte for byte (unless it needs crash recovery, which only a
//!   writable open performs).
//! - A compaction dry run opens the file read-only: it leaves it
//!   byte-for-byte unchanged.
//! - Every function closes the store before it returns.
//! - [`backup`] never changes the store it copies (it opens it read-only
//!   unless crash recovery is due); [`restore`] changes nothing when the
//!   backup or the target is refused (see `src/backup.rs`).
//! - Damaged bytes never panic: each operation runs inside a store guard
//!   (`store::guard`), so they come back as [`Error::StoreCorrupted`];
//!   [`check`] and [`repair`] (module `integrity`) find and mend them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, Retention, RetentionRule};
use crate::error::{Error, Result};
use crate::monitor::Monitor;
use crate::retention::{self, CompactOptions, RetentionPolicy};
use crate::store::codec::Codec;
use crate::store::guard::guard;
use crate::store::{self, OpenOptions, Store, migrations};

pub use crate::backup::{BackupReport, RestoreReport};
pub use crate::integrity::{BadRecord, CheckReport, RepairMethod, RepairReport, check, repair};
pub use crate::retention::CompactReport;

/// Opens an existing store, neither creating nor migrating it.
const EXISTING: OpenOptions = OpenOptions {
    disk_budget: None,
    create: false,
    migrate: false,
    cache_size: store::DEFAULT_CACHE_SIZE,
    verify: true,
};

/// The store file in `data_dir`, or [`Error::NotFound`] naming it.
pub fn require_store(data_dir: &Path) -> Result<PathBuf> {
    let path = store::db_path(data_dir);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::NotFound(format!(
            "no store at {} (check --data-dir)",
            path.display()
        )))
    }
}

/// A [`Monitor`] over the existing store in `config.storage.data_dir`,
/// without background threads, for queries, summaries and baselines.
/// [`Monitor::close`] it when done (dropping it closes it too).
pub fn open(config: Config) -> Result<Monitor> {
    require_store(&config.storage.data_dir)?;
    Monitor::builder(config).background(false).open()
}

/// Where a [`compact`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// Applying retention: (series × resolutions) done and total.
    Retention {
        /// Steps done.
        done: u64,
        /// Steps in all.
        total: u64,
    },
    /// Retention applied; redb's `compact()` is reclaiming file space.
    Reclaiming,
}

/// What [`compact`] did, with the file size before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Compaction {
    /// The retention pass.
    #[serde(flatten)]
    pub report: CompactReport,
    /// File size before, bytes.
    pub file_bytes_before: u64,
    /// File size after, bytes.
    pub file_bytes_after: u64,
}

/// Applies retention (the rules of `config`, the store in
/// `config.storage.data_dir`, the time `now_ms`), then reclaims file space
/// with redb's `compact()`. A dry run only counts what would be removed,
/// opening the file read-only.
pub fn compact(
    config: &Config,
    dry_run: bool,
    now_ms: i64,
    progress: impl FnMut(CompactStep),
) -> Result<Compaction> {
    let data_dir = &config.storage.data_dir;
    let path = require_store(data_dir)?;
    let file_bytes_before = crate::store::file_len(&path)?;
    let report = guard(data_dir, "compacting", || {
        compact_inner(config, dry_run, now_ms, progress)
    })?;
    Ok(Compaction {
        report,
        file_bytes_before,
        file_bytes_after: crate::store::file_len(&path)?,
    })
}

fn compact_inner(
    config: &Config,
    dry_run: bool,
    now_ms: i64,
    mut progress: impl FnMut(CompactStep),
) -> Result<CompactReport> {
    let data_dir = &config.storage.data_dir;
    Ok(if dry_run {
        let db = store::open_read_only(data_dir)?;
        let policy = RetentionPolicy::load(config, &db)?;
        retention::count_expired(&db, &policy, now_ms)?
    } else {
        let mut store = Store::open(data_dir, EXISTING)?;
        let policy = RetentionPolicy::load(config, &*store.db()?)?;
        let report = retention::compact(
            &store,
            &policy,
            &mut Codec::new(),
            now_ms,
            CompactOptions::default(),
            |done, total| progress(CompactStep::Retention { done, total }),
        )?;
        progress(CompactStep::Reclaiming);
        crate::store::repack::repack(&store)?;
        while store.db_mut()?.compact()? {}
        report
    })
}

/// The store and its retention policy (configuration plus stored overrides).
fn open_policy(config: &Config) -> Result<(Store, RetentionPolicy)> {
    require_store(&config.storage.data_dir)?;
    let store = Store::open(&config.storage.data_dir, EXISTING)?;
    let policy = RetentionPolicy::load(config, &*store.db()?)?;
    Ok((store, policy))
}

/// The retention in force for `namespace`, or (when `None`) for every
/// namespace with data, an override or a rule in `config`, sorted by name.
pub fn retention_show(
    config: &Config,
    namespace: Option<&str>,
) -> Result<Vec<(String, Retention)>> {
    guard(&config.storage.data_dir, "reading retention", || {
        retention_show_inner(config, namespace)
    })
}

fn retention_show_inner(
    config: &Config,
    namespace: Option<&str>,
) -> Result<Vec<(String, Retention)>> {
    let (store, policy) = open_policy(config)?;
    let names: Vec<String> = match namespace {
        Some(ns) => vec![ns.to_owned()],
        None => {
            let mut v: Vec<String> = store
                .load_series()?
                .into_iter()
                .map(|(_, r)| r.key.namespace)
                .collect();
            v.extend(policy.overridden());
            v.extend(config.retention.namespaces.keys().cloned());
            v.sort();
            v.dedup();
            v
        }
    };
    Ok(names
        .into_iter()
        .map(|ns| {
            let r = policy.of(&ns);
            (ns, r)
        })
        .collect())
}

/// Stores a retention override for `namespace` (any subset of the three
/// durations, merged with an existing override) and returns the retention
/// now in force. Nothing changes on error.
pub fn retention_set(config: &Config, namespace: &str, rule: &RetentionRule) -> Result<Retention> {
    guard(&config.storage.data_dir, "storing retention", || {
        let (store, policy) = open_policy(config)?;
        policy.set_override(&store, namespace, rule)
    })
}

/// A schema migration not yet applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PendingMigration {
    /// Schema version after it.
    pub version: u64,
    /// Its short name.
    pub name: &'static str,
}

/// The schema of a store and what [`migrate`] would apply.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationPlan {
    /// Version recorded in the file.
    pub found: u64,
    /// Version this build writes.
    pub target: u64,
    /// Migrations to apply, in order (empty when current).
    pub pending: Vec<PendingMigration>,
}

/// Reads the store's schema version (changing nothing when possible) and
/// lists the pending migrations; [`Error::SchemaTooNew`] for a file from a
/// newer scopemon.
pub fn migration_plan(data_dir: &Path) -> Result<MigrationPlan> {
    let path = require_store(data_dir)?;
    let found = guard(data_dir, "reading the schema version", || {
        Store::inspect_version(data_dir)
    })?;
    if found > migrations::CURRENT {
        return Err(Error::SchemaTooNew {
            path,
            found,
            supported: migrations::CURRENT,
        });
    }
    Ok(MigrationPlan {
        found,
        target: migrations::CURRENT,
        pending: migrations::pending(found)
            .map(|m| PendingMigration {
                version: m.version,
                name: m.name,
            })
            .collect(),
    })
}

/// Applies every pending migration; returns the schema version now.
pub fn migrate(data_dir: &Path) -> Result<u64> {
    require_store(data_dir)?;
    guard(data_dir, "migrating", || {
        let store = Store::open(
            data_dir,
            OpenOptions {
                migrate: true,
                ..EXISTING
            },
        )?;
        Ok(store.schema_version())
    })
}

/// Writes a consistent copy of the stopped store in `data_dir` to `to`
/// (see [`BackupReport`]); an existing `to` is replaced only with
/// `overwrite` ([`Error::WouldOverwrite`] otherwise). The store is opened
/// read-only, unless it needs crash recovery, which a writable open
/// performs first (as `scopemon serve` would).
pub fn backup(data_dir: &Path, to: &Path, overwrite: bool) -> Result<BackupReport> {
    require_store(data_dir)?;
    match store::open_read_only(data_dir) {
        Ok(db) => crate::backup::backup(&db, to, overwrite),
        Err(Error::Storage(redb::Error::RepairAborted)) => {
            let store = Store::open(data_dir, EXISTING)?;
            crate::backup::backup(&*store.db()?, to, overwrite)
        }
        Err(e) => Err(e),
    }
}

/// Replaces the store in `data_dir` by the backup `from`, after checking
/// that `from` is a scopemon store (redb file, known schema version,
/// integrity check) and that the store in `data_dir` is not held by a
/// process and (without `force`) holds no record. The store is migrated to
/// the current schema and put in place by one rename; a refused `from`
/// changes nothing. See [`RestoreReport`].
pub fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<RestoreReport> {
    crate::backup::restore(from, data_dir, force)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DAY_MS, MINUTE_MS};

    /// A store with one series and `n` old minutes of data in namespace "tmp"
    /// (kept 1h at minute resolution).
    fn store_with_data(dir: &Path, n: i64) -> (Config, i64) {
        let mut config = Config::from_toml(
            "[retention.namespaces.\"tmp\"]\nminute = \"1h\"\nhour = \"1h\"\nday = \"1d\"\n",
        )
        .unwrap();
        config.storage.data_dir = dir.to_path_buf();
        let clock = std::sync::Arc::new(crate::ManualClock::new(100 * DAY_MS));
        let m = Monitor::builder(config.clone())
            .clock(clock.clone())
            .background(false)
            .open()
            .unwrap();
        for i in 0..n {
            m.record(&crate::Sample {
                namespace: "tmp",
                metric: "m",
                kind: crate::Kind::Latency,
                value: 10.0,
                tags: &[],
                outcome: crate::Outcome::Ok,
                timestamp_ms: Some(100 * DAY_MS - 3 * 3_600_000 + i * MINUTE_MS),
            })
            .unwrap();
        }
        m.close().unwrap();
        (config, 100 * DAY_MS)
    }

    #[test]
    fn nothing_is_created_where_no_store_is() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = Config::with_data_dir(&data);
        for err in [
            check(&data, |_, _| {}).unwrap_err(),
            compact(&config, true, 0, |_| {}).unwrap_err(),
            retention_show(&config, None).unwrap_err(),
            migration_plan(&data).unwrap_err(),
            migrate(&data).unwrap_err(),
            open(config.clone()).unwrap_err(),
        ] {
            assert_eq!(err.code(), "not_found", "{err}");
            assert!(err.to_string().contains("scopemon.redb"), "{err}");
        }
        assert!(!data.exists());
    }

    #[test]
    fn check_counts_every_record() {
        let dir = tempfile::tempdir().unwrap();
        store_with_data(dir.path(), 30);
        let mut last = (0, 0);
        let r = check(dir.path(), |d, t| last = (d, t)).unwrap();
        assert!(r.intact && r.bad.is_empty(), "{r:?}");
        assert_eq!((r.series, r.deltas, r.minute), (1, 0, 30));
        assert_eq!(last.0, r.series + r.deltas + r.minute + r.hour + r.day);
        assert_eq!(last.0, last.1);
    }

    #[test]
    fn dry_run_changes_nothing_and_predicts_the_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (config, now) = store_with_data(dir.path(), 30);
        let file = store::db_path(dir.path());
        let before = std::fs::read(&file).unwrap();
        let dry = compact(&config, true, now, |_| panic!("no progress on a dry run")).unwrap();
        assert!(dry.report.dry_run && dry.report.total_removed >= 30);
        assert!(std::fs::read(&file).unwrap() == before);
        let mut steps = Vec::new();
        let done = compact(&config, false, now, |s| steps.push(s)).unwrap();
        assert_eq!(done.report.total_removed, dry.report.total_removed);
        assert_eq!(steps.last(), Some(&CompactStep::Reclaiming));
        assert!(done.file_bytes_after <= done.file_bytes_before);
    }

    #[test]
    fn retention_and_migrations_on_a_stopped_store() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = store_with_data(dir.path(), 1);
        let rule = RetentionRule {
            minute: Some(std::time::Duration::from_secs(7200)),
            ..Default::default()
        };
        let r = retention_set(&config, "other", &rule).unwrap();
        assert_eq!(r.minute_ms, 7_200_000);
        let shown = retention_show(&config, None).unwrap();
        let names: Vec<&str> = shown.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["other", "tmp"]);
        let plan = migration_plan(dir.path()).unwrap();
        assert_eq!((plan.found, plan.pending.len()), (migrations::CURRENT, 0));
        assert_eq!(migrate(dir.path()).unwrap(), migrations::CURRENT);
    }
}
