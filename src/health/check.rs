//! What a health check is: the [`HealthCheck`] trait (name, component type,
//! critical or not, weight, interval, timeout, and the async check itself),
//! the [`CheckResult`] one run returns, and the [`CheckOutcome`] the
//! aggregator caches per check.
//!
//! Invariants: a check's score is 1.0 healthy, 0.5 degraded, 0.0 unhealthy
//! ([`status_score`]); a check that has not completed a run yet is
//! *pending* (`result: None`) and counts as degraded.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::alerts::HealthStatus;

/// The future a [`HealthCheck::check`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// One health check. The aggregator runs [`check`](HealthCheck::check)
/// every [`interval`](HealthCheck::interval) on the daemon's tokio runtime,
/// bounded by [`timeout`](HealthCheck::timeout): a run that takes longer
/// (or panics) counts as unhealthy.
///
/// ```
/// use scopemon::{CheckFuture, CheckResult, HealthCheck};
/// struct Upstream;
/// impl HealthCheck for Upstream {
///     fn name(&self) -> &str { "upstream:reachable" }
///     fn critical(&self) -> bool { true }
///     fn check(&self) -> CheckFuture<'_> {
///         Box::pin(async { CheckResult::healthy("answering") })
///     }
/// }
/// ```
pub trait HealthCheck: Send + Sync + 'static {
    /// Unique name, `component:measurement` by convention (`store:writable`).
    fn name(&self) -> &str;
    /// The IETF draft's `componentType`: `datastore`, `system`,
    /// `component`, `service`, ...
    fn component_type(&self) -> &str {
        "component"
    }
    /// Whether this check failing makes the whole system unhealthy.
    fn critical(&self) -> bool {
        false
    }
    /// Weight in the overall score (> 0).
    fn weight(&self) -> f64 {
        1.0
    }
    /// How often it runs; `None`: `[health] check_interval`.
    fn interval(&self) -> Option<Duration> {
        None
    }
    /// How long a run may take; `None`: `[health] check_timeout`.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// One run.
    fn check(&self) -> CheckFuture<'_>;
}

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// healthy, degraded or unhealthy.
    pub status: HealthStatus,
    /// What it found, in words.
    pub message: String,
    /// The figure it judged (`observedValue`).
    pub observed_value: Option<f64>,
    /// That figure's unit (`observedUnit`: `ms`, `percent`, ...).
    pub observed_unit: Option<String>,
    /// Anything else worth showing.
    pub metadata: BTreeMap<String, Value>,
}

impl CheckResult {
    /// A result of `status` saying `message`.
    pub fn new(status: HealthStatus, message: impl Into<String>) -> CheckResult {
        CheckResult {
            status,
            message: message.into(),
            observed_value: None,
            observed_unit: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Healthy.
    pub fn healthy(message: impl Into<String>) -> CheckResult {
        CheckResult::new(HealthStatus::Healthy, message)
    }

    /// Degraded.
    pub fn degraded(message: impl Into<String>) -> CheckResult {
        CheckResult::new(HealthStatus::Degraded, message)
    }

    /// Unhealthy.
    pub fn unhealthy(message: impl Into<String>) -> CheckResult {
        CheckResult::new(HealthStatus::Unhealthy, message)
    }

    /// With the observed value and its unit.
    pub fn observed(mut self, value: f64, unit: impl Into<String>) -> CheckResult {
        self.observed_value = Some(value);
        self.observed_unit = Some(unit.into());
        self
    }

    /// With one more metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> CheckResult {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A check's score: healthy 1.0, degraded 0.5, unhealthy 0.0.
pub fn status_score(s: HealthStatus) -> f64 {
    match s {
        HealthStatus::Healthy => 1.0,
        HealthStatus::Degraded => 0.5,
        HealthStatus::Unhealthy => 0.0,
    }
}

/// The IETF draft's word for a status: pass, warn, fail.
pub fn ietf_status(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Healthy => "pass",
        HealthStatus::Degraded => "warn",
        HealthStatus::Unhealthy => "fail",
    }
}

/// The cached state of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The check's name.
    pub name: String,
    /// Its component type.
    pub component_type: String,
    /// Whether it is critical.
    pub critical: bool,
    /// Its weight in the score.
    pub weight: f64,
    /// The last run's result; `None` while pending (no run completed yet).
    pub result: Option<CheckResult>,
    /// Clock time (Unix ms) the last run ended.
    pub checked_at_ms: Option<i64>,
    /// How long the last run took.
    pub duration: Duration,
    /// Clock time (Unix ms) the status last changed.
    pub since_ms: Option<i64>,
    /// Runs completed since registration.
    pub runs: u64,
}

impl CheckOutcome {
    /// The status counted in the aggregate: a pending check is degraded.
    pub fn effective_status(&self) -> HealthStatus {
        self.result
            .as_ref()
            .map_or(HealthStatus::Degraded, |r| r.status)
    }

