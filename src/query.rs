//! The query planner: picks the coarsest stored records that answer a range
//! exactly, and merges them with unrolled deltas and hot buckets.
//!
//! Every answer is `records ⊕ deltas ⊕ hot` over the series selected (see
//! `store` for why those three never overlap). A snapshot is taken by
//! opening a redb read transaction and reading the hot buckets while holding
//! the commit gate's read side; the stored part is then read without it.
//!
//! `window=range` is exact to the minute: a range is cut into leading
//! minutes, hours, whole days, hours and trailing minutes. A partial hour
//! (or partial day) is answered from its coarse record when that record's
//! covered span (first..last minute with data) lies inside the piece, and
//! from the finer records otherwise — so "the last 24 hours" usually costs
//! about 25 record reads, not 1,440.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::ReadTransaction;

use crate::store::Read;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hot::{CommitGate, Registry, Series};
use crate::model::{DAY_MS, HOUR_MS, Kind, MINUTE_MS, Resolution, Tags, format_ts};
use crate::stats::{Point, Precision, Stats};
use crate::store::Store;
use crate::store::codec::Codec;
use crate::store::group;
use crate::store::tables::{self, DELTAS};

/// Most points one query may return (as Prometheus' 11,000).
pub const MAX_POINTS: i64 = 11_000;

/// Bucketed or whole-range answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// One point per bucket of this resolution.
    Buckets(Resolution),
    /// One point aggregating the whole range.
    Range,
}

impl Window {
    /// Name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Buckets(r) => r.as_str(),
            Window::Range => "range",
        }
    }

    /// Default span when `from` is not given (SPEC).
    pub fn default_span_ms(self) -> i64 {
        match self {
            Window::Buckets(Resolution::Minute) => HOUR_MS,
            Window::Buckets(Resolution::Hour) => DAY_MS,
            Window::Buckets(Resolution::Day) => 30 * DAY_MS,
            Window::Range => DAY_MS,
        }
    }
}

impl std::str::FromStr for Window {
    type Err = Error;
    fn from_str(s: &str) -> Result<Window> {
        if s == "range" {
            Ok(Window::Range)
        } else {
            s.parse().map(Window::Buckets).map_err(|_| {
                Error::InvalidParameter(format!(
                    "unknown window {s:?}; expected minute, hour, day or range"
                ))
            })
        }
    }
}

/// A query for one metric.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    /// Namespace.
    pub namespace: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Window.
    pub window: Window,
    /// Range start (Unix ms, inclusive).
    pub from: i64,
    /// Range end (Unix ms, exclusive).
    pub to: i64,
    /// Only series whose tags include these (all series merged when empty).
    pub tags: Tags,
}

/// The answer to a [`QuerySpec`].
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// Namespace.
    pub namespace: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Window name.
    pub window: &'static str,
    /// Points, oldest first; empty buckets left out.
    pub points: Vec<Point>,
}

/// Where retention ends, as queries need it: the start of the oldest
/// bucket of `res` in namespace `ns` that is not expired at `now_ms`. The
/// retention room implements it; the query only reads through it, so the
/// trunk never imports a side room.
pub trait Horizons: Send + Sync {
    /// Start of the oldest unexpired bucket.
    fn horizon(&self, ns: &str, res: Resolution, now_ms: i64) -> i64;
}

/// What a query needs from the engine.
pub struct Source<'a> {
    /// Series registry.
    pub registry: &'a Registry,
    /// Store.
    pub store: &'a Store,
    /// Commit gate (see `store::flush`).
    pub gate: &'a CommitGate,
    /// Retention horizons: expired buckets are never read.
    pub horizons: &'a dyn Horizons,
    /// The time queries are answered at.
    pub now_ms: i64,
}

fn ceil_to(t: i64, width: i64) -> i64 {
    let a = t.div_euclid(width) * width;
    if a == t { t } else { a + width }
}

fn check_range(from: i64, to: i64) -> Result<()> {
    if from >= to {
        return Err(Error::InvalidRange(format!(
            "from ({}) must be before to ({})",
            format_ts(from),
            format_ts(to)
        )));
    }
    Ok(())
}

