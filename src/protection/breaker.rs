//! The circuit breaker: closed → open → half-open → closed.
//!
//! Invariants:
//! - Closed admits every call. It opens when the last call made the run of
//!   consecutive failures reach `consecutive_failures`, or when the sliding
//!   window holds at least `minimum_calls` calls of which at least
//!   `failure_rate_threshold` percent failed.
//! - A call fails when it returned `Err`, timed out, or (with `slow_call`
//!   set) took at least `slow_call`.
//! - Open rejects every call until `reset_timeout` has passed since it
//!   opened; the first call after that moves it to half-open.
//! - Half-open admits at most `half_open_calls` trial calls. One failed
//!   trial re-opens the breaker (for a new `reset_timeout`); when all of
//!   them succeeded it closes with an empty window. A trial whose future is
//!   dropped before it finished gives its slot back.
//! - Every transition bumps a generation; a result reported by a call
//!   admitted under an older generation is counted in the totals but never
//!   moves the state (a slow call admitted before the breaker opened cannot
//!   close it, nor re-open a breaker that closed meanwhile).
//! - Time is tokio's ([`tokio::time::Instant`]), so tests drive it with
//!   `tokio::time::pause()` / `advance()`.
//! - Transitions are logged (`warn` on open, `info` otherwise), counted,
//!   and passed to the listener after the state lock is released.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// Which calls the failure rate is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The calls of the last `Duration` (kept in ten sub-buckets, so a call
    /// leaves the window up to a tenth of it late).
    Time(Duration),
    /// The last `n` calls.
    Count(u32),
}

/// Breaker settings. Defaults follow the original design: 5 consecutive
/// failures, a 60 s monitor window, 30 s in the open state.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failure rate (percent) of the window that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Calls the window must hold before its failure rate counts.
    pub minimum_calls: u32,
    /// The sliding window.
    pub window: SlidingWindow,
    /// Consecutive failures that open the breaker (`None` = off).
    pub consecutive_failures: Option<u32>,
    /// A call at least this slow counts as failed (`None` = off).
    pub slow_call: Option<Duration>,
    /// Time spent open before trial calls are let through.
    pub reset_timeout: Duration,
    /// Trial calls let through half-open (at least 1).
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate_threshold: 50.0,
            minimum_calls: 10,
            window: SlidingWindow::Time(Duration::from_secs(60)),
            consecutive_failures: Some(5),
            slow_call: None,
            reset_timeout: Duration::from_secs(30),
            half_open_calls: 1,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few trial calls pass.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    fn from_code(v: u64) -> BreakerState {
        match v & 3 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// One state change, as given to a transition listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's name (the protection key).
    pub name: String,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// Called with every transition (outside the breaker's lock).
pub type TransitionListener = Arc<dyn Fn(&Transition) + Send + Sync>;

/// A breaker's figures, as `GET /v1/protection` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Failed share of the window's calls, percent.
    pub failure_rate: f64,
    /// Calls in the window.
    pub window_calls: u64,
    /// Failed calls in the window.
    pub window_failures: u64,
    /// Current run of consecutive failures.
    pub consecutive_failures: u32,
    /// Calls that ran to the end (succeeded or failed) since start.
    pub calls: u64,
    /// Of those, the failed ones.
    pub failures: u64,
    /// Calls rejected since start.
    pub rejections: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// Times it went half-open.
    pub half_opened: u64,
    /// Times it closed again.
    pub closed: u64,
}

/// Failure counts over the last calls.
#[derive(Debug)]
enum Window {
    Time {
        width_ns: u64,
        /// (sub-window epoch, calls, failures), indexed by epoch % 10.
        buckets: [(u64, u32, u32); 10],
    },
    Count {
        /// Outcomes of the last calls, `true` = failed.
        ring: Vec<bool>,
        next: usize,
        len: usize,
        failures: usize,
    },
}

impl Window {
    fn new(w: SlidingWindow) -> Window {
        match w {
            SlidingWindow::Time(d) => Window::Time {
                width_ns: u64::try_from(d.as_nanos() / 10).unwrap_or(u64::MAX).max(1),
                buckets: [(u64::MAX, 0, 0); 10],
            },
            SlidingWindow::Count(n) => Window::Count {
                ring: vec![false; n.max(1) as usize],
                next: 0,
                len: 0,
                failures: 0,
            },
        }
    }

    fn push(&mut self, failed: bool, now_ns: u64) {
        match self {
            Window::Time { width_ns, buckets } => {
                let epoch = now_ns / *width_ns;
                let b = &mut buckets[(epoch % 10) as usize];
                if b.0 != epoch {
                    *b = (epoch, 0, 0);
                }
                b.1 = b.1.saturating_add(1);
                b.2 = b.2.saturating_add(u32::from(failed));
            }
            Window::Count {
                ring,
                next,
                len,
                failures,
            } => {
                if *len == ring.len() {
                    *failures -= usize::from(ring[*next]);
                } else {
                    *len += 1;
                }
                ring[*next] = failed;
                *failures += usize::from(failed);
                *next = (*next + 1) % ring.len();
            }
        }
    }

