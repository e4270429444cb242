//! Selection at cardinality over HTTP: a tag-filtered day p99 of one series
//! among `SELECT_SERIES` series of one metric, asked of `scopemon serve`
//! and of InfluxDB 1.x (`influxd`) holding the same samples, in the same
//! run, by the same client.
//!
//! Data: series `api.latency{host=h0..h<N-1>}` (InfluxDB: measurement
//! `api_latency`, tag `host`); every hour of the last 24 h, each series has
//! one minute (minute `i % 60` of the hour for series `i`) with
//! `PER_MINUTE` lognormal latencies (median 800 µs) 5 s apart. scopemon's
//! store is written through the library (a `ManualClock` stepping hour by
//! hour: record, flush, rollup — what the background tasks do), then served
//! by `scopemon serve`; InfluxDB takes the same samples as line protocol.
//!
//! Queries: the same sequence for both — `QUERY_WARMUP` untimed, then
//! `QUERY_COUNT` timed, each for a random host over the last 24 h
//! (minute-aligned, so both count the same samples; every answer's count
//! is checked against the samples generated):
//! - scopemon `GET /v1/query?namespace=bench&metric=api.latency&kind=latency&window=range&from=..&to=..&tag.host=hK`
//! - InfluxDB `SELECT count(value), percentile(value, 99) FROM api_latency WHERE host='hK' AND time >= ..s AND time < ..s`
//!
//! One keep-alive connection (ureq), one query at a time; reported: client
//! wall time per query, p50 / p99 / mean.
//!
//! Run: `cargo bench --bench select_http`
//!
//! Environment: `SELECT_SERIES` (default 10000), `QUERY_COUNT` (default
//! 1000), `QUERY_WARMUP` (default 100), `INFLUXD` (path of influxd;
//! default PATH, then /usr/bin), `SCOPEMON_BIN_BEFORE` (another scopemon
//! binary, e.g. an earlier commit's, served on the same data dir and
//! measured in the same run).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use scopemon::{
    Config, DAY_MS, HOUR_MS, Kind, MINUTE_MS, ManualClock, Monitor, Outcome, Resolution, Sample,
};

mod common;
use common::Rng;

const PER_MINUTE: i64 = 10;
const SAMPLE_GAP_MS: i64 = 5_000;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        _ => default,
    }
}

/// The generated data: for series `i` and hour `h` (start `hours[h]`),
/// `PER_MINUTE` values at `minute_of(i, h) + k × 5 s`.
struct Data {
    series: usize,
    hosts: Vec<String>,
    /// Starts of the hours with data, oldest first.
    hours: Vec<i64>,
    /// values[(h × series + i) × PER_MINUTE + k], µs.
    values: Vec<f64>,
}

impl Data {
    fn new(series: usize, now: i64) -> Data {
        let last = Resolution::Hour.align(now) - HOUR_MS;
        let hours: Vec<i64> = (0..24).rev().map(|h| last - h * HOUR_MS).collect();
        let mut rng = Rng(0x51ec_7a11_5eed_0001);
        let values = (0..hours.len() * series * PER_MINUTE as usize)
            .map(|_| rng.lognormal(800.0, 1.0).clamp(1.0, 60e6).round())
            .collect();
        Data {
            series,
            hosts: (0..series).map(|i| format!("h{i}")).collect(),
            hours,
            values,
        }
    }

    fn minute(&self, i: usize, h: usize) -> i64 {
        self.hours[h] + (i as i64 % 60) * MINUTE_MS
    }

    fn value(&self, i: usize, h: usize, k: usize) -> f64 {
        self.values[(h * self.series + i) * PER_MINUTE as usize + k]
    }

