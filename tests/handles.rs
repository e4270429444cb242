//! The handle record path (per-thread rings, `src/hot/ring.rs`) keeps
//! every promise of the locked path: exact count, sum, min, max and errors,
//! read-your-writes, samples in the minute they were recorded in, and
//! exactly-once through flushes that run while threads record.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use scopemon::{
    Kind, MINUTE_MS, ManualClock, Monitor, Outcome, QuerySpec, Resolution, Tags, Window,
};

use common::{Rng, T0, open};

fn spec(metric: &str, window: Window) -> QuerySpec {
    QuerySpec {
        namespace: "prod".into(),
        metric: metric.into(),
        kind: Kind::Latency,
        window,
        from: T0 - 10 * MINUTE_MS,
        to: T0 + 10 * MINUTE_MS,
        tags: Tags::empty(),
    }
}

/// (count, sum, min, max, errors) of `metric` over the whole range.
fn totals(m: &Monitor, metric: &str) -> (u64, f64, f64, f64, u64) {
    let r = m.query(&spec(metric, Window::Range)).expect("query");
    let p = r.points.first().expect("a point");
    (p.count, p.sum, p.min, p.max, p.errors)
}

#[test]
fn a_query_right_after_record_sees_it_in_its_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000);
    let m = open(dir.path(), &clock);
    let h = m.latency_handle("prod", "api", &[]).expect("handle");
    for i in 1..=3u64 {
        h.record(Duration::from_micros(100 * i));
        assert_eq!(totals(&m, "api").0, i, "read-your-writes");
    }
    // The next minute: pending samples stay in theirs.
    clock.set(T0 + MINUTE_MS + 1_000);
    m.flush().expect("flush"); // reads the clock: handles move on
    h.record_outcome(Duration::from_micros(900), Outcome::Error);
    h.record(Duration::from_micros(50));
    let r = m
        .query(&spec("api", Window::Buckets(Resolution::Minute)))
        .expect("query");
    let per_minute: Vec<(i64, u64, u64)> = r
        .points
        .iter()
        .filter(|p| p.count > 0)
        .map(|p| (p.start_ms, p.count, p.errors))
        .collect();
    assert_eq!(per_minute, vec![(T0, 3, 0), (T0 + MINUTE_MS, 2, 1)]);
    assert_eq!(totals(&m, "api"), (5, 1550.0, 50.0, 900.0, 1));
}

/// Four threads record through clones of one handle (and one series each)
/// while the main thread flushes and queries; every sample is counted
/// once, exactly, before and after a restart.
#[test]
fn threads_and_flushes_count_every_sample_once() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000);
    let m = open(dir.path(), &clock);
    let shared = m.latency_handle("prod", "shared", &[]).expect("handle");
    let start = Barrier::new(THREADS as usize + 1);
    let expected = |t: u64| {
        // Values 1..=PER_THREAD µs (+ t), every 7th an error.
        let sum: f64 = (1..=PER_THREAD).map(|i| (i + t) as f64).sum();
        (
            PER_THREAD,
            sum,
            (1 + t) as f64,
            (PER_THREAD + t) as f64,
            PER_THREAD / 7,
        )
    };
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let shared = shared.clone();
            let own = m
                .latency_handle("prod", "own", &[("thread", &t.to_string())])
                .expect("handle");
            let start = &start;
            s.spawn(move || {
                start.wait();
                for i in 1..=PER_THREAD {
                    let d = Duration::from_micros(i + t);
                    let outcome = if i % 7 == 0 {
                        Outcome::Error
                    } else {
                        Outcome::Ok
                    };
                    shared.record_outcome(d, outcome);
                    own.record_outcome(d, outcome);
                }
            });
        }
        start.wait();
        // Flushes and queries while the threads record: counts only grow.
        let mut seen = 0;
        for _ in 0..50 {
            m.flush().expect("flush");
            let now = totals(&m, "shared").0;
            assert!(now >= seen, "{now} < {seen}");
            seen = now;
        }
    });
    let all = (0..THREADS)
        .map(expected)
        .fold((0, 0.0, f64::MAX, 0.0, 0), |a, e| {
            (
                a.0 + e.0,
                a.1 + e.1,
                a.2.min(e.2),
                f64::max(a.3, e.3),
                a.4 + e.4,
            )
        });
    assert_eq!(totals(&m, "shared"), all);
    assert_eq!(totals(&m, "own"), all);
    let own_0 = m
        .query(&QuerySpec {
            tags: Tags::new(&[("thread", "0")]).expect("tags"),
            ..spec("own", Window::Range)
        })
        .expect("query");
    let p = &own_0.points[0];
    assert_eq!((p.count, p.sum, p.min, p.max, p.errors), expected(0));
    // The close flushes what the rings still hold; a reopen reads it all.
    m.close().expect("close");
    drop(m);
    let m = open(dir.path(), &clock);
    assert_eq!(totals(&m, "shared"), all);
    assert_eq!(totals(&m, "own"), all);
}

