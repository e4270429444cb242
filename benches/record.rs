//! Recording cost: a scopemon handle against the `prometheus` crate's
//! histogram and `metrics-util`'s `AtomicBucket`, the name-lookup API, and
//! two threads on different series / on the same series. The two-thread
//! scaling figure comes from `benches/record_scaling.rs` (paired trials):
//! the `threads` group's one- and two-thread means are measured apart, and
//! on a shared VM their ratio moves with the machine more than the code.
//!
//! Run: `cargo bench --bench record`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_util::storage::AtomicBucket;
use prometheus::{Histogram, HistogramOpts};
use scopemon::{Config, ManualClock, Monitor};

mod common;
#[path = "common/record.rs"]
mod record_common;
use record_common::{MASK, T0, handle_loop, latencies, parallel, prom_loop};

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
