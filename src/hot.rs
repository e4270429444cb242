//! Hot data: the sharded series registry and each series' open-bucket
//! statistics, plus the pre-resolved [`Handle`]s for hot paths.
//!
//! Shape (ETS-like): `N` shards, each an `RwLock<HashMap>` from a 64-bit
//! series hash to the series with that hash. A series owns one `Mutex` over
//! its hot buckets, so recorders of different series never share a lock and
//! the registry's shard locks are only read on the name-lookup path.
//! Handles do not take even that lock per sample: they push into a ring of
//! the calling thread (`hot/ring.rs`), which whoever takes the lock drains
//! first ([`Series::lock`]), so to every reader and flush a ring's samples
//! are already in `live`.
//!
//! A hot bucket holds the samples of one minute that are not yet in the
//! store: `live` (being recorded into) and `inflight` (taken by a flush whose
//! transaction has not committed yet). Invariant, upheld with the
//! [`CommitGate`] (argued in `store::flush`): for a reader that opened its
//! redb read transaction and then looked at the hot buckets while holding
//! the gate, `store ⊕ live ⊕ inflight` counts every accepted sample exactly
//! once.
//!
//! This module owns that state machine; the flush and the readers go
//! through its methods, and the type system holds the gate rule: dropping
//! the written `inflight` stats ([`Series::finish_flush`]) needs the gate's
//! write guard, and looking at hot buckets ([`Series::visit_hot`]) needs its
//! read guard.
//!
//! ```text
//!   handle ──► ring ─┐ (drained by whoever locks the series)
//!   record ──────────┴──► live ──take_for_flush──► inflight ──finish_flush (gate held)──► gone
//!                          ▲                          │
//!                          └──── a failed commit: the next take merges live into inflight
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::index::SeriesIndex;
use crate::model::{Kind, Resolution, SeriesKey, Tags};
use crate::stats::{Precision, Stats};

mod handle;
mod ring;
pub use handle::Handle;
use ring::Rings;

const SHARDS: usize = 64;

/// One minute's not-yet-stored samples of a series.
#[derive(Debug)]
struct HotBucket {
    /// Minute start (Unix ms).
    minute: i64,
    /// Samples recorded since the last flush took this bucket.
    live: Option<Stats>,
    /// Samples a flush is writing; cleared once its transaction commits.
    inflight: Option<Arc<Stats>>,
}

/// The hot buckets of a series, usually one (the open minute).
#[derive(Debug, Default)]
struct HotState {
    buckets: Vec<HotBucket>,
}

/// The commit gate: a flush commits and drops what it wrote while holding
/// the write side; a reader opens its snapshot and reads hot buckets while
/// holding the read side (see `store::flush` for why that counts every
/// sample exactly once).
#[derive(Debug, Default)]
pub struct CommitGate(RwLock<()>);

/// The gate's read side, held by a reader taking its snapshot.
pub struct GateRead<'a>(#[allow(dead_code)] parking_lot::RwLockReadGuard<'a, ()>);

/// The gate's write side, held by a flush around its commit.
pub struct GateWrite<'a>(#[allow(dead_code)] parking_lot::RwLockWriteGuard<'a, ()>);

impl CommitGate {
    /// Takes the read side.
    pub fn read(&self) -> GateRead<'_> {
        GateRead(self.0.read())
    }

    /// Takes the write side.
    pub fn write(&self) -> GateWrite<'_> {
        GateWrite(self.0.write())
    }
}

/// A series: identity, persistent id and hot state.
#[derive(Debug)]
pub struct Series {
    id: u64,
    key: SeriesKey,
    state: Mutex<HotState>,
    /// Handles' per-thread rings of pending samples (`hot/ring.rs`),
    /// drained into `state` by whoever takes its lock through
    /// [`Series::lock`]; created on a handle's first record.
    rings: OnceLock<Box<Rings>>,
    /// Set by recorders, cleared by the flusher when it takes the buckets.
    /// A ring push sets it after its release store without a fence, so a
    /// flush may miss the flag for a sample it cannot see yet: the flusher
    /// also asks the rings ([`Series::take_for_flush`]).
    dirty: AtomicBool,
    /// First and last minute with data (Unix ms); persisted by the flusher.
    first_seen: AtomicI64,
    last_seen: AtomicI64,
    /// The `last_seen` the store's series record holds.
    persisted_last_seen: AtomicI64,
    precision: Precision,
    budget: Arc<HotBudget>,
}

