//! Baseline and alert-evaluation cost (issue targets: baselines for 1,000
//! series with 7 days of hourly data ≤ 1 s; one evaluation cycle of 100
//! thresholds over 10,000 series ≤ 50 ms).
//!
//! `cargo bench --bench alerts` — prints medians of repeated runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scopemon::ThresholdSpec as Threshold;
use scopemon::{Clock, Config, Kind, ManualClock, Monitor, Outcome, Sample};
use scopemon::{DAY_MS, HOUR_MS};

const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

fn open(dir: &std::path::Path, clock: &ManualClock) -> Monitor {
    Monitor::builder(Config::with_data_dir(dir))
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn baselines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 7 * DAY_MS + 30 * 60_000);
    let m = open(dir.path(), &clock);
    let build = Instant::now();
    let hosts: Vec<String> = (0..1_000).map(|i| format!("h{i}")).collect();
    for h in 0..7 * 24 {
        for (i, host) in hosts.iter().enumerate() {
            for k in 0..3 {
                let v = 500.0 + ((h * 31 + i as i64 * 7 + k * 13) % 400) as f64;
                m.record(&Sample {
                    namespace: "bench",
                    metric: "api.latency",
                    kind: Kind::Latency,
                    value: v,
                    tags: &[("host", host)],
                    outcome: Outcome::Ok,
                    timestamp_ms: Some(T0 + h * HOUR_MS + k * 60_000),
                })
                .expect("record");
            }
        }
        if h % 24 == 23 {
            m.flush().expect("flush");
            m.rollup().expect("rollup");
        }
    }
    println!(
        "baseline store built in {:.1} s (1,000 series x 168 hours)",
        build.elapsed().as_secs_f64()
    );
    let runs: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let n = m.recompute_baselines().expect("baselines");
            assert_eq!(n, 1_000);
            t.elapsed()
        })
        .collect();
    let med = median(runs.clone());
    println!(
        "baselines for 1,000 series, 7 days hourly: median {:.0} ms (runs {:?} ms; target <= 1000 ms)",
        med.as_secs_f64() * 1e3,
        runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}

fn evaluation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 10 * HOUR_MS);
    let m = open(dir.path(), &clock);
    // 100 thresholds over 10 metrics of 1,000 series each (10,000 series)
    for t in 0..100 {
        let aggregation = ["p99", "p50", "avg", "error_rate", "max"][t % 5];
        let th: Threshold = serde_json::from_value(serde_json::json!({
            "id": format!("t{t}"), "namespace": "bench", "metric": format!("svc{}.*", t % 10),
            "aggregation": aggregation, "op": "gt",
            "warning": 1e9, "window": "minute", "for": "1m"
        }))
        .expect("threshold");
        m.put_threshold(th).expect("put");
    }
    let series: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("svc{}.op", i % 10), format!("h{}", i / 10)))
        .collect();
    // two minutes of 5-second flushes: 2 samples per series per interval
    let mut cycles = Vec::new();
    for step in 0..24 {
        clock.advance_ms(5_000);
        for (metric, host) in &series {
            for k in 0..2 {
                m.record(&Sample {
                    namespace: "bench",
                    metric,
                    kind: Kind::Latency,
                    value: 800.0 + ((step * 7 + k) % 50) as f64,
                    tags: &[("host", host)],
                    outcome: Outcome::Ok,
                    timestamp_ms: Some(clock.now_ms() - k * 100),
                })
                .expect("record");
            }
        }
        m.flush().expect("flush");
        m.rollup().expect("rollup");
        let t = Instant::now();
        m.evaluate_alerts().expect("evaluate");
        if step >= 12 {
            cycles.push(t.elapsed());
        }
    }
    let med = median(cycles.clone());
    println!(
        "alert evaluation, 100 thresholds over 10,000 series: median {:.1} ms per cycle (max {:.1} ms; target <= 50 ms)",
        med.as_secs_f64() * 1e3,
        cycles.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks one part.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    if filter.as_deref().is_none_or(|f| "baselines".contains(f)) {
        baselines();
    }
    if filter.as_deref().is_none_or(|f| "evaluation".contains(f)) {
        evaluation();
    }
}