/// Snapshot: opens a read transaction and, under the commit gate (see the
/// module doc), hands every hot stats of the selected series with minute in
/// [lo, hi) to `visit(series index, series, minute, stats)`.
fn snapshot<'a>(
    src: &Source<'a>,
    series: &[Arc<Series>],
    lo: i64,
    hi: i64,
    mut visit: impl FnMut(usize, &Series, i64, &Stats) -> Result<()>,
) -> Result<Read<'a>> {
    let gate = src.gate.read();
    let rtx = src.store.begin_read()?;
    for (i, s) in series.iter().enumerate() {
        s.visit_hot(lo, hi, &gate, |minute, st| visit(i, s, minute, st))?;
    }
    Ok(rtx)
}

/// Accumulators keyed by (group, bucket start).
struct Accumulators {
    map: BTreeMap<(usize, i64), Stats>,
    precision: Precision,
}

impl Accumulators {
    fn new(precision: Precision) -> Self {
        Accumulators {
            map: BTreeMap::new(),
            precision,
        }
    }

    fn get(&mut self, slot: (usize, i64), kind: Kind) -> &mut Stats {
        let p = self.precision;
        self.map.entry(slot).or_insert_with(|| Stats::new(kind, p))
    }
}

/// Adds every unrolled delta of series `sid` with minute in [lo, hi) into
/// the accumulator `slot(minute)` picks.
#[allow(clippy::too_many_arguments)]
fn add_deltas(
    rtx: &ReadTransaction,
    codec: &mut Codec,
    sid: u64,
    lo: i64,
    hi: i64,
    kind: Kind,
    acc: &mut Accumulators,
    slot: impl Fn(i64) -> (usize, i64),
) -> Result<()> {
    let table = rtx.open_table(DELTAS)?;
    for entry in table.range((sid, lo, 0)..(sid, hi, 0))? {
        let (k, v) = entry?;
        codec.decode_into(v.value(), acc.get(slot(k.value().1), kind))?;
    }
    Ok(())
}

/// Bucketed query: one point per bucket of `res` with start in [from, to).
pub fn query(src: &Source<'_>, spec: &QuerySpec) -> Result<QueryResult> {
    check_range(spec.from, spec.to)?;
    let series = src
        .registry
        .select(&spec.namespace, &spec.metric, spec.kind, &spec.tags);
    if series.is_empty() {
        return Err(Error::NotFound(format!(
            "no {} series {:?} in namespace {:?}{}",
            spec.kind,
            spec.metric,
            spec.namespace,
            if spec.tags.pairs().is_empty() {
                ""
            } else {
                " with those tags"
            }
        )));
    }
    let points = match spec.window {
        Window::Range => {
            let mut point = None;
            range_stats(src, &series, spec.from, spec.to, false, |_, st| {
                point = st.point(spec.kind, spec.from, spec.to - spec.from);
                Ok(())
            })?;
            point
                .map(|mut p| {
                    p.end = Some(format_ts(spec.to));
                    p
                })
                .into_iter()
                .collect()
        }
        Window::Buckets(res) => bucket_points(src, &series, res, spec.kind, spec.from, spec.to)?,
    };
    Ok(QueryResult {
        namespace: spec.namespace.clone(),
        metric: spec.metric.clone(),
        kind: spec.kind,
        window: spec.window.as_str(),
        points,
    })
}

fn bucket_points(
    src: &Source<'_>,
    series: &[Arc<Series>],
    res: Resolution,
    kind: Kind,
    from: i64,
    to: i64,
) -> Result<Vec<Point>> {
    let w = res.width_ms();
    // Expired buckets are never read, deleted yet or not.
    let horizon = series
        .first()
        .map(|s| src.horizons.horizon(&s.key().namespace, res, src.now_ms))
        .unwrap_or(i64::MIN);
    let first = ceil_to(from, w).max(horizon);
    if first >= to {
        return Ok(Vec::new());
    }
    let n = (to - first + w - 1) / w;
    if n > MAX_POINTS {
        return Err(Error::InvalidRange(format!(
            "{n} {} buckets asked for; at most {MAX_POINTS} per query: narrow the range or use a coarser window",
            res.as_str()
        )));
    }
    // Minutes feeding buckets [first, last bucket end).
    let hi = first + n * w;
    let mut acc = Accumulators::new(src.registry.precision());
    let rtx = snapshot(src, series, first, hi, |_, s, m, st| {
        acc.get((0, res.align(m)), s.key().kind).merge(st)
    })?;
    let mut codec = Codec::new();
    let table = rtx.open_table(tables::buckets(res))?;
    let groups = match res {
        Resolution::Minute => Some(rtx.open_table(tables::MINUTE_GROUPS)?),
        _ => None,
    };
    for s in series {
        let sid = s.id();
        add_deltas(&rtx, &mut codec, sid, first, hi, kind, &mut acc, |m| {
            (0, res.align(m))
        })?;
        if let Some(groups) = &groups {
            group::for_each_minute(&table, groups, sid, first, to, |m, rec| {
                codec.decode_into(rec, acc.get((0, m), kind)).map(|_| ())
            })?;
            continue;
        }
        for entry in table.range((sid, first)..(sid, to))? {
            let (k, v) = entry?;
            codec.decode_into(v.value(), acc.get((0, k.value().1), kind))?;
        }
    }
    Ok(acc
        .map
        .iter()
        .filter_map(|((_, start), st)| st.point(kind, *start, w))
        .collect())
}

