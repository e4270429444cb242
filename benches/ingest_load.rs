//! HTTP ingest load: the same load generator against `scopemon serve` and
//! InfluxDB 1.x (`influxd`), each started here on loopback with a temporary
//! data directory.
//!
//! K client threads each keep one HTTP/1.1 keep-alive connection and POST
//! batches of samples back to back for a fixed time. Every sample has its
//! own millisecond timestamp (increasing, shared by all threads so that no
//! two samples anywhere carry the same one), one of 100 series (`host`
//! tag), and a lognormal latency (median 800 µs). Request bytes are built
//! before the timed loop (a pool of distinct batches per thread); in the
//! loop only the fixed-width timestamp digits are rewritten in place, so the
//! generator's own CPU stays small. Every answer is checked: scopemon must
//! say `200 {"accepted": <batch>, "rejected": []}`, InfluxDB `204`.
//!
//! Afterwards the stored counts are read back and asserted equal to the
//! samples acknowledged, on both sides (a mismatch fails the run):
//! InfluxDB's `SELECT count(value)` right after the load, and scopemon's
//! `window=range` count over the whole timestamp span from a fresh
//! `scopemon serve` on the same data dir after the SIGTERM — so what it
//! counts was persisted, not merely held in memory.
//!
//! Reported per target: samples/s sustained (accepted / elapsed), batch
//! latency p50/p99/max, the server's CPU time during the load, and the time
//! SIGTERM took (scopemon's final flush).
//!
//! Run: `cargo bench --bench ingest_load`
//!
//! Environment:
//! - `TARGET=scopemon|influxdb|both` (default `both`)
//! - `LOAD_SECS` timed load per target (default 30)
//! - `LOAD_THREADS` client threads = connections (default 2)
//! - `LOAD_BATCH` samples per request (default 1000)
//! - `LOAD_POOL` distinct pre-built batches per thread (default 64)
//! - `LOAD_PERF=1` also runs `perf record -g` on the server during the load
//!   (`LOAD_PERF=dwarf`: `--call-graph dwarf`, for binaries without frame
//!   pointers)
//!   (written to `target/ingest_load.<target>.perf.data`)
//! - `INFLUXD` path of the influxd binary (default: PATH, then /usr/bin)

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

mod common;
use common::Rng;

/// Number of series (values of the `host` tag).
const SERIES: u64 = 100;
/// Width of a millisecond timestamp from 2001 to 2286.
const TS_WIDTH: usize = 13;
/// Timestamps start this far in the past (and wrap inside this window).
const TS_WINDOW_MS: u64 = 36 * 3_600_000;

// ---------------------------------------------------------------- settings

struct Settings {
    secs: f64,
    threads: usize,
    batch: usize,
    pool: usize,
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

impl Settings {
    fn from_env() -> Settings {
        let s = Settings {
            secs: env_num("LOAD_SECS", 30.0),
            threads: env_num("LOAD_THREADS", 2usize),
            batch: env_num("LOAD_BATCH", 1000usize),
            pool: env_num("LOAD_POOL", 64usize),
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
        s
    }
}

// ---------------------------------------------------------------- samples

/// One generated sample (the timestamp is filled in at send time).
struct Gen {
    host: u64,
    value: u64,
}

fn gen_batch(rng: &mut Rng, n: usize) -> Vec<Gen> {
    (0..n)
        .map(|_| Gen {
            host: rng.next_u64() % SERIES,
            // Latency in µs, median 800, capped at one minute.
            value: rng.lognormal(800.0, 1.0).clamp(1.0, 60e6) as u64,
        })
        .collect()
}

/// The wire format of a target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Scopemon,
    Influx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Scopemon => "scopemon",
            Target::Influx => "influxdb",
        }
    }
}

/// A complete HTTP request whose timestamp digits sit at known offsets.
struct Request {
    bytes: Vec<u8>,
    ts_offsets: Vec<usize>,
}

