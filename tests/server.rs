//! The real binary end to end: start `scopemon serve` on a free port with a
//! temp data dir, ingest and query over HTTP, stop it with SIGTERM and with
//! `kill -9`, restart, and get the same answers (less at most the unflushed
//! interval after the kill). Also: offline commands refuse a held store.
//!
//! Waiting is on conditions (the ready line, `/metrics` showing the flush
//! done), never on fixed sleeps.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::BIN;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        Self::start_logging(dir, Stdio::null())
    }

    /// Starts with its log (stderr) going to `log`.
    fn start_logging(dir: &Path, log: Stdio) -> Server {
        let (child, base) = common::spawn_serve(dir, log);
        Server { child, base }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut r = Self::agent()
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn get_text(&self, path: &str) -> String {
        let mut r = Self::agent()
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("GET");
        r.body_mut().read_to_string().expect("body")
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn ingest(&self, samples: &[Value]) -> Value {
        let (status, body) = self.post(
            "/v1/ingest",
            json!({ "samples": samples }).to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until a flush has taken every hot bucket.
    fn wait_flushed(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .get_text("/metrics")
                .lines()
                .any(|l| l == "scopemon_hot_series 0")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no flush within 20 s");
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn samples(n: usize, start_ms: i64, offset: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let host = ["a", "b", "c"][j % 3];
            json!({
                "namespace": "production",
                "metric": "foundation.config.get",
                "kind": "latency",
                "value": 100 + (j * 7919) % 5000,
                "tags": {"host": host},
                "outcome": if j.is_multiple_of(10) { "error" } else { "ok" },
                "timestamp": start_ms + (j as i64) * 1_000,
            })
        })
        .collect()
}

fn range_count(s: &Server) -> u64 {
    let (status, body) = s.get("/v1/query?namespace=production&metric=foundation.config.get&window=range&from=now-2h&to=now%2B10m");
    assert_eq!(status, 200, "{body}");
    body["points"][0]["count"].as_u64().unwrap_or(0)
}

fn answers(s: &Server) -> Vec<Value> {
    [
        "/v1/query?namespace=production&metric=foundation.config.get&window=range&from=now-2h&to=now%2B10m",
        "/v1/query?namespace=production&metric=foundation.config.get&window=minute&from=now-2h&to=now%2B10m",
        "/v1/query?namespace=production&metric=foundation.config.get&window=hour&from=now-1d&to=now%2B10m&tag.host=b",
    ]
    .iter()
    .map(|q| {
        let (status, mut body) = s.get(q);
        assert_eq!(status, 200, "{q}: {body}");
        // `start`/`end` of a range point follow the wall clock.
        let is_range = body["window"] == "range";
        if let Some(p) = body["points"].get_mut(0).filter(|_| is_range) {
            p["start"] = Value::Null;
            p["end"] = Value::Null;
        }
        body
    })
    .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), "200ms");
    let data = dir.path().join("data");
    (dir, data)
}

/// The tests' configuration file, with the given flush interval.
fn write_config(dir: &Path, flush_interval: &str) {
    std::fs::write(
        dir.join("scopemon.toml"),
        format!("[storage]\nflush_interval = \"{flush_interval}\"\nseries_limit_per_namespace = 3\n[server]\nmax_body_size = \"64KiB\"\n"),
    )
    .expect("config");
}

#[test]
fn ingest_query_restart_and_crash() {
    let (dir, data) = setup();
    // No background flush until the clean stop: the shutdown's own flush
    // must write everything.
    write_config(dir.path(), "1h");
    let t0 = now_ms() - 40 * 60_000;
    let mut s = Server::start(dir.path());
    assert_eq!(s.get_text("/health/quick"), "OK");
    assert_eq!(s.get_text("/readyz"), "OK");
    assert_eq!(s.get_text("/livez"), "OK");
    let mut r = Server::agent()
        .get(&format!("{}/health/quick", s.base))
        .header("accept", "application/json")
        .call()
        .expect("GET");
    let quick: Value = r.body_mut().read_json().expect("json");
    assert_eq!(
        (quick["status"].as_str(), quick["healthy"].as_u64()),
        (Some("pass"), Some(1)),
        "{quick}"
    );

    let a = s.ingest(&samples(300, t0, 0));
    assert_eq!(a["accepted"], 300, "{a}");
    assert_eq!(range_count(&s), 300, "unflushed data is visible at once");
    let (_, summary) = s.get("/v1/summary?namespace=production&window=hour");
    assert_eq!(
        summary["metrics"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    let (_, series) = s.get("/v1/series?namespace=production");
    assert_eq!(series["series"].as_array().map(Vec::len), Some(3));
    let (_, ns) = s.get("/v1/namespaces");
    assert_eq!(ns["namespaces"][0]["namespace"], "production", "{ns}");
    assert_eq!(ns["namespaces"][0]["series"], 3);
    assert_eq!(ns["namespaces"][0]["retention"]["source"], "default");
    let before = answers(&s);
    assert_eq!(before[0]["points"][0]["errors"], 30);

    // Offline commands while the server holds the file: exit 2, one line.
    for args in [
        &[
            "query",
            "--namespace",
            "production",
            "--metric",
            "foundation.config.get",
        ][..],
        &["summary", "--namespace", "production"][..],
        &["migrate"][..],
        &["check"][..],
        &[
            "baseline",
            "--namespace",
            "production",
            "--metric",
            "foundation.config.get",
        ][..],
        &["retention", "show"][..],
        &[
            "retention",
            "set",
            "--namespace",
            "production",
            "--minute",
            "1h",
        ][..],
        &["compact"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("locked") && err.contains("pid"), "{err}");
    }

    // Clean stop: everything is flushed.
    assert!(s.signal(libc::SIGTERM).success());
    let mut s = Server::start(dir.path());
    assert_eq!(answers(&s), before, "same answers after a clean restart");
    // The crash below needs the background flush.
    assert!(s.signal(libc::SIGTERM).success());
    write_config(dir.path(), "200ms");
    let s = Server::start(dir.path());

    // Crash: what was flushed survives; at most the unflushed tail is lost.
    s.ingest(&samples(90, t0 + 300_000, 300));
    s.wait_flushed();
    s.ingest(&samples(60, t0 + 390_000, 390));
    let mut s = s;
    let status = s.signal(libc::SIGKILL);
    assert!(!status.success());
    let mut s = Server::start(dir.path());
    let n = range_count(&s);
    assert!((390..=450).contains(&n), "after kill -9: {n}");
    assert!(s.signal(libc::SIGINT).success());

    // The file is intact after the crash.
    let out = Command::new(BIN)
        .arg("check")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_gets_codes_and_the_rest_is_stored() {
    let (dir, _data) = setup();
    let s = Server::start(dir.path());
    let now = now_ms();
    let body = json!({"samples": [
        {"namespace": "p", "metric": "m", "value": 10},
        {"namespace": "p", "metric": "m", "kind": "bogus", "value": 1},
        {"namespace": "p", "metric": "m", "value": "ten"},
        {"namespace": "p", "metric": "m", "value": -1},
        {"namespace": "p", "metric": "m", "kind": "error_rate", "value": 101},
        {"namespace": "bad ns", "metric": "m", "value": 1},
        {"namespace": "p", "metric": "bad:metric", "value": 1},
        {"namespace": "p", "metric": "m", "value": 1, "timestamp": now + 600_000},
        {"namespace": "p", "metric": "m", "value": 1, "timestamp": now - 500 * 86_400_000i64},
        {"namespace": "p", "metric": "m", "value": 1, "timestamp": "yesterday"},
        {"namespace": "p", "metric": "m", "value": 1, "outcome": "maybe"},
        {"namespace": "p", "metric": "m", "value": 4e9},
        {"namespace": "p", "metric": "m", "value": 20, "outcome": "error"}
    ]});
    let (status, r) = s.post("/v1/ingest", body.to_string().as_bytes());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["accepted"], 2, "{r}");
    let codes: Vec<&str> = r["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|x| x["error"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_kind",
            "invalid_sample",
            "invalid_value",
            "value_out_of_range",
            "invalid_name",
            "invalid_name",
            "timestamp_in_future",
            "outside_retention",
            "invalid_sample",
            "invalid_sample",
            "value_out_of_range"
        ]
    );
    // infinite values cannot be written in JSON; 1e400 is refused as a value
    let (status, r) = s.post(
        "/v1/ingest",
        br#"{"samples":[{"namespace":"p","metric":"m","value":1e400}]}"#,
    );
    assert_eq!(
        (status, r["rejected"][0]["error"].as_str()),
        (200, Some("invalid_value"))
    );

    // The fourth series of namespace "lim" is refused; the others are kept.
    let lim: Vec<Value> = (0..4)
        .map(|i| json!({"namespace": "lim", "metric": format!("m{i}"), "value": 1}))
        .collect();
    let r = s.ingest(&lim);
    assert_eq!(r["accepted"], 3, "{r}");
    assert_eq!(r["rejected"][0]["error"], "series_limit_exceeded");
    assert_eq!(r["rejected"][0]["index"], 3);

    for (body, code, status) in [
        (&b"{\"samples\": ["[..], "invalid_json", 400),
        (&b"[1,2]"[..], "invalid_json", 400),
        (&vec![b' '; 100 * 1024][..], "payload_too_large", 413),
    ] {
        let (st, r) = s.post("/v1/ingest", body);
        assert_eq!((st, r["error"].as_str()), (status, Some(code)), "{r}");
    }
    for (q, status, code) in [
        (
            "/v1/query?namespace=p&metric=m&bogus=1",
            400,
            "invalid_parameter",
        ),
        (
            "/v1/query?namespace=p&metric=m&from=now&to=now-1h",
            400,
            "invalid_range",
        ),
        ("/v1/query?namespace=p&metric=nope", 404, "not_found"),
        (
            "/v1/query?namespace=p&metric=m&window=week",
            400,
            "invalid_parameter",
        ),
        (
            "/v1/query?namespace=p&metric=m&from=tomorrow",
            400,
            "invalid_parameter",
        ),
        ("/v1/query?metric=m", 400, "invalid_parameter"),
        (
            "/v1/query?namespace=p&metric=m&kind=bogus",
            400,
            "invalid_kind",
        ),
        ("/v1/nope", 404, "not_found"),
    ] {
        let (st, r) = s.get(q);
        assert_eq!((st, r["error"].as_str()), (status, Some(code)), "{q}: {r}");
    }
    let (st, r) = s.get("/v1/query?namespace=p&metric=m&window=range&from=now-1h");
    assert_eq!(st, 200);
    assert_eq!(r["points"][0]["count"], 2);
    assert_eq!(r["points"][0]["error_rate"], 50.0);
    // A series with no data in range: an empty list, not an error.
    let (st, r) =
        s.get("/v1/query?namespace=p&metric=m&from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z");
    assert_eq!((st, r["points"].as_array().map(Vec::len)), (200, Some(0)));
}

/// A 200 ms flush and a namespace "tmp" that keeps minutes and hours an
/// hour and days a day: samples a few hours old leave their minute and
/// hour buckets but stay in their day.
const TMP_RETENTION: &str = "[storage]\nflush_interval = \"200ms\"\n\
     [retention.namespaces.\"tmp\"]\nminute = \"1h\"\nhour = \"1h\"\nday = \"1d\"\n";

#[test]
fn retention_over_http_and_offline_compaction() {
    let (dir, data) = setup();
    std::fs::write(dir.path().join("scopemon.toml"), TMP_RETENTION).expect("config");
    let mut s = Server::start(dir.path());
    let (st, r) = s.get("/v1/namespaces/tmp/retention");
    assert_eq!(
        (st, r.clone()),
        (
            200,
            json!({"minute": "1h", "hour": "1h", "day": "1d", "source": "config"})
        )
    );
    let (st, r) = s.get("/v1/namespaces/other/retention");
    assert_eq!(
        (st, r["minute"].as_str(), r["source"].as_str()),
        (200, Some("2d"), Some("default"))
    );

    // Overrides: validated, merged key by key, persisted.
    for (body, code) in [
        (r#"{"hour": "30m"}"#, "invalid_parameter"),
        (r#"{"minute": "soon"}"#, "invalid_parameter"),
        (r#"{"minute": "0s"}"#, "invalid_parameter"),
        (r#"{"weeks": "2"}"#, "invalid_parameter"),
        (r#"{"minute": "40d"}"#, "invalid_parameter"),
    ] {
        let r = ureq_put(&s, "/v1/namespaces/other/retention", body);
        assert_eq!(
            (r.0, r.1["error"].as_str()),
            (400, Some(code)),
            "{body}: {}",
            r.1
        );
    }
    let r = ureq_put(&s, "/v1/namespaces/other/retention", r#"{"minute": "6h"}"#);
    assert_eq!(
        r.1,
        json!({"minute": "6h", "hour": "30d", "day": "400d", "source": "override"})
    );

    // Old samples in "tmp": past the minute and hour retention, inside the day's.
    let t = now_ms() - 3 * 3_600_000;
    let old: Vec<Value> = (0..120)
        .map(|i| json!({"namespace": "tmp", "metric": "m", "value": 10 + i, "timestamp": t + i * 30_000}))
        .collect();
    assert_eq!(s.ingest(&old)["accepted"], 120);
    let (st, report) = s.post("/v1/admin/compact", b"");
    assert_eq!(st, 200, "{report}");
    assert!(
        report["removed"]["tmp"]["minute"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        report["removed"]["tmp"]["hour"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(s.get_text("/metrics").contains(
        "scopemon_compactor_removed_buckets_total{namespace=\"tmp\",resolution=\"minute\"}"
    ));
    // the samples still count in their day
    let (_, q) = s.get("/v1/query?namespace=tmp&metric=m&window=range&from=now-2d");
    assert_eq!(q["points"][0]["count"], 120, "{q}");

    // Offline compaction refuses a held store, touching nothing.
    let compact = |extra: &[&str]| {
        Command::new(BIN)
            .args(["compact", "--format", "json", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(dir.path().join("scopemon.toml"))
            .args(extra)
            .output()
            .expect("run compact")
    };
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = compact(extra);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // More old data, then offline: dry run reports and changes nothing.
    assert_eq!(s.ingest(&old)["accepted"], 120);
    assert!(s.signal(libc::SIGTERM).success());
    let file = data.join("scopemon.redb");
    let before = std::fs::read(&file).expect("read");
    let out = compact(&["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dry["dry_run"], true);
    assert!(dry["total_removed"].as_u64().unwrap_or(0) > 0, "{dry}");
    assert!(
        std::fs::read(&file).expect("read") == before,
        "a dry run changed the file"
    );

    let out = compact(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(done["total_removed"], dry["total_removed"], "{done}");
    assert!(
        done["file_bytes_after"].as_u64() <= done["file_bytes_before"].as_u64(),
        "{done}"
    );

    // Retention overrides survive; retention show says where they come from.
    let out = Command::new(BIN)
        .args([
            "retention",
            "show",
            "--format",
            "json",
            "--namespace",
            "other",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("retention show");
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown[0]["minute"], "6h");
    assert_eq!(shown[0]["source"], "override");
    let out = Command::new(BIN)
        .args([
            "retention",
            "set",
            "--namespace",
            "other",
            "--hour",
            "10m",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("retention set");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let s = Server::start(dir.path());
    let (_, q) = s.get("/v1/query?namespace=tmp&metric=m&window=range&from=now-2d");
    assert_eq!(q["points"][0]["count"], 240, "{q}");
    let (_, r) = s.get("/v1/namespaces/other/retention");
    assert_eq!(r["source"], "override");
}

fn ureq_put(s: &Server, path: &str, body: &str) -> (u16, Value) {
    let mut r = Server::agent()
        .put(&format!("{}{path}", s.base))
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .expect("PUT");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn thresholds_alerts_and_baselines_over_http() {
    let (dir, data) = setup();
    let s = Server::start(dir.path());
    let good = json!({"id": "slow-config", "namespace": "production", "metric": "foundation.*",
        "kind": "latency", "aggregation": "p99", "op": "gt",
        "warning": 10000, "critical": 50000, "window": "minute", "for": "120s"});
    let (st, r) = put_json(&s, "/v1/thresholds", &good);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["for"], "2m");
    for (patch, needle) in [
        (json!({"aggregation": "p42"}), "unknown aggregation"),
        (json!({"metric": "no spaces"}), "metric glob"),
        (json!({"warning": 90000}), "beyond critical"),
        (json!({"op": "sideways"}), "not a threshold"),
        (json!({"bogus": 1}), "not a threshold"),
    ] {
        let mut bad = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            bad[k] = v.clone();
        }
        let (st, r) = put_json(&s, "/v1/thresholds", &bad);
        assert_eq!(
            (st, r["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{r}"
        );
        assert!(r["message"].as_str().unwrap_or("").contains(needle), "{r}");
    }
    let (_, list) = s.get("/v1/thresholds");
    assert_eq!(list["thresholds"].as_array().map(Vec::len), Some(1));

    // a sample breaching the critical level fires at the next flush (for=0)
    let fast = json!({"id": "now", "namespace": "production", "metric": "*",
        "aggregation": "max", "op": "gt", "critical": 100000});
    assert_eq!(put_json(&s, "/v1/thresholds", &fast).0, 200);
    s.ingest(&[
        json!({"namespace": "production", "metric": "foundation.config.get", "value": 200000}),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let firing = loop {
        let (_, a) = s.get("/v1/alerts?state=firing");
        if a["alerts"].as_array().is_some_and(|v| !v.is_empty()) || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(firing["alerts"][0]["threshold_id"], "now", "{firing}");
    assert_eq!(firing["alerts"][0]["severity"], "critical");
    let (_, h) = s.get("/v1/health/performance?namespace=production");
    assert_eq!(h["status"], "unhealthy", "{h}");
    assert!(
        s.get_text("/metrics")
            .contains("scopemon_alert_transitions_total{to=\"firing\"} 1")
    );
    let (st, r) = s.get("/v1/alerts?state=sideways");
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_parameter")));

    // baselines: not enough history yet
    let (st, b) = s.get("/v1/baseline?namespace=production&metric=foundation.config.get");
    assert_eq!(
        (st, b["status"].as_str(), b["buckets"].as_u64()),
        (200, Some("insufficient_data"), Some(0)),
        "{b}"
    );
    let (st, _) = s.get("/v1/baseline?namespace=production&metric=nope");
    assert_eq!(st, 404);

    let del = |id: &str| {
        let r = Server::agent()
            .delete(&format!("{}/v1/thresholds/{id}", s.base))
            .call()
            .expect("DELETE");
        r.status().as_u16()
    };
    assert_eq!(del("now"), 200);
    assert_eq!(del("now"), 404);
    let (_, a) = s.get("/v1/alerts?state=resolved");
    assert_eq!(
        a["alerts"][0]["threshold_id"], "now",
        "deleting a threshold resolves its alerts"
    );
    drop(s);

    // the offline baseline command answers from the file
    let out = Command::new(BIN)
        .args([
            "baseline",
            "--namespace",
            "production",
            "--metric",
            "foundation.config.get",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("baseline");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(b["status"], "insufficient_data");
}

fn put_json(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    ureq_put(s, path, &body.to_string())
}

/// Runs `scopemon serve` expecting it to fail; returns its exit code and
/// stderr.
fn serve_fails(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    (out.status.code(), stderr)
}

#[test]
fn start_up_failures_are_one_line_with_their_own_code_and_create_nothing() {
    let (dir, data) = setup();
    let config = dir.path().join("scopemon.toml");
    let config = config.to_str().expect("utf-8 path");

    // Port in use: exit 4, names the address, no store created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, err) = serve_fails(dir.path(), &["--config", config, "--listen", &addr]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!err.contains("invalid configuration"), "{err}");
    assert!(!data.exists(), "a failed bind created {}", data.display());
    drop(taken);

    // A bad configuration file: exit 3, names the file and the line, once.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nflush_interval = \n").expect("write");
    let (code, err) = serve_fails(
        dir.path(),
        &[
            "--config",
            bad.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("bad.toml: line 2, column"), "{err}");
    assert_eq!(err.matches("invalid configuration").count(), 1, "{err}");
    assert!(!data.exists());

    // The data directory is a regular file: exit 5, names the path, once.
    std::fs::write(&data, "not a directory").expect("write");
    let (code, err) = serve_fails(dir.path(), &["--config", config, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(&data).expect("read"), b"not a directory");

    // A command line clap refuses: 64, not 2 (2 is "the store is locked").
    let out = Command::new(BIN)
        .args(["serve", "--listen", "bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn absurd_query_times_are_refused_and_logs_in_files_have_no_colour() {
    let (dir, _data) = setup();
    let log = dir.path().join("serve.log");
    let mut s = Server::start_logging(
        dir.path(),
        Stdio::from(std::fs::File::create(&log).expect("log file")),
    );
    s.ingest(&[json!({"namespace": "p", "metric": "m", "value": 5})]);
    for q in [
        "from=-86398204103286",
        "from=now-100000000y",
        "to=253402300800",
        "to=now%2B9000y",
    ] {
        let (st, r) = s.get(&format!("/v1/query?namespace=p&metric=m&window=range&{q}"));
        assert_eq!(
            (st, r["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{q}: {r}"
        );
        let msg = r["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("0000-01-01T00:00:00Z") && msg.contains("9999-12-31T23:59:59.999Z"),
            "{q}: {r}"
        );
    }
    // The earliest accepted time still answers in RFC 3339.
    let (st, r) =
        s.get("/v1/query?namespace=p&metric=m&window=range&from=0000-01-01T00:00:00Z&to=now");
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["points"][0]["start"], "0000-01-01T00:00:00Z", "{r}");
    assert_eq!(r["points"][0]["count"], 1, "{r}");

    assert!(s.signal(libc::SIGTERM).success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("scopemon listening"), "{text}");
    assert!(!text.contains('\x1b'), "ANSI codes in a log file: {text:?}");
}

/// `POST /v1/admin/compact?dry_run=true` counts and deletes nothing; the
/// real compaction that follows removes exactly what the dry run counted.
/// Unknown or malformed parameters are 400 on every route that has them.
#[test]
fn compaction_dry_run_and_strict_parameters_over_http() {
    let (dir, _data) = setup();
    std::fs::write(dir.path().join("scopemon.toml"), TMP_RETENTION).expect("config");
    let mut s = Server::start(dir.path());
    let t = now_ms() - 3 * 3_600_000;
    let old: Vec<Value> = (0..120)
        .map(|i| json!({"namespace": "tmp", "metric": "m", "value": 10 + i, "timestamp": t + i * 30_000}))
        .collect();
    assert_eq!(s.ingest(&old)["accepted"], 120);
    // a clean stop flushes and rolls everything up, so the dry run below
    // and the real compaction see the same records
    assert!(s.signal(libc::SIGTERM).success());
    let s = Server::start(dir.path());

    let (st, dry) = s.post("/v1/admin/compact?dry_run=true", b"");
    assert_eq!(st, 200, "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    let counted = dry["total_removed"].as_u64().unwrap_or(0);
    assert!(counted > 0, "{dry}");
    assert!(
        s.get_text("/metrics")
            .lines()
            .any(|l| l == "scopemon_compactions_total 0"),
        "a dry run is not a compaction"
    );
    let (_, q) = s.get("/v1/query?namespace=tmp&metric=m&window=range&from=now-2d");
    assert_eq!(q["points"][0]["count"], 120, "{q}");

    let (st, done) = s.post("/v1/admin/compact?dry_run=false", b"");
    assert_eq!(
        (st, done["dry_run"].as_bool()),
        (200, Some(false)),
        "{done}"
    );
    assert_eq!(
        done["total_removed"], counted,
        "the dry run deleted nothing"
    );
    let (_, q) = s.get("/v1/query?namespace=tmp&metric=m&window=range&from=now-2d");
    assert_eq!(q["points"][0]["count"], 120, "{q}");

    for path in [
        "/v1/admin/compact?bogus=1",
        "/v1/admin/compact?dry_run=yes",
        "/v1/admin/compact?dry_run=",
        "/v1/admin/compact?dry_run=true&dry_run=true",
    ] {
        let (st, r) = s.post(path, b"");
        assert_eq!(
            (st, r["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}: {r}"
        );
    }
    for path in [
        "/v1/namespaces/tmp/retention?bogus=1",
        "/v1/thresholds?bogus=1",
        "/v1/alerts?bogus=1",
        "/v1/namespaces?bogus=1",
    ] {
        let (st, r) = s.get(path);
        assert_eq!(
            (st, r["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}: {r}"
        );
    }
    let (st, r) = ureq_put(&s, "/v1/namespaces/tmp/retention?bogus=1", "{}");
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_parameter")));
}

/// A response's status, `Allow` header and JSON body (Null if not JSON).
fn call(req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String, Value) {
    let mut r = req.expect("request");
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = r.status().as_u16();
    (
        status,
        allow,
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// 404, 405, 414 and 431 come with the `{"error", "message"}` body too, and
/// the 404 message names routes that exist.
#[test]
fn every_error_has_the_json_body() {
    let (dir, _data) = setup();
    let s = Server::start(dir.path());
    let a = Server::agent();
    let url = |p: &str| format!("{}{p}", s.base);
    for (r, allow) in [
        (a.delete(&url("/metrics")).call(), "GET,HEAD"),
        (a.post(&url("/livez")).send_empty(), "GET,HEAD"),
        (a.get(&url("/v1/ingest")).call(), "POST"),
        (a.get(&url("/v1/admin/compact")).call(), "POST"),
    ] {
        let (st, allowed, body) = call(r);
        assert_eq!(
            (st, body["error"].as_str(), allowed.as_str()),
            (405, Some("method_not_allowed"), allow),
            "{body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let (st, _, body) = call(a.get(&url("/nope")).call());
    assert_eq!((st, body["error"].as_str()), (404, Some("not_found")));
    let message = body["message"].as_str().unwrap_or("");
    let routes: Vec<&str> = message
        .split([' ', ','])
        .filter(|w| w.starts_with('/') && *w != "/nope;")
        .collect();
    assert!(routes.len() >= 10, "{message}");
    for route in routes {
        let path = route
            .replace("{ns}", "x")
            .replace("{id}", "x")
            .replace("{name}", "x");
        let (st, _, body) = call(a.get(&url(&path)).call());
        assert_ne!(st, 404, "{route} is listed but not routed: {body}");
    }

    let long = format!(
        "/v1/query?namespace=p&metric=m&tag.x={}",
        "a".repeat(10_000)
    );
    let (st, _, body) = call(a.get(&url(&long)).call());
    assert_eq!(
        (st, body["error"].as_str()),
        (414, Some("uri_too_long")),
        "{body}"
    );
    let big = "b".repeat(40_000);
    let (st, _, body) = call(a.get(&url("/livez")).header("x-big", &big).call());
    assert_eq!(
        (st, body["error"].as_str()),
        (431, Some("headers_too_large")),
        "{body}"
    );
}