/// One aggregate over [from, to) (exact to the minute), merged across all
/// `series` (`per_series = false`: `emit(0, stats)` once) or one per series
/// (`emit(i, stats)` for each). A per-series pass reuses one accumulator,
/// so it never holds a 26 KiB histogram per series.
pub fn range_stats(
    src: &Source<'_>,
    series: &[Arc<Series>],
    from: i64,
    to: i64,
    per_series: bool,
    mut emit: impl FnMut(usize, &Stats) -> Result<()>,
) -> Result<()> {
    check_range(from, to)?;
    if series.is_empty() {
        return Ok(());
    }
    let lo = ceil_to(from, MINUTE_MS);
    let hi = ceil_to(to, MINUTE_MS);
    let precision = src.registry.precision();
    let group = |i: usize| if per_series { i } else { 0 };
    // Only groups with hot data in range get a histogram here.
    let mut hot: Vec<Option<Stats>> = (0..if per_series { series.len() } else { 1 })
        .map(|_| None)
        .collect();
    let rtx = snapshot(src, series, lo, hi, |i, s, _, st| {
        hot[group(i)]
            .get_or_insert_with(|| Stats::new(s.key().kind, precision))
            .merge(st)
    })?;
    let mut codec = Codec::new();
    // Stored counts are staged in index space and recorded once per
    // accumulator (Codec::stage_into) when each accumulator takes many
    // records; a short per-series window (alert evaluation) reads a couple
    // of small records per series, where recording directly is cheaper.
    let stage = !per_series || hi - lo > 2 * HOUR_MS;
    let reader = RecordReader::new(&rtx, stage)?;
    let deltas = rtx.open_table(DELTAS)?;
    let mut parts_of: Option<(String, RangeParts)> = None;
    let mut spare: Option<(Kind, Stats)> = None;
    let mut cur: Option<Stats> = None;
    for (i, s) in series.iter().enumerate() {
        let kind = s.key().kind;
        let ns = &s.key().namespace;
        let parts = match &parts_of {
            Some((n, p)) if n == ns => *p,
            _ => {
                let p = RangeParts::new(src, ns, lo, hi);
                parts_of = Some((ns.clone(), p));
                p
            }
        };
        let a = cur.get_or_insert_with(|| match hot[group(i)].take() {
            Some(h) => h,
            None => match spare.take() {
                Some((k, mut sp)) if k == kind => {
                    sp.reset();
                    sp
                }
                _ => Stats::new(kind, precision),
            },
        });
        let sid = s.id();
        for entry in deltas.range((sid, lo, 0)..(sid, hi, 0))? {
            let (_, v) = entry?;
            reader.merge(&mut codec, v.value(), a)?;
        }
        reader.add_parts(&mut codec, sid, &parts, a)?;
        // The accumulator is complete after every series when per series,
        // after the last one otherwise: settle staged counts, hand it out,
        // keep its allocation for the next series.
        if per_series || i + 1 == series.len() {
            codec.settle(a)?;
            emit(group(i), a)?;
            spare = cur.take().map(|st| (kind, st));
        }
    }
    Ok(())
}

/// How a minute-aligned range [lo, hi) is read, given retention: the part
/// whose minutes are all retained exactly to the minute; before it, whole
/// hours (start in range) while hours are retained; before that whole days.
/// Every part starts at or after its resolution's horizon, so expired
/// buckets are never read.
#[derive(Debug, Clone, Copy)]
struct RangeParts {
    days: (i64, i64),
    hours: (i64, i64),
    exact: (i64, i64),
}

