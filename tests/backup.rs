//! Backup and restore (issue 9, item 9): a live backup over HTTP from the
//! real daemon while a client keeps ingesting holds everything acknowledged
//! before the call and nothing half-written; restored into a fresh
//! directory it answers every query as the source did. Offline, `scopemon
//! backup` / `restore` round-trip a stopped store, refuse to overwrite
//! without `--force`, refuse a file that is not a store without changing
//! anything, and exit 2 on a store a server holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{BIN, Daemon, T0};
use scopemon::{Config, HOUR_MS, Kind, MINUTE_MS, ManualClock, Outcome, QuerySpec, Tags, Window};

fn run(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(paths)
        .env_remove("RUST_LOG")
        .output()
        .expect("run scopemon")
}

/// A failed run: its exit code, and its stderr, which must be one line.
fn failure(out: &Output) -> (Option<i32>, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (out.status.code(), err)
}

fn succeeded(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Series of the load: each batch sends one sample to each.
const LOAD_SERIES: usize = 8;
/// At most this many load batches (batch `b` is stamped `t + b` seconds,
/// inside the queried 20 minutes).
const MAX_BATCHES: u64 = 1_100;
/// Series that get data only before the backup.
const STEADY_SERIES: usize = 5;

fn config(dir: &Path) {
    std::fs::write(
        dir.join("scopemon.toml"),
        "[storage]\nflush_interval = \"200ms\"\n",
    )
    .expect("config");
}

/// Sample `j` of steady series `i`: varied values, every 7th an error, one
/// per 10 s from `t`.
fn steady_samples(t: i64) -> Vec<Value> {
    let mut v = Vec::new();
    for i in 0..STEADY_SERIES {
        for j in 0..60i64 {
            v.push(json!({
                "namespace": "steady", "metric": "op", "kind": "latency",
                "value": 100 + (j * 7919 + i as i64 * 31) % 5000,
                "tags": {"h": i.to_string()},
                "outcome": if j % 7 == 0 { "error" } else { "ok" },
                "timestamp": t + j * 10_000,
            }));
        }
    }
    v
}

fn range(t: i64) -> String {
    format!("from={}&to={}", t / 1000 - 600, t / 1000 + 1200)
}

/// Every query answer about the steady series: per series by minute and
/// over the range, and the series list.
fn steady_answers(d: &Daemon, t: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..STEADY_SERIES {
        for window in ["minute", "range"] {
            let q = format!(
                "/v1/query?namespace=steady&metric=op&window={window}&{}&tag.h={i}",
                range(t)
            );
            let (status, body) = d.call("GET", &q, None);
            assert_eq!(status, 200, "{q}: {body}");
            out.push(body);
        }
    }
    let (status, body) = d.call("GET", "/v1/series?namespace=steady", None);
    assert_eq!(status, 200, "{body}");
    out.push(body);
    out
}

/// Count and sum of load series `s` over the whole range.
fn load_point(d: &Daemon, t: i64, s: usize) -> (u64, f64) {
    let q = format!(
        "/v1/query?namespace=load&metric=m&window=range&{}&tag.s={s}",
        range(t)
    );
    let (status, body) = d.call("GET", &q, None);
    assert_eq!(status, 200, "{q}: {body}");
    let p = &body["points"][0];
    (
        p["count"].as_u64().unwrap_or(0),
        p["sum"].as_f64().unwrap_or(0.0),
    )
}

/// Sends batch after batch (batch `b` gives every load series the value
/// `b`) until `stop`; `sent` is the batch on the wire, `acked` the last one
/// answered 200.
fn load(base: String, t: i64, sent: Arc<AtomicU64>, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for b in 1..=MAX_BATCHES {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let samples: Vec<Value> = (0..LOAD_SERIES)
            .map(|s| {
                json!({"namespace": "load", "metric": "m", "value": b,
                       "tags": {"s": s.to_string()}, "timestamp": t + b as i64 * 1000})
            })
            .collect();
        sent.store(b, Ordering::SeqCst);
        let mut r = agent
            .post(&format!("{base}/v1/ingest"))
            .send_json(json!({ "samples": samples }))
            .expect("ingest");
        let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        assert_eq!(r.status().as_u16(), 200, "{body}");
        assert_eq!(body["accepted"], LOAD_SERIES, "{body}");
        acked.store(b, Ordering::SeqCst);
    }
}

/// Polls `cond` (the load's progress) for up to a minute.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_live_backup_under_load_restores_every_series_as_it_was() {
    let src = tempfile::tempdir().expect("tempdir");
    config(src.path());
    let d = Daemon::start(src.path());
    let t = now_ms() - 30 * MINUTE_MS;
    let (status, body) = d.call(
        "POST",
        "/v1/ingest",
        Some(&json!({"samples": steady_samples(t)})),
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(300)),
        "{body}"
    );

    let (sent, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (base, sent, acked, stop) = (d.base.clone(), sent.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || load(base, t, sent, acked, stop))
    };
    wait_for("20 load batches", || acked.load(Ordering::SeqCst) >= 20);
    let lo = acked.load(Ordering::SeqCst);
    let (status, backup) = d.call("POST", "/v1/admin/backup", None);
    let hi = sent.load(Ordering::SeqCst);
    assert_eq!(status, 200, "{backup}");
    // The load goes on past the backup, then stops.
    wait_for("20 more batches", || {
        acked.load(Ordering::SeqCst) >= (hi + 20).min(MAX_BATCHES)
    });
    stop.store(true, Ordering::SeqCst);
    loader.join().expect("load thread");

    let path = PathBuf::from(backup["path"].as_str().expect("path"));
    let backups = std::fs::canonicalize(src.path().join("data/backups")).expect("backups dir");
    assert!(path.starts_with(&backups), "{path:?} not under {backups:?}");
    let bytes = std::fs::metadata(&path).expect("backup file").len();
    assert_eq!(backup["bytes"].as_u64(), Some(bytes), "{backup}");
    assert_eq!(backup.as_object().map(|o| o.len()), Some(2), "{backup}");

    let (status, body) = d.call("POST", "/v1/admin/backup?force=true", None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter")),
        "{body}"
    );

    // The server holds the store: offline backup and restore exit 2.
    let data = src.path().join("data");
    let other = src.path().join("other.redb");
    let out = run(
        &["backup", "--data-dir"],
        &[&data, Path::new("--to"), &other],
    );
    let (code, err) = failure(&out);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("locked") && err.contains("pid"), "{err}");
    assert!(!other.exists());
    let out = run(
        &["restore", "--force", "--from"],
        &[&path, Path::new("--data-dir"), &data],
    );
    let (code, err) = failure(&out);
    assert_eq!(code, Some(2), "{err}");

    let want = steady_answers(&d, t);
    let (_, series) = d.call("GET", "/v1/series?namespace=load", None);
    drop(d);

    let dst = tempfile::tempdir().expect("tempdir");
    config(dst.path());
    let restored = dst.path().join("data");
    succeeded(&run(
        &["restore", "--from"],
        &[&path, Path::new("--data-dir"), &restored],
    ));
    let r = Daemon::start(dst.path());
    assert_eq!(
        steady_answers(&r, t),
        want,
        "steady series answer as the source did"
    );
    let (_, restored_series) = r.call("GET", "/v1/series?namespace=load", None);
    let names = |v: &Value| {
        v["series"]
            .as_array()
            .map(|a| a.iter().map(|s| s["tags"].clone()).collect::<Vec<_>>())
    };
    assert_eq!(names(&restored_series), names(&series));
    assert_eq!(names(&series).map(|n| n.len()), Some(LOAD_SERIES));
    for s in 0..LOAD_SERIES {
        let (count, sum) = load_point(&r, t, s);
        // Everything acknowledged before the call is in it; nothing sent
        // after the answer is.
        assert!(
            (lo..=hi).contains(&count),
            "series {s}: {count} not in {lo}..={hi}"
        );
        // Values 1, 2, 3, ... in order: the only `count` of them summing
        // to count(count+1)/2 are the first ones, so the copy holds a
        // prefix of the series, with no gap and no double count.
        assert_eq!(
            sum,
            (count * (count + 1) / 2) as f64,
            "series {s}: {count} samples"
        );
    }
}

