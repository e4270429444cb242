//! [`HealthAggregator`]: the registry of checks (built-in, library users'
//! own, external services), their cached outcomes, the system status and
//! score, the bounded history of status changes, and the services' store.
//!
//! Invariants:
//! - one owner: every outcome, the history and the system status change
//!   under one lock, in [`Inner::record`]; readers (`/health`,
//!   `/health/quick`, `/metrics`) only read the cache, `/health/quick`
//!   only an atomic;
//! - every status change (a check's, or the system's) is logged and kept
//!   in a history bounded by `[health] history`; a check's first result
//!   is a change only when it is not healthy;
//! - every result is recorded as scopemon's own series in namespace
//!   `scopemon`: `health.check.status` (resource_usage 1 / 0.5 / 0, tag
//!   `check`) and `health.check.duration` (latency), so uptime per check
//!   over minutes, hours and days is an ordinary query (the mean status);
//! - ready means every check registered when [`HealthAggregator::start`]
//!   ran has completed a run; until then the system is at best degraded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::builtin;
use super::check::{
    CheckOutcome, CheckResult, HealthCheck, QuickHealth, StatusChange, SystemHealth, aggregate,
    status_score,
};
use super::runner::{self, Runner};
use super::services::{self, Service, ServiceRegistration};
use crate::alerts::HealthStatus;
use crate::config::HealthConfig;
use crate::error::{Error, Result};
use crate::model::{Kind, Outcome};
use crate::monitor::{Monitor, OWN_NAMESPACE, Sample};

/// One registered check.
struct Entry {
    id: u64,
    check: Arc<dyn HealthCheck>,
    outcome: CheckOutcome,
    wake: Arc<Notify>,
    /// Runs started / completed (sequence numbers, for `?fresh=true`).
    started: u64,
    completed: u64,
    runner: Option<JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(h) = self.runner.take() {
            h.abort();
        }
    }
}

struct State {
    entries: BTreeMap<String, Entry>,
    services: BTreeMap<String, Service>,
    history: VecDeque<StatusChange>,
    system: HealthStatus,
    /// Set by `start`: runners are spawned on it.
    runtime: Option<Handle>,
    /// Checks of the first round not completed yet (`None` before start).
    first_round: Option<BTreeSet<String>>,
    next_id: u64,
}

pub(super) struct Inner {
    monitor: Arc<Monitor>,
    config: HealthConfig,
    state: Mutex<State>,
    /// The system status for `/health/quick` (see `status_code`).
    quick: AtomicU8,
    ready: AtomicBool,
    /// Told after every recorded result.
    recorded: Notify,
    shutdown: watch::Sender<bool>,
}

fn status_code(s: HealthStatus) -> u8 {
    match s {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}

fn status_of(code: u8) -> HealthStatus {
    match code {
        0 => HealthStatus::Healthy,
        1 => HealthStatus::Degraded,
        _ => HealthStatus::Unhealthy,
    }
}

/// A registered service and its check's cached outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The registration (normalised).
    #[serde(flatten)]
    pub registration: ServiceRegistration,
    /// Its check's status; `None` while pending.
    pub status: Option<HealthStatus>,
    /// Its check's last message.
    pub output: String,
}

/// The health aggregator (HealthAggregator of the design). Cheap to clone:
/// clones share one registry. Checks run as tokio tasks once
/// [`start`](HealthAggregator::start)ed; every reader answers from cache.
#[derive(Clone)]
pub struct HealthAggregator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthAggregator")
            .field("status", &self.quick_system_health())
            .finish()
    }
}

