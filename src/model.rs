//! The data model: names, kinds, tags, series keys, resolutions and their
//! validation. Pure types, no I/O; every other module speaks these.
//!
//! Values are recorded into HdrHistograms as scaled integers. Each [`Kind`]
//! fixes its unit scale and trackable maximum (see [`Kind::scale`] and
//! [`Kind::max_value`]), so a histogram of one kind always merges losslessly
//! with another of the same kind and precision.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// What a series measures; fixes its unit and histogram range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Microseconds, 0 ..= 1 hour.
    Latency,
    /// Operations per second, 0 ..= 10⁹, resolution 0.01.
    Throughput,
    /// Percent, 0 ..= 100, resolution 0.001.
    ErrorRate,
    /// A gauge (bytes, percent, count), 0 ..= 10¹³, resolution 0.01.
    ResourceUsage,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 4] = [
        Kind::Latency,
        Kind::Throughput,
        Kind::ErrorRate,
        Kind::ResourceUsage,
    ];

    /// The name used in JSON, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Throughput => "throughput",
            Kind::ErrorRate => "error_rate",
            Kind::ResourceUsage => "resource_usage",
        }
    }

    /// Stable one-byte code used in keys and records.
    pub fn code(self) -> u8 {
        match self {
            Kind::Latency => 0,
            Kind::Throughput => 1,
            Kind::ErrorRate => 2,
            Kind::ResourceUsage => 3,
        }
    }

    /// Inverse of [`Kind::code`].
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(code)).copied()
    }

    /// Histogram units per user unit (a recorded value is `round(v * scale)`).
    pub fn scale(self) -> f64 {
        match self {
            Kind::Latency => 1.0,
            Kind::Throughput => 100.0,
            Kind::ErrorRate => 1_000.0,
            Kind::ResourceUsage => 100.0,
        }
    }

    /// Largest accepted value, in user units.
    pub fn max_value(self) -> f64 {
        match self {
            Kind::Latency => 3_600_000_000.0,
            Kind::Throughput => 1e9,
            Kind::ErrorRate => 100.0,
            Kind::ResourceUsage => 1e13,
        }
    }

    /// Largest histogram value (scaled) the kind's histograms track.
    #[inline]
    pub fn max_scaled(self) -> u64 {
        match self {
            Kind::Latency => 3_600_000_000,
            Kind::Throughput => 100_000_000_000,
            Kind::ErrorRate => 100_000,
            Kind::ResourceUsage => 1_000_000_000_000_000,
        }
    }

    /// Checks a user value and converts it to histogram units.
    pub fn scale_value(self, value: f64) -> Result<u64> {
        if !value.is_finite() {
            return Err(Error::InvalidValue(format!(
                "value {value} is not a finite number"
            )));
        }
        if value < 0.0 {
            return Err(Error::InvalidValue(format!(
                "value {value} is negative; {} values are >= 0",
                self.as_str()
            )));
        }
        if value > self.max_value() {
            return Err(Error::ValueOutOfRange(format!(
                "value {value} exceeds the {} maximum {}",
                self.as_str(),
                self.max_value()
            )));
        }
        Ok((value * self.scale()).round() as u64)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidKind(format!(
                    "unknown kind {s:?}; expected latency, throughput, error_rate or resource_usage"
                ))
            })
    }
}

/// Whether an operation succeeded; buckets count errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation succeeded (the default).
    #[default]
    Ok,
    /// The operation failed.
    Error,
}

impl Outcome {
    /// True for [`Outcome::Error`].
    pub fn is_error(self) -> bool {
        matches!(self, Outcome::Error)
    }
}

/// Bucket widths, aligned to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Resolution {
    /// All resolutions, finest first.
    pub const ALL: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    /// Width of one bucket in milliseconds.
    pub fn width_ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
            Resolution::Day => DAY_MS,
        }
    }

    /// Start of the bucket holding `t_ms`.
    pub fn align(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.width_ms()) * self.width_ms()
    }

    /// Name used in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }
}

impl FromStr for Resolution {
    type Err = Error;
    fn from_str(s: &str) -> Result<Resolution> {
        match s {
            "minute" => Ok(Resolution::Minute),
            "hour" => Ok(Resolution::Hour),
            "day" => Ok(Resolution::Day),
            _ => Err(Error::InvalidParameter(format!(
                "unknown window {s:?}; expected minute, hour or day"
            ))),
        }
    }
}

/// Most tags one series may carry.
pub const MAX_TAGS: usize = 32;

fn check_name(what: &str, s: &str, max: usize, extra: &[u8]) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' || extra.contains(&b)
        });
    if ok {
        Ok(())
    } else {
        let extra: String = extra.iter().map(|&b| b as char).collect();
        Err(Error::InvalidName(format!(
            "{what} {s:?} must be 1..={max} characters of A-Z a-z 0-9 _ . -{extra}"
        )))
    }
}