/// A stopped store with data in series, deltas, minute/hour/day records,
/// a threshold and a retention override.
fn stopped_store(dir: &Path) {
    let clock = ManualClock::new(T0 + 3 * HOUR_MS);
    let m = common::open(dir, &clock);
    for i in 0..240i64 {
        let sample = scopemon::Sample {
            namespace: "prod",
            metric: "op",
            kind: Kind::Latency,
            value: (100 + i * 37 % 900) as f64,
            tags: &[("h", if i % 2 == 0 { "a" } else { "b" })],
            outcome: if i % 9 == 0 {
                Outcome::Error
            } else {
                Outcome::Ok
            },
            timestamp_ms: Some(T0 + i * 45_000),
        };
        m.record(&sample).expect("record");
        if i == 200 {
            m.flush().expect("flush");
            m.rollup().expect("rollup");
        }
    }
    let threshold = serde_json::from_value(json!({
        "id": "slow", "namespace": "prod", "metric": "op", "aggregation": "p99",
        "op": "gt", "warning": 5000
    }))
    .expect("threshold");
    m.put_threshold(threshold).expect("put threshold");
    let rule = scopemon::RetentionRule {
        minute: Some(Duration::from_secs(12 * 3600)),
        ..Default::default()
    };
    m.set_retention("prod", &rule).expect("retention");
    m.close().expect("close");
}

