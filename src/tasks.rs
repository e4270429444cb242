//! Background tasks: every periodic job of the engine (flush, rollup,
//! compaction, baseline refresh, alert delivery, and whatever later rooms
//! register) is one [`Task`] run by one generic runner, so each has a name,
//! a schedule read from the engine's [`Clock`](crate::Clock), a status
//! (runs, failures, last run, last duration, last error) visible in one
//! place, and one way to stop.
//!
//! Invariants:
//! - A task never runs twice at once: the runner thread and an owner calling
//!   [`Tasks::run_due`] take the same per-task run lock.
//! - Deadlines are clock time. A task is due when `clock.now_ms()` reaches
//!   its `next_run_ms`; a clock that jumps (a test's `ManualClock`) wakes
//!   every runner to look again, so tests drive tasks by moving the clock.
//! - A failing or panicking job is recorded in its status and logged, and
//!   the task runs again at its next deadline; it never stops the runner or
//!   any other task.
//! - [`Tasks::stop`] wakes every runner, waits for runs in progress to end,
//!   and joins the threads; no job runs after it returns.
//!
//! Jobs run on plain threads, not an async runtime: an embedder of the
//! library needs no runtime, and the jobs do blocking redb I/O anyway.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::clock::SharedClock;
use crate::error::Result;

/// When a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// This long after the previous run started (the first run one period
    /// after the task is registered).
    Every(Duration),
    /// At every multiple of the period since the Unix epoch (e.g. each
    /// minute boundary).
    Aligned(Duration),
}

impl Schedule {
    fn period_ms(self) -> i64 {
        let (Schedule::Every(d) | Schedule::Aligned(d)) = self;
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    /// The first deadline after a run (or registration) at `now_ms`.
    fn next_after(self, now_ms: i64) -> i64 {
        let p = self.period_ms();
        match self {
            Schedule::Every(_) => now_ms.saturating_add(p),
            Schedule::Aligned(_) => (now_ms.div_euclid(p) + 1).saturating_mul(p),
        }
    }
}

/// What a task has done, for `/metrics` and health checks.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// The task's name (`flush`, `rollup`, `compaction`, ...).
    pub name: &'static str,
    /// Period in milliseconds.
    pub period_ms: i64,
    /// Runs completed (successful or not).
    pub runs: u64,
    /// Runs that returned an error or panicked.
    pub failures: u64,
    /// Clock time (Unix ms) the last run started at.
    pub last_run_ms: Option<i64>,
    /// Wall time the last run took.
    pub last_duration: Duration,
    /// The last run's error; `None` when it succeeded.
    pub last_error: Option<String>,
    /// Clock time (Unix ms) of the next scheduled run.
    pub next_run_ms: i64,
}

type Job = Box<dyn Fn(i64) -> Result<()> + Send + Sync>;

#[derive(Debug, Default)]
struct Signal {
    /// Run now, whatever the deadline.
    wake: bool,
    /// The clock jumped or the task set is stopping: look again.
    recheck: bool,
}

/// One registered task.
pub struct Task {
    schedule: Schedule,
    job: Job,
    run_lock: Mutex<()>,
    status: Mutex<TaskStatus>,
    signal: Mutex<Signal>,
    cond: Condvar,
}

impl Task {
    fn notify(&self, wake: bool) {
        let mut s = self.signal.lock();
        s.recheck = true;
        s.wake |= wake;
        self.cond.notify_all();
    }

    /// Runs the job now (at clock time `now_ms`) and records the outcome.
    fn run(&self, now_ms: i64) {
        let _one = self.run_lock.lock();
        let name = self.status.lock().name;
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.job)(now_ms)));
        let elapsed = started.elapsed();
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
        };
        if let Some(e) = &error {
            tracing::error!(task = name, error = %e, "background task failed; it runs again at its next deadline");
        }
        let mut st = self.status.lock();
        st.runs += 1;
        st.failures += u64::from(error.is_some());
        st.last_run_ms = Some(now_ms);
        st.last_duration = elapsed;
        st.last_error = error;
        st.next_run_ms = self.schedule.next_after(now_ms);
    }

    fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.status.lock().next_run_ms
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// A registered task: wake it early or read its status.
#[derive(Clone)]
pub struct TaskHandle(Arc<Task>);