/// Checks a namespace against `[A-Za-z0-9_.:-]{1,128}`.
pub fn validate_namespace(ns: &str) -> Result<()> {
    check_name("namespace", ns, 128, b":")
}

/// Checks a metric name against `[A-Za-z0-9_.-]{1,256}`.
pub fn validate_metric(metric: &str) -> Result<()> {
    check_name("metric", metric, 256, b"")
}

/// Checks one tag: key `[A-Za-z0-9_.-]{1,128}`, value 1..=256 bytes without
/// control characters.
pub fn validate_tag(key: &str, value: &str) -> Result<()> {
    check_name("tag key", key, 128, b"")?;
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(Error::InvalidName(format!(
            "tag value {value:?} of {key:?} must be 1..=256 bytes without control characters"
        )));
    }
    Ok(())
}

/// A series' tags: sorted by key, keys unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// No tags.
    pub fn empty() -> Tags {
        Tags(Vec::new())
    }

    /// Builds validated, sorted tags; a repeated key is an error.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Result<Tags> {
        if pairs.len() > MAX_TAGS {
            return Err(Error::InvalidName(format!(
                "{} tags given; a series carries at most {MAX_TAGS}",
                pairs.len()
            )));
        }
        let mut v: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, val) in pairs {
            validate_tag(k.as_ref(), val.as_ref())?;
            v.push((k.as_ref().to_owned(), val.as_ref().to_owned()));
        }
        v.sort();
        if v.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidName("a tag key is given twice".into()));
        }
        Ok(Tags(v))
    }

    /// The (key, value) pairs, sorted by key.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// True when every tag in `filter` is present here with the same value.
    pub fn includes(&self, filter: &Tags) -> bool {
        filter
            .0
            .iter()
            .all(|(k, v)| self.0.iter().any(|(k2, v2)| k2 == k && v2 == v))
    }

    /// Same set of tags as the unsorted `pairs`?
    pub fn same_as(&self, pairs: &[(&str, &str)]) -> bool {
        self.0.len() == pairs.len()
            && pairs
                .iter()
                .all(|(k, v)| self.0.iter().any(|(k2, v2)| k2 == k && v2 == v))
    }

    /// As a JSON-friendly map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

/// Identity of a series: (namespace, kind, metric, tags).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: Kind,
    /// Metric name.
    pub metric: String,
    /// Tags.
    pub tags: Tags,
}

impl SeriesKey {
    /// Builds and validates a key.
    pub fn new(namespace: &str, kind: Kind, metric: &str, tags: Tags) -> Result<SeriesKey> {
        validate_namespace(namespace)?;
        validate_metric(metric)?;
        Ok(SeriesKey {
            namespace: namespace.to_owned(),
            kind,
            metric: metric.to_owned(),
            tags,
        })
    }
}

