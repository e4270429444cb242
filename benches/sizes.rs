//! Memory and file sizes (a plain program printing tables, not criterion):
//! 1. hot bytes per active series, per kind (engine figure and the heap
//!    actually allocated, counted by a global allocator wrapper);
//! 2. file bytes per series-minute at 60 and at 1,000 samples per minute;
//! 3. the file for 30 days of one latency series at 1,000 samples/minute;
//! 4. hot bucket forms: bytes per bucket and ns per sample, sparse and
//!    dense, at 1 to 10,000 samples per bucket.
//!
//! Record sizes are shown next to what the version-1 encoding (before
//! issue 8) would take for the same statistics.
//!
//! Run: `cargo bench --bench sizes` (all), or name sections:
//! `cargo bench --bench sizes -- hot-forms per-series-minute thirty-days hot-memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use scopemon::CompactOptions;
use scopemon::DB_FILE;
use scopemon::internals::tables::{DAY, DELTAS, HOUR, MINUTE, SERIES};
use scopemon::internals::{Codec, decode_series};
use scopemon::{Config, Kind, ManualClock, Monitor, Outcome, Sample};
use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS};

mod common;
use common::Rng;

/// Counts live heap bytes so hot memory can be measured, not just reported.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A UTC midnight.
const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

/// A latency in µs: lognormal, median 800 µs, shape 1.0.
fn latency_us(rng: &mut Rng) -> f64 {
    rng.lognormal(800.0, 1.0).min(3.0e9)
}

fn open(dir: &Path, clock: &ManualClock) -> Monitor {
    Monitor::builder(Config::with_data_dir(dir))
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor")
}

fn kib(b: f64) -> String {
    format!("{:.1} KiB", b / 1024.0)
}

// ---------------------------------------------------------------- hot memory

fn hot_memory() {
    const N: usize = 1_000;
    const PER_SERIES: usize = 100;
    println!(
        "## Hot memory per active series ({N} series per kind, {PER_SERIES} samples each, one open minute)\n"
    );
    println!(
        "| kind | engine hot_bytes / hot series | heap allocated per series (series + handle + histogram) | of which recording (first sample opens the bucket) |"
    );
    println!("|---|---|---|---|");
    for kind in Kind::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(T0 + 5_000);
        let m = open(dir.path(), &clock);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(kind.code()));
        let names: Vec<String> = (0..N).map(|i| format!("h{i}")).collect();
        let before_create = live();
        let handles: Vec<_> = names
            .iter()
            .map(|h| {
                m.handle("bench", kind, "some.metric", &[("host", h.as_str())])
                    .expect("handle")
            })
            .collect();
        let before_record = live();
        for h in &handles {
            for _ in 0..PER_SERIES {
                let v = match kind {
                    Kind::Latency => latency_us(&mut rng),
                    Kind::Throughput => 100.0 + rng.unit() * 4_900.0,
                    Kind::ErrorRate => rng.unit() * 5.0,
                    Kind::ResourceUsage => rng.lognormal(5.0e8, 0.5).min(1.0e13),
                };
                h.record_value_outcome(v, Outcome::Ok).expect("record");
            }
        }
        let after = live();
        let st = m.stats();
        assert_eq!(st.hot_series, N);
        println!(
            "| {} | {} | {} | {} |",
            kind,
            kib(st.hot_bytes as f64 / st.hot_series as f64),
            kib((after - before_create) as f64 / N as f64),
            kib((after - before_record) as f64 / N as f64),
        );
        drop(handles);
        m.close().expect("close");
    }
    println!();
}

// ------------------------------------------------------------ file analysis

struct TableFigures {
    name: &'static str,
    records: u64,
    value_bytes: u64,
    /// Value bytes had every record been encoded as version 1.
    v1_bytes: u64,
}

struct FileFigures {
    raw: u64,
    compacted: u64,
    tables: Vec<TableFigures>,
    /// Deltas still in the file (of the open minute: the engine's own
    /// series record at "now"; closed minutes are all rolled up).
    deltas_left: usize,
}

