//! Pressure levels: which of low / medium / high / critical a pressure
//! ratio (memory used ÷ the pressure base) is at, with hysteresis.
//!
//! Invariants (pure functions, unit-tested here):
//! - rising is immediate: a ratio at or above a level's threshold is at
//!   least that level;
//! - falling is damped: a level is left only once the ratio is more than
//!   `hysteresis` below its threshold, one level at a time, so a ratio
//!   wobbling around a threshold does not flap;
//! - the result is never below the plain (undamped) level of the ratio.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::MemoryConfig;
use crate::error::{Error, Result};

/// A memory pressure level, ordered low < medium < high < critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PressureLevel {
    /// Below `memory.medium`.
    Low = 0,
    /// At or above `memory.medium`.
    Medium = 1,
    /// At or above `memory.high`: new series are refused.
    High = 2,
    /// At or above `memory.critical`: HTTP ingest is refused (503).
    Critical = 3,
}

impl PressureLevel {
    /// Every level, lowest first.
    pub const ALL: [PressureLevel; 4] = [
        PressureLevel::Low,
        PressureLevel::Medium,
        PressureLevel::High,
        PressureLevel::Critical,
    ];

    /// The lowercase name (`low`, `medium`, `high`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            PressureLevel::Low => "low",
            PressureLevel::Medium => "medium",
            PressureLevel::High => "high",
            PressureLevel::Critical => "critical",
        }
    }

    /// The level stored as `n` by [`PressureLevel::as_u8`] (saturating).
    pub fn from_u8(n: u8) -> PressureLevel {
        match n {
            0 => PressureLevel::Low,
            1 => PressureLevel::Medium,
            2 => PressureLevel::High,
            _ => PressureLevel::Critical,
        }
    }

    /// The level as a small number (0 = low … 3 = critical).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    fn below(self) -> PressureLevel {
        PressureLevel::from_u8(self.as_u8().saturating_sub(1))
    }
}

impl fmt::Display for PressureLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PressureLevel {
    type Err = Error;

    fn from_str(s: &str) -> Result<PressureLevel> {
        PressureLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "priority {s:?} must be one of low, medium, high, critical"
                ))
            })
    }
}

/// The thresholds (fractions of the pressure base) and the hysteresis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Medium at or above this ratio.
    pub medium: f64,
    /// High at or above this ratio.
    pub high: f64,
    /// Critical at or above this ratio.
    pub critical: f64,
    /// How far below its threshold the ratio must fall to leave a level.
    pub hysteresis: f64,
}

impl Thresholds {
    /// The thresholds of a `[memory]` section.
    pub fn of(c: &MemoryConfig) -> Thresholds {
        Thresholds {
            medium: c.medium,
            high: c.high,
            critical: c.critical,
            hysteresis: c.hysteresis,
        }
    }

    /// The threshold a ratio must reach to be at `level` (0 for low).
    pub fn threshold(&self, level: PressureLevel) -> f64 {
        match level {
            PressureLevel::Low => 0.0,
            PressureLevel::Medium => self.medium,
            PressureLevel::High => self.high,
            PressureLevel::Critical => self.critical,
        }
    }

    /// The plain level of `ratio`, without hysteresis.
    pub fn plain(&self, ratio: f64) -> PressureLevel {
        PressureLevel::ALL
            .into_iter()
            .rev()
            .find(|l| ratio >= self.threshold(*l))
            .unwrap_or(PressureLevel::Low)
    }

    /// The level after measuring `ratio` while at `current`.
    pub fn next(&self, current: PressureLevel, ratio: f64) -> PressureLevel {
        let plain = self.plain(ratio);
        if plain >= current {
            return plain;
        }
        let mut level = current;
        while level > plain && ratio < self.threshold(level) - self.hysteresis {
            level = level.below();
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PressureLevel::*;

    const T: Thresholds = Thresholds {
        medium: 0.5,
        high: 0.7,
        critical: 0.9,
        hysteresis: 0.05,
    };

    #[test]
    fn plain_levels_at_the_thresholds() {
        assert_eq!(T.plain(0.0), Low);
        assert_eq!(T.plain(0.49), Low);
        assert_eq!(T.plain(0.5), Medium);
        assert_eq!(T.plain(0.7), High);
        assert_eq!(T.plain(0.9), Critical);
        assert_eq!(T.plain(40.0), Critical);
    }

    #[test]
    fn rising_is_immediate_and_may_skip_levels() {
        assert_eq!(T.next(Low, 0.95), Critical);
        assert_eq!(T.next(Medium, 0.71), High);
    }

    #[test]
    fn falling_waits_for_the_margin() {
        assert_eq!(T.next(High, 0.69), High, "just under: stays");
        assert_eq!(T.next(High, 0.651), High, "inside the margin: stays");
        assert_eq!(T.next(High, 0.649), Medium, "past the margin: leaves");
        assert_eq!(T.next(Critical, 0.86), Critical);
        assert_eq!(T.next(Critical, 0.84), High);
        assert_eq!(T.next(Critical, 0.1), Low, "a deep fall leaves every level");
        assert_eq!(
            T.next(Critical, 0.6),
            Medium,
            "stops where the margin holds"
        );
    }

    #[test]
    fn a_wobbling_ratio_does_not_flap() {
        let mut level = Low;
        let mut changes = 0;
        for i in 0..100 {
            let ratio = if i % 2 == 0 { 0.71 } else { 0.68 };
            let next = T.next(level, ratio);
            changes += usize::from(next != level);
            level = next;
        }
        assert_eq!((level, changes), (High, 1));
    }

    #[test]
    fn names_round_trip() {
        for l in PressureLevel::ALL {
            assert_eq!(l.as_str().parse::<PressureLevel>().unwrap(), l);
            assert_eq!(PressureLevel::from_u8(l.as_u8()), l);
        }
        assert_eq!(
            "urgent".parse::<PressureLevel>().unwrap_err().code(),
            "invalid_parameter"
        );
    }
}
