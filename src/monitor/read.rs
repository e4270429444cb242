//! Queries and the admin API: reads through `query`, retention and
//! compaction, baselines, thresholds and alerts. Each method is a thin call
//! into the room that owns the state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alerts::{Alert, AlertCounters, AlertState, PerformanceHealth, Transition};
use crate::backup::{self, BackupReport};
use crate::baseline::{self, Baseline, Selection};
use crate::config::{Retention, RetentionRule, ThresholdSpec};
use crate::error::Result;
use crate::model::{Kind, Resolution, format_ts};
use crate::query::{self, QueryResult, QuerySpec, Summary};
use crate::retention::{CompactOptions, CompactReport};
use crate::store::flush::{FlushReport, RollupReport};
use crate::store::{Store, create_data_dir};

use super::Monitor;
use std::sync::atomic::Ordering;

/// Directory of the live backups inside the data directory.
pub const BACKUP_DIR: &str = "backups";

/// A series as listed by `GET /v1/series`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    /// Namespace.
    pub namespace: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// First minute with data.
    pub first_seen: String,
    /// Last minute with data.
    pub last_seen: String,
}

impl Monitor {
    /// Bucketed or whole-range query.
    pub fn query(&self, spec: &QuerySpec) -> Result<QueryResult> {
        let e = &self.engine;
        self.guarded("answering a query", || {
            e.with_recovery(|| query::query(&e.source(), spec))
        })
    }

    /// One aggregate per series of `ns` over the last `window`.
    pub fn summary(
        &self,
        ns: &str,
        window: Resolution,
        metric: Option<&str>,
        kind: Option<Kind>,
    ) -> Result<Summary> {
        self.guarded("answering a summary", || {
            self.engine.with_recovery(|| {
                let src = self.engine.source();
                let now = src.now_ms;
                query::summary(&src, ns, window, metric, kind, now)
            })
        })
    }

    /// Every series of `ns` (all when `None`).
    pub fn series(&self, ns: Option<&str>) -> Vec<SeriesInfo> {
        self.engine
            .registry
            .in_namespace(ns)
            .iter()
            .map(|s| SeriesInfo {
                namespace: s.key().namespace.clone(),
                metric: s.key().metric.clone(),
                kind: s.key().kind,
                tags: s.key().tags.to_map(),
                first_seen: format_ts(s.first_seen()),
                last_seen: format_ts(s.last_seen()),
            })
            .collect()
    }

    /// Namespaces and their series counts.
    pub fn namespaces(&self) -> BTreeMap<String, usize> {
        self.engine.registry.namespaces()
    }

    /// Writes every hot bucket to the store now (and evaluates thresholds).
    pub fn flush(&self) -> Result<FlushReport> {
        self.guarded("flushing", || self.engine.flush(self.engine.clock.now_ms()))
    }

    /// Moves closed minutes' deltas into minute/hour/day records now.
    pub fn rollup(&self) -> Result<RollupReport> {
        self.guarded("rolling up", || {
            self.engine.rollup(self.engine.clock.now_ms(), usize::MAX)
        })
    }

    /// Retention that applies to `ns`.
    pub fn retention(&self, ns: &str) -> Retention {
        self.engine.policy.of(ns)
    }

    /// Stores a retention override for `ns` (any subset of the keys) and
    /// returns the retention now in force.
    pub fn set_retention(&self, ns: &str, rule: &RetentionRule) -> Result<Retention> {
        self.guarded("storing a retention override", || {
            self.engine
                .policy
                .set_override(&self.engine.store, ns, rule)
        })
    }

    /// Applies retention now (rollup first, then bounded deletions).
    pub fn compact(&self, opts: CompactOptions) -> Result<CompactReport> {
        self.guarded("compacting", || {
            self.engine.compact(self.engine.clock.now_ms(), opts)
        })
    }

