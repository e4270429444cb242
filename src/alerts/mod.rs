//! Thresholds, alert evaluation and delivery (set_alert_threshold of the
//! design), and check_performance_health.
//!
//! A threshold is evaluated after every flush on the trailing window ending
//! now (`minute`: the open minute and the previous one; `hour`: the open
//! minute and the 60 before it), per series matching its namespace, kind
//! and metric glob. Per (threshold, series) the state machine is:
//!
//! ```text
//!   ok ──breach──► pending ──breach for `for`──► firing ──clear──► resolved
//!    ▲               │                              │
//!    └────clear──────┘                 worse breach: severity upgraded in place
//! ```
//!
//! Invariants:
//! - a window without samples changes nothing;
//! - each episode creates exactly one alert, whose severity only rises;
//! - every transition is persisted, logged, counted and (when a webhook is
//!   set) queued for delivery, which never blocks evaluation or ingest;
//! - thresholds and alerts are persisted; pending timers are not (after a
//!   restart a breach must last `for` again), and changing a threshold
//!   restarts its timers; deleting one resolves its firing alerts.
//!
//! The parts, one job each: [`threshold`] (a [`ThresholdSpec`] parsed into a
//! [`Rule`]), `evaluate` (the state machine), `persist` (the `thresholds`
//! and `alerts` tables), [`deliver`] (the webhook queue), [`health`]
//! (check_performance_health). [`Alerts`] glues them together.

mod alert;
pub mod deliver;
mod evaluate;
pub mod health;
mod persist;
pub mod threshold;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

pub use self::alert::{Alert, AlertState, Severity, Transition, TransitionKind};
pub use self::deliver::Delivery;
pub use self::health::{HealthStatus, Issue, PerformanceHealth, Reason};
pub use self::threshold::{Rule, configured_rules};
use crate::baseline::BaselineCache;
use crate::config::AlertsConfig;
pub use crate::config::ThresholdSpec;
use crate::error::Result;
use crate::query::Source;
use crate::store::Store;
use evaluate::State;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertCounters {
    /// Alerts fired.
    pub fired: AtomicU64,
    /// Alerts upgraded to a higher severity.
    pub upgraded: AtomicU64,
    /// Alerts resolved.
    pub resolved: AtomicU64,
    /// Webhook deliveries that failed every attempt.
    pub webhook_failures: AtomicU64,
    /// Transitions dropped because the delivery queue was full.
    pub webhook_dropped: AtomicU64,
    /// Evaluation cycles run.
    pub evaluations: AtomicU64,
    /// Duration of the last evaluation cycle, µs.
    pub last_evaluation_us: AtomicU64,
}

/// Thresholds, alert state and history, and the webhook queue.
pub struct Alerts {
    rules: RwLock<BTreeMap<String, Arc<Rule>>>,
    state: Mutex<State>,
    history_limit: usize,
    delivery: Option<Arc<Delivery>>,
    /// Counters.
    pub counters: Arc<AlertCounters>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("rules", &self.rules.read().len())
            .finish()
    }
}

impl Alerts {
    /// Loads thresholds and alerts from the store, adds the `configured`
    /// thresholds (see [`configured_rules`]; they replace stored ones with
    /// the same id) and starts webhook delivery when a URL is configured.
    pub fn load(store: &Store, cfg: &AlertsConfig, configured: Vec<Rule>) -> Result<Alerts> {
        let rules = persist::load_rules(store)?
            .into_iter()
            .map(|r| (r.id().to_owned(), Arc::new(r)))
            .collect();
        let (history, firing) = persist::load_alerts(store)?;
        let counters = Arc::new(AlertCounters::default());
        let delivery = cfg
            .webhook_url
            .clone()
            .map(|url| Arc::new(Delivery::new(url, cfg, counters.clone())));
        let alerts = Alerts {
            rules: RwLock::new(rules),
            state: Mutex::new(State::loaded(history, firing)),
            history_limit: cfg.history_limit,
            delivery,
            counters,
        };
        for rule in configured {
            alerts.put_rule(store, rule)?;
        }
        Ok(alerts)
    }

    /// The webhook delivery, when a URL is configured.
    pub fn delivery(&self) -> Option<&Arc<Delivery>> {
        self.delivery.as_ref()
    }

    /// Creates or replaces a threshold (by id); returns it normalised.
    pub fn put_threshold(&self, store: &Store, spec: ThresholdSpec) -> Result<ThresholdSpec> {
        let rule = Rule::parse(spec)?;
        let spec = rule.spec().clone();
        self.put_rule(store, rule)?;
        Ok(spec)
    }