/// A thread that records fewer samples than a ring holds and then stops:
/// nothing else marks the series dirty, and the flush still takes them.
#[test]
fn samples_left_in_a_ring_are_flushed_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000);
    let m = Arc::new(open(dir.path(), &clock));
    let h = m.latency_handle("prod", "api", &[]).expect("handle");
    std::thread::spawn(move || {
        for i in 1..=5 {
            h.record(Duration::from_micros(i));
        }
    })
    .join()
    .expect("recorder");
    let report = m.flush().expect("flush");
    assert!(report.buckets >= 1, "{report:?}");
    m.close().expect("close");
    drop(m);
    let m = open(dir.path(), &clock);
    assert_eq!(totals(&m, "api"), (5, 15.0, 1.0, 5.0, 0));
}

/// A handle's samples answer exactly as the same samples recorded by name
/// do (quantiles included: the handle scales durations itself), values
/// through a handle of another kind count, and a series a handle recorded
/// into is hot until a flush takes it.
#[test]
fn handles_answer_as_recording_by_name_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000);
    let m = open(dir.path(), &clock);
    let h = m.latency_handle("prod", "by_handle", &[]).expect("handle");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2_000u64 {
        let d = Duration::from_nanos(1_000 + rng.next_u64() % 50_000_000);
        let outcome = if i % 13 == 0 {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        h.record_outcome(d, outcome);
        m.record_operation("prod", "by_name", d, outcome, &[])
            .expect("record");
    }
    let point = |metric: &str| {
        let r = m.query(&spec(metric, Window::Range)).expect("query");
        let p = r.points.first().expect("a point").clone();
        // (min, max and p999, which is clamped to max, may differ in the
        // last bit: the handle multiplies by 1e-3 where the name path
        // divides by 1,000)
        (p.count, p.errors, p.p50, p.p95, p.p99)
    };
    assert_eq!(point("by_handle"), point("by_name"));
    assert_eq!(m.stats().hot_series, 2);

    let tput = m
        .handle("prod", Kind::Throughput, "rows", &[])
        .expect("handle");
    for v in [1.0, 2.5, 4.0] {
        tput.record_value(v).expect("a valid value");
    }
    tput.record_value_outcome(8.0, Outcome::Error)
        .expect("a valid value");
    assert!(tput.record_value(f64::NAN).is_err());
    let r = m
        .query(&QuerySpec {
            kind: Kind::Throughput,
            ..spec("rows", Window::Range)
        })
        .expect("query");
    let p = r.points.first().expect("a point");
    assert_eq!((p.count, p.sum, p.errors), (4, 15.5, 1));

    m.flush().expect("flush");
    clock.set(T0 + 2 * MINUTE_MS);
    m.flush().expect("flush");
    assert_eq!(m.stats().hot_series, 0, "flushed: nothing hot");
}