    /// Samples of series `i` with timestamp in [from, to).
    fn count(&self, i: usize, from: i64, to: i64) -> u64 {
        (0..self.hours.len())
            .flat_map(|h| (0..PER_MINUTE).map(move |k| (h, k)))
            .filter(|&(h, k)| {
                let t = self.minute(i, h) + k * SAMPLE_GAP_MS;
                t >= from && t < to
            })
            .count() as u64
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes the data into a scopemon store hour by hour (record, flush,
/// rollup), as the background tasks would have.
fn build_scopemon(data: &Data, dir: &Path) {
    let started = Instant::now();
    let mut config = Config::with_data_dir(dir);
    config.storage.series_limit_per_namespace = data.series + 10;
    let clock = ManualClock::new(data.hours[0]);
    let m = Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor");
    let tags: Vec<[(&str, &str); 1]> = data.hosts.iter().map(|h| [("host", h.as_str())]).collect();
    for h in 0..data.hours.len() {
        clock.set(data.hours[h] + HOUR_MS + 1_000);
        let samples = (0..data.series).flat_map(|i| {
            let tags = &tags[i];
            (0..PER_MINUTE as usize).map(move |k| Sample {
                namespace: "bench",
                metric: "api.latency",
                kind: Kind::Latency,
                value: data.value(i, h, k),
                tags,
                outcome: Outcome::Ok,
                timestamp_ms: Some(data.minute(i, h) + k as i64 * SAMPLE_GAP_MS),
            })
        });
        let (_, rejected) = m.record_batch(samples);
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        m.flush().expect("flush");
        m.rollup().expect("rollup");
    }
    m.close().expect("close");
    println!(
        "  scopemon store written in {:.1?} ({:.1} MiB)",
        started.elapsed(),
        dir_size(dir) as f64 / 1_048_576.0
    );
}

/// A child killed if still running when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Starts `bin serve` on `data`; returns it with the address it printed.
fn start_scopemon(bin: &Path, dir: &Path, data: &Path) -> (Server, SocketAddr) {
    let log = std::fs::File::create(dir.join("scopemon.log")).expect("log file");
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn scopemon");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.trim_end().to_owned());
            line.clear();
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("scopemon printed no listening line within 120 s");
    let url = line
        .strip_prefix("scopemon listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr = url.trim_end_matches('/').parse().expect("listen address");
    (server, addr)
}

fn start_influx(bin: &Path, dir: &Path) -> (Server, SocketAddr) {
    let (rpc, http) = (free_port(), free_port());
    let d = dir.display();
    let config = format!(
        "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
         [meta]\n  dir = \"{d}/meta\"\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [monitor]\n  store-enabled = false\n\
         [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{http}\"\n  auth-enabled = false\n  log-enabled = false\n\
         [continuous_queries]\n  enabled = false\n\
         [logging]\n  level = \"warn\"\n"
    );
    let path = dir.join("influxdb.conf");
    std::fs::write(&path, config).expect("write influxdb.conf");
    let log = std::fs::File::create(dir.join("influxd.log")).expect("log file");
    let child = Command::new(bin)
        .arg("run")
        .arg("-config")
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn influxd");
    let server = Server(child);
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().expect("addr");
    let started = Instant::now();
    while ureq::get(format!("http://{addr}/ping")).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "influxd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

fn influx_write(agent: &ureq::Agent, addr: SocketAddr, data: &Data) {
    let started = Instant::now();
    let url = format!("http://{addr}/write?db=bench&precision=ms");
    let mut body = String::new();
    let mut lines = 0;
    for h in 0..data.hours.len() {
        for i in 0..data.series {
            for k in 0..PER_MINUTE as usize {
                let t = data.minute(i, h) + k as i64 * SAMPLE_GAP_MS;
                let v = data.value(i, h, k);
                body.push_str(&format!(
                    "api_latency,host={} value={v} {t}\n",
                    data.hosts[i]
                ));
                lines += 1;
                if lines == 5_000 {
                    agent.post(&url).send(&body).expect("influx write");
                    body.clear();
                    lines = 0;
                }
            }
        }
    }
    if lines > 0 {
        agent.post(&url).send(&body).expect("influx write");
    }
    println!("  InfluxDB written in {:.1?}", started.elapsed());
}

#[derive(Clone, Copy)]
enum Target {
    Scopemon,
    Influx,
}

/// One query; returns the count it answered.
fn ask(
    agent: &ureq::Agent,
    target: Target,
    addr: SocketAddr,
    host: &str,
    range: (i64, i64),
) -> u64 {
    let (from, to) = (range.0 / 1000, range.1 / 1000);
    let url = match target {
        Target::Scopemon => format!(
            "http://{addr}/v1/query?namespace=bench&metric=api.latency&kind=latency&window=range&from={from}&to={to}&tag.host={host}"
        ),
        Target::Influx => format!(
            "http://{addr}/query?db=bench&q=SELECT%20count(value)%2C%20percentile(value%2C%2099)%20FROM%20api_latency%20WHERE%20host%3D%27{host}%27%20AND%20time%20%3E%3D%20{from}s%20AND%20time%20%3C%20{to}s"
        ),
    };
    let mut resp = agent.get(&url).call().expect("query");
    let body = resp.body_mut().read_to_string().expect("read body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    let count = match target {
        Target::Scopemon => v.pointer("/points/0/count"),
        Target::Influx => v.pointer("/results/0/series/0/values/0/1"),
    };
    count
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no count in {body}"))
}

/// Runs the query sequence; returns per-query wall times (µs).
fn measure(target: Target, addr: SocketAddr, data: &Data, range: (i64, i64)) -> Histogram<u64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .into();
    let warmup = env_num("QUERY_WARMUP", 100usize);
    let n = env_num("QUERY_COUNT", 1000usize);
    let mut rng = Rng(0x0ddb_a11c_afe5_0001);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for q in 0..warmup + n {
        let i = (rng.next_u64() % data.series as u64) as usize;
        let t = Instant::now();
        let count = ask(&agent, target, addr, &data.hosts[i], range);
        let us = t.elapsed().as_micros() as u64;
        assert_eq!(count, data.count(i, range.0, range.1), "host h{i}");
        if q >= warmup {
            hist.record(us.max(1)).expect("record");
        }
    }
    hist
}

fn report(name: &str, h: &Histogram<u64>) -> f64 {
    let p99 = h.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "{name:<18} p50 {:>7.3} ms   p99 {:>7.3} ms   mean {:>7.3} ms   ({} queries)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        p99,
        h.mean() / 1000.0,
        h.len()
    );
    h.value_at_quantile(0.5) as f64 / 1000.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn find_influxd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFLUXD") {
        return Some(p.into());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("influxd"))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/bin/influxd")).filter(|p| p.is_file()))
}

fn main() {
    let series = env_num("SELECT_SERIES", 10_000usize);
    println!("select_http: {series} series, load average {}", loadavg());
    let data = Data::new(series, now_ms());
    let dir = tempfile::Builder::new()
        .prefix("select-http")
        .tempdir()
        .expect("tempdir");
    let store = dir.path().join("scopemon-data");
    build_scopemon(&data, &store);
    let to = Resolution::Minute.align(now_ms()) + MINUTE_MS;
    let range = (to - DAY_MS, to);

    let mut bins = vec![(
        "scopemon".to_owned(),
        PathBuf::from(env!("CARGO_BIN_EXE_scopemon")),
    )];
    if let Some(before) = std::env::var_os("SCOPEMON_BIN_BEFORE") {
        bins.push(("scopemon (before)".to_owned(), before.into()));
    }
    let mut results = Vec::new();
    for (name, bin) in &bins {
        let (server, addr) = start_scopemon(bin, dir.path(), &store);
        let h = measure(Target::Scopemon, addr, &data, range);
        drop(server);
        results.push((name.clone(), h));
    }
    if let Some(bin) = find_influxd() {
        let idir = dir.path().join("influxdb");
        std::fs::create_dir_all(&idir).expect("influx dir");
        let (server, addr) = start_influx(&bin, &idir);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(true)
            .build()
            .into();
        agent
            .post(format!("http://{addr}/query?q=CREATE%20DATABASE%20bench"))
            .send_empty()
            .expect("CREATE DATABASE");
        influx_write(&agent, addr, &data);
        let h = measure(Target::Influx, addr, &data, range);
        drop(server);
        results.push(("influxdb".to_owned(), h));
    } else {
        println!("influxd not found: InfluxDB skipped");
    }

    println!();
    println!(
        "== tag-filtered day p99, one series of {series} (client wall time per query; load average now {}) ==",
        loadavg()
    );
    let p50s: Vec<(String, f64)> = results
        .iter()
        .map(|(name, h)| (name.clone(), report(name, h)))
        .collect();
    if let Some((_, influx)) = p50s.iter().find(|(n, _)| n == "influxdb") {
        for (name, p50) in p50s.iter().filter(|(n, _)| n != "influxdb") {
            println!("{name} / influxdb (p50): {:.2}x", p50 / influx);
        }
    }
}