impl Request {
    fn build(target: Target, addr: SocketAddr, samples: &[Gen]) -> Request {
        let placeholder = "0".repeat(TS_WIDTH);
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
            Target::Influx => {
                for s in samples {
                    let _ = write!(body, "api_latency,host=h{} value={}i ", s.host, s.value);
                    ts_in_body.push(body.len());
                    body.push_str(&placeholder);
                    body.push('\n');
                }
            }
        }
        let (path, ctype) = match target {
            Target::Scopemon => ("/v1/ingest", "application/json"),
            Target::Influx => ("/write?db=bench&precision=ms", "text/plain; charset=utf-8"),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: scopemon-ingest-load\r\n\
             Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        let base = bytes.len();
        bytes.extend_from_slice(body.as_bytes());
        Request {
            bytes,
            ts_offsets: ts_in_body.into_iter().map(|o| o + base).collect(),
        }
    }

    /// Writes `first + i * stride` into the i-th timestamp.
    fn set_timestamps(&mut self, first: u64, stride: u64) {
        let mut ts = first;
        for &off in &self.ts_offsets {
            let mut v = ts;
            let digits = &mut self.bytes[off..off + TS_WIDTH];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            ts += stride;
        }
    }
}

// ---------------------------------------------------------------- HTTP client

/// A minimal blocking HTTP/1.1 keep-alive client.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    body: Vec<u8>,
    line: String,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::with_capacity(64 * 1024, s),
            body: Vec::with_capacity(4096),
            line: String::new(),
        })
    }

    /// Sends the raw request; returns the status (the body is in `self.body`).
    fn round_trip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.writer.write_all(request)?;
        self.read_response()
    }

    fn read_line(&mut self) -> std::io::Result<&str> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        Ok(self.line.trim_end())
    }

    fn read_response(&mut self) -> std::io::Result<u16> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let status_line = self.read_line()?.to_owned();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(
                        v.parse::<usize>()
                            .map_err(|_| bad(format!("bad length {v:?}")))?,
                    );
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
        self.body.clear();
        if chunked {
            loop {
                let size_line = self.read_line()?.to_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let start = self.body.len();
                self.body.resize(start + size, 0);
                self.reader.read_exact(&mut self.body[start..])?;
                self.read_line()?;
            }
        } else if let Some(n) = length {
            self.body.resize(n, 0);
            self.reader.read_exact(&mut self.body)?;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            return Err(bad(format!(
                "status {status} without Content-Length or chunked body"
            )));
        }
        Ok(status)
    }
}

/// One request on a fresh connection (setup calls, not timed).
fn simple_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut c = Conn::connect(addr)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let status = c.round_trip(req.as_bytes())?;
    Ok((status, String::from_utf8_lossy(&c.body).into_owned()))
}

// ---------------------------------------------------------------- load

struct ThreadResult {
    accepted: u64,
    batches: u64,
    latency_us: Histogram<u64>,
    finished: Instant,
}

struct LoadResult {
    accepted: u64,
    batches: u64,
    /// Unix ms of the first sample timestamp handed out.
    ts_first: u64,
    /// Unix ms just past the last sample timestamp handed out.
    ts_end: u64,
    /// The timestamp window wrapped: some timestamps were sent twice.
    wrapped: bool,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    server_cpu: Option<Duration>,
    client_cpu: Duration,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

fn check_response(target: Target, status: u16, body: &[u8], batch: usize) -> Result<(), String> {
    let text = || {
        String::from_utf8_lossy(body)
            .chars()
            .take(600)
            .collect::<String>()
    };
    match target {
        Target::Influx => {
            if status == 204 {
                Ok(())
            } else {
                Err(format!("influxdb answered {status}: {}", text()))
            }
        }
        Target::Scopemon => {
            if status != 200 {
                return Err(format!("scopemon answered {status}: {}", text()));
            }
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("bad JSON ({e}): {}", text()))?;
            let accepted = v.get("accepted").and_then(|a| a.as_u64());
            let rejected = v.get("rejected").and_then(|r| r.as_array()).map(Vec::len);
            if accepted == Some(batch as u64) && rejected == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "expected {batch} accepted and none rejected: {}",
                    text()
                ))
            }
        }
    }
}

