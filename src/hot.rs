//! Hot data: the sharded series registry and each series' open-bucket
//! statistics, plus the pre-resolved [`Handle`]s for hot paths.
//!
//! Shape (ETS-like): `N` shards, each an `RwLock<HashMap>` from a 64-bit
//! series hash to the series with that hash. A series owns one `Mutex` over
//! its hot buckets, so recorders of different series never share a lock and
//! the registry's shard locks are only read on the name-lookup path.
//!
//! A hot bucket holds the samples of one minute that are not yet in the
//! store: `live` (being recorded into) and `inflight` (taken by a flush whose
//! transaction has not committed yet). Invariant, upheld with the engine's
//! commit gate (see `store::flush`): for a reader that opened its redb read
//! transaction and then looked at the hot buckets while holding the gate,
//! `store ⊕ live ⊕ inflight` counts every accepted sample exactly once.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::model::{Kind, Outcome, Resolution, SeriesKey, Tags};
use crate::stats::{Precision, Stats};

const SHARDS: usize = 64;

/// One minute's not-yet-stored samples of a series.
#[derive(Debug)]
pub(crate) struct HotBucket {
    /// Minute start (Unix ms).
    pub(crate) minute: i64,
    /// Samples recorded since the last flush took this bucket.
    pub(crate) live: Option<Stats>,
    /// Samples a flush is writing; cleared once its transaction commits.
    pub(crate) inflight: Option<Arc<Stats>>,
}

/// The hot buckets of a series, usually one (the open minute).
#[derive(Debug, Default)]
pub(crate) struct HotState {
    pub(crate) buckets: Vec<HotBucket>,
}

/// A series: identity, persistent id and hot state.
#[derive(Debug)]
pub struct Series {
    id: u64,
    key: SeriesKey,
    pub(crate) state: Mutex<HotState>,
    /// Set by recorders, cleared by the flusher when it takes the buckets.
    pub(crate) dirty: AtomicBool,
    /// First and last minute with data (Unix ms); persisted by the flusher.
    pub(crate) first_seen: AtomicI64,
    pub(crate) last_seen: AtomicI64,
    /// Whether the series record in the store is up to date.
    pub(crate) persisted_last_seen: AtomicI64,
    precision: Precision,
    hot_bytes: Arc<AtomicUsize>,
}

impl Series {
    /// Persistent id (key prefix of every stored bucket).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Identity.
    pub fn key(&self) -> &SeriesKey {
        &self.key
    }

    /// First minute with data, Unix ms.
    pub fn first_seen(&self) -> i64 {
        self.first_seen.load(Ordering::Relaxed)
    }

