//! A threshold as given ([`ThresholdSpec`], plain data from the HTTP body,
//! the config file or the `thresholds` table) parsed into a [`Rule`]: every
//! field checked, the metric glob compiled once, the aggregation and window
//! parsed into their types, `for` into milliseconds.
//!
//! Invariants of a `Rule`: it holds either fixed levels (at least one of
//! warning/critical, warning reached first) or a positive baseline factor
//! on an aggregation baselines describe, never both; every number is
//! finite; its spec is normalised (`for` written as `format_duration_ms`
//! writes it), so what is stored and answered is what was understood.
//! Checks run in a fixed order, so the first problem named is stable.

use wildmatch::WildMatch;

use super::alert::Severity;
use crate::baseline::{Baseline, BaselineStatus};
use crate::config::{AlertsConfig, Op, ThresholdSpec};
use crate::error::{Error, Result};
use crate::model::{Resolution, format_duration_ms, validate_namespace};
use crate::stats::Aggregation;

/// The levels a rule compares against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Levels {
    /// Fixed levels (at least one is set).
    Fixed {
        /// Warning level.
        warning: Option<f64>,
        /// Critical level.
        critical: Option<f64>,
    },
    /// A warning level from the series' baseline band × / ÷ the factor.
    Baseline {
        /// The factor (> 0).
        factor: f64,
    },
}

/// A validated threshold.
#[derive(Debug, Clone)]
pub struct Rule {
    spec: ThresholdSpec,
    matcher: WildMatch,
    aggregation: Aggregation,
    levels: Levels,
    window: Resolution,
    for_ms: i64,
}

fn invalid(msg: String) -> Error {
    Error::InvalidParameter(msg)
}

/// Parses the thresholds of the configuration file; the error (an
/// [`Error::Config`]) names the threshold.
pub fn configured_rules(cfg: &AlertsConfig) -> Result<Vec<Rule>> {
    cfg.thresholds
        .iter()
        .map(|t| {
            Rule::parse(t.clone())
                .map_err(|e| Error::Config(format!("alerts.thresholds {:?}: {e}", t.id)))
        })
        .collect()
}

impl Rule {
    /// Checks every field of `spec`; the error says which and why.
    pub fn parse(mut spec: ThresholdSpec) -> Result<Rule> {
        check_id(&spec.id)?;
        validate_namespace(&spec.namespace)?;
        check_glob(&spec.metric)?;
        let aggregation: Aggregation = spec.aggregation.parse()?;
        let levels = levels(&spec, aggregation)?;
        let window = match spec.window.as_str() {
            "minute" => Resolution::Minute,
            "hour" => Resolution::Hour,
            w => return Err(invalid(format!("window {w:?} must be minute or hour"))),
        };
        let for_ms = parse_for(&spec.for_)?;
        spec.for_ = format_duration_ms(for_ms);
        Ok(Rule {
            matcher: WildMatch::new(&spec.metric),
            spec,
            aggregation,
            levels,
            window,
            for_ms,
        })
    }

    /// The threshold as given, normalised.
    pub fn spec(&self) -> &ThresholdSpec {
        &self.spec
    }

    /// The threshold id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The aggregation watched.
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    /// The trailing window evaluated (minute or hour).
    pub fn window(&self) -> Resolution {
        self.window
    }

    /// How long a breach must last before it fires, ms.
    pub fn for_ms(&self) -> i64 {
        self.for_ms
    }

    /// Whether the metric glob matches `metric`.
    pub fn matches(&self, metric: &str) -> bool {
        self.matcher.matches(metric)
    }

    /// The (warning, critical) levels for a series whose baseline is
    /// `baseline` (asked for only by baseline rules); `None` when a baseline
    /// rule has nothing to compare with yet.
    pub fn levels_with(
        &self,
        baseline: impl FnOnce() -> Option<std::sync::Arc<Baseline>>,
    ) -> Option<(Option<f64>, Option<f64>)> {
        match self.levels {
            Levels::Fixed { warning, critical } => Some((warning, critical)),
            Levels::Baseline { factor } => {
                let b = baseline().filter(|b| b.status == BaselineStatus::Ok)?;
                let band = b.band(self.aggregation)?;
                Some(match self.spec.op {
                    Op::Gt => (Some(band.upper * factor), None),
                    Op::Lt => (Some(band.lower / factor), None),
                })
            }
        }
    }

    /// The breach of `value` against `(warning, critical)`: the highest
    /// severity reached and its level.
    pub fn breach(
        &self,
        value: f64,
        levels: (Option<f64>, Option<f64>),
    ) -> Option<(Severity, f64)> {
        match levels {
            (_, Some(c)) if beyond(self.spec.op, value, c) => Some((Severity::Critical, c)),
            (Some(w), _) if beyond(self.spec.op, value, w) => Some((Severity::Warning, w)),
            _ => None,
        }
    }
}

