//! What the two record benches (`record.rs`, `record_scaling.rs`) share:
//! the start time, the latencies every loop cycles through, the loops
//! themselves and the harness that starts workers together.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use prometheus::Histogram;
use scopemon::{DAY_MS, Handle};

use super::common::Rng;

/// A UTC midnight, plus a few hours so nothing sits on a boundary.
pub const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 5 * 3_600_000 + 7_000;

/// Latencies cycled through by every benchmark (a power of two).
pub const N_LAT: usize = 4096;
pub const MASK: usize = N_LAT - 1;

/// Lognormal latencies, median 800 µs.
pub fn latencies() -> Vec<Duration> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..N_LAT)
        .map(|_| Duration::from_nanos(rng.lognormal(800_000.0, 1.0).min(3.0e12) as u64))
        .collect()
}

/// Runs every worker on its own thread, each doing `iters` operations, and
/// returns the wall time from the common start to the last one finishing.
pub fn parallel(iters: u64, workers: &[&(dyn Fn(u64) + Sync)]) -> Duration {
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

pub fn handle_loop(h: &Handle, lat: &[Duration], offset: usize, iters: u64) {
    let mut i = offset;
    for _ in 0..iters {
        h.record(black_box(lat[i & MASK]));
        i = i.wrapping_add(1);
    }
}

pub fn prom_loop(h: &Histogram, lat: &[Duration], offset: usize, iters: u64) {
    let mut i = offset;
    for _ in 0..iters {
        h.observe(black_box(lat[i & MASK]).as_secs_f64());
        i = i.wrapping_add(1);
    }
}