impl RangeParts {
    fn new(src: &Source<'_>, ns: &str, lo: i64, hi: i64) -> RangeParts {
        let h = |r| src.horizons.horizon(ns, r, src.now_ms);
        // Hours from P on have every minute retained; days from Q on every hour.
        let p = ceil_to(h(Resolution::Minute), HOUR_MS);
        let q = ceil_to(h(Resolution::Hour), DAY_MS);
        let exact = (lo.max(p), hi);
        let hours = (ceil_to(lo, HOUR_MS).max(q), p.min(hi));
        let days = (ceil_to(lo, DAY_MS).max(h(Resolution::Day)), q.min(hi));
        RangeParts { days, hours, exact }
    }
}

/// Reads stored records covering minute-aligned ranges (staging their
/// counts in the codec: the caller settles).
struct RecordReader {
    tables: [redb::ReadOnlyTable<(u64, i64), &'static [u8]>; 3],
    /// Sealed hours' minute records (`store/group.rs`).
    groups: redb::ReadOnlyTable<(u64, i64), &'static [u8]>,
    stage: bool,
}

impl RecordReader {
    fn new(rtx: &ReadTransaction, stage: bool) -> Result<Self> {
        Ok(RecordReader {
            stage,
            tables: [
                rtx.open_table(tables::MINUTE)?,
                rtx.open_table(tables::HOUR)?,
                rtx.open_table(tables::DAY)?,
            ],
            groups: rtx.open_table(tables::MINUTE_GROUPS)?,
        })
    }

    /// Merges one record, staged or directly.
    fn merge(&self, codec: &mut Codec, bytes: &[u8], into: &mut Stats) -> Result<()> {
        if self.stage {
            codec.stage_into(bytes, into)?;
        } else {
            codec.decode_into(bytes, into)?;
        }
        Ok(())
    }

    fn table(&self, res: Resolution) -> &redb::ReadOnlyTable<(u64, i64), &'static [u8]> {
        match res {
            Resolution::Minute => &self.tables[0],
            Resolution::Hour => &self.tables[1],
            Resolution::Day => &self.tables[2],
        }
    }

    /// Adds the stored records of series `sid` over `parts`: whole days,
    /// whole hours, then the part exact to the minute.
    fn add_parts(
        &self,
        codec: &mut Codec,
        sid: u64,
        parts: &RangeParts,
        into: &mut Stats,
    ) -> Result<()> {
        let (days, hours, exact) = (parts.days, parts.hours, parts.exact);
        if days.0 < days.1 {
            self.scan(codec, Resolution::Day, sid, days.0, days.1, into)?;
        }
        if hours.0 < hours.1 {
            self.scan(codec, Resolution::Hour, sid, hours.0, hours.1, into)?;
        }
        if exact.0 < exact.1 {
            self.cover(codec, sid, exact.0, exact.1, into)?;
        }
        Ok(())
    }

    /// Adds every record of `res` with start in [a, b).
    fn scan(
        &self,
        codec: &mut Codec,
        res: Resolution,
        sid: u64,
        a: i64,
        b: i64,
        into: &mut Stats,
    ) -> Result<()> {
        if res == Resolution::Minute {
            let table = self.table(res);
            return group::for_each_minute(table, &self.groups, sid, a, b, |_, rec| {
                self.merge(codec, rec, into)
            });
        }
        for entry in self.table(res).range((sid, a)..(sid, b))? {
            let (_, v) = entry?;
            self.merge(codec, v.value(), into)?;
        }
        Ok(())
    }

    /// Adds the part of the `parent` bucket starting at `start` that lies in
    /// [a, b): from the parent record when its span fits, else from `child`
    /// records (recursively cut at `child`'s boundaries).
    fn partial(
        &self,
        codec: &mut Codec,
        parent: Resolution,
        sid: u64,
        a: i64,
        b: i64,
        into: &mut Stats,
    ) -> Result<()> {
        // A piece of a few minutes (the trailing window of an alert) is
        // cheaper to read than to probe its parent record first.
        if parent == Resolution::Hour && b - a <= 3 * MINUTE_MS {
            return self.scan(codec, Resolution::Minute, sid, a, b, into);
        }
        let start = parent.align(a);
        let Some(v) = self.table(parent).get((sid, start))? else {
            return Ok(()); // no data at all in this parent bucket
        };
        let (first, last) = codec.span(v.value())?;
        if first >= a && last < b {
            self.merge(codec, v.value(), into)?;
            return Ok(());
        }
        // [a, b) is aligned to the child resolution in both uses.
        let child = match parent {
            Resolution::Day => Resolution::Hour,
            _ => Resolution::Minute,
        };
        self.scan(codec, child, sid, a, b, into)
    }