    /// Writes a consistent copy of the store to
    /// `<data_dir>/backups/scopemon-<UTC time>.redb` (a `-N` suffix when
    /// that name is taken) and returns its path and size. Flushes first,
    /// through the normal flush, so every sample accepted before the call
    /// is in the copy; the copy itself is one read transaction, so ingest,
    /// flushes and rollups go on meanwhile.
    pub fn backup(&self) -> Result<BackupReport> {
        self.flush()?;
        let dir = self.engine.config.storage.data_dir.join(BACKUP_DIR);
        create_data_dir(&dir)?;
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let stamp = chrono::DateTime::from_timestamp_millis(self.engine.clock.now_ms())
            .map(|t| t.format("%Y%m%dT%H%M%S%.3fZ").to_string())
            .unwrap_or_else(|| "unknown-time".into());
        let mut to = dir.join(format!("scopemon-{stamp}.redb"));
        for n in 2.. {
            if !to.exists() {
                break;
            }
            to = dir.join(format!("scopemon-{stamp}-{n}.redb"));
        }
        backup::backup(&*self.engine.store.db()?, &to, false)
    }

    /// Compactions run, totals removed per (namespace, resolution), and the
    /// last report.
    pub fn compaction_stats(
        &self,
    ) -> (
        u64,
        BTreeMap<(String, &'static str), u64>,
        Option<CompactReport>,
    ) {
        let c = &self.engine.compaction;
        (
            c.runs.load(Ordering::Relaxed),
            c.removed.lock().clone(),
            c.last.lock().clone(),
        )
    }

    /// The baseline of a selection: the cached one when younger than the
    /// recompute interval, else computed now (and cached).
    pub fn baseline(&self, sel: &Selection) -> Result<Baseline> {
        self.guarded("computing a baseline", || self.baseline_unguarded(sel))
    }

    fn baseline_unguarded(&self, sel: &Selection) -> Result<Baseline> {
        let e = &self.engine;
        let now = e.clock.now_ms();
        let max_age =
            i64::try_from(e.config.baseline.recompute_interval.as_millis()).unwrap_or(i64::MAX);
        if let Some(b) = e
            .baselines
            .get(sel)
            .filter(|b| now - b.computed_at_ms < max_age)
        {
            return Ok((*b).clone());
        }
        let b = baseline::compute(&e.source(), &e.config.baseline, sel, now)?;
        e.baselines
            .put_all(&e.store, vec![(sel.clone(), b.clone())])?;
        Ok(b)
    }

    /// Recomputes the baseline of every series active in the window (what
    /// the background task does); returns how many.
    pub fn recompute_baselines(&self) -> Result<usize> {
        self.guarded("computing baselines", || {
            self.engine.recompute_baselines(self.engine.clock.now_ms())
        })
    }

    /// Creates or replaces a threshold.
    pub fn put_threshold(&self, t: ThresholdSpec) -> Result<ThresholdSpec> {
        self.guarded("storing a threshold", || {
            self.engine.alerts.put_threshold(&self.engine.store, t)
        })
    }

    /// Every threshold.
    pub fn thresholds(&self) -> Vec<ThresholdSpec> {
        self.engine.alerts.thresholds()
    }

    /// Deletes a threshold (its firing alerts resolve); false if unknown.
    pub fn delete_threshold(&self, id: &str) -> Result<bool> {
        let e = &self.engine;
        self.guarded("deleting a threshold", || {
            e.alerts.delete_threshold(&e.store, id, e.clock.now_ms())
        })
    }

    /// Alerts, newest first.
    pub fn alerts(&self, state: Option<AlertState>) -> Vec<Alert> {
        self.engine.alerts.alerts(state)
    }

    /// Evaluates every threshold now (also done after every flush).
    pub fn evaluate_alerts(&self) -> Result<Vec<Transition>> {
        self.guarded("evaluating thresholds", || {
            self.engine.evaluate_alerts(self.engine.clock.now_ms())
        })
    }

    /// check_performance_health of a namespace.
    pub fn performance_health(&self, namespace: &str) -> Result<PerformanceHealth> {
        let e = &self.engine;
        self.guarded("checking performance health", || {
            e.alerts
                .performance_health(&e.source(), &e.baselines, namespace, e.clock.now_ms())
        })
    }

    /// Alert counters (for `/metrics`).
    pub fn alert_counters(&self) -> &AlertCounters {
        &self.engine.alerts.counters
    }

    /// The store (read access for the project's own tests and tools).
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.engine.store
    }
}