/// Runs the timed load against `addr`; `server_pid` is used for CPU time.
fn run_load(target: Target, addr: SocketAddr, settings: &Settings, server_pid: u32) -> LoadResult {
    let t_build = Instant::now();
    // Pre-built requests, one pool per thread.
    let pools: Vec<Vec<Request>> = (0..settings.threads)
        .map(|t| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) << 32));
            (0..settings.pool)
                .map(|_| Request::build(target, addr, &gen_batch(&mut rng, settings.batch)))
                .collect()
        })
        .collect();
    let req_bytes = pools[0][0].bytes.len();
    println!(
        "  {} threads x {} pre-built requests of {} samples ({} KiB each), built in {:.2?}",
        settings.threads,
        settings.pool,
        settings.batch,
        req_bytes / 1024,
        t_build.elapsed()
    );

    // Every batch takes the next `batch` timestamps of one shared counter, so
    // no two samples carry the same timestamp (unless the window wraps).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as u64;
    let t0 = now_ms - TS_WINDOW_MS;
    let seq = Arc::new(AtomicU64::new(0));
    let wrapped = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(settings.threads + 1));
    let duration = Duration::from_secs_f64(settings.secs);
    let batch = settings.batch;

    let mut conns: Vec<Conn> = (0..settings.threads)
        .map(|_| Conn::connect(addr).expect("connect to the server"))
        .collect();
    let handles: Vec<_> = pools
        .into_iter()
        .map(|mut pool| {
            let conn = conns.pop().expect("one connection per thread");
            let (seq, wrapped, barrier) = (seq.clone(), wrapped.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<ThreadResult, String> {
                let mut conn = conn;
                let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("hist");
                let mut accepted = 0u64;
                let mut batches = 0u64;
                barrier.wait();
                let start = Instant::now();
                let deadline = start + duration;
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let k = i % pool.len();
                    i += 1;
                    let first = seq.fetch_add(batch as u64, Ordering::Relaxed);
                    let mut off = first % TS_WINDOW_MS;
                    if off + batch as u64 > TS_WINDOW_MS {
                        off = 0;
                    }
                    if first + batch as u64 > TS_WINDOW_MS {
                        wrapped.store(1, Ordering::Relaxed);
                    }
                    let req = &mut pool[k];
                    req.set_timestamps(t0 + off, 1);
                    let sent = Instant::now();
                    let status = conn
                        .round_trip(&req.bytes)
                        .map_err(|e| format!("request failed: {e}"))?;
                    let took = sent.elapsed();
                    check_response(target, status, &conn.body, batch)?;
                    hist.saturating_record(took.as_micros().max(1) as u64);
                    accepted += batch as u64;
                    batches += 1;
                }
                Ok(ThreadResult {
                    accepted,
                    batches,
                    latency_us: hist,
                    finished: Instant::now(),
                })
            })
        })
        .collect();

    let cpu_before = process_cpu(server_pid);
    let self_before = self_cpu();
    barrier.wait();
    let start = Instant::now();
    let mut accepted = 0;
    let mut batches = 0;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("hist");
    let mut last = start;
    let mut errors = Vec::new();
    for h in handles {
        match h.join().expect("load thread panicked") {
            Ok(r) => {
                accepted += r.accepted;
                batches += r.batches;
                latency_us.add(&r.latency_us).expect("merge histograms");
                last = last.max(r.finished);
            }
            Err(e) => errors.push(e),
        }
    }
    let elapsed = last - start;
    let cpu_after = process_cpu(server_pid);
    let client_cpu = self_cpu().saturating_sub(self_before);
    if !errors.is_empty() {
        panic!("{} load failed: {}", target.name(), errors.join("; "));
    }
    let wrapped = wrapped.load(Ordering::Relaxed) != 0;
    if wrapped {
        println!(
            "  note: more than {} samples were sent; timestamps wrapped and repeat",
            TS_WINDOW_MS
        );
    }
    LoadResult {
        accepted,
        batches,
        ts_first: t0,
        ts_end: t0 + seq.load(Ordering::Relaxed).min(TS_WINDOW_MS),
        wrapped,
        elapsed,
        latency_us,
        server_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
        client_cpu,
    }
}

// ---------------------------------------------------------------- processes

/// User + system CPU time of a process, from /proc.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// CPU time of this (load generator) process.
fn self_cpu() -> Duration {
    process_cpu(std::process::id()).unwrap_or_default()
}

