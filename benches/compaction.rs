//! Compaction at scale (a plain program printing tables, not criterion).
//!
//! 1. Builds a store of `COMPACT_SERIES` latency series × `COMPACT_DAYS` days
//!    of minute, hour and day records (defaults 200 × 6 days = 1,758,000
//!    buckets), written straight into the redb tables with the project's
//!    codec, in time order (every series' minute t, then minute t + 1, ...,
//!    the order rollups produce), one write transaction per simulated day.
//!    Each minute holds 60 lognormal latencies; hour and day records hold
//!    every sample of their minutes. `now` is 5 minutes after the last
//!    minute, so under the default retention (48h / 30d / 400d) about two
//!    thirds of the buckets (every minute older than 48h) are expired.
//! 2. For `COMPACT_REPEATS` (default 2) rounds and each batch size in
//!    `COMPACT_BATCHES` (default 2000,500,1000,10000) copies the built file
//!    (fsynced, so no writeback competes with the compactor), opens it with
//!    `Store::open` and runs `scopemon::internals::compact` (retention) with that batch,
//!    checking it removes exactly what `count_expired` counted and leaves
//!    nothing expired. The first run also measures redb's file compaction
//!    (`while db.compact()? {}`) and the file sizes around it.
//! 3. As often again with the copy evicted from the page cache
//!    (`posix_fadvise(DONTNEED)` on that file only): a cold compactor.
//! 4. Twice (first batch size, 500) with a probe thread that wants a write
//!    transaction every ~10 ms through `Store::begin_write`, as a flush
//!    does: how long a writer waits while the compactor runs. (Until
//!    session 5 the probe called redb's `begin_write` directly, past the
//!    store's fair turn, and measured redb's unfair handoff instead: see 6.)
//! 5. If the first batch size's longest transaction (warm or cold) exceeds
//!    50 ms: the largest measured batch within it, or halving until one is.
//!
//! 6. Why a writer can wait much longer than the longest transaction: a
//!    synthetic writer committing back to back (no scopemon code), with the
//!    same probe, plain / with `yield_now()` between commits / with both
//!    taking a `parking_lot::FairMutex` around their write transaction.
//!
//! Before all that, a layout check: 20 series × 1 day built through the
//! engine (record, flush, rollup) and directly, compared in bytes per bucket.
//!
//! Run: `cargo bench --bench compaction`

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::Durability;
use scopemon::Config;
use scopemon::DB_FILE;
use scopemon::Precision;
use scopemon::internals::Stats;
use scopemon::internals::tables::{DAY, HOUR, MINUTE, SERIES};
use scopemon::internals::{self as retention, RetentionPolicy};
use scopemon::internals::{Codec, encode_series};
use scopemon::internals::{OpenOptions, Store};
use scopemon::{CompactOptions, CompactReport};
use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS};
use scopemon::{Kind, ManualClock, Monitor, Outcome, Sample, SeriesKey, Tags};

mod common;
use common::Rng;

/// A UTC midnight (the same as the other benches).
const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
/// Samples per series-minute.
const PER_MINUTE: usize = 60;
/// The write-transaction target of the brief.
const TARGET_MS: f64 = 50.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

/// What the build wrote.
struct Built {
    series: usize,
    minutes: u64,
    hours: u64,
    days: u64,
    value_bytes: u64,
    took: Duration,
    now: i64,
}

impl Built {
    fn buckets(&self) -> u64 {
        self.minutes + self.hours + self.days
    }
}