/// Formats a duration the SPEC way: `<integer><unit>` with the largest of
/// `d`, `h`, `m`, `s` that divides it exactly (`6h`, `2d`, `90s`).
pub fn format_duration_ms(ms: i64) -> String {
    let secs = ms / 1000;
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs != 0 && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// Earliest time a query accepts: `0000-01-01T00:00:00Z`, the first instant
/// RFC 3339 can write.
pub const MIN_QUERY_TIME_MS: i64 = -62_167_219_200_000;
/// Latest time a query accepts: `9999-12-31T23:59:59.999Z`, the last
/// instant RFC 3339 can write.
pub const MAX_QUERY_TIME_MS: i64 = 253_402_300_799_999;

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-27T12:00:00Z`).
/// Times outside the years 0000..=9999 are not RFC 3339 (chrono writes a
/// signed or 5-digit year; beyond ±262,000 years, the raw number): query
/// times are kept within [`MIN_QUERY_TIME_MS`]..=[`MAX_QUERY_TIME_MS`] by
/// [`parse_query_time`] so answers never get there.
pub fn format_ts(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms % 1000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Parses a query time: RFC 3339, integer Unix seconds, `now` or
/// `now-<duration>`; returns Unix milliseconds. A time outside
/// [`MIN_QUERY_TIME_MS`]..=[`MAX_QUERY_TIME_MS`] (the years RFC 3339 can
/// write) is refused rather than clamped: a clamped bound would answer a
/// range other than the one asked for, and the caller meant neither.
pub fn parse_query_time(s: &str, now_ms: i64) -> Result<i64> {
    let ms = parse_query_time_unchecked(s.trim(), now_ms)?;
    if (MIN_QUERY_TIME_MS..=MAX_QUERY_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(Error::InvalidParameter(format!(
            "time {s:?} is outside the accepted range ({} to {})",
            format_ts(MIN_QUERY_TIME_MS),
            format_ts(MAX_QUERY_TIME_MS)
        )))
    }
}

fn parse_query_time_unchecked(s: &str, now_ms: i64) -> Result<i64> {
    if s == "now" {
        return Ok(now_ms);
    }
    // `now-<d>` (SPEC) and `now+<d>` (for samples up to 5 min ahead).
    for (prefix, sign) in [("now-", -1i64), ("now+", 1)] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let d = humantime::parse_duration(rest)
                .map_err(|e| Error::InvalidParameter(format!("bad duration in {s:?}: {e}")))?;
            let ms = i64::try_from(d.as_millis())
                .map_err(|_| Error::InvalidParameter(format!("duration in {s:?} is too long")))?;
            return Ok(now_ms.saturating_add(sign * ms));
        }
    }
    if let Ok(secs) = s.parse::<i64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| Error::InvalidParameter(format!("time {s:?} is out of range")));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::InvalidParameter(format!(
                "time {s:?} is not RFC 3339, Unix seconds, now or now-<duration>"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_patterns() {
        assert!(validate_namespace("test:42").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace(&"a".repeat(129)).is_err());
        assert!(validate_metric("foundation.config.get").is_ok());
        assert!(validate_metric("a:b").is_err());
        assert!(validate_metric("sp ace").is_err());
        assert!(validate_tag("cache", "miss").is_ok());
        assert!(validate_tag("cache", "").is_err());
        assert!(validate_tag("ca che", "x").is_err());
    }

    #[test]
    fn tags_are_sorted_and_unique() {
        let t = Tags::new(&[("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(t.pairs()[0].0, "a");
        assert!(t.same_as(&[("a", "1"), ("b", "2")]));
        assert!(!t.same_as(&[("a", "1")]));
        assert!(Tags::new(&[("a", "1"), ("a", "2")]).is_err());
        let f = Tags::new(&[("b", "2")]).unwrap();
        assert!(t.includes(&f));
        assert!(!f.includes(&t));
    }

    #[test]
    fn values_are_checked_and_scaled() {
        assert_eq!(Kind::Latency.scale_value(1500.4).unwrap(), 1500);
        assert_eq!(Kind::ErrorRate.scale_value(2.5).unwrap(), 2500);
        assert!(matches!(
            Kind::ErrorRate.scale_value(100.5),
            Err(Error::ValueOutOfRange(_))
        ));
        assert!(matches!(
            Kind::Latency.scale_value(f64::NAN),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            Kind::Latency.scale_value(-1.0),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            Kind::Latency.scale_value(f64::INFINITY),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            "bogus".parse::<Kind>(),
            Err(Error::InvalidKind(_))
        ));
    }

    #[test]
    fn max_scaled_is_max_value_times_scale() {
        for k in Kind::ALL {
            assert_eq!(k.max_scaled(), (k.max_value() * k.scale()) as u64, "{k}");
        }
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        assert_eq!(format_duration_ms(6 * HOUR_MS), "6h");
        assert_eq!(format_duration_ms(2 * DAY_MS), "2d");
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(120_000), "2m");
        assert_eq!(format_duration_ms(0), "0s");
    }

    #[test]
    fn query_times_parse_every_spec_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_query_time("now", now).unwrap(), now);
        assert_eq!(parse_query_time("now-24h", now).unwrap(), now - DAY_MS);
        assert_eq!(
            parse_query_time("now+5m", now).unwrap(),
            now + 5 * MINUTE_MS
        );
        assert_eq!(parse_query_time("1800000000", now).unwrap(), now);
        assert_eq!(
            parse_query_time("2026-11-27T12:00:00Z", now).unwrap(),
            chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
                .unwrap()
                .timestamp_millis()
        );
        assert!(parse_query_time("yesterday", now).is_err());
        assert_eq!(
            parse_query_time("0000-01-01T00:00:00Z", now).unwrap(),
            MIN_QUERY_TIME_MS
        );
        assert_eq!(
            parse_query_time("253402300799", now).unwrap(),
            MAX_QUERY_TIME_MS - 999
        );
        for absurd in [
            "-86398204103286",
            "253402300800",
            "now-100000000y",
            "now+9000y",
        ] {
            let err = parse_query_time(absurd, now).unwrap_err();
            assert!(err.to_string().contains("0000-01-01T00:00:00Z"), "{err}");
        }
        assert_eq!(format_ts(MIN_QUERY_TIME_MS), "0000-01-01T00:00:00Z");
        assert_eq!(format_ts(MAX_QUERY_TIME_MS), "9999-12-31T23:59:59.999Z");
        assert!(parse_query_time("now-xyz", now).is_err());
    }

    #[test]
    fn alignment_is_utc_and_handles_negative_times() {
        assert_eq!(Resolution::Minute.align(61_000), 60_000);
        assert_eq!(Resolution::Hour.align(-1), -HOUR_MS);
        assert_eq!(Resolution::Day.align(DAY_MS + 5), DAY_MS);
    }
}
