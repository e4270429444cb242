//! ServiceProtection end to end under tokio's paused clock: the breaker's
//! state machine, the limiter's rate over a simulated minute, the facade's
//! order and recording, the config tables, and the tower layer through a
//! real axum router.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use scopemon::HOUR_MS;
use scopemon::protection::{
    BreakerConfig, BreakerState, CallOptions, CircuitBreaker, Infrastructure, KeyedLimiter,
    ProtectionError, ProtectionLayer, RateLimit, ServiceProtection, Settings, SlidingWindow,
};
use scopemon::{Config, Kind, Monitor, QuerySpec, Tags, Window};
use tokio::time::advance;
use tower::ServiceExt;

fn monitor(dir: &std::path::Path) -> Arc<Monitor> {
    Arc::new(
        Monitor::builder(Config::with_data_dir(dir))
            .background(false)
            .open()
            .unwrap(),
    )
}

/// (count, errors) of a metric over the last and next hour.
fn recorded(m: &Monitor, metric: &str, tags: &[(&str, &str)]) -> (u64, u64) {
    let now = m.now_ms();
    let r = m
        .query(&QuerySpec {
            namespace: "test".into(),
            metric: metric.into(),
            kind: Kind::Latency,
            window: Window::Range,
            from: now - HOUR_MS,
            to: now + HOUR_MS,
            tags: Tags::new(tags).unwrap(),
        })
        .unwrap();
    r.points.first().map_or((0, 0), |p| (p.count, p.errors))
}

fn breaker(config: BreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new("test", config)
}

