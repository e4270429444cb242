//! Baselines from history: for a selection of series, the robust centre
//! (median) and spread (MAD) of its hourly p50, p95, p99, avg, rate and
//! error rate over a trailing window, as `baseline` with a `lower`/`upper`
//! band.
//!
//! - Band: `median ± band × max(1.4826 × MAD, 1 % of |median|)`, lower
//!   clamped at 0. 1.4826 × MAD estimates the standard deviation of normal
//!   data; the 1 % floor (the histograms' own error) keeps a perfectly
//!   steady series from getting a zero-width band.
//! - Seasonal: with at least `seasonal_history` of hourly data, if the hour
//!   of day explains at least `seasonal_strength` of the variance of the
//!   hourly p50 (η² of a one-way grouping by hour of day), the baseline for
//!   "now" is computed from the buckets of the same UTC hour of day only.
//! - Fewer than `min_buckets` complete hourly buckets: `insufficient_data`.
//!
//! Baselines read through `query` and keep their own small table
//! (`baselines`); they never write buckets.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::config::BaselineConfig;
use crate::error::{Error, Result};
use crate::hot::Series;
use crate::model::{DAY_MS, HOUR_MS, Kind, Resolution, Tags, format_duration_ms, format_ts};
use crate::query::{self, QuerySpec, Source, Window};
use crate::stats::{Aggregation, Point};
use crate::store::Store;
use crate::store::codec::{decode_json, encode_json};
use crate::store::tables::BASELINES;

const BASELINE_V1: u8 = 1;

/// One aggregation's expected value and band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Median of the hourly values.
    pub baseline: f64,
    /// Lower bound of the normal band.
    pub lower: f64,
    /// Upper bound of the normal band.
    pub upper: f64,
}

impl Band {
    /// Whether `v` lies inside the band.
    pub fn contains(&self, v: f64) -> bool {
        v >= self.lower && v <= self.upper
    }
}

/// `ok` or `insufficient_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineStatus {
    /// Enough history.
    Ok,
    /// Fewer hourly buckets than `min_buckets`.
    InsufficientData,
}

/// A computed baseline (the `GET /v1/baseline` answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// ok / insufficient_data.
    pub status: BaselineStatus,
    /// The trailing window, e.g. `7d`.
    pub window: String,
    /// Hourly buckets the values came from.
    pub buckets: usize,
    /// When it was computed (RFC 3339).
    pub computed_at: String,
    /// When it was computed (Unix ms).
    #[serde(skip_serializing, default)]
    pub computed_at_ms: i64,
    /// Whether it follows a daily pattern.
    pub seasonal: bool,
    /// For seasonal baselines: the UTC hour of day it describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour_of_day: Option<u32>,
    /// Bands per aggregation (absent when insufficient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<Band>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<Band>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<Band>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<Band>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Band>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<Band>,
}

impl Baseline {
    /// The band of one aggregation; `None` for those baselines do not
    /// describe (see [`Aggregation::WITH_BASELINE`]) or when insufficient.
    pub fn band(&self, aggregation: Aggregation) -> Option<Band> {
        match aggregation {
            Aggregation::P50 => self.p50,
            Aggregation::P95 => self.p95,
            Aggregation::P99 => self.p99,
            Aggregation::Avg => self.avg,
            Aggregation::Rate => self.rate,
            Aggregation::ErrorRate => self.error_rate,
            Aggregation::Min
            | Aggregation::Max
            | Aggregation::P90
            | Aggregation::P999
            | Aggregation::Count => None,
        }
    }
}

/// Median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median and MAD (median absolute deviation) of `values`.
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let mut v = values.to_vec();
    let m = median(&mut v)?;
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    Some((m, median(&mut dev)?))
}

fn band_of(values: &[f64], k: f64) -> Option<Band> {
    let (m, mad) = median_mad(values)?;
    let spread = (1.4826 * mad).max(0.01 * m.abs());
    Some(Band {
        baseline: m,
        lower: (m - k * spread).max(0.0),
        upper: m + k * spread,
    })
}

