//! HTTP ingest load: the same load generator against `scopemon serve`,
//! InfluxDB 1.x (`influxd`) and, for the backfill, VictoriaMetrics, each
//! started here on loopback with a temporary data directory.
//!
//! K client threads each keep one HTTP/1.1 keep-alive connection and POST
//! batches of samples back to back. Sample *n* (one shared counter over all
//! threads) takes its series (`host` tag) and value from pre-built batch
//! `n / batch mod pool`, the same for every target, so every target of a
//! run receives the same samples. Request bytes are built before the timed
//! loop; in the loop only the fixed-width timestamp digits are rewritten in
//! place, so the generator's own CPU stays small. Every answer is checked:
//! scopemon must say `200 {"accepted": <batch>, "rejected": []}` (a `429`
//! or `503` with `Retry-After` is waited out and the same body resent, as a
//! client should; the resends are counted), InfluxDB and VictoriaMetrics
//! `204`.
//!
//! Modes (first argument, or `MODE=`):
//! - `current` (default): 100 series with current timestamps (the wall
//!   clock in microseconds, one per sample, as in `hicard`; InfluxDB gets
//!   them with `precision=u`), lognormal values (median 800 µs, σ 1), 2
//!   connections, 30 s: agents reporting as they measure.
//! - `replay`: as `current`, but the timestamps come from one shared
//!   counter in 1 ms steps starting 36 h ago (every sample its own
//!   millisecond), so at 1 M samples/s the load moves through ~17 minutes
//!   of data time per second and every series closes a minute every few
//!   tens of milliseconds: a fast replay of recorded data, which keeps the
//!   flush and rollup busy. (Until session 6 this was the `current` mode.)
//! - `backfill`: 100 series, 4 connections, `LOAD_SAMPLES` (default
//!   4,000,000) samples; sample *n*'s timestamp is `now − 86,000 s + (n ×
//!   7,919 ms mod 86,000 s)` with `now` fixed once per run (so every target
//!   gets the very same samples), lognormal values (µ 7.3, σ 0.8, in µs):
//!   replaying a day of buffered agent data. Targets: scopemon, InfluxDB,
//!   VictoriaMetrics; after the load scopemon is stopped, `scopemon
//!   compact` runs, and bytes per sample are reported next to
//!   VictoriaMetrics' (see `ingest/vm.rs`).
//! - `hicard`: as `current` over 10,000 series with current timestamps
//!   (wall-clock microseconds, one per sample; InfluxDB gets them with
//!   `precision=u` so no two of its points collide).
//!
//! Resident memory of every server is sampled every 250 ms from /proc
//! during the load and for `LOAD_AFTER_SECS` after it (default 20 in
//! backfill, 0 otherwise): reported are the peak, the value that long
//! after the load, and the share of the peak given back.
//!
//! Afterwards the stored counts are read back and asserted equal to the
//! samples acknowledged, on every side (a mismatch fails the run):
//! InfluxDB's `SELECT count(value)`, VictoriaMetrics' `count_over_time`,
//! and scopemon's `window=range` count over the whole timestamp span from
//! a fresh `scopemon serve` on the same data dir after the SIGTERM (and
//! after `scopemon compact` in backfill) — so what it counts was persisted.
//!
//! Allocators (scopemon only): `ALLOCS=binary,jemalloc,mimalloc,trim`
//! runs the mode once per allocator (see `ingest/alloc.rs`), `ROUNDS=N`
//! times in alternation, and prints the medians.
//!
//! Run: `cargo bench --bench ingest_load [-- current|replay|backfill|hicard]`
//!
//! Environment:
//! - `MODE=current|replay|backfill|hicard` (or the first argument)
//! - `TARGET=scopemon|influxdb|vm|both|all` or a comma list (default: both
//!   in current, replay and hicard, all in backfill)
//! - `LOAD_SECS` timed load per target (default 30; in backfill a cap,
//!   default 600)
//! - `LOAD_SAMPLES` samples per target in backfill (default 4,000,000)
//! - `LOAD_THREADS` client threads = connections (default 2; backfill 4)
//! - `LOAD_BATCH` samples per request (default 1000)
//! - `LOAD_POOL` distinct pre-built batches (default 64)
//! - `LOAD_AFTER_SECS` resident-memory watch after the load
//! - `ALLOCS`, `ROUNDS`, `JEMALLOC_CONF`, `TRIM_SECS` (allocator runs)
//! - `LOAD_PERF=1` also runs `perf record -g` on the server during the load
//!   (`LOAD_PERF=dwarf`: `--call-graph dwarf`, for binaries without frame
//!   pointers) (written to `target/ingest_load.<target>.perf.data`)
//! - `SCOPEMON_BIN` the scopemon binary to run (default: the one cargo
//!   built with this bench)
//! - `INFLUXD` path of the influxd binary (default: PATH, then /usr/bin);
//!   `VICTORIA_METRICS` (default /usr/bin/victoria-metrics)

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