fn consecutive(n: u32, half_open_calls: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(n),
        minimum_calls: u32::MAX,
        half_open_calls,
        ..BreakerConfig::default()
    }
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire()
        .unwrap()
        .record(false, Duration::from_millis(1));
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire()
        .unwrap()
        .record(true, Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn breaker_trips_rejects_half_opens_and_closes() {
    let b = breaker(consecutive(3, 2));
    fail(&b);
    fail(&b);
    succeed(&b); // a success breaks the run
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.try_acquire().err(), Some(Duration::from_secs(30)));
    advance(Duration::from_secs(29)).await;
    assert_eq!(b.try_acquire().err(), Some(Duration::from_secs(1)));
    advance(Duration::from_secs(1)).await;
    // Two trial calls pass, a third waits for them.
    let t1 = b.try_acquire().unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let t2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    t1.record(true, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    t2.record(true, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Closed);
    let s = b.snapshot();
    assert_eq!((s.opened, s.half_opened, s.closed), (1, 1, 1));
    assert_eq!(s.rejections, 3);
    assert_eq!(s.calls, 8);
    assert_eq!(s.failures, 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_a_full_reset_timeout() {
    let b = breaker(consecutive(1, 1));
    fail(&b);
    advance(Duration::from_secs(30)).await;
    let trial = b.try_acquire().unwrap();
    advance(Duration::from_secs(3)).await;
    trial.record(false, Duration::from_secs(3));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.try_acquire().err(), Some(Duration::from_secs(30)));
    assert_eq!(b.snapshot().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_gives_its_slot_back() {
    let b = breaker(consecutive(1, 1));
    fail(&b);
    advance(Duration::from_secs(30)).await;
    drop(b.try_acquire().unwrap());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_result_from_before_a_transition_moves_nothing() {
    let b = breaker(consecutive(2, 1));
    let stale = b.try_acquire().unwrap();
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(30)).await;
    let trial = b.try_acquire().unwrap();
    stale.record(true, Duration::from_secs(1)); // admitted while closed
    assert_eq!(b.state(), BreakerState::HalfOpen);
    trial.record(true, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_needs_the_minimum_calls() {
    let b = breaker(BreakerConfig {
        consecutive_failures: None,
        failure_rate_threshold: 50.0,
        minimum_calls: 10,
        window: SlidingWindow::Time(Duration::from_secs(60)),
        ..BreakerConfig::default()
    });
    for i in 0..9 {
        if i % 2 == 0 { fail(&b) } else { succeed(&b) }
    }
    // 5 of 9 failed (56 %) but the window is short of 10 calls.
    assert_eq!(b.state(), BreakerState::Closed);
    assert!((b.snapshot().failure_rate - 500.0 / 9.0).abs() < 1e-9);
    // A minute later those calls have left the window.
    advance(Duration::from_secs(61)).await;
    for _ in 0..6 {
        succeed(&b);
    }
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b); // 4 of 10: 40 %
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b); // 5 of 11: 45 %
    fail(&b); // 6 of 12: 50 %
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window() {
    let b = breaker(BreakerConfig {
        consecutive_failures: None,
        failure_rate_threshold: 75.0,
        minimum_calls: 4,
        window: SlidingWindow::Count(4),
        ..BreakerConfig::default()
    });
    for ok in [false, false, true, true, false, true, false, true, false] {
        b.try_acquire().unwrap().record(ok, Duration::ZERO);
        assert_eq!(b.state(), BreakerState::Closed);
    }
    // The first two failures have left the window: the last four are
    // false, true, false + this failure = 3 of 4.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

fn infra_with(key: &str, settings: Settings, m: Option<Arc<Monitor>>) -> Infrastructure {
    let mut b = Infrastructure::builder().key(key, settings);
    if let Some(m) = m {
        b = b.monitor(m, "test");
    }
    b.build()
}

fn no_limit() -> Settings {
    Settings {
        rate_limit: None,
        ..Settings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn err_results_and_timeouts_count_as_failures() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let infra = infra_with("db.query", no_limit(), Some(m.clone()));
    let opts = CallOptions::DEFAULT;
    for _ in 0..4 {
        let r = infra
            .execute_protected("db.query", &opts, async { Err::<(), _>("down") })
            .await;
        assert!(matches!(r, Err(ProtectionError::Inner("down"))));
    }
    // The fifth failure, a timeout (5 s by default), trips the breaker.
    let r = infra
        .execute_protected("db.query", &opts, async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(r, Err(ProtectionError::Timeout)));
    assert_eq!(infra.breaker_state("db.query"), BreakerState::Open);
    let r = infra
        .execute_protected("db.query", &opts, async { Ok::<_, &str>(1) })
        .await;
    assert_eq!(r.unwrap_err().retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(recorded(&m, "db.query", &[]), (5, 5));
    assert_eq!(
        recorded(&m, "db.query.rejected", &[("reason", "circuit_open")]),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn slow_successes_trip_the_breaker_but_record_as_ok() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let mut s = no_limit();
    s.breaker.slow_call = Some(Duration::from_secs(1));
    s.breaker.consecutive_failures = Some(2);
    let infra = infra_with("slow", s, Some(m.clone()));
    for _ in 0..2 {
        let r = infra
            .execute_protected("slow", &CallOptions::DEFAULT, async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, ()>(7)
            })
            .await;
        assert_eq!(r.unwrap(), 7);
    }
    assert_eq!(infra.breaker_state("slow"), BreakerState::Open);
    assert_eq!(recorded(&m, "slow", &[]), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn the_limiter_admits_the_configured_rate_within_5_percent() {
    let l = KeyedLimiter::new(RateLimit::default()); // 100 per 60 s, burst 120
    let mut burst = 0;
    while l.check("client").is_ok() {
        burst += 1;
    }
    assert_eq!(burst, 120);
    let retry = l.check("client").unwrap_err();
    assert!(retry <= Duration::from_millis(600), "{retry:?}");
    // Another identifier has its own bucket.
    assert!(l.check("other").is_ok());
    // A simulated minute of attempts every 10 ms.
    let mut admitted = 0;
    for _ in 0..6_000 {
        advance(Duration::from_millis(10)).await;
        admitted += u32::from(l.check("client").is_ok());
    }
    assert!((95..=105).contains(&admitted), "{admitted} in a minute");
    let s = l.snapshot();
    assert_eq!(s.admitted, u64::from(120 + 1 + admitted));
    assert_eq!(s.tracked_identifiers, 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_says_when_to_retry_and_that_time_is_right() {
    let l = KeyedLimiter::new(RateLimit::new(10, Duration::from_secs(1), 1));
    l.check("").unwrap();
    let retry = l.check("").unwrap_err();
    assert_eq!(retry, Duration::from_millis(100));
    advance(retry - Duration::from_millis(1)).await;
    assert!(l.check("").is_err());
    advance(Duration::from_millis(1)).await;
    assert!(l.check("").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_call_never_reaches_the_breaker() {
    let settings = Settings {
        rate_limit: Some(RateLimit::new(1, Duration::from_secs(60), 1)),
        ..Settings::default()
    };
    let infra = infra_with("k", settings, None);
    let ran = Arc::new(AtomicUsize::new(0));
    let call = |ran: Arc<AtomicUsize>| async move {
        ran.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>("fails")
    };
    let first = infra
        .execute_protected("k", &CallOptions::DEFAULT, call(ran.clone()))
        .await;
    assert!(matches!(first, Err(ProtectionError::Inner(_))));
    for _ in 0..10 {
        let r = infra
            .execute_protected("k", &CallOptions::DEFAULT, call(ran.clone()))
            .await;
        assert!(matches!(r, Err(ProtectionError::RateLimited { .. })));
    }
    let snap = infra.snapshot();
    let k = &snap.keys[0];
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!((k.breaker.calls, k.breaker.failures), (1, 1));
    assert_eq!(k.breaker.state, BreakerState::Closed);
    let limiter = k.limiter.as_ref().unwrap();
    assert_eq!((limiter.admitted, limiter.rejections), (1, 10));
    // Another caller's bucket is full.
    let other = infra
        .execute_protected("k", &CallOptions::identifier("b"), call(ran.clone()))
        .await;
    assert!(matches!(other, Err(ProtectionError::Inner(_))));
}

#[tokio::test(start_paused = true)]
async fn the_memory_gate_comes_first_and_can_be_off_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let pressure = Arc::new(AtomicBool::new(true));
    let p = pressure.clone();
    let infra = Infrastructure::builder()
        .monitor(m.clone(), "test")
        .memory_gate(move || !p.load(Ordering::SeqCst))
        .key(
            "ungated",
            Settings {
                memory_gate: false,
                ..Settings::default()
            },
        )
        .build();
    let r = infra
        .execute_protected("gated", &CallOptions::DEFAULT, async { Ok::<_, ()>(1) })
        .await;
    assert!(matches!(r, Err(ProtectionError::MemoryPressure)));
    let r = infra
        .execute_protected("ungated", &CallOptions::DEFAULT, async { Ok::<_, ()>(2) })
        .await;
    assert_eq!(r.unwrap(), 2);
    let snap = infra.snapshot();
    assert!(!snap.memory_admits);
    let gated = snap.keys.iter().find(|k| k.key == "gated").unwrap();
    assert_eq!(gated.memory_rejections, 1);
    assert_eq!(gated.limiter.as_ref().unwrap().admitted, 0);
    assert_eq!(gated.breaker.calls, 0);
    pressure.store(false, Ordering::SeqCst);
    let r = infra
        .execute_protected("gated", &CallOptions::DEFAULT, async { Ok::<_, ()>(3) })
        .await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(
        recorded(&m, "gated.rejected", &[("reason", "memory_pressure")]),
        (1, 1)
    );
    assert_eq!(recorded(&m, "gated", &[]), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn transitions_reach_the_listener() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let infra = Infrastructure::builder()
        .key("k", no_limit())
        .on_transition(move |t| s.lock().unwrap().push((t.name.clone(), t.from, t.to)))
        .build();
    for _ in 0..5 {
        let _ = infra
            .execute_protected("k", &CallOptions::DEFAULT, async { Err::<(), _>(()) })
            .await;
    }
    advance(Duration::from_secs(30)).await;
    infra
        .execute_protected("k", &CallOptions::DEFAULT, async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    use BreakerState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("k".to_owned(), Closed, Open),
            ("k".to_owned(), Open, HalfOpen),
            ("k".to_owned(), HalfOpen, Closed)
        ]
    );
}

struct Payments {
    infra: Infrastructure,
}

impl ServiceProtection for Payments {
    fn infrastructure(&self) -> &Infrastructure {
        &self.infra
    }
}

impl Payments {
    async fn charge(&self, cents: u64) -> Result<u64, ProtectionError<String>> {
        self.protected_call("payments.charge", async move {
            if cents == 0 {
                Err("nothing to charge".to_owned())
            } else {
                Ok(cents)
            }
        })
        .await
    }
}

#[tokio::test]
async fn a_plain_struct_gets_protected_calls() {
    let p = Payments {
        infra: Infrastructure::builder().build(),
    };
    assert_eq!(p.charge(5).await.unwrap(), 5);
    let e = p.charge(0).await.unwrap_err();
    assert_eq!(e.code(), "inner");
    assert_eq!(e.to_string(), "nothing to charge");
    // The returned future is Send: it can be spawned.
    let p = Arc::new(p);
    let q = p.clone();
    assert_eq!(
        tokio::spawn(async move { q.charge(9).await })
            .await
            .unwrap()
            .unwrap(),
        9
    );
}

#[test]
fn protection_tables_lie_over_code_settings() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndata_dir = {:?}\n\n[protection.\"payments.charge\"]\ntimeout = \"0s\"\nrate_limit = 10\nwindow_calls = 20\nconsecutive_failures = 0\nslow_call = \"2s\"\nhalf_open_calls = 3\n\n[protection.\"db.query\"]\nburst = 7\n",
        dir.path().display().to_string()
    );
    let config = Config::from_toml(&text).unwrap();
    let m = Arc::new(Monitor::builder(config).background(false).open().unwrap());
    let infra = Infrastructure::for_monitor(m, "test");
    let s = infra.settings("payments.charge");
    assert_eq!(s.timeout, None);
    assert_eq!(
        s.rate_limit,
        Some(RateLimit::new(10, Duration::from_secs(60), 12))
    );
    assert_eq!(s.breaker.window, SlidingWindow::Count(20));
    assert_eq!(s.breaker.consecutive_failures, None);
    assert_eq!(s.breaker.slow_call, Some(Duration::from_secs(2)));
    assert_eq!(s.breaker.half_open_calls, 3);
    assert!(s.memory_gate);
    let d = infra.settings("db.query");
    assert_eq!(
        d.rate_limit,
        Some(RateLimit::new(100, Duration::from_secs(60), 7))
    );
    assert_eq!(infra.settings("other"), Settings::default());
    // Code settings are the base the file's keys replace.
    infra.configure("db.query", no_limit());
    assert_eq!(infra.settings("db.query").rate_limit, None);
    for bad in [
        "[protection.\"bad key\"]\ntimeout = \"1s\"",
        "[protection.k]\nfailure_rate_threshold = 150.0",
        "[protection.k]\nwindow = \"10s\"\nwindow_calls = 10",
        "[protection.k]\nhalf_open_calls = 0",
        "[protection.k]\nreset_timeout = \"0s\"",
        "[protection.k]\nbogus = 1",
    ] {
        assert!(Config::from_toml(bad).is_err(), "{bad}");
    }
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn json_body(r: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_layer_answers_503_and_429_with_retry_after() {
    let infra = Infrastructure::builder()
        .key("flaky", no_limit())
        .key(
            "limited",
            Settings {
                rate_limit: Some(RateLimit::new(1, Duration::from_secs(10), 2)),
                ..Settings::default()
            },
        )
        .build();
    let app = Router::new()
        .route(
            "/flaky",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route_layer(ProtectionLayer::new(infra.clone(), "flaky"))
        .merge(
            Router::new()
                .route("/limited", get(|| async { "ok" }))
                .route_layer(
                    ProtectionLayer::new(infra.clone(), "limited").identify(|parts| {
                        parts
                            .headers
                            .get("x-client")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    }),
                ),
        );
    for _ in 0..5 {
        let r = app.clone().oneshot(get_req("/flaky")).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let r = app.clone().oneshot(get_req("/flaky")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "30");
    assert_eq!(json_body(r).await["error"], "circuit_open");

    for _ in 0..2 {
        let r = app.clone().oneshot(get_req("/limited")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = app.clone().oneshot(get_req("/limited")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "10");
    let body = json_body(r).await;
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].is_string());
    // Another client has its own bucket.
    let mut req = get_req("/limited");
    req.headers_mut().insert("x-client", "b".parse().unwrap());
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_layer_times_out_slow_handlers() {
    let infra = infra_with(
        "slow",
        Settings {
            timeout: Some(Duration::from_secs(1)),
            ..no_limit()
        },
        None,
    );
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .layer(ProtectionLayer::new(infra, "slow"));
    let r = app.oneshot(get_req("/slow")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get(header::RETRY_AFTER).is_none());
    assert_eq!(json_body(r).await["error"], "timeout");
}

#[tokio::test(start_paused = true)]
async fn get_v1_protection_shows_every_breaker_and_limiter() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let infra = infra_with("db.query", Settings::default(), Some(m.clone()));
    for _ in 0..5 {
        let _ = infra
            .execute_protected("db.query", &CallOptions::DEFAULT, async {
                Err::<(), _>(())
            })
            .await;
    }
    let app = scopemon::router_with(scopemon::HealthAggregator::new(m), infra);
    let r = app.oneshot(get_req("/v1/protection")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_body(r).await;
    let b = &v["breakers"][0];
    assert_eq!(b["key"], "db.query");
    assert_eq!(b["state"], "open");
    assert_eq!(b["failure_rate"], 100.0);
    assert_eq!(b["calls"], 5);
    assert_eq!(b["rejections"], 0);
    assert_eq!(b["timeout"], "5s");
    let l = &v["limiters"][0];
    assert_eq!(l["key"], "db.query");
    assert_eq!(
        (l["rate"].as_u64(), l["burst"].as_u64()),
        (Some(100), Some(120))
    );
    assert_eq!(l["period"], "1m");
    assert_eq!(l["admitted"], 5);
    assert_eq!(v["memory_gate"]["admits"], true);
}

#[test]
fn the_shipped_protection_example_is_valid_when_uncommented() {
    let text = include_str!("../config/scopemon.toml");
    let start = text.find("# [protection.").unwrap();
    let uncommented: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml(&uncommented).unwrap();
    let p = &c.protection["payments.charge"];
    assert_eq!(p.rate_limit, Some(100));
    // The documented values are the built-in defaults.
    assert_eq!(Settings::default().overlay(p), Settings::default());
}

#[tokio::test(start_paused = true)]
async fn a_trial_call_dropped_mid_flight_frees_its_slot() {
    let mut s = no_limit();
    s.timeout = None;
    s.breaker.consecutive_failures = Some(1);
    let infra = infra_with("k", s, None);
    let fail = infra
        .execute_protected("k", &CallOptions::DEFAULT, async { Err::<(), _>(()) })
        .await;
    assert!(fail.is_err());
    advance(Duration::from_secs(30)).await;
    let i2 = infra.clone();
    let trial = tokio::spawn(async move {
        i2.execute_protected(
            "k",
            &CallOptions::DEFAULT,
            std::future::pending::<Result<(), ()>>(),
        )
        .await
    });
    tokio::task::yield_now().await;
    let r = infra
        .execute_protected("k", &CallOptions::DEFAULT, async { Ok::<_, ()>(()) })
        .await;
    assert!(
        matches!(r, Err(ProtectionError::CircuitOpen { .. })),
        "the slot is taken"
    );
    trial.abort();
    assert!(trial.await.unwrap_err().is_cancelled());
    infra
        .execute_protected("k", &CallOptions::DEFAULT, async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert_eq!(infra.breaker_state("k"), BreakerState::Closed);
}
