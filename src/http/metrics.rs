//! `GET /metrics`: Prometheus text exposition of scopemon's own figures
//! (series, hot memory, flushes, rollups, file size). Names follow the
//! Prometheus conventions (`_total` counters, base units) so that
//! `promtool check metrics` is clean.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

pub(super) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let s = st.monitor.stats();
    let mut out = String::with_capacity(2048);
    metric(
        &mut out,
        "scopemon_series",
        "gauge",
        "Series known to the store.",
        s.series as f64,
    );
    metric(
        &mut out,
        "scopemon_hot_series",
        "gauge",
        "Series holding unflushed data.",
        s.hot_series as f64,
    );
    metric(
        &mut out,
        "scopemon_hot_bytes",
        "gauge",
        "Bytes of hot histograms.",
        s.hot_bytes as f64,
    );
    metric(
        &mut out,
        "scopemon_flushes_total",
        "counter",
        "Flushes completed.",
        s.flushes as f64,
    );
    metric(
        &mut out,
        "scopemon_flush_errors_total",
        "counter",
        "Flushes that failed.",
        s.flush_errors as f64,
    );
    metric(
        &mut out,
        "scopemon_last_flush_timestamp_seconds",
        "gauge",
        "Unix time of the last successful flush.",
        s.last_flush_ms as f64 / 1000.0,
    );
    if let Some(f) = &s.last_flush {
        metric(
            &mut out,
            "scopemon_last_flush_duration_seconds",
            "gauge",
            "Duration of the last flush.",
            f.duration.as_secs_f64(),
        );
        metric(
            &mut out,
            "scopemon_last_flush_buckets",
            "gauge",
            "Delta records the last flush wrote.",
            f.buckets as f64,
        );
    }
    let c = st.monitor.alert_counters();
    let _ = writeln!(
        out,
        "# HELP scopemon_alert_transitions_total Alert transitions by kind.\n# TYPE scopemon_alert_transitions_total counter"
    );
    for (to, n) in [
        ("firing", &c.fired),
        ("upgraded", &c.upgraded),
        ("resolved", &c.resolved),
    ] {
        let _ = writeln!(
            out,
            "scopemon_alert_transitions_total{{to=\"{to}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let firing = st
        .monitor
        .alerts(Some(crate::alerts::AlertState::Firing))
        .len();
    metric(
        &mut out,
        "scopemon_alerts_firing",
        "gauge",
        "Alerts firing now.",
        firing as f64,
    );
    metric(
        &mut out,
        "scopemon_webhook_failures_total",
        "counter",
        "Alert deliveries that failed every attempt.",
        c.webhook_failures.load(Ordering::Relaxed) as f64,
    );
    metric(
        &mut out,
        "scopemon_webhook_dropped_total",
        "counter",
        "Alert deliveries dropped on a full queue.",
        c.webhook_dropped.load(Ordering::Relaxed) as f64,
    );
    metric(
        &mut out,
        "scopemon_alert_evaluations_total",
        "counter",
        "Alert evaluation cycles.",
        c.evaluations.load(Ordering::Relaxed) as f64,
    );
    metric(
        &mut out,
        "scopemon_last_alert_evaluation_seconds",
        "gauge",
        "Duration of the last alert evaluation cycle.",
        c.last_evaluation_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    let (runs, removed, last) = st.monitor.compaction_stats();
    metric(
        &mut out,
        "scopemon_compactions_total",
        "counter",
        "Compactions completed.",
        runs as f64,
    );
    let _ = writeln!(
        out,
        "# HELP scopemon_compactor_removed_buckets_total Buckets deleted by retention.\n# TYPE scopemon_compactor_removed_buckets_total counter"
    );
    for ((ns, res), n) in &removed {
        let _ = writeln!(
            out,
            "scopemon_compactor_removed_buckets_total{{namespace=\"{}\",resolution=\"{res}\"}} {n}",
            escape_label(ns)
        );
    }
    if let Some(r) = &last {
        metric(
            &mut out,
            "scopemon_last_compaction_duration_seconds",
            "gauge",
            "Duration of the last compaction.",
            r.duration_ms / 1e3,
        );
        metric(
            &mut out,
            "scopemon_last_compaction_longest_transaction_seconds",
            "gauge",
            "Longest write transaction the last compaction held.",
            r.longest_txn_ms / 1e3,
        );
    }
    metric(
        &mut out,
        "scopemon_store_file_bytes",
        "gauge",
        "Size of the redb file.",
        s.file_bytes as f64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// Escapes a label value for the text exposition format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
