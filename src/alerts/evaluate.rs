//! The alert state machine, per (threshold, series), run once per cycle
//! over the trailing window of every active series (see the diagram in
//! the module above).
//!
//! Invariants:
//! - a (threshold, series) is in at most one of `pending` and `firing`;
//! - a firing alert is in `history` (as `firing`) under the id `firing`
//!   names; resolving removes it from `firing` in the same step;
//! - alert ids only grow (`next_id` is above every id in `history`);
//! - a window without samples is never stepped, so it changes nothing.
//!
//! Cost: thresholds are grouped by (namespace, kind, window); each group
//! reads its series' window statistics once, each metric's matching rules
//! are found once per group and cycle, and each rule's episodes are taken
//! out of the by-id map once per group, so the per-series loop does no
//! string hashing or comparison.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::alert::{Alert, AlertState, Severity, Transition, TransitionKind};
use super::persist::AlertRecordV1;
use super::threshold::Rule;
use crate::baseline::{BaselineCache, Selection};
use crate::error::Result;
use crate::hot::Series;
use crate::model::{Kind, Resolution, format_ts};
use crate::query::{Source, range_stats};
use crate::stats::Point;

/// One threshold's episodes.
#[derive(Debug, Default)]
pub(super) struct Episodes {
    /// series id → since when it has breached (not yet for `for`).
    pending: HashMap<u64, i64>,
    /// series id → firing alert id.
    pub(super) firing: HashMap<u64, u64>,
}

impl Episodes {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.firing.is_empty()
    }

    /// Forgets pending breaches (a changed rule starts its timers afresh).
    pub(super) fn clear_pending(&mut self) {
        self.pending.clear();
    }
}

/// Evaluation state and alert history, behind one lock.
#[derive(Debug, Default)]
pub(super) struct State {
    /// threshold id → its episodes.
    pub(super) episodes: HashMap<String, Episodes>,
    /// Every alert kept, by id.
    pub(super) history: BTreeMap<u64, AlertRecordV1>,
    /// The next alert id.
    pub(super) next_id: u64,
}

impl State {
    /// State picked up from the store: `firing` is threshold id → series
    /// id → alert id.
    pub(super) fn loaded(
        history: BTreeMap<u64, AlertRecordV1>,
        firing: HashMap<String, HashMap<u64, u64>>,
    ) -> State {
        State {
            next_id: history.keys().next_back().map_or(1, |k| k + 1),
            episodes: firing
                .into_iter()
                .map(|(tid, firing)| {
                    let e = Episodes {
                        pending: HashMap::new(),
                        firing,
                    };
                    (tid, e)
                })
                .collect(),
            history,
        }
    }

    /// Resolves alert `alert_id` at `now_ms` (with the last value seen, if
    /// any); the caller has removed it from `firing`.
    pub(super) fn resolve(
        &mut self,
        alert_id: u64,
        value: Option<f64>,
        now_ms: i64,
    ) -> Option<Transition> {
        let rec = self.history.get_mut(&alert_id)?;
        rec.alert.state = AlertState::Resolved;
        rec.alert.resolved_at = Some(format_ts(now_ms));
        rec.resolved_ms = Some(now_ms);
        if let Some(v) = value {
            rec.alert.value = v;
        }
        Some(Transition {
            event: TransitionKind::Resolved,
            alert: rec.alert.clone(),
        })
    }

    /// One step for (rule, series) given this cycle's breach, if any.
    fn step(
        &mut self,
        ep: &mut Episodes,
        rule: &Rule,
        s: &Series,
        breach: Option<(Severity, f64)>,
        value: f64,
        now_ms: i64,
    ) -> Option<Transition> {
        let sid = s.id();
        let Some((severity, level)) = breach else {
            // The common case (nothing pending or firing) hashes nothing.
            if !ep.pending.is_empty() {
                ep.pending.remove(&sid);
            }
            if ep.firing.is_empty() {
                return None;
            }
            let alert_id = ep.firing.remove(&sid)?;
            return self.resolve(alert_id, Some(value), now_ms);
        };
        if let Some(&alert_id) = ep.firing.get(&sid) {
            return self.upgrade(alert_id, severity, level, value);
        }
        let since = *ep.pending.entry(sid).or_insert(now_ms);
        if now_ms - since < rule.for_ms() {
            return None;
        }
        ep.pending.remove(&sid);
        let t = self.fire(rule, s, severity, level, value, now_ms);
        ep.firing.insert(sid, t.alert.id);
        Some(t)
    }

    /// A firing alert breaching again: new value; severity only rises.
    fn upgrade(
        &mut self,
        alert_id: u64,
        severity: Severity,
        level: f64,
        value: f64,
    ) -> Option<Transition> {
        let rec = self.history.get_mut(&alert_id)?;
        rec.alert.value = value;
        if severity <= rec.alert.severity {
            return None;
        }
        rec.alert.severity = severity;
        rec.alert.threshold = level;
        Some(Transition {
            event: TransitionKind::Upgraded,
            alert: rec.alert.clone(),
        })
    }

