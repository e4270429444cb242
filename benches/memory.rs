//! Memory manager costs: the admission gate (`check_operation_allowed`,
//! what every ingest call pays: target ≤ 20 ns) and one periodic check with
//! the real source (sysinfo, cgroup files, five own samples: target ≤ 1 ms
//! of CPU). The check's CPU time is also measured with
//! `getrusage(RUSAGE_THREAD)` and printed, since criterion reports wall time.
//!
//! Run: `cargo bench --bench memory`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use scopemon::{Config, DAY_MS, ManualClock, Monitor};

const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 5 * 3_600_000 + 7_000;

fn monitor(dir: &std::path::Path) -> Monitor {
    Monitor::builder(Config::with_data_dir(dir))
        .clock(Arc::new(ManualClock::new(T0)))
        .background(false)
        .open()
        .expect("open monitor")
}

/// CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = monitor(dir.path());
    c.bench_function("memory/gate", |b| {
        b.iter(|| black_box(m.check_operation_allowed().is_ok()))
    });
    c.bench_function("memory/check", |b| {
        b.iter(|| black_box(m.check_memory().expect("check")))
    });
    let runs = 2000;
    let before = thread_cpu();
    for _ in 0..runs {
        black_box(m.check_memory().expect("check"));
    }
    let per = (thread_cpu() - before) / runs;
    println!("memory/check CPU per run (getrusage, {runs} runs): {per:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