/// Writes the catalog and every bucket record of `series` series over
/// `days` days into a new store in `dir`, then closes it.
fn build(dir: &Path, series: usize, days: i64) -> Built {
    let started = Instant::now();
    let store = Store::open(dir, OpenOptions::default()).expect("open store");
    let end = T0 + days * DAY_MS;
    let namespaces = ["prod", "staging", "batch"];
    let metrics = ["http.request", "db.query"];
    let keys: Vec<SeriesKey> = (0..series)
        .map(|i| {
            let host = format!("h{i:04}");
            SeriesKey::new(
                namespaces[i % namespaces.len()],
                Kind::Latency,
                metrics[(i / namespaces.len()) % metrics.len()],
                Tags::new(&[("host", host.as_str())]).expect("tags"),
            )
            .expect("series key")
        })
        .collect();
    {
        let txn = store.db().expect("db").begin_write().expect("write txn");
        {
            let mut t = txn.open_table(SERIES).expect("series table");
            for (i, key) in keys.iter().enumerate() {
                let rec = encode_series(key, T0, end - MINUTE_MS).expect("encode series");
                t.insert(i as u64 + 1, rec.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    // Per series: a median latency (200 µs .. ~5 ms) and an error rate.
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);
    let profile: Vec<(f64, f64)> = (0..series)
        .map(|_| (200.0 * (25f64).powf(rng.unit()), 0.02 * rng.unit()))
        .collect();
    let new = || Stats::new(Kind::Latency, Precision::DEFAULT);
    let mut minute = new();
    let mut hours: Vec<Stats> = (0..series).map(|_| new()).collect();
    let mut dayst: Vec<Stats> = (0..series).map(|_| new()).collect();
    let mut codec = Codec::new();
    let mut buf = Vec::with_capacity(1024);
    let mut built = Built {
        series,
        minutes: 0,
        hours: 0,
        days: 0,
        value_bytes: 0,
        took: Duration::ZERO,
        now: end + 5 * MINUTE_MS,
    };
    for day in 0..days {
        let day_start = T0 + day * DAY_MS;
        let mut txn = store.db().expect("db").begin_write().expect("write txn");
        let last_day = day + 1 == days;
        txn.set_durability(if last_day {
            Durability::Immediate
        } else {
            Durability::None
        })
        .expect("durability");
        {
            let mut mt = txn.open_table(MINUTE).expect("minute table");
            let mut ht = txn.open_table(HOUR).expect("hour table");
            let mut dt = txn.open_table(DAY).expect("day table");
            let mut t = day_start;
            while t < day_start + DAY_MS {
                // a daily cycle: +-30 % around the series' median
                let cycle =
                    1.0 + 0.3 * (std::f64::consts::TAU * (t - T0) as f64 / DAY_MS as f64).sin();
                for (s, &(median, err_rate)) in profile.iter().enumerate() {
                    let sid = s as u64 + 1;
                    minute.reset();
                    for _ in 0..PER_MINUTE {
                        let v = rng.lognormal(median * cycle, 0.8).round().clamp(1.0, 3.0e9);
                        let scaled = Kind::Latency.scale_value(v).expect("in range");
                        let err = rng.unit() < err_rate;
                        minute.record_scaled(scaled, v, err);
                        hours[s].record_scaled(scaled, v, err);
                        dayst[s].record_scaled(scaled, v, err);
                    }
                    codec
                        .encode(&minute, t, t, false, &mut buf)
                        .expect("encode");
                    built.value_bytes += buf.len() as u64;
                    mt.insert((sid, t), buf.as_slice()).expect("insert minute");
                    built.minutes += 1;
                }
                let next = t + MINUTE_MS;
                if next % HOUR_MS == 0 {
                    let h = next - HOUR_MS;
                    for (s, st) in hours.iter_mut().enumerate() {
                        codec
                            .encode(st, h, next - MINUTE_MS, false, &mut buf)
                            .expect("encode");
                        built.value_bytes += buf.len() as u64;
                        ht.insert((s as u64 + 1, h), buf.as_slice())
                            .expect("insert hour");
                        st.reset();
                        built.hours += 1;
                    }
                }
                if next % DAY_MS == 0 {
                    let d = next - DAY_MS;
                    for (s, st) in dayst.iter_mut().enumerate() {
                        codec
                            .encode(st, d, next - MINUTE_MS, false, &mut buf)
                            .expect("encode");
                        built.value_bytes += buf.len() as u64;
                        dt.insert((s as u64 + 1, d), buf.as_slice())
                            .expect("insert day");
                        st.reset();
                        built.days += 1;
                    }
                }
                t = next;
            }
        }
        txn.commit().expect("commit");
    }
    drop(store);
    built.took = started.elapsed();
    built
}

/// Copies the built file into a new directory and fsyncs it, so the
/// compactor's commits do not compete with writeback of the copy.
fn copy_store(src: &Path) -> (tempfile::TempDir, Duration) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join(DB_FILE);
    std::fs::copy(src, &dst).expect("copy store");
    File::open(&dst)
        .expect("open copy")
        .sync_all()
        .expect("fsync");
    (dir, started.elapsed())
}

/// Drops this one file's pages from the page cache (nothing else).
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = File::open(path).expect("open");
    f.sync_all().expect("fsync");
    // SAFETY: a plain advisory call on a valid, open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}

/// One compaction run and what surrounded it.
struct Run {
    batch: usize,
    cold: bool,
    probe: bool,
    report: CompactReport,
    dry_run_ms: Option<f64>,
    size_before: u64,
    size_after: u64,
    /// (seconds, size after, calls) of redb's compaction, when asked for.
    file_compact: Option<(f64, u64, usize)>,
    load_before: String,
    /// Waits (ms) of a probe writer's `begin_write` during the compaction.
    waits: Vec<f64>,
    /// How late (ms) the probe's 10 ms sleeps ended (scheduler latency).
    late: Vec<f64>,
}

impl Run {
    fn label(&self) -> String {
        format!(
            "{}{}",
            if self.cold { "cold" } else { "warm" },
            if self.probe { " + writer probe" } else { "" }
        )
    }
}

/// How to run one compaction.
#[derive(Clone, Copy, Default)]
struct How {
    cold: bool,
    redb_compact: bool,
    probe: bool,
}

/// A probe writer (like a flush) wanting the file every ~10 ms while
/// `work` runs: its waits in `Store::begin_write` (the writers' fair turn,
/// as a flush takes it) and its sleep overshoots.
fn with_probe<T>(store: &Store, work: impl FnOnce() -> T) -> (T, Vec<f64>, Vec<f64>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let (mut waits, mut late) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let slept = Instant::now();
                std::thread::sleep(Duration::from_millis(10));
                late.push(slept.elapsed().as_secs_f64() * 1e3 - 10.0);
                let t = Instant::now();
                let txn = store.begin_write().expect("probe write txn");
                waits.push(t.elapsed().as_secs_f64() * 1e3);
                drop(txn); // aborts, then hands the turn on
            }
            (waits, late)
        });
        let out = work();
        stop.store(true, Ordering::Relaxed);
        let (waits, late) = prober.join().expect("probe thread");
        (out, waits, late)
    })
}

