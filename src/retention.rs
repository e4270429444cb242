//! Retention per namespace and resolution, and the compactor that applies it.
//!
//! **Policy**: built-in defaults (48h / 30d / 400d) ⊕ `[retention.default]`
//! ⊕ `[retention.namespaces."<ns>"]` ⊕ a runtime override stored in the
//! redb file (`retention` table), each layer setting any subset of the three
//! keys. The policy owns the overrides; everyone else asks it.
//!
//! **Expiry**: a bucket `[s, s + w)` of resolution `r` in namespace `ns` is
//! expired once `s + w <= now − retention(ns, r)`. Queries never read an
//! expired bucket (see `query`), so what the compactor has or has not
//! deleted yet is invisible: no query sees a half-deleted range.
//!
//! **Compactor**: first rolls every closed minute's deltas into the minute,
//! hour and day records (a rollup writes all three at once, so a bucket's
//! data is in the coarser resolutions before the bucket can be deleted),
//! then deletes expired buckets series by series in write transactions of at
//! most [`CompactOptions::batch`] deletions (and about 20 ms), taking turns
//! fairly with other writers, so flushes never wait long (a series' minute
//! groups are expired member by member at its horizon: `store/group.rs`);
//! last, folds the minute records of every sealed hour into minute groups
//! (`store::group::group_sealed`, the same batch size).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Retention, RetentionRule, RetentionSource, validate_rule};
use crate::error::{Error, Result};
use crate::model::{Resolution, validate_namespace};
use crate::store::Store;
use crate::store::codec::{Codec, decode_bincode, encode_bincode};
use crate::store::flush;
use crate::store::group;
use crate::store::tables::{self, RETENTION};

const OVERRIDE_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct OverrideV1 {
    minute_ms: Option<u64>,
    hour_ms: Option<u64>,
    day_ms: Option<u64>,
}

fn to_ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode_rule(rule: &RetentionRule) -> Result<Vec<u8>> {
    let body = OverrideV1 {
        minute_ms: to_ms(rule.minute),
        hour_ms: to_ms(rule.hour),
        day_ms: to_ms(rule.day),
    };
    encode_bincode("retention", OVERRIDE_V1, &body)
}

fn decode_rule(bytes: &[u8]) -> Result<RetentionRule> {
    let b: OverrideV1 = decode_bincode("retention", OVERRIDE_V1, bytes)?;
    Ok(RetentionRule {
        minute: b.minute_ms.map(Duration::from_millis),
        hour: b.hour_ms.map(Duration::from_millis),
        day: b.day_ms.map(Duration::from_millis),
    })
}

/// The retention of every namespace: configuration plus stored overrides.
#[derive(Debug)]
pub struct RetentionPolicy {
    config: Config,
    overrides: RwLock<BTreeMap<String, RetentionRule>>,
}

impl RetentionPolicy {
    /// Loads the overrides stored in `store`.
    pub fn load(config: &Config, db: &impl ReadableDatabase) -> Result<RetentionPolicy> {
        let txn = db.begin_read()?;
        let table = txn.open_table(RETENTION)?;
        let mut overrides = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            overrides.insert(k.value().to_owned(), decode_rule(v.value())?);
        }
        Ok(RetentionPolicy {
            config: config.clone(),
            overrides: RwLock::new(overrides),
        })
    }

    /// The retention that applies to `ns`.
    pub fn of(&self, ns: &str) -> Retention {
        let r = self.config.retention_for(ns);
        match self.overrides.read().get(ns) {
            Some(rule) => r.with(rule, RetentionSource::Override),
            None => r,
        }
    }

    /// Start of the oldest bucket of `res` in `ns` that is not expired.
    pub fn horizon(&self, ns: &str, res: Resolution, now_ms: i64) -> i64 {
        let w = res.width_ms();
        // smallest aligned s with s + w > now - retention
        let min_start = now_ms
            .saturating_sub(self.of(ns).of(res))
            .saturating_sub(w)
            .saturating_add(1);
        let a = res.align(min_start);
        if a == min_start { a } else { a + w }
    }

    /// Stores an override for `ns` (merged key by key with an existing one)
    /// and returns the retention now in force. Nothing changes on error.
    pub fn set_override(&self, store: &Store, ns: &str, rule: &RetentionRule) -> Result<Retention> {
        validate_namespace(ns)?;
        if rule.minute.is_none() && rule.hour.is_none() && rule.day.is_none() {
            return Err(Error::InvalidParameter(
                "give at least one of minute, hour, day".into(),
            ));
        }
        validate_rule(rule).map_err(|e| {
            Error::InvalidParameter(e.to_string().replace("invalid configuration: ", ""))
        })?;
        let mut overrides = self.overrides.write();
        let mut merged = overrides.get(ns).cloned().unwrap_or_default();
        merged.minute = rule.minute.or(merged.minute);
        merged.hour = rule.hour.or(merged.hour);
        merged.day = rule.day.or(merged.day);
        self.config
            .retention_for(ns)
            .with(&merged, RetentionSource::Override)
            .check_order()
            .map_err(|e| {
                Error::InvalidParameter(e.to_string().replace("invalid configuration: ", ""))
            })?;
        let txn = store.begin_write()?;
        txn.open_table(RETENTION)?
            .insert(ns, encode_rule(&merged)?.as_slice())?;
        txn.commit()?;
        overrides.insert(ns.to_owned(), merged);
        drop(overrides);
        Ok(self.of(ns))
    }

    /// Namespaces with an override.
    pub fn overridden(&self) -> Vec<String> {
        self.overrides.read().keys().cloned().collect()
    }
}

