//! Configuration: the TOML file (`config/scopemon.toml`) as serde types with
//! defaults, so an empty file (or none) is a working configuration.
//! Durations are humantime strings (`5s`, `48h`), sizes byte-unit strings.
//!
//! Thresholds are plain data here ([`ThresholdSpec`]); `alerts` parses and
//! checks them when the engine opens (config never depends on alerts).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::model::{Kind, Resolution, format_duration_ms, validate_namespace};
use crate::stats::Precision;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[retention]`
    pub retention: RetentionConfig,
    /// `[memory]` (the memory manager: pressure levels and cleanups)
    pub memory: MemoryConfig,
    /// `[health]` (read and validated; used by the health aggregator)
    pub health: HealthConfig,
    /// `[baseline]`
    pub baseline: BaselineConfig,
    /// `[alerts]`
    pub alerts: AlertsConfig,
    /// `[protection.<key>]`: per-key circuit breaker, rate limiter and
    /// timeout settings of [`crate::protection::Infrastructure`]; any subset
    /// of the keys, laid over the settings given in code (or the defaults).
    pub protection: BTreeMap<String, ProtectionConfig>,
}

/// `[baseline]`: how baselines are computed from history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Trailing window of hourly buckets a baseline is computed over.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// How often the background calculator recomputes (and how old a cached
    /// baseline may be before an on-demand request recomputes it).
    #[serde(deserialize_with = "de_duration")]
    pub recompute_interval: Duration,
    /// Fewer hourly buckets than this answer `insufficient_data`.
    pub min_buckets: usize,
    /// Band half-width in robust standard deviations (1.4826 × MAD).
    pub band: f64,
    /// History needed before a daily pattern is looked for.
    #[serde(deserialize_with = "de_duration")]
    pub seasonal_history: Duration,
    /// Share of the hourly variance the hour of day must explain (η²) for
    /// the baseline to be seasonal.
    pub seasonal_strength: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            window: Duration::from_secs(7 * 86_400),
            recompute_interval: Duration::from_secs(600),
            min_buckets: 24,
            band: 3.0,
            seasonal_history: Duration::from_secs(14 * 86_400),
            seasonal_strength: 0.5,
        }
    }
}

/// `[alerts]`: evaluation history and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// When set, every alert transition is POSTed here as JSON.
    pub webhook_url: Option<String>,
    /// Timeout of one webhook attempt.
    #[serde(deserialize_with = "de_duration")]
    pub webhook_timeout: Duration,
    /// Attempts per transition (with exponential backoff between them).
    pub webhook_attempts: u32,
    /// Resolved alerts kept in the history (firing ones are always kept).
    pub history_limit: usize,
    /// Thresholds defined in the file (`[[alerts.thresholds]]`); they
    /// replace stored thresholds with the same id at start-up.
    /// Checked by `alerts` when the engine opens, not by [`Config::validate`].
    pub thresholds: Vec<ThresholdSpec>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            webhook_timeout: Duration::from_secs(2),
            webhook_attempts: 4,
            history_limit: 1_000,
            thresholds: Vec::new(),
        }
    }
}

/// Comparison of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Breach when the value is above the level.
    Gt,
    /// Breach when the value is below the level.
    Lt,
}

/// A threshold as given by `PUT /v1/thresholds` and `[[alerts.thresholds]]`,
/// and as stored: plain data, checked and parsed by `alerts` (into its
/// `Rule`), which also normalises `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Unique id (`[A-Za-z0-9_.-]{1,128}`).
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Metric glob (`*` any run, `?` one character).
    pub metric: String,
    /// Kind (default latency).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Aggregation watched (`p99`, `error_rate`, ...).
    pub aggregation: String,
    /// gt or lt.
    pub op: Op,
    /// Warning level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Critical level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// Instead of fixed levels: warn beyond the baseline's upper bound × f
    /// (`gt`) or below its lower bound ÷ f (`lt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_factor: Option<f64>,
    /// `minute` or `hour` (default minute).
    #[serde(default = "default_window")]
    pub window: String,
    /// How long the breach must last before firing (default 0s).
    #[serde(rename = "for", default = "default_for")]
    pub for_: String,
}

