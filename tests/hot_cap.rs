//! The hot-memory cap (`storage.max_hot_bytes`): above three quarters of it
//! the flush is woken at once; at the cap HTTP ingest answers 429 and keeps
//! nothing of the body, while library recording never fails and queries and
//! health keep answering. Every sample is counted exactly once throughout.

mod common;

use common::Http;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use common::T0;
use scopemon::{Config, Kind, ManualClock, Monitor};

/// Hot buckets start sparse (a couple of hundred bytes for one sample), so
/// filling the smallest cap (1 MiB) takes thousands of series.
const MANY_SERIES: usize = 100_000;

/// An engine with a 1 MiB cap and no background threads: the test decides
/// when woken tasks run (`run_due_tasks`).
fn capped(dir: &std::path::Path, clock: &ManualClock) -> Monitor {
    let mut c = Config::with_data_dir(dir);
    c.storage.max_hot_bytes = 1 << 20;
    c.storage.series_limit_per_namespace = MANY_SERIES;
    common::open_with(c, clock)
}

/// Latency samples of `metric` in `prod`, every series merged.
fn count(m: &Monitor, metric: &str) -> u64 {
    common::count(m, "prod", metric, Kind::Latency)
}

/// Records one latency into series `host=<i>` (a new bucket per series, so
/// hot bytes grow by one bucket each).
fn record(m: &Monitor, i: usize) {
    let host = format!("h{i}");
    m.record_latency(
        "prod",
        "api",
        Duration::from_micros(500 + i as u64),
        &[("host", &host)],
    )
    .expect("library recording never fails for the cap");
}

fn flush_runs(m: &Monitor) -> u64 {
    m.tasks()
        .into_iter()
        .find(|t| t.name == "flush")
        .map_or(0, |t| t.runs)
}

#[test]
fn crossing_three_quarters_wakes_the_flush_and_library_recording_never_fails() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let m = capped(dir.path(), &clock);
    let mut n = 0;
    while (m.hot_bytes() as u64) < (1 << 20) / 4 * 3 {
        record(&m, n);
        n += 1;
    }
    assert_eq!(
        m.run_due_tasks(),
        1,
        "only the woken flush runs (no clock time passed)"
    );
    assert_eq!(flush_runs(&m), 1);
    assert_eq!(m.hot_bytes(), 0, "the early flush took every hot bucket");
    // Past the cap too, recording through the library succeeds.
    let before = n;
    while (m.hot_bytes() as u64) < 2 << 20 {
        record(&m, n);
        n += 1;
    }
    assert!(m.at_hot_cap() && n > before);
    assert_eq!(
        count(&m, "api"),
        n as u64,
        "every sample counted exactly once"
    );
    m.run_due_tasks();
    assert!(!m.at_hot_cap(), "the flush caught up");
    assert_eq!(count(&m, "api"), n as u64);
    m.close().unwrap();
    drop(m);
    let m = capped(dir.path(), &clock);
    assert_eq!(count(&m, "api"), n as u64, "and all of them were stored");
}

#[test]
fn at_the_cap_http_ingest_is_429_and_stores_nothing_while_reads_answer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let m = Arc::new(capped(dir.path(), &clock));
    let http = Http::start(m.clone());
    let body: Vec<Value> = (0..50)
        .map(|i| json!({"namespace": "prod", "metric": "http", "value": 100 + i}))
        .collect();
    let ingest = |b: &Vec<Value>| http.post_with_retry("/v1/ingest", &json!({ "samples": b }));
    assert_eq!(ingest(&body).0, 200);
    let mut n = 0;
    while !m.at_hot_cap() {
        record(&m, n);
        n += 1;
    }
    let (status, retry, err) = ingest(&body);
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{err}");
    assert_eq!(err["error"], "ingest_backpressure", "{err}");
    assert_eq!(
        count(&m, "http"),
        50,
        "nothing of the refused body was kept"
    );
    assert_eq!(http.get("/health/quick").0, 200);
    assert_eq!(
        http.get("/v1/query?namespace=prod&metric=http&window=range&from=now-1h")
            .0,
        200
    );
    // The flush catches up (the woken task runs), and the resent body lands.
    m.run_due_tasks();
    assert!(!m.at_hot_cap());
    assert_eq!(ingest(&body).0, 200);
    assert_eq!(count(&m, "http"), 100);
    assert_eq!(count(&m, "api"), n as u64);
}

#[test]
fn samples_recorded_during_early_flushes_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut c = Config::with_data_dir(dir.path());
    c.storage.max_hot_bytes = 1 << 20;
    c.storage.series_limit_per_namespace = MANY_SERIES;
    // Background runners on: early flushes race the recorders for real.
    let m = Monitor::builder(c)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    // Each thread records until early flushes have run (bounded), so
    // flushes take buckets while samples keep arriving.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let recorded: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let m = &m;
                s.spawn(move || {
                    let mut i = 0;
                    while flush_runs(m) < 3 && std::time::Instant::now() < deadline {
                        // enough series that their one-sample buckets
                        // pass three quarters of the cap between flushes
                        record(m, t * 10_000 + i % 8_000);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(
        flush_runs(&m) >= 3,
        "early flushes ran without the clock moving"
    );
    assert_eq!(count(&m, "api"), recorded as u64);
    m.close().unwrap();
    drop(m);
    let m = common::open(dir.path(), &clock);
    assert_eq!(count(&m, "api"), recorded as u64);
}
