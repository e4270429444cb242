//! [`Monitor`]: the embeddable engine (PerformanceMonitor of the design).
//! It owns the store, the hot registry and the flusher thread; the HTTP
//! server and the CLI are thin layers over it.
//!
//! ```no_run
//! use std::time::Duration;
//! use scopemon::{Config, Monitor};
//! let monitor = Monitor::open(Config::with_data_dir("./data"))?;
//! monitor.record_latency("production", "foundation.config.get", Duration::from_micros(1500), &[("cache", "miss")])?;
//! let handle = monitor.latency_handle("production", "db.query", &[])?;
//! handle.record(Duration::from_micros(420));
//! monitor.close()?;
//! # Ok::<(), scopemon::Error>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;

use crate::alerts::{self, Alert, AlertState, Alerts, PerformanceHealth, Transition};
use crate::baseline::{self, Baseline, BaselineCache, Selection};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Retention, ThresholdSpec};
use crate::error::{Error, Result};
use crate::hot::{Handle, Registry, Series};
use crate::model::{Kind, MINUTE_MS, Outcome, Resolution, format_ts};
use crate::query::{self, QueryResult, QuerySpec, Source, Summary};
use crate::retention::{self, CompactOptions, CompactReport, RetentionPolicy};
use crate::store::codec::Codec;
use crate::store::flush::{self, FlushReport, RollupReport};
use crate::store::{OpenOptions, Store};

/// Namespace of scopemon's own series (compactor figures).
pub const OWN_NAMESPACE: &str = "scopemon";

/// Samples more than this far ahead of the clock are refused.
pub const MAX_FUTURE_MS: i64 = 5 * MINUTE_MS;

/// One sample as given to [`Monitor::record`].
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Metric.
    pub metric: &'a str,
    /// Kind.
    pub kind: Kind,
    /// Value in the kind's unit.
    pub value: f64,
    /// Tags.
    pub tags: &'a [(&'a str, &'a str)],
    /// Outcome.
    pub outcome: Outcome,
    /// Unix ms; `None` = now.
    pub timestamp_ms: Option<i64>,
}

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
    pub tags: std::collections::BTreeMap<String, String>,
    /// First minute with data.
    pub first_seen: String,
    /// Last minute with data.
    pub last_seen: String,
}

/// Figures about the engine itself (for `/metrics` and health).
#[derive(Debug, Clone, Serialize)]
pub struct EngineStats {
    /// Known series.
    pub series: usize,
    /// Series holding hot data.
    pub hot_series: usize,
    /// Bytes of hot histograms.
    pub hot_bytes: usize,
    /// Flushes completed.
    pub flushes: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// Unix ms of the last successful flush (0 = none yet).
    pub last_flush_ms: i64,
    /// The last flush's report.
    pub last_flush: Option<FlushReport>,
    /// The last rollup's report.
    pub last_rollup: Option<RollupReport>,
    /// Store file size.
    pub file_bytes: u64,
}

