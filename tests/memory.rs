//! The memory manager: pressure levels and hysteresis driven by injected
//! readings, the admission gate (new series refused at high, ingest 503 at
//! critical, existing series and reads always served), the cleanup
//! strategies (no sample lost, failures and hangs reported without
//! blocking the rest), and the real binary at a budget its own resident
//! memory exceeds.

mod common;

use common::Http;

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{T0, open_with_memory, reading};
use scopemon::{
    CgroupMemory, CleanupError, CleanupTrigger, Config, Kind, ManualClock, ManualMemory,
    MemoryCleanup, Monitor, PressureLevel,
};

use PressureLevel::{Critical, High, Low, Medium};

use common::count;

/// Sets the process's resident bytes, moves the clock one check interval
/// and runs what is due (the `memory` task among them).
fn step(m: &Monitor, clock: &ManualClock, mem: &ManualMemory, process: u64) -> PressureLevel {
    mem.set_process(process);
    clock.advance(Duration::from_secs(5));
    m.run_due_tasks();
    m.pressure_level()
}

#[test]
fn levels_follow_the_readings_with_hysteresis_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(100));
    let m = open_with_memory(Config::with_data_dir(dir.path()), &clock, &mem);
    assert_eq!(m.pressure_level(), Low, "measured at open");
    assert_eq!(step(&m, &clock, &mem, 550), Medium);
    assert_eq!(step(&m, &clock, &mem, 710), High);
    let cleanup = m.memory().last_cleanup.expect("entering high cleans up");
    assert_eq!(
        (cleanup.level, cleanup.trigger),
        (High, CleanupTrigger::Pressure)
    );
    assert_eq!(cleanup.strategies.len(), 4, "the built-in strategies");
    assert_eq!(step(&m, &clock, &mem, 680), High, "inside the margin");
    assert_eq!(step(&m, &clock, &mem, 640), Medium, "past the margin");
    assert_eq!(step(&m, &clock, &mem, 960), Critical);
    assert_eq!(step(&m, &clock, &mem, 860), Critical, "inside the margin");
    assert_eq!(step(&m, &clock, &mem, 100), Low);
    let s = m.memory();
    assert_eq!(
        (s.total_memory, s.process_memory, s.system_memory, s.budget),
        (1000, 100, 500, 1000)
    );
    assert_eq!(s.threshold_percentage, 0.1);
    // changes by the level entered: low, medium, high, critical
    assert_eq!(m.memory_stats().level_changes, [1, 2, 1, 1]);
    // every check is a sample of scopemon's own resource_usage series
    for metric in ["memory.process", "memory.total", "memory.pressure"] {
        assert_eq!(count(&m, "scopemon", metric, Kind::ResourceUsage), 7);
    }
}

#[test]
fn the_base_is_the_budget_or_the_cgroup_limit_when_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(300));
    let mut c = Config::with_data_dir(dir.path());
    c.memory.budget = Some(500);
    let m = open_with_memory(c, &clock, &mem);
    let s = m.memory();
    assert_eq!((s.budget, s.pressure_level), (500, Medium), "{s:?}");
    let mut r = reading(300);
    r.cgroup = Some(CgroupMemory {
        limit: 400,
        current: 380,
    });
    mem.set(r);
    let s = m.check_memory().unwrap();
    assert_eq!((s.budget, s.pressure_level), (400, Critical), "{s:?}");
    assert_eq!(
        s.threshold_percentage, 0.95,
        "cgroup usage counts when limited"
    );
}

#[test]
fn high_refuses_new_series_only_and_critical_closes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(100));
    let m = open_with_memory(Config::with_data_dir(dir.path()), &clock, &mem);
    let d = Duration::from_micros(300);
    m.record_latency("prod", "api", d, &[("host", "a")])
        .unwrap();
    assert_eq!(m.check_operation_allowed().unwrap(), Low);

    mem.set_process(750);
    assert_eq!(m.check_memory().unwrap().pressure_level, High);
    assert_eq!(m.check_operation_allowed().unwrap(), High);
    m.record_latency("prod", "api", d, &[("host", "a")])
        .unwrap();
    let e = m
        .record_latency("prod", "api", d, &[("host", "b")])
        .unwrap_err();
    assert_eq!(e.code(), "memory_pressure_high");
    let e = m.latency_handle("prod", "other", &[]).unwrap_err();
    assert_eq!(e.code(), "memory_pressure_high");
    m.latency_handle("prod", "api", &[("host", "a")])
        .unwrap()
        .record(d);

    mem.set_process(990);
    m.check_memory().unwrap();
    let e = m.check_operation_allowed().unwrap_err();
    assert_eq!(e.code(), "memory_pressure_critical");
    // library recording into existing series goes on
    m.record_latency("prod", "api", d, &[("host", "a")])
        .unwrap();
    assert_eq!(count(&m, "prod", "api", Kind::Latency), 4);
}

