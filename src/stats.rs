//! One bucket's statistics: a histogram of scaled values plus the exact
//! sum, min, max and error count; and the [`Point`] computed from it.
//!
//! The histogram has two forms sharing HdrHistogram's bucket indexing
//! ([`sparse::Layout`]): dense (the crate's `Histogram<u64>`, ~26 KiB at
//! 2 digits whatever it holds) and sparse (sorted (index, count) pairs,
//! 8 bytes per distinct bucket). Hot buckets start sparse
//! ([`Stats::new_sparse`]) and become dense once the sparse form would need
//! more bytes than the dense one, or more than [`sparse::SPEED_CAP`]
//! entries; a conversion never goes back. Both forms count the same
//! samples at the same indexes, so counts and quantiles are identical.
//!
//! Invariant: the histogram's total is the sample count, and
//! `min`/`max`/`sum` are over the unscaled values of exactly those samples
//! (min/max are `NaN`-free and meaningful only when the count is non-zero).
//!
//! [`Aggregation`] names one field of a [`Point`]; thresholds and baselines
//! parse it once (from its snake_case name) and read points through it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::model::{Kind, format_ts};

pub(crate) mod sparse;

use sparse::{Layout, Sparse};

/// Significant decimal digits of the histograms, validated to 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision(u8);

impl Precision {
    /// The default: 2 digits, ≤ 1 % relative error.
    pub const DEFAULT: Precision = Precision(2);

    /// Validates `digits` (1..=5).
    pub fn new(digits: u8) -> Result<Precision> {
        if (1..=5).contains(&digits) {
            Ok(Precision(digits))
        } else {
            Err(Error::Config(format!(
                "histogram precision {digits} must be 1..=5 significant digits"
            )))
        }
    }

    /// The digits.
    pub fn digits(self) -> u8 {
        self.0
    }
}

/// A bucket's histogram, in one of its two forms.
#[derive(Debug, Clone)]
pub(crate) enum Hist {
    /// The crate's histogram.
    Dense(Histogram<u64>),
    /// Sorted (index, count) pairs of the same indexing.
    Sparse(Sparse),
}

/// Equal when they count the same samples at the same indexes, whatever
/// their forms.
impl PartialEq for Hist {
    fn eq(&self, other: &Hist) -> bool {
        match (self, other) {
            (Hist::Sparse(a), Hist::Sparse(b)) => a == b,
            (Hist::Dense(a), Hist::Dense(b)) => a == b,
            (Hist::Sparse(a), Hist::Dense(b)) | (Hist::Dense(b), Hist::Sparse(a)) => {
                a.to_dense() == *b
            }
        }
    }
}

/// Bucket statistics of one kind.
#[derive(Debug, Clone)]
pub struct Stats {
    pub(crate) hist: Hist,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) errors: u64,
}

/// Creates an empty histogram for `kind` at `precision`.
pub fn new_histogram(kind: Kind, precision: Precision) -> Histogram<u64> {
    // Cannot fail: low = 1, high = max_scaled >= 2 and digits in 1..=5 are
    // exactly the constraints new_with_bounds checks.
    Histogram::new_with_bounds(1, kind.max_scaled(), precision.digits())
        .expect("kind bounds and validated precision are always a valid histogram")
}

/// The layout of `kind`'s histograms at `precision`.
pub(crate) fn layout(kind: Kind, precision: Precision) -> Layout {
    // Cannot fail: the same bounds as `new_histogram`.
    Layout::new(1, kind.max_scaled(), precision.digits())
        .expect("kind bounds and validated precision are always a valid layout")
}

impl Stats {
    /// Empty statistics, dense (accumulators that take many records).
    pub fn new(kind: Kind, precision: Precision) -> Stats {
        Stats::from_parts(
            new_histogram(kind, precision),
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0,
        )
    }

    /// Empty statistics, sparse: no allocation until the first sample, then
    /// bytes that follow the distinct buckets recorded (hot buckets).
    pub fn new_sparse(kind: Kind, precision: Precision) -> Stats {
        Stats::with_hist(Hist::Sparse(Sparse::new(layout(kind, precision))))
    }

    fn with_hist(hist: Hist) -> Stats {
        Stats {
            hist,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            errors: 0,
        }
    }

