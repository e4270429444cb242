//! Queries over a store holding 30 days of history for 100 latency series
//! of one metric (tag `host=h0..h99`), written with a manual clock that
//! moves forward while the history is recorded, flushed and rolled up:
//! - the last 48 hours: every minute, `RECENT_PER_MINUTE` samples per series;
//! - the 28 days before: `OLD_MINUTES_PER_HOUR` minutes of each hour,
//!   `OLD_PER_MINUTE` samples each (so every hour of the 30 days has data);
//! - the open minute: a flushed delta plus unflushed hot samples.
//!
//! With `QUERY_COMPACT=1` the store is compacted once at the end, as the
//! daemon's compaction (every 10 minutes) would have left it: retention
//! applied and sealed hours' minutes in groups (`src/store/group.rs`).
//!
//! Run: `cargo bench --bench query` (and `QUERY_COMPACT=1 cargo bench --bench query`)

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS};

mod common;
use common::Rng;
use scopemon::{
    Config, Kind, ManualClock, Monitor, Outcome, QuerySpec, Resolution, Sample, Tags, Window,
};

/// "Now": a UTC midnight + 13h37m25s, so nothing is hour aligned.
const NOW: i64 =
    1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 13 * HOUR_MS + 37 * MINUTE_MS + 25_000;
const SERIES: usize = 100;
const DAYS: i64 = 30;
const RECENT_PER_MINUTE: usize = 20;
const OLD_MINUTES_PER_HOUR: i64 = 3;
const OLD_PER_MINUTE: usize = 20;
const NS: &str = "prod";
const METRIC: &str = "db.query";

struct Store {
    _dir: tempfile::TempDir,
    monitor: Monitor,
}

fn build() -> Store {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Resolution::Hour.align(NOW - DAYS * DAY_MS);
    let clock = ManualClock::new(start);
    let monitor = Monitor::builder(Config::with_data_dir(dir.path()))
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor");
    let hosts: Vec<String> = (0..SERIES).map(|i| format!("h{i}")).collect();
    let tags: Vec<[(&str, &str); 1]> = hosts.iter().map(|h| [("host", h.as_str())]).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let recent_from = NOW - 2 * DAY_MS;
    let open_minute = Resolution::Minute.align(NOW);
    let mut samples: Vec<Sample<'_>> = Vec::new();
    let mut written = 0usize;
    // time in record_batch, flush, rollup
    let mut spent = [Duration::ZERO; 3];
    let mut hour = start;
    // One simulated hour at a time: the clock stands just past the hour (or
    // at NOW), its samples are recorded with their timestamps, then flushed
    // and rolled up — as the flusher would have done along the way.
    while hour < open_minute {
        let end = (hour + HOUR_MS).min(open_minute);
        samples.clear();
        for (s, t) in tags.iter().enumerate() {
            let mut minute = hour;
            while minute < end {
                let recent = minute >= recent_from;
                let in_hour = (minute - hour) / MINUTE_MS;
                let n = if recent {
                    RECENT_PER_MINUTE
                } else if in_hour % (60 / OLD_MINUTES_PER_HOUR) == 0 {
                    OLD_PER_MINUTE
                } else {
                    0
                };
                for k in 0..n {
                    samples.push(Sample {
                        namespace: NS,
                        metric: METRIC,
                        kind: Kind::Latency,
                        // hosts differ a little in speed
                        value: rng.lognormal(400.0 + 10.0 * s as f64, 0.9).min(3.0e9),
                        tags: t,
                        outcome: if k == 7 { Outcome::Error } else { Outcome::Ok },
                        timestamp_ms: Some(minute + (k as i64 * 2_900) % MINUTE_MS),
                    });
                }
                minute += MINUTE_MS;
            }
        }
        clock.set(end + 1_000);
        let t = Instant::now();
        let (ok, rejected) = monitor.record_batch(samples.iter().copied());
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        written += ok;
        let t = lap(&mut spent[0], t);
        monitor.flush().expect("flush");
        let t = lap(&mut spent[1], t);
        monitor.rollup().expect("rollup");
        lap(&mut spent[2], t);
        hour = end;
    }
    // The open minute: one flushed delta and some hot samples per series.
    clock.set(NOW);
    for round in 0..2 {
        for t in &tags {
            for _ in 0..10 {
                monitor
                    .record_latency(
                        NS,
                        METRIC,
                        Duration::from_nanos(
                            (rng.lognormal(400.0, 0.9).min(3.0e9) * 1_000.0) as u64,
                        ),
                        t,
                    )
                    .expect("record");
                written += 1;
            }
        }
        if round == 0 {
            monitor.flush().expect("flush");
        }
    }
    if std::env::var_os("QUERY_COMPACT").is_some() {
        let r = monitor
            .compact(scopemon::CompactOptions::default())
            .expect("compact");
        eprintln!(
            "compacted: {} buckets expired, {} minutes of {} series-hours grouped",
            r.total_removed, r.grouped_minutes, r.grouped_hours
        );
    }
    let stats = monitor.stats();
    eprintln!(
        "built {} series, {} samples, file {:.1} MiB in {:.1} s (record {:.1} s, flush {:.1} s, rollup {:.1} s)",
        stats.series,
        written,
        stats.file_bytes as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64(),
        spent[0].as_secs_f64(),
        spent[1].as_secs_f64(),
        spent[2].as_secs_f64(),
    );
    Store { _dir: dir, monitor }
}

