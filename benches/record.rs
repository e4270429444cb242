//! Recording cost: a scopemon handle against the `prometheus` crate's
//! histogram and `metrics-util`'s `AtomicBucket`, the name-lookup API, and
//! two threads on different series / on the same series. The two-thread
//! scaling figure comes from `benches/record_scaling.rs` (paired trials):
//! the `threads` group's one- and two-thread means are measured apart, and
//! on a shared VM their ratio moves with the machine more than the code.
//!
//! Run: `cargo bench --bench record`

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_util::storage::AtomicBucket;
use prometheus::{Histogram, HistogramOpts};
use scopemon::DAY_MS;
use scopemon::{Config, Handle, ManualClock, Monitor};

mod common;
use common::Rng;

/// A UTC midnight, plus a few hours so nothing sits on a boundary.
const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 5 * 3_600_000 + 7_000;

/// Latencies cycled through by every benchmark (a power of two).
const N_LAT: usize = 4096;
const MASK: usize = N_LAT - 1;

/// Lognormal latencies, median 800 µs.
fn latencies() -> Vec<Duration> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..N_LAT)
        .map(|_| Duration::from_nanos(rng.lognormal(800_000.0, 1.0).min(3.0e12) as u64))
        .collect()
}

struct Env {
    _dir: tempfile::TempDir,
    monitor: Monitor,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let monitor = Monitor::builder(Config::with_data_dir(dir.path()))
        .clock(Arc::new(ManualClock::new(T0)))
        .background(false)
        .open()
        .expect("open monitor");
    Env { _dir: dir, monitor }
}

fn prom_histogram(name: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, "bench histogram")).expect("histogram")
}

