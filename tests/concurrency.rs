//! Everything at once (issue 9, item 7): library ingest from several
//! threads, queries, flushes, rollups, online compaction and baseline
//! computation run together for a bounded time over one engine, under a
//! watchdog that fails the test (naming the worker) when any thread stops
//! making progress, instead of hanging.
//!
//! Invariant checked while it runs: time is cut into epochs, one minute of
//! (manual) clock each. Writers record into the current epoch's minute and
//! publish, for every epoch they leave, how many samples they recorded
//! before it; an epoch every writer has left is closed, and its count is
//! known exactly. A query of closed epochs must answer exactly that count,
//! whatever flushes, rollups and compactions are doing: a snapshot that
//! sees a flush's delta and its in-flight stats both (double count) or
//! neither (the commit gate not covering the read transaction) is caught,
//! and so is any partial bucket. At the end every count adds up, also after
//! a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use scopemon::{
    Clock, CompactOptions, Config, Kind, MINUTE_MS, ManualClock, Monitor, Outcome, QuerySpec,
    Resolution, Sample, Tags, Window,
};

use common::T0;

/// How long the load runs.
const RUN: Duration = Duration::from_secs(4);
/// A worker whose progress counter stands still this long is stuck.
const STALL: Duration = Duration::from_secs(10);
const WRITERS: usize = 2;
const METRIC: &str = "conc.count";

/// Start of epoch `e`'s minute.
fn epoch_start(e: usize) -> i64 {
    T0 + e as i64 * MINUTE_MS
}

/// What the writers publish: `cum[w][e]` = samples writer `w` recorded in
/// epochs before `e`, for every epoch `e` it has entered.
struct Ledger {
    epoch: AtomicUsize,
    cum: Vec<Mutex<Vec<u64>>>,
}

impl Ledger {
    /// The newest epoch every writer has left behind (all epochs before it
    /// are closed), with each writer's cumulative counts up to it.
    fn closed(&self) -> (usize, Vec<Vec<u64>>) {
        let cums: Vec<Vec<u64>> = self.cum.iter().map(|c| c.lock().clone()).collect();
        let e = cums.iter().map(|c| c.len() - 1).min().unwrap_or(0);
        (e, cums)
    }
}

fn spec(ns: &str, window: Window, from: i64, to: i64) -> QuerySpec {
    QuerySpec {
        namespace: ns.into(),
        metric: METRIC.into(),
        kind: Kind::Throughput,
        window,
        from,
        to,
        tags: Tags::empty(),
    }
}

fn sample<'a>(ns: &'a str, tags: &'a [(&'a str, &'a str)], ts: i64) -> Sample<'a> {
    Sample {
        namespace: ns,
        metric: METRIC,
        kind: Kind::Throughput,
        value: 1.0,
        tags,
        outcome: Outcome::Ok,
        timestamp_ms: Some(ts),
    }
}

/// A background job a worker repeats.
type Job = fn(&Monitor);