impl TaskHandle {
    /// Makes the task run as soon as its runner sees this (or at the next
    /// [`Tasks::run_due`]), whatever its deadline.
    pub fn wake(&self) {
        self.0.notify(true);
    }
}

struct Inner {
    clock: SharedClock,
    /// Start a runner thread per task (`false`: the owner calls `run_due`).
    background: bool,
    stopped: AtomicBool,
    tasks: Mutex<Vec<Arc<Task>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The engine's background tasks.
pub struct Tasks {
    inner: Arc<Inner>,
    /// Registered with the clock (which holds it weakly): wakes every runner
    /// when the clock jumps.
    _on_jump: Arc<dyn Fn() + Send + Sync>,
}

impl Tasks {
    /// An empty task set on `clock`; with `background`, every task gets a
    /// runner thread, otherwise the owner drives them with [`Tasks::run_due`].
    pub fn new(clock: SharedClock, background: bool) -> Tasks {
        let inner = Arc::new(Inner {
            clock,
            background,
            stopped: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let on_jump: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                for t in inner.tasks.lock().iter() {
                    t.notify(false);
                }
            }
        });
        inner.clock.on_jump(Arc::downgrade(&on_jump));
        Tasks {
            inner,
            _on_jump: on_jump,
        }
    }

    /// Registers a task; with background runners its thread starts now.
    pub fn register(
        &self,
        name: &'static str,
        schedule: Schedule,
        job: impl Fn(i64) -> Result<()> + Send + Sync + 'static,
    ) -> Result<TaskHandle> {
        let now = self.inner.clock.now_ms();
        let task = Arc::new(Task {
            schedule,
            job: Box::new(job),
            run_lock: Mutex::new(()),
            status: Mutex::new(TaskStatus {
                name,
                period_ms: schedule.period_ms(),
                runs: 0,
                failures: 0,
                last_run_ms: None,
                last_duration: Duration::ZERO,
                last_error: None,
                next_run_ms: schedule.next_after(now),
            }),
            signal: Mutex::new(Signal::default()),
            cond: Condvar::new(),
        });
        self.inner.tasks.lock().push(task.clone());
        if self.inner.background && !self.inner.stopped.load(Ordering::SeqCst) {
            let (inner, t) = (self.inner.clone(), task.clone());
            let thread = std::thread::Builder::new()
                .name(format!("scopemon-{name}"))
                .spawn(move || runner(&inner, &t))?;
            self.inner.threads.lock().push(thread);
        }
        Ok(TaskHandle(task))
    }

    /// Runs, on the calling thread, every task that is due at the clock's
    /// time or was woken; returns how many ran. For owners that run without
    /// background threads (tests, tools).
    pub fn run_due(&self) -> usize {
        let now = self.inner.clock.now_ms();
        let tasks: Vec<Arc<Task>> = self.inner.tasks.lock().clone();
        let mut ran = 0;
        for t in tasks {
            let woken = std::mem::take(&mut t.signal.lock().wake);
            if woken || t.due(now) {
                t.run(now);
                ran += 1;
            }
        }
        ran
    }

