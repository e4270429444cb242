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
//! A window without samples changes nothing. Each episode creates exactly
//! one alert; transitions are logged, counted and (when a webhook is set)
//! queued to a delivery thread that retries with backoff, so a dead webhook
//! never blocks evaluation or ingest. Thresholds and alerts are persisted;
//! pending timers are not (after a restart a breach must last `for` again).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::baseline::{self, BASELINE_AGGREGATIONS, BaselineCache, BaselineStatus, Selection};
use crate::config::AlertsConfig;
use crate::error::{Error, Result};
use crate::hot::Series;
use crate::model::{
    Kind, MINUTE_MS, Resolution, format_duration_ms, format_ts, validate_namespace,
};
use crate::query::{Source, range_stats};
use crate::store::Store;
use crate::store::codec;
use crate::store::tables::{ALERTS, THRESHOLDS};

const RECORD_V1: u8 = 1;

/// Aggregations a threshold may watch.
pub const AGGREGATIONS: [&str; 11] = [
    "avg",
    "min",
    "max",
    "p50",
    "p90",
    "p95",
    "p99",
    "p999",
    "rate",
    "error_rate",
    "count",
];

/// Comparison of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Breach when the value is above the level.
    Gt,
    /// Breach when the value is below the level.
    Lt,
}

impl Op {
    fn breached(self, value: f64, level: f64) -> bool {
        match self {
            Op::Gt => value > level,
            Op::Lt => value < level,
        }
    }
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// A threshold as given by `PUT /v1/thresholds` (and `[[alerts.thresholds]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Unique id (`[A-Za-z0-9_.-]{1,128}`).
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Metric glob (`*` any run, `?` one character).
    pub metric: String,
    /// Kind (default latency).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Aggregation watched.
    pub aggregation: String,
    /// gt or lt.
    pub op: Op,
    /// Warning level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Critical level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// Instead of fixed levels: warn beyond the baseline's upper bound × f
    /// (`gt`) or below its lower bound ÷ f (`lt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_factor: Option<f64>,
    /// `minute` or `hour` (default minute).
    #[serde(default = "default_window")]
    pub window: String,
    /// How long the breach must last before firing (default 0s).
    #[serde(rename = "for", default = "default_for")]
    pub for_: String,
}

fn default_kind() -> Kind {
    Kind::Latency
}
fn default_window() -> String {
    "minute".into()
}
fn default_for() -> String {
    "0s".into()
}

fn invalid(msg: String) -> Error {
    Error::InvalidParameter(msg)
}

/// Minimal glob: `*` matches any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A validated threshold with its parsed fields.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As given.
    pub spec: Threshold,
    window_ms: i64,
    for_ms: i64,
}

