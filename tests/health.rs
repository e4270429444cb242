//! The health aggregator through its library API and its HTTP endpoints
//! (in process, no network): aggregation rules and score, a hung check
//! timing out without holding up the others (tokio paused time), TTL
//! expiry and heartbeats, registrations surviving a restart, bad
//! registrations refused, `/health` before and after the first round, and
//! `/health/quick` in both shapes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use scopemon::{
    CheckFuture, CheckResult, HealthAggregator, HealthCheck, HealthStatus, ManualClock, Monitor,
};
use serde_json::Value;

/// A check answering whatever the test last set.
#[derive(Clone)]
struct Fixed {
    name: &'static str,
    critical: bool,
    weight: f64,
    now: Arc<Mutex<CheckResult>>,
    runs: Arc<AtomicU64>,
}

impl Fixed {
    fn new(name: &'static str, critical: bool, weight: f64, r: CheckResult) -> Fixed {
        Fixed {
            name,
            critical,
            weight,
            now: Arc::new(Mutex::new(r)),
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    fn set(&self, r: CheckResult) {
        *self.now.lock() = r;
    }
}

impl HealthCheck for Fixed {
    fn name(&self) -> &str {
        self.name
    }
    fn critical(&self) -> bool {
        self.critical
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
    fn check(&self) -> CheckFuture<'_> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let r = self.now.lock().clone();
        Box::pin(async move { r })
    }
}

/// A check that never answers.
struct Hang;

impl HealthCheck for Hang {
    fn name(&self) -> &str {
        "slow:hang"
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(2))
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(std::future::pending())
    }
}

/// A check that answers once the test opens the gate.
struct Gate(Arc<tokio::sync::Notify>);

impl HealthCheck for Gate {
    fn name(&self) -> &str {
        "gate:open"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            self.0.notified().await;
            CheckResult::healthy("open")
        })
    }
}

fn monitor(dir: &std::path::Path) -> Arc<Monitor> {
    Arc::new(common::open(dir, &ManualClock::new(common::T0)))
}

