//! Each target server: start it, run the load with the memory watch,
//! read back what it stored, stop it, measure its disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::alloc::{self, Alloc};
use crate::ingest::http::simple_request;
use crate::ingest::load::{LoadResult, run_load};
use crate::ingest::procs::{Perf, Server, dir_size, free_port, mib, spawn_stdout_line};
use crate::ingest::rss::{self, Sampler, Trace};
use crate::ingest::vm;
use crate::{Gen, Mode, Settings, Target};
// ---------------------------------------------------------------- targets

pub struct Outcome {
    pub target: Target,
    pub alloc: Option<Alloc>,
    pub load: LoadResult,
    pub shutdown: Duration,
    /// Data on disk at the end (scopemon: after `scopemon compact` when it
    /// ran; VictoriaMetrics: after its forced merge and SIGTERM).
    pub disk: u64,
    /// `scopemon compact`: how long it took and the size before it.
    pub compact: Option<(Duration, u64)>,
    /// Samples the target counts afterwards (asserted equal to accepted).
    pub stored: u64,
    pub rss: Trace,
    /// `scopemon_hot_bytes` when the memory watch ended.
    pub hot_bytes: Option<u64>,
}

impl Outcome {
    /// Resident memory `LOAD_AFTER_SECS` after the load (or at its end).
    pub fn rss_after(&self, s: &Settings) -> u64 {
        self.rss.after(s.after_secs).unwrap_or(self.rss.last())
    }

    /// Share of the peak given back by then.
    pub fn returned(&self, s: &Settings) -> f64 {
        1.0 - self.rss_after(s) as f64 / self.rss.peak().max(1) as f64
    }

    pub fn bytes_per_sample(&self) -> f64 {
        self.disk as f64 / self.stored.max(1) as f64
    }
}

fn print_load(target: Target, r: &LoadResult) {
    let h = &r.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "  {}: {} samples in {} batches ({} resent after Retry-After) over {:.2?} = {:.0} samples/s",
        target.name(),
        r.accepted,
        r.batches,
        r.retries,
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

/// Runs the load with the memory sampler on, then keeps sampling for
/// `after_secs`; `before_end` runs just before the sampler stops.
fn load_and_watch<T>(
    target: Target,
    addr: SocketAddr,
    s: &Settings,
    gens: &[Vec<Gen>],
    pid: u32,
    before_end: impl FnOnce() -> T,
) -> (LoadResult, Trace, T) {
    let sampler = Sampler::start(pid);
    std::thread::sleep(rss::PERIOD);
    let perf = Perf::start(s.perf, pid, target.name());
    let load = run_load(target, addr, s, gens, pid);
    perf.stop();
    let load_end = sampler.elapsed();
    print_load(target, &load);
    std::thread::sleep(Duration::from_secs_f64(s.after_secs));
    let extra = before_end();
    let trace = sampler.finish(load_end);
    println!(
        "  resident: peak {:.1} MiB during the load ({:.1} MiB overall), {:.1} MiB {:.0} s after it",
        mib(trace.peak_during_load()),
        mib(trace.peak()),
        mib(trace.after(s.after_secs).unwrap_or(trace.last())),
        s.after_secs
    );
    println!(
        "  resident MiB over time (0s = end of load): {}",
        trace.timeline((trace.samples.last().map_or(0.0, |x| x.0.as_secs_f64()) / 40.0).max(2.0))
    );
    (load, trace, extra)
}

/// The scopemon binary: `SCOPEMON_BIN`, else the one cargo built with
/// this bench.
fn scopemon_bin() -> PathBuf {
    std::env::var_os("SCOPEMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scopemon")))
}

/// Starts `scopemon serve` on `data` (built-in defaults, port 0), logging
/// to `dir/<log>`; returns it with the address it printed.
fn start_scopemon(
    dir: &Path,
    data: &Path,
    log: &str,
    env: &[(String, String)],
) -> (Server, SocketAddr) {
    let log_path = dir.join(log);
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let started = Instant::now();
    let child = Command::new(scopemon_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        // Built-in defaults: no config/scopemon.toml in this directory.
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)))
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

/// `scopemon_hot_bytes` from `/metrics`.
fn scopemon_hot_bytes(addr: SocketAddr) -> Option<u64> {
    scopemon_gauge(addr, "scopemon_hot_bytes")
}

/// A gauge's value from `/metrics`.
fn scopemon_gauge(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, body) = simple_request(addr, "GET", "/metrics").ok()?;
    let line = body
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

