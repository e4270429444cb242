//! VictoriaMetrics (Debian's `victoria-metrics`, single node) as a third
//! target: it takes the same samples as line protocol on `/write`, and
//! what it keeps on disk per sample is compared with scopemon's file after
//! `scopemon compact`.
//!
//! After the load the bench calls `/internal/force_flush` (in-memory parts
//! to disk) and `/internal/force_merge?partition_prefix=YYYY_MM` for every
//! month the samples fall in (VictoriaMetrics' documented forced merge, the
//! counterpart of `scopemon compact`), waits until the data directory's
//! size has not changed for 5 s, counts the samples with
//! `sum(count_over_time(...))`, stops it with SIGTERM and measures the data
//! directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::http::simple_request;
use crate::ingest::procs::{Server, dir_size, free_port, mib};

pub fn find_vm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VICTORIA_METRICS") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from("/usr/bin/victoria-metrics");
    p.is_file().then_some(p)
}

/// Starts VictoriaMetrics on a free loopback port with its data in
/// `dir/data`; returns it once `/health` answers.
pub fn start(bin: &Path, dir: &Path) -> (Server, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = std::fs::File::create(dir.join("victoria-metrics.log")).expect("log file");
    let started = Instant::now();
    let child = Command::new(bin)
        .arg(format!("-storageDataPath={}", dir.join("data").display()))
        .arg(format!("-httpListenAddr={addr}"))
        .arg("-retentionPeriod=100y")
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .arg("-loggerLevel=WARN")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn victoria-metrics");
    let mut server = Server {
        child: Some(child),
        name: "victoria-metrics",
    };
    loop {
        if let Ok((200, _)) = simple_request(addr, "GET", "/health") {
            break;
        }
        if let Ok(Some(st)) = server.child.as_mut().expect("child").try_wait() {
            panic!("victoria-metrics exited with {st} before answering /health");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "victoria-metrics did not answer /health within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  {} pid {} listening on {addr} after {:.2?}",
        bin.display(),
        server.pid(),
        started.elapsed()
    );
    (server, addr)
}

/// Flushes, force-merges the months `[from_ms, to_ms]` touches, and waits
/// for the data directory to stop changing (at most 180 s).
pub fn settle(addr: SocketAddr, data: &Path, from_ms: u64, to_ms: u64) {
    let t = Instant::now();
    let (st, body) = simple_request(addr, "GET", "/internal/force_flush").expect("force_flush");
    assert!(st < 300, "force_flush answered {st}: {body}");
    let mut months: Vec<String> = [from_ms, to_ms]
        .iter()
        .filter_map(|&ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|d| d.format("%Y_%m").to_string())
        .collect();
    months.dedup();
    for m in &months {
        let path = format!("/internal/force_merge?partition_prefix={m}");
        let (st, body) = simple_request(addr, "GET", &path).expect("force_merge");
        assert!(st < 300, "force_merge answered {st}: {body}");
    }
    let (mut last, mut stable_since) = (dir_size(data), Instant::now());
    while stable_since.elapsed() < Duration::from_secs(5) && t.elapsed() < Duration::from_secs(180)
    {
        std::thread::sleep(Duration::from_millis(500));
        let now = dir_size(data);
        if now != last {
            (last, stable_since) = (now, Instant::now());
        }
    }
    println!(
        "  force_flush + force_merge {months:?}: data dir settled at {:.1} MiB after {:.1?}",
        mib(last),
        t.elapsed()
    );
}

/// Samples VictoriaMetrics counts for the bench metric up to `to_ms`.
pub fn stored(addr: SocketAddr, from_ms: u64, to_ms: u64) -> u64 {
    let window = (to_ms - from_ms) / 1000 + 3600;
    let time = to_ms / 1000 + 1;
    let path = format!(
        "/api/v1/query?query=sum(count_over_time(api_latency_value%5B{window}s%5D))&time={time}&nocache=1"
    );
    let (status, body) = simple_request(addr, "GET", &path).expect("victoria-metrics count");
    assert_eq!(
        status, 200,
        "victoria-metrics count answered {status}: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("victoria-metrics count is not JSON ({e}): {body}"));
    match v.pointer("/data/result/0/value/1") {
        Some(n) => n
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("victoria-metrics count is not a number: {body}"))
            as u64,
        None => 0,
    }
}