/// Ids of the series of namespace `prod` (the engine may add its own
/// series, e.g. compactor figures, which are left out of the averages).
fn bench_series(db: &redb::Database) -> HashSet<u64> {
    let rtx = db.begin_read().expect("read txn");
    let t = rtx.open_table(SERIES).expect("series");
    t.iter()
        .expect("iter")
        .filter_map(|e| {
            let (k, v) = e.expect("entry");
            let rec = decode_series(v.value()).expect("series record");
            (rec.key.namespace == "prod").then_some(k.value())
        })
        .collect()
}

fn table_figures(
    db: &redb::Database,
    ids: &HashSet<u64>,
    name: &'static str,
    def: TableDefinition<'static, (u64, i64), &'static [u8]>,
) -> TableFigures {
    let rtx = db.begin_read().expect("read txn");
    let t = rtx.open_table(def).expect("table");
    let mut codec = Codec::new();
    let mut buf = Vec::new();
    let (mut records, mut value_bytes, mut v1_bytes) = (0, 0, 0);
    for e in t.iter().expect("iter") {
        let (k, v) = e.expect("entry");
        if !ids.contains(&k.value().0) {
            continue;
        }
        let v = v.value();
        records += 1;
        value_bytes += v.len() as u64;
        let rec = codec.decode(v).expect("decode");
        // Version 1 compressed minute records only.
        codec
            .encode_v1(&rec.stats, rec.first, rec.last, name == "minute", &mut buf)
            .expect("encode");
        v1_bytes += buf.len() as u64;
    }
    TableFigures {
        name,
        records,
        value_bytes,
        v1_bytes,
    }
}

fn compact(db: &mut redb::Database) {
    for _ in 0..8 {
        if !db.compact().expect("compact") {
            break;
        }
    }
}

/// Opens a closed store with redb, measures it, compacts it. With
/// `retention_now`, then deletes what default retention (48h minute, 30d
/// hour, 400d day) would have deleted at that time and compacts again.
fn inspect(dir: &Path, retention_now: Option<i64>) -> (FileFigures, Option<u64>) {
    let path = dir.join(DB_FILE);
    let raw = std::fs::metadata(&path).expect("stat").len();
    let mut db = redb::Database::open(&path).expect("redb open");
    let ids = bench_series(&db);
    assert!(!ids.is_empty());
    let tables = vec![
        table_figures(&db, &ids, "minute", MINUTE),
        table_figures(&db, &ids, "hour", HOUR),
        table_figures(&db, &ids, "day", DAY),
    ];
    let deltas_left = {
        let rtx = db.begin_read().expect("read txn");
        let deltas = rtx.open_table(DELTAS).expect("deltas");
        deltas.iter().expect("iter").count()
    };
    compact(&mut db);
    let compacted = std::fs::metadata(&path).expect("stat").len();
    let retained = retention_now.map(|now| {
        let wtx = db.begin_write().expect("write txn");
        for (def, keep) in [
            (MINUTE, 48 * HOUR_MS),
            (HOUR, 30 * DAY_MS),
            (DAY, 400 * DAY_MS),
        ] {
            let mut t = wtx.open_table(def).expect("table");
            t.retain(|(_, start), _| start >= now - keep)
                .expect("retain");
        }
        wtx.commit().expect("commit");
        compact(&mut db);
        std::fs::metadata(&path).expect("stat").len()
    });
    (
        FileFigures {
            raw,
            compacted,
            tables,
            deltas_left,
        },
        retained,
    )
}