/// Hot-memory accounting shared by every series of a registry: the bytes
/// every hot bucket holds, and what to wake when they pass the early-flush
/// mark (three quarters of `storage.max_hot_bytes`).
#[derive(Default)]
struct HotBudget {
    bytes: AtomicUsize,
    /// `usize::MAX` until a cap is set.
    wake_at: AtomicUsize,
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for HotBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotBudget")
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl HotBudget {
    /// Counts `n` more bytes; past the mark, wakes the flush. Called when a
    /// bucket opens (the record path's cold branch), never per sample.
    fn add(&self, n: usize) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if now >= self.wake_at.load(Ordering::Relaxed)
            && let Some(wake) = self.wake.get()
        {
            wake();
        }
    }

    fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }
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

    /// The hot state, locked, with every ring drained into it: what the
    /// readers, the flusher and a producer whose ring is full look at.
    fn lock(&self) -> parking_lot::MutexGuard<'_, HotState> {
        let mut st = self.state.lock();
        if let Some(rings) = self.rings.get() {
            rings.drain(&mut st, |st, p| {
                self.record_locked(st, p.minute, p.scaled, p.value, p.error);
            });
        }
        st
    }

    /// Records one validated, scaled sample into minute `minute`.
    #[inline]
    pub(crate) fn record(&self, minute: i64, scaled: u64, value: f64, error: bool) {
        let mut st = self.state.lock();
        self.record_locked(&mut st, minute, scaled, value, error);
        drop(st);
        self.mark_dirty();
    }

    /// The handle path: into the calling thread's ring, no lock taken
    /// (`hot/ring.rs`); a full ring, or one of another minute, is drained
    /// under the lock and the sample recorded there.
    #[inline]
    fn record_via_ring(&self, minute: i64, scaled: u64, value: f64, error: bool) {
        let rings = self.rings.get_or_init(Box::default);
        if let Err(ring) = rings.push(minute, scaled, value, error) {
            self.record_draining(ring, minute, scaled, value, error);
        }
        self.mark_dirty();
    }

    #[cold]
    fn record_draining(
        &self,
        ring: &ring::Ring,
        minute: i64,
        scaled: u64,
        value: f64,
        error: bool,
    ) {
        let mut st = self.lock();
        ring.set_minute(minute, &mut st);
        self.record_locked(&mut st, minute, scaled, value, error);
    }

    #[inline]
    fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    #[inline]
    fn record_locked(&self, st: &mut HotState, minute: i64, scaled: u64, value: f64, error: bool) {
        let stats = match st.buckets.last_mut() {
            Some(HotBucket {
                minute: m,
                live: Some(s),
                ..
            }) if *m == minute => s,
            _ => self.open_bucket(st, minute),
        };
        let grown = stats.record_scaled(scaled, value, error);
        if grown > 0 {
            // A sparse histogram grew or became dense: counted under the
            // series lock, so a flush releasing these stats never
            // subtracts bytes not yet added.
            self.budget.add(grown);
        }
    }

    /// Slow path: finds or creates the live stats of `minute`.
    #[cold]
    fn open_bucket<'a>(&self, st: &'a mut HotState, minute: i64) -> &'a mut Stats {
        // Buckets are kept sorted by minute: a backfill holds a day of them.
        let idx = match st.buckets.binary_search_by_key(&minute, |b| b.minute) {
            Ok(i) => i,
            Err(i) => {
                st.buckets.insert(
                    i,
                    HotBucket {
                        minute,
                        live: None,
                        inflight: None,
                    },
                );
                i
            }
        };
        self.first_seen.fetch_min(minute, Ordering::Relaxed);
        self.last_seen.fetch_max(minute, Ordering::Relaxed);
        let bucket = &mut st.buckets[idx];
        bucket.live.get_or_insert_with(|| {
            // Sparse: a bucket's bytes follow its samples (see `stats`).
            let s = Stats::new_sparse(self.key.kind, self.precision);
            self.budget.add(s.heap_bytes());
            s
        })
    }

    /// Called when a [`Stats`] leaves hot memory for good.
    fn release_bytes(&self, bytes: usize) {
        self.budget.sub(bytes);
    }

    /// Flush, step 1: when the series is dirty, moves every bucket's `live`
    /// stats to `inflight` (merged with the `inflight` of a flush whose
    /// commit failed, so one delta carries both) and returns each
    /// (minute, stats) to write. Readers keep seeing them as `inflight`.
    pub(crate) fn take_for_flush(&self) -> Result<Vec<(i64, Arc<Stats>)>> {
        let dirty = self.dirty.swap(false, Ordering::AcqRel);
        if !dirty && !self.rings.get().is_some_and(|r| r.pending()) {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let mut taken = Vec::new();
        for b in st.buckets.iter_mut() {
            let pending = match (b.live.take(), b.inflight.take()) {
                (Some(live), None) => Arc::new(live),
                (Some(live), Some(prev)) => {
                    let counted = prev.heap_bytes() + live.heap_bytes();
                    let mut merged = Arc::unwrap_or_clone(prev);
                    if let Err(e) = merged.merge(&live) {
                        // Both are dropped with the error.
                        self.release_bytes(counted);
                        return Err(e);
                    }
                    // The merged stats may be larger (sparse became dense)
                    // or smaller (a sparse merge fits its entries exactly).
                    let now = merged.heap_bytes();
                    if now > counted {
                        self.budget.add(now - counted);
                    } else {
                        self.release_bytes(counted - now);
                    }
                    Arc::new(merged)
                }
                (None, Some(prev)) => prev,
                (None, None) => continue,
            };
            b.inflight = Some(pending.clone());
            taken.push((b.minute, pending));
        }
        Ok(taken)
    }

    /// Flush, step 2 on failure: the commit did not happen, so the taken
    /// stats stay `inflight` and the next flush writes them again.
    pub(crate) fn flush_failed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Flush, step 2 on success, under the gate's write side: drops the
    /// `inflight` stats of `minute` that this flush wrote (`written`), and
    /// the bucket once nothing is left in it.
    pub(crate) fn finish_flush(&self, minute: i64, written: &Arc<Stats>, _gate: &GateWrite<'_>) {
        let mut st = self.state.lock();
        let Ok(i) = st.buckets.binary_search_by_key(&minute, |b| b.minute) else {
            return;
        };
        let b = &mut st.buckets[i];
        if b.inflight.as_ref().is_some_and(|x| Arc::ptr_eq(x, written)) {
            b.inflight = None;
            self.release_bytes(written.heap_bytes());
        }
        if b.live.is_none() && b.inflight.is_none() {
            st.buckets.remove(i);
        }
    }

    /// Readers: hands every hot stats (`live` and `inflight`) of a minute in
    /// [lo, hi) to `visit`, while the caller holds the gate's read side.
    pub(crate) fn visit_hot(
        &self,
        lo: i64,
        hi: i64,
        _gate: &GateRead<'_>,
        mut visit: impl FnMut(i64, &Stats) -> Result<()>,
    ) -> Result<()> {
        let st = self.lock();
        for b in st
            .buckets
            .iter()
            .filter(|b| b.minute >= lo && b.minute < hi)
        {
            if let Some(live) = &b.live {
                visit(b.minute, live)?;
            }
            if let Some(inflight) = &b.inflight {
                visit(b.minute, inflight)?;
            }
        }
        Ok(())
    }

    /// The `last_seen` to write to the store's series record, when it
    /// changed since the last successful write.
    pub(crate) fn catalog_change(&self) -> Option<i64> {
        let last = self.last_seen();
        (self.persisted_last_seen.load(Ordering::Relaxed) != last).then_some(last)
    }

    /// Records that the store's series record now holds `last_seen`.
    pub(crate) fn catalog_written(&self, last_seen: i64) {
        self.persisted_last_seen.store(last_seen, Ordering::Relaxed);
    }

    /// Whether any hot bucket holds data.
    fn is_hot(&self) -> bool {
        !self.lock().buckets.is_empty()
    }

    /// Frees the bucket list's allocation when it holds no bucket (an
    /// idle series); returns the bytes freed. A bucket with data, live or
    /// in flight, is never touched.
    fn release_idle(&self) -> usize {
        let mut st = self.lock();
        let cap = st.buckets.capacity();
        if !st.buckets.is_empty() || cap == 0 {
            return 0;
        }
        st.buckets = Vec::new();
        cap * std::mem::size_of::<HotBucket>()
    }
}