/// One worker: its name, its progress counter and its thread.
struct Worker {
    name: &'static str,
    progress: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

struct Crew {
    stop: Arc<AtomicBool>,
    workers: Vec<Worker>,
}

impl Crew {
    /// Starts `body` on its own thread, repeating it until stopped; each
    /// round counts as progress.
    fn spawn(&mut self, name: &'static str, mut body: impl FnMut() + Send + 'static) {
        let progress = Arc::new(AtomicU64::new(0));
        let (p, stop) = (progress.clone(), self.stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    body();
                    p.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawn");
        self.workers.push(Worker {
            name,
            progress,
            thread,
        });
    }

    /// Runs for `run`, watching every worker: fails naming a worker that
    /// made no progress for [`STALL`] (during the run or while stopping),
    /// and re-raises the first worker panic.
    fn watch(self, run: Duration) {
        let started = Instant::now();
        let mut last: Vec<(u64, Instant)> = self
            .workers
            .iter()
            .map(|w| (w.progress.load(Ordering::Relaxed), Instant::now()))
            .collect();
        let mut stopping_since: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let failed = self.workers.iter().any(|w| w.thread.is_finished());
            if stopping_since.is_none() && (failed || started.elapsed() >= run) {
                self.stop.store(true, Ordering::Relaxed);
                stopping_since = Some(Instant::now());
            }
            if stopping_since.is_some() && self.workers.iter().all(|w| w.thread.is_finished()) {
                break;
            }
            for (w, (seen, at)) in self.workers.iter().zip(last.iter_mut()) {
                let now = w.progress.load(Ordering::Relaxed);
                if now != *seen || w.thread.is_finished() {
                    *seen = now;
                    *at = Instant::now();
                } else if at.elapsed() >= STALL {
                    self.stop.store(true, Ordering::Relaxed);
                    panic!(
                        "watchdog: worker {:?} made no progress for {:?} ({} rounds done): \
                         deadlock or livelock",
                        w.name, STALL, now
                    );
                }
            }
        }
        for w in self.workers {
            if let Err(panic) = w.thread.join() {
                eprintln!("worker {:?} failed", w.name);
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn config(dir: &std::path::Path) -> Config {
    // "short" keeps minutes one hour: its samples (90 minutes old) expire
    // as soon as they are rolled up, so every compaction deletes buckets.
    let mut c =
        Config::from_toml("[retention.namespaces.\"short\"]\nminute = \"1h\"\n").expect("config");
    c.storage.data_dir = dir.to_path_buf();
    c
}

/// Samples of `ns` over every epoch (and the 90 minutes before T0).
fn total(m: &Monitor, ns: &str) -> (u64, f64) {
    let r = m
        .query(&spec(
            ns,
            Window::Range,
            T0 - 86_400_000,
            T0 + 30 * 86_400_000,
        ))
        .expect("query");
    r.points.first().map_or((0, 0.0), |p| (p.count, p.sum))
}

/// The exact check of closed epochs: the whole closed range, and the last
/// few closed minutes bucket by bucket.
fn check_closed(m: &Monitor, ledger: &Ledger, checks: &AtomicU64) {
    let (e, cums) = ledger.closed();
    if e == 0 {
        return;
    }
    let expected: u64 = cums.iter().map(|c| c[e]).sum();
    let r = m
        .query(&spec("conc", Window::Range, T0, epoch_start(e)))
        .expect("range query");
    let (count, sum) = r.points.first().map_or((0, 0.0), |p| (p.count, p.sum));
    assert_eq!(
        (count, sum),
        (expected, expected as f64),
        "epochs [0, {e}) are closed: a query saw {count} samples (sum {sum}), {expected} were recorded"
    );
    let from = e.saturating_sub(5);
    let r = m
        .query(&spec(
            "conc",
            Window::Buckets(Resolution::Minute),
            epoch_start(from),
            epoch_start(e),
        ))
        .expect("minute query");
    let want: Vec<(i64, u64)> = (from..e)
        .map(|x| (epoch_start(x), cums.iter().map(|c| c[x + 1] - c[x]).sum()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let got: Vec<(i64, u64)> = r.points.iter().map(|p| (p.start_ms, p.count)).collect();
    assert_eq!(got, want, "closed minutes [{from}, {e}): partial buckets");
    checks.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn ingest_queries_flushes_rollups_compaction_and_baselines_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(epoch_start(0) + 30_000);
    let m = Arc::new(common::open_with(config(dir.path()), &clock));
    let ledger = Arc::new(Ledger {
        epoch: AtomicUsize::new(0),
        cum: (0..WRITERS).map(|_| Mutex::new(vec![0])).collect(),
    });
    let short_total = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicU64::new(0));
    let mut crew = Crew {
        stop: Arc::new(AtomicBool::new(false)),
        workers: Vec::new(),
    };

    let written: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    for (w, name) in ["writer-0", "writer-1"].into_iter().enumerate() {
        let (m, ledger, written) = (m.clone(), ledger.clone(), written.clone());
        let mut recorded = 0u64;
        crew.spawn(name, move || {
            let e = ledger.epoch.load(Ordering::Acquire);
            {
                let mut cum = ledger.cum[w].lock();
                while cum.len() <= e {
                    cum.push(recorded);
                }
            }
            for i in 0..20 {
                m.record(&sample("conc", &[("w", name)], epoch_start(e) + i * 1_000))
                    .expect("record");
                recorded += 1;
                written[w].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    {
        // Samples 90 minutes old into a namespace whose minutes expire
        // after an hour: compaction always has buckets to delete.
        let (m, clock, n) = (m.clone(), clock.clone(), short_total.clone());
        crew.spawn("writer-short", move || {
            let ts = clock.now_ms() - 90 * MINUTE_MS;
            for _ in 0..10 {
                m.record(&sample("short", &[], ts)).expect("record short");
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    {
        let (ledger, clock) = (ledger.clone(), clock.clone());
        crew.spawn("epochs", move || {
            std::thread::sleep(Duration::from_millis(10));
            let e = ledger.epoch.load(Ordering::Acquire) + 1;
            clock.set(epoch_start(e) + 30_000);
            ledger.epoch.store(e, Ordering::Release);
        });
    }
    for name in ["checker-0", "checker-1"] {
        let (m, ledger, checks) = (m.clone(), ledger.clone(), checks.clone());
        crew.spawn(name, move || check_closed(&m, &ledger, &checks));
    }
    let jobs: [(&'static str, Job); 4] = [
        ("flush", |m| {
            m.flush().expect("flush");
        }),
        ("rollup", |m| {
            m.rollup().expect("rollup");
        }),
        ("compaction", |m| {
            m.compact(CompactOptions::default()).expect("compact");
        }),
        ("baseline", |m| {
            m.recompute_baselines().expect("baselines");
        }),
    ];
    for (name, job) in jobs {
        let m = m.clone();
        crew.spawn(name, move || job(&m));
    }
    crew.watch(RUN);

    // Enough happened for the run to mean something.
    let (epochs, cums) = ledger.closed();
    let recorded: u64 = cums.iter().map(|c| *c.last().unwrap_or(&0)).sum();
    let checked = checks.load(Ordering::Relaxed);
    eprintln!("{epochs} epochs, {recorded} samples in closed epochs, {checked} exact checks");
    assert!(
        epochs >= 10 && checked >= 10,
        "{epochs} epochs, {checked} checks"
    );
    let (runs, removed, _) = m.compaction_stats();
    let deleted: u64 = removed.values().sum();
    assert!(
        runs > 0 && deleted > 0,
        "{runs} compactions deleted {deleted} buckets"
    );

    // Counts add up exactly, live and after a restart.
    let m = Arc::try_unwrap(m).expect("workers gone");
    let writers_total: u64 = written.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    let expect_short = short_total.load(Ordering::Relaxed);
    assert_eq!(total(&m, "conc"), (writers_total, writers_total as f64));
    m.flush().expect("flush");
    m.compact(CompactOptions::default()).expect("compact");
    assert_eq!(total(&m, "conc"), (writers_total, writers_total as f64));
    assert_eq!(total(&m, "short"), (expect_short, expect_short as f64));
    m.close().expect("close");
    drop(m);
    let m = common::open_with(config(dir.path()), &clock);
    assert_eq!(total(&m, "conc"), (writers_total, writers_total as f64));
    assert_eq!(total(&m, "short"), (expect_short, expect_short as f64));
}