    pub(crate) fn from_parts(
        hist: Histogram<u64>,
        sum: f64,
        min: f64,
        max: f64,
        errors: u64,
    ) -> Stats {
        Stats::from_hist(Hist::Dense(hist), sum, min, max, errors)
    }

    pub(crate) fn from_hist(hist: Hist, sum: f64, min: f64, max: f64, errors: u64) -> Stats {
        Stats {
            hist,
            sum,
            min,
            max,
            errors,
        }
    }

    /// Number of samples.
    #[inline]
    pub fn count(&self) -> u64 {
        match &self.hist {
            Hist::Dense(h) => h.len(),
            Hist::Sparse(s) => s.total(),
        }
    }

    /// Whether the histogram is in its sparse form.
    pub fn is_sparse(&self) -> bool {
        matches!(self.hist, Hist::Sparse(_))
    }

    /// Records one sample already validated and scaled by
    /// [`Kind::scale_value`]. Returns the heap bytes this added (0 unless
    /// a sparse histogram grew or became dense), for hot-memory accounting.
    #[inline]
    pub fn record_scaled(&mut self, scaled: u64, value: f64, error: bool) -> usize {
        let grown = match &mut self.hist {
            // The value was range-checked against the kind, so this never clamps.
            Hist::Dense(h) => {
                h.saturating_record(scaled);
                0
            }
            Hist::Sparse(s) => match s.record(scaled) {
                Some(grown) => grown,
                None => self.record_densified(scaled),
            },
        };
        self.sum += value;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        self.errors += u64::from(error);
        grown
    }

    /// The sparse form is full: converts to dense, then records.
    #[cold]
    fn record_densified(&mut self, scaled: u64) -> usize {
        let before = self.heap_bytes();
        let h = self.dense_mut();
        h.saturating_record(scaled);
        self.heap_bytes() - before
    }

    /// The dense histogram, converting a sparse one first (for good).
    pub(crate) fn dense_mut(&mut self) -> &mut Histogram<u64> {
        if let Hist::Sparse(s) = &self.hist {
            self.hist = Hist::Dense(s.to_dense());
        }
        match &mut self.hist {
            Hist::Dense(h) => h,
            // Just converted.
            Hist::Sparse(_) => unreachable!("converted to dense above"),
        }
    }

    /// The histogram's layout (`None` only for a dense histogram of bounds
    /// no layout describes, which scopemon never creates).
    pub(crate) fn layout(&self) -> Option<Layout> {
        match &self.hist {
            Hist::Dense(h) => Layout::of(h),
            Hist::Sparse(s) => Some(*s.layout()),
        }
    }

    /// Calls `f(index, count)` for every non-empty bucket, by increasing
    /// index (`layout` is [`Stats::layout`]'s).
    pub(crate) fn for_each_pair(&self, layout: &Layout, mut f: impl FnMut(u32, u64)) {
        match &self.hist {
            Hist::Sparse(s) => s.iter().for_each(|(i, c)| f(i, c)),
            Hist::Dense(h) => {
                for v in h.iter_recorded() {
                    f(
                        layout.index_for(v.value_iterated_to()) as u32,
                        v.count_at_value(),
                    );
                }
            }
        }
    }