/// Adds the time since `t` to `acc`; returns now.
fn lap(acc: &mut Duration, t: Instant) -> Instant {
    let now = Instant::now();
    *acc += now - t;
    now
}

fn spec(window: Window, from: i64, to: i64, tags: Tags) -> QuerySpec {
    QuerySpec {
        namespace: NS.into(),
        metric: METRIC.into(),
        kind: Kind::Latency,
        window,
        from,
        to,
        tags,
    }
}

fn queries(c: &mut Criterion) {
    let st = build();
    let m = &st.monitor;
    assert_eq!(m.now_ms(), NOW);
    let one = Tags::new(&[("host", "h42")]).expect("tags");
    let day_one = spec(Window::Range, NOW - DAY_MS, NOW, one.clone());
    let day_all = spec(Window::Range, NOW - DAY_MS, NOW, Tags::empty());
    let hourly = spec(
        Window::Buckets(Resolution::Hour),
        NOW - DAYS * DAY_MS,
        NOW,
        one,
    );

    // Sanity: the answers cover what was written. The range starts 25 s
    // into a minute, so it holds 1,439 closed minutes plus the open one.
    let per_series_24h = (1_439 * RECENT_PER_MINUTE + 20) as u64;
    let p = &m.query(&day_one).expect("query").points[0];
    assert_eq!(p.count, per_series_24h);
    eprintln!("one series 24h: count {} p99 {:.0} µs", p.count, p.p99);
    let p = &m.query(&day_all).expect("query").points[0];
    assert_eq!(p.count, SERIES as u64 * per_series_24h);
    eprintln!("100 series 24h: count {} p99 {:.0} µs", p.count, p.p99);
    let h = m.query(&hourly).expect("query");
    assert!(h.points.len() >= 30 * 24 - 1, "{} points", h.points.len());
    eprintln!("30 days hourly: {} points", h.points.len());
    let s = m.summary(NS, Resolution::Day, None, None).expect("summary");
    assert_eq!(s.metrics.len(), SERIES);

    let mut g = c.benchmark_group("query");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    g.bench_function("p99_one_series_24h", |b| {
        b.iter(|| m.query(&day_one).expect("query"))
    });
    g.bench_function("p99_100_series_24h", |b| {
        b.iter(|| m.query(&day_all).expect("query"))
    });
    g.bench_function("hourly_30d_one_series", |b| {
        b.iter(|| m.query(&hourly).expect("query"))
    });
    g.bench_function("summary_day_100_series", |b| {
        b.iter(|| m.summary(NS, Resolution::Day, None, None).expect("summary"))
    });
    g.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
