//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of scopemon's
//! own figures, rendered through a `prometheus-client` [`Registry`] built
//! per scrape: one function per area (engine, alerts, compaction, background
//! tasks, health, memory) registers its families from a snapshot the
//! [`Monitor`](crate::monitor::Monitor)
//! keeps anyway (atomics and small locked copies; the one system call is
//! the file-size stat in `Monitor::stats`, as before).
//!
//! Invariants: names, types and labels are the dashboards' contract and do
//! not change. Counters are registered without `_total` and help texts
//! without the final period, because the encoder appends both; the exposed
//! names are `scopemon_*_total` as ever. `promtool check metrics` is clean
//! (`.ci/promtool-check`).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};
use crate::alerts::{AlertCounters, AlertState};
use crate::health::{SystemHealth, status_score};
use crate::memory::PressureLevel;
use crate::monitor::{EngineStats, MemoryStats, MemoryStatus, Monitor};
use crate::protection::{BreakerState, ProtectionSnapshot};
use crate::retention::CompactReport;
use crate::tasks::TaskStatus;

pub(super) async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let protection = st.infra.snapshot();
    let out = render(&st.monitor, Some(&st.health.system_health()))
        .map(|mut out| {
            out.push_str(&render_protection(&protection));
            out
        })
        .map_err(|e| ApiError::internal(format!("cannot render /metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response())
}

/// The exposition text of one scrape (health families when given).
fn render(m: &Monitor, h: Option<&SystemHealth>) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    engine(&mut reg, &m.stats());
    let firing = m.alerts(Some(AlertState::Firing)).len();
    alerts(&mut reg, m.alert_counters(), firing);
    let (runs, removed, last) = m.compaction_stats();
    compaction(&mut reg, runs, &removed, last.as_ref());
    tasks(&mut reg, &m.tasks());
    if let Some(h) = h {
        health(&mut reg, h);
    }
    memory(&mut reg, &m.memory(), &m.memory_stats());
    let mut out = String::with_capacity(4096);
    prometheus_text::encode(&mut out, &reg)?;
    Ok(out)
}

/// Registers a gauge holding `v`.
fn gauge<N>(reg: &mut Registry, name: &str, help: &str, v: N)
where
    ConstGauge<N>: prometheus_client::registry::Metric,
{
    reg.register(name, help, ConstGauge::new(v));
}

/// Registers a counter holding `v`; `name` is without `_total`.
fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    reg.register(name, help, ConstCounter::new(v));
}

/// Series, hot memory, flushes and the store file.
fn engine(reg: &mut Registry, s: &EngineStats) {
    let series = "Series known to the store";
    gauge(reg, "scopemon_series", series, s.series as i64);
    let hot = "Series holding unflushed data";
    gauge(reg, "scopemon_hot_series", hot, s.hot_series as i64);
    let bytes = "Bytes held by hot buckets";
    gauge(reg, "scopemon_hot_bytes", bytes, s.hot_bytes as i64);
    let cap = "Cap on hot bytes (storage.max_hot_bytes): ingest 429 at it";
    gauge(reg, "scopemon_max_hot_bytes", cap, s.max_hot_bytes as i64);
    let cache = "redb page cache size (storage.cache_size)";
    gauge(
        reg,
        "scopemon_store_cache_bytes",
        cache,
        s.cache_size as i64,
    );
    let used = "Bytes redb's page cache holds now (at most scopemon_store_cache_bytes)";
    gauge(
        reg,
        "scopemon_store_cache_used_bytes",
        used,
        s.cache_used_bytes as i64,
    );
    let failures = "Store writes that failed (I/O errors, a full disk)";
    counter(
        reg,
        "scopemon_store_write_failures",
        failures,
        s.store_write_failures,
    );
    let reopens = "Store reopens after a failed write";
    counter(reg, "scopemon_store_reopens", reopens, s.store_reopens);
    let writable = "1 while store writes succeed, 0 from a failed write until one succeeds";
    gauge(
        reg,
        "scopemon_store_writable",
        writable,
        i64::from(s.store_writable),
    );
    counter(reg, "scopemon_flushes", "Flushes completed", s.flushes);
    let errors = "Flushes that failed";
    counter(reg, "scopemon_flush_errors", errors, s.flush_errors);
    gauge(
        reg,
        "scopemon_last_flush_timestamp_seconds",
        "Unix time of the last successful flush",
        s.last_flush_ms as f64 / 1000.0,
    );
    if let Some(f) = &s.last_flush {
        gauge(
            reg,
            "scopemon_last_flush_duration_seconds",
            "Duration of the last flush",
            f.duration.as_secs_f64(),
        );
        gauge(
            reg,
            "scopemon_last_flush_buckets",
            "Delta records the last flush wrote",
            f.buckets as i64,
        );
    }
    let file = "Size of the redb file";
    gauge(reg, "scopemon_store_file_bytes", file, s.file_bytes as i64);
}