impl crate::query::Horizons for RetentionPolicy {
    fn horizon(&self, ns: &str, res: Resolution, now_ms: i64) -> i64 {
        RetentionPolicy::horizon(self, ns, res, now_ms)
    }
}

/// How to run a compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Most deletions per write transaction.
    pub batch: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        // 500 deletions kept every transaction under 50 ms even with the
        // file out of the page cache (benches/COMPACTION_RESULTS.md); the
        // time cap below bounds it further on slow disks.
        CompactOptions {
            dry_run: false,
            batch: 500,
        }
    }
}

/// A deletion transaction commits after this long even with budget left.
const TXN_TIME_CAP: Duration = Duration::from_millis(20);

/// What a compaction did (or would do, on a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    /// Buckets removed per namespace and resolution.
    pub removed: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Total buckets removed.
    pub total_removed: u64,
    /// Deltas rolled up before deleting.
    pub rolled_up_minutes: usize,
    /// Sealed (series, hour)s whose minute records were folded into groups
    /// (`store/group.rs`).
    pub grouped_hours: u64,
    /// Minute records folded into those groups.
    pub grouped_minutes: u64,
    /// Write transactions used (deletion and grouping).
    pub transactions: usize,
    /// Longest of those write transactions, milliseconds.
    pub longest_txn_ms: f64,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
    /// True for a dry run.
    pub dry_run: bool,
}

