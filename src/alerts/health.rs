//! check_performance_health of a namespace: its firing alerts, and its
//! series whose current minute window lies outside their baseline band
//! (p50, p99, error rate).
//!
//! The status is the worst issue: none → `healthy`, a warning alert or a
//! value outside a baseline → `degraded`, a critical alert → `unhealthy`.
//! Series without an `ok` baseline or without samples in the window are
//! not judged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::Alerts;
use super::alert::{Alert, AlertState, Severity};
use super::evaluate::{window_points, window_start};
use crate::baseline::{Baseline, BaselineCache, BaselineStatus, Selection};
use crate::error::Result;
use crate::hot::Series;
use crate::model::{Kind, Resolution};
use crate::query::Source;
use crate::stats::{Aggregation, Point};

/// The aggregations compared with the baseline band.
const WATCHED: [Aggregation; 3] = [Aggregation::P50, Aggregation::P99, Aggregation::ErrorRate];

/// healthy, degraded or unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No issue.
    Healthy,
    /// A warning alert, or a value outside its baseline.
    Degraded,
    /// A critical alert.
    Unhealthy,
}

impl HealthStatus {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    fn of(worst: Option<Severity>) -> HealthStatus {
        match worst {
            None => HealthStatus::Healthy,
            Some(Severity::Warning) => HealthStatus::Degraded,
            Some(Severity::Critical) => HealthStatus::Unhealthy,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for HealthStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a series is an issue; serialized as `alert:<threshold>:<severity>`
/// or `outside_baseline:<aggregation>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// A firing alert.
    Alert {
        /// Its threshold.
        threshold: String,
        /// Its severity.
        severity: Severity,
    },
    /// The current window is outside the baseline band of an aggregation.
    OutsideBaseline(Aggregation),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Alert {
                threshold,
                severity,
            } => write!(f, "alert:{threshold}:{severity}"),
            Reason::OutsideBaseline(agg) => write!(f, "outside_baseline:{agg}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Reason::Alert {
                threshold,
                severity,
            } => other
                .strip_prefix("alert:")
                .and_then(|r| r.strip_prefix(threshold.as_str()))
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r == severity.as_str()),
            Reason::OutsideBaseline(agg) => other
                .strip_prefix("outside_baseline:")
                .is_some_and(|r| r == agg.as_str()),
        }
    }
}

/// A performance issue reported by check_performance_health.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Series tags.
    pub tags: BTreeMap<String, String>,
    /// Why.
    pub reason: Reason,
    /// Observed value.
    pub value: f64,
    /// What was expected (a level, or `lower..upper`).
    pub expected: String,
}

/// The answer of check_performance_health.
#[derive(Debug, Clone, Serialize)]
pub struct PerformanceHealth {
    /// healthy, degraded or unhealthy.
    pub status: HealthStatus,
    /// What is behind it.
    pub issues: Vec<Issue>,
}

impl Alerts {
    /// check_performance_health of a namespace: firing alerts, and series
    /// whose current minute window is outside their baseline band.
    pub fn performance_health(
        &self,
        src: &Source<'_>,
        baselines: &BaselineCache,
        namespace: &str,
        now_ms: i64,
    ) -> Result<PerformanceHealth> {
        let firing: Vec<Alert> = self
            .alerts(Some(AlertState::Firing))
            .into_iter()
            .filter(|a| a.namespace == namespace)
            .collect();
        let mut worst = firing.iter().map(|a| a.severity).max();
        let mut issues: Vec<Issue> = firing.into_iter().map(alert_issue).collect();
        let outside = baseline_issues(src, baselines, namespace, now_ms)?;
        if !outside.is_empty() {
            worst = worst.max(Some(Severity::Warning));
        }
        issues.extend(outside);
        Ok(PerformanceHealth {
            status: HealthStatus::of(worst),
            issues,
        })
    }
}

fn alert_issue(a: Alert) -> Issue {
    Issue {
        metric: a.metric,
        kind: a.kind,
        tags: a.tags,
        reason: Reason::Alert {
            threshold: a.threshold_id,
            severity: a.severity,
        },
        value: a.value,
        expected: format!("{}", a.threshold),
    }
}

/// Series of `namespace` active in the minute window whose p50, p99 or
/// error rate is outside their (ok) baseline band.
fn baseline_issues(
    src: &Source<'_>,
    baselines: &BaselineCache,
    namespace: &str,
    now_ms: i64,
) -> Result<Vec<Issue>> {
    let from = window_start(Resolution::Minute, now_ms);
    let with_baseline: Vec<(Arc<Series>, Arc<Baseline>)> = src
        .registry
        .in_namespace(Some(namespace))
        .into_iter()
        .filter(|s| s.last_seen() >= from)
        .filter_map(|s| {
            let b = baselines.get(&Selection::of(&s))?;
            (b.status == BaselineStatus::Ok).then_some((s, b))
        })
        .collect();
    if with_baseline.is_empty() {
        return Ok(Vec::new());
    }
    let series: Vec<Arc<Series>> = with_baseline.iter().map(|(s, _)| s.clone()).collect();
    let points = window_points(src, &series, from, now_ms)?;
    let mut issues = Vec::new();
    for ((s, b), p) in with_baseline.iter().zip(points) {
        if let Some(p) = p {
            issues.extend(outside_band(s, b, &p));
        }
    }
    Ok(issues)
}

fn outside_band<'a>(
    s: &'a Series,
    b: &'a Baseline,
    p: &'a Point,
) -> impl Iterator<Item = Issue> + 'a {
    WATCHED.into_iter().filter_map(move |agg| {
        let band = b.band(agg)?;
        let v = agg.of(p);
        (!band.contains(v)).then(|| Issue {
            metric: s.key().metric.clone(),
            kind: s.key().kind,
            tags: s.key().tags.to_map(),
            reason: Reason::OutsideBaseline(agg),
            value: v,
            expected: format!("{:.3}..{:.3}", band.lower, band.upper),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_serialize_as_before() {
        assert_eq!(
            serde_json::to_value(HealthStatus::of(Some(Severity::Critical))).unwrap(),
            "unhealthy"
        );
        assert_eq!(HealthStatus::of(None), "healthy");
        assert_eq!(HealthStatus::of(Some(Severity::Warning)), "degraded");
        let alert = Reason::Alert {
            threshold: "slow".into(),
            severity: Severity::Critical,
        };
        assert_eq!(serde_json::to_value(&alert).unwrap(), "alert:slow:critical");
        assert_eq!(alert, "alert:slow:critical");
        assert_ne!(alert, "alert:slow:warning");
        assert_ne!(alert, "alert:slo:critical");
        let outside = Reason::OutsideBaseline(Aggregation::ErrorRate);
        assert_eq!(outside, "outside_baseline:error_rate");
        assert_eq!(outside.to_string(), "outside_baseline:error_rate");
    }
}
