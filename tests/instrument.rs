//! ServiceInstrumentation end to end: the tower layer through a real axum
//! router (latency per route under tokio's paused clock), the tracing
//! layer (outcomes, filters, sampling honoured statistically), and
//! scopemon's own API measured and protected by them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use scopemon::HOUR_MS;
use scopemon::instrument::{
    INGEST_KEY, InstrumentationLayer, Sampling, SpanTimingLayer, instrument_router,
};
use scopemon::protection::{Infrastructure, Settings};
use scopemon::{Config, Kind, Monitor, Point, QuerySpec, Tags, Window};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

fn monitor(dir: &std::path::Path) -> Arc<Monitor> {
    Arc::new(
        Monitor::builder(Config::with_data_dir(dir))
            .background(false)
            .open()
            .unwrap(),
    )
}

/// The whole-range point of a metric over the last and next hour (`None`
/// when the metric has no series or no data).
fn point(m: &Monitor, ns: &str, metric: &str, tags: &[(&str, &str)]) -> Option<Point> {
    let now = m.now_ms();
    m.query(&QuerySpec {
        namespace: ns.into(),
        metric: metric.into(),
        kind: Kind::Latency,
        window: Window::Range,
        from: now - HOUR_MS,
        to: now + HOUR_MS,
        tags: Tags::new(tags).unwrap(),
    })
    .ok()?
    .points
    .into_iter()
    .next()
}

fn counts(m: &Monitor, ns: &str, metric: &str, tags: &[(&str, &str)]) -> (u64, u64) {
    point(m, ns, metric, tags).map_or((0, 0), |p| (p.count, p.errors))
}

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_layer_records_latency_and_outcome_per_route() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "user"
            }),
        )
        .route("/boom", post(|| async { StatusCode::BAD_GATEWAY }))
        .layer(InstrumentationLayer::new(m.clone(), "app"));
    for uri in ["/users/1", "/users/2", "/users/3", "/users/1"] {
        let r = app.clone().oneshot(req("GET", uri)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for _ in 0..2 {
        app.clone().oneshot(req("POST", "/boom")).await.unwrap();
    }
    app.clone().oneshot(req("GET", "/nope")).await.unwrap();
    let users = point(&m, "app", "http.request", &[("route", "/users/{id}")]).unwrap();
    assert_eq!((users.count, users.errors), (4, 0));
    // 50 ms of paused time, within the histogram's 1 %.
    assert!((users.p99 - 50_000.0).abs() <= 500.0, "{}", users.p99);
    let boom = [("route", "/boom"), ("method", "POST")];
    assert_eq!(counts(&m, "app", "http.request", &boom), (2, 2));
    assert_eq!(
        counts(&m, "app", "http.request", &[("route", "unmatched")]),
        (1, 0)
    );
    // Every series is named by its route template, never the raw path.
    assert_eq!(m.series(Some("app")).len(), 3);
}

#[tokio::test]
async fn a_plain_service_is_recorded_under_its_fallback_route() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let svc = tower::ServiceBuilder::new()
        .layer(
            InstrumentationLayer::new(m.clone(), "app")
                .metric("rpc")
                .fallback_route("echo"),
        )
        .service_fn(|r: Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(r.into_body()))
        });
    svc.oneshot(req("PUT", "/anything")).await.unwrap();
    assert_eq!(
        counts(&m, "app", "rpc", &[("route", "echo"), ("method", "PUT")]),
        (1, 0)
    );
}

#[tracing::instrument]
fn lookup(id: u32) -> u32 {
    id + 1
}

#[tracing::instrument(err)]
fn parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    s.parse()
}

#[test]
fn the_tracing_layer_records_closed_spans_with_their_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let subscriber = tracing_subscriber::registry().with(SpanTimingLayer::new(m.clone(), "spans"));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..3 {
            lookup(i);
        }
        parse("12").unwrap();
        parse("x").unwrap_err();
        let open = tracing::info_span!("never.closed");
        std::mem::forget(open);
    });
    let target = [("target", "instrument")];
    assert_eq!(counts(&m, "spans", "lookup", &target), (3, 0));
    assert_eq!(counts(&m, "spans", "parse", &target), (2, 1));
    assert_eq!(counts(&m, "spans", "never.closed", &[]), (0, 0));
}

/// Records `n` spans through `layer` and returns how many were recorded.
fn sampled(m: &Arc<Monitor>, ns: &str, layer: SpanTimingLayer, n: usize) -> u64 {
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..n {
            let _s = tracing::info_span!("work").entered();
        }
    });
    counts(m, ns, "work", &[]).0
}

