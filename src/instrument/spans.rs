//! [`SpanTimingLayer`]: a `tracing_subscriber` layer recording how long
//! every closed span lived, so `#[tracing::instrument]` functions are
//! measured without other code.
//!
//! Invariants:
//! - A span is measured from its creation to its close (wall time, awaits
//!   included) and recorded once, at close, in metric = the span's name
//!   (characters outside `[A-Za-z0-9_.-]` become `_`) tagged `target`.
//! - Its outcome is `error` when an ERROR-level event was emitted directly
//!   inside it (what `#[instrument(err)]` does on `Err`), `ok` otherwise.
//! - Whether a span is measured is decided once, at creation, in this
//!   order: target prefixes, maximum level, field predicate, sampling.
//!   Spans not chosen cost nothing more.
//! - Sampling `OneIn(n)` measures exactly every n-th eligible span;
//!   `Probability(p)` draws from a seeded generator (SplitMix64), so a run
//!   is reproducible given the seed and the order of spans.
//! - Handles are resolved once per callsite and cached.
//! - The layer never filters what other layers see.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::hot::Handle;
use crate::model::{Kind, Outcome};
use crate::monitor::Monitor;

/// Which eligible spans are measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every one.
    All,
    /// Every n-th (n = 0 or 1 means all).
    OneIn(u64),
    /// Each with this probability (0..=1).
    Probability(f64),
}

type FieldPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Records the duration of closed spans into the monitor.
pub struct SpanTimingLayer {
    monitor: Arc<Monitor>,
    namespace: String,
    targets: Vec<String>,
    max_level: Option<Level>,
    field: Option<(String, FieldPredicate)>,
    sampling: Sampling,
    counter: AtomicU64,
    rng: AtomicU64,
    handles: RwLock<HashMap<usize, Option<Arc<Handle>>, foldhash::fast::RandomState>>,
}

impl fmt::Debug for SpanTimingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanTimingLayer")
            .field("namespace", &self.namespace)
            .field("sampling", &self.sampling)
            .finish()
    }
}

/// What a measured span carries in its extensions.
struct Timing {
    start: Instant,
    handle: Arc<Handle>,
    error: bool,
}

impl SpanTimingLayer {
    /// Measures every span into `namespace`.
    pub fn new(monitor: Arc<Monitor>, namespace: &str) -> SpanTimingLayer {
        SpanTimingLayer {
            monitor,
            namespace: namespace.to_owned(),
            targets: Vec::new(),
            max_level: None,
            field: None,
            sampling: Sampling::All,
            counter: AtomicU64::new(0),
            rng: AtomicU64::new(0x5c0_9e40_5eed),
            handles: RwLock::new(HashMap::default()),
        }
    }

    /// Which spans are measured (default all).
    pub fn sampling(mut self, s: Sampling) -> Self {
        self.sampling = s;
        self
    }

    /// Seed of `Probability` sampling.
    pub fn seed(self, seed: u64) -> Self {
        self.rng.store(seed, Ordering::Relaxed);
        self
    }

    /// Only spans whose target starts with one of these (default any).
    pub fn targets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, prefixes: I) -> Self {
        self.targets = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Only spans at this level or more severe (`INFO` keeps INFO, WARN
    /// and ERROR spans).
    pub fn max_level(mut self, level: Level) -> Self {
        self.max_level = Some(level);
        self
    }

    /// Only spans whose field `name` was given at creation and whose value
    /// (its `Display` for strings, `Debug` otherwise) satisfies `pred`.
    pub fn when_field(
        mut self,
        name: &str,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.field = Some((name.to_owned(), Arc::new(pred)));
        self
    }

    fn eligible(&self, attrs: &Attributes<'_>) -> bool {
        let meta = attrs.metadata();
        if !self.targets.is_empty()
            && !self
                .targets
                .iter()
                .any(|t| meta.target().starts_with(t.as_str()))
        {
            return false;
        }
        if self.max_level.is_some_and(|max| *meta.level() > max) {
            return false;
        }
        if let Some((name, pred)) = &self.field {
            let mut v = FieldValue { name, value: None };
            attrs.record(&mut v);
            if !v.value.is_some_and(|value| pred(&value)) {
                return false;
            }
        }
        self.sampled()
    }

    fn sampled(&self) -> bool {
        match self.sampling {
            Sampling::All => true,
            Sampling::OneIn(n) => {
                n <= 1
                    || self
                        .counter
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(n)
            }
            Sampling::Probability(p) => {
                let x = splitmix64(self.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed));
                // Top 53 bits as a uniform float in [0, 1).
                ((x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) < p
            }
        }
    }

    fn handle(&self, meta: &'static Metadata<'static>) -> Option<Arc<Handle>> {
        let id = meta as *const Metadata<'static> as usize;
        if let Some(h) = self.handles.read().get(&id) {
            return h.clone();
        }
        let metric = metric_name(meta.name());
        let tags = [("target", meta.target())];
        let made = self
            .monitor
            .handle(&self.namespace, Kind::Latency, &metric, &tags)
            .map_err(|e| tracing::warn!(span = meta.name(), error = %e, "spans of this callsite are not recorded"))
            .ok()
            .map(Arc::new);
        self.handles.write().entry(id).or_insert(made).clone()
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function on a state already advanced by the gamma.
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A span name as a metric name.
fn metric_name(name: &str) -> String {
    let s: String = name
        .chars()
        .take(256)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "span".to_owned() } else { s }
}

/// Captures one field's value.
struct FieldValue<'a> {
    name: &'a str,
    value: Option<String>,
}

impl Visit for FieldValue<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == self.name {
            self.value = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for SpanTimingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.eligible(attrs) {
            return;
        }
        let Some(handle) = self.handle(attrs.metadata()) else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Timing {
                start: Instant::now(),
                handle,
                error: false,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        if let Some(span) = ctx.event_span(event)
            && let Some(t) = span.extensions_mut().get_mut::<Timing>()
        {
            t.error = true;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        if let Some(t) = ext.get::<Timing>() {
            let outcome = if t.error { Outcome::Error } else { Outcome::Ok };
            t.handle.record_outcome(t.start.elapsed(), outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_become_metric_names() {
        assert_eq!(metric_name("db.query"), "db.query");
        assert_eq!(metric_name("GET /users"), "GET__users");
        assert_eq!(metric_name(""), "span");
    }

    #[test]
    fn splitmix_is_spread() {
        let a = splitmix64(0);
        let b = splitmix64(GOLDEN_GAMMA);
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
