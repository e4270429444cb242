//! Baselines, thresholds, alerts and performance health with a manual clock
//! and synthetic history written through the normal ingest path.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use scopemon::{AlertState, Severity, ThresholdSpec as Threshold};
use scopemon::{BaselineStatus, Selection};
use scopemon::{Clock, Config, Kind, ManualClock, Monitor, Outcome, Sample, Tags};
use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS};

use common::{Rng, T0};

fn open(dir: &std::path::Path, clock: &ManualClock, webhook: Option<&str>) -> Monitor {
    let mut c = Config::with_data_dir(dir);
    c.alerts.webhook_url = webhook.map(str::to_owned);
    c.alerts.webhook_timeout = Duration::from_secs(2);
    common::open_with(c, clock)
}

fn rec(m: &Monitor, metric: &str, value: f64, ts: i64, error: bool) {
    m.record(&Sample {
        namespace: "prod",
        metric,
        kind: Kind::Latency,
        value,
        tags: &[("host", "a")],
        outcome: if error { Outcome::Error } else { Outcome::Ok },
        timestamp_ms: Some(ts),
    })
    .unwrap();
}

fn sel(metric: &str) -> Selection {
    Selection {
        namespace: "prod".into(),
        metric: metric.into(),
        kind: Kind::Latency,
        tags: Tags::empty(),
    }
}

/// The oracle's own median and MAD (median absolute deviation), written
/// independently of `baseline`: the middle element of the sorted values, or
/// the mean of the two middle ones.
fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    fn median(mut v: Vec<f64>) -> Option<f64> {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }
    let m = median(values.to_vec())?;
    Some((m, median(values.iter().map(|x| (x - m).abs()).collect())?))
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

#[test]
fn baseline_matches_an_independent_median_mad() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 7 * DAY_MS + 10 * MINUTE_MS);
    let m = open(dir.path(), &clock, None);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // exact hourly aggregates, computed here from the raw samples
    let (mut p50, mut p99, mut avg, mut rate, mut err) = (vec![], vec![], vec![], vec![], vec![]);
    for h in 0..7 * 24 {
        let level = 800.0 + 400.0 * rng.unit();
        let n = 20 + (rng.unit() * 40.0) as usize;
        let mut vals = Vec::new();
        let mut errors = 0;
        for i in 0..n {
            let v = (level * (0.7 + 0.6 * rng.unit())).round();
            let e = rng.unit() < 0.05;
            errors += usize::from(e);
            rec(&m, "db.query", v, T0 + h * HOUR_MS + (i as i64) * 30_000, e);
            vals.push(v);
        }
        vals.sort_by(f64::total_cmp);
        p50.push(nearest_rank(&vals, 0.5));
        p99.push(nearest_rank(&vals, 0.99));
        avg.push(vals.iter().sum::<f64>() / n as f64);
        rate.push(n as f64 / 3600.0);
        err.push(errors as f64 * 100.0 / n as f64);
    }
    m.flush().unwrap();
    m.rollup().unwrap();
    let b = m.baseline(&sel("db.query")).unwrap();
    assert_eq!(b.status, BaselineStatus::Ok);
    assert_eq!(b.buckets, 168);
    assert!(!b.seasonal);
    assert_eq!(b.window, "7d");
    let check = |name: &str, band: Option<scopemon::Band>, exact: &[f64], tol: f64| {
        let band = band.unwrap();
        let (med, mad) = median_mad(exact).unwrap();
        let spread = (1.4826 * mad).max(0.01 * med);
        let close = |a: f64, b: f64| (a - b).abs() <= tol * b.abs().max(1e-9);
        assert!(
            close(band.baseline, med),
            "{name} baseline {} vs {med}",
            band.baseline
        );
        assert!(
            close(band.upper, med + 3.0 * spread),
            "{name} upper {} vs {}",
            band.upper,
            med + 3.0 * spread
        );
        assert!(
            close(band.lower.max(0.0), (med - 3.0 * spread).max(0.0)) || band.lower == 0.0,
            "{name} lower"
        );
    };
    // quantiles: within the histograms' 1 % (the band compounds it a bit)
    check("p50", b.p50, &p50, 0.01);
    check("p99", b.p99, &p99, 0.02);
    // avg, rate and error rate come from exact sums and counts
    check("avg", b.avg, &avg, 1e-9);
    check("rate", b.rate, &rate, 1e-9);
    check("error_rate", b.error_rate, &err, 1e-9);

    // too little history: insufficient_data, with the count
    for h in 0..10 {
        rec(
            &m,
            "young",
            100.0,
            T0 + 7 * DAY_MS - (h + 1) * HOUR_MS,
            false,
        );
    }
    let y = m.baseline(&sel("young")).unwrap();
    assert_eq!(
        (y.status, y.buckets),
        (BaselineStatus::InsufficientData, 10)
    );
    assert!(y.p50.is_none());

    // a current window far above the band is a performance issue
    for i in 0..50 {
        rec(&m, "db.query", 50_000.0, clock.now_ms() - i * 1_000, false);
    }
    m.recompute_baselines().unwrap();
    let health = m.performance_health("prod").unwrap();
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        health
            .issues
            .iter()
            .any(|i| i.reason == "outside_baseline:p99" && i.metric == "db.query")
    );
}