mod common;
mod ingest;
use common::Rng;
use ingest::alloc::Alloc;
use ingest::procs::loadavg;
use ingest::report::print_summary;
use ingest::servers::{run_influx, run_scopemon, run_vm};

/// Timestamps of the replay mode start this far in the past (and wrap
/// inside this window).
const TS_WINDOW_MS: u64 = 36 * 3_600_000;
/// The backfill's timestamps: `base + (n × STEP mod SPAN)`.
const BACKFILL_SPAN_MS: u64 = 86_000_000;
const BACKFILL_STEP_MS: u64 = 7_919;

// ---------------------------------------------------------------- settings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Current,
    Replay,
    Backfill,
    HiCard,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "current" | "" => Mode::Current,
            "replay" => Mode::Replay,
            "backfill" => Mode::Backfill,
            "hicard" | "high-cardinality" => Mode::HiCard,
            other => panic!("mode {other:?}: expected current, replay, backfill or hicard"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Current => "current",
            Mode::Replay => "replay",
            Mode::Backfill => "backfill",
            Mode::HiCard => "hicard",
        }
    }

    fn from_args() -> Mode {
        // `cargo bench` passes `--bench`; the first other argument is the mode.
        let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        let env = std::env::var("MODE").ok();
        Mode::parse(arg.or(env).as_deref().unwrap_or("current"))
    }
}

struct Settings {
    mode: Mode,
    /// Timed load (current, replay, hicard) or its cap (backfill).
    secs: f64,
    /// Samples to send per target (backfill), rounded up to whole batches.
    samples: Option<u64>,
    threads: usize,
    batch: usize,
    pool: usize,
    series: u64,
    after_secs: f64,
    /// The backfill's fixed `now − 86,000 s`, in Unix ms.
    backfill_base_ms: u64,
    /// `perf record` call-graph mode, when profiling.
    perf: Option<&'static str>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        _ => default,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as u64
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_micros() as u64
}

impl Settings {
    fn from_env(mode: Mode) -> Settings {
        let backfill = mode == Mode::Backfill;
        let batch = env_num("LOAD_BATCH", 1000usize);
        let samples = backfill.then(|| {
            let n: u64 = env_num("LOAD_SAMPLES", 4_000_000u64);
            n.div_ceil(batch as u64) * batch as u64
        });
        let s = Settings {
            mode,
            secs: env_num("LOAD_SECS", if backfill { 600.0 } else { 30.0 }),
            samples,
            threads: env_num("LOAD_THREADS", if backfill { 4usize } else { 2 }),
            batch,
            pool: env_num("LOAD_POOL", 64usize),
            series: if mode == Mode::HiCard { 10_000 } else { 100 },
            after_secs: env_num("LOAD_AFTER_SECS", if backfill { 20.0 } else { 0.0 }),
            backfill_base_ms: now_ms() - BACKFILL_SPAN_MS,
            perf: match std::env::var("LOAD_PERF").as_deref() {
                Ok("1") => Some("fp"),
                Ok("dwarf") => Some("dwarf,32768"),
                _ => None,
            },
        };
        assert!(s.secs > 0.0, "LOAD_SECS must be positive");
        assert!(s.threads > 0, "LOAD_THREADS must be positive");
        assert!(s.batch > 0, "LOAD_BATCH must be positive");
        assert!(s.pool > 0, "LOAD_POOL must be positive");
        assert!(s.after_secs >= 0.0, "LOAD_AFTER_SECS must not be negative");
        s
    }
}

// ---------------------------------------------------------------- samples

/// One generated sample (the timestamp is filled in at send time).
struct Gen {
    host: u64,
    value: u64,
}

/// The pre-built batches every target of the run receives.
fn gen_pool(s: &Settings) -> Vec<Vec<Gen>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (median, sigma) = match s.mode {
        // µ 7.3, σ 0.8 (median e^7.3 ≈ 1,480 µs).
        Mode::Backfill => (7.3f64.exp(), 0.8),
        Mode::Current | Mode::Replay | Mode::HiCard => (800.0, 1.0),
    };
    (0..s.pool)
        .map(|_| {
            (0..s.batch)
                .map(|_| Gen {
                    host: rng.next_u64() % s.series,
                    // Latency in µs, capped at one minute.
                    value: rng.lognormal(median, sigma).clamp(1.0, 60e6) as u64,
                })
                .collect()
        })
        .collect()
}

