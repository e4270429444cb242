//! Property tests of quantile accuracy (the ≤ 1 % claim of the default
//! histogram precision) against an exact sort, at every stage of the data
//! path: hot buckets, flushed deltas, minute/hour/day records after rollup,
//! a reopened file, and late samples merged into already rolled-up records.
//!
//! Each case records random integer latencies (µs) with random timestamps
//! spread over 24 to 40 hours (so minute, hour and day boundaries are
//! crossed) and random outcomes, then compares every query answer with the
//! exact statistics of the samples it should contain:
//! * `count`, `min`, `max` and `errors` exactly, `sum` to 1e-12 relative
//!   (integer sums below 2⁵³ are exact in `f64` anyway);
//! * p50, p90, p95, p99 and p99.9 within 1 % of the exact nearest-rank value
//!   (the value at 1-based rank `ceil(q · n)`, at least 1).
//!
//! Queries: `window=range` over the whole span (day-aligned and unaligned
//! ends) and over a random sub-range (exact to the minute: a sample counts
//! when its minute start lies in `[ceil_minute(from), ceil_minute(to))`),
//! and `minute`, `hour` and `day` buckets over random ranges (a bucket is
//! returned, whole, when its start lies in `[ceil(from), to)`).
//!
//! Everything runs at default settings, so minute buckets are kept 48 hours
//! and a query reads the range before that horizon only in whole hours and
//! days. The clock therefore never runs more than 46 hours past the first
//! sample (checked in every case): every range stays exact to the minute.

mod common;

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS, format_ts};
use scopemon::{
    Kind, ManualClock, Monitor, Outcome, Point, QuerySpec, Resolution, Sample, Tags, Window,
};

const NS: &str = "acc";
const METRIC: &str = "op.latency";
/// The latency kind's largest value (1 hour in µs).
const MAX_US: u64 = 3_600_000_000;
/// A UTC midnight.
use common::T0;
/// Longest span of sample timestamps.
const MAX_SPAN_MS: i64 = 40 * HOUR_MS;
/// Furthest the clock is set past the last sample.
const MAX_NOW_AFTER_MS: i64 = 3 * HOUR_MS;
/// Furthest the clock moves on at each of the two reopens.
const MAX_ADVANCE_MS: i64 = HOUR_MS;
/// p50, p90, p95, p99, p99.9.
const PER_MILLE: [u64; 5] = [500, 900, 950, 990, 999];
const Q_NAMES: [&str; 5] = ["p50", "p90", "p95", "p99", "p999"];

/// One recorded sample.
#[derive(Clone, Copy)]
struct Obs {
    ts: i64,
    value: u64,
    error: bool,
    /// Which series (tag set) it goes to; 0 in the single-series property.
    series: u8,
}

impl std::fmt::Debug for Obs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "({}, {}{}, s{})",
            format_ts(self.ts),
            self.value,
            if self.error { " err" } else { "" },
            self.series
        )
    }
}

/// One generated test case.
#[derive(Debug, Clone)]
struct Case {
    /// Recorded in order; `..split` before the first close, the rest after.
    samples: Vec<Obs>,
    split: usize,
    /// Clock for the first session (>= every timestamp − 4 minutes).
    now: i64,
    /// How far the clock moves on at each reopen.
    advance: i64,
    /// Span the minutes were drawn from.
    start: i64,
    end: i64,
    /// Random ranges: range sub-query (also used for minute buckets), hour
    /// buckets, day buckets.
    sub: (i64, i64),
    hours: (i64, i64),
    days: (i64, i64),
}

// ---------------------------------------------------------------- strategy

/// (distribution 0..10, uniform u, cluster index, jitter ‰, minute index,
/// ms within the minute, error roll, series label).
type RawSample = (u8, f64, Index, i64, Index, i64, u8, u8);
/// (placement 0..10, index, minute delta).
type MinuteSpec = (u8, Index, i64);
/// (position u, snap 0..4, ms delta).
type EndSpec = (f64, u8, i64);

