//! Two-thread scaling of the record path, as paired trials: each trial
//! times one thread recording `N` samples, then two threads recording `N`
//! each into series of their own, back to back, and takes the ratio
//! `2 × t(1 thread) / t(2 threads)` (2.0 is perfect scaling). The median of
//! the trials' ratios is the figure: pairing cancels the slow drifts of a
//! shared machine that make two separately measured criterion means
//! disagree (the `record` bench's single-thread time moved 15–33 ns
//! between runs on an idle 2-core VM while the two-thread time held).
//!
//! The peer, measured in the same trials: the `prometheus` crate's
//! `Histogram::observe`, one histogram per thread.
//!
//! Run: `cargo bench --bench record_scaling` (optional: trials, samples
//! per thread; default 15 and 4,000,000).

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts};
use scopemon::{Config, ManualClock, Monitor};

mod common;
#[path = "common/record.rs"]
mod record_common;
use record_common::{T0, handle_loop, latencies, parallel, prom_loop};

/// A worker recording the number of samples it is given.
type Worker<'a> = &'a (dyn Fn(u64) + Sync);

/// One paired trial: (ns per call on one thread, ns per call per thread on
/// two, scaling ratio).
fn trial(one: Worker<'_>, other: Worker<'_>, n: u64) -> (f64, f64, f64) {
    let t1 = parallel(n, &[one]).as_nanos() as f64;
    let t2 = parallel(n, &[one, other]).as_nanos() as f64;
    (t1 / n as f64, t2 / n as f64, 2.0 * t1 / t2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, trials: &[(f64, f64, f64)]) {
    let col = |k: usize| median(trials.iter().map(|t| [t.0, t.1, t.2][k]).collect());
    let ratios: Vec<String> = trials.iter().map(|t| format!("{:.2}", t.2)).collect();
    println!(
        "{name:<32} 1 thread {:6.2} ns/call, 2 threads {:6.2} ns/call each, scaling median {:.2}x  [{}]",
        col(0),
        col(1),
        col(2),
        ratios.join(" ")
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; numbers are ours.
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let trials = nums.first().copied().unwrap_or(15) as usize;
    let n = nums.get(1).copied().unwrap_or(4_000_000);

    let lat = latencies();
    let dir = tempfile::tempdir()?;
    let monitor = Monitor::builder(Config::with_data_dir(dir.path()))
        .clock(Arc::new(ManualClock::new(T0)))
        .background(false)
        .open()?;
    let h0 = monitor.latency_handle("bench", "rpc.latency", &[("host", "h0")])?;
    let h1 = monitor.latency_handle("bench", "rpc.latency", &[("host", "h1")])?;
    let opts = |name: &str| HistogramOpts::new(name, "bench histogram");
    let pa = Histogram::with_opts(opts("rpc_a_latency_seconds"))?;
    let pb = Histogram::with_opts(opts("rpc_b_latency_seconds"))?;

    let s0 = |n| handle_loop(&h0, &lat, 0, n);
    let s1 = |n| handle_loop(&h1, &lat, 1234, n);
    let p0 = |n| prom_loop(&pa, &lat, 0, n);
    let p1 = |n| prom_loop(&pb, &lat, 1234, n);
    // Warm-up: both series' hot buckets reach their steady form.
    trial(&s0, &s1, n);
    trial(&p0, &p1, n);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        ours.push(trial(&s0, &s1, n));
        peer.push(trial(&p0, &p1, n));
    }
    println!("{trials} paired trials, {n} calls per thread each");
    report("scopemon handle, own series", &ours);
    report("prometheus, own histogram", &peer);
    monitor.close()?;
    Ok(())
}
