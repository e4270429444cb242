//! [`Handle`]: a pre-resolved series for hot paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::Series;
use crate::error::Result;
use crate::model::{Kind, Outcome};

/// A pre-resolved series for hot paths: recording is two plain stores into
/// the calling thread's ring (`hot/ring.rs`; the lock is taken once per 64
/// samples to drain it); no name lookup, no clock read (the minute
/// comes from an atomic the engine keeps current).
#[derive(Debug, Clone)]
pub struct Handle {
    series: Arc<Series>,
    kind: Kind,
    minute: Arc<AtomicI64>,
}

impl Handle {
    pub(super) fn new(series: Arc<Series>, minute: Arc<AtomicI64>) -> Handle {
        Handle {
            kind: series.key.kind,
            series,
            minute,
        }
    }

    /// Records a duration (latency handles; microseconds with sub-µs in the sum).
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_duration(d, false);
    }

    /// Records a duration with its outcome.
    #[inline]
    pub fn record_outcome(&self, d: Duration, outcome: Outcome) {
        self.record_duration(d, outcome.is_error());
    }

    #[inline]
    fn record_duration(&self, d: Duration, error: bool) {
        // Integer arithmetic only: `as_nanos()` is a u128, whose conversion
        // to f64 (and `f64::round`) are library calls that cost more than
        // the whole histogram increment.
        let nanos = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        // Durations beyond one hour are clamped to the histogram's top; the
        // exact value still counts in sum/min/max.
        let scaled = (nanos.saturating_add(500) / 1_000).min(Kind::Latency.max_scaled());
        // A multiply, not a divide: divsd is ~15 cycles on the record path;
        // the product differs from the quotient by at most one ulp.
        let micros = nanos as f64 * 1e-3;
        self.series
            .record_via_ring(self.minute.load(Ordering::Relaxed), scaled, micros, error);
    }

    /// Records a value in the series' unit; invalid values are refused.
    pub fn record_value(&self, value: f64) -> Result<()> {
        self.record_value_outcome(value, Outcome::Ok)
    }

    /// Records a value with its outcome.
    pub fn record_value_outcome(&self, value: f64, outcome: Outcome) -> Result<()> {
        let scaled = self.kind.scale_value(value)?;
        self.series.record_via_ring(
            self.minute.load(Ordering::Relaxed),
            scaled,
            value,
            outcome.is_error(),
        );
        Ok(())
    }

    /// The series this handle records into.
    pub fn series(&self) -> &Arc<Series> {
        &self.series
    }
}