    /// (calls, failures) in the window at `now_ns`.
    fn totals(&self, now_ns: u64) -> (u64, u64) {
        match self {
            Window::Time { width_ns, buckets } => {
                let epoch = now_ns / *width_ns;
                buckets
                    .iter()
                    .filter(|b| b.0 <= epoch && epoch - b.0 < 10)
                    .fold((0, 0), |(c, f), b| (c + u64::from(b.1), f + u64::from(b.2)))
            }
            Window::Count { len, failures, .. } => (*len as u64, *failures as u64),
        }
    }
}

#[derive(Debug)]
struct Core {
    state: BreakerState,
    generation: u64,
    opened_at: Instant,
    window: Window,
    consecutive: u32,
    trials_in_flight: u32,
    trial_successes: u32,
    calls: u64,
    failures: u64,
}

/// A circuit breaker. Cheap to consult when closed (one atomic load to
/// admit, one short lock to record).
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    /// `generation << 2 | state code`, as of the last transition: the
    /// lock-free closed path reads both at once.
    state: AtomicU64,
    core: Mutex<Core>,
    epoch: Instant,
    listener: Option<TransitionListener>,
    rejections: AtomicU64,
    /// Transitions into open, half-open, closed.
    entered: [AtomicU64; 3],
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// An admitted call's place in the breaker: the generation it was admitted
/// under and whether it is a half-open trial.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    trial: bool,
}

/// Leave to make one call; report its result with [`Permit::record`].
/// Dropping it unreported (the call was cancelled) records nothing and
/// gives a half-open trial slot back.
#[must_use = "report the call's result with Permit::record"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Option<Ticket>,
}

