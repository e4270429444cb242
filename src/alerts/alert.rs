//! What the state machine produces: an [`Alert`] (one episode of one
//! threshold on one series) and the [`Transition`]s it goes through.
//!
//! Invariants: an alert's `severity` only ever rises during its episode;
//! `resolved_at` is set exactly when `state` is `resolved`. The JSON of
//! these types is the HTTP answer, the webhook payload and (inside the
//! `alerts` table's record) the stored form: renaming a field or variant
//! breaks all three.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Kind;

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// `warning` or `critical`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// The condition cleared.
    Resolved,
}

/// One alert episode (the `GET /v1/alerts` item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alert id.
    pub id: u64,
    /// The threshold that fired.
    pub threshold_id: String,
    /// Namespace.
    pub namespace: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Series tags.
    pub tags: BTreeMap<String, String>,
    /// Current severity (only ever raised during an episode).
    pub severity: Severity,
    /// Latest observed value.
    pub value: f64,
    /// The level breached.
    pub threshold: f64,
    /// firing / resolved.
    pub state: AlertState,
    /// When it fired.
    pub started_at: String,
    /// When it resolved.
    pub resolved_at: Option<String>,
}

/// What happened to an alert; serialized as `firing`, `upgraded` or
/// `resolved` (the webhook's `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// A breach lasted `for`: a new alert.
    Firing,
    /// A firing alert reached a higher severity.
    Upgraded,
    /// The condition cleared (or its threshold was deleted).
    Resolved,
}

impl TransitionKind {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Firing => "firing",
            TransitionKind::Upgraded => "upgraded",
            TransitionKind::Resolved => "resolved",
        }
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition, as logged, counted and sent to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// What happened.
    pub event: TransitionKind,
    /// The alert after the transition.
    pub alert: Alert,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_serialize_as_the_webhook_expects() {
        let alert = Alert {
            id: 7,
            threshold_id: "t".into(),
            namespace: "prod".into(),
            metric: "m".into(),
            kind: Kind::Latency,
            tags: BTreeMap::new(),
            severity: Severity::Critical,
            value: 2.0,
            threshold: 1.0,
            state: AlertState::Firing,
            started_at: "2027-01-15T08:00:00Z".into(),
            resolved_at: None,
        };
        for (event, name) in [
            (TransitionKind::Firing, "firing"),
            (TransitionKind::Upgraded, "upgraded"),
            (TransitionKind::Resolved, "resolved"),
        ] {
            let v = serde_json::to_value(Transition {
                event,
                alert: alert.clone(),
            })
            .unwrap();
            assert_eq!(v["event"], name);
            assert_eq!(v["alert"]["severity"], "critical");
            assert_eq!(v["alert"]["state"], "firing");
        }
    }
}