    /// True while no run has completed.
    pub fn is_pending(&self) -> bool {
        self.result.is_none()
    }
}

/// A change of a check's (or the whole system's, `check: None`) status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    /// The check, or `None` for the system status.
    pub check: Option<String>,
    /// The status before (`None`: pending).
    pub from: Option<HealthStatus>,
    /// The status now.
    pub to: HealthStatus,
    /// Why (the check's message).
    pub message: String,
    /// Clock time (Unix ms) of the change.
    pub at_ms: i64,
}

/// The whole system's health, from the cache.
#[derive(Debug, Clone, Serialize)]
pub struct SystemHealth {
    /// unhealthy if a critical check is unhealthy, degraded if any check is
    /// not healthy (or pending, or the first round has not completed),
    /// healthy otherwise.
    pub status: HealthStatus,
    /// Weighted mean of the checks' scores (1.0 with no checks).
    pub score: f64,
    /// Checks whose status is healthy.
    pub healthy: usize,
    /// Checks registered.
    pub total: usize,
    /// Whether the first round of checks has completed.
    pub ready: bool,
    /// Clock time (Unix ms) of this answer.
    pub timestamp_ms: i64,
    /// Every check, by name.
    pub checks: Vec<CheckOutcome>,
}

/// The cached answer for load balancers (no I/O).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuickHealth {
    /// The system status.
    pub status: HealthStatus,
    /// True unless the system is unhealthy: degraded instances keep
    /// taking traffic.
    pub ok: bool,
    /// Whether the first round of checks has completed.
    pub ready: bool,
}

impl QuickHealth {
    /// `OK` or `NOT_OK`, the load balancers' body.
    pub fn text(&self) -> &'static str {
        if self.ok { "OK" } else { "NOT_OK" }
    }
}

/// The aggregate status and score of `checks` (see [`SystemHealth`]).
pub(super) fn aggregate<'a>(
    checks: impl IntoIterator<Item = &'a CheckOutcome>,
    ready: bool,
) -> (HealthStatus, f64, usize) {
    let mut weights = 0.0;
    let mut sum = 0.0;
    let mut healthy = 0;
    let mut status = HealthStatus::Healthy;
    for c in checks {
        let s = c.effective_status();
        weights += c.weight;
        sum += c.weight * status_score(s);
        healthy += usize::from(s == HealthStatus::Healthy);
        status = match (s, c.critical) {
            (HealthStatus::Unhealthy, true) => HealthStatus::Unhealthy,
            (HealthStatus::Healthy, _) => status,
            _ if status == HealthStatus::Unhealthy => status,
            _ => HealthStatus::Degraded,
        };
    }
    if !ready && status == HealthStatus::Healthy {
        status = HealthStatus::Degraded;
    }
    let score = if weights > 0.0 { sum / weights } else { 1.0 };
    (status, score, healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Option<HealthStatus>, critical: bool, weight: f64) -> CheckOutcome {
        CheckOutcome {
            name: "c".into(),
            component_type: "component".into(),
            critical,
            weight,
            result: status.map(|s| CheckResult::new(s, "")),
            checked_at_ms: None,
            duration: Duration::ZERO,
            since_ms: None,
            runs: 0,
        }
    }

    #[test]
    fn critical_unhealthy_wins_and_pending_is_degraded() {
        use HealthStatus::*;
        let h = |s| outcome(Some(s), false, 1.0);
        assert_eq!(aggregate(&[], true), (Healthy, 1.0, 0));
        assert_eq!(aggregate(&[], false).0, Degraded, "not ready yet");
        assert_eq!(aggregate(&[h(Healthy), h(Unhealthy)], true).0, Degraded);
        let crit = outcome(Some(Unhealthy), true, 1.0);
        assert_eq!(aggregate(&[crit.clone(), h(Degraded)], true).0, Unhealthy);
        assert_eq!(aggregate(&[h(Degraded), crit], true).0, Unhealthy);
        let pending = outcome(None, true, 2.0);
        let (s, score, healthy) = aggregate(&[pending, h(Healthy)], true);
        assert_eq!((s, healthy), (Degraded, 1));
        assert!((score - 2.0 / 3.0).abs() < 1e-12, "{score}");
    }
}