/// A child killed (SIGKILL) if still running when dropped.
struct Server {
    child: Option<Child>,
    name: &'static str,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits; returns how long the exit took.
    fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let status = child.wait().expect("wait for the server");
        (start.elapsed(), status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            eprintln!("killing {} (pid {})", self.name, c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Records `perf record -g` of a pid until stopped.
struct Perf(Option<Child>);

impl Perf {
    fn start(call_graph: Option<&str>, pid: u32, target: Target) -> Perf {
        let Some(call_graph) = call_graph else {
            return Perf(None);
        };
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("ingest_load.{}.perf.data", target.name()));
        match Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", call_graph, "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => {
                println!("  perf record -> {}", out.display());
                std::thread::sleep(Duration::from_millis(300));
                Perf(Some(c))
            }
            Err(e) => {
                println!("  LOAD_PERF is set but perf could not start: {e}");
                Perf(None)
            }
        }
    }

    fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: SIGINT to our own child; perf writes its file and exits.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------- targets

struct Outcome {
    load: LoadResult,
    shutdown: Duration,
    disk: u64,
    /// Samples the target counts afterwards (asserted equal to accepted).
    stored: u64,
}

fn print_load(target: Target, r: &LoadResult) {
    let h = &r.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "  {}: {} samples in {} batches over {:.2?} = {:.0} samples/s",
        target.name(),
        r.accepted,
        r.batches,
        r.elapsed,
        r.rate()
    );
    println!(
        "  batch latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
    let secs = r.elapsed.as_secs_f64();
    match r.server_cpu {
        Some(c) => println!(
            "  CPU: server {:.1} s ({:.2} cores, {:.0} samples per server CPU-second), load generator {:.1} s ({:.2} cores)",
            c.as_secs_f64(),
            c.as_secs_f64() / secs,
            r.accepted as f64 / c.as_secs_f64().max(1e-9),
            r.client_cpu.as_secs_f64(),
            r.client_cpu.as_secs_f64() / secs
        ),
        None => println!("  CPU: server time unavailable"),
    }
}

fn spawn_stdout_line(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.trim_end().to_owned());
            line.clear();
        }
    });
    rx
}

/// Starts `scopemon serve` on `data` (built-in defaults, port 0), logging
/// to `dir/<log>`; returns it with the address it printed.
fn start_scopemon(dir: &Path, data: &Path, log: &str) -> (Server, SocketAddr) {
    let log_path = dir.join(log);
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_scopemon"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        // Built-in defaults: no config/scopemon.toml in this directory.
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn scopemon");
    let mut server = Server {
        child: Some(child),
        name: "scopemon",
    };
    let lines = spawn_stdout_line(server.child.as_mut().expect("child"));
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("scopemon printed no listening line within 60 s; log:\n{log}")
        });
    let url = line
        .strip_prefix("scopemon listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = url.trim_end_matches('/').parse().expect("listen address");
    println!(
        "  pid {} listening on {addr} after {:.2?}",
        server.pid(),
        started.elapsed()
    );
    (server, addr)
}

