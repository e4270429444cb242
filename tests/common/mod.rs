//! Setup shared by the integration tests: engines on a temp dir driven by a
//! manual clock, and the fixed times tests start from.
//!
//! Each test binary includes this module (`mod common;`) and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use scopemon::{Config, DAY_MS, ManualClock, Monitor};

/// A UTC midnight in 2027, far from any real clock.
pub const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

/// An engine on `config` whose time is `clock` and whose background tasks
/// the test drives itself (`Monitor::run_due_tasks`, or `flush`/`rollup`).
pub fn open_with(config: Config, clock: &ManualClock) -> Monitor {
    Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor")
}

/// [`open_with`] the default configuration storing in `dir`.
pub fn open(dir: &Path, clock: &ManualClock) -> Monitor {
    open_with(Config::with_data_dir(dir), clock)
}

/// One request to an in-process router (no network): status, content type
/// and body text.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let req = req
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, ctype, String::from_utf8_lossy(&bytes).into_owned())
}

/// An engine whose memory readings come from `memory` (the test sets them)
/// and whose time is `clock`; background tasks driven by the test.
pub fn open_with_memory(
    config: Config,
    clock: &ManualClock,
    memory: &scopemon::ManualMemory,
) -> Monitor {
    Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .memory_source(Box::new(memory.clone()))
        .open()
        .expect("open monitor")
}

/// A reading of a 1000-byte system with `process` bytes resident and no
/// cgroup limit: the pressure ratio is `process / 1000`.
pub fn reading(process: u64) -> scopemon::MemoryReading {
    scopemon::MemoryReading {
        total: 1000,
        available: 500,
        process,
        cgroup: None,
    }
}

/// The library's router on a loopback port, over a monitor whose tasks the
/// test drives; no health checks are registered, so `/health/quick`
/// answers from the (empty, healthy) cache.
pub struct Http {
    base: String,
    agent: ureq::Agent,
    _rt: tokio::runtime::Runtime,
}

impl Http {
    /// Serves `m` on 127.0.0.1:0.
    pub fn start(m: Arc<Monitor>) -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let health = scopemon::HealthAggregator::new(m);
        rt.block_on(health.start()).expect("health");
        rt.spawn(async move { axum::serve(listener, scopemon::router(health)).await });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Http {
            base: format!("http://{addr}"),
            agent,
            _rt: rt,
        }
    }

    /// The server's base URL (`http://127.0.0.1:<port>`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs JSON: status, `Retry-After`, body.
    pub fn post_with_retry(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, Option<String>, serde_json::Value) {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_json(body)
            .expect("request");
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let v = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
        (r.status().as_u16(), retry, v)
    }

    /// POSTs JSON: status and body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, v) = self.post_with_retry(path, body);
        (status, v)
    }

    /// GETs: status and body (`null` when it is not JSON).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("request");
        let status = r.status().as_u16();
        let v = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
        (status, v)
    }
}

/// The `scopemon` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_scopemon");

/// Starts the real daemon, `scopemon serve --listen 127.0.0.1:0`, with the
/// config file `dir/scopemon.toml` and the data dir `dir/data`, its log
/// going to `log`; waits for its one line on stdout and returns the child
/// and its base URL (`http://127.0.0.1:<port>`).
pub fn spawn_serve(dir: &Path, log: std::process::Stdio) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("scopemon.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn scopemon");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let base = line
        .trim()
        .strip_prefix("scopemon listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// Samples of `metric` (every series merged) within ten minutes of [`T0`],
/// from the query API; 0 when there are none.
pub fn count(m: &Monitor, ns: &str, metric: &str, kind: scopemon::Kind) -> u64 {
    let spec = scopemon::QuerySpec {
        namespace: ns.into(),
        metric: metric.into(),
        kind,
        window: scopemon::Window::Range,
        from: T0 - 10 * 60_000,
        to: T0 + 10 * 60_000,
        tags: scopemon::Tags::empty(),
    };
    m.query(&spec)
        .ok()
        .and_then(|r| r.points.first().map(|p| p.count))
        .unwrap_or(0)
}

/// A `scopemon serve` child ([`spawn_serve`]) with JSON helpers; killed
/// when dropped.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    agent: ureq::Agent,
}

impl Daemon {
    /// [`spawn_serve`] on `dir` (config `dir/scopemon.toml`, data `dir/data`),
    /// its log discarded.
    pub fn start(dir: &Path) -> Daemon {
        let (child, base) = spawn_serve(dir, std::process::Stdio::null());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Daemon { child, base, agent }
    }

    /// A request with an optional JSON body: status and JSON answer
    /// (`null` when it is not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base);
        let mut r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            (_, Some(b)) => self.agent.post(&url).send_json(b),
            (_, None) => self.agent.post(&url).send_empty(),
        }
        .expect("request");
        let status = r.status().as_u16();
        let v = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
        (status, v)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift64: deterministic pseudo-random numbers without a crate (the
/// seed must not be 0).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