fn raw_sample(series: u8) -> impl Strategy<Value = RawSample> {
    (
        0u8..10,
        0.0f64..=1.0,
        any::<Index>(),
        -20i64..=20,
        any::<Index>(),
        0..MINUTE_MS,
        any::<u8>(),
        0..series,
    )
}

fn minute_spec() -> impl Strategy<Value = MinuteSpec> {
    (0u8..10, any::<Index>(), -1i64..=1)
}

fn end_spec() -> impl Strategy<Value = EndSpec> {
    (0.0f64..=1.0, 0u8..4, -1i64..=1)
}

/// Log-uniform over 1..=MAX_US.
fn log_uniform(u: f64) -> u64 {
    ((MAX_US as f64).ln() * u)
        .exp()
        .round()
        .clamp(1.0, MAX_US as f64) as u64
}

/// Cases of up to `max_samples` samples over `series` series.
fn case_strategy(max_samples: usize, series: u8) -> impl Strategy<Value = Case> {
    (
        0..DAY_MS,
        (DAY_MS / MINUTE_MS)..=(MAX_SPAN_MS / MINUTE_MS),
        vec(minute_spec(), 1..=60),
        vec(0.0f64..=1.0, 1..=4),
        any::<u8>(),
        vec(raw_sample(series), 1..=max_samples),
        prop_oneof![-4 * MINUTE_MS..=MINUTE_MS, 0..=MAX_NOW_AFTER_MS],
        prop_oneof![Just(0), 0..=MAX_ADVANCE_MS],
        any::<Index>(),
        proptest::array::uniform6(end_spec()),
    )
        .prop_map(
            |(
                start_in_day,
                span_minutes,
                minutes,
                centers,
                error_roll,
                raw,
                now_off,
                advance,
                split,
                ends,
            )| {
                let start = T0 + Resolution::Minute.align(start_in_day);
                let span = span_minutes * MINUTE_MS;
                let end = start + span;
                // Active minutes: mostly uniform, some at an hour or day
                // boundary or one minute either side of it.
                let minutes: Vec<i64> = minutes
                    .iter()
                    .map(|&(kind, idx, d)| {
                        let t = match kind {
                            0..=6 => start + idx.index(span_minutes as usize) as i64 * MINUTE_MS,
                            7 | 8 => {
                                let n = (span / HOUR_MS) as usize;
                                Resolution::Hour.align(start) + (idx.index(n) as i64 + 1) * HOUR_MS
                            }
                            _ => {
                                let n = (span / DAY_MS) as usize;
                                Resolution::Day.align(start) + (idx.index(n) as i64 + 1) * DAY_MS
                            }
                        };
                        (t + d * MINUTE_MS).clamp(start, end - MINUTE_MS)
                    })
                    .collect();
                let centers: Vec<u64> = centers.into_iter().map(log_uniform).collect();
                let samples: Vec<Obs> = raw
                    .iter()
                    .map(|&(dist, u, cluster, jitter, minute, ms, roll, series)| {
                        let value = match dist {
                            // uniform small, across the 256 where bucket width becomes 2
                            0..=2 => (u * 300.0).round() as u64,
                            // wide log-uniform
                            3..=5 => log_uniform(u),
                            // a cluster, ±2 %
                            6 | 7 => {
                                let c = i128::from(centers[cluster.index(centers.len())]);
                                (c + c * i128::from(jitter) / 1000).clamp(0, i128::from(MAX_US))
                                    as u64
                            }
                            // heavy duplicates of a cluster centre
                            _ => centers[cluster.index(centers.len())],
                        };
                        Obs {
                            ts: minutes[minute.index(minutes.len())] + ms,
                            value,
                            error: roll < error_roll,
                            series,
                        }
                    })
                    .collect();
                let max_ts = samples.iter().map(|o| o.ts).max().unwrap_or(start);
                let (lo, hi) = (start - 2 * HOUR_MS, end + 2 * HOUR_MS);
                let at = |(u, snap, delta): EndSpec| {
                    let t = lo + (u * (hi - lo) as f64) as i64;
                    let t = match snap {
                        0 => t,
                        1 => Resolution::Minute.align(t),
                        2 => Resolution::Hour.align(t),
                        _ => Resolution::Day.align(t),
                    };
                    t + delta
                };
                let pair = |a: EndSpec, b: EndSpec| {
                    let (a, b) = (at(a), at(b));
                    let (a, b) = (a.min(b), a.max(b));
                    (a, if a == b { b + 1 } else { b })
                };
                Case {
                    split: 1 + split.index(samples.len()),
                    samples,
                    now: max_ts + now_off,
                    advance,
                    start,
                    end,
                    sub: pair(ends[0], ends[1]),
                    hours: pair(ends[2], ends[3]),
                    days: pair(ends[4], ends[5]),
                }
            },
        )
}