fn beyond(op: Op, value: f64, level: f64) -> bool {
    match op {
        Op::Gt => value > level,
        Op::Lt => value < level,
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(invalid(format!(
            "id {id:?} must be 1..=128 characters of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(())
}

fn check_glob(glob: &str) -> Result<()> {
    let ok = !glob.is_empty()
        && glob.len() <= 256
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b));
    if !ok {
        return Err(invalid(format!(
            "metric glob {glob:?} must be 1..=256 characters of A-Z a-z 0-9 _ . - * ?"
        )));
    }
    Ok(())
}

/// Fixed levels or a baseline factor, checked.
fn levels(spec: &ThresholdSpec, aggregation: Aggregation) -> Result<Levels> {
    for (name, v) in [
        ("warning", spec.warning),
        ("critical", spec.critical),
        ("baseline_factor", spec.baseline_factor),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(invalid(format!("{name} must be a finite number")));
        }
    }
    match (spec.warning, spec.critical, spec.baseline_factor) {
        (None, None, None) => Err(invalid(
            "give warning and/or critical, or baseline_factor".into(),
        )),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(invalid(
            "give either fixed levels (warning/critical) or baseline_factor, not both".into(),
        )),
        (None, None, Some(factor)) => {
            if factor <= 0.0 {
                return Err(invalid("baseline_factor must be > 0".into()));
            }
            if !aggregation.has_baseline() {
                let names: Vec<&str> = Aggregation::WITH_BASELINE
                    .iter()
                    .map(|a| a.as_str())
                    .collect();
                return Err(invalid(format!(
                    "baselines exist for {} only, not {:?}",
                    names.join(", "),
                    aggregation.as_str()
                )));
            }
            Ok(Levels::Baseline { factor })
        }
        (warning, critical, None) => {
            if let (Some(w), Some(c)) = (warning, critical) {
                let ordered = match spec.op {
                    Op::Gt => w <= c,
                    Op::Lt => w >= c,
                };
                if !ordered {
                    return Err(invalid(format!(
                        "warning {w} is beyond critical {c} for op {}: warning must be reached first",
                        if spec.op == Op::Gt { "gt" } else { "lt" }
                    )));
                }
            }
            Ok(Levels::Fixed { warning, critical })
        }
    }
}

fn parse_for(text: &str) -> Result<i64> {
    let ms = humantime::parse_duration(text)
        .map_err(|e| invalid(format!("for {text:?} is not a duration (e.g. 2m): {e}")))?
        .as_millis();
    i64::try_from(ms).map_err(|_| invalid("for is too long".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> ThresholdSpec {
        serde_json::from_value(serde_json::json!({
            "id": "slow-config", "namespace": "production", "metric": "foundation.*",
            "kind": "latency", "aggregation": "p99", "op": "gt",
            "warning": 10000, "critical": 50000, "window": "minute", "for": "120s"
        }))
        .unwrap()
    }

    #[test]
    fn globs() {
        let rule = |glob: &str| {
            let mut x = t();
            x.metric = glob.into();
            Rule::parse(x).unwrap()
        };
        assert!(rule("foundation.*").matches("foundation.config.get"));
        assert!(rule("*").matches("x"));
        assert!(rule("a?c").matches("abc"));
        assert!(!rule("a?c").matches("abbc"));
        assert!(rule("*.get").matches("foundation.config.get"));
        assert!(!rule("foundation.*").matches("other.config"));
        assert!(rule("a*b*c").matches("aXXbYYc"));
        assert!(!rule("a*b*c").matches("aXXbYYcd"));
    }

    #[test]
    fn the_spec_example_is_valid_and_normalised() {
        let r = Rule::parse(t()).unwrap();
        assert_eq!(r.for_ms(), 120_000);
        assert_eq!(r.spec().for_, "2m");
        assert_eq!(r.aggregation(), Aggregation::P99);
        assert_eq!(r.window(), Resolution::Minute);
        assert_eq!(
            r.levels,
            Levels::Fixed {
                warning: Some(10000.0),
                critical: Some(50000.0)
            }
        );
    }

    #[test]
    fn invalid_thresholds_say_why() {
        type Mutation = fn(&mut ThresholdSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|t| t.aggregation = "p42".into(), "unknown aggregation"),
            (|t| t.metric = "bad glob!".into(), "metric glob"),
            (
                |t| t.warning = Some(60000.0),
                "warning 60000 is beyond critical",
            ),
            (|t| t.window = "week".into(), "window"),
            (|t| t.for_ = "soon".into(), "for"),
            (
                |t| {
                    t.warning = None;
                    t.critical = None;
                },
                "give warning",
            ),
            (|t| t.baseline_factor = Some(1.5), "either fixed levels"),
            (|t| t.id = String::new(), "id"),
            (
                |t| {
                    t.warning = None;
                    t.critical = None;
                    t.baseline_factor = Some(2.0);
                    t.aggregation = "count".into();
                },
                "baselines exist for p50, p95, p99, avg, rate, error_rate only, not \"count\"",
            ),
        ];
        for (mutate, needle) in cases {
            let mut x = t();
            mutate(&mut x);
            let e = Rule::parse(x).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
        let mut lt = t();
        lt.op = Op::Lt;
        assert!(
            Rule::parse(lt.clone()).is_err(),
            "lt needs warning >= critical"
        );
        lt.warning = Some(60000.0);
        assert!(Rule::parse(lt).is_ok());
    }

    #[test]
    fn configured_thresholds_are_named_in_the_error() {
        let mut cfg = AlertsConfig::default();
        let mut bad = t();
        bad.id = "bad-one".into();
        bad.window = "week".into();
        cfg.thresholds = vec![t(), bad];
        let e = configured_rules(&cfg).unwrap_err();
        assert_eq!(e.code(), "invalid_config");
        assert_eq!(
            e.to_string(),
            "invalid configuration: alerts.thresholds \"bad-one\": window \"week\" must be minute or hour"
        );
    }

    #[test]
    fn levels_and_breaches() {
        let r = Rule::parse(t()).unwrap();
        let levels = r.levels_with(|| None).unwrap();
        assert_eq!(r.breach(9_000.0, levels), None);
        assert_eq!(
            r.breach(20_000.0, levels),
            Some((Severity::Warning, 10_000.0))
        );
        assert_eq!(
            r.breach(60_000.0, levels),
            Some((Severity::Critical, 50_000.0))
        );
        let mut b = t();
        b.warning = None;
        b.critical = None;
        b.baseline_factor = Some(2.0);
        let r = Rule::parse(b).unwrap();
        assert_eq!(r.levels_with(|| None), None, "no baseline yet");
    }
}