fn default_kind() -> Kind {
    Kind::Latency
}
fn default_window() -> String {
    "minute".into()
}
fn default_for() -> String {
    "0s".into()
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// When set, `/v1/*` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest accepted request body.
    #[serde(deserialize_with = "de_size")]
    pub max_body_size: u64,
    /// A connection that does not send a request's whole head within this
    /// is closed: it bounds slow headers and idle keep-alive connections.
    #[serde(deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    /// A request not answered within this gets `408 request_timeout`
    /// (slow bodies included).
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9797)),
            token: None,
            max_body_size: 8 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding `scopemon.redb`.
    pub data_dir: PathBuf,
    /// How often hot data is written to the store.
    #[serde(deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Most series one namespace may hold.
    pub series_limit_per_namespace: usize,
    /// Most series across all namespaces.
    pub series_limit: usize,
    /// Histogram significant digits: 2 (≤ 1 % error) or 3 (≤ 0.1 %).
    pub histogram_precision: u8,
    /// How often the online compactor applies retention.
    #[serde(deserialize_with = "de_duration")]
    pub compact_interval: Duration,
    /// Cap on unflushed hot data, bytes: above three quarters of it the
    /// flush runs at once; at the cap HTTP ingest answers 429.
    #[serde(deserialize_with = "de_size")]
    pub max_hot_bytes: u64,
    /// redb's page cache, bytes (redb's own default is 1 GiB).
    #[serde(deserialize_with = "de_size")]
    pub cache_size: u64,
    /// Free space kept for flushes: below it on the data directory's file
    /// system HTTP ingest answers `507 insufficient_storage` (what is
    /// already accepted is still flushed into this reserve).
    #[serde(deserialize_with = "de_size")]
    pub min_free_space: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            flush_interval: Duration::from_secs(5),
            series_limit_per_namespace: 10_000,
            series_limit: 100_000,
            histogram_precision: 2,
            compact_interval: Duration::from_secs(600),
            max_hot_bytes: 256 << 20,
            cache_size: 64 << 20,
            min_free_space: 64 << 20,
        }
    }
}

/// How long buckets of each resolution are kept (any subset in the file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Minute buckets.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub minute: Option<Duration>,
    /// Hour buckets.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub hour: Option<Duration>,
    /// Day buckets.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub day: Option<Duration>,
}

/// `[retention]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `[retention.default]`
    pub default: RetentionRule,
    /// `[retention.namespaces."<ns>"]`
    pub namespaces: BTreeMap<String, RetentionRule>,
}

/// Where a namespace's retention comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionSource {
    /// Built-in defaults.
    Default,
    /// The configuration file.
    Config,
    /// A runtime override stored in the file.
    Override,
}

/// The retention that applies to one namespace, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute buckets kept this long.
    pub minute_ms: i64,
    /// Hour buckets kept this long.
    pub hour_ms: i64,
    /// Day buckets kept this long.
    pub day_ms: i64,
    /// Where it came from.
    pub source: RetentionSource,
}

impl Retention {
    /// Built-in default: 48h / 30d / 400d.
    pub const BUILTIN: Retention = Retention {
        minute_ms: 48 * 3_600_000,
        hour_ms: 30 * 86_400_000,
        day_ms: 400 * 86_400_000,
        source: RetentionSource::Default,
    };

    /// How long buckets of `res` are kept.
    pub fn of(&self, res: Resolution) -> i64 {
        match res {
            Resolution::Minute => self.minute_ms,
            Resolution::Hour => self.hour_ms,
            Resolution::Day => self.day_ms,
        }
    }

    /// The longest of the three: older samples are refused.
    pub fn longest_ms(&self) -> i64 {
        self.minute_ms.max(self.hour_ms).max(self.day_ms)
    }

    /// Applies a rule's keys on top of this retention.
    pub fn with(mut self, rule: &RetentionRule, source: RetentionSource) -> Retention {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut changed = false;
        if let Some(d) = rule.minute {
            self.minute_ms = ms(d);
            changed = true;
        }
        if let Some(d) = rule.hour {
            self.hour_ms = ms(d);
            changed = true;
        }
        if let Some(d) = rule.day {
            self.day_ms = ms(d);
            changed = true;
        }
        if changed {
            self.source = source;
        }
        self
    }

    /// Coarser resolutions must be kept at least as long as finer ones
    /// (a range older than the minute retention is answered from hours).
    pub fn check_order(&self) -> Result<()> {
        if self.minute_ms > self.hour_ms || self.hour_ms > self.day_ms {
            return Err(Error::Config(format!(
                "retention must not shrink with coarser resolutions: minute {} <= hour {} <= day {}",
                format_duration_ms(self.minute_ms),
                format_duration_ms(self.hour_ms),
                format_duration_ms(self.day_ms)
            )));
        }
        Ok(())
    }