#[test]
fn sampling_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let one_in = SpanTimingLayer::new(m.clone(), "one_in").sampling(Sampling::OneIn(10));
    assert_eq!(sampled(&m, "one_in", one_in, 10_000), 1_000);
    // Binomial(10,000, 0.1): mean 1,000, sd 30; allow 4 sd.
    let prob = |ns: &str, seed: u64| {
        let l = SpanTimingLayer::new(m.clone(), ns)
            .sampling(Sampling::Probability(0.1))
            .seed(seed);
        sampled(&m, ns, l, 10_000)
    };
    let a = prob("p_a", 7);
    assert!((880..=1_120).contains(&a), "{a}");
    assert_eq!(prob("p_b", 7), a, "the same seed gives the same sample");
    let c = prob("p_c", 8);
    assert!((880..=1_120).contains(&c), "{c}");
    let none = SpanTimingLayer::new(m.clone(), "none").sampling(Sampling::Probability(0.0));
    assert_eq!(sampled(&m, "none", none, 1_000), 0);
}

#[test]
fn target_level_and_field_filters_choose_spans() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let layer = SpanTimingLayer::new(m.clone(), "f")
        .targets(["billing"])
        .max_level(tracing::Level::INFO)
        .when_field("tenant", |v| v == "acme");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let spans = [
            tracing::info_span!(target: "billing::invoice", "op", tenant = "acme"),
            tracing::warn_span!(target: "billing", "op", tenant = "acme"),
            tracing::info_span!(target: "billing", "op", tenant = "other"),
            tracing::info_span!(target: "billing", "op"),
            tracing::debug_span!(target: "billing", "op", tenant = "acme"),
            tracing::info_span!(target: "shipping", "op", tenant = "acme"),
        ];
        drop(spans);
    });
    assert_eq!(counts(&m, "f", "op", &[]), (2, 0));
}

#[tokio::test]
async fn scopemon_measures_and_protects_its_own_api() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let infra = scopemon::instrument::daemon_infrastructure(&m);
    let app = instrument_router(
        scopemon::router_with(scopemon::HealthAggregator::new(m.clone()), infra.clone()),
        m.clone(),
        infra.clone(),
    );
    let body = r#"{"samples":[{"namespace":"prod","metric":"db.query","value":1500}]}"#;
    for _ in 0..3 {
        let r = app
            .clone()
            .oneshot(
                Request::post("/v1/ingest")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let r = app.clone().oneshot(req("GET", "/livez")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ingest = [("route", "/v1/ingest"), ("method", "POST")];
    assert_eq!(counts(&m, "scopemon", "http.request", &ingest), (3, 0));
    assert_eq!(
        counts(&m, "scopemon", "http.request", &[("route", "/livez")]),
        (1, 0)
    );
    assert_eq!(counts(&m, "scopemon", INGEST_KEY, &[]), (3, 0));
    let snap = infra.snapshot();
    let key = snap.keys.iter().find(|k| k.key == INGEST_KEY).unwrap();
    assert!(key.limiter.is_none(), "rate limit is off by default");
    assert!(key.memory_gate);
    assert_eq!(key.breaker.calls, 3);
    // Only the ingest route is protected.
    assert_eq!(snap.keys.len(), 1);
}

#[tokio::test]
async fn the_memory_gate_turns_ingest_away_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(dir.path());
    let pressure = Arc::new(AtomicBool::new(true));
    let p = pressure.clone();
    let infra = Infrastructure::builder()
        .monitor(m.clone(), "scopemon")
        .memory_gate(move || !p.load(Ordering::SeqCst))
        .key(
            INGEST_KEY,
            Settings {
                rate_limit: None,
                ..Settings::default()
            },
        )
        .build();
    let app = instrument_router(
        scopemon::router_with(scopemon::HealthAggregator::new(m.clone()), infra.clone()),
        m.clone(),
        infra,
    );
    let r = app
        .clone()
        .oneshot(
            Request::post("/v1/ingest")
                .body(Body::from(r#"{"samples":[]}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = app
        .clone()
        .oneshot(req("GET", "/v1/protection"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["memory_gate"]["admits"], false);
    assert_eq!(v["memory_gate"]["keys"][0]["rejections"], 1);
    // The rejection was measured by the outer instrumentation layer.
    let ingest = [("route", "/v1/ingest")];
    assert_eq!(counts(&m, "scopemon", "http.request", &ingest), (1, 1));
    pressure.store(false, Ordering::SeqCst);
}