#[test]
fn a_daily_pattern_gives_a_seasonal_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 21 * DAY_MS + 3 * HOUR_MS + 10 * MINUTE_MS);
    let m = open(dir.path(), &clock, None);
    let level = |h: i64| 1000.0 + 600.0 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
    for h in 0..21 * 24 + 3 {
        for i in 0..12 {
            rec(
                &m,
                "api",
                (level(h) * (0.98 + 0.04 * (i as f64 / 11.0))).round(),
                T0 + h * HOUR_MS + i * 60_000,
                false,
            );
        }
    }
    m.flush().unwrap();
    m.rollup().unwrap();
    let at3 = m.baseline(&sel("api")).unwrap();
    assert!(at3.seasonal, "{at3:?}");
    assert_eq!(at3.hour_of_day, Some(3));
    clock.advance_ms(12 * HOUR_MS);
    let at15 = m.baseline(&sel("api")).unwrap();
    assert_eq!(at15.hour_of_day, Some(15));
    let (b3, b15) = (at3.p50.unwrap().baseline, at15.p50.unwrap().baseline);
    assert!(
        (b3 - level(3)).abs() / level(3) < 0.03,
        "{b3} vs {}",
        level(3)
    );
    assert!(
        (b15 - level(15)).abs() / level(15) < 0.03,
        "{b15} vs {}",
        level(15)
    );
    assert!(
        b3 > 1.5 * b15,
        "03:00 {b3} should be well above 15:00 {b15}"
    );
}