/// A target server and its wire format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Scopemon,
    Influx,
    Vm,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Scopemon => "scopemon",
            Target::Influx => "influxdb",
            Target::Vm => "victoria-metrics",
        }
    }

    /// The unit of the timestamps this target receives in `mode`.
    fn unit(self, mode: Mode) -> Unit {
        match (self, mode) {
            (Target::Scopemon, _) => Unit::Ms,
            (Target::Influx, Mode::HiCard | Mode::Current) => Unit::Us,
            (Target::Influx, _) => Unit::Ms,
            (Target::Vm, _) => Unit::Ns,
        }
    }
}

/// A timestamp unit on the wire (the generator works in microseconds).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unit {
    Ms,
    Us,
    Ns,
}

impl Unit {
    /// Digits of a timestamp between 2001 and 2286.
    fn width(self) -> usize {
        match self {
            Unit::Ms => 13,
            Unit::Us => 16,
            Unit::Ns => 19,
        }
    }

    fn of_us(self, us: u64) -> u64 {
        match self {
            Unit::Ms => us / 1000,
            Unit::Us => us,
            Unit::Ns => us * 1000,
        }
    }
}

/// A complete HTTP request whose timestamp digits sit at known offsets.
#[derive(Clone)]
struct Request {
    bytes: Vec<u8>,
    ts_offsets: Vec<usize>,
    unit: Unit,
}

impl Request {
    fn build(target: Target, mode: Mode, addr: SocketAddr, samples: &[Gen]) -> Request {
        let unit = target.unit(mode);
        let placeholder = "0".repeat(unit.width());
        let mut body = String::with_capacity(samples.len() * 128);
        let mut ts_in_body = Vec::with_capacity(samples.len());
        match target {
            Target::Scopemon => {
                body.push_str("{\"samples\":[");
                for (i, s) in samples.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let _ = write!(
                        body,
                        "{{\"namespace\":\"bench\",\"metric\":\"api.latency\",\"kind\":\"latency\",\
                         \"value\":{},\"tags\":{{\"host\":\"h{}\"}},\"timestamp\":",
                        s.value, s.host
                    );
                    ts_in_body.push(body.len());
                    body.push_str(&placeholder);
                    body.push('}');
                }
                body.push_str("]}");
            }
            Target::Influx | Target::Vm => {
                for s in samples {
                    let _ = write!(body, "api_latency,host=h{} value={}i ", s.host, s.value);
                    ts_in_body.push(body.len());
                    body.push_str(&placeholder);
                    body.push('\n');
                }
            }
        }
        let (path, ctype) = match (target, unit) {
            (Target::Scopemon, _) => ("/v1/ingest", "application/json"),
            (Target::Influx, Unit::Us) => ("/write?db=bench&precision=u", "text/plain"),
            (Target::Influx, _) => ("/write?db=bench&precision=ms", "text/plain"),
            // Nanoseconds, line protocol's default.
            (Target::Vm, _) => ("/write", "text/plain"),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: scopemon-ingest-load\r\n\
             Content-Type: {ctype}; charset=utf-8\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        let base = bytes.len();
        bytes.extend_from_slice(body.as_bytes());
        Request {
            bytes,
            ts_offsets: ts_in_body.into_iter().map(|o| o + base).collect(),
            unit,
        }
    }

    /// Writes `ts_us(i)` (microseconds) into the i-th timestamp.
    fn set_timestamps(&mut self, ts_us: impl Fn(u64) -> u64) {
        let width = self.unit.width();
        for (i, &off) in self.ts_offsets.iter().enumerate() {
            let mut v = self.unit.of_us(ts_us(i as u64));
            let digits = &mut self.bytes[off..off + width];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
    }
}

/// Where the samples' timestamps come from, shared by the client threads.
enum Stamps {
    /// Replay mode: `t0 + n` ms, wrapping inside [`TS_WINDOW_MS`].
    Counter { t0_ms: u64, wrapped: AtomicU64 },
    /// Backfill: `base + (n × 7,919 mod 86,000,000)` ms.
    Backfill { base_ms: u64 },
    /// Current and high cardinality: the wall clock in µs, one per sample, never
    /// going back (`clock` is the next free microsecond).
    Wall { start_us: u64, clock: AtomicU64 },
}

impl Stamps {
    fn new(s: &Settings) -> Stamps {
        match s.mode {
            Mode::Replay => Stamps::Counter {
                t0_ms: now_ms() - TS_WINDOW_MS,
                wrapped: AtomicU64::new(0),
            },
            Mode::Backfill => Stamps::Backfill {
                base_ms: s.backfill_base_ms,
            },
            Mode::Current | Mode::HiCard => {
                let start_us = now_us();
                Stamps::Wall {
                    start_us,
                    clock: AtomicU64::new(start_us),
                }
            }
        }
    }