/// Writes `series` × `minutes` minutes of `per_minute` latencies each, one
/// simulated hour at a time (clock just past the hour, record with
/// timestamps, flush, rollup); closes the store. Returns the wall time.
fn write_history(
    dir: &Path,
    series: usize,
    minutes: i64,
    per_minute: usize,
    seed: u64,
    apply_retention: bool,
) -> (Spent, i64) {
    let clock = ManualClock::new(T0);
    let m = open(dir, &clock);
    let hosts: Vec<String> = (0..series).map(|i| format!("h{i}")).collect();
    let tags: Vec<[(&str, &str); 1]> = hosts.iter().map(|h| [("host", h.as_str())]).collect();
    let mut rng = Rng(seed);
    let mut samples: Vec<Sample<'_>> = Vec::with_capacity(series * 60 * per_minute);
    let mut spent = Spent::default();
    let started = Instant::now();
    let end = T0 + minutes * MINUTE_MS;
    let mut hour = T0;
    while hour < end {
        let chunk_end = (hour + HOUR_MS).min(end);
        samples.clear();
        for t in &tags {
            let mut minute = hour;
            while minute < chunk_end {
                for k in 0..per_minute {
                    samples.push(Sample {
                        namespace: "prod",
                        metric: "db.query",
                        kind: Kind::Latency,
                        value: latency_us(&mut rng),
                        tags: t,
                        outcome: Outcome::Ok,
                        timestamp_ms: Some(minute + (k as i64 * 59_999) / per_minute as i64),
                    });
                }
                minute += MINUTE_MS;
            }
        }
        clock.set(chunk_end + 1_000);
        let t = Instant::now();
        let (_, rejected) = m.record_batch(samples.iter().copied());
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        let t = lap(&mut spent.record, t);
        m.flush().expect("flush");
        let t = lap(&mut spent.flush, t);
        m.rollup().expect("rollup");
        let t = lap(&mut spent.rollup, t);
        if apply_retention {
            // What the background compactor (every 10 min by default) does.
            m.compact(CompactOptions::default()).expect("compact");
            lap(&mut spent.compact, t);
        }
        hour = chunk_end;
    }
    m.close().expect("close");
    spent.total = started.elapsed();
    drop(m);
    (spent, clock_now(&clock))
}

/// Where the writing time went (building the sample vectors is the rest).
#[derive(Default)]
struct Spent {
    total: Duration,
    record: Duration,
    flush: Duration,
    rollup: Duration,
    compact: Duration,
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s (record_batch {:.1} s, flush {:.1} s, rollup {:.1} s",
            self.total.as_secs_f64(),
            self.record.as_secs_f64(),
            self.flush.as_secs_f64(),
            self.rollup.as_secs_f64()
        )?;
        if !self.compact.is_zero() {
            write!(f, ", retention compact {:.1} s", self.compact.as_secs_f64())?;
        }
        write!(f, ")")
    }
}

/// Adds the time since `t` to `acc`; returns now.
fn lap(acc: &mut Duration, t: Instant) -> Instant {
    let now = Instant::now();
    *acc += now - t;
    now
}

fn clock_now(c: &ManualClock) -> i64 {
    use scopemon::Clock;
    c.now_ms()
}

fn per_series_minute() {
    const SERIES_N: usize = 100;
    const MINUTES: i64 = 180;
    println!(
        "## File bytes per series-minute ({SERIES_N} series × {MINUTES} minutes, lognormal latencies median 800 µs σ=1)\n"
    );
    println!(
        "| samples/min | write+flush+rollup time | file raw | file compacted | compacted / series-minute | avg minute record | avg hour record | avg day record | avg minute record as version 1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for per_minute in [60usize, 1_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (took, _) = write_history(dir.path(), SERIES_N, MINUTES, per_minute, 42, false);
        let (f, _) = inspect(dir.path(), None);
        let sm = (SERIES_N as i64 * MINUTES) as f64;
        assert_eq!(f.tables[0].records as f64, sm);
        let avg = |t: &TableFigures| t.value_bytes as f64 / t.records as f64;
        println!(
            "| {} | {} | {} | {} | **{:.0} B** | {:.0} B | {:.0} B | {:.0} B | {:.0} B |",
            per_minute,
            took,
            kib(f.raw as f64),
            kib(f.compacted as f64),
            f.compacted as f64 / sm,
            avg(&f.tables[0]),
            avg(&f.tables[1]),
            avg(&f.tables[2]),
            f.tables[0].v1_bytes as f64 / f.tables[0].records as f64,
        );
    }
    println!();
}

