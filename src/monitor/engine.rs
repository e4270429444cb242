//! The engine: the state one open store owns (hot registry, store, retention
//! policy, baselines, alerts, commit gate) and the jobs the background tasks
//! run over it (flush, rollup, compaction, baseline refresh).
//!
//! One owner per piece of state: the registry owns hot data, the store the
//! file, the policy the retention overrides, the baseline cache and alerts
//! their tables. The engine only wires them; [`super::Monitor`] is the public
//! face and [`crate::tasks`] the scheduler.
//!
//! Flushes are serialised by `writer` (which also holds their codec
//! buffers); every other writer takes its turn through `Store::begin_write`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::alerts::{self, Alerts, Transition};
use crate::baseline::{self, BaselineCache, Selection};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hot::{CommitGate, Registry};
use crate::memory::{MemoryManager, MemorySource};
use crate::model::{Kind, Resolution};
use crate::query::Source;
use crate::retention::{self, CompactOptions, CompactReport, RetentionPolicy};
use crate::store::codec::Codec;
use crate::store::flush::{self, FlushReport, Flusher, RollupReport};
use crate::store::limited::DiskBudget;
use crate::store::space::{disk_space, is_io_failure};
use crate::store::{OpenOptions, Store};

/// Namespace of scopemon's own series (compactor figures).
pub const OWN_NAMESPACE: &str = "scopemon";

/// Most rollup batches one background rollup run does (a long catch-up is
/// spread over runs so it never holds the writer long).
const ROLLUP_BATCHES_PER_RUN: usize = 20;

/// Flush outcomes, for `/metrics` and health.
#[derive(Debug, Default)]
pub(super) struct FlushStats {
    pub(super) flushes: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) last_failed: AtomicBool,
    pub(super) last_ms: AtomicI64,
    pub(super) last: Mutex<Option<FlushReport>>,
    pub(super) last_rollup: Mutex<Option<RollupReport>>,
}

/// Compaction outcomes since start.
#[derive(Debug, Default)]
pub(super) struct CompactionStats {
    pub(super) runs: AtomicU64,
    /// Buckets removed per (namespace, resolution).
    pub(super) removed: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub(super) last: Mutex<Option<CompactReport>>,
}

pub(super) struct Engine {
    pub(super) config: Config,
    pub(super) clock: SharedClock,
    pub(super) registry: Registry,
    pub(super) store: Store,
    pub(super) policy: RetentionPolicy,
    pub(super) baselines: BaselineCache,
    pub(super) alerts: Alerts,
    /// Memory pressure: level, figures and cleanup strategies.
    pub(super) memory: MemoryManager,
    /// Commit gate (see `store::flush`).
    pub(super) gate: CommitGate,
    /// Serialises flushes; holds their codec buffers and a failed flush
    /// until it is settled.
    writer: Mutex<Flusher>,
    pub(super) closed: AtomicBool,
    /// What the last [`Engine::storage_refusal`] found (no I/O to read).
    pub(super) storage_refused: AtomicBool,
    pub(super) flush_stats: FlushStats,
    pub(super) compaction: CompactionStats,
}

impl Engine {
    /// Opens the store and loads every room's state.
    pub(super) fn open(
        config: Config,
        clock: SharedClock,
        memory: Box<dyn MemorySource>,
        disk_budget: Option<DiskBudget>,
    ) -> Result<Engine> {
        config.validate()?;
        // Every configured threshold parses before anything is created.
        let configured = alerts::configured_rules(&config.alerts)?;
        let opts = OpenOptions {
            cache_size: usize::try_from(config.storage.cache_size).unwrap_or(usize::MAX),
            disk_budget,
            ..OpenOptions::default()
        };
        let store = Store::open(&config.storage.data_dir, opts)?;
        let registry = Registry::new(
            config.storage.series_limit_per_namespace,
            config.precision(),
            clock.now_ms(),
        )
        .with_total_limit(config.storage.series_limit);
        for (id, rec) in store.load_series()? {
            registry.insert_loaded(id, rec.key, rec.first_seen, rec.last_seen);
        }
        let policy = RetentionPolicy::load(&config, &*store.db()?)?;
        let baselines = BaselineCache::load(&*store.db()?)?;
        let alerts = Alerts::load(&store, &config.alerts, configured)?;
        let memory = MemoryManager::new(&config.memory, memory);
        Ok(Engine {
            config,
            clock,
            registry,
            store,
            policy,
            baselines,
            alerts,
            memory,
            gate: CommitGate::default(),
            writer: Mutex::new(Flusher::new()),
            closed: AtomicBool::new(false),
            storage_refused: AtomicBool::new(false),
            flush_stats: FlushStats::default(),
            compaction: CompactionStats::default(),
        })
    }