    /// Stamps `req`, whose first sample is sample number `first`.
    fn apply(&self, req: &mut Request, first: u64, batch: u64) {
        match self {
            Stamps::Counter { t0_ms, wrapped } => {
                let mut off = first % TS_WINDOW_MS;
                if off + batch > TS_WINDOW_MS {
                    off = 0;
                }
                if first + batch > TS_WINDOW_MS {
                    wrapped.store(1, Ordering::Relaxed);
                }
                req.set_timestamps(|i| (t0_ms + off + i) * 1000);
            }
            Stamps::Backfill { base_ms } => req.set_timestamps(|i| {
                (base_ms + ((first + i) * BACKFILL_STEP_MS) % BACKFILL_SPAN_MS) * 1000
            }),
            Stamps::Wall { clock, .. } => {
                let now = now_us();
                let prev = clock
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                        Some(c.max(now) + batch)
                    })
                    .unwrap_or(now);
                let start = prev.max(now);
                req.set_timestamps(|i| start + i);
            }
        }
    }

    /// The span of timestamps handed out, in Unix ms `[first, end)`, after
    /// `sent` samples.
    fn span_ms(&self, sent: u64) -> (u64, u64) {
        match self {
            Stamps::Counter { t0_ms, .. } => (*t0_ms, t0_ms + sent.min(TS_WINDOW_MS)),
            Stamps::Backfill { base_ms } => (*base_ms, base_ms + BACKFILL_SPAN_MS),
            Stamps::Wall { start_us, clock } => {
                (start_us / 1000, clock.load(Ordering::Relaxed) / 1000 + 1)
            }
        }
    }

    fn wrapped(&self) -> bool {
        matches!(self, Stamps::Counter { wrapped, .. } if wrapped.load(Ordering::Relaxed) != 0)
    }
}

// ---------------------------------------------------------------- main

/// The targets of this run: `TARGET` or the mode's default.
fn targets(mode: Mode) -> Vec<Target> {
    let default = if mode == Mode::Backfill {
        "all"
    } else {
        "both"
    };
    let spec = std::env::var("TARGET").unwrap_or_else(|_| default.into());
    let mut out = Vec::new();
    for t in spec.split(',').map(str::trim) {
        match t {
            "scopemon" => out.push(Target::Scopemon),
            "influxdb" | "influx" => out.push(Target::Influx),
            "vm" | "victoria-metrics" => out.push(Target::Vm),
            "both" | "" => out.extend([Target::Scopemon, Target::Influx]),
            "all" => out.extend([Target::Scopemon, Target::Influx, Target::Vm]),
            other => panic!("TARGET={other:?}: expected scopemon, influxdb, vm, both or all"),
        }
    }
    out.dedup();
    out
}

fn main() {
    let mode = Mode::from_args();
    let s = Settings::from_env(mode);
    let targets = targets(mode);
    let allocs: Vec<Option<Alloc>> = match std::env::var("ALLOCS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|a| Some(Alloc::parse(a))).collect(),
        _ => vec![None],
    };
    let rounds: usize = env_num("ROUNDS", 1);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let amount = match s.samples {
        Some(n) => format!("{n} samples (cap {} s)", s.secs),
        None => format!("{} s", s.secs),
    };
    println!(
        "ingest_load {}: {amount} per target, {} client threads, {} samples/batch, {} series; {} cores, load average {}",
        mode.name(),
        s.threads,
        s.batch,
        s.series,
        cores,
        loadavg()
    );
    let gens = gen_pool(&s);
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        if rounds > 1 {
            println!("---- round {} of {rounds}", round + 1);
        }
        for &t in &targets {
            match t {
                Target::Scopemon => {
                    for &a in &allocs {
                        outcomes.push(run_scopemon(&s, &gens, a));
                    }
                }
                Target::Influx => outcomes.extend(run_influx(&s, &gens)),
                Target::Vm => outcomes.extend(run_vm(&s, &gens)),
            }
        }
    }
    print_summary(&s, &outcomes);
}