fn thirty_days() {
    const MINUTES: i64 = 30 * 24 * 60;
    const PER_MINUTE: usize = 1_000;
    println!(
        "## 30 days of one latency series at {PER_MINUTE} samples/min ({MINUTES} minutes, {} samples)\n",
        MINUTES * PER_MINUTE as i64
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (took, now) = write_history(dir.path(), 1, MINUTES, PER_MINUTE, 7, true);
    let (f, retained) = inspect(dir.path(), Some(now));
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| write (record_batch with timestamps, then flush, rollup and `monitor.compact` (retention) once per simulated hour) | {} = {:.0} ns/sample overall |",
        took,
        took.total.as_nanos() as f64 / (MINUTES * PER_MINUTE as i64) as f64
    );
    println!(
        "| file as left by the engine (retention applied online) | {} |",
        kib(f.raw as f64)
    );
    println!("| file after redb compact | {} |", kib(f.compacted as f64));
    for t in &f.tables {
        println!(
            "| {} records | {} ({} of values, avg {:.0} B; version 1 would be avg {:.0} B) |",
            t.name,
            t.records,
            kib(t.value_bytes as f64),
            t.value_bytes as f64 / t.records.max(1) as f64,
            t.v1_bytes as f64 / t.records.max(1) as f64,
        );
    }
    println!(
        "| series in the file / deltas left (open minute) | {} / {} |",
        stats_series(dir.path()),
        f.deltas_left
    );
    if let Some(r) = retained {
        println!(
            "| cross-check: file after deleting with redb whatever default retention (48h/30d/400d) still allows, then compact | {} |",
            kib(r as f64)
        );
    }
    println!();
}

fn stats_series(dir: &Path) -> usize {
    let db = redb::Database::open(dir.join(DB_FILE)).expect("redb open");
    let rtx = db.begin_read().expect("read txn");
    rtx.open_table(SERIES)
        .expect("series")
        .iter()
        .expect("iter")
        .count()
}

// ------------------------------------------------------------ hot forms

/// Bytes per bucket and ns per sample of the two hot forms at `n`
/// samples per bucket (log-normal µs, µ 7.3 σ 0.8, as the backfill load):
/// enough buckets of each size for ~2 M samples, timed from opening each
/// bucket (a dense one allocates and zeroes its array) to its last sample.
fn hot_forms() {
    use scopemon::Precision;
    use scopemon::internals::Stats;
    println!("## Hot bucket forms (latency, 2 digits; log-normal µs, µ 7.3 σ 0.8)\n");
    println!(
        "| samples / bucket | sparse: bytes / bucket | dense: bytes / bucket | sparse buckets still sparse | sparse ns / sample | dense ns / sample |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rng = Rng(0x51ab_1e5e_ed00_0001);
    for n in [1usize, 10, 40, 100, 1_000, 10_000] {
        let buckets = (2_000_000 / n).clamp(20, 20_000);
        let values: Vec<u64> = (0..n * buckets)
            .map(|_| (rng.lognormal(7.3f64.exp(), 0.8).round() as u64).clamp(1, 3_600_000_000))
            .collect();
        let mut row = Vec::new();
        let mut still_sparse = 0;
        for sparse in [true, false] {
            let before = live();
            let t = Instant::now();
            let kept: Vec<Stats> = values
                .chunks(n)
                .map(|chunk| {
                    let mut s = if sparse {
                        Stats::new_sparse(Kind::Latency, Precision::DEFAULT)
                    } else {
                        Stats::new(Kind::Latency, Precision::DEFAULT)
                    };
                    for &v in chunk {
                        s.record_scaled(v, v as f64, false);
                    }
                    s
                })
                .collect();
            let ns = t.elapsed().as_nanos() as f64 / values.len() as f64;
            let heap = (live() - before) as f64 / buckets as f64;
            let counted = kept.iter().map(Stats::heap_bytes).sum::<usize>() as f64 / buckets as f64;
            if sparse {
                still_sparse = kept.iter().filter(|s| s.is_sparse()).count();
            }
            // heap_bytes counts the struct itself, held inline in a hot bucket
            row.push((counted, heap, ns));
            drop(kept);
        }
        println!(
            "| {n} | {:.0} (heap {:.0}) | {:.0} (heap {:.0}) | {still_sparse} of {buckets} | {:.1} | {:.1} |",
            row[0].0, row[0].1, row[1].0, row[1].1, row[0].2, row[1].2
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments name sections.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    let started = Instant::now();
    if run("hot-forms") {
        hot_forms();
    }
    if run("hot-memory") {
        hot_memory();
    }
    if run("per-series-minute") {
        per_series_minute();
    }
    if run("thirty-days") {
        thirty_days();
    }
    println!("(total run {:.1} s)", started.elapsed().as_secs_f64());
}