impl Threshold {
    /// Checks every field; the error says which and why.
    pub fn validate(mut self) -> Result<Rule> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !id_ok {
            return Err(invalid(format!(
                "id {:?} must be 1..=128 characters of A-Z a-z 0-9 _ . -",
                self.id
            )));
        }
        validate_namespace(&self.namespace)?;
        let glob_ok = !self.metric.is_empty()
            && self.metric.len() <= 256
            && self
                .metric
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b));
        if !glob_ok {
            return Err(invalid(format!(
                "metric glob {:?} must be 1..=256 characters of A-Z a-z 0-9 _ . - * ?",
                self.metric
            )));
        }
        if !AGGREGATIONS.contains(&self.aggregation.as_str()) {
            return Err(invalid(format!(
                "unknown aggregation {:?}; expected one of {}",
                self.aggregation,
                AGGREGATIONS.join(", ")
            )));
        }
        for (name, v) in [
            ("warning", self.warning),
            ("critical", self.critical),
            ("baseline_factor", self.baseline_factor),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(invalid(format!("{name} must be a finite number")));
            }
        }
        match (self.warning, self.critical, self.baseline_factor) {
            (None, None, None) => {
                return Err(invalid(
                    "give warning and/or critical, or baseline_factor".into(),
                ));
            }
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(invalid(
                    "give either fixed levels (warning/critical) or baseline_factor, not both"
                        .into(),
                ));
            }
            (Some(w), Some(c), None) => {
                let ordered = match self.op {
                    Op::Gt => w <= c,
                    Op::Lt => w >= c,
                };
                if !ordered {
                    return Err(invalid(format!(
                        "warning {w} is beyond critical {c} for op {}: warning must be reached first",
                        if self.op == Op::Gt { "gt" } else { "lt" }
                    )));
                }
            }
            (_, _, Some(f)) => {
                if f <= 0.0 {
                    return Err(invalid("baseline_factor must be > 0".into()));
                }
                if !BASELINE_AGGREGATIONS.contains(&self.aggregation.as_str()) {
                    return Err(invalid(format!(
                        "baselines exist for {} only, not {:?}",
                        BASELINE_AGGREGATIONS.join(", "),
                        self.aggregation
                    )));
                }
            }
            _ => {}
        }
        let window_ms = match self.window.as_str() {
            "minute" => Resolution::Minute.width_ms(),
            "hour" => Resolution::Hour.width_ms(),
            w => return Err(invalid(format!("window {w:?} must be minute or hour"))),
        };
        let for_ms = humantime::parse_duration(&self.for_)
            .map_err(|e| {
                invalid(format!(
                    "for {:?} is not a duration (e.g. 2m): {e}",
                    self.for_
                ))
            })?
            .as_millis();
        let for_ms = i64::try_from(for_ms).map_err(|_| invalid("for is too long".into()))?;
        self.for_ = format_duration_ms(for_ms);
        Ok(Rule {
            spec: self,
            window_ms,
            for_ms,
        })
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

#[derive(Debug, Serialize, Deserialize)]
struct AlertRecordV1 {
    series_id: u64,
    started_ms: i64,
    resolved_ms: Option<i64>,
    alert: Alert,
}

/// A transition, as logged, counted and sent to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// `firing`, `upgraded` or `resolved`.
    pub event: &'static str,
    /// The alert after the transition.
    pub alert: Alert,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    since_ms: i64,
    severity: Severity,
}

/// Per-threshold, per-series evaluation state. Keyed by threshold id first
/// so the hot loop looks up by `&str` without building keys.
#[derive(Debug, Default)]
struct State {
    pending: HashMap<String, HashMap<u64, Pending>>,
    /// threshold id -> series id -> alert id
    firing: HashMap<String, HashMap<u64, u64>>,
    history: BTreeMap<u64, AlertRecordV1>,
}