struct Engine {
    config: Config,
    clock: SharedClock,
    registry: Registry,
    store: Store,
    policy: RetentionPolicy,
    baselines: BaselineCache,
    alerts: Alerts,
    gate: RwLock<()>,
    /// Serialises flushes; holds their codec buffers.
    writer: Mutex<Codec>,
    stop: Mutex<bool>,
    wake: Condvar,
    closed: AtomicBool,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    last_flush_failed: AtomicBool,
    last_flush_ms: AtomicI64,
    last_flush: Mutex<Option<FlushReport>>,
    last_rollup: Mutex<Option<RollupReport>>,
    compactions: AtomicU64,
    /// Buckets removed by compaction since start, per (namespace, resolution).
    compacted: Mutex<BTreeMap<(String, &'static str), u64>>,
    last_compaction: Mutex<Option<CompactReport>>,
}

/// Builder for [`Monitor`].
pub struct MonitorBuilder {
    config: Config,
    clock: SharedClock,
    background: bool,
}

impl MonitorBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether to run the flusher thread (default true). Without it the
    /// owner calls [`Monitor::flush`] and [`Monitor::rollup`] itself.
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Opens the store and starts the engine.
    pub fn open(self) -> Result<Monitor> {
        self.config.validate()?;
        // Configured thresholds are checked before anything is created.
        let configured = alerts::configured_rules(&self.config.alerts)?;
        let store = Store::open(&self.config.storage.data_dir, OpenOptions::default())?;
        let now = self.clock.now_ms();
        let registry = Registry::new(
            self.config.storage.series_limit_per_namespace,
            self.config.precision(),
            now,
        );
        for (id, rec) in store.load_series()? {
            registry.insert_loaded(id, rec.key, rec.first_seen, rec.last_seen);
        }
        let policy = RetentionPolicy::load(&self.config, store.db())?;
        let baselines = BaselineCache::load(store.db())?;
        let alerts = Alerts::load(&store, &self.config.alerts, configured)?;
        let engine = Arc::new(Engine {
            config: self.config,
            clock: self.clock,
            registry,
            policy,
            baselines,
            alerts,
            store,
            gate: RwLock::new(()),
            writer: Mutex::new(Codec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
            last_flush_failed: AtomicBool::new(false),
            last_flush_ms: AtomicI64::new(0),
            last_flush: Mutex::new(None),
            last_rollup: Mutex::new(None),
            compactions: AtomicU64::new(0),
            compacted: Mutex::new(BTreeMap::new()),
            last_compaction: Mutex::new(None),
        });
        let flusher = if self.background {
            let e = engine.clone();
            Some(
                std::thread::Builder::new()
                    .name("scopemon-flusher".into())
                    .spawn(move || flusher_loop(&e))?,
            )
        } else {
            None
        };
        let baseliner = if self.background {
            let e = engine.clone();
            Some(
                std::thread::Builder::new()
                    .name("scopemon-baseline".into())
                    .spawn(move || baseline_loop(&e))?,
            )
        } else {
            None
        };
        let compactor = if self.background {
            let e = engine.clone();
            Some(
                std::thread::Builder::new()
                    .name("scopemon-compactor".into())
                    .spawn(move || compactor_loop(&e))?,
            )
        } else {
            None
        };
        Ok(Monitor {
            engine,
            threads: Mutex::new(
                flusher
                    .into_iter()
                    .chain(compactor)
                    .chain(baseliner)
                    .collect(),
            ),
        })
    }
}

/// The engine handle. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
pub struct Monitor {
    engine: Arc<Engine>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.engine.store)
            .finish()
    }
}

fn flusher_loop(e: &Engine) {
    let interval = i64::try_from(e.config.storage.flush_interval.as_millis()).unwrap_or(i64::MAX);
    let mut next_flush = e.clock.now_ms().saturating_add(interval);
    loop {
        let now = e.clock.now_ms();
        e.registry.observe_time(now);
        if now >= next_flush {
            e.flush_and_rollup(now);
            next_flush = now.saturating_add(interval);
        }
        // Wake at the next flush or just after the next minute boundary, so
        // handles move to the new minute promptly.
        let next_minute = Resolution::Minute.align(now) + MINUTE_MS + 1;
        let wait_ms = (next_flush.min(next_minute) - now).clamp(1, interval.max(1));
        let mut stop = e.stop.lock();
        if *stop {
            return;
        }
        e.wake
            .wait_for(&mut stop, Duration::from_millis(wait_ms as u64));
        if *stop {
            return;
        }
    }
}

/// Recomputes baselines every `baseline.recompute_interval` until stopped.
fn baseline_loop(e: &Engine) {
    loop {
        let mut stop = e.stop.lock();
        if *stop {
            return;
        }
        e.wake
            .wait_for(&mut stop, e.config.baseline.recompute_interval);
        if *stop {
            return;
        }
        drop(stop);
        match e.recompute_baselines() {
            Ok(n) => tracing::debug!(series = n, "baselines recomputed"),
            Err(err) => tracing::error!(error = %err, "baseline computation failed; will retry"),
        }
    }
}