/// What the store in `dir` answers: each series by minute and hour, its
/// thresholds and retention.
fn offline_answers(dir: &Path) -> Vec<Value> {
    let clock = ManualClock::new(T0 + 4 * HOUR_MS);
    let m = common::open_with(Config::with_data_dir(dir), &clock);
    let mut out = Vec::new();
    for h in ["a", "b"] {
        for window in [Window::Buckets(scopemon::Resolution::Minute), Window::Range] {
            let spec = QuerySpec {
                namespace: "prod".into(),
                metric: "op".into(),
                kind: Kind::Latency,
                window,
                from: T0 - HOUR_MS,
                to: T0 + 4 * HOUR_MS,
                tags: Tags::new(&[("h", h)]).expect("tags"),
            };
            out.push(serde_json::to_value(m.query(&spec).expect("query")).expect("json"));
        }
    }
    out.push(serde_json::to_value(m.thresholds()).expect("json"));
    out.push(json!(format!("{:?}", m.retention("prod"))));
    m.close().expect("close");
    out
}

fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn offline_backup_and_restore_round_trip_and_refuse_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, file) = (tmp.path().join("data"), tmp.path().join("b.redb"));
    stopped_store(&data);
    let want = offline_answers(&data);
    assert_eq!(want[1]["points"][0]["count"], 120, "{}", want[1]);

    let out = succeeded(&run(
        &["backup", "--data-dir"],
        &[&data, Path::new("--to"), &file],
    ));
    assert!(out.contains("b.redb"), "{out}");
    let first = std::fs::read(&file).expect("backup");
    let (code, err) = failure(&run(
        &["backup", "--data-dir"],
        &[&data, Path::new("--to"), &file],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert!(std::fs::read(&file).expect("backup") == first, "untouched");
    succeeded(&run(
        &["backup", "--force", "--data-dir"],
        &[&data, Path::new("--to"), &file],
    ));

    // Into a fresh directory: the same answers.
    let fresh = tmp.path().join("fresh");
    let out = succeeded(&run(
        &["restore", "--from"],
        &[&file, Path::new("--data-dir"), &fresh],
    ));
    assert!(out.contains("restored"), "{out}");
    assert_eq!(offline_answers(&fresh), want);
    succeeded(&run(&["check", "--data-dir"], &[&fresh]));

    // Over a store holding data: refused without --force, done with it.
    stopped_store(&tmp.path().join("other"));
    let other = tmp.path().join("other");
    let before = listing(&other);
    let (code, err) = failure(&run(
        &["restore", "--from"],
        &[&file, Path::new("--data-dir"), &other],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--force") && err.contains("records"), "{err}");
    assert!(listing(&other) == before, "nothing changed");
    succeeded(&run(
        &["restore", "--force", "--from"],
        &[&file, Path::new("--data-dir"), &other],
    ));
    assert_eq!(offline_answers(&other), want);
}

#[test]
fn restoring_a_file_that_is_not_a_store_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    stopped_store(&data);
    let junk = tmp.path().join("junk.redb");
    std::fs::write(&junk, b"not a store at all, just some bytes".repeat(300)).expect("junk");
    let before = listing(&data);
    for force in [
        &["restore", "--from"][..],
        &["restore", "--force", "--from"][..],
    ] {
        let (code, err) = failure(&run(force, &[&junk, Path::new("--data-dir"), &data]));
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("is not a scopemon store"), "{err}");
        assert!(listing(&data) == before, "nothing changed");
    }
    let fresh = tmp.path().join("fresh");
    failure(&run(
        &["restore", "--from"],
        &[&junk, Path::new("--data-dir"), &fresh],
    ));
    assert!(!fresh.exists(), "no directory created");
    // A missing backup or store is named.
    let (_, err) = failure(&run(
        &["restore", "--from"],
        &[&tmp.path().join("nope"), Path::new("--data-dir"), &fresh],
    ));
    assert!(err.contains("nope"), "{err}");
    let (_, err) = failure(&run(
        &["backup", "--data-dir"],
        &[&fresh, Path::new("--to"), &junk],
    ));
    assert!(err.contains("no store"), "{err}");
}