// ------------------------------------------------------------- exact stats

/// Exact statistics of a set of samples.
#[derive(Debug)]
struct Exact {
    count: u64,
    sum: f64,
    min: u64,
    max: u64,
    errors: u64,
    q: [u64; 5],
}

fn exact<'a>(obs: impl IntoIterator<Item = &'a Obs>) -> Option<Exact> {
    let mut values = Vec::new();
    let mut errors = 0;
    let mut sum: u128 = 0;
    for o in obs {
        values.push(o.value);
        errors += u64::from(o.error);
        sum += u128::from(o.value);
    }
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len() as u64;
    // Nearest rank, in integers: rank = ceil(n · q), at least 1.
    let q = PER_MILLE.map(|pm| values[((n * pm).div_ceil(1000).max(1) - 1) as usize]);
    Some(Exact {
        count: n,
        sum: sum as f64,
        min: values[0],
        max: values[values.len() - 1],
        errors,
        q,
    })
}

fn ceil_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w + if t.rem_euclid(w) == 0 { 0 } else { w }
}

fn check_point(p: &Point, e: &Exact, ctx: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.count, e.count, "{}: count", ctx);
    prop_assert_eq!(p.errors, e.errors, "{}: errors", ctx);
    prop_assert_eq!(p.min, e.min as f64, "{}: min", ctx);
    prop_assert_eq!(p.max, e.max as f64, "{}: max", ctx);
    prop_assert!(
        (p.sum - e.sum).abs() <= 1e-12 * e.sum.max(1.0),
        "{}: sum {} vs exact {}",
        ctx,
        p.sum,
        e.sum
    );
    let got = [p.p50, p.p90, p.p95, p.p99, p.p999];
    for i in 0..5 {
        let want = e.q[i] as f64;
        prop_assert!(
            (got[i] - want).abs() <= 0.01 * want,
            "{}: {} = {} but the exact nearest-rank value is {} ({:.3} % off; n = {})",
            ctx,
            Q_NAMES[i],
            got[i],
            want,
            (got[i] - want).abs() / want.max(f64::MIN_POSITIVE) * 100.0,
            e.count
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ engine

use common::open;

/// Tag sets of the series a sample's label selects.
const SERIES_TAGS: [&[(&str, &str)]; 3] = [
    &[("shard", "a")],
    &[("shard", "b")],
    &[("shard", "a"), ("zone", "x")],
];

/// A tag filter and which series labels it selects.
type TagFilter = (Tags, fn(u8) -> bool);

fn sample(o: &Obs, tags: &'static [(&'static str, &'static str)]) -> Sample<'static> {
    Sample {
        namespace: NS,
        metric: METRIC,
        kind: Kind::Latency,
        value: o.value as f64,
        tags,
        outcome: if o.error { Outcome::Error } else { Outcome::Ok },
        timestamp_ms: Some(o.ts),
    }
}

/// Records one by one (`single`) or as one batch.
fn record(
    m: &Monitor,
    obs: &[Obs],
    tags: impl Fn(&Obs) -> &'static [(&'static str, &'static str)],
    single: bool,
) {
    if single {
        for o in obs {
            m.record(&sample(o, tags(o))).expect("record");
        }
    } else {
        let (accepted, rejected) = m.record_batch(obs.iter().map(|o| sample(o, tags(o))));
        assert!(rejected.is_empty(), "rejected: {rejected:?}");
        assert_eq!(accepted, obs.len());
    }
}

/// Every sample must be inside the exact-to-the-minute part of a range
/// (see the module comment): its hour starts after the minute horizon.
fn check_retention(m: &Monitor, case: &Case) -> Result<(), TestCaseError> {
    let minute_ms = m.retention(NS).minute_ms;
    prop_assert!(
        m.now_ms() + HOUR_MS <= case.start + minute_ms,
        "the test's clock ({}) leaves minute retention ({} ms) for {}",
        format_ts(m.now_ms()),
        minute_ms,
        format_ts(case.start)
    );
    Ok(())
}

fn query(
    m: &Monitor,
    window: Window,
    (from, to): (i64, i64),
    tags: &Tags,
) -> Result<Vec<Point>, TestCaseError> {
    m.query(&QuerySpec {
        namespace: NS.into(),
        metric: METRIC.into(),
        kind: Kind::Latency,
        window,
        from,
        to,
        tags: tags.clone(),
    })
    .map(|r| r.points)
    .map_err(|e| {
        TestCaseError::fail(format!(
            "query {window:?} [{}, {}) failed: {e}",
            format_ts(from),
            format_ts(to)
        ))
    })
}

fn range_label((from, to): (i64, i64)) -> String {
    format!("[{}, {})", format_ts(from), format_ts(to))
}

/// `window=range` over `r` against the samples whose minute start lies in
/// [ceil_minute(from), ceil_minute(to)).
fn check_range(
    m: &Monitor,
    obs: &[Obs],
    tags: &Tags,
    r: (i64, i64),
    stage: &str,
) -> Result<(), TestCaseError> {
    let (lo, hi) = (ceil_to(r.0, MINUTE_MS), ceil_to(r.1, MINUTE_MS));
    let want = exact(obs.iter().filter(|o| {
        let minute = Resolution::Minute.align(o.ts);
        minute >= lo && minute < hi
    }));
    let points = query(m, Window::Range, r, tags)?;
    let ctx = format!("{stage}: range {}", range_label(r));
    match want {
        None => prop_assert!(
            points.is_empty(),
            "{}: expected no point, got {:?}",
            ctx,
            points
        ),
        Some(e) => {
            prop_assert_eq!(points.len(), 1, "{}: one point expected", ctx);
            check_point(&points[0], &e, &ctx)?;
        }
    }
    Ok(())
}

/// Bucketed query over `r` against the exact per-bucket statistics: every
/// bucket with start in [ceil(from), to), whole.
fn check_buckets(
    m: &Monitor,
    obs: &[Obs],
    tags: &Tags,
    res: Resolution,
    r: (i64, i64),
    stage: &str,
) -> Result<(), TestCaseError> {
    let w = res.width_ms();
    let first = ceil_to(r.0, w);
    let mut want: BTreeMap<i64, Vec<Obs>> = BTreeMap::new();
    for o in obs {
        let b = res.align(o.ts);
        if b >= first && b < r.1 {
            want.entry(b).or_default().push(*o);
        }
    }
    let points = query(m, Window::Buckets(res), r, tags)?;
    let ctx = format!("{stage}: {} buckets {}", res.as_str(), range_label(r));
    let got: Vec<&str> = points.iter().map(|p| p.start.as_str()).collect();
    let expected: Vec<String> = want.keys().map(|&b| format_ts(b)).collect();
    prop_assert_eq!(got, expected, "{}: bucket starts", ctx);
    for (p, (b, o)) in points.iter().zip(&want) {
        let e = exact(o).expect("non-empty bucket");
        check_point(p, &e, &format!("{ctx}: bucket {}", format_ts(*b)))?;
    }
    Ok(())
}

/// The queries of a case against `obs` (already restricted to `tags`):
/// whole span and random sub-range, random hour and day buckets; with
/// `full` also unaligned whole span, minute buckets over the sub-range and
/// hour and day buckets over the whole span.
fn check_all(
    m: &Monitor,
    case: &Case,
    obs: &[Obs],
    tags: &Tags,
    full: bool,
    stage: &str,
) -> Result<(), TestCaseError> {
    check_retention(m, case)?;
    let whole_days = (
        Resolution::Day.align(case.start) - DAY_MS,
        Resolution::Day.align(case.end) + 2 * DAY_MS,
    );
    check_range(m, obs, tags, whole_days, stage)?;
    check_range(m, obs, tags, case.sub, stage)?;
    check_buckets(m, obs, tags, Resolution::Hour, case.hours, stage)?;
    check_buckets(m, obs, tags, Resolution::Day, case.days, stage)?;
    if full {
        check_range(m, obs, tags, (case.start - 1, case.end + 1), stage)?;
        check_buckets(m, obs, tags, Resolution::Minute, case.sub, stage)?;
        check_buckets(m, obs, tags, Resolution::Hour, whole_days, stage)?;
        check_buckets(m, obs, tags, Resolution::Day, whole_days, stage)?;
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// One series: hot → deltas → records → reopen → late samples into
    /// rolled-up minutes (hot over records) → flush + rollup → reopen.
    #[test]
    fn quantiles_stay_within_one_percent_at_every_stage(case in case_strategy(3_000, 1)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(case.now);
        let tags = Tags::empty();
        let one: &'static [(&'static str, &'static str)] = &[];
        let (a, b) = case.samples.split_at(case.split);

        let m = open(dir.path(), &clock);
        record(&m, a, |_| one, true);
        check_all(&m, &case, a, &tags, true, "1 hot")?;
        m.flush().expect("flush");
        check_all(&m, &case, a, &tags, true, "2 deltas")?;
        m.rollup().expect("rollup");
        check_all(&m, &case, a, &tags, true, "3 rolled up")?;
        m.close().expect("close");
        drop(m);

        clock.advance_ms(case.advance);
        let m = open(dir.path(), &clock);
        check_all(&m, &case, a, &tags, true, "4 reopened")?;
        record(&m, b, |_| one, false);
        let all = &case.samples[..];
        check_all(&m, &case, all, &tags, true, "5 late samples hot over records")?;
        m.flush().expect("flush");
        check_all(&m, &case, all, &tags, true, "6 late deltas over records")?;
        m.rollup().expect("rollup");
        check_all(&m, &case, all, &tags, true, "7 late samples rolled up")?;
        m.close().expect("close");
        drop(m);

        clock.advance_ms(case.advance);
        let m = open(dir.path(), &clock);
        check_all(&m, &case, all, &tags, true, "8 reopened again")?;
        m.close().expect("close");
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Three series of one metric (`shard=a`, `shard=b`, `shard=a,zone=x`):
    /// a query without tags merges them all, a tag filter merges the series
    /// that carry it; both match an exact sort of the union.
    #[test]
    fn merged_series_quantiles_match_the_union(case in case_strategy(1_500, 3)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(case.now);
        let tags_of = |o: &Obs| SERIES_TAGS[usize::from(o.series)];
        let filters: [TagFilter; 3] = [
            (Tags::empty(), |_| true),
            (Tags::new(&[("shard", "a")]).expect("tags"), |s| s != 1),
            (Tags::new(&[("zone", "x")]).expect("tags"), |s| s == 2),
        ];
        let check = |m: &Monitor, obs: &[Obs], stage: &str| -> Result<(), TestCaseError> {
            for (tags, keep) in &filters {
                let sel: Vec<Obs> = obs.iter().copied().filter(|o| keep(o.series)).collect();
                if sel.is_empty() {
                    continue; // no such series yet: the query is not_found
                }
                let stage = format!("{stage} tags {:?}", tags.pairs());
                check_all(m, &case, &sel, tags, tags.pairs().is_empty(), &stage)?;
            }
            Ok(())
        };
        let (a, b) = case.samples.split_at(case.split);
        let all = &case.samples[..];

        let m = open(dir.path(), &clock);
        record(&m, a, tags_of, false);
        m.flush().expect("flush");
        m.rollup().expect("rollup");
        record(&m, b, tags_of, true);
        check(&m, all, "1 records + hot")?;
        m.flush().expect("flush");
        check(&m, all, "2 records + deltas")?;
        m.close().expect("close");
        drop(m);

        clock.advance_ms(case.advance);
        let m = open(dir.path(), &clock);
        check(&m, all, "3 reopened")?;
        m.close().expect("close");
    }
}