/// Runs every worker on its own thread, each doing `iters` operations, and
/// returns the wall time from the common start to the last one finishing.
fn parallel(iters: u64, workers: &[&(dyn Fn(u64) + Sync)]) -> Duration {
    let barrier = Barrier::new(workers.len() + 1);
    std::thread::scope(|s| {
        let joins: Vec<_> = workers
            .iter()
            .map(|w| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    w(iters);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for j in joins {
            j.join().expect("worker panicked");
        }
        start.elapsed()
    })
}

fn handle_loop(h: &Handle, lat: &[Duration], offset: usize, iters: u64) {
    let mut i = offset;
    for _ in 0..iters {
        h.record(black_box(lat[i & MASK]));
        i = i.wrapping_add(1);
    }
}

fn prom_loop(h: &Histogram, lat: &[Duration], offset: usize, iters: u64) {
    let mut i = offset;
    for _ in 0..iters {
        h.observe(black_box(lat[i & MASK]).as_secs_f64());
        i = i.wrapping_add(1);
    }
}

fn name_loop(m: &Monitor, host: &str, lat: &[Duration], offset: usize, iters: u64) {
    let mut i = offset;
    for _ in 0..iters {
        m.record_latency(
            "bench",
            "rpc.latency",
            black_box(lat[i & MASK]),
            &[("host", host)],
        )
        .expect("record");
        i = i.wrapping_add(1);
    }
}

fn single_thread(c: &mut Criterion) {
    let lat = latencies();
    let e = env();
    let handle = e
        .monitor
        .latency_handle("bench", "rpc.latency", &[("host", "h0")])
        .expect("handle");
    let prom = prom_histogram("rpc_latency_seconds");

    let mut g = c.benchmark_group("record");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));

    g.bench_function("scopemon_handle", |b| {
        let mut i = 0usize;
        b.iter(|| {
            handle.record(black_box(lat[i & MASK]));
            i = i.wrapping_add(1);
        })
    });
    g.bench_function("prometheus_observe", |b| {
        let mut i = 0usize;
        b.iter(|| {
            prom.observe(black_box(lat[i & MASK]).as_secs_f64());
            i = i.wrapping_add(1);
        })
    });
    g.bench_function("metrics_util_atomic_bucket_push", |b| {
        // A bucket only grows (and dropping it does not free its blocks:
        // AtomicBucket has no Drop); clearing it every 2^20 pushes keeps
        // memory bounded. Clearing is not timed.
        let bucket = AtomicBucket::<f64>::new();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut i = 0usize;
            while left > 0 {
                let n = left.min(1 << 20);
                let start = Instant::now();
                for _ in 0..n {
                    bucket.push(black_box(lat[i & MASK]).as_secs_f64());
                    i = i.wrapping_add(1);
                }
                total += start.elapsed();
                bucket.clear();
                left -= n;
            }
            total
        })
    });
    g.bench_function("scopemon_name_lookup", |b| {
        let mut i = 0usize;
        b.iter(|| {
            e.monitor
                .record_latency(
                    "bench",
                    "rpc.latency",
                    black_box(lat[i & MASK]),
                    &[("k", "v")],
                )
                .expect("record");
            i = i.wrapping_add(1);
        })
    });
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    let lat = latencies();
    let e = env();
    let h0 = e
        .monitor
        .latency_handle("bench", "rpc.latency", &[("host", "h0")])
        .expect("handle");
    let h1 = e
        .monitor
        .latency_handle("bench", "rpc.latency", &[("host", "h1")])
        .expect("handle");
    let shared = h0.clone();
    // Diagnostic for false sharing between the two series' hot state.
    let gap = (Arc::as_ptr(h1.series()) as isize - Arc::as_ptr(h0.series()) as isize).abs();
    eprintln!(
        "series h0/h1 allocations are {gap} bytes apart (Series is {} bytes)",
        std::mem::size_of::<scopemon::internals::Series>()
    );
    let prom = prom_histogram("rpc_latency_seconds");
    let prom_a = prom_histogram("rpc_a_latency_seconds");
    let prom_b = prom_histogram("rpc_b_latency_seconds");

    let mut g = c.benchmark_group("threads");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // Time per iteration = wall time for every thread to do one operation.
    g.throughput(Throughput::Elements(1));
    g.bench_function("scopemon_handle_1_thread", |b| {
        b.iter_custom(|iters| parallel(iters, &[&|n| handle_loop(&h0, &lat, 0, n)]))
    });
    g.bench_function("scopemon_name_lookup_1_thread", |b| {
        let m = &e.monitor;
        b.iter_custom(|iters| parallel(iters, &[&|n| name_loop(m, "h0", &lat, 0, n)]))
    });
    g.bench_function("prometheus_1_thread", |b| {
        b.iter_custom(|iters| parallel(iters, &[&|n| prom_loop(&prom, &lat, 0, n)]))
    });
    g.throughput(Throughput::Elements(2));
    g.bench_function("scopemon_handle_2_threads_different_series", |b| {
        b.iter_custom(|iters| {
            parallel(
                iters,
                &[&|n| handle_loop(&h0, &lat, 0, n), &|n| {
                    handle_loop(&h1, &lat, 1234, n)
                }],
            )
        })
    });
    g.bench_function("scopemon_handle_2_threads_same_series", |b| {
        b.iter_custom(|iters| {
            parallel(
                iters,
                &[&|n| handle_loop(&h0, &lat, 0, n), &|n| {
                    handle_loop(&shared, &lat, 1234, n)
                }],
            )
        })
    });
    g.bench_function("scopemon_name_lookup_2_threads_different_series", |b| {
        let m = &e.monitor;
        b.iter_custom(|iters| {
            parallel(
                iters,
                &[&|n| name_loop(m, "h0", &lat, 0, n), &|n| {
                    name_loop(m, "h1", &lat, 1234, n)
                }],
            )
        })
    });
    g.bench_function("prometheus_2_threads_different_histograms", |b| {
        b.iter_custom(|iters| {
            parallel(
                iters,
                &[&|n| prom_loop(&prom_a, &lat, 0, n), &|n| {
                    prom_loop(&prom_b, &lat, 1234, n)
                }],
            )
        })
    });
    g.bench_function("prometheus_2_threads_same_histogram", |b| {
        b.iter_custom(|iters| {
            parallel(
                iters,
                &[&|n| prom_loop(&prom, &lat, 0, n), &|n| {
                    prom_loop(&prom, &lat, 1234, n)
                }],
            )
        })
    });
    g.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
