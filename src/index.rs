//! The series index: which series of a metric a query selects, found from
//! posting lists instead of a scan of every series of the metric.
//!
//! Invariants (held by [`SeriesIndex`]'s methods, the only writers):
//! - **Contents.** For every (namespace, metric, kind) with at least one
//!   series, a [`MetricEntry`] holding every series of it exactly once,
//!   sorted by series id, and for every (tag key, value) carried by one of
//!   those series, the sorted ids of the series carrying it (a posting
//!   list). A list, a key's map and an entry are dropped when they empty,
//!   so nothing is kept for series that are gone.
//! - **Answers.** [`SeriesIndex::select`] returns exactly the series of the
//!   metric whose tags include the filter (what a scan with
//!   `Tags::includes` returns), in id order; an empty filter returns every
//!   series of the metric. The property test below checks it against that
//!   scan for random series sets, filters, late additions and removals.
//! - **When updated.** The registry (`hot::Registry`) adds a series right
//!   after inserting it into its shard — on creation (`get_or_create`) and
//!   on load (`insert_loaded`) — and it is the index's only owner. No
//!   series leaves the registry today (memory cleanups free hot state, not
//!   series; retention deletes records, not series), so [`remove`] has no
//!   caller yet; it keeps the index right for the day one does.
//! - **Lock.** The registry holds the index in one `RwLock`: additions take
//!   the write side (after the shard's lock is released, so the two are
//!   never held together), selections the read side. A series created
//!   concurrently with a query may or may not be seen by it; it has no
//!   stored data yet, so either answer is a consistent snapshot.
//!
//! Cost: a filtered selection looks up each filter pair's list (two hash
//! lookups), intersects them smallest first (binary searches in the larger
//! lists), then resolves the surviving ids by binary search — it follows
//! the matching series and the smallest list, not the metric's size.
//!
//! [`remove`]: SeriesIndex::remove

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::hot::Series;
use crate::model::{Kind, Tags};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Sorted series ids carrying one (tag key, value).
type Postings = Vec<u64>;

/// The series of one (namespace, metric, kind) and their posting lists.
#[derive(Debug, Default)]
struct MetricEntry {
    /// Every series of the metric, sorted by id (= creation order).
    series: Vec<Arc<Series>>,
    /// tag key → tag value → posting list.
    postings: Map<String, Map<String, Postings>>,
}

/// namespace → metric → kind → entry (ordered, for listings).
type Metrics = BTreeMap<String, BTreeMap<String, BTreeMap<Kind, MetricEntry>>>;

/// Posting lists over every series of a registry (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct SeriesIndex {
    metrics: Metrics,
}

/// Inserts `id` into a sorted list; returns false when it was there.
fn insert_sorted(list: &mut Postings, id: u64) -> bool {
    // Ids mostly arrive in increasing order: appending is the common case.
    if list.last().is_none_or(|&last| last < id) {
        list.push(id);
        return true;
    }
    match list.binary_search(&id) {
        Ok(_) => false,
        Err(i) => {
            list.insert(i, id);
            true
        }
    }
}

impl SeriesIndex {
    /// Adds a series (a second add of the same id is ignored).
    pub(crate) fn add(&mut self, s: &Arc<Series>) {
        let k = s.key();
        let entry = self
            .metrics
            .entry(k.namespace.clone())
            .or_default()
            .entry(k.metric.clone())
            .or_default()
            .entry(k.kind)
            .or_default();
        let id = s.id();
        let at = match entry.series.last() {
            Some(last) if last.id() >= id => {
                match entry.series.binary_search_by_key(&id, |x| x.id()) {
                    Ok(_) => return,
                    Err(i) => i,
                }
            }
            _ => entry.series.len(),
        };
        entry.series.insert(at, s.clone());
        for (key, value) in k.tags.pairs() {
            let values = entry.postings.entry(key.clone()).or_default();
            insert_sorted(values.entry(value.clone()).or_default(), id);
        }
    }

