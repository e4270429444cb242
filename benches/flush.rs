//! Flush and rollup of 10,000 dirty series (20 samples each in the minute).
//! Only `monitor.flush()` / `monitor.rollup()` is timed; recording the
//! samples that dirty the series, and the clock moves, are not.
//!
//! Run: `cargo bench --bench flush`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use scopemon::{Config, Handle, ManualClock, Monitor};
use scopemon::{DAY_MS, MINUTE_MS};

mod common;
use common::Rng;

const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 5 * 3_600_000 + 7_000;
const SERIES: usize = 10_000;
const PER_MINUTE: usize = 20;

struct Env {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    monitor: Monitor,
    handles: Vec<Handle>,
    lat: Vec<Duration>,
    rng: Rng,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(T0);
        let monitor = Monitor::builder(Config::with_data_dir(dir.path()))
            .clock(Arc::new(clock.clone()))
            .background(false)
            .open()
            .expect("open monitor");
        let handles = (0..SERIES)
            .map(|i| {
                let host = format!("h{i}");
                monitor
                    .latency_handle("bench", "rpc.latency", &[("host", host.as_str())])
                    .expect("handle")
            })
            .collect();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let lat = (0..8192)
            .map(|_| Duration::from_nanos(rng.lognormal(800_000.0, 1.0).min(3.0e12) as u64))
            .collect();
        Env {
            _dir: dir,
            clock,
            monitor,
            handles,
            lat,
            rng,
        }
    }

    /// Moves to the next minute, rolls the closed one up and lets handles
    /// see the new minute (an empty flush does that and writes nothing).
    fn next_minute(&self) {
        self.clock.advance_ms(MINUTE_MS);
        self.monitor.rollup().expect("rollup");
        let r = self.monitor.flush().expect("flush");
        assert_eq!(r.buckets, 0);
    }

    /// `PER_MINUTE` samples into every series' open minute.
    fn dirty_all(&mut self) {
        for h in &self.handles {
            let base = (self.rng.next_u64() as usize) & 8191;
            for k in 0..PER_MINUTE {
                h.record(self.lat[(base + k) & 8191]);
            }
        }
    }

    fn timed_flush(&self) -> Duration {
        let start = Instant::now();
        let r = self.monitor.flush().expect("flush");
        let took = start.elapsed();
        assert_eq!(r.series, SERIES);
        assert_eq!(r.buckets, SERIES);
        took
    }
}

fn flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush_10k_series");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));

    // The first flush of a minute: 10,000 deltas plus the series catalog
    // (every series' last_seen moved to the new minute).
    let mut e = Env::new();
    g.bench_function("first_flush_in_minute", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                e.next_minute();
                e.dirty_all();
                total += e.timed_flush();
            }
            total
        })
    });
    drop(e);

    // A later flush in the same minute: 10,000 deltas only.
    let mut e = Env::new();
    g.bench_function("later_flush_in_minute", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                e.next_minute();
                e.dirty_all();
                e.monitor.flush().expect("flush");
                e.dirty_all();
                total += e.timed_flush();
            }
            total
        })
    });
    drop(e);
    g.finish();

    let mut g = c.benchmark_group("rollup_10k_series_minutes");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));
    let mut e = Env::new();
    g.bench_function("rollup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                e.next_minute();
                e.dirty_all();
                e.monitor.flush().expect("flush");
                e.clock.advance_ms(MINUTE_MS);
                let start = Instant::now();
                let r = e.monitor.rollup().expect("rollup");
                total += start.elapsed();
                assert_eq!(r.minutes, SERIES);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