fn run_compaction(base: &Path, built: &Built, expected: u64, batch: usize, how: How) -> Run {
    let (dir, _) = copy_store(base);
    let path = dir.path().join(DB_FILE);
    if how.cold {
        evict(&path);
    }
    let load_before = loadavg();
    let size_before = file_size(&path);
    let mut store = Store::open(dir.path(), OpenOptions::default()).expect("open copy");
    let policy =
        RetentionPolicy::load(&Config::default(), &*store.db().expect("db")).expect("policy");
    // a dry run reads every expired key: not on a cold run
    let dry_run_ms = (!how.cold).then(|| {
        let dry = retention::count_expired(&*store.db().expect("db"), &policy, built.now)
            .expect("dry run");
        assert_eq!(dry.total_removed, expected);
        dry.duration_ms
    });
    let mut codec = Codec::new();
    let opts = CompactOptions {
        dry_run: false,
        batch,
    };
    let mut compact = || {
        retention::compact(&store, &policy, &mut codec, built.now, opts, |_, _| {})
            .expect("compact")
    };
    let (report, waits, late) = if how.probe {
        with_probe(&store, compact)
    } else {
        (compact(), Vec::new(), Vec::new())
    };
    assert_eq!(report.total_removed, expected, "removed what was expired");
    let left =
        retention::count_expired(&*store.db().expect("db"), &policy, built.now).expect("recount");
    assert_eq!(left.total_removed, 0, "expired buckets left behind");
    let size_after = file_size(&path);
    let file_compact = how.redb_compact.then(|| {
        let started = Instant::now();
        let mut calls = 1;
        while store.db_mut().expect("db").compact().expect("redb compact") {
            calls += 1;
        }
        (started.elapsed().as_secs_f64(), file_size(&path), calls)
    });
    drop(store);
    Run {
        batch,
        cold: how.cold,
        probe: how.probe,
        report,
        dry_run_ms,
        size_before,
        size_after,
        file_compact,
        load_before,
        waits,
        late,
    }
}