type Shard = RwLock<HashMap<u64, Vec<Arc<Series>>, foldhash::fast::FixedState>>;

/// Every known series, sharded, with an index by metric and tag (posting
/// lists, `crate::index`) that queries select from.
pub struct Registry {
    shards: Box<[Shard]>,
    index: RwLock<SeriesIndex>,
    per_namespace: Mutex<HashMap<String, usize>>,
    next_id: AtomicU64,
    hasher: foldhash::fast::FixedState,
    series_limit: usize,
    /// Most series across every namespace (`storage.series_limit`).
    total_limit: usize,
    /// Series known, across every namespace (guarded by `per_namespace`'s
    /// lock on the creation path, so the two counts never disagree).
    total: AtomicUsize,
    precision: Precision,
    /// Start of the minute hot-path handles record into; kept current by the
    /// engine (the `minute` background task and every clock read).
    current_minute: Arc<AtomicI64>,
    budget: Arc<HotBudget>,
}

impl Registry {
    /// An empty registry.
    pub fn new(series_limit: usize, precision: Precision, now_ms: i64) -> Registry {
        Registry {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            index: RwLock::new(SeriesIndex::default()),
            per_namespace: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            hasher: foldhash::fast::FixedState::with_seed(0x05c0_9e40),
            series_limit,
            total_limit: usize::MAX,
            total: AtomicUsize::new(0),
            precision,
            current_minute: Arc::new(AtomicI64::new(Resolution::Minute.align(now_ms))),
            budget: Arc::new(HotBudget {
                wake_at: AtomicUsize::new(usize::MAX),
                ..HotBudget::default()
            }),
        }
    }