/// Alert transitions, evaluations and webhook delivery.
fn alerts(reg: &mut Registry, c: &AlertCounters, firing: usize) {
    let transitions = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (to, n) in [
        ("firing", &c.fired),
        ("upgraded", &c.upgraded),
        ("resolved", &c.resolved),
    ] {
        transitions
            .get_or_create(&[("to", to)])
            .inc_by(n.load(Ordering::Relaxed));
    }
    let help = "Alert transitions by kind";
    reg.register("scopemon_alert_transitions", help, transitions);
    gauge(
        reg,
        "scopemon_alerts_firing",
        "Alerts firing now",
        firing as i64,
    );
    counter(
        reg,
        "scopemon_webhook_failures",
        "Alert deliveries that failed every attempt",
        c.webhook_failures.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "scopemon_webhook_dropped",
        "Alert deliveries dropped on a full queue",
        c.webhook_dropped.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "scopemon_alert_evaluations",
        "Alert evaluation cycles",
        c.evaluations.load(Ordering::Relaxed),
    );
    gauge(
        reg,
        "scopemon_last_alert_evaluation_seconds",
        "Duration of the last alert evaluation cycle",
        c.last_evaluation_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
}

/// Compaction runs, buckets removed per (namespace, resolution), and the
/// last run's duration and longest write transaction.
fn compaction(
    reg: &mut Registry,
    runs: u64,
    removed: &std::collections::BTreeMap<(String, &'static str), u64>,
    last: Option<&CompactReport>,
) {
    counter(reg, "scopemon_compactions", "Compactions completed", runs);
    let buckets = Family::<[(&'static str, String); 2], Counter>::default();
    for ((ns, res), n) in removed {
        buckets
            .get_or_create(&[("namespace", ns.clone()), ("resolution", (*res).to_owned())])
            .inc_by(*n);
    }
    let help = "Buckets deleted by retention";
    reg.register("scopemon_compactor_removed_buckets", help, buckets);
    if let Some(r) = last {
        gauge(
            reg,
            "scopemon_last_compaction_duration_seconds",
            "Duration of the last compaction",
            r.duration_ms / 1e3,
        );
        gauge(
            reg,
            "scopemon_last_compaction_longest_transaction_seconds",
            "Longest write transaction the last compaction held",
            r.longest_txn_ms / 1e3,
        );
    }
}

/// Every background task's runs, failures, last run and its outcome,
/// labelled `task` (flush, rollup, minute, compaction, baseline, ...).
fn tasks(reg: &mut Registry, statuses: &[TaskStatus]) {
    type ByTask<M> = Family<[(&'static str, String); 1], M>;
    let runs = ByTask::<Counter>::default();
    let failures = ByTask::<Counter>::default();
    let last_run = ByTask::<Gauge<f64, AtomicU64>>::default();
    let duration = ByTask::<Gauge<f64, AtomicU64>>::default();
    let failing = ByTask::<Gauge>::default();
    for t in statuses {
        let label = [("task", t.name.to_owned())];
        runs.get_or_create(&label).inc_by(t.runs);
        failures.get_or_create(&label).inc_by(t.failures);
        if let Some(ms) = t.last_run_ms {
            last_run.get_or_create(&label).set(ms as f64 / 1000.0);
        }
        duration
            .get_or_create(&label)
            .set(t.last_duration.as_secs_f64());
        failing
            .get_or_create(&label)
            .set(i64::from(t.last_error.is_some()));
    }
    reg.register("scopemon_task_runs", "Background task runs", runs);
    let help = "Background task runs that failed";
    reg.register("scopemon_task_failures", help, failures);
    let help = "Clock time the background task last ran at";
    reg.register("scopemon_task_last_run_timestamp_seconds", help, last_run);
    let help = "Duration of the background task's last run";
    reg.register("scopemon_task_last_duration_seconds", help, duration);
    let help = "1 when the background task's last run failed";
    reg.register("scopemon_task_last_run_failed", help, failing);
}

/// The health score and readiness, and every check's status (1 healthy,
/// 0.5 degraded, 0 unhealthy; pending checks are left out) and last run's
/// duration, labelled `check`.
fn health(reg: &mut Registry, h: &SystemHealth) {
    type ByCheck = Family<[(&'static str, String); 1], Gauge<f64, AtomicU64>>;
    let status = ByCheck::default();
    let duration = ByCheck::default();
    for c in &h.checks {
        let Some(r) = &c.result else { continue };
        let label = [("check", c.name.clone())];
        status.get_or_create(&label).set(status_score(r.status));
        duration.get_or_create(&label).set(c.duration.as_secs_f64());
    }
    let help = "Weighted mean of the health checks' scores (1 healthy, 0.5 degraded, 0 unhealthy)";
    gauge(reg, "scopemon_health_score", help, h.score);
    let help = "1 once the first round of health checks completed";
    gauge(reg, "scopemon_health_ready", help, i64::from(h.ready));
    let help = "Health check status (1 healthy, 0.5 degraded, 0 unhealthy)";
    reg.register("scopemon_health_check_status", help, status);
    let help = "Duration of the health check's last run";
    reg.register("scopemon_health_check_duration_seconds", help, duration);
}

/// Memory figures and pressure, level changes (labelled by the `level`
/// entered) and cleanup outcomes.
fn memory(reg: &mut Registry, s: &MemoryStatus, c: &MemoryStats) {
    let level = "Memory pressure level: 0 low, 1 medium, 2 high, 3 critical";
    let n = i64::from(s.pressure_level.as_u8());
    gauge(reg, "scopemon_memory_pressure_level", level, n);
    let ratio = "Memory in use as a fraction of the pressure base";
    let r = s.threshold_percentage;
    gauge(reg, "scopemon_memory_pressure_ratio", ratio, r);
    for (name, help, v) in [
        (
            "scopemon_memory_process_bytes",
            "Resident memory of this process",
            s.process_memory,
        ),
        (
            "scopemon_memory_budget_bytes",
            "Pressure base: min(memory.budget, cgroup limit, system memory)",
            s.budget,
        ),
        (
            "scopemon_memory_system_total_bytes",
            "Total memory of the system",
            s.total_memory,
        ),
        (
            "scopemon_memory_system_available_bytes",
            "Available memory of the system",
            s.available_memory,
        ),
    ] {
        gauge(reg, name, help, i64::try_from(v).unwrap_or(i64::MAX));
    }
    let changes = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (l, n) in PressureLevel::ALL.iter().zip(c.level_changes) {
        changes.get_or_create(&[("level", l.as_str())]).inc_by(n);
    }
    let help = "Memory pressure level changes, by the level entered";
    reg.register("scopemon_memory_level_changes", help, changes);
    let runs = "Memory cleanup strategy runs";
    counter(reg, "scopemon_memory_cleanup_runs", runs, c.cleanup_runs);
    let failed = "Memory cleanup strategy runs that failed or timed out";
    let n = c.cleanup_failures;
    counter(reg, "scopemon_memory_cleanup_failures", failed, n);
    let freed = "Bytes memory cleanup strategies reported freed";
    let n = c.cleanup_freed_bytes;
    counter(reg, "scopemon_memory_cleanup_freed_bytes", freed, n);
}

/// Every breaker's and limiter's figures, labelled `key`, as a block of
/// its own appended to the scrape (the 0.0.4 text format has no end
/// marker, so blocks concatenate).
fn render_protection(p: &ProtectionSnapshot) -> String {
    let mut reg = Registry::default();
    type ByKey<M> = Family<[(&'static str, String); 1], M>;
    let state = ByKey::<Gauge>::default();
    let (calls, failures, rejected, opened) = (
        ByKey::<Counter>::default(),
        ByKey::<Counter>::default(),
        ByKey::<Counter>::default(),
        ByKey::<Counter>::default(),
    );
    let (admitted, limited, gated) = (
        ByKey::<Counter>::default(),
        ByKey::<Counter>::default(),
        ByKey::<Counter>::default(),
    );
    for k in &p.keys {
        let label = [("key", k.key.clone())];
        let b = &k.breaker;
        let code = match b.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        state.get_or_create(&label).set(code);
        calls.get_or_create(&label).inc_by(b.calls);
        failures.get_or_create(&label).inc_by(b.failures);
        rejected.get_or_create(&label).inc_by(b.rejections);
        opened.get_or_create(&label).inc_by(b.opened);
        if let Some(l) = &k.limiter {
            admitted.get_or_create(&label).inc_by(l.admitted);
            limited.get_or_create(&label).inc_by(l.rejections);
        }
        gated.get_or_create(&label).inc_by(k.memory_rejections);
    }
    let state_help = "Circuit breaker state: 0 closed, 1 half-open, 2 open";
    reg.register("scopemon_breaker_state", state_help, state);
    reg.register(
        "scopemon_breaker_calls",
        "Calls that ran through the breaker",
        calls,
    );
    reg.register(
        "scopemon_breaker_failures",
        "Calls the breaker counted as failed",
        failures,
    );
    reg.register(
        "scopemon_breaker_rejections",
        "Calls the open breaker refused",
        rejected,
    );
    reg.register(
        "scopemon_breaker_opened",
        "Times the breaker opened",
        opened,
    );
    reg.register(
        "scopemon_limiter_admitted",
        "Calls the rate limiter admitted",
        admitted,
    );
    reg.register(
        "scopemon_limiter_rejections",
        "Calls the rate limiter refused",
        limited,
    );
    let help = "Calls the memory gate refused";
    reg.register("scopemon_memory_gate_rejections", help, gated);
    let mut out = String::new();
    // Writing to a String cannot fail; an empty block is fine if it did.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::retention::CompactOptions;

    /// Every family exposed before the registry, with its type (dashboards
    /// depend on these). The removed-buckets family shows once a compaction
    /// removed something; tests/server.rs checks its labels.
    const FAMILIES: &[&str] = &[
        "scopemon_alert_evaluations_total counter",
        "scopemon_alert_transitions_total counter",
        "scopemon_alerts_firing gauge",
        "scopemon_compactions_total counter",
        "scopemon_flush_errors_total counter",
        "scopemon_flushes_total counter",
        "scopemon_hot_bytes gauge",
        "scopemon_hot_series gauge",
        "scopemon_last_alert_evaluation_seconds gauge",
        "scopemon_last_compaction_duration_seconds gauge",
        "scopemon_last_compaction_longest_transaction_seconds gauge",
        "scopemon_last_flush_buckets gauge",
        "scopemon_last_flush_duration_seconds gauge",
        "scopemon_last_flush_timestamp_seconds gauge",
        "scopemon_max_hot_bytes gauge",
        "scopemon_memory_budget_bytes gauge",
        "scopemon_memory_cleanup_failures_total counter",
        "scopemon_memory_cleanup_freed_bytes_total counter",
        "scopemon_memory_cleanup_runs_total counter",
        "scopemon_memory_level_changes_total counter",
        "scopemon_memory_pressure_level gauge",
        "scopemon_memory_pressure_ratio gauge",
        "scopemon_memory_process_bytes gauge",
        "scopemon_memory_system_available_bytes gauge",
        "scopemon_memory_system_total_bytes gauge",
        "scopemon_series gauge",
        "scopemon_store_cache_bytes gauge",
        "scopemon_store_cache_used_bytes gauge",
        "scopemon_store_file_bytes gauge",
        "scopemon_store_reopens_total counter",
        "scopemon_store_writable gauge",
        "scopemon_store_write_failures_total counter",
        "scopemon_task_failures_total counter",
        "scopemon_task_last_duration_seconds gauge",
        "scopemon_task_last_run_failed gauge",
        "scopemon_task_last_run_timestamp_seconds gauge",
        "scopemon_task_runs_total counter",
        "scopemon_webhook_dropped_total counter",
        "scopemon_webhook_failures_total counter",
    ];

    #[test]
    fn names_types_and_labels_are_the_dashboards_ones() -> crate::error::Result<()> {
        let dir = tempfile::tempdir()?;
        let clock = crate::clock::ManualClock::new(crate::model::DAY_MS);
        let m = Monitor::builder(Config::with_data_dir(dir.path()))
            .clock(std::sync::Arc::new(clock.clone()))
            .background(false)
            .open()?;
        m.record_throughput("ns", "m", 1.0, &[])?;
        m.flush()?;
        m.compact(CompactOptions::default())?;
        clock.advance(std::time::Duration::from_secs(5));
        assert!(m.run_due_tasks() >= 2, "flush and rollup ran");
        let text = render(&m, None).map_err(|e| crate::error::Error::Config(e.to_string()))?;
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        types.sort_unstable();
        assert_eq!(types, FAMILIES, "{text}");
        for line in [
            "scopemon_alert_transitions_total{to=\"firing\"} 0",
            "scopemon_alert_transitions_total{to=\"upgraded\"} 0",
            "scopemon_alert_transitions_total{to=\"resolved\"} 0",
            "# HELP scopemon_series Series known to the store.",
            "scopemon_task_runs_total{task=\"flush\"} 1",
            "scopemon_task_runs_total{task=\"compaction\"} 0",
            "scopemon_task_last_run_failed{task=\"compaction\"} 0",
            "scopemon_memory_level_changes_total{level=\"critical\"} 0",
            "scopemon_task_runs_total{task=\"memory\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn health_families_show_score_readiness_and_each_check() -> crate::error::Result<()> {
        use crate::health::{CheckFuture, CheckResult, HealthAggregator, HealthCheck};
        struct Slow;
        impl HealthCheck for Slow {
            fn name(&self) -> &str {
                "slow:one"
            }
            fn check(&self) -> CheckFuture<'_> {
                Box::pin(async { CheckResult::degraded("slow") })
            }
        }
        let dir = tempfile::tempdir()?;
        let m = Monitor::builder(Config::with_data_dir(dir.path()))
            .background(false)
            .open()?;
        let h = HealthAggregator::new(std::sync::Arc::new(m));
        h.register(Slow)?;
        h.start().await?;
        h.wait_ready().await;
        let text = render(h.monitor(), Some(&h.system_health()))
            .map_err(|e| crate::error::Error::Config(e.to_string()))?;
        for line in [
            "# TYPE scopemon_health_score gauge",
            "scopemon_health_score 0.5",
            "scopemon_health_ready 1",
            "# TYPE scopemon_health_check_status gauge",
            "scopemon_health_check_status{check=\"slow:one\"} 0.5",
            "# TYPE scopemon_health_check_duration_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        h.stop().await;
        Ok(())
    }
}
