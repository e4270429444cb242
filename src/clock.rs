//! Time source shared by the whole engine.
//!
//! Everything that needs "now" asks a [`Clock`], so tests drive time with a
//! [`ManualClock`] instead of sleeping. Times are Unix milliseconds (`i64`).
//!
//! Background tasks wait for clock time, not wall time: a clock that can jump
//! (a [`ManualClock`] being set or advanced) tells every waiter registered
//! with [`Clock::on_jump`], so a test that advances the clock past a task's
//! deadline sees the task run without sleeping for real.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Called when a clock jumps; held weakly by the clock.
pub type JumpWaker = Weak<dyn Fn() + Send + Sync>;

/// A source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Registers `wake`, called after every jump of this clock. The system
    /// clock never jumps, so the default does nothing.
    fn on_jump(&self, wake: JumpWaker) {
        let _ = wake;
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to; cheap to clone (shared state).
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    wakers: Arc<Mutex<Vec<JumpWaker>>>,
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(now_ms)),
            wakers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Moves the clock to `now_ms` (it may go backwards; the engine copes).
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
        self.jumped();
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.jumped();
    }

    /// Moves the clock forward by a duration.
    pub fn advance(&self, d: std::time::Duration) {
        self.advance_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }

    fn jumped(&self) {
        let live: Vec<Arc<dyn Fn() + Send + Sync>> = {
            let mut wakers = self.wakers.lock();
            wakers.retain(|w| w.strong_count() > 0);
            wakers.iter().filter_map(Weak::upgrade).collect()
        };
        for wake in live {
            wake();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn on_jump(&self, wake: JumpWaker) {
        self.wakers.lock().push(wake);
    }
}

/// The clock handle the engine passes around.
pub type SharedClock = Arc<dyn Clock>;