    /// Last minute with data, Unix ms.
    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Records one validated, scaled sample into minute `minute`.
    #[inline]
    pub(crate) fn record(&self, minute: i64, scaled: u64, value: f64, error: bool) {
        let mut st = self.state.lock();
        let stats = match st.buckets.last_mut() {
            Some(HotBucket {
                minute: m,
                live: Some(s),
                ..
            }) if *m == minute => s,
            _ => self.open_bucket(&mut st, minute),
        };
        stats.record_scaled(scaled, value, error);
        drop(st);
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Slow path: finds or creates the live stats of `minute`.
    #[cold]
    fn open_bucket<'a>(&self, st: &'a mut HotState, minute: i64) -> &'a mut Stats {
        let idx = match st.buckets.iter().position(|b| b.minute == minute) {
            Some(i) => i,
            None => {
                st.buckets.push(HotBucket {
                    minute,
                    live: None,
                    inflight: None,
                });
                st.buckets.sort_by_key(|b| b.minute);
                st.buckets
                    .iter()
                    .position(|b| b.minute == minute)
                    .unwrap_or(0)
            }
        };
        self.first_seen.fetch_min(minute, Ordering::Relaxed);
        self.last_seen.fetch_max(minute, Ordering::Relaxed);
        let bucket = &mut st.buckets[idx];
        bucket.live.get_or_insert_with(|| {
            let s = Stats::new(self.key.kind, self.precision);
            self.hot_bytes.fetch_add(s.heap_bytes(), Ordering::Relaxed);
            s
        })
    }

    /// Called when a [`Stats`] leaves hot memory for good.
    pub(crate) fn release_bytes(&self, bytes: usize) {
        self.hot_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// (namespace, metric, kind) -> series of that metric.
type MetricIndex = BTreeMap<(String, String, Kind), Vec<Arc<Series>>>;

type Shard = RwLock<HashMap<u64, Vec<Arc<Series>>, foldhash::fast::FixedState>>;

/// Every known series, sharded, with a (namespace, metric, kind) index.
pub struct Registry {
    shards: Box<[Shard]>,
    index: RwLock<MetricIndex>,
    per_namespace: Mutex<HashMap<String, usize>>,
    next_id: AtomicU64,
    hasher: foldhash::fast::FixedState,
    series_limit: usize,
    precision: Precision,
    /// Start of the minute hot-path handles record into; kept current by the
    /// engine (the flusher thread and every clock read).
    current_minute: Arc<AtomicI64>,
    hot_bytes: Arc<AtomicUsize>,
}

impl Registry {
    /// An empty registry.
    pub fn new(series_limit: usize, precision: Precision, now_ms: i64) -> Registry {
        Registry {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            index: RwLock::new(BTreeMap::new()),
            per_namespace: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            hasher: foldhash::fast::FixedState::with_seed(0x05c0_9e40),
            series_limit,
            precision,
            current_minute: Arc::new(AtomicI64::new(Resolution::Minute.align(now_ms))),
            hot_bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Histogram precision of every series.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Advances the minute that handles record into (never moves back).
    pub fn observe_time(&self, now_ms: i64) -> i64 {
        let minute = Resolution::Minute.align(now_ms);
        self.current_minute.fetch_max(minute, Ordering::Relaxed);
        minute
    }

    /// Heap bytes held by hot histograms.
    pub fn hot_bytes(&self) -> usize {
        self.hot_bytes.load(Ordering::Relaxed)
    }

    fn hash(&self, ns: &str, kind: Kind, metric: &str, tags: &[(&str, &str)]) -> u64 {
        // Tag hashes are summed so the order the caller lists them in does
        // not matter.
        let mut h = self.hasher.hash_one((ns, kind.code(), metric));
        for t in tags {
            h = h.wrapping_add(self.hasher.hash_one(t));
        }
        h
    }

    fn shard(&self, h: u64) -> &Shard {
        &self.shards[(h as usize) % SHARDS]
    }

    /// Finds a series without creating it.
    pub fn get(
        &self,
        ns: &str,
        kind: Kind,
        metric: &str,
        tags: &[(&str, &str)],
    ) -> Option<Arc<Series>> {
        let h = self.hash(ns, kind, metric, tags);
        let shard = self.shard(h).read();
        shard
            .get(&h)?
            .iter()
            .find(|s| matches(s, ns, kind, metric, tags))
            .cloned()
    }

    /// Finds or creates a series; names are validated on creation only.
    pub fn get_or_create(
        &self,
        ns: &str,
        kind: Kind,
        metric: &str,
        tags: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<Arc<Series>> {
        if let Some(s) = self.get(ns, kind, metric, tags) {
            return Ok(s);
        }
        let key = SeriesKey::new(ns, kind, metric, Tags::new(tags)?)?;
        let h = self.hash(ns, kind, metric, tags);
        let mut shard = self.shard(h).write();
        let slot = shard.entry(h).or_default();
        if let Some(s) = slot.iter().find(|s| matches(s, ns, kind, metric, tags)) {
            return Ok(s.clone());
        }
        {
            let mut counts = self.per_namespace.lock();
            let n = counts.entry(key.namespace.clone()).or_insert(0);
            if *n >= self.series_limit {
                return Err(Error::SeriesLimitExceeded {
                    namespace: key.namespace,
                    limit: self.series_limit,
                });
            }
            *n += 1;
        }
        let minute = Resolution::Minute.align(now_ms);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let series = self.make(id, key, minute, minute, i64::MIN);
        slot.push(series.clone());
        drop(shard);
        self.add_to_index(&series);
        Ok(series)
    }

    /// Adds a series loaded from the store (not counted against nothing:
    /// stored series always load, even past a lowered limit).
    pub fn insert_loaded(&self, id: u64, key: SeriesKey, first_seen: i64, last_seen: i64) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
        *self
            .per_namespace
            .lock()
            .entry(key.namespace.clone())
            .or_insert(0) += 1;
        let tags: Vec<(&str, &str)> = key
            .tags
            .pairs()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let h = self.hash(&key.namespace, key.kind, &key.metric, &tags);
        let series = self.make(id, key, first_seen, last_seen, last_seen);
        self.shard(h)
            .write()
            .entry(h)
            .or_default()
            .push(series.clone());
        self.add_to_index(&series);
    }

    fn make(&self, id: u64, key: SeriesKey, first: i64, last: i64, persisted: i64) -> Arc<Series> {
        Arc::new(Series {
            id,
            key,
            state: Mutex::new(HotState::default()),
            dirty: AtomicBool::new(false),
            first_seen: AtomicI64::new(first),
            last_seen: AtomicI64::new(last),
            persisted_last_seen: AtomicI64::new(persisted),
            precision: self.precision,
            hot_bytes: self.hot_bytes.clone(),
        })
    }

    fn add_to_index(&self, s: &Arc<Series>) {
        let k = &s.key;
        self.index
            .write()
            .entry((k.namespace.clone(), k.metric.clone(), k.kind))
            .or_default()
            .push(s.clone());
    }

    /// Series of one metric whose tags include `filter`.
    pub fn select(&self, ns: &str, metric: &str, kind: Kind, filter: &Tags) -> Vec<Arc<Series>> {
        let index = self.index.read();
        index
            .get(&(ns.to_owned(), metric.to_owned(), kind))
            .map(|v| {
                v.iter()
                    .filter(|s| s.key.tags.includes(filter))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every series of a namespace (all namespaces when `None`), ordered by
    /// metric, kind, then creation.
    pub fn in_namespace(&self, ns: Option<&str>) -> Vec<Arc<Series>> {
        let index = self.index.read();
        index
            .iter()
            .filter(|((n, _, _), _)| ns.is_none_or(|ns| n == ns))
            .flat_map(|(_, v)| v.iter().cloned())
            .collect()
    }

    /// Namespaces with their series counts.
    pub fn namespaces(&self) -> BTreeMap<String, usize> {
        self.per_namespace
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every series (in no particular order).
    pub fn all(&self) -> Vec<Arc<Series>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for v in shard.read().values() {
                out.extend(v.iter().cloned());
            }
        }
        out
    }

    /// Number of series whose hot state holds data.
    pub fn hot_series(&self) -> usize {
        self.all()
            .iter()
            .filter(|s| !s.state.lock().buckets.is_empty())
            .count()
    }

    /// A handle that records into `series` at the registry's current minute.
    pub fn handle(&self, series: Arc<Series>) -> Handle {
        Handle {
            kind: series.key.kind,
            series,
            minute: self.current_minute.clone(),
        }
    }
}

fn matches(s: &Series, ns: &str, kind: Kind, metric: &str, tags: &[(&str, &str)]) -> bool {
    s.key.kind == kind
        && s.key.metric == metric
        && s.key.namespace == ns
        && s.key.tags.same_as(tags)
}

/// A pre-resolved series for hot paths: recording is one uncontended lock
/// and a histogram increment; no name lookup, no clock read (the minute
/// comes from an atomic the engine keeps current).
#[derive(Debug, Clone)]
pub struct Handle {
    series: Arc<Series>,
    kind: Kind,
    minute: Arc<AtomicI64>,
}

impl Handle {
    /// Records a duration (latency handles; microseconds with sub-µs in the sum).
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_duration(d, false);
    }

    /// Records a duration with its outcome.
    #[inline]
    pub fn record_outcome(&self, d: Duration, outcome: Outcome) {
        self.record_duration(d, outcome.is_error());
    }

    #[inline]
    fn record_duration(&self, d: Duration, error: bool) {
        // Integer arithmetic only: `as_nanos()` is a u128, whose conversion
        // to f64 (and `f64::round`) are library calls that cost more than
        // the whole histogram increment.
        let nanos = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        // Durations beyond one hour are clamped to the histogram's top; the
        // exact value still counts in sum/min/max.
        let scaled = (nanos.saturating_add(500) / 1_000).min(Kind::Latency.max_scaled());
        // A multiply, not a divide: divsd is ~15 cycles on the record path;
        // the product differs from the quotient by at most one ulp.
        let micros = nanos as f64 * 1e-3;
        self.series
            .record(self.minute.load(Ordering::Relaxed), scaled, micros, error);
    }

    /// Records a value in the series' unit; invalid values are refused.
    pub fn record_value(&self, value: f64) -> Result<()> {
        self.record_value_outcome(value, Outcome::Ok)
    }

    /// Records a value with its outcome.
    pub fn record_value_outcome(&self, value: f64, outcome: Outcome) -> Result<()> {
        let scaled = self.kind.scale_value(value)?;
        self.series.record(
            self.minute.load(Ordering::Relaxed),
            scaled,
            value,
            outcome.is_error(),
        );
        Ok(())
    }

    /// The series this handle records into.
    pub fn series(&self) -> &Arc<Series> {
        &self.series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_tag_order_and_creates_once() {
        let r = Registry::new(10, Precision::DEFAULT, 0);
        let a = r
            .get_or_create("ns", Kind::Latency, "m", &[("a", "1"), ("b", "2")], 0)
            .unwrap();
        let b = r
            .get_or_create("ns", Kind::Latency, "m", &[("b", "2"), ("a", "1")], 0)
            .unwrap();
        assert_eq!(a.id(), b.id());
        let c = r
            .get_or_create("ns", Kind::Latency, "m", &[("a", "1")], 0)
            .unwrap();
        assert_ne!(a.id(), c.id());
        assert_eq!(r.select("ns", "m", Kind::Latency, &Tags::empty()).len(), 2);
    }

    #[test]
    fn series_limit_is_per_namespace() {
        let r = Registry::new(2, Precision::DEFAULT, 0);
        r.get_or_create("a", Kind::Latency, "m1", &[], 0).unwrap();
        r.get_or_create("a", Kind::Latency, "m2", &[], 0).unwrap();
        let e = r
            .get_or_create("a", Kind::Latency, "m3", &[], 0)
            .unwrap_err();
        assert_eq!(e.code(), "series_limit_exceeded");
        // existing series still record, other namespaces are unaffected
        r.get_or_create("a", Kind::Latency, "m1", &[], 0).unwrap();
        r.get_or_create("b", Kind::Latency, "m1", &[], 0).unwrap();
    }

    #[test]
    fn invalid_names_are_refused_on_creation() {
        let r = Registry::new(2, Precision::DEFAULT, 0);
        assert_eq!(
            r.get_or_create("bad ns", Kind::Latency, "m", &[], 0)
                .unwrap_err()
                .code(),
            "invalid_name"
        );
    }

    #[test]
    fn handles_follow_the_current_minute() {
        let r = Registry::new(10, Precision::DEFAULT, 0);
        let h = r.handle(r.get_or_create("ns", Kind::Latency, "m", &[], 0).unwrap());
        h.record(Duration::from_micros(100));
        r.observe_time(crate::model::MINUTE_MS + 5);
        h.record(Duration::from_micros(200));
        let st = h.series().state.lock();
        let minutes: Vec<i64> = st.buckets.iter().map(|b| b.minute).collect();
        assert_eq!(minutes, vec![0, crate::model::MINUTE_MS]);
        assert!(r.hot_bytes() > 0);
    }
}