/// η² of `values` grouped by `groups` (share of variance between groups).
fn eta_squared(values: &[(u32, f64)]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean = values.iter().map(|x| x.1).sum::<f64>() / n;
    let total: f64 = values.iter().map(|x| (x.1 - mean).powi(2)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut groups: HashMap<u32, (f64, f64)> = HashMap::new();
    for (g, v) in values {
        let e = groups.entry(*g).or_default();
        e.0 += v;
        e.1 += 1.0;
    }
    let between: f64 = groups
        .values()
        .map(|(sum, cnt)| cnt * (sum / cnt - mean).powi(2))
        .sum();
    between / total
}

/// What a baseline is about: one metric's series whose tags include `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selection {
    /// Namespace.
    pub namespace: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: Kind,
    /// Tag filter.
    pub tags: Tags,
}

impl Selection {
    /// The selection of exactly one series.
    pub fn of(series: &Series) -> Selection {
        let k = series.key();
        Selection {
            namespace: k.namespace.clone(),
            metric: k.metric.clone(),
            kind: k.kind,
            tags: k.tags.clone(),
        }
    }

    fn cache_key(&self) -> String {
        let tags: Vec<String> = self
            .tags
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.namespace,
            self.kind,
            self.metric,
            tags.join("\u{1e}")
        )
    }
}