    /// The status of every task, in registration order.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.inner
            .tasks
            .lock()
            .iter()
            .map(|t| t.status.lock().clone())
            .collect()
    }

    /// Stops every runner, waiting for runs in progress. Idempotent.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for t in self.inner.tasks.lock().iter() {
            t.notify(false);
        }
        let threads: Vec<JoinHandle<()>> = self.inner.threads.lock().drain(..).collect();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a background task runner panicked outside its job");
            }
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Longest real-time nap between two looks at the clock (a clock that does
/// not announce its jumps, e.g. the wall clock being set, is seen within it).
const MAX_NAP: Duration = Duration::from_secs(30);

fn runner(inner: &Inner, task: &Task) {
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.clock.now_ms();
        let woken = std::mem::take(&mut task.signal.lock().wake);
        if woken || task.due(now) {
            task.run(now);
            continue;
        }
        let wait_ms = task.status.lock().next_run_ms.saturating_sub(now);
        let nap = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1)).min(MAX_NAP);
        let mut s = task.signal.lock();
        if !(s.wake || s.recheck || inner.stopped.load(Ordering::SeqCst)) {
            task.cond.wait_for(&mut s, nap);
        }
        s.recheck = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::AtomicU64;

    /// The status of task `name`.
    fn status(tasks: &Tasks, name: &str) -> TaskStatus {
        let all = tasks.statuses();
        all.into_iter()
            .find(|s| s.name == name)
            .expect("registered")
    }

    fn counter_job(n: &Arc<AtomicU64>) -> impl Fn(i64) -> Result<()> + Send + Sync + 'static {
        let n = n.clone();
        move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn owner_driven_tasks_follow_the_clock() {
        let clock = ManualClock::new(1_000);
        let tasks = Tasks::new(Arc::new(clock.clone()), false);
        let n = Arc::new(AtomicU64::new(0));
        let h = tasks
            .register(
                "t",
                Schedule::Every(Duration::from_secs(5)),
                counter_job(&n),
            )
            .unwrap();
        assert_eq!(tasks.run_due(), 0);
        clock.advance_ms(4_999);
        assert_eq!(tasks.run_due(), 0);
        clock.advance_ms(1);
        assert_eq!(tasks.run_due(), 1);
        assert_eq!(tasks.run_due(), 0, "the next deadline is a period later");
        h.wake();
        assert_eq!(
            tasks.run_due(),
            1,
            "a woken task runs whatever its deadline"
        );
        let st = status(&tasks, "t");
        assert_eq!((st.runs, st.failures, st.last_run_ms), (2, 0, Some(6_000)));
        assert_eq!(st.next_run_ms, 11_000);
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn aligned_tasks_run_at_boundaries() {
        let clock = ManualClock::new(61_234);
        let tasks = Tasks::new(Arc::new(clock.clone()), false);
        tasks
            .register("m", Schedule::Aligned(Duration::from_secs(60)), |_| Ok(()))
            .unwrap();
        assert_eq!(status(&tasks, "m").next_run_ms, 120_000);
        clock.set(120_000);
        assert_eq!(tasks.run_due(), 1);
        assert_eq!(status(&tasks, "m").next_run_ms, 180_000);
    }

    #[test]
    fn failures_and_panics_are_recorded_and_do_not_stop_others() {
        let clock = ManualClock::new(0);
        let tasks = Tasks::new(Arc::new(clock.clone()), false);
        let every = Schedule::Every(Duration::from_secs(1));
        tasks
            .register("bad", every, |_| {
                Err(crate::Error::InvalidParameter("boom".into()))
            })
            .unwrap();
        tasks
            .register("panics", every, |_| panic!("kaboom"))
            .unwrap();
        let n = Arc::new(AtomicU64::new(0));
        tasks.register("good", every, counter_job(&n)).unwrap();
        clock.advance_ms(1_000);
        assert_eq!(tasks.run_due(), 3);
        assert_eq!(status(&tasks, "bad").last_error.as_deref(), Some("boom"));
        assert_eq!(status(&tasks, "panics").failures, 1);
        assert!(
            status(&tasks, "panics")
                .last_error
                .is_some_and(|e| e.contains("kaboom"))
        );
        assert_eq!(
            (status(&tasks, "good").runs, status(&tasks, "good").failures),
            (1, 0)
        );
        assert_eq!(status(&tasks, "good").last_error, None);
    }

    /// Waits (bounded, real time) until `cond` holds; the runners are real
    /// threads, so the test polls rather than assuming a timing.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        cond()
    }

    #[test]
    fn runner_threads_wake_when_the_manual_clock_moves() {
        let clock = ManualClock::new(0);
        let tasks = Tasks::new(Arc::new(clock.clone()), true);
        let n = Arc::new(AtomicU64::new(0));
        let h = tasks
            .register(
                "t",
                Schedule::Every(Duration::from_secs(3600)),
                counter_job(&n),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            n.load(Ordering::SeqCst),
            0,
            "not due: an hour of clock time"
        );
        clock.advance(Duration::from_secs(3600));
        assert!(eventually(|| n.load(Ordering::SeqCst) == 1));
        h.wake();
        assert!(eventually(|| n.load(Ordering::SeqCst) == 2));
        tasks.stop();
        clock.advance(Duration::from_secs(7200));
        h.wake();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(n.load(Ordering::SeqCst), 2, "nothing runs after stop");
    }
}