    /// Adds all records covering the minute-aligned range [a, b).
    fn cover(&self, codec: &mut Codec, sid: u64, a: i64, b: i64, into: &mut Stats) -> Result<()> {
        let mut t = a;
        while t < b {
            if t % DAY_MS == 0 && t + DAY_MS <= b {
                // whole days
                let end = b - (b - t) % DAY_MS;
                self.scan(codec, Resolution::Day, sid, t, end, into)?;
                t = end;
            } else if t % HOUR_MS == 0 && t + HOUR_MS <= b {
                // whole hours up to the next day boundary (or b)
                let day_end = (Resolution::Day.align(t) + DAY_MS).min(b);
                let end = day_end - (day_end - t) % HOUR_MS;
                // A partial day (whole days took the branch above): its day
                // record may answer it in one read.
                if end - t >= 2 * HOUR_MS {
                    self.partial(codec, Resolution::Day, sid, t, end, into)?;
                } else {
                    self.scan(codec, Resolution::Hour, sid, t, end, into)?;
                }
                t = end;
            } else {
                // minutes up to the next hour boundary (or b)
                let end = (Resolution::Hour.align(t) + HOUR_MS).min(b);
                self.partial(codec, Resolution::Hour, sid, t, end, into)?;
                t = end;
            }
        }
        Ok(())
    }
}

/// One summary row.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The aggregates.
    #[serde(flatten)]
    pub point: Point,
}

/// A namespace summary over the last window.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Namespace.
    pub namespace: String,
    /// Window name.
    pub window: &'static str,
    /// Range start.
    pub from: String,
    /// Range end.
    pub to: String,
    /// One row per series with data in the window.
    pub metrics: Vec<SummaryRow>,
}

/// get_performance_summary: one aggregate per series over [now − window, now).
pub fn summary(
    src: &Source<'_>,
    namespace: &str,
    window: Resolution,
    metric: Option<&str>,
    kind: Option<Kind>,
    now_ms: i64,
) -> Result<Summary> {
    let from = now_ms - window.width_ms();
    let series: Vec<Arc<Series>> = src
        .registry
        .in_namespace(Some(namespace))
        .into_iter()
        .filter(|s| {
            metric.is_none_or(|m| s.key().metric == m) && kind.is_none_or(|k| s.key().kind == k)
        })
        .filter(|s| s.last_seen() >= from - MINUTE_MS)
        .collect();
    let mut metrics = Vec::new();
    range_stats(src, &series, from, now_ms, true, |i, st| {
        let s = &series[i];
        if let Some(mut point) = st.point(s.key().kind, from, now_ms - from) {
            point.end = Some(format_ts(now_ms));
            metrics.push(SummaryRow {
                metric: s.key().metric.clone(),
                kind: s.key().kind,
                tags: s.key().tags.to_map(),
                point,
            });
        }
        Ok(())
    })?;
    Ok(Summary {
        namespace: namespace.to_owned(),
        window: window.as_str(),
        from: format_ts(from),
        to: format_ts(now_ms),
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spans_are_the_specs() {
        // SPEC: `from` defaults to one hour of minutes, one day of hours,
        // 30 days of days, and one day for a whole-range point.
        let span = |w: &str| w.parse::<Window>().map(Window::default_span_ms);
        assert_eq!(span("minute").ok(), Some(HOUR_MS));
        assert_eq!(span("hour").ok(), Some(DAY_MS));
        assert_eq!(span("day").ok(), Some(30 * DAY_MS));
        assert_eq!(span("range").ok(), Some(DAY_MS));
    }

    #[test]
    fn ceil_aligns_up() {
        assert_eq!(ceil_to(0, 60), 0);
        assert_eq!(ceil_to(1, 60), 60);
        assert_eq!(ceil_to(-1, 60), 0);
    }

    #[test]
    fn windows_parse() {
        assert_eq!("range".parse::<Window>().unwrap(), Window::Range);
        assert_eq!(
            "hour".parse::<Window>().unwrap(),
            Window::Buckets(Resolution::Hour)
        );
        assert!("week".parse::<Window>().is_err());
    }
}
