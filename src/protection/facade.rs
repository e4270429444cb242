//! [`Infrastructure`]: the per-key protections and the
//! `execute_protected` facade that applies them.
//!
//! Invariants:
//! - One entry per key, made on the key's first call (or by
//!   [`Infrastructure::configure`], which replaces it with fresh state) and
//!   kept for the process' life: keys name a fixed set of operations, never
//!   caller-supplied values (use the identifier for those).
//! - The entry holds the key's monitor handles, resolved once; a call costs
//!   one map read, never a series lookup by name.
//! - A handle that cannot be made (invalid key, series limit) is logged
//!   once and the key's calls run unrecorded but still protected.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::time::Instant;

use super::breaker::{BreakerSnapshot, CircuitBreaker, Transition, TransitionListener};
use super::call::{Admission, ProtectedCall, Rejection};
use super::limiter::{KeyedLimiter, LimiterSnapshot};
use super::{ProtectionError, Settings};
use crate::config::ProtectionConfig;
use crate::hot::Handle;
use crate::model::{Kind, Outcome};
use crate::monitor::Monitor;

/// Decides whether a call may start given the process' memory; the memory
/// manager plugs in here. Any `Fn() -> bool` is one.
pub trait MemoryGate: Send + Sync + 'static {
    /// False refuses the call with [`ProtectionError::MemoryPressure`].
    fn admit(&self) -> bool;
}

impl<F: Fn() -> bool + Send + Sync + 'static> MemoryGate for F {
    fn admit(&self) -> bool {
        self()
    }
}

/// The default gate: admits everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAdmit;

impl MemoryGate for AlwaysAdmit {
    fn admit(&self) -> bool {
        true
    }
}

/// Per-call options of [`Infrastructure::execute_protected`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions<'a> {
    /// Whose rate-limit bucket the call takes from (a user, a client
    /// address); `None` shares one bucket per key.
    pub identifier: Option<&'a str>,
}

impl CallOptions<'static> {
    /// No identifier.
    pub const DEFAULT: CallOptions<'static> = CallOptions { identifier: None };
}

impl<'a> CallOptions<'a> {
    /// Calls rate-limited in `identifier`'s own bucket.
    pub fn identifier(identifier: &'a str) -> CallOptions<'a> {
        CallOptions {
            identifier: Some(identifier),
        }
    }
}

/// Why a call was rejected, as the `reason` tag says.
#[derive(Clone, Copy)]
enum Reason {
    Memory = 0,
    Rate = 1,
    Circuit = 2,
}

const REASONS: [&str; 3] = ["memory_pressure", "rate_limited", "circuit_open"];

type Recording = Option<(Arc<Monitor>, Arc<str>)>;

/// The protections of one key.
pub(super) struct Entry {
    key: String,
    pub(super) settings: Settings,
    gate: Arc<dyn MemoryGate>,
    pub(super) breaker: CircuitBreaker,
    limiter: Option<KeyedLimiter>,
    recording: Recording,
    pub(super) ran: Option<Handle>,
    rejected: [OnceLock<Option<Handle>>; 3],
    memory_rejections: AtomicU64,
}

impl Entry {
    fn new(key: &str, settings: Settings, inner: &Inner) -> Entry {
        let recording = inner.recording.clone();
        let listener = inner.listener.clone();
        let ran = recording.as_ref().and_then(|(m, ns)| {
            m.handle(ns, Kind::Latency, key, &[])
                .map_err(|e| tracing::warn!(key, error = %e, "protected calls of this key are not recorded"))
                .ok()
        });
        Entry {
            key: key.to_owned(),
            breaker: CircuitBreaker::with_listener(key, settings.breaker.clone(), listener),
            limiter: settings.rate_limit.map(KeyedLimiter::new),
            settings,
            gate: inner.gate.clone(),
            recording,
            ran,
            rejected: Default::default(),
            memory_rejections: AtomicU64::new(0),
        }
    }

    fn count_rejection(&self, reason: Reason) {
        let handle = self.rejected[reason as usize].get_or_init(|| {
            let (m, ns) = self.recording.as_ref()?;
            let tags = [("reason", REASONS[reason as usize])];
            let metric = format!("{}.rejected", self.key);
            m.handle(ns, Kind::Latency, &metric, &tags).ok()
        });
        if let Some(h) = handle {
            h.record_outcome(Duration::ZERO, Outcome::Error);
        }
    }

    /// Memory gate → rate limiter → circuit breaker.
    pub(super) fn admit(self: Arc<Self>, identifier: Option<&str>) -> Result<Admission, Rejection> {
        if self.settings.memory_gate && !self.gate.admit() {
            self.memory_rejections.fetch_add(1, Ordering::Relaxed);
            self.count_rejection(Reason::Memory);
            return Err(Rejection::MemoryPressure);
        }
        // One clock read serves the limiter, the breaker and the call's start.
        let now = Instant::now();
        if let Some(limiter) = &self.limiter
            && let Err(retry_after) = limiter.check_at(identifier.unwrap_or(""), now)
        {
            self.count_rejection(Reason::Rate);
            return Err(Rejection::RateLimited(retry_after));
        }
        match self.breaker.acquire_at(now) {
            Ok(ticket) => Ok(Admission {
                entry: self,
                ticket: Some(ticket),
                start: now,
            }),
            Err(retry_after) => {
                self.count_rejection(Reason::Circuit);
                Err(Rejection::CircuitOpen(retry_after))
            }
        }
    }