impl Permit<'_> {
    /// Reports the call: `ok` is false for an `Err` or a timeout; a call of
    /// at least `slow_call` counts as failed either way.
    pub fn record(mut self, ok: bool, elapsed: Duration) {
        if let Some(t) = self.ticket.take() {
            self.breaker.complete(t, ok, elapsed, Instant::now());
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.breaker.release(t);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::with_listener(name, config, None)
    }

    /// A closed breaker whose transitions are also given to `listener`.
    pub fn with_listener(
        name: impl Into<String>,
        mut config: BreakerConfig,
        listener: Option<TransitionListener>,
    ) -> CircuitBreaker {
        config.half_open_calls = config.half_open_calls.max(1);
        let now = Instant::now();
        CircuitBreaker {
            name: name.into(),
            state: AtomicU64::new(0),
            core: Mutex::new(Core {
                state: BreakerState::Closed,
                generation: 0,
                opened_at: now,
                window: Window::new(config.window),
                consecutive: 0,
                trials_in_flight: 0,
                trial_successes: 0,
                calls: 0,
                failures: 0,
            }),
            config,
            epoch: now,
            listener,
            rejections: AtomicU64::new(0),
            entered: Default::default(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (an open breaker whose reset timeout has passed
    /// still says `open` until a call arrives).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_code(self.state.load(Ordering::Acquire))
    }

    /// Asks to make a call: a permit, or how long to wait before retrying.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        self.acquire().map(|t| Permit {
            breaker: self,
            ticket: Some(t),
        })
    }

    /// [`CircuitBreaker::try_acquire`] without the borrow: the caller must
    /// end the ticket with [`CircuitBreaker::complete`] or
    /// [`CircuitBreaker::release`].
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Ticket, Duration> {
        match self.closed_ticket() {
            Some(t) => Ok(t),
            None => self.acquire_slow(Instant::now()),
        }
    }

    #[inline]
    fn closed_ticket(&self) -> Option<Ticket> {
        let word = self.state.load(Ordering::Acquire);
        (word & 3 == 0).then_some(Ticket {
            generation: word >> 2,
            trial: false,
        })
    }

    /// [`CircuitBreaker::acquire`] at `now` (read by the caller just before;
    /// only consulted when the breaker is not closed).
    #[inline]
    pub(crate) fn acquire_at(&self, now: Instant) -> Result<Ticket, Duration> {
        match self.closed_ticket() {
            Some(t) => Ok(t),
            None => self.acquire_slow(now),
        }
    }

    #[cold]
    fn acquire_slow(&self, now: Instant) -> Result<Ticket, Duration> {
        let mut core = self.core.lock();
        let mut moved = None;
        if core.state == BreakerState::Open {
            let open_for = now.saturating_duration_since(core.opened_at);
            if open_for < self.config.reset_timeout {
                drop(core);
                self.rejections.fetch_add(1, Ordering::Relaxed);
                return Err(self.config.reset_timeout - open_for);
            }
            moved = self.transition(&mut core, BreakerState::HalfOpen, now);
        }
        let generation = core.generation;
        let result = match core.state {
            BreakerState::Closed => Ok(Ticket {
                generation,
                trial: false,
            }),
            _ if core.trials_in_flight + core.trial_successes < self.config.half_open_calls => {
                core.trials_in_flight += 1;
                Ok(Ticket {
                    generation,
                    trial: true,
                })
            }
            // Every trial slot is taken: ask to come back soon.
            _ => Err(Duration::from_secs(1)),
        };
        drop(core);
        self.announce(moved);
        if result.is_err() {
            self.rejections.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Ends a ticket whose call finished (see [`Permit::record`]).
    pub(crate) fn complete(&self, t: Ticket, ok: bool, elapsed: Duration, now: Instant) {
        let slow = self.config.slow_call.is_some_and(|s| elapsed >= s);
        self.finish(t.generation, t.trial, ok && !slow, now);
    }

    /// Ends a ticket whose call never finished: a trial gives its slot back.
    pub(crate) fn release(&self, t: Ticket) {
        if t.trial {
            let mut core = self.core.lock();
            if core.generation == t.generation {
                core.trials_in_flight = core.trials_in_flight.saturating_sub(1);
            }
        }
    }

    fn finish(&self, generation: u64, trial: bool, ok: bool, now: Instant) {
        let mut core = self.core.lock();
        core.calls += 1;
        core.failures += u64::from(!ok);
        let moved = if generation != core.generation {
            None
        } else if trial {
            core.trials_in_flight = core.trials_in_flight.saturating_sub(1);
            if !ok {
                self.transition(&mut core, BreakerState::Open, now)
            } else {
                core.trial_successes += 1;
                if core.trial_successes >= self.config.half_open_calls {
                    self.transition(&mut core, BreakerState::Closed, now)
                } else {
                    None
                }
            }
        } else {
            self.record_closed(&mut core, ok, now)
        };
        drop(core);
        self.announce(moved);
    }

    fn record_closed(&self, core: &mut Core, ok: bool, now: Instant) -> Option<Transition> {
        let now_ns = self.nanos(now);
        core.window.push(!ok, now_ns);
        if ok {
            // A success can neither extend a run of failures nor raise
            // the failure rate.
            core.consecutive = 0;
            return None;
        }
        core.consecutive += 1;
        let by_run = self
            .config
            .consecutive_failures
            .is_some_and(|n| n > 0 && core.consecutive >= n);
        let (calls, failures) = core.window.totals(now_ns);
        let by_rate = calls > 0
            && calls >= u64::from(self.config.minimum_calls)
            && failures as f64 * 100.0 >= self.config.failure_rate_threshold * calls as f64;
        if by_run || by_rate {
            self.transition(core, BreakerState::Open, now)
        } else {
            None
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Moves to `to` under the lock; the caller announces it after unlocking.
    fn transition(&self, core: &mut Core, to: BreakerState, now: Instant) -> Option<Transition> {
        let from = core.state;
        if from == to {
            return None;
        }
        core.state = to;
        core.generation += 1;
        core.trials_in_flight = 0;
        core.trial_successes = 0;
        core.consecutive = 0;
        if to == BreakerState::Open {
            core.opened_at = now;
        }
        if to == BreakerState::Closed {
            core.window = Window::new(self.config.window);
        }
        self.state
            .store(core.generation << 2 | to.code(), Ordering::Release);
        Some(Transition {
            name: self.name.clone(),
            from,
            to,
        })
    }

    fn announce(&self, t: Option<Transition>) {
        let Some(t) = t else { return };
        let idx = match t.to {
            BreakerState::Open => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Closed => 2,
        };
        self.entered[idx].fetch_add(1, Ordering::Relaxed);
        if t.to == BreakerState::Open {
            tracing::warn!(breaker = %t.name, from = t.from.as_str(), "circuit breaker opened");
        } else {
            tracing::info!(breaker = %t.name, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker moved");
        }
        if let Some(l) = &self.listener {
            l(&t);
        }
    }

    /// The breaker's figures now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let core = self.core.lock();
        let (window_calls, window_failures) = core.window.totals(self.nanos(Instant::now()));
        let snap = BreakerSnapshot {
            state: core.state,
            failure_rate: if window_calls == 0 {
                0.0
            } else {
                window_failures as f64 * 100.0 / window_calls as f64
            },
            window_calls,
            window_failures,
            consecutive_failures: core.consecutive,
            calls: core.calls,
            failures: core.failures,
            rejections: self.rejections.load(Ordering::Relaxed),
            opened: self.entered[0].load(Ordering::Relaxed),
            half_opened: self.entered[1].load(Ordering::Relaxed),
            closed: self.entered[2].load(Ordering::Relaxed),
        };
        drop(core);
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let mut w = Window::new(SlidingWindow::Count(3));
        for failed in [true, true, false, false] {
            w.push(failed, 0);
        }
        assert_eq!(w.totals(0), (3, 1));
    }

    #[test]
    fn time_window_forgets_old_sub_windows() {
        let mut w = Window::new(SlidingWindow::Time(Duration::from_secs(10)));
        w.push(true, 0);
        w.push(false, 5_000_000_000);
        assert_eq!(w.totals(5_000_000_000), (2, 1));
        assert_eq!(w.totals(10_500_000_000), (1, 0));
        assert_eq!(w.totals(16_000_000_000), (0, 0));
    }
}