#[test]
fn over_http_high_rejects_new_series_per_sample_and_critical_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(100));
    let m = Arc::new(open_with_memory(
        Config::with_data_dir(dir.path()),
        &clock,
        &mem,
    ));
    let http = Http::start(m.clone());
    let sample = |host: &str| json!({"namespace": "prod", "metric": "api", "value": 10, "tags": {"host": host}});
    let (status, r) = http.post("/v1/ingest", &json!({"samples": [sample("a")]}));
    assert_eq!((status, &r["accepted"]), (200, &json!(1)), "{r}");

    mem.set_process(750);
    m.check_memory().unwrap();
    let body = json!({"samples": [sample("a"), sample("new"), sample("a")]});
    let (status, r) = http.post("/v1/ingest", &body);
    assert_eq!((status, &r["accepted"]), (200, &json!(2)), "{r}");
    assert_eq!(r["rejected"][0]["index"], 1, "{r}");
    assert_eq!(r["rejected"][0]["error"], "memory_pressure_high", "{r}");

    mem.set_process(990);
    m.check_memory().unwrap();
    let (status, r) = http.post("/v1/ingest", &json!({"samples": [sample("a")]}));
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["error"], "memory_pressure_critical", "{r}");
    assert!(r["message"].as_str().is_some_and(|s| s.contains("nothing")));
    assert_eq!(
        count(&m, "prod", "api", Kind::Latency),
        3,
        "nothing of it stored"
    );

    let (status, s) = http.get("/v1/memory");
    assert_eq!(
        (status, &s["pressure_level"]),
        (200, &json!("critical")),
        "{s}"
    );
    for key in [
        "total_memory",
        "process_memory",
        "system_memory",
        "available_memory",
        "budget",
        "threshold_percentage",
        "hot_series",
        "hot_bytes",
        "last_cleanup",
    ] {
        assert!(s.get(key).is_some(), "{key} missing: {s}");
    }
    let (status, _) = http.get("/v1/query?namespace=prod&metric=api&window=minute&from=0");
    assert_eq!(status, 200, "queries are served");
    let (status, r) = http.post("/v1/memory/cleanup", &json!({"priority": "medium"}));
    assert_eq!((status, &r["level"]), (200, &json!("medium")), "{r}");
    assert_eq!(r["trigger"], "request");
    let (status, r) = http.post("/v1/memory/cleanup", &json!({"priority": "urgent"}));
    assert_eq!(
        (status, &r["error"]),
        (400, &json!("invalid_parameter")),
        "{r}"
    );
    let (status, r) = http.post("/v1/memory/cleanup", &json!({}));
    assert_eq!(
        (status, &r["error"]),
        (400, &json!("invalid_parameter")),
        "{r}"
    );
}

#[test]
fn an_emergency_cleanup_frees_idle_series_and_loses_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(100));
    let m = open_with_memory(Config::with_data_dir(dir.path()), &clock, &mem);
    let n = 3000;
    for i in 0..n {
        let host = format!("h{i}");
        let d = Duration::from_micros(100 + i as u64);
        m.record_latency("prod", "api", d, &[("host", &host)])
            .unwrap();
    }
    // Every one-sample bucket is counted (a sparse bucket, ~160 bytes).
    let before = m.stats().hot_bytes;
    assert!(before > 3000 * 100, "{before}");
    mem.set_process(950);
    let s = m.check_memory().unwrap();
    assert_eq!(s.pressure_level, Critical);
    let report = s.last_cleanup.expect("entering critical cleans up");
    assert_eq!(report.trigger, CleanupTrigger::Pressure);
    assert!(
        report.strategies.iter().all(|r| r.error.is_none()),
        "{report:?}"
    );
    assert!(s.hot_bytes < before / 100, "{} of {before}", s.hot_bytes);
    let evicted = report
        .strategies
        .iter()
        .find(|r| r.strategy == "evict-idle")
        .map_or(0, |r| r.bytes_freed);
    assert!(evicted > 0, "{report:?}");
    assert_eq!(count(&m, "prod", "api", Kind::Latency), n as u64);
    // an evicted series records again
    m.record_latency("prod", "api", Duration::from_micros(7), &[("host", "h0")])
        .unwrap();
    assert_eq!(count(&m, "prod", "api", Kind::Latency), n as u64 + 1);
    m.close().unwrap();
    drop(m);
    let m = open_with_memory(Config::with_data_dir(dir.path()), &clock, &mem);
    assert_eq!(count(&m, "prod", "api", Kind::Latency), n as u64 + 1);
}

/// A strategy that fails, hangs until released, panics, or frees 42 bytes.
enum Test {
    Fails,
    Hangs(std::sync::Mutex<mpsc::Receiver<()>>),
    Panics,
    Frees,
}

impl MemoryCleanup for Test {
    fn name(&self) -> &str {
        match self {
            Test::Fails => "fails",
            Test::Hangs(_) => "hangs",
            Test::Panics => "panics",
            Test::Frees => "frees",
        }
    }

    fn priority(&self) -> u32 {
        match self {
            Test::Fails => 0,
            Test::Hangs(_) => 1,
            Test::Panics => 2,
            Test::Frees => 3,
        }
    }