    /// As the SPEC's JSON strings.
    pub fn describe(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("minute", format_duration_ms(self.minute_ms)),
            ("hour", format_duration_ms(self.hour_ms)),
            ("day", format_duration_ms(self.day_ms)),
        ])
    }
}

/// Refuses zero durations and ones shorter than the resolution they keep.
pub fn validate_rule(rule: &RetentionRule) -> Result<()> {
    for (res, d) in [
        (Resolution::Minute, rule.minute),
        (Resolution::Hour, rule.hour),
        (Resolution::Day, rule.day),
    ] {
        if let Some(d) = d {
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms < res.width_ms() {
                return Err(Error::Config(format!(
                    "{} retention {} is shorter than one {} bucket; use at least {}",
                    res.as_str(),
                    humantime::format_duration(d),
                    res.as_str(),
                    format_duration_ms(res.width_ms())
                )));
            }
        }
    }
    Ok(())
}

/// `[memory]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Optional budget; the pressure base is min(budget, cgroup, system).
    #[serde(deserialize_with = "de_opt_size")]
    pub budget: Option<u64>,
    /// How often memory is measured.
    #[serde(deserialize_with = "de_duration")]
    pub check_interval: Duration,
    /// Medium pressure threshold (fraction of the base).
    pub medium: f64,
    /// High pressure threshold.
    pub high: f64,
    /// Critical pressure threshold.
    pub critical: f64,
    /// A level is left only once the ratio is this far below its threshold
    /// (so the level does not flap around a threshold).
    pub hysteresis: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget: None,
            check_interval: Duration::from_secs(5),
            medium: 0.5,
            high: 0.7,
            critical: 0.9,
            hysteresis: 0.05,
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each check runs (a check or a registered service may set
    /// its own interval).
    #[serde(deserialize_with = "de_duration")]
    pub check_interval: Duration,
    /// How long a check may take before it counts as unhealthy (a check or
    /// a registered service may set its own timeout).
    #[serde(deserialize_with = "de_duration")]
    pub check_timeout: Duration,
    /// Status changes kept in the in-memory history.
    pub history: usize,
    /// Free space of the data directory's file system below which the
    /// disk check reports degraded (fraction of its size).
    pub disk_degraded: f64,
    /// Free space below which the disk check reports unhealthy.
    pub disk_unhealthy: f64,
}