    /// Removes a series; returns whether it was indexed.
    #[cfg_attr(not(test), allow(dead_code))] // no series leaves the registry yet
    pub(crate) fn remove(&mut self, s: &Series) -> bool {
        let k = s.key();
        let Some(metrics) = self.metrics.get_mut(&k.namespace) else {
            return false;
        };
        let Some(kinds) = metrics.get_mut(&k.metric) else {
            return false;
        };
        let Some(entry) = kinds.get_mut(&k.kind) else {
            return false;
        };
        let Ok(at) = entry.series.binary_search_by_key(&s.id(), |x| x.id()) else {
            return false;
        };
        entry.series.remove(at);
        for (key, value) in k.tags.pairs() {
            let Some(values) = entry.postings.get_mut(key) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                if let Ok(i) = list.binary_search(&s.id()) {
                    list.remove(i);
                }
                if list.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                entry.postings.remove(key);
            }
        }
        if entry.series.is_empty() {
            kinds.remove(&k.kind);
            if kinds.is_empty() {
                metrics.remove(&k.metric);
                if metrics.is_empty() {
                    self.metrics.remove(&k.namespace);
                }
            }
        }
        true
    }

    fn entry(&self, ns: &str, metric: &str, kind: Kind) -> Option<&MetricEntry> {
        self.metrics.get(ns)?.get(metric)?.get(&kind)
    }

    /// Series of one metric whose tags include `filter`, in id order.
    pub(crate) fn select(
        &self,
        ns: &str,
        metric: &str,
        kind: Kind,
        filter: &Tags,
    ) -> Vec<Arc<Series>> {
        let Some(entry) = self.entry(ns, metric, kind) else {
            return Vec::new();
        };
        let pairs = filter.pairs();
        if pairs.is_empty() {
            return entry.series.clone();
        }
        let mut lists: Vec<&[u64]> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match entry.postings.get(key).and_then(|v| v.get(value)) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        lists.sort_unstable_by_key(|l| l.len());
        let mut ids: Vec<u64> = lists[0].to_vec();
        for list in &lists[1..] {
            ids.retain(|id| list.binary_search(id).is_ok());
            if ids.is_empty() {
                break;
            }
        }
        ids.iter()
            .filter_map(|id| {
                let at = entry.series.binary_search_by_key(id, |x| x.id()).ok()?;
                Some(entry.series[at].clone())
            })
            .collect()
    }

    /// Every series of a namespace (all namespaces when `None`), ordered
    /// by namespace, metric, kind, then id.
    pub(crate) fn in_namespace(&self, ns: Option<&str>) -> Vec<Arc<Series>> {
        let mut out = Vec::new();
        for (n, metrics) in &self.metrics {
            if ns.is_some_and(|ns| ns != n) {
                continue;
            }
            for kinds in metrics.values() {
                for entry in kinds.values() {
                    out.extend(entry.series.iter().cloned());
                }
            }
        }
        out
    }

    /// Shrinks every list to its contents; returns the bytes freed (from
    /// the capacities dropped).
    pub(crate) fn shrink(&mut self) -> usize {
        use std::mem::size_of;
        let mut freed = 0;
        for entry in self.metrics.values_mut().flat_map(|m| m.values_mut()) {
            for e in entry.values_mut() {
                freed += (e.series.capacity() - e.series.len()) * size_of::<Arc<Series>>();
                e.series.shrink_to_fit();
                for list in e.postings.values_mut().flat_map(|v| v.values_mut()) {
                    freed += (list.capacity() - list.len()) * size_of::<u64>();
                    list.shrink_to_fit();
                }
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::hot::Registry;
    use crate::model::SeriesKey;
    use crate::stats::Precision;

    const NAMESPACES: [&str; 2] = ["a", "b"];
    const METRICS: [&str; 2] = ["m1", "m2"];
    const KINDS: [Kind; 2] = [Kind::Latency, Kind::Throughput];
    const TAG_KEYS: [&str; 3] = ["dc", "host", "route"];
    const TAG_VALUES: [&str; 3] = ["x", "y", "z"];

    /// (namespace, metric, kind, tag key → tag value), as indices.
    type Spec = (usize, usize, usize, BTreeMap<usize, usize>);

    fn tag_map() -> impl Strategy<Value = BTreeMap<usize, usize>> {
        proptest::collection::btree_map(0..TAG_KEYS.len(), 0..TAG_VALUES.len(), 0..=3)
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (0..2usize, 0..2usize, 0..2usize, tag_map())
    }

    fn pairs(tags: &BTreeMap<usize, usize>) -> Vec<(&'static str, &'static str)> {
        tags.iter()
            .map(|(&k, &v)| (TAG_KEYS[k], TAG_VALUES[v]))
            .collect()
    }

    fn key(s: &Spec) -> SeriesKey {
        let tags = Tags::new(&pairs(&s.3)).unwrap();
        SeriesKey::new(NAMESPACES[s.0], KINDS[s.2], METRICS[s.1], tags).unwrap()
    }

    fn ids(v: &[Arc<Series>]) -> Vec<u64> {
        v.iter().map(|s| s.id()).collect()
    }

    /// What a scan of every series returns, in id order.
    fn scan(all: &[Arc<Series>], ns: &str, metric: &str, kind: Kind, f: &Tags) -> Vec<u64> {
        let mut out: Vec<u64> = all
            .iter()
            .filter(|s| {
                let k = s.key();
                k.namespace == ns && k.metric == metric && k.kind == kind && k.tags.includes(f)
            })
            .map(|s| s.id())
            .collect();
        out.sort_unstable();
        out
    }

    /// A listing by scan: ordered by namespace, metric, kind, id.
    fn scan_listing(all: &[Arc<Series>], ns: Option<&str>) -> Vec<u64> {
        let mut v: Vec<&Arc<Series>> = all
            .iter()
            .filter(|s| ns.is_none_or(|ns| s.key().namespace == ns))
            .collect();
        v.sort_by(|a, b| {
            let (ka, kb) = (a.key(), b.key());
            (&ka.namespace, &ka.metric, ka.kind, a.id()).cmp(&(
                &kb.namespace,
                &kb.metric,
                kb.kind,
                b.id(),
            ))
        });
        v.iter().map(|s| s.id()).collect()
    }

    /// Every (metric, filter) query: indexed answer == scan.
    fn check_all(
        all: &[Arc<Series>],
        filters: &[Spec],
        select: impl Fn(&str, &str, Kind, &Tags) -> Vec<Arc<Series>>,
    ) -> std::result::Result<(), TestCaseError> {
        for f in filters {
            let (ns, metric, kind) = (NAMESPACES[f.0], METRICS[f.1], KINDS[f.2]);
            let tags = Tags::new(&pairs(&f.3)).unwrap();
            prop_assert_eq!(
                ids(&select(ns, metric, kind, &tags)),
                scan(all, ns, metric, kind, &tags),
                "{}/{}/{:?} {:?}",
                ns,
                metric,
                kind,
                tags
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Series loaded from the store (ids in any order), then series
        /// created after loading: the registry's selection and listings
        /// equal a scan of every series.
        #[test]
        fn registry_selection_equals_a_scan(
            loaded in proptest::collection::vec(spec(), 0..40),
            created in proptest::collection::vec(spec(), 0..40),
            filters in proptest::collection::vec(spec(), 1..20),
        ) {
            let r = Registry::new(1_000, Precision::DEFAULT, 0);
            let unique: BTreeSet<SeriesKey> = loaded.iter().map(key).collect();
            // Stored ids are distinct but not in key order.
            for (i, k) in unique.into_iter().enumerate() {
                r.insert_loaded((i as u64 * 7_919) % 1_000 + 1, k, 0, 0);
            }
            check_all(&r.all(), &filters, |n, m, k, t| r.select(n, m, k, t))?;
            for s in &created {
                let k = key(s);
                r.get_or_create(NAMESPACES[s.0], KINDS[s.2], METRICS[s.1], &pairs(&s.3), 0)
                    .unwrap();
                prop_assert!(r.select(&k.namespace, &k.metric, k.kind, &k.tags)
                    .iter().any(|x| x.key() == &k));
            }
            let all = r.all();
            check_all(&all, &filters, |n, m, k, t| r.select(n, m, k, t))?;
            for ns in [None, Some("a"), Some("b")] {
                prop_assert_eq!(ids(&r.in_namespace(ns)), scan_listing(&all, ns));
            }
        }

        /// Series added in any order, some removed, some added again: the
        /// index answers as a scan of the series left, and keeps nothing
        /// for series that are gone.
        #[test]
        fn index_selection_equals_a_scan_after_removals(
            specs in proptest::collection::vec(spec(), 0..40),
            order in proptest::collection::vec(any::<u16>(), 40),
            removed in proptest::collection::vec(any::<bool>(), 40),
            readded in proptest::collection::vec(any::<bool>(), 40),
            filters in proptest::collection::vec(spec(), 1..20),
        ) {
            let r = Registry::new(1_000, Precision::DEFAULT, 0);
            let mut series: Vec<Arc<Series>> = specs
                .iter()
                .map(|s| r.get_or_create(NAMESPACES[s.0], KINDS[s.2], METRICS[s.1], &pairs(&s.3), 0).unwrap())
                .collect();
            // A repeated spec finds the same series: keep one of each.
            let mut seen = BTreeSet::new();
            series.retain(|s| seen.insert(s.id()));
            let mut shuffled: Vec<(u16, &Arc<Series>)> = order.iter().copied().zip(&series).collect();
            shuffled.sort_by_key(|(o, _)| *o);
            let mut index = SeriesIndex::default();
            for (_, s) in &shuffled {
                index.add(s);
            }
            let mut kept: BTreeMap<u64, Arc<Series>> = BTreeMap::new();
            for (i, s) in series.iter().enumerate() {
                if removed[i] {
                    index.remove(s);
                    if readded[i] {
                        index.add(s);
                        kept.insert(s.id(), s.clone());
                    }
                } else {
                    kept.insert(s.id(), s.clone());
                }
            }
            let left: Vec<Arc<Series>> = kept.into_values().collect();
            check_all(&left, &filters, |n, m, k, t| index.select(n, m, k, t))?;
            prop_assert_eq!(ids(&index.in_namespace(None)), scan_listing(&left, None));
            for s in &left {
                index.remove(s);
            }
            prop_assert!(index.metrics.is_empty());
        }
    }

    #[test]
    fn a_filter_with_an_unknown_pair_selects_nothing() {
        let r = Registry::new(10, Precision::DEFAULT, 0);
        r.get_or_create("ns", Kind::Latency, "m", &[("host", "a"), ("dc", "x")], 0)
            .unwrap();
        r.get_or_create("ns", Kind::Latency, "m", &[("host", "b"), ("dc", "x")], 0)
            .unwrap();
        let sel = |pairs: &[(&str, &str)]| {
            r.select("ns", "m", Kind::Latency, &Tags::new(pairs).unwrap())
                .len()
        };
        assert_eq!(sel(&[("dc", "x")]), 2);
        assert_eq!(sel(&[("dc", "x"), ("host", "b")]), 1);
        assert_eq!(sel(&[("dc", "y")]), 0);
        assert_eq!(sel(&[("zone", "x")]), 0);
        assert!(
            r.select("ns", "other", Kind::Latency, &Tags::empty())
                .is_empty()
        );
    }
}