impl HealthAggregator {
    /// An aggregator over `monitor` with no checks (configured by the
    /// monitor's `[health]` section).
    pub fn new(monitor: Arc<Monitor>) -> HealthAggregator {
        let config = monitor.config().health.clone();
        let inner = Inner {
            monitor,
            config,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                services: BTreeMap::new(),
                history: VecDeque::new(),
                system: HealthStatus::Degraded,
                runtime: None,
                first_round: None,
                next_id: 0,
            }),
            quick: AtomicU8::new(status_code(HealthStatus::Degraded)),
            ready: AtomicBool::new(false),
            recorded: Notify::new(),
            shutdown: watch::Sender::new(false),
        };
        HealthAggregator {
            inner: Arc::new(inner),
        }
    }

    /// An aggregator with the built-in checks `scopemon serve` runs (store
    /// writable, flush lag, free disk space, every background task, firing
    /// alerts).
    pub fn with_builtin_checks(monitor: Arc<Monitor>) -> HealthAggregator {
        let h = HealthAggregator::new(monitor.clone());
        for c in builtin::checks(&monitor, &h.inner.config) {
            h.install(c);
        }
        h
    }

    /// The monitor checked.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.inner.monitor
    }

    /// Registers a check (replacing one of the same name). It runs at once
    /// when the aggregator is started, else from [`start`](Self::start).
    pub fn register(&self, check: impl HealthCheck) -> Result<()> {
        self.register_arc(Arc::new(check))
    }

    /// [`register`](Self::register) for a shared check.
    pub fn register_arc(&self, check: Arc<dyn HealthCheck>) -> Result<()> {
        let name = check.name();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::InvalidParameter(format!(
                "check name {name:?} must be 1..=256 characters without control characters"
            )));
        }
        let w = check.weight();
        if !(w > 0.0 && w.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "check {name:?}: weight {w} must be a positive number"
            )));
        }
        self.install(check);
        Ok(())
    }

    fn install(&self, check: Arc<dyn HealthCheck>) {
        let name = check.name().to_owned();
        let mut st = self.inner.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        let mut entry = Entry {
            id,
            outcome: CheckOutcome {
                name: name.clone(),
                component_type: check.component_type().to_owned(),
                critical: check.critical(),
                weight: check.weight(),
                result: None,
                checked_at_ms: None,
                duration: Duration::ZERO,
                since_ms: None,
                runs: 0,
            },
            check,
            wake: Arc::new(Notify::new()),
            started: 0,
            completed: 0,
            runner: None,
        };
        if let Some(rt) = st.runtime.clone() {
            entry.runner = Some(self.spawn(&rt, &name, &entry));
        }
        st.entries.insert(name, entry);
        let now = self.inner.monitor.now_ms();
        self.inner.refresh(&mut st, now);
    }

    fn spawn(&self, rt: &Handle, name: &str, e: &Entry) -> JoinHandle<()> {
        let cfg = &self.inner.config;
        let runner = Runner {
            inner: Arc::downgrade(&self.inner),
            name: name.to_owned(),
            id: e.id,
            check: e.check.clone(),
            wake: e.wake.clone(),
            shutdown: self.inner.shutdown.subscribe(),
            interval: e.check.interval().unwrap_or(cfg.check_interval),
            timeout: e.check.timeout().unwrap_or(cfg.check_timeout),
        };
        runner::spawn(rt, runner)
    }

    /// Removes a check; false when there was none.
    pub fn unregister(&self, name: &str) -> bool {
        let mut st = self.inner.state.lock();
        let removed = st.entries.remove(name).is_some();
        if let Some(first) = st.first_round.as_mut() {
            first.remove(name);
        }
        let now = self.inner.monitor.now_ms();
        self.inner.refresh(&mut st, now);
        removed
    }

    /// Loads the stored services and starts every check on the current
    /// tokio runtime (the first round runs now). Idempotent.
    pub async fn start(&self) -> Result<()> {
        let rt = Handle::try_current()
            .map_err(|e| Error::Internal(format!("health checks need a tokio runtime: {e}")))?;
        if self.inner.state.lock().runtime.is_some() {
            return Ok(());
        }
        let monitor = self.inner.monitor.clone();
        let stored = tokio::task::spawn_blocking(move || services::load(monitor.store()))
            .await
            .map_err(|e| Error::Internal(format!("loading services failed: {e}")))??;
        for reg in stored {
            let name = reg.name.clone();
            match Service::parse(reg, &self.inner.config) {
                Ok(svc) => self.install_service(svc),
                Err(e) => tracing::error!(service = %name, error = %e, "stored service skipped"),
            }
        }
        let mut st = self.inner.state.lock();
        if st.runtime.is_some() {
            return Ok(());
        }
        st.runtime = Some(rt.clone());
        st.first_round = Some(st.entries.keys().cloned().collect());
        let names: Vec<String> = st.entries.keys().cloned().collect();
        for name in names {
            if let Some(e) = st.entries.get(&name) {
                let h = self.spawn(&rt, &name, e);
                if let Some(e) = st.entries.get_mut(&name) {
                    e.runner = Some(h);
                }
            }
        }
        let now = self.inner.monitor.now_ms();
        self.inner.refresh(&mut st, now);
        Ok(())
    }

    /// Waits until the first round has completed (forever when never
    /// started). Each check is bounded by its timeout, so after `start`
    /// this ends within the longest timeout.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.inner.recorded.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the first round of checks has completed.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Stops every check's task (also mid-run) and waits for them.
    pub async fn stop(&self) {
        self.inner.shutdown.send_replace(true);
        let handles: Vec<JoinHandle<()>> = {
            let mut st = self.inner.state.lock();
            st.runtime = None;
            st.entries
                .values_mut()
                .filter_map(|e| e.runner.take())
                .collect()
        };
        for h in handles {
            let _ = h.await;
        }
    }

    /// The whole system's health from the cache.
    pub fn system_health(&self) -> SystemHealth {
        let checks: Vec<CheckOutcome> = {
            let st = self.inner.state.lock();
            st.entries.values().map(|e| e.outcome.clone()).collect()
        };
        let ready = self.is_ready();
        let (status, score, healthy) = aggregate(checks.iter(), ready);
        SystemHealth {
            status,
            score,
            healthy,
            total: checks.len(),
            ready,
            timestamp_ms: self.inner.monitor.now_ms(),
            checks,
        }
    }

    /// Re-runs every check now (each bounded by its timeout) and answers
    /// with the results. Without [`start`](Self::start), the cache.
    pub async fn fresh_system_health(&self) -> SystemHealth {
        let cfg = &self.inner.config;
        let (targets, longest) = {
            let st = self.inner.state.lock();
            if st.runtime.is_none() {
                drop(st);
                return self.system_health();
            }
            let mut longest = cfg.check_timeout;
            let mut targets = Vec::new();
            for (name, e) in &st.entries {
                longest = longest.max(e.check.timeout().unwrap_or(cfg.check_timeout));
                targets.push((name.clone(), e.id, e.started));
                e.wake.notify_one();
            }
            (targets, longest)
        };
        let done = || {
            let st = self.inner.state.lock();
            targets.iter().all(|(name, id, started)| {
                st.entries
                    .get(name)
                    .is_none_or(|e| e.id != *id || e.completed > *started)
            })
        };
        let wait = async {
            loop {
                let notified = self.inner.recorded.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if done() {
                    return;
                }
                notified.await;
            }
        };
        // A run in progress finishes first, then the fresh one runs.
        let _ = tokio::time::timeout(2 * longest + Duration::from_secs(1), wait).await;
        self.system_health()
    }

    /// The system status from the cache (an atomic load; no lock, no I/O).
    pub fn quick_system_health(&self) -> HealthStatus {
        status_of(self.inner.quick.load(Ordering::Acquire))
    }

    /// The load balancers' answer from the cache (no lock, no I/O).
    pub fn quick_health(&self) -> QuickHealth {
        let status = self.quick_system_health();
        QuickHealth {
            status,
            ok: status != HealthStatus::Unhealthy,
            ready: self.is_ready(),
        }
    }

    /// Status changes, oldest first (at most `[health] history`).
    pub fn history(&self) -> Vec<StatusChange> {
        self.inner.state.lock().history.iter().cloned().collect()
    }

    /// Validates, stores and starts watching an external service (replacing
    /// one of the same name); returns the normalised registration. Does
    /// blocking store I/O: from async code, call it on a blocking thread.
    pub fn add_service(&self, reg: ServiceRegistration) -> Result<ServiceRegistration> {
        let svc = Service::parse(reg, &self.inner.config)?;
        services::save(self.inner.monitor.store(), &svc.registration)?;
        let out = svc.registration.clone();
        tracing::info!(service = %out.name, check = %out.check.kind, "service registered");
        self.install_service(svc);
        Ok(out)
    }

    fn install_service(&self, svc: Service) {
        let check = Arc::new(svc.clone());
        self.inner
            .state
            .lock()
            .services
            .insert(svc.name().to_owned(), svc);
        self.install(check);
    }

    /// Stops watching a service and deletes its registration; false when
    /// there was none. Does blocking store I/O.
    pub fn remove_service(&self, name: &str) -> Result<bool> {
        let stored = services::remove(self.inner.monitor.store(), name)?;
        let known = self.inner.state.lock().services.remove(name).is_some();
        self.unregister(&format!("service:{name}"));
        if stored || known {
            tracing::info!(service = %name, "service removed");
        }
        Ok(stored || known)
    }

    /// Every registered service with its check's status.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let st = self.inner.state.lock();
        st.services
            .values()
            .map(|svc| {
                let result = st
                    .entries
                    .get(&format!("service:{}", svc.name()))
                    .and_then(|e| e.outcome.result.as_ref());
                ServiceStatus {
                    registration: svc.registration.clone(),
                    status: result.map(|r| r.status),
                    output: result.map_or_else(|| "pending".to_owned(), |r| r.message.clone()),
                }
            })
            .collect()
    }

    /// Keeps a `ttl` service alive for one more ttl and re-checks it now.
    /// [`Error::NotFound`] for an unknown service,
    /// [`Error::InvalidParameter`] for one that is not a ttl check.
    pub fn heartbeat(&self, name: &str) -> Result<()> {
        let st = self.inner.state.lock();
        let svc = st
            .services
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no service {name:?}")))?;
        let ttl = svc.ttl().ok_or_else(|| {
            Error::InvalidParameter(format!(
                "service {name:?} has a {} check; heartbeats are for ttl checks",
                svc.registration.check.kind
            ))
        })?;
        ttl.heartbeat();
        if let Some(e) = st.entries.get(&format!("service:{name}")) {
            e.wake.notify_one();
        }
        Ok(())
    }
}

