//! The recording API: samples by name (validated, the series found or
//! created per call) and pre-resolved [`Handle`]s for hot paths.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hot::{Handle, Series};
use crate::memory::PressureLevel;
use crate::model::{Kind, MINUTE_MS, Outcome, Resolution};

use super::Monitor;

/// Samples more than this far ahead of the clock are refused.
pub const MAX_FUTURE_MS: i64 = 5 * MINUTE_MS;

/// One sample as given to [`Monitor::record`].
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Metric.
    pub metric: &'a str,
    /// Kind.
    pub kind: Kind,
    /// Value in the kind's unit.
    pub value: f64,
    /// Tags.
    pub tags: &'a [(&'a str, &'a str)],
    /// Outcome.
    pub outcome: Outcome,
    /// Unix ms; `None` = now.
    pub timestamp_ms: Option<i64>,
}

impl Monitor {
    fn check_open(&self) -> Result<()> {
        if self.engine.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Records one sample (the general form behind every `record_*`).
    pub fn record(&self, s: &Sample<'_>) -> Result<()> {
        let now = self.engine.clock.now_ms();
        self.record_at(now, s, &mut None)
    }

    /// The minute a sample belongs to, refusing timestamps too far ahead or
    /// older than the namespace keeps anything.
    fn minute_of(&self, now: i64, s: &Sample<'_>) -> Result<i64> {
        let Some(ts) = s.timestamp_ms else {
            return Ok(self.engine.registry.observe_time(now));
        };
        if ts > now + MAX_FUTURE_MS {
            return Err(Error::TimestampInFuture {
                timestamp_ms: ts,
                now_ms: now,
            });
        }
        let longest = self.retention(s.namespace).longest_ms();
        if ts < now - longest {
            return Err(Error::OutsideRetention {
                timestamp_ms: ts,
                namespace: s.namespace.to_owned(),
                retention_ms: longest,
            });
        }
        Ok(Resolution::Minute.align(ts))
    }

    fn record_at(&self, now: i64, s: &Sample<'_>, cache: &mut Option<Arc<Series>>) -> Result<()> {
        self.check_open()?;
        let scaled = s.kind.scale_value(s.value)?;
        let minute = self.minute_of(now, s)?;
        let series = match cache {
            Some(c)
                if c.key().kind == s.kind
                    && c.key().metric == s.metric
                    && c.key().namespace == s.namespace
                    && c.key().tags.same_as(s.tags) =>
            {
                c.clone()
            }
            _ => {
                let found = self.find_or_create(s.namespace, s.kind, s.metric, s.tags, now)?;
                *cache = Some(found.clone());
                found
            }
        };
        series.record(minute, scaled, s.value, s.outcome.is_error());
        Ok(())
    }

    /// The series of a sample, created when new — unless memory pressure
    /// is high or critical, when only existing series are found (the
    /// creation path alone pays the gate's atomic load).
    fn find_or_create(
        &self,
        ns: &str,
        kind: Kind,
        metric: &str,
        tags: &[(&str, &str)],
        now: i64,
    ) -> Result<Arc<Series>> {
        let r = &self.engine.registry;
        let memory = &self.engine.memory;
        if memory.level() < PressureLevel::High {
            return r.get_or_create(ns, kind, metric, tags, now);
        }
        r.get(ns, kind, metric, tags)
            .ok_or_else(|| Error::MemoryPressureHigh {
                ratio: memory.ratio(),
            })
    }

    /// Records a batch, reading the clock once; returns how many were
    /// accepted and, for the others, their index and error.
    pub fn record_batch<'a>(
        &self,
        samples: impl IntoIterator<Item = Sample<'a>>,
    ) -> (usize, Vec<(usize, Error)>) {
        let now = self.engine.clock.now_ms();
        let mut cache = None;
        let mut accepted = 0;
        let mut rejected = Vec::new();
        for (i, s) in samples.into_iter().enumerate() {
            match self.record_at(now, &s, &mut cache) {
                Ok(()) => accepted += 1,
                Err(e) => rejected.push((i, e)),
            }
        }
        (accepted, rejected)
    }

    fn record_now(
        &self,
        ns: &str,
        metric: &str,
        kind: Kind,
        value: f64,
        outcome: Outcome,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record(&Sample {
            namespace: ns,
            metric,
            kind,
            value,
            tags,
            outcome,
            timestamp_ms: None,
        })
    }

    /// Records a latency.
    pub fn record_latency(
        &self,
        ns: &str,
        metric: &str,
        d: Duration,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_operation(ns, metric, d, Outcome::Ok, tags)
    }

    /// Records an operation's latency and outcome (errors feed error_rate).
    pub fn record_operation(
        &self,
        ns: &str,
        metric: &str,
        d: Duration,
        outcome: Outcome,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        let nanos = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        let micros = nanos as f64 / 1_000.0;
        self.record_now(ns, metric, Kind::Latency, micros, outcome, tags)
    }

    /// Records a throughput sample (operations per second).
    pub fn record_throughput(
        &self,
        ns: &str,
        metric: &str,
        ops_per_sec: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::Throughput, ops_per_sec, Outcome::Ok, tags)
    }

    /// Records an error-rate sample (percent, 0..=100).
    pub fn record_error_rate(
        &self,
        ns: &str,
        metric: &str,
        percent: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::ErrorRate, percent, Outcome::Ok, tags)
    }

    /// Records a resource-usage gauge sample.
    pub fn record_resource_usage(
        &self,
        ns: &str,
        metric: &str,
        value: f64,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.record_now(ns, metric, Kind::ResourceUsage, value, Outcome::Ok, tags)
    }

    /// A pre-resolved latency handle for hot paths.
    pub fn latency_handle(&self, ns: &str, metric: &str, tags: &[(&str, &str)]) -> Result<Handle> {
        self.handle(ns, Kind::Latency, metric, tags)
    }

    /// A pre-resolved handle of any kind.
    pub fn handle(
        &self,
        ns: &str,
        kind: Kind,
        metric: &str,
        tags: &[(&str, &str)],
    ) -> Result<Handle> {
        self.check_open()?;
        let now = self.engine.clock.now_ms();
        let r = &self.engine.registry;
        r.observe_time(now);
        Ok(r.handle(self.find_or_create(ns, kind, metric, tags, now)?))
    }
}