/// Counts what a compaction would remove, reading only (a dry run).
pub fn count_expired(
    db: &impl ReadableDatabase,
    policy: &RetentionPolicy,
    now_ms: i64,
) -> Result<CompactReport> {
    let started = Instant::now();
    let mut report = CompactReport {
        dry_run: true,
        ..CompactReport::default()
    };
    let series = crate::store::load_series(db)?;
    let txn = db.begin_read()?;
    for res in Resolution::ALL {
        let table = txn.open_table(tables::buckets(res))?;
        let groups = txn.open_table(tables::MINUTE_GROUPS)?;
        for (sid, rec) in &series {
            let ns = &rec.key.namespace;
            let h = policy.horizon(ns, res, now_ms);
            let mut n = table.range((*sid, i64::MIN)..(*sid, h))?.count() as u64;
            if res == Resolution::Minute {
                n += group::count_expired(&groups, *sid, h)?;
            }
            report.add(ns, res, n);
        }
    }
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

impl CompactReport {
    fn add(&mut self, ns: &str, res: Resolution, n: u64) {
        if n > 0 {
            *self
                .removed
                .entry(ns.to_owned())
                .or_default()
                .entry(res.as_str())
                .or_default() += n;
            self.total_removed += n;
        }
    }
}

/// Applies retention to every series in the store's catalog (a dry run
/// only counts, see [`count_expired`]). `progress` is called with
/// (steps done, steps total), a step being one series at one resolution.
pub fn compact(
    store: &Store,
    policy: &RetentionPolicy,
    codec: &mut Codec,
    now_ms: i64,
    opts: CompactOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<CompactReport> {
    if opts.dry_run {
        return count_expired(&*store.db()?, policy, now_ms);
    }
    let started = Instant::now();
    let mut report = CompactReport {
        rolled_up_minutes: flush::rollup(store, codec, now_ms, usize::MAX)?.minutes,
        ..CompactReport::default()
    };
    let series: Vec<(u64, String)> = store
        .load_series()?
        .into_iter()
        .map(|(id, rec)| (id, rec.key.namespace))
        .collect();
    let total = series.len() as u64 * 3;
    let mut horizons: HashMap<&str, [i64; 3]> = HashMap::new();
    let mut done = 0u64;
    let batch = opts.batch.max(1);
    for (ri, res) in Resolution::ALL.into_iter().enumerate() {
        let mut i = 0;
        while i < series.len() {
            let txn_started = Instant::now();
            let txn = store.begin_write()?;
            let mut budget = batch;
            {
                let mut table = txn.open_table(tables::buckets(res))?;
                let mut groups = txn.open_table(tables::MINUTE_GROUPS)?;
                while i < series.len() && budget > 0 && txn_started.elapsed() < TXN_TIME_CAP {
                    let (sid, ns) = &series[i];
                    let h = horizons
                        .entry(ns.as_str())
                        .or_insert_with(|| Resolution::ALL.map(|r| policy.horizon(ns, r, now_ms)))
                        [ri];
                    let mut n = 0u64;
                    for entry in table
                        .extract_from_if((*sid, i64::MIN)..(*sid, h), |_, _| true)?
                        .take(budget)
                    {
                        entry?;
                        n += 1;
                    }
                    budget -= n as usize;
                    if res == Resolution::Minute && budget > 0 {
                        let (members, all) = group::expire(&mut groups, *sid, h, budget)?;
                        report.add(ns, res, members);
                        if !all {
                            budget = 0;
                        }
                    }
                    report.add(ns, res, n);
                    if budget > 0 {
                        // this series is done at this resolution
                        i += 1;
                        done += 1;
                        progress(done, total);
                    }
                }
            }
            txn.commit()?;
            report.transactions += 1;
            report.longest_txn_ms = report
                .longest_txn_ms
                .max(txn_started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let grouped = group::group_sealed(store, codec, now_ms, batch)?;
    report.grouped_hours = grouped.hours;
    report.grouped_minutes = grouped.minutes;
    report.transactions += grouped.transactions;
    report.longest_txn_ms = report.longest_txn_ms.max(grouped.longest_txn_ms);
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DAY_MS, HOUR_MS, MINUTE_MS};

    #[test]
    fn horizon_is_the_oldest_unexpired_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let policy = RetentionPolicy::load(&Config::default(), &*store.db().unwrap()).unwrap();
        let now = 100 * DAY_MS + 30 * MINUTE_MS + 5_000;
        // minute retention 48h: minute [s, s+1m) kept while s + 1m > now - 48h
        let h = policy.horizon("x", Resolution::Minute, now);
        assert_eq!(h, now - 5_000 - 2 * DAY_MS);
        assert!(h + MINUTE_MS > now - 2 * DAY_MS);
        assert!(h - MINUTE_MS + MINUTE_MS <= now - 2 * DAY_MS);
        let hh = policy.horizon("x", Resolution::Hour, now);
        assert_eq!(hh, 70 * DAY_MS);
        assert_eq!(
            policy.horizon("x", Resolution::Hour, 70 * DAY_MS + 30 * DAY_MS + HOUR_MS),
            70 * DAY_MS + HOUR_MS
        );
    }

    #[test]
    fn overrides_merge_validate_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Config::from_toml("[retention.namespaces.\"staging\"]\nminute = \"6h\"\n").unwrap();
        {
            let store = Store::open(dir.path(), Default::default()).unwrap();
            let policy = RetentionPolicy::load(&config, &*store.db().unwrap()).unwrap();
            assert_eq!(policy.of("staging").source, RetentionSource::Config);
            let bad = RetentionRule {
                hour: Some(Duration::from_secs(1800)),
                ..Default::default()
            };
            assert!(policy.set_override(&store, "staging", &bad).is_err());
            assert_eq!(policy.of("staging").source, RetentionSource::Config);
            let r = policy
                .set_override(
                    &store,
                    "staging",
                    &RetentionRule {
                        hour: Some(Duration::from_secs(7 * 86_400)),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!((r.minute_ms, r.hour_ms), (6 * HOUR_MS, 7 * DAY_MS));
            assert_eq!(r.source, RetentionSource::Override);
        }
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let policy = RetentionPolicy::load(&config, &*store.db().unwrap()).unwrap();
        let r = policy.of("staging");
        assert_eq!(
            (r.minute_ms, r.hour_ms, r.source),
            (6 * HOUR_MS, 7 * DAY_MS, RetentionSource::Override)
        );
        assert_eq!(policy.of("other"), Retention::BUILTIN);
    }
}