impl Inner {
    /// Notes that a run of `name` (registration `id`) starts; its sequence
    /// number, or `None` when the check is gone.
    pub(super) fn begin_run(&self, name: &str, id: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let e = st.entries.get_mut(name).filter(|e| e.id == id)?;
        e.started += 1;
        Some(e.started)
    }

    /// Caches a run's result, notes status changes, and records the run as
    /// scopemon's own series.
    pub(super) fn record(
        &self,
        name: &str,
        id: u64,
        seq: u64,
        result: CheckResult,
        took: Duration,
    ) {
        let now = self.monitor.now_ms();
        let status = result.status;
        let mut changes = Vec::new();
        {
            let mut st = self.state.lock();
            let Some(e) = st.entries.get_mut(name).filter(|e| e.id == id) else {
                return;
            };
            let before = e.outcome.result.as_ref().map(|r| r.status);
            if before != Some(status) {
                e.outcome.since_ms = Some(now);
                if before.is_some() || status != HealthStatus::Healthy {
                    changes.push(StatusChange {
                        check: Some(name.to_owned()),
                        from: before,
                        to: status,
                        message: result.message.clone(),
                        at_ms: now,
                    });
                }
            }
            e.outcome.result = Some(result);
            e.outcome.checked_at_ms = Some(now);
            e.outcome.duration = took;
            e.outcome.runs += 1;
            e.completed = e.completed.max(seq);
            if let Some(first) = st.first_round.as_mut() {
                first.remove(name);
            }
            changes.extend(self.refresh(&mut st, now));
            for c in &changes {
                if st.history.len() >= self.config.history.max(1) {
                    st.history.pop_front();
                }
                st.history.push_back(c.clone());
            }
        }
        changes.iter().for_each(log_change);
        self.recorded.notify_waiters();
        self.record_series(name, status, took);
    }