    /// A new alert for (rule, series), recorded in the history.
    fn fire(
        &mut self,
        rule: &Rule,
        s: &Series,
        severity: Severity,
        level: f64,
        value: f64,
        now_ms: i64,
    ) -> Transition {
        let id = self.next_id;
        self.next_id += 1;
        let k = s.key();
        let alert = Alert {
            id,
            threshold_id: rule.id().to_owned(),
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
        let rec = AlertRecordV1 {
            series_id: s.id(),
            started_ms: now_ms,
            resolved_ms: None,
            alert: alert.clone(),
        };
        self.history.insert(id, rec);
        Transition {
            event: TransitionKind::Firing,
            alert,
        }
    }

    /// Takes a rule's episodes out of the map (see [`State::put_back`]).
    fn take(&mut self, id: &str) -> (Option<String>, Episodes) {
        match self.episodes.remove_entry(id) {
            Some((k, e)) => (Some(k), e),
            None => (None, Episodes::default()),
        }
    }

    fn put_back(&mut self, rule: &Rule, key: Option<String>, e: Episodes) {
        if !e.is_empty() {
            let key = key.unwrap_or_else(|| rule.id().to_owned());
            self.episodes.insert(key, e);
        }
    }
}

/// Rules evaluated together: same namespace, kind and window.
pub(super) struct Group<'a> {
    namespace: &'a str,
    kind: Kind,
    window: Resolution,
    rules: Vec<&'a Rule>,
}

/// `rules` grouped by (namespace, kind, window).
pub(super) fn groups(rules: &[Arc<Rule>]) -> Vec<Group<'_>> {
    let mut map: BTreeMap<(&str, Kind, Resolution), Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        let key = (r.spec().namespace.as_str(), r.spec().kind, r.window());
        map.entry(key).or_default().push(r);
    }
    map.into_iter()
        .map(|((namespace, kind, window), rules)| Group {
            namespace,
            kind,
            window,
            rules,
        })
        .collect()
}

/// The statistics of each of `series` over the trailing window
/// `[from, now]` (aligned with `series`; `None`: no samples in it).
pub(super) fn window_points(
    src: &Source<'_>,
    series: &[Arc<Series>],
    from: i64,
    now_ms: i64,
) -> Result<Vec<Option<Point>>> {
    let mut points: Vec<Option<Point>> = vec![None; series.len()];
    range_stats(src, series, from, now_ms + 1, true, |i, st| {
        points[i] = st.point(series[i].key().kind, from, now_ms + 1 - from);
        Ok(())
    })?;
    Ok(points)
}

/// Start of the trailing window of `window` at `now_ms`: the open minute
/// and the previous minute (`minute`) or the previous 60 (`hour`).
pub(super) fn window_start(window: Resolution, now_ms: i64) -> i64 {
    Resolution::Minute.align(now_ms) - window.width_ms()
}

impl Group<'_> {
    /// The group's active series with their window statistics.
    pub(super) fn read(&self, src: &Source<'_>, now_ms: i64) -> Result<Vec<(Arc<Series>, Point)>> {
        let from = window_start(self.window, now_ms);
        let series: Vec<Arc<Series>> = src
            .registry
            .in_namespace(Some(self.namespace))
            .into_iter()
            .filter(|s| s.key().kind == self.kind && s.last_seen() >= from)
            .collect();
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let points = window_points(src, &series, from, now_ms)?;
        // A window with no samples changes nothing: such series are left out.
        Ok(series
            .into_iter()
            .zip(points)
            .filter_map(|(s, p)| Some((s, p?)))
            .collect())
    }

    /// Steps every (rule, series) of the group; appends the transitions.
    pub(super) fn step_all(
        &self,
        state: &mut State,
        points: &[(Arc<Series>, Point)],
        baselines: &BaselineCache,
        now_ms: i64,
        out: &mut Vec<Transition>,
    ) {
        let mut taken: Vec<(Option<String>, Episodes)> =
            self.rules.iter().map(|r| state.take(r.id())).collect();
        let mut by_metric: HashMap<&str, Vec<usize>> = HashMap::new();
        for (s, p) in points {
            let metric = s.key().metric.as_str();
            let matching = by_metric.entry(metric).or_insert_with(|| {
                (0..self.rules.len())
                    .filter(|&i| self.rules[i].matches(metric))
                    .collect()
            });
            for &i in matching.iter() {
                let rule = self.rules[i];
                let Some(levels) = rule.levels_with(|| baselines.get(&Selection::of(s))) else {
                    continue; // no baseline yet: nothing to compare with
                };
                let value = rule.aggregation().of(p);
                let breach = rule.breach(value, levels);
                if let Some(t) = state.step(&mut taken[i].1, rule, s, breach, value, now_ms) {
                    out.push(t);
                }
            }
        }
        for (rule, (key, e)) in self.rules.iter().zip(taken) {
            state.put_back(rule, key, e);
        }
    }
}