    /// Runs `fut` behind these protections.
    fn call<T, E, F>(self: Arc<Self>, opts: &CallOptions<'_>, fut: F) -> ProtectedCall<F>
    where
        F: Future<Output = Result<T, E>>,
    {
        ProtectedCall::new(self.admit(opts.identifier), fut, Result::is_ok)
    }

    fn snapshot(&self) -> KeySnapshot {
        KeySnapshot {
            key: self.key.clone(),
            breaker: self.breaker.snapshot(),
            limiter: self.limiter.as_ref().map(KeyedLimiter::snapshot),
            timeout: self
                .settings
                .timeout
                .map(|t| humantime::format_duration(t).to_string()),
            memory_gate: self.settings.memory_gate,
            memory_rejections: self.memory_rejections.load(Ordering::Relaxed),
        }
    }
}

/// One key's protections, as `GET /v1/protection` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct KeySnapshot {
    /// The protection key.
    pub key: String,
    /// Its breaker.
    pub breaker: BreakerSnapshot,
    /// Its rate limiter, if it has one.
    pub limiter: Option<LimiterSnapshot>,
    /// Its call timeout, if any.
    pub timeout: Option<String>,
    /// Whether the memory gate applies.
    pub memory_gate: bool,
    /// Calls the memory gate refused.
    pub memory_rejections: u64,
}

/// Every key's protections.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectionSnapshot {
    /// Whether the memory gate admits calls right now.
    pub memory_admits: bool,
    /// Keys, sorted.
    pub keys: Vec<KeySnapshot>,
}

struct Inner {
    recording: Recording,
    gate: Arc<dyn MemoryGate>,
    defaults: Settings,
    file: BTreeMap<String, ProtectionConfig>,
    code: RwLock<HashMap<String, Settings>>,
    entries: RwLock<HashMap<String, Arc<Entry>, foldhash::fast::RandomState>>,
    listener: Option<TransitionListener>,
}

/// The protections of every key, shared by clones (cheap: one `Arc`).
#[derive(Clone)]
pub struct Infrastructure {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infrastructure")
            .field("keys", &self.inner.entries.read().len())
            .finish()
    }
}

/// Builder of [`Infrastructure`].
pub struct InfrastructureBuilder {
    recording: Recording,
    gate: Arc<dyn MemoryGate>,
    defaults: Settings,
    file: BTreeMap<String, ProtectionConfig>,
    code: HashMap<String, Settings>,
    listener: Option<TransitionListener>,
}

impl InfrastructureBuilder {
    /// Records every call into `monitor` under `namespace`.
    pub fn monitor(mut self, monitor: Arc<Monitor>, namespace: &str) -> Self {
        self.recording = Some((monitor, Arc::from(namespace)));
        self
    }

    /// The memory gate (default [`AlwaysAdmit`]).
    pub fn memory_gate(mut self, gate: impl MemoryGate) -> Self {
        self.gate = Arc::new(gate);
        self
    }

    /// Settings of keys configured neither in code nor in the file
    /// (default [`Settings::default`]).
    pub fn defaults(mut self, settings: Settings) -> Self {
        self.defaults = settings;
        self
    }

    /// The `[protection.<key>]` tables, laid over the code's settings.
    pub fn config(mut self, file: &BTreeMap<String, ProtectionConfig>) -> Self {
        self.file = file.clone();
        self
    }

    /// Settings of one key.
    pub fn key(mut self, key: &str, settings: Settings) -> Self {
        self.code.insert(key.to_owned(), settings);
        self
    }

    /// Called with every breaker transition (they are logged and counted
    /// anyway).
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    /// The infrastructure.
    pub fn build(self) -> Infrastructure {
        Infrastructure {
            inner: Arc::new(Inner {
                recording: self.recording,
                gate: self.gate,
                defaults: self.defaults,
                file: self.file,
                code: RwLock::new(self.code),
                entries: RwLock::new(HashMap::default()),
                listener: self.listener,
            }),
        }
    }
}

impl Infrastructure {
    /// A builder: no recording, every call admitted by the memory gate,
    /// default settings.
    pub fn builder() -> InfrastructureBuilder {
        InfrastructureBuilder {
            recording: None,
            gate: Arc::new(AlwaysAdmit),
            defaults: Settings::default(),
            file: BTreeMap::new(),
            code: HashMap::new(),
            listener: None,
        }
    }

    /// Recording into `monitor` under `namespace`, with the monitor's
    /// `[protection]` configuration.
    pub fn for_monitor(monitor: Arc<Monitor>, namespace: &str) -> Infrastructure {
        let file = monitor.config().protection.clone();
        Infrastructure::builder()
            .config(&file)
            .monitor(monitor, namespace)
            .build()
    }