impl HealthConfig {
    fn validate(&self) -> Result<()> {
        if self.check_interval.is_zero() || self.check_timeout.is_zero() {
            return Err(Error::Config(
                "health.check_interval and health.check_timeout must be > 0".into(),
            ));
        }
        let (bad, low) = (self.disk_unhealthy, self.disk_degraded);
        if !(0.0 <= bad && bad <= low && low < 1.0) {
            return Err(Error::Config(
                "health thresholds must satisfy 0 <= disk_unhealthy <= disk_degraded < 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            history: 100,
            disk_degraded: 0.10,
            disk_unhealthy: 0.02,
        }
    }
}

/// `[protection.<key>]`: every field optional; a missing one keeps the
/// value given in code (or the built-in default). `0` / `"0s"` turn a
/// protection off where noted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectionConfig {
    /// Call timeout (`"0s"` = none). Default 5 s.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Calls admitted per `rate_period` per identifier (0 = no limiter).
    /// Default 100.
    pub rate_limit: Option<u32>,
    /// Period of `rate_limit`. Default 60 s.
    #[serde(deserialize_with = "de_opt_duration")]
    pub rate_period: Option<Duration>,
    /// Calls that may arrive at once. Default 1.2 × `rate_limit`.
    pub burst: Option<u32>,
    /// Failure rate (percent of the window's calls) that opens the breaker.
    /// Default 50.
    pub failure_rate_threshold: Option<f64>,
    /// Calls the window must hold before its failure rate counts. Default 10.
    pub minimum_calls: Option<u32>,
    /// Time-based sliding window. Default 60 s.
    #[serde(deserialize_with = "de_opt_duration")]
    pub window: Option<Duration>,
    /// Count-based sliding window (the last N calls) instead of `window`.
    pub window_calls: Option<u32>,
    /// Consecutive failures that open the breaker (0 = off). Default 5.
    pub consecutive_failures: Option<u32>,
    /// A call slower than this counts as failed (`"0s"` = off, the default).
    #[serde(deserialize_with = "de_opt_duration")]
    pub slow_call: Option<Duration>,
    /// How long the breaker stays open before trial calls. Default 30 s.
    #[serde(deserialize_with = "de_opt_duration")]
    pub reset_timeout: Option<Duration>,
    /// Trial calls let through half-open; all must succeed to close.
    /// Default 1.
    pub half_open_calls: Option<u32>,
    /// Whether the memory gate applies to this key. Default true.
    pub memory_gate: Option<bool>,
}

impl ProtectionConfig {
    /// Checks values serde cannot; `key` must be a valid metric name (the
    /// key names the series its calls are recorded in).
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("protection.{key:?}: {what}")));
        if let Err(e) = crate::model::validate_metric(key) {
            return Err(Error::Config(format!("protection: {e}")));
        }
        if let Some(r) = self.failure_rate_threshold
            && !(r > 0.0 && r <= 100.0)
        {
            return bad("failure_rate_threshold must be within (0, 100]");
        }
        if self.window.is_some() && self.window_calls.is_some() {
            return bad("set either window (time-based) or window_calls (count-based), not both");
        }
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.is_zero());
        if zero(self.window) || self.window_calls == Some(0) {
            return bad("window and window_calls must be > 0");
        }
        if zero(self.rate_period) || zero(self.reset_timeout) {
            return bad("rate_period and reset_timeout must be > 0");
        }
        if self.burst == Some(0) || self.half_open_calls == Some(0) {
            return bad("burst and half_open_calls must be >= 1");
        }
        Ok(())
    }
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// A default configuration storing under `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut c = Config::default();
        c.storage.data_dir = data_dir.into();
        c
    }

    /// Checks values serde cannot, section by section.
    pub fn validate(&self) -> Result<()> {
        self.validate_storage_and_server()?;
        self.validate_retention()?;
        self.validate_baseline_and_alerts()?;
        self.health.validate()?;
        self.validate_memory()?;
        for (key, p) in &self.protection {
            p.validate(key)?;
        }
        Ok(())
    }

    fn validate_storage_and_server(&self) -> Result<()> {
        let st = &self.storage;
        Precision::new(st.histogram_precision)?;
        if st.flush_interval.is_zero() {
            return Err(Error::Config("storage.flush_interval must be > 0".into()));
        }
        if st.compact_interval.is_zero() {
            return Err(Error::Config("storage.compact_interval must be > 0".into()));
        }
        if st.max_hot_bytes < 1 << 20 {
            return Err(Error::Config(
                "storage.max_hot_bytes must be at least 1MiB".into(),
            ));
        }
        if st.series_limit == 0 {
            return Err(Error::Config("storage.series_limit must be > 0".into()));
        }
        if st.series_limit_per_namespace == 0 {
            return Err(Error::Config(
                "storage.series_limit_per_namespace must be > 0".into(),
            ));
        }
        let s = &self.server;
        if s.header_read_timeout.is_zero() || s.request_timeout.is_zero() || s.max_connections == 0
        {
            return Err(Error::Config(
                "server.header_read_timeout, request_timeout and max_connections must be > 0"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<()> {
        validate_rule(&self.retention.default)?;
        self.retention_for("").check_order()?;
        for (ns, rule) in &self.retention.namespaces {
            validate_namespace(ns)
                .map_err(|e| Error::Config(format!("retention.namespaces: {e}")))?;
            validate_rule(rule)
                .map_err(|e| Error::Config(format!("retention.namespaces.{ns:?}: {e}")))?;
            self.retention_for(ns)
                .check_order()
                .map_err(|e| Error::Config(format!("retention.namespaces.{ns:?}: {e}")))?;
        }
        Ok(())
    }

    fn validate_baseline_and_alerts(&self) -> Result<()> {
        let b = &self.baseline;
        if b.window.is_zero() || b.recompute_interval.is_zero() || b.min_buckets == 0 {
            return Err(Error::Config(
                "baseline.window, recompute_interval and min_buckets must be > 0".into(),
            ));
        }
        if !(b.band > 0.0 && b.band.is_finite() && (0.0..=1.0).contains(&b.seasonal_strength)) {
            return Err(Error::Config(
                "baseline.band must be > 0 and baseline.seasonal_strength within 0..=1".into(),
            ));
        }
        if let Some(url) = &self.alerts.webhook_url
            && !url.starts_with("http://")
        {
            return Err(Error::Config(format!(
                "alerts.webhook_url {url:?} must be a plain http:// URL (scopemon speaks no TLS)"
            )));
        }
        if self.alerts.webhook_attempts == 0 {
            return Err(Error::Config("alerts.webhook_attempts must be >= 1".into()));
        }
        Ok(())
    }

    fn validate_memory(&self) -> Result<()> {
        let m = &self.memory;
        if !(0.0 < m.medium && m.medium < m.high && m.high < m.critical && m.critical <= 1.0) {
            return Err(Error::Config(
                "memory thresholds must satisfy 0 < medium < high < critical <= 1".into(),
            ));
        }
        if !(0.0 <= m.hysteresis && m.hysteresis < m.medium) {
            return Err(Error::Config(
                "memory.hysteresis must satisfy 0 <= hysteresis < medium".into(),
            ));
        }
        if m.check_interval.is_zero() || m.budget == Some(0) {
            return Err(Error::Config(
                "memory.check_interval and memory.budget must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// Histogram precision.
    pub fn precision(&self) -> Precision {
        Precision::new(self.storage.histogram_precision).unwrap_or(Precision::DEFAULT)
    }

    /// Retention of `ns` from defaults and this file (overrides stored in
    /// the redb file are applied on top by the store).
    pub fn retention_for(&self, ns: &str) -> Retention {
        let r = Retention::BUILTIN.with(&self.retention.default, RetentionSource::Config);
        match self.retention.namespaces.get(ns) {
            Some(rule) => r.with(rule, RetentionSource::Config),
            None => r,
        }
    }

    /// Path of the redb file.
    pub fn db_path(&self) -> PathBuf {
        crate::store::db_path(&self.storage.data_dir)
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
}

fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("bad size {s:?}: {e}; use e.g. 512MiB or 1GiB"))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeIn {
        N(u64),
        S(String),
    }
    match SizeIn::deserialize(d)? {
        SizeIn::N(n) => Ok(n),
        SizeIn::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../config/scopemon.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.server.listen.port(), 9797);
        assert_eq!(c.storage.flush_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_shipped_threshold_examples_are_valid_when_uncommented() {
        let text = include_str!("../config/scopemon.toml");
        let start = text.find("# [[alerts.thresholds]]").unwrap();
        let end = text[start..]
            .find("\n\n[")
            .map_or(text.len(), |e| start + e);
        let uncommented: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&uncommented).unwrap();
        let ids: Vec<&str> = c.alerts.thresholds.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["slow-operations", "error-rate", "stalled"]);
        // Valid as the engine checks them when it opens.
        let rules = crate::alerts::configured_rules(&c.alerts).unwrap();
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn memory_sizes_parse_and_the_cap_has_a_floor() {
        let c = Config::from_toml("[storage]\nmax_hot_bytes = \"64MiB\"\ncache_size = \"16MiB\"\n")
            .unwrap();
        assert_eq!(
            (c.storage.max_hot_bytes, c.storage.cache_size),
            (64 << 20, 16 << 20)
        );
        let d = Config::default();
        assert_eq!(
            (d.storage.max_hot_bytes, d.storage.cache_size),
            (256 << 20, 64 << 20)
        );
        assert!(Config::from_toml("[storage]\nmax_hot_bytes = \"1KiB\"\n").is_err());
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.storage.series_limit_per_namespace, 10_000);
        assert_eq!(c.retention_for("x"), Retention::BUILTIN);
        assert_eq!(c.server.max_body_size, 8 * 1024 * 1024);
    }

    #[test]
    fn namespace_retention_inherits_missing_keys() {
        let c = Config::from_toml(
            "[retention.default]\nhour = \"10d\"\n[retention.namespaces.\"staging\"]\nminute = \"6h\"\n",
        )
        .unwrap();
        let r = c.retention_for("staging");
        assert_eq!(r.minute_ms, 6 * 3_600_000);
        assert_eq!(r.hour_ms, 10 * 86_400_000);
        assert_eq!(r.day_ms, Retention::BUILTIN.day_ms);
        assert_eq!(r.source, RetentionSource::Config);
        assert_eq!(r.describe()["minute"], "6h");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for bad in [
            "[storage]\nflush_interval = \"soon\"",
            "[storage]\nhistogram_precision = 9",
            "[retention.default]\nhour = \"30m\"",
            "[retention.default]\nminute = \"0s\"",
            "[server]\nlisten = \"nope\"",
            "[bogus]\nx = 1",
            "[memory]\nmedium = 0.9\nhigh = 0.5",
            "[retention.default]\nhour = \"1d\"",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert!(parse_size("12 parsecs").is_err());
    }
}
