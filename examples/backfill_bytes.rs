//! File bytes per sample after a backfill load and `scopemon compact`
//! (issue 8, item 8): 100 series × one day, ~26 samples per series-minute,
//! log-normal latencies (µ 7.3, σ 0.8, in µs), sample `n`'s timestamp
//! = now − 86,000 s + (n × 7,919 ms mod 86,000 s), as the backfill load
//! sends them. Recorded in chunks of 100,000 samples with a flush after
//! each (so deltas of one minute are merged many times, as in the daemon),
//! then rolled up, closed and compacted offline with retention at `now`.
//!
//! Run: `cargo run --release --example backfill_bytes [-- --series S --samples N --float --per-minute K]`
//! (`--float`: values with sub-µs digits instead of whole µs;
//! `--per-minute K`: K samples per series-minute instead of ~26, after
//! `--series S` when both are given.)

use std::sync::Arc;
use std::time::Instant;

use scopemon::{Config, DAY_MS, Kind, ManualClock, Monitor, Outcome, Sample, offline};

/// xorshift64* (no extra crates).
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// exp(N(mu, sigma)) by Box–Muller.
    fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        let z = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        (mu + sigma * z).exp()
    }
}

struct Args {
    samples: u64,
    float: bool,
    series: u64,
}

fn args() -> Args {
    let mut a = Args {
        samples: 3_800_000,
        float: false,
        series: 100,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let num = |j: usize| argv.get(j).and_then(|s| s.parse::<u64>().ok());
        match argv[i].as_str() {
            "--float" => a.float = true,
            "--samples" => {
                a.samples = num(i + 1).expect("--samples N");
                i += 1;
            }
            "--series" => {
                a.series = num(i + 1).expect("--series N").max(1);
                i += 1;
            }
            "--per-minute" => {
                // ~1,433 minutes per series in the 86,000 s window
                a.samples = num(i + 1).expect("--per-minute K") * a.series * 86_000 / 60;
                i += 1;
            }
            _ => {} // `cargo bench`-style flags are ignored
        }
        i += 1;
    }
    a
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    // A UTC midnight, one day in.
    let now = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + DAY_MS;
    let clock = ManualClock::new(now);
    let config = Config::with_data_dir(dir.path());
    let m = Monitor::builder(config.clone())
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open");
    let hosts: Vec<String> = (0..a.series).map(|i| format!("h{i}")).collect();
    let tags: Vec<[(&str, &str); 1]> = hosts.iter().map(|h| [("host", h.as_str())]).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut peak_hot = 0usize;
    let mut n = 0u64;
    while n < a.samples {
        let end = (n + 100_000).min(a.samples);
        let batch: Vec<Sample<'_>> = (n..end)
            .map(|k| {
                let v = rng.lognormal(7.3, 0.8).min(3.0e9);
                Sample {
                    namespace: "prod",
                    metric: "db.query",
                    kind: Kind::Latency,
                    value: if a.float {
                        (v * 1000.0).round() / 1000.0
                    } else {
                        v.round().max(1.0)
                    },
                    tags: &tags[(k % a.series) as usize],
                    outcome: Outcome::Ok,
                    timestamp_ms: Some(now - 86_000_000 + ((k * 7_919) % 86_000_000) as i64),
                }
            })
            .collect();
        let (ok, rejected) = m.record_batch(batch);
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        assert_eq!(ok as u64, end - n);
        peak_hot = peak_hot.max(m.stats().hot_bytes);
        m.flush().expect("flush");
        n = end;
    }
    m.rollup().expect("rollup");
    let took = started.elapsed();
    m.close().expect("close");
    drop(m);
    let c = offline::compact(&config, false, now, |_| {}).expect("compact");
    let per_sm = a.samples as f64 / (a.series as f64 * 86_000.0 / 60.0);
    println!(
        "{} samples ({} values, ~{:.1} per series-minute, {} series) in {:.1} s; peak hot_bytes {:.1} MiB",
        a.samples,
        if a.float { "0.001 µs" } else { "whole µs" },
        per_sm,
        a.series,
        took.as_secs_f64(),
        peak_hot as f64 / (1 << 20) as f64,
    );
    println!(
        "file before compact {} B, after {} B = {:.2} bytes/sample",
        c.file_bytes_before,
        c.file_bytes_after,
        c.file_bytes_after as f64 / a.samples as f64
    );
    breakdown(&dir.path().join(scopemon::DB_FILE), a.samples);
}

/// Entries and value bytes per bucket table of the compacted file: where
/// the bytes per sample go (the rest is redb's keys, entry overhead and
/// page slack).
fn breakdown(path: &std::path::Path, samples: u64) {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
    let db = redb::Database::open(path).expect("open compacted");
    let tx = db.begin_read().expect("read");
    for name in ["minute", "minute_groups", "hour", "day"] {
        let def: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new(name);
        let t = tx.open_table(def).expect("table");
        let mut values = 0u64;
        for row in t.iter().expect("iter") {
            let (_, v) = row.expect("row");
            values += v.value().len() as u64;
        }
        let entries = t.len().expect("len");
        let stats = t.stats().expect("stats");
        println!(
            "{name:>6}: {entries} records, values {values} B ({:.1} B each, {:.2} B/sample), stored {} B, leaf {} B, fragmented {} B",
            values as f64 / entries.max(1) as f64,
            values as f64 / samples as f64,
            stats.stored_bytes(),
            stats.leaf_pages() * 4096,
            stats.fragmented_bytes(),
        );
    }
}