    /// Sets `key`'s settings in code (the file's table for it still lies
    /// over them) and starts its protections afresh.
    pub fn configure(&self, key: &str, settings: Settings) {
        self.inner.code.write().insert(key.to_owned(), settings);
        let entry = Arc::new(self.make_entry(key));
        self.inner.entries.write().insert(key.to_owned(), entry);
    }

    /// The settings `key` runs with.
    pub fn settings(&self, key: &str) -> Settings {
        self.entry(key).settings.clone()
    }

    fn make_entry(&self, key: &str) -> Entry {
        let i = &self.inner;
        let base = i.code.read().get(key).cloned();
        let mut settings = base.unwrap_or_else(|| i.defaults.clone());
        if let Some(c) = i.file.get(key) {
            settings = settings.overlay(c);
        }
        Entry::new(key, settings, i)
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        if let Some(e) = self.inner.entries.read().get(key) {
            return e.clone();
        }
        let made = self.make_entry(key);
        self.inner
            .entries
            .write()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(made))
            .clone()
    }

    /// Runs `fut` behind `key`'s protections: memory gate → rate limiter →
    /// circuit breaker → timeout → the call. `Err` counts as a failure.
    /// The protections are consulted now; the call runs when the returned
    /// future is awaited (at once, or its wait counts as call time).
    pub fn execute_protected<T, E, F>(
        &self,
        key: &str,
        opts: &CallOptions<'_>,
        fut: F,
    ) -> ProtectedCall<F>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.entry(key).call(opts, fut)
    }

    /// `key`'s protections resolved once, for hot paths: calls through
    /// the returned [`Protection`] skip the key lookup. It keeps the state
    /// it was resolved with (a later [`Infrastructure::configure`] of the
    /// key makes a new one).
    pub fn protection(&self, key: &str) -> Protection {
        Protection {
            entry: self.entry(key),
        }
    }

    /// Every key's breaker and limiter now.
    pub fn snapshot(&self) -> ProtectionSnapshot {
        let entries: Vec<Arc<Entry>> = self.inner.entries.read().values().cloned().collect();
        let mut keys: Vec<KeySnapshot> = entries.iter().map(|e| e.snapshot()).collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        ProtectionSnapshot {
            memory_admits: self.inner.gate.admit(),
            keys,
        }
    }

    /// The breaker of `key` (made with its settings if new).
    pub fn breaker_state(&self, key: &str) -> super::BreakerState {
        self.entry(key).breaker.state()
    }
}

/// One key's protections, resolved by [`Infrastructure::protection`].
#[derive(Clone)]
pub struct Protection {
    entry: Arc<Entry>,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("key", &self.entry.key)
            .finish()
    }
}

impl Protection {
    /// The key.
    pub fn key(&self) -> &str {
        &self.entry.key
    }

    /// As [`Infrastructure::execute_protected`] for this key.
    pub fn execute<T, E, F>(&self, opts: &CallOptions<'_>, fut: F) -> ProtectedCall<F>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.entry.clone().call(opts, fut)
    }

    /// Runs the result of `start` behind this key's protections, calling
    /// `start` only when they admit the call; `is_ok` says which results
    /// count as successes.
    pub(super) fn admit_then<F: Future>(
        &self,
        identifier: Option<&str>,
        start: impl FnOnce() -> F,
        is_ok: fn(&F::Output) -> bool,
    ) -> Result<ProtectedCall<F>, Rejection> {
        let admission = self.entry.clone().admit(identifier)?;
        Ok(ProtectedCall::new(Ok(admission), start(), is_ok))
    }

    /// This key's figures now.
    pub fn snapshot(&self) -> KeySnapshot {
        self.entry.snapshot()
    }
}

/// ServiceProtection for a plain struct: implement `infrastructure()` and
/// every async method can run its work through `protected_call`.
///
/// ```no_run
/// use scopemon::protection::{Infrastructure, ServiceProtection};
/// struct Payments { infra: Infrastructure }
/// impl ServiceProtection for Payments {
///     fn infrastructure(&self) -> &Infrastructure { &self.infra }
/// }
/// impl Payments {
///     async fn charge(&self, cents: u64) -> Result<u64, scopemon::protection::ProtectionError<std::io::Error>> {
///         self.protected_call("payments.charge", async move { Ok(cents) }).await
///     }
/// }
/// ```
pub trait ServiceProtection {
    /// The protections to apply.
    fn infrastructure(&self) -> &Infrastructure;

    /// Runs `fut` behind the protections of key `op`.
    fn protected_call<'a, T, E, F>(
        &'a self,
        op: &'a str,
        fut: F,
    ) -> impl Future<Output = Result<T, ProtectionError<E>>> + Send + 'a
    where
        Self: Sync,
        F: Future<Output = Result<T, E>> + Send + 'a,
        T: Send + 'a,
        E: Send + 'a,
    {
        self.infrastructure()
            .execute_protected(op, &CallOptions::DEFAULT, fut)
    }
}