/// Runs the compactor every `storage.compact_interval` until stopped.
fn compactor_loop(e: &Engine) {
    loop {
        let mut stop = e.stop.lock();
        if *stop {
            return;
        }
        e.wake
            .wait_for(&mut stop, e.config.storage.compact_interval);
        if *stop {
            return;
        }
        drop(stop);
        if let Err(err) = e.compact(CompactOptions::default()) {
            tracing::error!(error = %err, "compaction failed; will retry next interval");
        }
    }
}

impl Engine {
    fn compact(&self, opts: CompactOptions) -> Result<CompactReport> {
        let now = self.clock.now_ms();
        // Everything accepted so far takes part: hot data first goes to the
        // store (the compactor then rolls it up before deleting anything).
        if !opts.dry_run {
            self.flush(now)?;
        }
        let mut codec = Codec::new();
        let report =
            retention::compact(&self.store, &self.policy, &mut codec, now, opts, |_, _| {})?;
        if opts.dry_run {
            return Ok(report);
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        {
            let mut totals = self.compacted.lock();
            for (ns, per_res) in &report.removed {
                for (res, n) in per_res {
                    *totals.entry((ns.clone(), *res)).or_default() += n;
                }
            }
        }
        tracing::info!(
            removed = report.total_removed,
            transactions = report.transactions,
            longest_txn_ms = report.longest_txn_ms,
            ms = report.duration_ms,
            detail = ?report.removed,
            "compaction done"
        );
        // scopemon's own series, queryable like any other.
        let own = |metric: &str, kind: Kind, value: f64, tags: &[(&str, &str)]| {
            if let (Ok(s), Ok(scaled)) = (
                self.registry
                    .get_or_create(OWN_NAMESPACE, kind, metric, tags, now),
                kind.scale_value(value),
            ) {
                s.record(Resolution::Minute.align(now), scaled, value, false);
            }
        };
        own(
            "compactor.duration",
            Kind::Latency,
            report.duration_ms * 1e3,
            &[],
        );
        for (ns, per_res) in &report.removed {
            for (res, n) in per_res {
                own(
                    "compactor.buckets_removed",
                    Kind::ResourceUsage,
                    *n as f64,
                    &[("namespace", ns), ("resolution", res)],
                );
            }
        }
        *self.last_compaction.lock() = Some(report.clone());
        Ok(report)
    }

    fn source(&self) -> Source<'_> {
        Source {
            registry: &self.registry,
            store: &self.store,
            gate: &self.gate,
            policy: &self.policy,
            now_ms: self.clock.now_ms(),
        }
    }

    /// Baselines of every series with data in the baseline window.
    fn recompute_baselines(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let window = i64::try_from(self.config.baseline.window.as_millis()).unwrap_or(i64::MAX);
        let src = self.source();
        let mut out = Vec::new();
        for s in self.registry.in_namespace(None) {
            if s.last_seen() < now.saturating_sub(window) {
                continue;
            }
            let sel = Selection::of(&s);
            out.push((
                sel.clone(),
                baseline::compute(&src, &self.config.baseline, &sel, now)?,
            ));
        }
        let n = out.len();
        self.baselines.put_all(&self.store, out)?;
        Ok(n)
    }

    fn evaluate_alerts(&self, now: i64) -> Result<Vec<Transition>> {
        self.alerts
            .evaluate(&self.source(), &self.store, &self.baselines, now)
    }

    fn flush(&self, now: i64) -> Result<FlushReport> {
        let report = self.flush_only(now)?;
        // Thresholds are evaluated after every flush.
        if let Err(err) = self.evaluate_alerts(now) {
            tracing::error!(error = %err, "alert evaluation failed");
        }
        Ok(report)
    }

