//! The keyed rate limiter: GCRA through `governor`, one bucket per caller
//! identifier (a user, a client address; one shared bucket when none).
//!
//! Invariants:
//! - Per identifier, at most `burst` calls pass at once and, sustained,
//!   `calls` per `period` (governor's GCRA: token-bucket semantics without
//!   a refill task).
//! - A rejection says when the next call for that identifier would pass
//!   (governor's `NotUntil`), to the nanosecond.
//! - Identifiers are stored as 64-bit hashes under a per-process random
//!   seed: no allocation per call, and callers cannot aim collisions.
//! - Buckets that are full again are forgotten every 65,536 checks, so the
//!   map holds only recently active identifiers.
//! - Time is tokio's ([`TokioClock`]), so `tokio::time::pause()` drives it.
//!   [`KeyedLimiter::check_at`] lends governor an instant the caller has
//!   already read (the facade reads the clock once for admission and call
//!   start).

use std::cell::Cell;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::Serialize;

/// How many calls pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per `period`, sustained.
    pub calls: NonZeroU32,
    /// The period `calls` are counted over.
    pub period: Duration,
    /// Calls that may pass at once.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// The original design's bucket: 100 calls per 60 s, bursts of 120.
    fn default() -> Self {
        RateLimit {
            calls: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(60),
            burst: NonZeroU32::new(120).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl RateLimit {
    /// `calls` per `period` with bursts of `burst` (0 becomes 1).
    pub fn new(calls: u32, period: Duration, burst: u32) -> RateLimit {
        RateLimit {
            calls: NonZeroU32::new(calls).unwrap_or(NonZeroU32::MIN),
            period,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        }
    }

    fn quota(&self) -> Quota {
        let every = (self.period / self.calls.get()).max(Duration::from_nanos(1));
        Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }
}

/// A point on [`TokioClock`]: nanoseconds since the clock was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(u64);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, d: Nanos) -> TokioInstant {
        TokioInstant(self.0.saturating_add(d.as_u64()))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }

    fn saturating_sub(&self, d: Nanos) -> Self {
        TokioInstant(self.0.saturating_sub(d.as_u64()))
    }
}

thread_local! {
    /// The instant lent by [`KeyedLimiter::check_at`] for one check.
    static LENT: Cell<Option<tokio::time::Instant>> = const { Cell::new(None) };
}

/// Clears the lent instant, even if governor panicked.
struct Lend;

impl Lend {
    fn new(now: tokio::time::Instant) -> Lend {
        LENT.with(|l| l.set(Some(now)));
        Lend
    }
}

impl Drop for Lend {
    fn drop(&mut self) {
        LENT.with(|l| l.set(None));
    }
}

/// A governor clock reading [`tokio::time::Instant`] (pausable in tests).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        let now = LENT
            .with(Cell::get)
            .unwrap_or_else(tokio::time::Instant::now);
        let since = now.saturating_duration_since(self.base);
        TokioInstant(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

type Hasher = foldhash::fast::RandomState;
type Governor =
    RateLimiter<u64, DashMapStateStore<u64, Hasher>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// A limiter's figures, as `GET /v1/protection` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterSnapshot {
    /// Sustained calls per period.
    pub rate: u32,
    /// The period, e.g. `1m`.
    pub period: String,
    /// Burst size.
    pub burst: u32,
    /// Calls admitted since start.
    pub admitted: u64,
    /// Calls rejected since start.
    pub rejections: u64,
    /// Identifiers with a bucket that is not full.
    pub tracked_identifiers: usize,
}

/// A keyed GCRA rate limiter.
pub struct KeyedLimiter {
    limit: RateLimit,
    governor: Governor,
    clock: TokioClock,
    hasher: Hasher,
    admitted: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("limit", &self.limit)
            .finish()
    }
}

impl KeyedLimiter {
    /// A limiter with every bucket full.
    pub fn new(limit: RateLimit) -> KeyedLimiter {
        let clock = TokioClock::default();
        let hasher = Hasher::default();
        KeyedLimiter {
            governor: RateLimiter::dashmap_with_clock_and_hasher(
                limit.quota(),
                clock,
                hasher.clone(),
            ),
            limit,
            clock,
            hasher,
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Its limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one call from `identifier`'s bucket, or says how long until
    /// one is available.
    pub fn check(&self, identifier: &str) -> Result<(), Duration> {
        self.check_at(identifier, tokio::time::Instant::now())
    }

    /// [`KeyedLimiter::check`] at `now` (read by the caller just before).
    pub fn check_at(&self, identifier: &str, now: tokio::time::Instant) -> Result<(), Duration> {
        let key = self.hasher.hash_one(identifier);
        let lend = Lend::new(now);
        let outcome = self.governor.check_key(&key);
        let counter = if outcome.is_ok() {
            &self.admitted
        } else {
            &self.rejected
        };
        if counter.fetch_add(1, Ordering::Relaxed) & 0xffff == 0xffff {
            self.governor.retain_recent();
        }
        let retry = outcome.map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        drop(lend);
        retry
    }

    /// The limiter's figures now.
    pub fn snapshot(&self) -> LimiterSnapshot {
        LimiterSnapshot {
            rate: self.limit.calls.get(),
            period: humantime::format_duration(self.limit.period).to_string(),
            burst: self.limit.burst.get(),
            admitted: self.admitted.load(Ordering::Relaxed),
            rejections: self.rejected.load(Ordering::Relaxed),
            tracked_identifiers: self.governor.len(),
        }
    }
}