    /// Caps the series of all namespaces together (`storage.series_limit`);
    /// series loaded from the store always load, even past it.
    pub fn with_total_limit(mut self, limit: usize) -> Registry {
        self.total_limit = limit;
        self
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
        self.budget.bytes.load(Ordering::Relaxed)
    }

    /// Calls `wake` whenever a bucket opens while hot bytes are at or above
    /// `mark` (the early-flush mark). Set once, by the engine.
    pub fn on_hot_bytes_above(&self, mark: usize, wake: impl Fn() + Send + Sync + 'static) {
        if self.budget.wake.set(Box::new(wake)).is_ok() {
            self.budget.wake_at.store(mark, Ordering::Relaxed);
        }
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
            let total = self.total.load(Ordering::Relaxed);
            if total >= self.total_limit {
                return Err(Error::TotalSeriesLimitExceeded {
                    limit: self.total_limit,
                });
            }
            let n = counts.entry(key.namespace.clone()).or_insert(0);
            if *n >= self.series_limit {
                return Err(Error::SeriesLimitExceeded {
                    namespace: key.namespace,
                    limit: self.series_limit,
                });
            }
            *n += 1;
            self.total.store(total + 1, Ordering::Relaxed);
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
        {
            let mut counts = self.per_namespace.lock();
            *counts.entry(key.namespace.clone()).or_insert(0) += 1;
            self.total.fetch_add(1, Ordering::Relaxed);
        }
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
            rings: OnceLock::new(),
            dirty: AtomicBool::new(false),
            first_seen: AtomicI64::new(first),
            last_seen: AtomicI64::new(last),
            persisted_last_seen: AtomicI64::new(persisted),
            precision: self.precision,
            budget: self.budget.clone(),
        })
    }

    /// Called once a new series is in its shard (its lock released).
    fn add_to_index(&self, s: &Arc<Series>) {
        self.index.write().add(s);
    }

    /// Series of one metric whose tags include `filter`, in creation order
    /// (from the tag index: costs what the matching series cost).
    pub fn select(&self, ns: &str, metric: &str, kind: Kind, filter: &Tags) -> Vec<Arc<Series>> {
        self.index.read().select(ns, metric, kind, filter)
    }

    /// Every series of a namespace (all namespaces when `None`), ordered by
    /// metric, kind, then creation.
    pub fn in_namespace(&self, ns: Option<&str>) -> Vec<Arc<Series>> {
        self.index.read().in_namespace(ns)
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

    /// Memory cleanup: frees the hot state of every idle series (no hot
    /// bucket left after the last flush); returns the bytes freed. Nothing
    /// with data is dropped, so no sample is lost: flush first to make more
    /// series idle. Takes each shard's read lock, so recording goes on.
    pub fn evict_idle(&self) -> usize {
        let mut freed = 0;
        for shard in self.shards.iter() {
            for list in shard.read().values() {
                freed += list.iter().map(|s| s.release_idle()).sum::<usize>();
            }
        }
        freed
    }

    /// Memory cleanup: shrinks the shard maps, their per-hash lists and the
    /// metric index to their contents; returns the bytes freed (from the
    /// capacities dropped). Each shard's write lock is held only for its own
    /// shrink.
    pub fn shrink_maps(&self) -> usize {
        use std::mem::size_of;
        let entry = size_of::<(u64, Vec<Arc<Series>>)>() + 1;
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write();
            let before = map.capacity();
            for list in map.values_mut() {
                freed += (list.capacity() - list.len()) * size_of::<Arc<Series>>();
                list.shrink_to_fit();
            }
            map.shrink_to_fit();
            freed += before.saturating_sub(map.capacity()) * entry;
        }
        freed + self.index.write().shrink()
    }

    /// Number of series whose hot state holds data.
    pub fn hot_series(&self) -> usize {
        self.all().iter().filter(|s| s.is_hot()).count()
    }

    /// A handle that records into `series` at the registry's current minute.
    pub fn handle(&self, series: Arc<Series>) -> Handle {
        Handle::new(series, self.current_minute.clone())
    }
}

fn matches(s: &Series, ns: &str, kind: Kind, metric: &str, tags: &[(&str, &str)]) -> bool {
    s.key.kind == kind
        && s.key.metric == metric
        && s.key.namespace == ns
        && s.key.tags.same_as(tags)
}

#[cfg(test)]
mod tests;