/// Median and max of `n` 4 KiB write + fdatasync rounds in `dir`: what one
/// commit costs at least on this disk.
fn fsync_probe(dir: &Path, n: usize) -> (f64, f64) {
    let mut f = File::create(dir.join("fsync-probe")).expect("create");
    let block = [0x5au8; 4096];
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[n - 1])
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_runs(runs: &[Run], built: &Built) {
    println!(
        "| # | batch | cache | buckets deleted | wall | buckets deleted / s | write txns | wall / txn | longest txn | ≤ {TARGET_MS} ms | count_expired | load before |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let rep = &r.report;
        let secs = rep.duration_ms / 1e3;
        println!(
            "| {} | {} | {} | {} ({:.1} %) | {:.2} s | {:.0} | {} | {:.1} ms | **{:.1} ms** | {} | {} | {} |",
            i + 1,
            r.batch,
            r.label(),
            rep.total_removed,
            100.0 * rep.total_removed as f64 / built.buckets() as f64,
            secs,
            rep.total_removed as f64 / secs,
            rep.transactions,
            rep.duration_ms / rep.transactions.max(1) as f64,
            rep.longest_txn_ms,
            if rep.longest_txn_ms <= TARGET_MS {
                "yes"
            } else {
                "**no**"
            },
            r.dry_run_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
            r.load_before,
        );
    }
    println!();
}

/// Per batch size and cache state: every run's throughput, time per
/// transaction and longest transaction.
fn print_summary(runs: &[Run], batches: &[usize]) {
    println!(
        "| batch | cache | buckets deleted / s, per run | wall / txn, per run | longest txn, per run | worst |"
    );
    println!("|---|---|---|---|---|---|");
    let mut sizes: Vec<usize> = runs.iter().map(|r| r.batch).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.sort_by_key(|b| batches.iter().position(|x| x == b).unwrap_or(usize::MAX));
    let list = |these: &[&Run], f: &dyn Fn(&CompactReport) -> f64, digits: usize| {
        these
            .iter()
            .map(|r| format!("{:.*}", digits, f(&r.report)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for cold in [false, true] {
        for &b in &sizes {
            let these: Vec<&Run> = runs
                .iter()
                .filter(|r| r.batch == b && r.cold == cold && !r.probe)
                .collect();
            if these.is_empty() {
                continue;
            }
            let worst = these
                .iter()
                .map(|r| r.report.longest_txn_ms)
                .fold(0.0, f64::max);
            println!(
                "| {b} | {} | {} | {} ms | {} ms | **{worst:.1} ms** |",
                if cold { "cold" } else { "warm" },
                list(
                    &these,
                    &|r| r.total_removed as f64 / (r.duration_ms / 1e3),
                    0
                ),
                list(&these, &|r| r.duration_ms / r.transactions.max(1) as f64, 1),
                list(&these, &|r| r.longest_txn_ms, 1),
            );
        }
    }
    println!();
}

/// The distribution of a probe writer's waits for the write lock.
fn print_probes(runs: &[Run]) {
    println!(
        "| batch | compaction wall | txns | longest txn | probes | wait p50 | wait p90 | wait p99 | wait max | waits > {TARGET_MS} ms | sleep overshoot p99 / max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs.iter().filter(|r| r.probe) {
        let (w, late) = (sorted(&r.waits), sorted(&r.late));
        if w.is_empty() {
            continue;
        }
        println!(
            "| {} | {:.2} s | {} | {:.1} ms | {} | {:.1} ms | {:.1} ms | {:.1} ms | **{:.1} ms** | {} | {:.2} / {:.2} ms |",
            r.batch,
            r.report.duration_ms / 1e3,
            r.report.transactions,
            r.report.longest_txn_ms,
            w.len(),
            quantile(&w, 0.5),
            quantile(&w, 0.9),
            quantile(&w, 0.99),
            w[w.len() - 1],
            w.iter().filter(|&&x| x > TARGET_MS).count(),
            quantile(&late, 0.99),
            late[late.len() - 1],
        );
    }
    println!();
}

/// How a synthetic back-to-back writer lets other writers in.
#[derive(Clone, Copy)]
enum Handoff {
    Plain,
    Yield,
    FairMutex,
}

/// A writer commits small transactions back to back (fsync each, like the
/// compactor) for `secs` seconds while a probe wants the file every ~10 ms;
/// returns (commits, probe waits in ms).
fn handoff(dir: &Path, how: Handoff, secs: f64) -> (u64, Vec<f64>) {
    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
    let path = dir.join(format!("handoff-{}.redb", how as u8));
    let db = redb::Database::create(&path).expect("create");
    let fair = parking_lot::FairMutex::new(());
    let stop = AtomicBool::new(false);
    let lock = |on: bool| on.then(|| fair.lock());
    let fair_on = matches!(how, Handoff::FairMutex);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let t = Instant::now();
                let g = lock(fair_on);
                let txn = db.begin_write().expect("probe write txn");
                waits.push(t.elapsed().as_secs_f64() * 1e3);
                txn.abort().expect("abort");
                drop(g);
            }
            waits
        });
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed().as_secs_f64() < secs {
            let g = lock(fair_on);
            let txn = db.begin_write().expect("write txn");
            {
                let mut t = txn.open_table(T).expect("table");
                for k in 0..100 {
                    t.insert(i * 100 + k, k).expect("insert");
                }
            }
            txn.commit().expect("commit");
            drop(g);
            if matches!(how, Handoff::Yield) {
                std::thread::yield_now();
            }
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        (i, prober.join().expect("probe"))
    })
}