    fn put_rule(&self, store: &Store, rule: Rule) -> Result<()> {
        persist::store_threshold(store, rule.spec())?;
        let id = rule.id().to_owned();
        self.rules.write().insert(id.clone(), Arc::new(rule));
        // A changed rule starts its pending timers afresh.
        if let Some(e) = self.state.lock().episodes.get_mut(&id) {
            e.clear_pending();
        }
        Ok(())
    }

    /// Every threshold.
    pub fn thresholds(&self) -> Vec<ThresholdSpec> {
        self.rules
            .read()
            .values()
            .map(|r| r.spec().clone())
            .collect()
    }

    /// Deletes a threshold; its firing alerts resolve. False if unknown.
    pub fn delete_threshold(&self, store: &Store, id: &str, now_ms: i64) -> Result<bool> {
        if !self.rules.read().contains_key(id) {
            return Ok(false);
        }
        persist::delete_threshold(store, id)?;
        self.rules.write().remove(id);
        let mut state = self.state.lock();
        let alert_ids: Vec<u64> = state
            .episodes
            .remove(id)
            .map(|e| e.firing.into_values().collect())
            .unwrap_or_default();
        let transitions: Vec<Transition> = alert_ids
            .into_iter()
            .filter_map(|alert_id| state.resolve(alert_id, None, now_ms))
            .collect();
        drop(state);
        self.persist(store, &transitions)?;
        self.announce(transitions);
        Ok(true)
    }

    /// Alerts, newest first, optionally only those in `state`.
    pub fn alerts(&self, state: Option<AlertState>) -> Vec<Alert> {
        self.state
            .lock()
            .history
            .values()
            .rev()
            .filter(|r| state.is_none_or(|s| r.alert.state == s))
            .map(|r| r.alert.clone())
            .collect()
    }

    /// Evaluates every threshold at `now_ms`; returns the transitions made
    /// (persisted, counted and queued for the webhook).
    ///
    /// Each (namespace, kind, window) group reads the window statistics of
    /// its active series once (one snapshot), then steps its rules under
    /// the state lock (see `evaluate`).
    pub fn evaluate(
        &self,
        src: &Source<'_>,
        store: &Store,
        baselines: &BaselineCache,
        now_ms: i64,
    ) -> Result<Vec<Transition>> {
        let started = std::time::Instant::now();
        let rules: Vec<Arc<Rule>> = self.rules.read().values().cloned().collect();
        let mut transitions = Vec::new();
        for group in evaluate::groups(&rules) {
            let points = group.read(src, now_ms)?;
            if points.is_empty() {
                continue;
            }
            let mut state = self.state.lock();
            group.step_all(&mut state, &points, baselines, now_ms, &mut transitions);
        }
        self.persist(store, &transitions)?;
        self.announce(transitions.clone());
        self.counters.evaluations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_evaluation_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(transitions)
    }

    /// Writes changed alerts and prunes resolved ones past the limit.
    fn persist(&self, store: &Store, transitions: &[Transition]) -> Result<()> {
        if transitions.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock();
        persist::store_alerts(store, &mut state.history, transitions, self.history_limit)
    }

    /// Counts, logs and queues each transition for the webhook.
    fn announce(&self, transitions: Vec<Transition>) {
        for t in transitions {
            let counter = match t.event {
                TransitionKind::Firing => &self.counters.fired,
                TransitionKind::Upgraded => &self.counters.upgraded,
                TransitionKind::Resolved => &self.counters.resolved,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let a = &t.alert;
            tracing::warn!(
                event = t.event.as_str(),
                alert = a.id,
                threshold = %a.threshold_id,
                namespace = %a.namespace,
                metric = %a.metric,
                severity = ?a.severity,
                value = a.value,
                level = a.threshold,
                "alert transition"
            );
            if let Some(d) = &self.delivery {
                d.enqueue(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Monitor};

    #[test]
    fn an_invalid_configured_threshold_fails_open_naming_it_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut c = Config::with_data_dir(&data);
        c.alerts.thresholds = vec![
            serde_json::from_value(serde_json::json!({
                "id": "typo", "namespace": "prod", "metric": "*",
                "aggregation": "p98", "op": "gt", "warning": 1
            }))
            .unwrap(),
        ];
        let e = Monitor::builder(c).background(false).open().unwrap_err();
        assert_eq!(e.code(), "invalid_config");
        assert!(
            e.to_string()
                .starts_with("invalid configuration: alerts.thresholds \"typo\": unknown aggregation \"p98\"; expected one of avg,"),
            "{e}"
        );
        assert!(!data.exists(), "nothing is created before the check");
    }
}