    /// The histogram in its dense form (borrowed when it is dense).
    pub(crate) fn to_dense(&self) -> Cow<'_, Histogram<u64>> {
        match &self.hist {
            Hist::Dense(h) => Cow::Borrowed(h),
            Hist::Sparse(s) => Cow::Owned(s.to_dense()),
        }
    }

    /// Adds `other` into `self` (lossless histogram merge). Sparse ⊕ sparse
    /// stays sparse while it fits; any other pair ends dense.
    pub fn merge(&mut self, other: &Stats) -> Result<()> {
        if other.count() == 0 {
            return Ok(());
        }
        let merged_sparse = match (&mut self.hist, &other.hist) {
            (Hist::Sparse(a), Hist::Sparse(b)) => a.merge(b).is_some(),
            _ => false,
        };
        if !merged_sparse {
            let too_big = |e| Error::Corrupt {
                table: "buckets",
                detail: format!("histogram does not fit its kind's range: {e:?}"),
            };
            match &other.hist {
                Hist::Dense(b) => self.dense_mut().add(b).map_err(too_big)?,
                Hist::Sparse(b) => {
                    let h = self.dense_mut();
                    // The crate's own check in `add`: the addend's largest
                    // value must fit the target's top bucket.
                    let top = Layout::of(h)
                        .map(|l| h.highest_equivalent(l.value_for(l.len() - 1)))
                        .unwrap_or(h.high());
                    if b.max_equivalent().is_some_and(|m| m > top) {
                        return Err(too_big(
                            hdrhistogram::AdditionError::OtherAddendValueExceedsRange,
                        ));
                    }
                    b.add_to(h);
                }
            }
        }
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.errors += other.errors;
        Ok(())
    }

    /// Bytes this bucket occupies: the struct and the histogram's counts
    /// (the dense array, or the sparse entries' capacity).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Stats>()
            + match &self.hist {
                Hist::Dense(h) => h.distinct_values() * std::mem::size_of::<u64>(),
                Hist::Sparse(s) => s.heap_bytes(),
            }
    }

    /// Clears every count, keeping the allocation (and the form).
    pub fn reset(&mut self) {
        match &mut self.hist {
            Hist::Dense(h) => h.reset(),
            Hist::Sparse(s) => s.clear(),
        }
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.errors = 0;
    }

    /// The aggregates over `width_ms` milliseconds starting at `start_ms`;
    /// `None` when empty.
    pub fn point(&self, kind: Kind, start_ms: i64, width_ms: i64) -> Option<Point> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let q = match &self.hist {
            Hist::Dense(h) => self.quantiles(h, kind),
            Hist::Sparse(s) => self.quantiles(&s.to_dense(), kind),
        };
        Some(Point {
            start: format_ts(start_ms),
            start_ms,
            end: None,
            count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            avg: self.sum / count as f64,
            p50: q[0],
            p90: q[1],
            p95: q[2],
            p99: q[3],
            p999: q[4],
            errors: self.errors,
            error_rate: self.errors as f64 * 100.0 / count as f64,
            rate: if width_ms > 0 {
                count as f64 * 1000.0 / width_ms as f64
            } else {
                0.0
            },
        })
    }

    /// p50, p90, p95, p99, p99.9 by nearest rank (the smallest recorded
    /// value whose rank is >= ceil(q * n)), reported as the middle of its
    /// histogram bucket, clamped to the exact [min, max]. A sparse
    /// histogram is read through its dense equivalent, so both forms give
    /// the same figures by construction.
    ///
    /// Ranks are computed in integers; the crate's one-pass
    /// `value_at_quantiles` is then asked for `(rank - 0.5) / n`, whose
    /// `ceil(q * n)` is exactly `rank` whatever the float rounding.
    fn quantiles(&self, hist: &Histogram<u64>, kind: Kind) -> [f64; 5] {
        const PER_MILLE: [u128; 5] = [500, 900, 950, 990, 999];
        let n = u128::from(self.count());
        let qs = PER_MILLE.map(|q| {
            let rank = (n * q).div_ceil(1000).max(1);
            (rank as f64 - 0.5) / n as f64
        });
        let mut out = [self.max; 5];
        for (o, v) in out.iter_mut().zip(hist.value_at_quantiles(qs)) {
            // max-then-min rather than `clamp`, which panics on min > max
            // or NaN: what a damaged record may hold (same result otherwise).
            *o = (hist.median_equivalent(v) as f64 / kind.scale())
                .max(self.min)
                .min(self.max);
        }
        out
    }
}

/// The aggregates of one bucket (or of a whole range), as in the SPEC.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Bucket (or range) start, RFC 3339.
    pub start: String,
    /// The same start, Unix ms (not serialized).
    #[serde(skip)]
    pub start_ms: i64,
    /// Range end, for `window=range` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Samples.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Samples with outcome `error`.
    pub errors: u64,
    /// errors / count * 100.
    pub error_rate: f64,
    /// Samples per second of the bucket.
    pub rate: f64,
}

/// One aggregate of a [`Point`]: what a threshold watches and what a
/// baseline describes. Serialized (and parsed) as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Samples per second.
    Rate,
    /// Percentage of samples with outcome `error`.
    ErrorRate,
    /// Samples.
    Count,
}

impl Aggregation {
    /// Every aggregation, in the order error messages list them.
    pub const ALL: [Aggregation; 11] = [
        Aggregation::Avg,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::P50,
        Aggregation::P90,
        Aggregation::P95,
        Aggregation::P99,
        Aggregation::P999,
        Aggregation::Rate,
        Aggregation::ErrorRate,
        Aggregation::Count,
    ];