/// Samples scopemon holds for the generated metric over the whole span
/// the load used (all series merged: no tag given).
fn scopemon_stored(addr: SocketAddr, load: &LoadResult) -> u64 {
    // Unix seconds, widened by a minute on each side.
    let from = load.ts_first / 1000 - 60;
    let to = load.ts_end.div_ceil(1000) + 60;
    let path = format!(
        "/v1/query?namespace=bench&metric=api.latency&kind=latency&window=range&from={from}&to={to}"
    );
    let (status, body) = simple_request(addr, "GET", &path)
        .unwrap_or_else(|e| panic!("scopemon stored-count query failed: {e}"));
    assert_eq!(
        status, 200,
        "scopemon stored-count query GET {path} answered {status}: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("scopemon stored-count answer is not JSON ({e}): {body}"));
    v.pointer("/points/0/count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("scopemon stored-count answer has no points[0].count: {body}"))
}

fn run_scopemon(settings: &Settings) -> Outcome {
    println!("== scopemon ==");
    let dir = tempfile::Builder::new()
        .prefix("ingest-load-scopemon")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let (mut server, addr) = start_scopemon(dir.path(), &data, "scopemon.log");

    let perf = Perf::start(settings.perf, server.pid(), Target::Scopemon);
    let load = run_load(Target::Scopemon, addr, settings, server.pid());
    perf.stop();
    print_load(Target::Scopemon, &load);

    let (shutdown, status) = server.terminate();
    assert!(status.success(), "scopemon exited with {status}");
    let disk = dir_size(&data);
    println!(
        "  SIGTERM -> exit (final flush) took {:.2?}; data dir {:.1} MiB",
        shutdown,
        mib(disk)
    );

    // Read back from a fresh process on the same data dir: what it counts
    // was persisted, not merely held in memory.
    let (mut reopened, addr) = start_scopemon(dir.path(), &data, "scopemon.restart.log");
    let stored = scopemon_stored(addr, &load);
    let (_, status) = reopened.terminate();
    assert!(status.success(), "restarted scopemon exited with {status}");
    println!(
        "  stored count after restart: {stored} (acknowledged {})",
        load.accepted
    );
    assert_eq!(
        stored, load.accepted,
        "scopemon lost or invented samples: it acknowledged {} but counts {stored} after SIGTERM and restart",
        load.accepted
    );
    Outcome {
        load,
        shutdown,
        disk,
        stored,
    }
}

fn find_influxd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFLUXD") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("influxd"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/influxd");
        p.is_file().then_some(p)
    })
}