/// The hourly buckets of `sel` in `[from, to)` (none when it has no series).
fn hourly_points(src: &Source<'_>, sel: &Selection, from: i64, to: i64) -> Result<Vec<Point>> {
    let spec = QuerySpec {
        namespace: sel.namespace.clone(),
        metric: sel.metric.clone(),
        kind: sel.kind,
        window: Window::Buckets(Resolution::Hour),
        from,
        to,
        tags: sel.tags.clone(),
    };
    match query::query(src, &spec) {
        Ok(r) => Ok(r.points),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Computes baseline for `sel` at `now_ms` from hourly buckets.
pub fn compute(
    src: &Source<'_>,
    cfg: &BaselineConfig,
    sel: &Selection,
    now_ms: i64,
) -> Result<Baseline> {
    let window_ms = i64::try_from(cfg.window.as_millis()).unwrap_or(i64::MAX);
    let seasonal_ms = i64::try_from(cfg.seasonal_history.as_millis()).unwrap_or(i64::MAX);
    // Complete hours only: the open hour is still changing.
    let to = Resolution::Hour.align(now_ms);
    let lookback = window_ms.max(seasonal_ms.saturating_mul(2));
    let points = hourly_points(src, sel, to - lookback, to)?;
    let hours: Vec<(i64, &Point)> = points.iter().map(|p| (p.start_ms, p)).collect();
    let history_ms = hours.first().map(|(t, _)| to - t).unwrap_or(0);
    let hour_of = |t: i64| (t.rem_euclid(DAY_MS) / HOUR_MS) as u32;
    let now_hour = hour_of(now_ms);
    let mut seasonal = false;
    if history_ms >= seasonal_ms {
        let p50s: Vec<(u32, f64)> = hours.iter().map(|(t, p)| (hour_of(*t), p.p50)).collect();
        seasonal = eta_squared(&p50s) >= cfg.seasonal_strength;
    }
    let chosen: Vec<&Point> = if seasonal {
        hours
            .iter()
            .filter(|(t, _)| hour_of(*t) == now_hour)
            .map(|(_, p)| *p)
            .collect()
    } else {
        hours
            .iter()
            .filter(|(t, _)| *t >= to - window_ms)
            .map(|(_, p)| *p)
            .collect()
    };
    let enough = if seasonal {
        // one bucket per day at this hour: ask for a week of them at least
        chosen.len() >= 7
    } else {
        chosen.len() >= cfg.min_buckets
    };
    let band = |agg: Aggregation| -> Option<Band> {
        if !enough {
            return None;
        }
        let v: Vec<f64> = chosen.iter().map(|p| agg.of(p)).collect();
        band_of(&v, cfg.band)
    };
    Ok(Baseline {
        status: if enough {
            BaselineStatus::Ok
        } else {
            BaselineStatus::InsufficientData
        },
        window: format_duration_ms(if seasonal { lookback } else { window_ms }),
        buckets: chosen.len(),
        computed_at: format_ts(now_ms),
        computed_at_ms: now_ms,
        seasonal,
        hour_of_day: seasonal.then_some(now_hour),
        p50: band(Aggregation::P50),
        p95: band(Aggregation::P95),
        p99: band(Aggregation::P99),
        avg: band(Aggregation::Avg),
        rate: band(Aggregation::Rate),
        error_rate: band(Aggregation::ErrorRate),
    })
}

/// The cache of computed baselines, in memory and in the `baselines` table.
#[derive(Debug, Default)]
pub struct BaselineCache {
    map: RwLock<HashMap<String, Arc<Baseline>>>,
}

fn encode(b: &Baseline) -> Result<Vec<u8>> {
    // computed_at_ms is skipped in JSON answers; keep it in the record.
    encode_json("baselines", BASELINE_V1, &(b.computed_at_ms, b))
}

fn decode(bytes: &[u8]) -> Result<Baseline> {
    let (ms, mut b): (i64, Baseline) = decode_json("baselines", BASELINE_V1, bytes)?;
    b.computed_at_ms = ms;
    Ok(b)
}

impl BaselineCache {
    /// Loads the cached baselines from the store.
    pub fn load(db: &impl ReadableDatabase) -> Result<BaselineCache> {
        let txn = db.begin_read()?;
        let table = txn.open_table(BASELINES)?;
        let mut map = HashMap::new();
        for e in table.iter()? {
            let (k, v) = e?;
            map.insert(k.value().to_owned(), Arc::new(decode(v.value())?));
        }
        Ok(BaselineCache {
            map: RwLock::new(map),
        })
    }

    /// The cached baseline of `sel`, if any.
    pub fn get(&self, sel: &Selection) -> Option<Arc<Baseline>> {
        self.map.read().get(&sel.cache_key()).cloned()
    }

    /// Memory cleanup: drops the in-memory copies (the `baselines` table
    /// keeps them; the next recompute fills the cache again); returns the
    /// bytes freed (keys, baselines and the map's slots).
    pub fn clear(&self) -> usize {
        let map = std::mem::take(&mut *self.map.write());
        let slots = map.capacity() * (std::mem::size_of::<(String, Arc<Baseline>)>() + 1);
        let held: usize = map
            .iter()
            .filter(|(_, b)| Arc::strong_count(b) == 1)
            .map(|(k, _)| k.capacity() + std::mem::size_of::<Baseline>())
            .sum();
        slots + held
    }

    /// Stores computed baselines (one write transaction).
    pub fn put_all(&self, store: &Store, items: Vec<(Selection, Baseline)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let txn = store.begin_write()?;
        let mut encoded = Vec::with_capacity(items.len());
        {
            let mut table = txn.open_table(BASELINES)?;
            for (sel, b) in items {
                let key = sel.cache_key();
                table.insert(key.as_str(), encode(&b)?.as_slice())?;
                encoded.push((key, Arc::new(b)));
            }
        }
        txn.commit()?;
        self.map.write().extend(encoded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_by_the_book() {
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), Some((3.0, 1.0)));
        assert_eq!(median_mad(&[1.0, 3.0]), Some((2.0, 1.0)));
        assert_eq!(median_mad(&[]), None);
    }

    #[test]
    fn bands_have_a_floor_and_stay_non_negative() {
        let b = band_of(&[10.0; 30], 3.0).unwrap();
        assert_eq!(b.baseline, 10.0);
        assert!((b.upper - 10.3).abs() < 1e-9);
        let b = band_of(&[0.0, 0.0, 5.0], 3.0).unwrap();
        assert_eq!(b.lower, 0.0);
    }

    #[test]
    fn hour_of_day_grouping_detects_a_daily_pattern() {
        let daily: Vec<(u32, f64)> = (0..24 * 14)
            .map(|h| {
                (
                    (h % 24) as u32,
                    100.0 + 50.0 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin(),
                )
            })
            .collect();
        assert!(eta_squared(&daily) > 0.99);
        let flat: Vec<(u32, f64)> = (0..24 * 14)
            .map(|h| ((h % 24) as u32, ((h * 7919) % 13) as f64))
            .collect();
        assert!(eta_squared(&flat) < 0.5);
    }

    #[test]
    fn records_round_trip() {
        let b = Baseline {
            status: BaselineStatus::Ok,
            window: "7d".into(),
            buckets: 168,
            computed_at: "x".into(),
            computed_at_ms: 42,
            seasonal: false,
            hour_of_day: None,
            p50: Some(Band {
                baseline: 1.0,
                lower: 0.5,
                upper: 1.5,
            }),
            p95: None,
            p99: None,
            avg: None,
            rate: None,
            error_rate: None,
        };
        assert_eq!(decode(&encode(&b).unwrap()).unwrap(), b);
    }
}