    /// The aggregations a baseline has a band for, in the order error
    /// messages list them.
    pub const WITH_BASELINE: [Aggregation; 6] = [
        Aggregation::P50,
        Aggregation::P95,
        Aggregation::P99,
        Aggregation::Avg,
        Aggregation::Rate,
        Aggregation::ErrorRate,
    ];

    /// The snake_case name (`p99`, `error_rate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::P50 => "p50",
            Aggregation::P90 => "p90",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
            Aggregation::P999 => "p999",
            Aggregation::Rate => "rate",
            Aggregation::ErrorRate => "error_rate",
            Aggregation::Count => "count",
        }
    }

    /// The value of this aggregation in `p`.
    #[inline]
    pub fn of(self, p: &Point) -> f64 {
        match self {
            Aggregation::Avg => p.avg,
            Aggregation::Min => p.min,
            Aggregation::Max => p.max,
            Aggregation::P50 => p.p50,
            Aggregation::P90 => p.p90,
            Aggregation::P95 => p.p95,
            Aggregation::P99 => p.p99,
            Aggregation::P999 => p.p999,
            Aggregation::Rate => p.rate,
            Aggregation::ErrorRate => p.error_rate,
            Aggregation::Count => p.count as f64,
        }
    }

    /// Whether baselines have a band for it (see [`Aggregation::WITH_BASELINE`]).
    pub fn has_baseline(self) -> bool {
        Aggregation::WITH_BASELINE.contains(&self)
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Aggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Aggregation> {
        Aggregation::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Aggregation::ALL.iter().map(|a| a.as_str()).collect();
                Error::InvalidParameter(format!(
                    "unknown aggregation {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl Serialize for Aggregation {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Aggregation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Aggregation, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(values: &[f64]) -> Stats {
        let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
        for (i, v) in values.iter().enumerate() {
            s.record_scaled(Kind::Latency.scale_value(*v).unwrap(), *v, i % 4 == 0);
        }
        s
    }

    #[test]
    fn nearest_rank_quantiles_match_an_exact_sort() {
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i * 37 % 1000 + 100)).collect();
        let s = stats_of(&values);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let p = s.point(Kind::Latency, 0, 60_000).unwrap();
        for (got, q) in [(p.p50, 0.5), (p.p90, 0.9), (p.p99, 0.99), (p.p999, 0.999)] {
            let exact = sorted[((q * 1000.0_f64).ceil() as usize).max(1) - 1];
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 100.0);
        assert_eq!(p.max, 1099.0);
        assert_eq!(p.errors, 250);
        assert_eq!(p.error_rate, 25.0);
    }

    #[test]
    fn aggregations_parse_by_name_and_say_what_is_known() {
        for a in Aggregation::ALL {
            assert_eq!(a.as_str().parse::<Aggregation>().unwrap(), a);
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        let e = "p42".parse::<Aggregation>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown aggregation \"p42\"; expected one of avg, min, max, p50, p90, p95, p99, p999, rate, error_rate, count"
        );
        assert!(Aggregation::P99.has_baseline() && !Aggregation::Count.has_baseline());
        let p = stats_of(&[10.0, 20.0])
            .point(Kind::Latency, 0, 1_000)
            .unwrap();
        assert_eq!(Aggregation::Count.of(&p), 2.0);
        assert_eq!(Aggregation::Max.of(&p), 20.0);
        assert_eq!(Aggregation::ErrorRate.of(&p), 50.0);
    }

    #[test]
    fn merge_is_lossless() {
        let mut a = stats_of(&[10.0, 20.0]);
        let b = stats_of(&[5.0, 40.0, 50.0]);
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 5);
        assert_eq!(a.min, 5.0);
        assert_eq!(a.max, 50.0);
        assert_eq!(a.sum, 125.0);
    }

    #[test]
    fn empty_stats_make_no_point() {
        assert!(
            Stats::new(Kind::Latency, Precision::DEFAULT)
                .point(Kind::Latency, 0, 1)
                .is_none()
        );
    }

    #[test]
    fn default_hot_histogram_is_about_26_kib() {
        let s = Stats::new(Kind::Latency, Precision::DEFAULT);
        assert!(s.heap_bytes() <= 32 * 1024, "{}", s.heap_bytes());
    }
}