/// `SELECT count(value)` over everything in the bench database.
fn influx_stored(addr: SocketAddr) -> u64 {
    let path = "/query?db=bench&q=SELECT%20count(value)%20FROM%20api_latency";
    let (status, body) = simple_request(addr, "GET", path)
        .unwrap_or_else(|e| panic!("influxdb stored-count query failed: {e}"));
    assert_eq!(
        status, 200,
        "influxdb stored-count query answered {status}: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("influxdb stored-count answer is not JSON ({e}): {body}"));
    let result = v.pointer("/results/0");
    assert!(
        result.is_some_and(|r| r.get("error").is_none()) && v.get("error").is_none(),
        "influxdb stored-count query failed: {body}"
    );
    match v.pointer("/results/0/series/0/values/0/1") {
        Some(n) => n
            .as_u64()
            .unwrap_or_else(|| panic!("influxdb count is not a number: {body}")),
        // No series at all: nothing was stored.
        None => 0,
    }
}

fn run_influx(settings: &Settings) -> Option<Outcome> {
    println!("== influxdb ==");
    let Some(bin) = find_influxd() else {
        println!("  influxd not found (PATH, /usr/bin/influxd, $INFLUXD): skipping InfluxDB");
        return None;
    };
    let version = Command::new(&bin)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix("ingest-load-influxdb")
        .tempdir()
        .expect("tempdir");
    let (rpc_port, http_port) = (free_port(), free_port());
    let d = dir.path().display();
    // Defaults except: loopback ports, temp dirs, no phoning home, no
    // per-request access log, no _internal monitoring writes.
    let config = format!(
        r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"#
    );
    let config_path = dir.path().join("influxdb.conf");
    std::fs::write(&config_path, config).expect("write influxdb.conf");
    let log_path = dir.path().join("influxd.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("run")
        .arg("-config")
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn influxd");
    let mut server = Server {
        child: Some(child),
        name: "influxd",
    };
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    loop {
        if let Ok((204, _)) = simple_request(addr, "GET", "/ping") {
            break;
        }
        if let Ok(Some(st)) = server.child.as_mut().expect("child").try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("influxd exited with {st} before answering /ping; log:\n{log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "influxd did not answer /ping within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  {} ({version}) pid {} listening on {addr} after {:.2?}",
        bin.display(),
        server.pid(),
        started.elapsed()
    );
    let (status, body) = simple_request(addr, "POST", "/query?q=CREATE%20DATABASE%20bench")
        .expect("CREATE DATABASE");
    assert_eq!(status, 200, "CREATE DATABASE bench failed: {body}");
    assert!(
        !body.contains("\"error\""),
        "CREATE DATABASE bench failed: {body}"
    );

    let perf = Perf::start(settings.perf, server.pid(), Target::Influx);
    let load = run_load(Target::Influx, addr, settings, server.pid());
    perf.stop();
    print_load(Target::Influx, &load);

    let stored = influx_stored(addr);
    println!("  stored count: {stored} (acknowledged {})", load.accepted);
    if load.wrapped {
        // Repeated (series, timestamp) pairs overwrite each other.
        println!("  note: timestamps wrapped, so only stored <= acknowledged can be checked");
        assert!(
            stored <= load.accepted,
            "influxdb counts {stored} samples but acknowledged only {}",
            load.accepted
        );
    } else {
        assert_eq!(
            stored, load.accepted,
            "influxdb lost or invented samples: it acknowledged {} but counts {stored}",
            load.accepted
        );
    }

    let (shutdown, status) = server.terminate();
    let disk = dir_size(dir.path());
    println!(
        "  SIGTERM -> exit took {:.2?} ({status}); data+wal {:.1} MiB",
        shutdown,
        mib(disk)
    );
    Some(Outcome {
        load,
        shutdown,
        disk,
        stored,
    })
}

// ---------------------------------------------------------------- main

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored too.
    let settings = Settings::from_env();
    let target = std::env::var("TARGET").unwrap_or_else(|_| "both".into());
    let (do_scopemon, do_influx) = match target.as_str() {
        "scopemon" => (true, false),
        "influxdb" | "influx" => (false, true),
        "both" | "" => (true, true),
        other => panic!("TARGET={other:?}: expected scopemon, influxdb or both"),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "ingest_load: {} s per target, {} client threads, {} samples/batch, {} series; {} cores, load average {}",
        settings.secs,
        settings.threads,
        settings.batch,
        SERIES,
        cores,
        loadavg()
    );

    let scopemon = do_scopemon.then(|| run_scopemon(&settings));
    let influx = if do_influx {
        run_influx(&settings)
    } else {
        None
    };

    println!();
    println!("== summary (load average now {}) ==", loadavg());
    println!(
        "{:<10} {:>12} {:>8} {:>8} {:>12} {:>14} {:>8} {:>9}",
        "target",
        "samples/s",
        "p50 ms",
        "p99 ms",
        "server cores",
        "samples/cpu-s",
        "stop",
        "disk MiB"
    );
    let row = |name: &str, o: &Outcome| {
        let r = &o.load;
        let cpu = r.server_cpu.map_or(0.0, |c| c.as_secs_f64());
        println!(
            "{:<10} {:>12.0} {:>8.2} {:>8.2} {:>12.2} {:>14.0} {:>7.2}s {:>9.1}",
            name,
            r.rate(),
            r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            cpu / r.elapsed.as_secs_f64(),
            r.accepted as f64 / cpu.max(1e-9),
            o.shutdown.as_secs_f64(),
            mib(o.disk)
        );
    };
    if let Some(o) = &scopemon {
        row("scopemon", o);
    }
    if let Some(o) = &influx {
        row("influxdb", o);
    }
    let stored = |name: &str, o: &Outcome, how: &str| {
        println!(
            "stored {name}: {} of {} acknowledged samples counted {how}",
            o.stored, o.load.accepted
        );
    };
    if let Some(o) = &scopemon {
        stored(
            "scopemon",
            o,
            "after SIGTERM and a restart on the same data dir",
        );
    }
    if let Some(o) = &influx {
        stored("influxdb", o, "by SELECT count(value) after the load");
    }
    if let (Some(s), Some(i)) = (&scopemon, &influx) {
        let cpu_eff = |o: &Outcome| {
            o.load.accepted as f64 / o.load.server_cpu.map_or(f64::NAN, |c| c.as_secs_f64())
        };
        println!(
            "ratio scopemon/influxdb: {:.2}x samples/s, {:.2}x samples per server CPU-second",
            s.load.rate() / i.load.rate(),
            cpu_eff(s) / cpu_eff(i)
        );
    } else if do_influx && influx.is_none() {
        println!("ratio scopemon/influxdb: n/a (InfluxDB skipped)");
    }
}
