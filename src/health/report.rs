//! The answers' shapes: the deep `/health` document after the IETF "Health
//! Check Response Format for HTTP APIs" draft (plus `health`,
//! `overall_score`, `healthy_services`, `total_services`) and the quick
//! JSON `{"status", "healthy", "total", "timestamp"}`, whose `status` is
//! binary like the plain answer it mirrors.
//!
//! Invariants: `status` is pass/warn/fail for healthy/degraded/unhealthy;
//! a pending check is `warn` with `output: "pending"`; `output` is empty
//! for a passing check (the draft omits it there) and the check's message
//! otherwise.

use serde_json::{Map, Value, json};

use super::aggregator::HealthAggregator;
use super::check::{CheckOutcome, QuickHealth, SystemHealth, ietf_status};
use crate::alerts::HealthStatus;
use crate::model::format_ts;

/// Rounds to 3 decimals (scores, milliseconds).
fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn check_json(c: &CheckOutcome) -> Value {
    let mut o = Map::new();
    let (status, output) = match &c.result {
        None => ("warn", "pending".to_owned()),
        Some(r) if r.status == HealthStatus::Healthy => ("pass", String::new()),
        Some(r) => (ietf_status(r.status), r.message.clone()),
    };
    o.insert("status".into(), status.into());
    o.insert("componentType".into(), c.component_type.clone().into());
    if let Some(r) = &c.result {
        if let Some(v) = r.observed_value {
            o.insert("observedValue".into(), round3(v).into());
        }
        if let Some(u) = &r.observed_unit {
            o.insert("observedUnit".into(), u.clone().into());
        }
    }
    o.insert("output".into(), output.into());
    if let Some(t) = c.checked_at_ms {
        o.insert("time".into(), format_ts(t).into());
    }
    let ms = c.duration.as_secs_f64() * 1e3;
    o.insert("duration_ms".into(), round3(ms).into());
    o.insert("critical".into(), c.critical.into());
    o.insert("weight".into(), c.weight.into());
    if let Some(r) = c.result.as_ref().filter(|r| !r.metadata.is_empty()) {
        o.insert("metadata".into(), json!(r.metadata));
    }
    Value::Object(o)
}

/// The deep health document of `h`.
pub fn document(h: &SystemHealth) -> Value {
    let checks: Map<String, Value> = h
        .checks
        .iter()
        .map(|c| (c.name.clone(), json!([check_json(c)])))
        .collect();
    json!({
        "status": ietf_status(h.status),
        "health": h.status.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "description": "scopemon",
        "overall_score": round3(h.score),
        "healthy_services": h.healthy,
        "total_services": h.total,
        "ready": h.ready,
        "timestamp": format_ts(h.timestamp_ms),
        "checks": checks,
    })
}

/// The quick JSON: the same binary verdict as the plain `OK`/`NOT_OK`
/// (`pass` or `fail`; a degraded instance passes, `/health` tells why),
/// as this instance's count (`healthy` 1 of `total` 1 when it passes, so a
/// pool's answers add up).
pub fn quick_document(q: &QuickHealth, now_ms: i64) -> Value {
    json!({
        "status": if q.ok { "pass" } else { "fail" },
        "healthy": u32::from(q.ok),
        "total": 1,
        "timestamp": format_ts(now_ms),
    })
}

impl HealthAggregator {
    /// The deep health document from the cache (see [`document`]).
    pub fn health_json(&self) -> Value {
        document(&self.system_health())
    }

    /// The quick JSON from the cache (no I/O).
    pub fn quick_health_json(&self) -> Value {
        quick_document(&self.quick_health(), self.monitor().now_ms())
    }
}