    /// Recomputes readiness and the system status; the change, if any.
    fn refresh(&self, st: &mut State, now: i64) -> Option<StatusChange> {
        let ready = st.first_round.as_ref().is_some_and(BTreeSet::is_empty);
        if ready && !self.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("first round of health checks completed");
            self.recorded.notify_waiters();
        }
        let (status, _, _) = aggregate(st.entries.values().map(|e| &e.outcome), ready);
        self.quick.store(status_code(status), Ordering::Release);
        if status == st.system {
            return None;
        }
        let change = StatusChange {
            check: None,
            from: Some(st.system),
            to: status,
            message: String::new(),
            at_ms: now,
        };
        st.system = status;
        Some(change)
    }

    fn record_series(&self, name: &str, status: HealthStatus, took: Duration) {
        let tags = [("check", name)];
        let sample = |metric, kind, value| Sample {
            namespace: OWN_NAMESPACE,
            metric,
            kind,
            value,
            tags: &tags,
            outcome: Outcome::Ok,
            timestamp_ms: None,
        };
        let micros = took.as_secs_f64() * 1e6;
        for s in [
            sample(
                "health.check.status",
                Kind::ResourceUsage,
                status_score(status),
            ),
            sample("health.check.duration", Kind::Latency, micros),
        ] {
            if let Err(e) = self.monitor.record(&s) {
                tracing::debug!(check = %name, error = %e, "health sample not recorded");
            }
        }
    }
}

fn log_change(c: &StatusChange) {
    let from = c.from.map_or("pending", HealthStatus::as_str);
    let what = c.check.as_deref().unwrap_or("system");
    match c.to {
        HealthStatus::Healthy => {
            tracing::info!(check = what, from, to = %c.to, "health status changed");
        }
        _ => {
            tracing::warn!(check = what, from, to = %c.to, message = %c.message, "health status changed")
        }
    }
}