/// `scopemon compact` on the stopped store; returns how long it took.
fn scopemon_compact(dir: &Path, data: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(scopemon_bin())
        .arg("compact")
        .arg("--data-dir")
        .arg(data)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run scopemon compact");
    assert!(
        out.status.success(),
        "scopemon compact failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

pub fn run_scopemon(s: &Settings, gens: &[Vec<Gen>], alloc: Option<Alloc>) -> Outcome {
    let label = alloc.map_or(String::new(), |a| format!(" (allocator: {})", a.name()));
    println!("== scopemon{label} ==");
    let dir = tempfile::Builder::new()
        .prefix("ingest-load-scopemon")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let env = alloc.map_or(vec![], |a| a.env(dir.path()));
    let (mut server, addr) = start_scopemon(dir.path(), &data, "scopemon.log", &env);
    let (load, rss, hot_bytes) =
        load_and_watch(Target::Scopemon, addr, s, gens, server.pid(), || {
            scopemon_hot_bytes(addr)
        });
    if let Some(h) = hot_bytes {
        println!("  scopemon_hot_bytes then: {:.1} MiB", mib(h));
    }
    if let Some(c) = scopemon_gauge(addr, "scopemon_store_cache_used_bytes") {
        println!("  scopemon_store_cache_used_bytes then: {:.1} MiB", mib(c));
    }
    let (shutdown, status) = server.terminate();
    assert!(status.success(), "scopemon exited with {status}");
    if let Some((max_ms, n)) = alloc::trim_pauses(&dir.path().join("scopemon.log")) {
        println!("  malloc_trim: {n} calls over 1 ms, the longest {max_ms:.1} ms");
    }
    let mut disk = dir_size(&data);
    println!(
        "  SIGTERM -> exit (final flush) took {:.2?}; data dir {:.1} MiB",
        shutdown,
        mib(disk)
    );
    let compact = (s.mode == Mode::Backfill).then(|| {
        let before = disk;
        let took = scopemon_compact(dir.path(), &data);
        disk = dir_size(&data);
        println!(
            "  scopemon compact took {took:.2?}: {:.1} -> {:.1} MiB ({:.2} bytes per sample)",
            mib(before),
            mib(disk),
            disk as f64 / load.accepted.max(1) as f64
        );
        (took, before)
    });

    // Read back from a fresh process on the same data dir: what it counts
    // was persisted, not merely held in memory.
    let (mut reopened, addr) = start_scopemon(dir.path(), &data, "scopemon.restart.log", &env);
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
        target: Target::Scopemon,
        alloc,
        load,
        shutdown,
        disk,
        compact,
        stored,
        rss,
        hot_bytes,
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

/// Asserts `stored` equals what was acknowledged (at most, when the
/// replay mode's timestamps wrapped and points overwrote each other).
fn check_stored(target: Target, load: &LoadResult, stored: u64) {
    println!("  stored count: {stored} (acknowledged {})", load.accepted);
    if load.wrapped {
        println!("  note: timestamps wrapped, so only stored <= acknowledged can be checked");
        assert!(
            stored <= load.accepted,
            "{} counts {stored} samples but acknowledged only {}",
            target.name(),
            load.accepted
        );
    } else {
        assert_eq!(
            stored,
            load.accepted,
            "{} lost or invented samples: it acknowledged {} but counts {stored}",
            target.name(),
            load.accepted
        );
    }
}
pub fn run_influx(s: &Settings, gens: &[Vec<Gen>]) -> Option<Outcome> {
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

    let (load, rss, stored) = load_and_watch(Target::Influx, addr, s, gens, server.pid(), || {
        influx_stored(addr)
    });
    check_stored(Target::Influx, &load, stored);
    let (shutdown, status) = server.terminate();
    let disk = dir_size(dir.path());
    println!(
        "  SIGTERM -> exit took {:.2?} ({status}); data+wal {:.1} MiB",
        shutdown,
        mib(disk)
    );
    Some(Outcome {
        target: Target::Influx,
        alloc: None,
        load,
        shutdown,
        disk,
        compact: None,
        stored,
        rss,
        hot_bytes: None,
    })
}

pub fn run_vm(s: &Settings, gens: &[Vec<Gen>]) -> Option<Outcome> {
    println!("== victoria-metrics ==");
    let Some(bin) = vm::find_vm() else {
        println!(
            "  /usr/bin/victoria-metrics not found ($VICTORIA_METRICS; apt-get install -y victoria-metrics): skipping"
        );
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("ingest-load-vm")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let (mut server, addr) = vm::start(&bin, dir.path());
    let (load, rss, ()) = load_and_watch(Target::Vm, addr, s, gens, server.pid(), || ());
    vm::settle(addr, &data, load.ts_first, load.ts_end);
    let stored = vm::stored(addr, load.ts_first, load.ts_end);
    check_stored(Target::Vm, &load, stored);
    let (shutdown, status) = server.terminate();
    let disk = dir_size(&data);
    println!(
        "  SIGTERM -> exit took {:.2?} ({status}); data dir {:.1} MiB ({:.2} bytes per sample)",
        shutdown,
        mib(disk),
        disk as f64 / stored.max(1) as f64
    );
    Some(Outcome {
        target: Target::Vm,
        alloc: None,
        load,
        shutdown,
        disk,
        compact: None,
        stored,
        rss,
        hot_bytes: None,
    })
}