/// Yields (no time passes) until `cond` holds; bounded.
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn status_follows_critical_checks_and_score_is_the_weighted_mean() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let a = Fixed::new("a:crit", true, 1.0, CheckResult::healthy(""));
    let b = Fixed::new("b:heavy", false, 2.0, CheckResult::degraded("slow"));
    let c = Fixed::new("c:light", false, 1.0, CheckResult::unhealthy("down"));
    for f in [&a, &b, &c] {
        h.register(f.clone()).unwrap();
    }
    h.start().await.unwrap();
    h.wait_ready().await;
    let s = h.system_health();
    assert_eq!(
        s.status,
        HealthStatus::Degraded,
        "non-critical failures only"
    );
    assert!(
        (s.score - 0.5).abs() < 1e-9,
        "(1 + 2*0.5 + 0) / 4: {}",
        s.score
    );
    assert_eq!((s.healthy, s.total), (1, 3));
    assert!(h.quick_health().ok, "degraded keeps taking traffic");

    a.set(CheckResult::unhealthy("store gone"));
    let s = h.fresh_system_health().await;
    assert_eq!(s.status, HealthStatus::Unhealthy, "a critical check failed");
    assert!((s.score - 0.25).abs() < 1e-9, "{}", s.score);
    assert!(!h.quick_health().ok);
    let app = scopemon::router(h.clone());
    let (st, ctype, body) = common::call(&app, "GET", "/health", "", None).await;
    let doc = json(&body);
    assert_eq!((st, ctype.as_str()), (503, "application/health+json"));
    assert_eq!(doc["status"], "fail", "{doc}");
    assert_eq!(doc["health"], "unhealthy");
    assert_eq!(
        (
            doc["healthy_services"].as_u64(),
            doc["total_services"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert_eq!(doc["checks"]["a:crit"][0]["output"], "store gone");
    assert_eq!(doc["checks"]["a:crit"][0]["critical"], true);

    let history = h.history();
    let system: Vec<_> = history.iter().filter(|c| c.check.is_none()).collect();
    assert_eq!(system.last().map(|c| c.to), Some(HealthStatus::Unhealthy));
    assert!(
        history
            .iter()
            .any(|c| c.check.as_deref() == Some("a:crit") && c.from == Some(HealthStatus::Healthy)),
        "{history:?}"
    );
    // Every run is scopemon's own series: status and duration per check.
    let own = h.monitor().series(Some("scopemon"));
    for metric in ["health.check.status", "health.check.duration"] {
        assert!(
            own.iter()
                .any(|s| s.metric == metric && s.tags.get("check").is_some_and(|c| c == "a:crit")),
            "{metric} missing: {own:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_check_times_out_without_holding_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let quick = Fixed::new("fast:ok", true, 1.0, CheckResult::healthy(""));
    h.register(quick.clone()).unwrap();
    h.register(Hang).unwrap();
    let t0 = tokio::time::Instant::now();
    h.start().await.unwrap();
    until(|| quick.runs.load(Ordering::SeqCst) >= 1).await;
    assert!(!h.is_ready(), "the hung check is still pending");
    let pending = h.system_health();
    assert_eq!(pending.status, HealthStatus::Degraded);

    // Nothing else to do: paused time jumps to each timer in turn.
    h.wait_ready().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(2), "ready at the timeout");
    assert!(
        quick.runs.load(Ordering::SeqCst) >= 2,
        "the fast check kept its 1 s interval meanwhile"
    );
    let s = h.system_health();
    let hang = s.checks.iter().find(|c| c.name == "slow:hang").unwrap();
    let r = hang.result.as_ref().unwrap();
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert_eq!(r.message, "no answer within the 2s timeout");
    assert_eq!(hang.duration, Duration::from_secs(2));
    assert_eq!(s.status, HealthStatus::Degraded, "not critical");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_ttl_service_expires_without_heartbeats_and_recovers_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let app = scopemon::router(h.clone());
    h.start().await.unwrap();
    let reg = r#"{"name": "beat", "critical": true,
        "check": {"type": "ttl", "ttl": "5s", "interval": "1s"}}"#;
    let (st, _, body) = common::call(&app, "POST", "/v1/services", reg, None).await;
    assert_eq!(st, 201, "{body}");
    let status = |h: &HealthAggregator| h.services()[0].status;
    until(|| status(&h).is_some()).await;
    assert_eq!(status(&h), Some(HealthStatus::Healthy), "one ttl of grace");

    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert_eq!(status(&h), Some(HealthStatus::Unhealthy));
    assert_eq!(h.services()[0].output, "no heartbeat within the 5s ttl");
    assert!(!h.quick_health().ok, "a critical service expired");

    let (st, _, body) = common::call(&app, "POST", "/v1/services/beat/heartbeat", "", None).await;
    assert_eq!(st, 200, "{body}");
    until(|| status(&h) == Some(HealthStatus::Healthy)).await;
    assert!(h.quick_health().ok);

    let (st, _, body) = common::call(&app, "POST", "/v1/services/nope/heartbeat", "", None).await;
    assert_eq!(
        (st, json(&body)["error"].as_str()),
        (404, Some("not_found"))
    );
    h.stop().await;
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let regs = [
        r#"{"name": "web", "check": {"type": "http", "url": "http://127.0.0.1:9/health", "interval": "90s", "timeout": "2s"}}"#,
        r#"{"name": "db", "critical": true, "check": {"type": "tcp", "addr": "127.0.0.1:9"}}"#,
        r#"{"name": "job", "check": {"type": "ttl", "ttl": "30s"}}"#,
    ];
    let listed = {
        let h = HealthAggregator::new(monitor(dir.path()));
        h.start().await.unwrap();
        let app = scopemon::router(h.clone());
        for r in regs {
            let (st, _, body) = common::call(&app, "POST", "/v1/services", r, None).await;
            assert_eq!(st, 201, "{body}");
        }
        let (st, _, del) = common::call(&app, "DELETE", "/v1/services/web", "", None).await;
        assert_eq!(st, 200, "{del}");
        let (_, _, body) = common::call(&app, "POST", "/v1/services", regs[0], None).await;
        assert_eq!(json(&body)["check"]["interval"], "90s", "{body}");
        let (_, _, body) = common::call(&app, "GET", "/v1/services", "", None).await;
        h.stop().await;
        json(&body)["services"].clone()
    };
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    // Normalised: defaults filled in, durations in the house format.
    let db = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db");
    assert_eq!(db.unwrap()["check"]["interval"], "10s", "{listed}");
    assert_eq!(db.unwrap()["check"]["timeout"], "5s", "{listed}");

    let h = HealthAggregator::new(monitor(dir.path()));
    h.start().await.unwrap();
    let again: Vec<_> = h.services().into_iter().map(|s| s.registration).collect();
    let before: Vec<scopemon::ServiceRegistration> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let o = s.as_object_mut().unwrap();
            o.remove("status");
            o.remove("output");
            serde_json::from_value(s).unwrap()
        })
        .collect();
    assert_eq!(again, before);
    assert!(
        h.system_health()
            .checks
            .iter()
            .any(|c| c.name == "service:db" && c.critical),
        "the restored services are checked again"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_400_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let app = scopemon::router(h.clone());
    for (body, says) in [
        (
            r#"{"name": "x", "check": {"type": "dns"}}"#,
            "not one of http, tcp, ttl",
        ),
        (
            r#"{"name": "x", "check": {"type": "http", "url": "not a url"}}"#,
            "is not a URL",
        ),
        (
            r#"{"name": "x", "check": {"type": "http", "url": "https://a/"}}"#,
            "no TLS",
        ),
        (
            r#"{"name": "x", "check": {"type": "http"}}"#,
            "needs check.url",
        ),
        (
            r#"{"name": "x", "check": {"type": "tcp", "addr": "localhost"}}"#,
            "host:port",
        ),
        (
            r#"{"name": "x", "check": {"type": "tcp", "addr": "a:1", "interval": "0s"}}"#,
            "must be > 0",
        ),
        (
            r#"{"name": "x", "check": {"type": "tcp", "addr": "a:1", "interval": "often"}}"#,
            "not a duration",
        ),
        (
            r#"{"name": "x", "check": {"type": "ttl", "ttl": "5s", "url": "http://a/"}}"#,
            "does not apply",
        ),
        (
            r#"{"name": "a/b", "check": {"type": "ttl", "ttl": "5s"}}"#,
            "service name",
        ),
        (
            r#"{"name": "x", "check": {"type": "ttl", "ttl": "5s"}, "extra": 1}"#,
            "unknown field",
        ),
        ("not json", "not a service registration"),
    ] {
        let (st, ctype, text) = common::call(&app, "POST", "/v1/services", body, None).await;
        let err = json(&text);
        assert_eq!(
            (st, ctype.as_str()),
            (400, "application/json"),
            "{body}: {text}"
        );
        assert_eq!(err["error"], "invalid_parameter", "{body}: {text}");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    assert!(h.services().is_empty());
    let (st, _, _) = common::call(&app, "DELETE", "/v1/services/none", "", None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn health_answers_warn_with_pending_checks_until_the_first_round_completes() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let gate = Arc::new(tokio::sync::Notify::new());
    let ok = Fixed::new("fast:ok", true, 1.0, CheckResult::healthy(""));
    h.register(ok.clone()).unwrap();
    h.register(Gate(gate.clone())).unwrap();
    let app = scopemon::router(h.clone());
    h.start().await.unwrap();
    until(|| ok.runs.load(Ordering::SeqCst) >= 1 && h.system_health().healthy == 1).await;

    let (st, ctype, body) = common::call(&app, "GET", "/health", "", None).await;
    let doc = json(&body);
    assert_eq!((st, ctype.as_str()), (200, "application/health+json"));
    assert_eq!(
        (doc["status"].as_str(), doc["ready"].as_bool()),
        (Some("warn"), Some(false))
    );
    let pending = &doc["checks"]["gate:open"][0];
    assert_eq!(
        (pending["status"].as_str(), pending["output"].as_str()),
        (Some("warn"), Some("pending"))
    );
    assert_eq!(doc["checks"]["fast:ok"][0]["status"], "pass");
    let (st, _, body) = common::call(&app, "GET", "/readyz", "", None).await;
    assert_eq!((st, body.as_str()), (503, "NOT_READY"));

    gate.notify_one();
    h.wait_ready().await;
    let (st, _, body) = common::call(&app, "GET", "/health", "", None).await;
    let doc = json(&body);
    assert_eq!((st, doc["status"].as_str()), (200, Some("pass")), "{doc}");
    assert_eq!(doc["overall_score"], 1.0);
    assert_eq!(
        (
            doc["healthy_services"].as_u64(),
            doc["total_services"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let check = &doc["checks"]["fast:ok"][0];
    for field in ["componentType", "time", "duration_ms", "critical", "output"] {
        assert!(check.get(field).is_some(), "{field} missing: {check}");
    }
    let (st, _, body) = common::call(&app, "GET", "/readyz", "", None).await;
    assert_eq!((st, body.as_str()), (200, "OK"));
    let (st, _, _) = common::call(&app, "GET", "/health?fresh=maybe", "", None).await;
    assert_eq!(st, 400, "strict parameters");
    h.stop().await;
}

#[tokio::test]
async fn fresh_re_runs_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let f = Fixed::new("f:x", false, 1.0, CheckResult::healthy(""));
    h.register(f.clone()).unwrap();
    let app = scopemon::router(h.clone());
    h.start().await.unwrap();
    h.wait_ready().await;
    f.set(CheckResult::degraded("now slow"));
    let (st, _, body) = common::call(&app, "GET", "/health?fresh=true", "", None).await;
    let doc = json(&body);
    assert_eq!((st, doc["status"].as_str()), (200, Some("warn")), "{doc}");
    assert_eq!(doc["checks"]["f:x"][0]["output"], "now slow");
    h.stop().await;
}

#[tokio::test]
async fn quick_answers_plain_or_json_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    let crit = Fixed::new("c:x", true, 1.0, CheckResult::healthy(""));
    h.register(crit.clone()).unwrap();
    let app = scopemon::router(h.clone());
    h.start().await.unwrap();
    h.wait_ready().await;
    let plain = common::call(&app, "GET", "/health/quick", "", None).await;
    assert_eq!((plain.0, plain.2.as_str()), (200, "OK"));
    let (st, ctype, body) =
        common::call(&app, "GET", "/health/quick", "", Some("application/json")).await;
    let q = json(&body);
    assert_eq!((st, ctype.as_str()), (200, "application/json"));
    assert_eq!(
        (
            q["status"].as_str(),
            q["healthy"].as_u64(),
            q["total"].as_u64()
        ),
        (Some("pass"), Some(1), Some(1))
    );
    assert!(
        q["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{q}"
    );

    crit.set(CheckResult::degraded("slow"));
    h.fresh_system_health().await;
    let (st, _, body) =
        common::call(&app, "GET", "/health/quick", "", Some("application/json")).await;
    let q = json(&body);
    assert_eq!(
        (st, q["status"].as_str(), q["healthy"].as_u64()),
        (200, Some("pass"), Some(1)),
        "degraded still takes traffic, like the plain OK"
    );

    crit.set(CheckResult::unhealthy("down"));
    h.fresh_system_health().await;
    let plain = common::call(&app, "GET", "/health/quick", "", None).await;
    assert_eq!((plain.0, plain.2.as_str()), (503, "NOT_OK"));
    let (st, _, body) =
        common::call(&app, "GET", "/health/quick", "", Some("application/json")).await;
    let q = json(&body);
    assert_eq!(
        (st, q["status"].as_str(), q["healthy"].as_u64()),
        (503, Some("fail"), Some(0))
    );
    h.stop().await;
}

#[tokio::test]
async fn the_builtin_checks_judge_a_fresh_store_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::with_builtin_checks(monitor(dir.path()));
    h.start().await.unwrap();
    h.wait_ready().await;
    let s = h.system_health();
    let names: Vec<&str> = s.checks.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "store:writable",
        "store:flush",
        "disk:data_dir",
        "alerts:firing",
        "memory:pressure",
        "task:flush",
    ] {
        assert!(names.contains(&n), "{n} missing: {names:?}");
    }
    let critical: Vec<&str> = s
        .checks
        .iter()
        .filter(|c| c.critical)
        .map(|c| c.name.as_str())
        .collect();
    // The memory manager's check is critical since it landed (issue 10).
    assert_eq!(
        critical,
        ["memory:pressure", "store:flush", "store:writable"]
    );
    let writable = s
        .checks
        .iter()
        .find(|c| c.name == "store:writable")
        .unwrap();
    assert_eq!(
        writable.result.as_ref().unwrap().status,
        HealthStatus::Healthy,
        "{writable:?}"
    );
    assert_ne!(s.status, HealthStatus::Unhealthy, "{s:?}");
    h.stop().await;
}

#[tokio::test]
async fn http_and_tcp_services_are_judged_by_their_answers() {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = axum::Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/bad",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no") }),
        );
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let h = HealthAggregator::new(monitor(dir.path()));
    h.start().await.unwrap();
    let app = scopemon::router(h.clone());
    for (name, check) in [
        (
            "ok",
            format!(r#"{{"type": "http", "url": "http://{addr}/ok"}}"#),
        ),
        (
            "bad",
            format!(r#"{{"type": "http", "url": "http://{addr}/bad"}}"#),
        ),
        ("open", format!(r#"{{"type": "tcp", "addr": "{addr}"}}"#)),
        (
            "shut",
            format!(r#"{{"type": "tcp", "addr": "127.0.0.1:{closed}"}}"#),
        ),
    ] {
        let body = format!(r#"{{"name": "{name}", "check": {check}}}"#);
        let (st, _, text) = common::call(&app, "POST", "/v1/services", &body, None).await;
        assert_eq!(st, 201, "{text}");
    }
    let s = h.fresh_system_health().await;
    let status = |n: &str| {
        let c = s.checks.iter().find(|c| c.name == n).unwrap();
        c.result.as_ref().map(|r| (r.status, r.message.clone()))
    };
    assert_eq!(
        status("service:ok").map(|r| r.0),
        Some(HealthStatus::Healthy)
    );
    assert_eq!(
        status("service:open").map(|r| r.0),
        Some(HealthStatus::Healthy)
    );
    let (st, msg) = status("service:bad").unwrap();
    assert_eq!(st, HealthStatus::Unhealthy);
    assert!(msg.contains("answered 503"), "{msg}");
    let (st, msg) = status("service:shut").unwrap();
    assert_eq!(st, HealthStatus::Unhealthy);
    assert!(msg.contains("cannot connect"), "{msg}");
    assert_eq!(s.status, HealthStatus::Degraded, "none of them is critical");
    h.stop().await;
}