    fn flush_only(&self, now: i64) -> Result<FlushReport> {
        let mut codec = self.writer.lock();
        match flush::flush(&self.registry, &self.store, &self.gate, &mut codec, now) {
            Ok(r) => {
                self.last_flush_failed.store(false, Ordering::Relaxed);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.last_flush_ms.store(now, Ordering::Relaxed);
                *self.last_flush.lock() = Some(r.clone());
                Ok(r)
            }
            Err(err) => {
                self.last_flush_failed.store(true, Ordering::Relaxed);
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    fn rollup(&self, now: i64, max_batches: usize) -> Result<RollupReport> {
        // Its own codec: a long catch-up must not hold the flusher's. Each
        // batch takes its write turn like any writer, so flushes interleave.
        let r = flush::rollup(&self.store, &mut Codec::new(), now, max_batches)?;
        if r.minutes > 0 {
            *self.last_rollup.lock() = Some(r.clone());
        }
        Ok(r)
    }

    fn flush_and_rollup(&self, now: i64) {
        match self.flush(now) {
            Ok(r) if r.buckets > 0 => {
                tracing::debug!(
                    seq = r.seq,
                    series = r.series,
                    buckets = r.buckets,
                    ms = r.duration.as_millis() as u64,
                    "flushed"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "flush failed; hot data kept, will retry"),
        }
        // Bounded: 20 batches of ROLLUP_BATCH minutes per cycle at most.
        if let Err(err) = self.rollup(now, 20) {
            tracing::error!(error = %err, "rollup failed; deltas kept, will retry");
        }
    }
}

impl Monitor {
    /// Opens the store in `config.storage.data_dir` with the system clock
    /// and a background flusher.
    pub fn open(config: Config) -> Result<Monitor> {
        Monitor::builder(config).open()
    }

    /// A builder for non-default clocks or no background thread.
    pub fn builder(config: Config) -> MonitorBuilder {
        MonitorBuilder {
            config,
            clock: Arc::new(SystemClock),
            background: true,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The clock in use.
    pub fn now_ms(&self) -> i64 {
        self.engine.clock.now_ms()
    }

    /// Retention that applies to `ns`.
    pub fn retention(&self, ns: &str) -> Retention {
        self.engine.policy.of(ns)
    }

    fn check_open(&self) -> Result<()> {
        if self.engine.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Records one sample (the general form behind every `record_*`).
    pub fn record(&self, s: &Sample<'_>) -> Result<()> {
        let now = self.engine.clock.now_ms();
        self.record_at(now, s, &mut None)
    }

    fn record_at(&self, now: i64, s: &Sample<'_>, cache: &mut Option<Arc<Series>>) -> Result<()> {
        self.check_open()?;
        let scaled = s.kind.scale_value(s.value)?;
        let minute = match s.timestamp_ms {
            None => self.engine.registry.observe_time(now),
            Some(ts) => {
                if ts > now + MAX_FUTURE_MS {
                    return Err(Error::TimestampInFuture(format!(
                        "timestamp {} is more than 5 minutes ahead of the server clock ({})",
                        format_ts(ts),
                        format_ts(now)
                    )));
                }
                let longest = self.retention(s.namespace).longest_ms();
                if ts < now - longest {
                    return Err(Error::OutsideRetention(format!(
                        "timestamp {} is older than namespace {:?}'s longest retention ({}); it would be deleted at once",
                        format_ts(ts),
                        s.namespace,
                        crate::model::format_duration_ms(longest)
                    )));
                }
                Resolution::Minute.align(ts)
            }
        };
        let registry = &self.engine.registry;
        let series = match cache {
            Some(c)
                if c.key().kind == s.kind
                    && c.key().metric == s.metric
                    && c.key().namespace == s.namespace
                    && c.key().tags.same_as(s.tags) =>
            {
                c.clone()
            }
            _ => {
                let found = registry.get_or_create(s.namespace, s.kind, s.metric, s.tags, now)?;
                *cache = Some(found.clone());
                found
            }
        };
        series.record(minute, scaled, s.value, s.outcome.is_error());
        Ok(())
    }

    /// Records a batch, reading the clock once; returns how many were
    /// accepted and, for the others, their index and error.
    pub fn record_batch<'a>(
        &self,
        samples: impl IntoIterator<Item = Sample<'a>>,
    ) -> (usize, Vec<(usize, Error)>) {
        let now = self.engine.clock.now_ms();
        let mut cache = None;
        let mut accepted = 0;
        let mut rejected = Vec::new();
        for (i, s) in samples.into_iter().enumerate() {
            match self.record_at(now, &s, &mut cache) {
                Ok(()) => accepted += 1,
                Err(e) => rejected.push((i, e)),
            }
        }
        (accepted, rejected)
    }

    fn record_now(
        &self,
        ns: &str,
        metric: &str,
        kind: Kind,
        value: f64,
        outcome: Outcome,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record(&Sample {
            namespace: ns,
            metric,
            kind,
            value,
            tags,
            outcome,
            timestamp_ms: None,
        })
    }

    /// Records a latency.
    pub fn record_latency(
        &self,
        ns: &str,
        metric: &str,
        d: Duration,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_operation(ns, metric, d, Outcome::Ok, tags)
    }

    /// Records an operation's latency and outcome (errors feed error_rate).
    pub fn record_operation(
        &self,
        ns: &str,
        metric: &str,
        d: Duration,
        outcome: Outcome,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        let nanos = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        self.record_now(
            ns,
            metric,
            Kind::Latency,
            nanos as f64 / 1_000.0,
            outcome,
            tags,
        )
    }

    /// Records a throughput sample (operations per second).
    pub fn record_throughput(
        &self,
        ns: &str,
        metric: &str,
        ops_per_sec: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::Throughput, ops_per_sec, Outcome::Ok, tags)
    }

    /// Records an error-rate sample (percent, 0..=100).
    pub fn record_error_rate(
        &self,
        ns: &str,
        metric: &str,
        percent: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::ErrorRate, percent, Outcome::Ok, tags)
    }

    /// Records a resource-usage gauge sample.
    pub fn record_resource_usage(
        &self,
        ns: &str,
        metric: &str,
        value: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::ResourceUsage, value, Outcome::Ok, tags)
    }

    /// A pre-resolved latency handle for hot paths.
    pub fn latency_handle(&self, ns: &str, metric: &str, tags: &[(&str, &str)]) -> Result<Handle> {
        self.handle(ns, Kind::Latency, metric, tags)
    }

    /// A pre-resolved handle of any kind.
    pub fn handle(
        &self,
        ns: &str,
        kind: Kind,
        metric: &str,
        tags: &[(&str, &str)],
    ) -> Result<Handle> {
        self.check_open()?;
        let now = self.engine.clock.now_ms();
        let r = &self.engine.registry;
        r.observe_time(now);
        Ok(r.handle(r.get_or_create(ns, kind, metric, tags, now)?))
    }

    /// Writes every hot bucket to the store now.
    pub fn flush(&self) -> Result<FlushReport> {
        self.engine.flush(self.engine.clock.now_ms())
    }

    /// Stores a retention override for `ns` (any subset of the keys) and
    /// returns the retention now in force.
    pub fn set_retention(
        &self,
        ns: &str,
        rule: &crate::config::RetentionRule,
    ) -> Result<Retention> {
        self.engine
            .policy
            .set_override(&self.engine.store, ns, rule)
    }

    /// Applies retention now (rollup first, then bounded deletions).
    pub fn compact(&self, opts: CompactOptions) -> Result<CompactReport> {
        self.engine.compact(opts)
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
        let e = &self.engine;
        (
            e.compactions.load(Ordering::Relaxed),
            e.compacted.lock().clone(),
            e.last_compaction.lock().clone(),
        )
    }

    /// The baseline of a selection: the cached one when younger than the
    /// recompute interval, else computed now (and cached).
    pub fn baseline(&self, sel: &Selection) -> Result<Baseline> {
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
    /// the background calculator does); returns how many.
    pub fn recompute_baselines(&self) -> Result<usize> {
        self.engine.recompute_baselines()
    }

    /// Creates or replaces a threshold.
    pub fn put_threshold(&self, t: ThresholdSpec) -> Result<ThresholdSpec> {
        self.engine.alerts.put_threshold(&self.engine.store, t)
    }

    /// Every threshold.
    pub fn thresholds(&self) -> Vec<ThresholdSpec> {
        self.engine.alerts.thresholds()
    }

    /// Deletes a threshold (its firing alerts resolve); false if unknown.
    pub fn delete_threshold(&self, id: &str) -> Result<bool> {
        let e = &self.engine;
        e.alerts.delete_threshold(&e.store, id, e.clock.now_ms())
    }

    /// Alerts, newest first.
    pub fn alerts(&self, state: Option<AlertState>) -> Vec<Alert> {
        self.engine.alerts.alerts(state)
    }

    /// Evaluates every threshold now (also done after every flush).
    pub fn evaluate_alerts(&self) -> Result<Vec<Transition>> {
        self.engine.evaluate_alerts(self.engine.clock.now_ms())
    }

    /// check_performance_health of a namespace.
    pub fn performance_health(&self, namespace: &str) -> Result<PerformanceHealth> {
        let e = &self.engine;
        e.alerts
            .performance_health(&e.source(), &e.baselines, namespace, e.clock.now_ms())
    }

    /// Alert counters (for `/metrics`).
    pub fn alert_counters(&self) -> &crate::alerts::AlertCounters {
        &self.engine.alerts.counters
    }

    /// Moves closed minutes' deltas into minute/hour/day records now.
    pub fn rollup(&self) -> Result<RollupReport> {
        self.engine.rollup(self.engine.clock.now_ms(), usize::MAX)
    }

    /// Bucketed or whole-range query.
    pub fn query(&self, spec: &QuerySpec) -> Result<QueryResult> {
        query::query(&self.engine.source(), spec)
    }

    /// One aggregate per series of `ns` over the last `window`.
    pub fn summary(
        &self,
        ns: &str,
        window: Resolution,
        metric: Option<&str>,
        kind: Option<Kind>,
    ) -> Result<Summary> {
        query::summary(
            &self.engine.source(),
            ns,
            window,
            metric,
            kind,
            self.engine.clock.now_ms(),
        )
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
    pub fn namespaces(&self) -> std::collections::BTreeMap<String, usize> {
        self.engine.registry.namespaces()
    }

    /// Figures about the engine.
    pub fn stats(&self) -> EngineStats {
        let e = &self.engine;
        EngineStats {
            series: e.registry.all().len(),
            hot_series: e.registry.hot_series(),
            hot_bytes: e.registry.hot_bytes(),
            flushes: e.flushes.load(Ordering::Relaxed),
            flush_errors: e.flush_errors.load(Ordering::Relaxed),
            last_flush_ms: e.last_flush_ms.load(Ordering::Relaxed),
            last_flush: e.last_flush.lock().clone(),
            last_rollup: e.last_rollup.lock().clone(),
            file_bytes: e.store.file_size().unwrap_or(0),
        }
    }

    /// False while the most recent flush attempt failed (the store is not
    /// taking writes); no I/O.
    pub fn is_healthy(&self) -> bool {
        !self.engine.last_flush_failed.load(Ordering::Relaxed) && !self.is_closed()
    }

    /// True once [`Monitor::close`] has begun.
    pub fn is_closed(&self) -> bool {
        self.engine.closed.load(Ordering::Relaxed)
    }

    /// The store (read access for tools and benchmarks).
    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    /// Stops the flusher and writes everything still hot. Idempotent; also
    /// run (errors logged) when the monitor is dropped.
    pub fn close(&self) -> Result<()> {
        if self.engine.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        *self.engine.stop.lock() = true;
        self.engine.wake.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // Samples recorded by racing threads before `closed` was seen are
        // in hot buckets; this flush writes them all.
        let now = self.engine.clock.now_ms();
        self.engine.flush(now)?;
        self.engine.rollup(now, usize::MAX)?;
        Ok(())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(error = %err, "final flush on drop failed");
        }
    }
}