impl State {
    fn resolve(
        &mut self,
        tid: &str,
        sid: u64,
        value: Option<f64>,
        now_ms: i64,
    ) -> Option<Transition> {
        let alert_id = self.firing.get_mut(tid)?.remove(&sid)?;
        let rec = self.history.get_mut(&alert_id)?;
        rec.alert.state = AlertState::Resolved;
        rec.alert.resolved_at = Some(format_ts(now_ms));
        rec.resolved_ms = Some(now_ms);
        if let Some(v) = value {
            rec.alert.value = v;
        }
        Some(Transition {
            event: "resolved",
            alert: rec.alert.clone(),
        })
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
    /// Why (`alert:<threshold>:<severity>` or `outside_baseline:<aggregation>`).
    pub reason: String,
    /// Observed value.
    pub value: f64,
    /// What was expected (a level, or `lower..upper`).
    pub expected: String,
}

/// The answer of check_performance_health.
#[derive(Debug, Clone, Serialize)]
pub struct PerformanceHealth {
    /// healthy, degraded or unhealthy.
    pub status: &'static str,
    /// What is behind it.
    pub issues: Vec<Issue>,
}

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
    rules: RwLock<BTreeMap<String, Rule>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    history_limit: usize,
    webhook: Option<SyncSender<Transition>>,
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

fn encode_json<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>> {
    codec::encode_json(table, RECORD_V1, v)
}

fn decode_json<T: for<'de> Deserialize<'de>>(table: &'static str, bytes: &[u8]) -> Result<T> {
    codec::decode_json(table, RECORD_V1, bytes)
}

impl Alerts {
    /// Loads thresholds and alerts from the store, adds the configured
    /// thresholds (which replace stored ones with the same id) and starts
    /// the webhook thread when a URL is configured.
    pub fn load(store: &Store, cfg: &AlertsConfig, configured: &[Threshold]) -> Result<Alerts> {
        let mut rules = BTreeMap::new();
        let mut history = BTreeMap::new();
        let mut firing: HashMap<String, HashMap<u64, u64>> = HashMap::new();
        {
            let txn = store.db().begin_read()?;
            for e in txn.open_table(THRESHOLDS)?.iter()? {
                let (_, v) = e?;
                let t: Threshold = decode_json("thresholds", v.value())?;
                let rule = t.validate()?;
                rules.insert(rule.spec.id.clone(), rule);
            }
            for e in txn.open_table(ALERTS)?.iter()? {
                let (k, v) = e?;
                let rec: AlertRecordV1 = decode_json("alerts", v.value())?;
                if rec.alert.state == AlertState::Firing {
                    firing
                        .entry(rec.alert.threshold_id.clone())
                        .or_default()
                        .insert(rec.series_id, k.value());
                }
                history.insert(k.value(), rec);
            }
        }
        let counters = Arc::new(AlertCounters::default());
        let webhook = cfg
            .webhook_url
            .clone()
            .map(|url| spawn_webhook(url, cfg, counters.clone()));
        let alerts = Alerts {
            next_id: AtomicU64::new(history.keys().next_back().map_or(1, |k| k + 1)),
            rules: RwLock::new(rules),
            state: Mutex::new(State {
                pending: HashMap::new(),
                firing,
                history,
            }),
            history_limit: cfg.history_limit,
            webhook,
            counters,
        };
        for t in configured {
            alerts.put_threshold(store, t.clone())?;
        }
        Ok(alerts)
    }

    /// Creates or replaces a threshold (by id); returns it normalised.
    pub fn put_threshold(&self, store: &Store, t: Threshold) -> Result<Threshold> {
        let rule = t.validate()?;
        let txn = store.begin_write()?;
        txn.open_table(THRESHOLDS)?.insert(
            rule.spec.id.as_str(),
            encode_json("thresholds", &rule.spec)?.as_slice(),
        )?;
        txn.commit()?;
        let spec = rule.spec.clone();
        self.rules.write().insert(spec.id.clone(), rule);
        // A changed rule starts its pending timers afresh.
        self.state.lock().pending.remove(&spec.id);
        Ok(spec)
    }

    /// Every threshold.
    pub fn thresholds(&self) -> Vec<Threshold> {
        self.rules.read().values().map(|r| r.spec.clone()).collect()
    }