fn print_handoff(dir: &Path) {
    const SECS: f64 = 2.0;
    println!(
        "## Write-slot handoff (synthetic: {SECS} s of back-to-back commits of 100 inserts, fsync each; probe as above)\n"
    );
    println!(
        "| writer | commits | wall / commit | probes | wait p50 | wait p99 | wait max | waits > {TARGET_MS} ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, how) in [
        ("back to back (as `compact` does)", Handoff::Plain),
        (
            "`std::thread::yield_now()` after each commit",
            Handoff::Yield,
        ),
        (
            "writer and probe take a `parking_lot::FairMutex` around the txn",
            Handoff::FairMutex,
        ),
    ] {
        let (commits, waits) = handoff(dir, how, SECS);
        let w = sorted(&waits);
        if w.is_empty() {
            println!("| {name} | {commits} | - | 0 | - | - | - | - |");
            continue;
        }
        println!(
            "| {name} | {commits} | {:.2} ms | {} | {:.1} ms | {:.1} ms | **{:.1} ms** | {} |",
            SECS * 1e3 / commits.max(1) as f64,
            w.len(),
            quantile(&w, 0.5),
            quantile(&w, 0.99),
            w[w.len() - 1],
            w.iter().filter(|&&x| x > TARGET_MS).count()
        );
    }
    println!();
}

/// Builds `series` series × one day through the engine (record with
/// timestamps, flush and rollup every simulated hour, as `benches/sizes.rs`
/// does) and directly like [`build`]; returns (bytes per bucket, bytes per
/// bucket after redb compact) for both, to check the direct build's layout.
fn calibrate(series: usize) -> [(u64, f64, f64); 2] {
    let measure = |dir: &Path| {
        let path = dir.join(DB_FILE);
        let raw = file_size(&path);
        let mut store = Store::open(dir, OpenOptions::default()).expect("open");
        let mut buckets = 0u64;
        {
            use redb::{ReadableDatabase, ReadableTableMetadata};
            let rtx = store.db().expect("db").begin_read().expect("read txn");
            for def in [MINUTE, HOUR, DAY] {
                buckets += rtx.open_table(def).expect("table").len().expect("len");
            }
        }
        while store.db_mut().expect("db").compact().expect("compact") {}
        let compacted = file_size(&path);
        (
            buckets,
            raw as f64 / buckets as f64,
            compacted as f64 / buckets as f64,
        )
    };
    let engine_dir = tempfile::tempdir().expect("tempdir");
    {
        let clock = ManualClock::new(T0);
        let m = Monitor::builder(Config::with_data_dir(engine_dir.path()))
            .clock(Arc::new(clock.clone()))
            .background(false)
            .open()
            .expect("open monitor");
        let hosts: Vec<String> = (0..series).map(|i| format!("h{i:04}")).collect();
        let tags: Vec<[(&str, &str); 1]> = hosts.iter().map(|h| [("host", h.as_str())]).collect();
        let mut rng = Rng(0x5eed_c0ff_ee00_0002);
        let mut samples = Vec::with_capacity(series * 60 * PER_MINUTE);
        for hour in 0..24 {
            let h0 = T0 + hour * HOUR_MS;
            samples.clear();
            for minute in 0..60 {
                let t = h0 + minute * MINUTE_MS;
                for tag in &tags {
                    for k in 0..PER_MINUTE {
                        samples.push(Sample {
                            namespace: "prod",
                            metric: "db.query",
                            kind: Kind::Latency,
                            value: rng.lognormal(800.0, 0.8).round().clamp(1.0, 3.0e9),
                            tags: tag,
                            outcome: Outcome::Ok,
                            timestamp_ms: Some(t + k as i64 * 999),
                        });
                    }
                }
            }
            clock.set(h0 + HOUR_MS + 1_000);
            let (_, rejected) = m.record_batch(samples.iter().copied());
            assert!(rejected.is_empty(), "{:?}", rejected.first());
            m.flush().expect("flush");
            m.rollup().expect("rollup");
        }
        m.close().expect("close");
    }
    let direct_dir = tempfile::tempdir().expect("tempdir");
    build(direct_dir.path(), series, 1);
    [measure(engine_dir.path()), measure(direct_dir.path())]
}