/// A real HTTP listener that records every POSTed body.
fn webhook_listener() -> (String, Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ =
                        tx.send(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

#[test]
fn thresholds_fire_once_ignore_blips_upgrade_resolve_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let (url, hook) = webhook_listener();
    let clock = ManualClock::new(T0 + 10 * HOUR_MS);
    let m = open(dir.path(), &clock, Some(&url));
    let t: Threshold = serde_json::from_value(serde_json::json!({
        "id": "slow-config", "namespace": "prod", "metric": "foundation.*",
        "kind": "latency", "aggregation": "p99", "op": "gt",
        "warning": 10000, "critical": 50000, "window": "minute", "for": "3m"
    }))
    .unwrap();
    m.put_threshold(t).unwrap();
    // One 5-second flush interval: 10 samples of `value`, flush (evaluates).
    let step = |value: f64| {
        clock.advance_ms(5_000);
        for i in 0..10 {
            rec(
                &m,
                "foundation.config.get",
                value,
                clock.now_ms() - i * 400,
                false,
            );
        }
        m.flush().unwrap();
    };
    let steps = |n: usize, value: f64| (0..n).for_each(|_| step(value));
    steps(36, 1_000.0); // 3 minutes of normal
    assert!(m.alerts(None).is_empty());
    // a 10-second blip: in the window for at most 2 minutes < for (3m)
    steps(2, 20_000.0);
    steps(48, 1_000.0);
    assert!(m.alerts(None).is_empty(), "a blip shorter than `for` fired");

    // sustained breach: fires exactly once
    steps(60, 20_000.0);
    let firing = m.alerts(Some(AlertState::Firing));
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].severity, Severity::Warning);
    let id = firing[0].id;
    // worse: upgraded in place, same alert
    steps(12, 60_000.0);
    let firing = m.alerts(Some(AlertState::Firing));
    assert_eq!(
        (firing.len(), firing[0].id, firing[0].severity),
        (1, id, Severity::Critical)
    );
    assert_eq!(m.performance_health("prod").unwrap().status, "unhealthy");
    // no samples at all: nothing changes
    for _ in 0..40 {
        clock.advance_ms(5_000);
        m.flush().unwrap();
    }
    assert_eq!(m.alerts(Some(AlertState::Firing)).len(), 1);
    // recovery resolves it
    steps(30, 1_000.0);
    let all = m.alerts(None);
    assert_eq!(all.len(), 1, "one alert per episode: {all:?}");
    assert_eq!(all[0].state, AlertState::Resolved);
    assert!(all[0].resolved_at.is_some());
    assert_eq!(m.performance_health("prod").unwrap().status, "healthy");

    // the webhook got firing, upgraded, resolved, in order (this monitor
    // runs no threads: its owner runs the woken delivery task)
    m.run_due_tasks();
    let events: Vec<String> = (0..3)
        .map(|_| {
            let v = hook
                .recv_timeout(Duration::from_secs(20))
                .expect("webhook call");
            assert_eq!(v["alert"]["id"], id);
            v["event"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(events, ["firing", "upgraded", "resolved"]);

    // thresholds and history survive a restart
    let thresholds = m.thresholds();
    m.close().unwrap();
    drop(m);
    let m = open(dir.path(), &clock, None);
    assert_eq!(m.thresholds(), thresholds);
    assert_eq!(m.alerts(None), all);

    // A second breach after the resolve is a new episode: a new alert,
    // which fires once and resolves in turn; the first stays resolved.
    let step = |value: f64| {
        clock.advance_ms(5_000);
        for i in 0..10 {
            rec(
                &m,
                "foundation.config.get",
                value,
                clock.now_ms() - i * 400,
                false,
            );
        }
        m.flush().unwrap();
    };
    (0..60).for_each(|_| step(20_000.0));
    let firing = m.alerts(Some(AlertState::Firing));
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_ne!(firing[0].id, id, "a new episode is a new alert");
    assert_eq!(firing[0].severity, Severity::Warning);
    let second = firing[0].id;
    (0..60).for_each(|_| step(20_000.0));
    assert_eq!(
        m.alerts(None).len(),
        2,
        "still one alert for the second episode"
    );
    (0..30).for_each(|_| step(1_000.0));
    let all = m.alerts(None);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().all(|a| a.state == AlertState::Resolved),
        "{all:?}"
    );
    assert!(all.iter().any(|a| a.id == id) && all.iter().any(|a| a.id == second));

    assert!(m.delete_threshold("slow-config").unwrap());
    assert!(!m.delete_threshold("slow-config").unwrap());
}

#[test]
fn a_dead_webhook_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // a port nobody listens on
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = ManualClock::new(T0);
    // Background tasks on: delivery runs on its own thread while the test
    // evaluates.
    let mut c = Config::with_data_dir(dir.path());
    c.alerts.webhook_url = Some(format!("http://127.0.0.1:{port}/hook"));
    c.alerts.webhook_timeout = Duration::from_secs(2);
    let m = Monitor::builder(c)
        .clock(std::sync::Arc::new(clock.clone()))
        .open()
        .unwrap();
    m.put_threshold(
        serde_json::from_value(serde_json::json!({
            "id": "any", "namespace": "prod", "metric": "*", "aggregation": "max",
            "op": "gt", "critical": 1
        }))
        .unwrap(),
    )
    .unwrap();
    for i in 0..200 {
        clock.advance_ms(1_000);
        rec(&m, &format!("m{}", i % 50), 5.0, clock.now_ms(), false);
        m.flush().unwrap();
    }
    assert_eq!(m.alerts(Some(AlertState::Firing)).len(), 50);
    // Each delivery retries with 0.5 + 1 + 2 s of backoff: had evaluation
    // waited for them, all 50 would have failed by now.
    let failed = m
        .alert_counters()
        .webhook_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        failed < 50,
        "evaluation waited for the webhook ({failed} failures already)"
    );
    // ...and delivery really was attempted (and failed) meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while failures(&m) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(failures(&m) >= 1, "the dead webhook was never tried");
    let delivery = m.tasks().into_iter().find(|t| t.name == "alert-delivery");
    assert!(
        delivery.is_some_and(|t| t.failures >= 1 && t.last_error.is_some()),
        "the delivery task reports its failure"
    );
}

fn failures(m: &Monitor) -> u64 {
    m.alert_counters()
        .webhook_failures
        .load(std::sync::atomic::Ordering::Relaxed)
}