    /// What queries read, answered at the clock's time.
    pub(super) fn source(&self) -> Source<'_> {
        Source {
            registry: &self.registry,
            store: &self.store,
            gate: &self.gate,
            horizons: &self.policy,
            now_ms: self.clock.now_ms(),
        }
    }

    /// Flushes every hot bucket, then evaluates thresholds (as after every
    /// flush). An evaluation failure is logged, not returned: the flush
    /// itself succeeded.
    pub(super) fn flush(&self, now: i64) -> Result<FlushReport> {
        let report = self.flush_only(now)?;
        if let Err(err) = self.evaluate_alerts(now) {
            tracing::error!(error = %err, "alert evaluation failed");
        }
        Ok(report)
    }

    fn flush_only(&self, now: i64) -> Result<FlushReport> {
        let mut flusher = self.writer.lock();
        let st = &self.flush_stats;
        match flush::flush(&self.registry, &self.store, &self.gate, &mut flusher, now) {
            Ok(r) => {
                st.last_failed.store(false, Ordering::Relaxed);
                st.flushes.fetch_add(1, Ordering::Relaxed);
                st.last_ms.store(now, Ordering::Relaxed);
                if r.buckets > 0 {
                    tracing::debug!(
                        seq = r.seq,
                        series = r.series,
                        buckets = r.buckets,
                        ms = r.duration.as_millis() as u64,
                        "flushed"
                    );
                }
                *st.last.lock() = Some(r.clone());
                Ok(r)
            }
            Err(err) => {
                st.last_failed.store(true, Ordering::Relaxed);
                st.errors.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Runs `f`; when it fails with an I/O error (redb then refuses reads
    /// and writes until the file is reopened), or fails while the store
    /// still waits for a reopen (an earlier one failed: the disk may be
    /// back by now), reopens the store, settling a pending flush first (see
    /// `flush::recover`), and runs `f` once more. Holds no lock while
    /// calling `f`.
    pub(super) fn with_recovery<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        match f() {
            Err(err) if is_io_failure(&err) || self.store.write_health().needs_reopen() => {
                let err = self.store.failed(err);
                let mut flusher = self.writer.lock();
                match flush::recover(&self.store, &self.gate, &mut flusher) {
                    Ok(_) => {
                        drop(flusher);
                        f()
                    }
                    Err(again) => {
                        tracing::warn!(error = %again, "the store could not be reopened yet");
                        Err(err)
                    }
                }
            }
            other => other,
        }
    }

    /// Accepted samples not in the store yet, and the (series, minute)
    /// buckets holding them.
    pub(super) fn unpersisted(&self) -> (u64, usize) {
        let gate = self.gate.read();
        let (mut samples, mut buckets) = (0, 0);
        for s in self.registry.all() {
            let counted = s.visit_hot(i64::MIN, i64::MAX, &gate, |_, st| {
                samples += st.count();
                buckets += 1;
                Ok(())
            });
            if let Err(e) = counted {
                tracing::warn!(error = %e, "counting unflushed samples");
            }
        }
        (samples, buckets)
    }

    /// Why HTTP ingest must refuse a batch now, if it must: a write to the
    /// store failed and none has succeeded since, or the data directory's
    /// file system has less than `storage.min_free_space` free.
    pub(super) fn storage_refusal(&self) -> Option<Error> {
        let refusal = self.storage_refusal_now();
        self.storage_refused
            .store(refusal.is_some(), Ordering::Relaxed);
        refusal
    }

    fn storage_refusal_now(&self) -> Option<Error> {
        if let Some(reason) = self.store.write_health().failing() {
            return Some(Error::InsufficientStorage { reason });
        }
        let dir = &self.config.storage.data_dir;
        let reserve = self.config.storage.min_free_space;
        match disk_space(dir) {
            Ok((free, _)) if free < reserve => Some(Error::InsufficientStorage {
                reason: format!(
                    "{} free on {}, below storage.min_free_space ({})",
                    bytesize::ByteSize::b(free),
                    dir.display(),
                    bytesize::ByteSize::b(reserve)
                ),
            }),
            _ => None,
        }
    }

    /// Moves closed minutes' deltas into records (at most `max_batches`).
    pub(super) fn rollup(&self, now: i64, max_batches: usize) -> Result<RollupReport> {
        // Its own codec: a long catch-up must not hold the flusher's. Each
        // batch takes its write turn like any writer, so flushes interleave.
        let r = flush::rollup(&self.store, &mut Codec::new(), now, max_batches)?;
        if r.minutes > 0 {
            *self.flush_stats.last_rollup.lock() = Some(r.clone());
        }
        Ok(r)
    }

    /// The background rollup's bounded run.
    pub(super) fn rollup_step(&self, now: i64) -> Result<()> {
        self.rollup(now, ROLLUP_BATCHES_PER_RUN).map(|_| ())
    }

    pub(super) fn evaluate_alerts(&self, now: i64) -> Result<Vec<Transition>> {
        self.alerts
            .evaluate(&self.source(), &self.store, &self.baselines, now)
    }

    /// Baselines of every series with data in the baseline window.
    pub(super) fn recompute_baselines(&self, now: i64) -> Result<usize> {
        let window = i64::try_from(self.config.baseline.window.as_millis()).unwrap_or(i64::MAX);
        let src = self.source();
        let mut out = Vec::new();
        for s in self.registry.in_namespace(None) {
            if s.last_seen() < now.saturating_sub(window) {
                continue;
            }
            let sel = Selection::of(&s);
            let b = baseline::compute(&src, &self.config.baseline, &sel, now)?;
            out.push((sel, b));
        }
        let n = out.len();
        self.baselines.put_all(&self.store, out)?;
        tracing::debug!(series = n, "baselines recomputed");
        Ok(n)
    }

    /// Applies retention: everything accepted so far is flushed first (the
    /// compactor then rolls it up before deleting anything).
    pub(super) fn compact(&self, now: i64, opts: CompactOptions) -> Result<CompactReport> {
        if !opts.dry_run {
            self.flush(now)?;
        }
        let mut codec = Codec::new();
        let report =
            retention::compact(&self.store, &self.policy, &mut codec, now, opts, |_, _| {})?;
        if !opts.dry_run {
            self.note_compaction(&report, now);
        }
        Ok(report)
    }

    /// Counts, logs and records (as scopemon's own series) a compaction.
    fn note_compaction(&self, report: &CompactReport, now: i64) {
        let c = &self.compaction;
        c.runs.fetch_add(1, Ordering::Relaxed);
        {
            let mut totals = c.removed.lock();
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
        self.record_own(
            "compactor.duration",
            Kind::Latency,
            report.duration_ms * 1e3,
            &[],
            now,
        );
        for (ns, per_res) in &report.removed {
            for (res, n) in per_res {
                let tags = [("namespace", ns.as_str()), ("resolution", *res)];
                self.record_own(
                    "compactor.buckets_removed",
                    Kind::ResourceUsage,
                    *n as f64,
                    &tags,
                    now,
                );
            }
        }
        *c.last.lock() = Some(report.clone());
    }

    /// Records one of scopemon's own samples (namespace [`OWN_NAMESPACE`]),
    /// queryable like any other series. Failures (a full series limit) are
    /// ignored: the engine's own figures never refuse its work.
    pub(super) fn record_own(
        &self,
        metric: &str,
        kind: Kind,
        value: f64,
        tags: &[(&str, &str)],
        now: i64,
    ) {
        if let (Ok(s), Ok(scaled)) = (
            self.registry
                .get_or_create(OWN_NAMESPACE, kind, metric, tags, now),
            kind.scale_value(value),
        ) {
            s.record(Resolution::Minute.align(now), scaled, value, false);
        }
    }
}