    /// Deletes a threshold; its firing alerts resolve. False if unknown.
    pub fn delete_threshold(&self, store: &Store, id: &str, now_ms: i64) -> Result<bool> {
        if !self.rules.read().contains_key(id) {
            return Ok(false);
        }
        let txn = store.begin_write()?;
        txn.open_table(THRESHOLDS)?.remove(id)?;
        txn.commit()?;
        self.rules.write().remove(id);
        let mut state = self.state.lock();
        state.pending.remove(id);
        let sids: Vec<u64> = state
            .firing
            .get(id)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        let transitions: Vec<Transition> = sids
            .into_iter()
            .filter_map(|sid| state.resolve(id, sid, None, now_ms))
            .collect();
        state.firing.remove(id);
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

    /// Evaluates every threshold at `now_ms`; returns the transitions made.
    ///
    /// Thresholds are grouped by (namespace, kind, window): each group reads
    /// the window statistics of its active series once (one snapshot), and
    /// each metric's matching thresholds are found once per cycle.
    pub fn evaluate(
        &self,
        src: &Source<'_>,
        store: &Store,
        baselines: &BaselineCache,
        now_ms: i64,
    ) -> Result<Vec<Transition>> {
        let started = std::time::Instant::now();
        let rules: Vec<Rule> = self.rules.read().values().cloned().collect();
        let mut groups: BTreeMap<(&str, Kind, i64), Vec<&Rule>> = BTreeMap::new();
        for r in &rules {
            groups
                .entry((r.spec.namespace.as_str(), r.spec.kind, r.window_ms))
                .or_default()
                .push(r);
        }
        let mut transitions = Vec::new();
        for ((ns, kind, window_ms), group) in groups {
            let from = Resolution::Minute.align(now_ms) - window_ms;
            let series: Vec<Arc<Series>> = src
                .registry
                .in_namespace(Some(ns))
                .into_iter()
                .filter(|s| s.key().kind == kind && s.last_seen() >= from)
                .collect();
            if series.is_empty() {
                continue;
            }
            let mut points: Vec<Option<crate::stats::Point>> = vec![None; series.len()];
            range_stats(src, &series, from, now_ms + 1, true, |i, st| {
                points[i] = st.point(kind, from, now_ms + 1 - from);
                Ok(())
            })?;
            let mut by_metric: HashMap<&str, Vec<&Rule>> = HashMap::new();
            let mut state = self.state.lock();
            for (s, p) in series.iter().zip(points) {
                // A window with no samples changes nothing.
                let Some(p) = p else {
                    continue;
                };
                let metric = s.key().metric.as_str();
                let matching = by_metric.entry(metric).or_insert_with(|| {
                    group
                        .iter()
                        .copied()
                        .filter(|r| glob_match(&r.spec.metric, metric))
                        .collect()
                });
                for rule in matching.iter() {
                    let t = &rule.spec;
                    let Some(value) = baseline::aggregate(&p, &t.aggregation) else {
                        continue;
                    };
                    let levels = match t.baseline_factor {
                        None => (t.warning, t.critical),
                        Some(f) => match baselines.get(&Selection::of(s)) {
                            Some(b) if b.status == BaselineStatus::Ok => {
                                match b.band(&t.aggregation) {
                                    Some(band) => match t.op {
                                        Op::Gt => (Some(band.upper * f), None),
                                        Op::Lt => (Some(band.lower / f), None),
                                    },
                                    None => continue,
                                }
                            }
                            _ => continue, // no baseline yet: nothing to compare with
                        },
                    };
                    let breach = match levels {
                        (_, Some(c)) if t.op.breached(value, c) => Some((Severity::Critical, c)),
                        (Some(w), _) if t.op.breached(value, w) => Some((Severity::Warning, w)),
                        _ => None,
                    };
                    if let Some(tr) = self.step(&mut state, rule, s, breach, value, now_ms) {
                        transitions.push(tr);
                    }
                }
            }
        }
        self.persist(store, &transitions)?;
        self.announce(transitions.clone());
        self.counters.evaluations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_evaluation_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(transitions)
    }

    /// One state-machine step for (threshold, series).
    fn step(
        &self,
        state: &mut State,
        rule: &Rule,
        s: &Series,
        breach: Option<(Severity, f64)>,
        value: f64,
        now_ms: i64,
    ) -> Option<Transition> {
        let tid = rule.spec.id.as_str();
        let sid = s.id();
        let Some((severity, level)) = breach else {
            // The common case (nothing pending or firing) allocates nothing.
            if let Some(p) = state.pending.get_mut(tid) {
                p.remove(&sid);
            }
            return state.resolve(tid, sid, Some(value), now_ms);
        };
        if let Some(&alert_id) = state.firing.get(tid).and_then(|f| f.get(&sid)) {
            let rec = state.history.get_mut(&alert_id)?;
            rec.alert.value = value;
            if severity > rec.alert.severity {
                rec.alert.severity = severity;
                rec.alert.threshold = level;
                return Some(Transition {
                    event: "upgraded",
                    alert: rec.alert.clone(),
                });
            }
            return None;
        }
        let pending = state.pending.entry(tid.to_owned()).or_default();
        let p = pending.entry(sid).or_insert(Pending {
            since_ms: now_ms,
            severity,
        });
        p.severity = p.severity.max(severity);
        if now_ms - p.since_ms < rule.for_ms {
            return None;
        }
        pending.remove(&sid);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let k = s.key();
        let alert = Alert {
            id,
            threshold_id: tid.to_owned(),
            namespace: k.namespace.clone(),
            metric: k.metric.clone(),
            kind: k.kind,
            tags: k.tags.to_map(),
            severity,
            value,
            threshold: level,
            state: AlertState::Firing,
            started_at: format_ts(now_ms),
            resolved_at: None,
        };
        state.history.insert(
            id,
            AlertRecordV1 {
                series_id: sid,
                started_ms: now_ms,
                resolved_ms: None,
                alert: alert.clone(),
            },
        );
        state
            .firing
            .entry(tid.to_owned())
            .or_default()
            .insert(sid, id);
        Some(Transition {
            event: "firing",
            alert,
        })
    }

    /// Writes changed alerts and prunes resolved ones past the limit.
    fn persist(&self, store: &Store, transitions: &[Transition]) -> Result<()> {
        if transitions.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock();
        let history = &mut state.history;
        let resolved: Vec<u64> = history
            .iter()
            .filter(|(_, r)| r.alert.state == AlertState::Resolved)
            .map(|(k, _)| *k)
            .collect();
        let excess = resolved.len().saturating_sub(self.history_limit);
        let txn = store.begin_write()?;
        {
            let mut table = txn.open_table(ALERTS)?;
            for t in transitions {
                if let Some(rec) = history.get(&t.alert.id) {
                    table.insert(t.alert.id, encode_json("alerts", rec)?.as_slice())?;
                }
            }
            for id in &resolved[..excess] {
                table.remove(*id)?;
            }
        }
        txn.commit()?;
        for id in &resolved[..excess] {
            history.remove(id);
        }
        Ok(())
    }

    fn announce(&self, transitions: Vec<Transition>) {
        for t in transitions {
            let a = &t.alert;
            let counter = match t.event {
                "firing" => &self.counters.fired,
                "upgraded" => &self.counters.upgraded,
                _ => &self.counters.resolved,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                event = t.event,
                alert = a.id,
                threshold = %a.threshold_id,
                namespace = %a.namespace,
                metric = %a.metric,
                severity = ?a.severity,
                value = a.value,
                level = a.threshold,
                "alert transition"
            );
            if let Some(tx) = &self.webhook
                && let Err(TrySendError::Full(_)) = tx.try_send(t)
            {
                self.counters
                    .webhook_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// check_performance_health of a namespace: firing alerts, and series
    /// whose current minute window is outside their baseline band.
    pub fn performance_health(
        &self,
        src: &Source<'_>,
        baselines: &BaselineCache,
        namespace: &str,
        now_ms: i64,
    ) -> Result<PerformanceHealth> {
        let mut issues = Vec::new();
        let mut worst: Option<Severity> = None;
        for a in self
            .alerts(Some(AlertState::Firing))
            .into_iter()
            .filter(|a| a.namespace == namespace)
        {
            worst = worst.max(Some(a.severity));
            issues.push(Issue {
                metric: a.metric,
                kind: a.kind,
                tags: a.tags,
                reason: format!(
                    "alert:{}:{}",
                    a.threshold_id,
                    if a.severity == Severity::Critical {
                        "critical"
                    } else {
                        "warning"
                    }
                ),
                value: a.value,
                expected: format!("{}", a.threshold),
            });
        }
        let from = Resolution::Minute.align(now_ms) - MINUTE_MS;
        let series: Vec<(Arc<Series>, Arc<baseline::Baseline>)> = src
            .registry
            .in_namespace(Some(namespace))
            .into_iter()
            .filter(|s| s.last_seen() >= from)
            .filter_map(|s| {
                let b = baselines.get(&Selection::of(&s))?;
                (b.status == BaselineStatus::Ok).then_some((s, b))
            })
            .collect();
        if !series.is_empty() {
            let list: Vec<Arc<Series>> = series.iter().map(|(s, _)| s.clone()).collect();
            let mut points: Vec<Option<crate::stats::Point>> = vec![None; list.len()];
            range_stats(src, &list, from, now_ms + 1, true, |i, st| {
                points[i] = st.point(list[i].key().kind, from, now_ms + 1 - from);
                Ok(())
            })?;
            for ((s, b), p) in series.iter().zip(points) {
                let Some(p) = p else {
                    continue;
                };
                for agg in ["p50", "p99", "error_rate"] {
                    let (Some(band), Some(v)) = (b.band(agg), baseline::aggregate(&p, agg)) else {
                        continue;
                    };
                    if !band.contains(v) {
                        worst = worst.max(Some(Severity::Warning));
                        issues.push(Issue {
                            metric: s.key().metric.clone(),
                            kind: s.key().kind,
                            tags: s.key().tags.to_map(),
                            reason: format!("outside_baseline:{agg}"),
                            value: v,
                            expected: format!("{:.3}..{:.3}", band.lower, band.upper),
                        });
                    }
                }
            }
        }
        Ok(PerformanceHealth {
            status: match worst {
                None => "healthy",
                Some(Severity::Warning) => "degraded",
                Some(Severity::Critical) => "unhealthy",
            },
            issues,
        })
    }
}

/// Starts the delivery thread; transitions queue up to 1,024 deep.
fn spawn_webhook(
    url: String,
    cfg: &AlertsConfig,
    counters: Arc<AlertCounters>,
) -> SyncSender<Transition> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Transition>(1024);
    let timeout = cfg.webhook_timeout;
    let attempts = cfg.webhook_attempts;
    let spawned = std::thread::Builder::new()
        .name("scopemon-webhook".into())
        .spawn(move || deliver(&url, timeout, attempts, &rx, &counters));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the webhook thread; alerts will only be logged");
    }
    tx
}

fn deliver(
    url: &str,
    timeout: Duration,
    attempts: u32,
    rx: &Receiver<Transition>,
    counters: &AlertCounters,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    // Ends when the Alerts (the only sender) is dropped.
    while let Ok(t) = rx.recv() {
        let mut delay = Duration::from_millis(500);
        let mut delivered = false;
        for attempt in 1..=attempts {
            match agent.post(url).send_json(&t) {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => tracing::warn!(
                    status = r.status().as_u16(),
                    attempt,
                    "webhook refused the alert"
                ),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
            }
            if attempt < attempts {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
        if !delivered {
            counters.webhook_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                alert = t.alert.id,
                event = t.event,
                "webhook delivery failed after {attempts} attempts"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Threshold {
        serde_json::from_value(serde_json::json!({
            "id": "slow-config", "namespace": "production", "metric": "foundation.*",
            "kind": "latency", "aggregation": "p99", "op": "gt",
            "warning": 10000, "critical": 50000, "window": "minute", "for": "120s"
        }))
        .unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_match("foundation.*", "foundation.config.get"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*.get", "foundation.config.get"));
        assert!(!glob_match("foundation.*", "other.config"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
    }

    #[test]
    fn the_spec_example_is_valid_and_normalised() {
        let r = t().validate().unwrap();
        assert_eq!(r.for_ms, 120_000);
        assert_eq!(r.spec.for_, "2m");
    }

    #[test]
    fn invalid_thresholds_say_why() {
        type Mutation = fn(&mut Threshold);
        let cases: Vec<(Mutation, &str)> = vec![
            (|t| t.aggregation = "p42".into(), "unknown aggregation"),
            (|t| t.metric = "bad glob!".into(), "metric glob"),
            (
                |t| t.warning = Some(60000.0),
                "warning 60000 is beyond critical",
            ),
            (|t| t.window = "week".into(), "window"),
            (|t| t.for_ = "soon".into(), "for"),
            (
                |t| {
                    t.warning = None;
                    t.critical = None;
                },
                "give warning",
            ),
            (|t| t.baseline_factor = Some(1.5), "either fixed levels"),
            (|t| t.id = String::new(), "id"),
        ];
        for (mutate, needle) in cases {
            let mut x = t();
            mutate(&mut x);
            let e = x.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
        let mut lt = t();
        lt.op = Op::Lt;
        assert!(
            lt.clone().validate().is_err(),
            "lt needs warning >= critical"
        );
        lt.warning = Some(60000.0);
        assert!(lt.validate().is_ok());
    }
}