fn main() {
    let series: usize = env_or("COMPACT_SERIES", 200);
    let days: i64 = env_or("COMPACT_DAYS", 6);
    let repeats: usize = env_or("COMPACT_REPEATS", 2);
    let batches: Vec<usize> = std::env::var("COMPACT_BATCHES")
        .unwrap_or_else(|_| "2000,500,1000,10000".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    assert!(!batches.is_empty(), "COMPACT_BATCHES lists no batch size");
    let primary = batches[0];
    let wall = Instant::now();
    println!("# Compaction of a large store\n");
    println!(
        "machine: {} cores, load average at start {} (1/5/15 min)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let base_dir = tempfile::tempdir().expect("tempdir");
    let (fs_med, fs_max) = fsync_probe(base_dir.path(), 20);
    println!(
        "fsync floor (4 KiB write + fdatasync, 20 rounds, same filesystem): median {fs_med:.2} ms, max {fs_max:.2} ms\n"
    );

    let cal_series = 20;
    let cal = calibrate(cal_series);
    println!("## Layout check: engine-built vs directly built ({cal_series} series × 1 day)\n");
    println!("| built by | buckets | file bytes / bucket | after redb compact |");
    println!("|---|---|---|---|");
    for (name, (n, raw, compacted)) in [
        "engine (record, flush, rollup hourly)",
        "direct (this bench)",
    ]
    .iter()
    .zip(cal)
    {
        println!("| {name} | {n} | {raw:.0} B | {compacted:.0} B |");
    }
    println!();

    let built = build(base_dir.path(), series, days);
    let base: PathBuf = base_dir.path().join(DB_FILE);
    let built_size = file_size(&base);
    let expected = {
        let store = Store::open(base_dir.path(), OpenOptions::default()).expect("open base");
        let policy =
            RetentionPolicy::load(&Config::default(), &*store.db().expect("db")).expect("policy");
        retention::count_expired(&*store.db().expect("db"), &policy, built.now)
            .expect("count")
            .total_removed
    };
    println!("## Store\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| series | {} (latency; 3 namespaces, default retention 48h / 30d / 400d) |",
        built.series
    );
    println!(
        "| buckets | **{}** = {} minute + {} hour + {} day ({days} days, {PER_MINUTE} samples per series-minute) |",
        built.buckets(),
        built.minutes,
        built.hours,
        built.days
    );
    println!(
        "| expired at `now` (count_expired) | {expected} ({:.1} %) |",
        100.0 * expected as f64 / built.buckets() as f64
    );
    println!(
        "| build time (direct codec + redb inserts, {days} write txns) | {:.1} s ({:.0} buckets/s) |",
        built.took.as_secs_f64(),
        built.buckets() as f64 / built.took.as_secs_f64()
    );
    println!(
        "| record bytes (values only) | {} (avg {:.0} B per bucket) |",
        mib(built.value_bytes),
        built.value_bytes as f64 / built.buckets() as f64
    );
    println!("| file after build | {} |", mib(built_size));
    println!("| now (compaction clock) | T0 + {days} d + 5 min |\n");

    let mut runs = Vec::new();
    for rep in 0..repeats {
        for &batch in &batches {
            let how = How {
                redb_compact: rep == 0 && batch == primary,
                ..How::default()
            };
            runs.push(run_compaction(&base, &built, expected, batch, how));
        }
    }
    for _ in 0..repeats {
        for &batch in &batches {
            let how = How {
                cold: true,
                ..How::default()
            };
            runs.push(run_compaction(&base, &built, expected, batch, how));
        }
    }
    for batch in [primary, 500] {
        let how = How {
            probe: true,
            ..How::default()
        };
        runs.push(run_compaction(&base, &built, expected, batch, how));
    }

    // Per cache state: if the primary batch's worst longest transaction
    // misses the target, the largest measured batch that met it, halving
    // further when none did.
    let mut verdicts = Vec::new();
    for cold in [false, true] {
        let worst = |runs: &[Run], b: usize| {
            runs.iter()
                .filter(|r| r.batch == b && r.cold == cold && !r.probe)
                .map(|r| r.report.longest_txn_ms)
                .fold(f64::NAN, f64::max)
        };
        if worst(&runs, primary) <= TARGET_MS {
            continue;
        }
        let mut found = batches
            .iter()
            .copied()
            .filter(|&b| b < primary && worst(&runs, b) <= TARGET_MS)
            .max();
        let mut next = batches
            .iter()
            .copied()
            .min()
            .unwrap_or(primary)
            .min(primary)
            / 2;
        while found.is_none() && next >= 50 && wall.elapsed() < Duration::from_secs(240) {
            let how = How {
                cold,
                ..How::default()
            };
            let r = run_compaction(&base, &built, expected, next, how);
            if r.report.longest_txn_ms <= TARGET_MS {
                found = Some(next);
            }
            runs.push(r);
            next /= 2;
        }
        verdicts.push((cold, worst(&runs, primary), found));
    }

    println!(
        "## Retention compaction (`scopemon::internals::compact` (retention), default CompactOptions but `batch`)\n"
    );
    println!("Every run, in order (each on a fresh fsynced copy of the built file):\n");
    print_runs(&runs, &built);
    println!("Summary:\n");
    print_summary(&runs, &batches);
    println!(
        "### Writer waits during compaction (a probe thread calls `Store::begin_write` every ~10 ms and aborts at once, like a flush wanting the file)\n"
    );
    print_probes(&runs);
    if verdicts.is_empty() {
        println!("longest transaction at batch {primary} within {TARGET_MS} ms in every run\n");
    }
    for (cold, worst, found) in verdicts {
        let cache = if cold { "cold" } else { "warm" };
        match found {
            Some(b) => println!(
                "{cache}: worst longest transaction at batch {primary} is {worst:.1} ms > {TARGET_MS} ms; largest batch measured within it: **{b}**\n"
            ),
            None => println!(
                "{cache}: worst longest transaction at batch {primary} is {worst:.1} ms > {TARGET_MS} ms; no batch size tried stayed within it\n"
            ),
        }
    }
    let first = &runs[0];
    let rep = &first.report;
    println!(
        "rolled-up minutes before deleting: {} (no deltas in the built store)\n",
        rep.rolled_up_minutes
    );
    println!("removed per namespace and resolution (run 1):\n");
    for (ns, per) in &rep.removed {
        let detail: Vec<String> = per.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("- {ns}: {}", detail.join(", "));
    }
    println!();

    println!("## File size (run 1, batch {})\n", first.batch);
    println!("| stage | file size |");
    println!("|---|---|");
    println!("| before compaction | {} |", mib(first.size_before));
    println!(
        "| after retention deletes (redb keeps freed pages) | {} |",
        mib(first.size_after)
    );
    if let Some((secs, size, calls)) = first.file_compact {
        println!(
            "| after `while db.compact()? {{}}` ({calls} calls) | **{}** ({:.0} % of before) |",
            mib(size),
            100.0 * size as f64 / first.size_before as f64
        );
        println!("| time of the redb file compaction | **{secs:.1} s** |");
    }
    println!();
    print_handoff(base_dir.path());
    println!(
        "total bench wall time {:.0} s; load average at end {}",
        wall.elapsed().as_secs_f64(),
        loadavg()
    );
}