    fn cleanup(&self, _: PressureLevel) -> Result<u64, CleanupError> {
        match self {
            Test::Fails => Err("cache is locked".into()),
            Test::Hangs(rx) => {
                // Blocks until the test drops the sender.
                let _ = rx.lock().map(|r| r.recv());
                Ok(1)
            }
            Test::Panics => panic!("strategy bug"),
            Test::Frees => Ok(42),
        }
    }

    fn timeout(&self) -> Duration {
        // Only the hang is waited for briefly (a panic's backtrace alone
        // may take longer to print in a debug build).
        match self {
            Test::Hangs(_) => Duration::from_millis(200),
            _ => Duration::from_secs(30),
        }
    }
}

#[test]
fn failing_panicking_and_hanging_strategies_are_reported_and_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mem = ManualMemory::new(reading(100));
    let m = open_with_memory(Config::with_data_dir(dir.path()), &clock, &mem);
    let (release, rx) = mpsc::channel::<()>();
    m.register_cleanup(Box::new(Test::Frees));
    m.register_cleanup(Box::new(Test::Hangs(std::sync::Mutex::new(rx))));
    m.register_cleanup(Box::new(Test::Panics));
    m.register_cleanup(Box::new(Test::Fails));
    let r = m.request_cleanup(High);
    let names: Vec<&str> = r.strategies.iter().map(|s| s.strategy.as_str()).collect();
    assert_eq!(
        names,
        [
            "fails",
            "hangs",
            "panics",
            "frees",
            "flush-hot",
            "evict-idle",
            "drop-caches",
            "shrink-maps"
        ]
    );
    let error = |i: usize| r.strategies[i].error.clone().unwrap_or_default();
    assert_eq!(error(0), "cache is locked");
    assert!(error(1).contains("timed out"), "{}", error(1));
    assert!(error(2).contains("strategy bug"), "{}", error(2));
    assert_eq!(r.strategies[3].bytes_freed, 42);
    assert!(r.strategies[4..].iter().all(|s| s.error.is_none()));
    assert_eq!(
        r.bytes_freed,
        r.strategies.iter().map(|s| s.bytes_freed).sum::<u64>()
    );

    // the hung run is still out: the next run skips it and goes on
    let again = m.request_cleanup(Critical);
    assert!(
        again.strategies[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("skipped"))
    );
    assert_eq!(again.strategies[3].bytes_freed, 42);
    drop(release);
    let history = m.cleanup_history();
    assert_eq!(history.len(), 16);
    assert_eq!(m.memory_stats().cleanup_failures, 6);
}

// ---- the real binary -------------------------------------------------

struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(dir: &Path, config: &str) -> Server {
        std::fs::write(dir.join("scopemon.toml"), config).unwrap();
        let (child, base) = common::spawn_serve(dir, Stdio::null());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server { child, base, agent }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_json(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    fn count(&self) -> u64 {
        let q = "/v1/query?namespace=prod&metric=api&window=range&from=now-1h&to=now%2B10m";
        self.json(q)["points"][0]["count"].as_u64().unwrap_or(0)
    }

    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_real_process_over_its_budget_is_critical_refuses_ingest_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // First a normal budget: samples are accepted, then a clean stop.
    let s = Server::start(dir.path(), "[memory]\ncheck_interval = \"100ms\"\n");
    let samples: Vec<Value> = (0..200)
        .map(|i| json!({"namespace": "prod", "metric": "api", "value": 100 + i, "tags": {"host": format!("h{}", i % 4)}}))
        .collect();
    let (status, r) = s.post("/v1/ingest", &json!({ "samples": samples }));
    assert_eq!((status, &r["accepted"]), (200, &json!(200)), "{r}");
    assert_ne!(s.json("/v1/memory")["pressure_level"], "critical");
    s.stop();

    // Then a budget its own resident memory exceeds.
    let s = Server::start(
        dir.path(),
        "[memory]\nbudget = \"1MiB\"\ncheck_interval = \"100ms\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let m = s.json("/v1/memory");
        if m["pressure_level"] == "critical" || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["pressure_level"], "critical", "{status}");
    assert_eq!(status["budget"], 1 << 20, "{status}");
    assert!(status["threshold_percentage"].as_f64().unwrap_or(0.0) > 1.0);

    let one = json!({"samples": [{"namespace": "prod", "metric": "api", "value": 1}]});
    let (code, r) = s.post("/v1/ingest", &one);
    assert_eq!(
        (code, &r["error"]),
        (503, &json!("memory_pressure_critical")),
        "{r}"
    );
    let (code, quick) = s.get("/health/quick");
    assert!(
        (code == 200 && quick == "OK") || (code == 503 && quick == "NOT_OK"),
        "{code} {quick}"
    );
    assert_eq!(s.count(), 200, "every sample accepted before is there");
    let (code, r) = s.post("/v1/memory/cleanup", &json!({"priority": "critical"}));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["strategies"].as_array().map(Vec::len), Some(4), "{r}");
    let (_, metrics) = s.get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "scopemon_memory_pressure_level 3")
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "scopemon_memory_level_changes_total{level=\"critical\"} 1"),
        "{metrics}"
    );
    s.stop();
}
