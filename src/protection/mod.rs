//! ServiceProtection: a circuit breaker, a keyed rate limiter, a call
//! timeout and a memory gate in front of any async call, applied by the
//! [`Infrastructure::execute_protected`] facade, by the tower
//! [`ProtectionLayer`], or by [`ServiceProtection::protected_call`] on a
//! plain struct.
//!
//! Invariants:
//! - The protections apply in a fixed order: memory gate → rate limiter →
//!   circuit breaker → timeout → the call. A call stopped by one never
//!   reaches the next (a rate-limited call is not seen by the breaker).
//! - Every call that ran is recorded once into the monitor (namespace of
//!   the [`Infrastructure`], metric = the protection key): its latency and
//!   outcome (`Err` and timeouts are errors). Every rejected call is
//!   counted (as a zero latency, outcome `error`) in metric
//!   `<key>.rejected` tagged `reason=memory_pressure|rate_limited|circuit_open`,
//!   so rejections never skew the call latencies.
//! - A caller learns which protection stopped a call from the typed
//!   [`ProtectionError`]; rejections carry `retry_after` when known.
//! - Settings per key: code ([`Infrastructure::configure`]) or the
//!   built-in defaults, with the `[protection.<key>]` table of the config
//!   file laid over them (the operator has the last word).
//!
//! ```no_run
//! # async fn demo(monitor: std::sync::Arc<scopemon::Monitor>) {
//! use scopemon::protection::{CallOptions, Infrastructure, ProtectionError};
//! let infra = Infrastructure::builder().monitor(monitor, "production").build();
//! let r = infra
//!     .execute_protected("payments.charge", &CallOptions::DEFAULT, async {
//!         Ok::<_, std::io::Error>(42)
//!     })
//!     .await;
//! match r {
//!     Ok(v) => println!("{v}"),
//!     Err(ProtectionError::CircuitOpen { retry_after }) => println!("back in {retry_after:?}"),
//!     Err(e) => println!("{e}"),
//! }
//! # }
//! ```

mod breaker;
mod call;
mod facade;
mod layer;
mod limiter;

use std::time::Duration;

pub use breaker::{
    BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker, Permit, SlidingWindow,
    Transition, TransitionListener,
};
pub use call::ProtectedCall;
pub use facade::{
    AlwaysAdmit, CallOptions, Infrastructure, InfrastructureBuilder, KeySnapshot, MemoryGate,
    Protection, ProtectionSnapshot, ServiceProtection,
};
pub use layer::{ProtectionFuture, ProtectionLayer, ProtectionService};
pub use limiter::{KeyedLimiter, LimiterSnapshot, RateLimit, TokioClock, TokioInstant};

use crate::config::ProtectionConfig;

/// Why a protected call did not return the call's own result.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError<E> {
    /// The memory gate refused the call.
    #[error("refused under memory pressure")]
    MemoryPressure,
    /// The caller's rate limit is spent.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// When the next call would pass.
        retry_after: Duration,
    },
    /// The circuit breaker is open (or its half-open trials are taken).
    #[error("circuit open; retry after {retry_after:?}")]
    CircuitOpen {
        /// When the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// The call did not finish within the key's timeout.
    #[error("timed out")]
    Timeout,
    /// The call ran and returned this error.
    #[error("{0}")]
    Inner(#[source] E),
}

impl<E> ProtectionError<E> {
    /// `memory_pressure`, `rate_limited`, `circuit_open`, `timeout` or
    /// `inner`.
    pub fn code(&self) -> &'static str {
        match self {
            ProtectionError::MemoryPressure => "memory_pressure",
            ProtectionError::RateLimited { .. } => "rate_limited",
            ProtectionError::CircuitOpen { .. } => "circuit_open",
            ProtectionError::Timeout => "timeout",
            ProtectionError::Inner(_) => "inner",
        }
    }

    /// When to retry, for rejections that know.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProtectionError::RateLimited { retry_after }
            | ProtectionError::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// True when a protection stopped the call before it ran.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ProtectionError::MemoryPressure
                | ProtectionError::RateLimited { .. }
                | ProtectionError::CircuitOpen { .. }
        )
    }

    /// The call's own error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ProtectionError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Maps the call's own error.
    pub fn map_inner<F>(self, f: impl FnOnce(E) -> F) -> ProtectionError<F> {
        match self {
            ProtectionError::MemoryPressure => ProtectionError::MemoryPressure,
            ProtectionError::RateLimited { retry_after } => {
                ProtectionError::RateLimited { retry_after }
            }
            ProtectionError::CircuitOpen { retry_after } => {
                ProtectionError::CircuitOpen { retry_after }
            }
            ProtectionError::Timeout => ProtectionError::Timeout,
            ProtectionError::Inner(e) => ProtectionError::Inner(f(e)),
        }
    }
}

/// The protections of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Call timeout (`None` = none). Default 5 s.
    pub timeout: Option<Duration>,
    /// Rate limit per identifier (`None` = no limiter). Default 100 per
    /// 60 s, bursts of 120.
    pub rate_limit: Option<RateLimit>,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Whether the memory gate applies. Default true.
    pub memory_gate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Some(Duration::from_secs(5)),
            rate_limit: Some(RateLimit::default()),
            breaker: BreakerConfig::default(),
            memory_gate: true,
        }
    }
}

impl Settings {
    /// These settings with the keys given in a `[protection.<key>]` table
    /// replacing theirs (values as checked by [`ProtectionConfig::validate`]).
    pub fn overlay(mut self, c: &ProtectionConfig) -> Settings {
        if let Some(t) = c.timeout {
            self.timeout = (!t.is_zero()).then_some(t);
        }
        self.rate_limit = match (c.rate_limit, self.rate_limit) {
            (Some(0), _) => None,
            (Some(n), base) => {
                let base = base.unwrap_or_default();
                let burst = c.burst.unwrap_or(n.saturating_add(n / 5));
                Some(RateLimit::new(
                    n,
                    c.rate_period.unwrap_or(base.period),
                    burst,
                ))
            }
            (None, Some(base)) => Some(RateLimit::new(
                base.calls.get(),
                c.rate_period.unwrap_or(base.period),
                c.burst.unwrap_or(base.burst.get()),
            )),
            (None, None) => None,
        };
        let b = &mut self.breaker;
        if let Some(r) = c.failure_rate_threshold {
            b.failure_rate_threshold = r;
        }
        if let Some(n) = c.minimum_calls {
            b.minimum_calls = n;
        }
        if let Some(w) = c.window {
            b.window = SlidingWindow::Time(w);
        }
        if let Some(n) = c.window_calls {
            b.window = SlidingWindow::Count(n);
        }
        if let Some(n) = c.consecutive_failures {
            b.consecutive_failures = (n > 0).then_some(n);
        }
        if let Some(d) = c.slow_call {
            b.slow_call = (!d.is_zero()).then_some(d);
        }
        if let Some(d) = c.reset_timeout {
            b.reset_timeout = d;
        }
        if let Some(n) = c.half_open_calls {
            b.half_open_calls = n.max(1);
        }
        if let Some(on) = c.memory_gate {
            self.memory_gate = on;
        }
        self
    }
}
