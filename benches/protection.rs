//! Added cost per call of ServiceProtection and ServiceInstrumentation,
//! each beside the bare call it wraps, in one run:
//! - tower: a bare `service_fn`, the same behind `InstrumentationLayer`,
//!   behind `ProtectionLayer` (everything closed), and behind a plain
//!   `tower::ServiceBuilder` with `tower::limit` (concurrency + rate) and
//!   `tower::timeout`;
//! - facade: a bare `async` call against `execute_protected` (and the
//!   same through a pre-resolved `Protection`) with the memory gate, a
//!   rate limiter that never refuses, a closed breaker, a 5 s timeout and
//!   recording all on;
//! - clock: `Instant::now()` (std, and tokio's as the layers read it): every
//!   measured call reads the clock twice, the facade three times.
//! - tracing: entering and closing a span under a bare `Registry` against
//!   the same with `SpanTimingLayer` (every span, and 1 in 10).
//!
//! Targets (added over the bare line): instrumentation ≤ 100 ns, span
//! ≤ 150 ns, facade ≤ 300 ns.
//!
//! Run: `cargo bench --bench protection -- --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use criterion::{Criterion, criterion_group, criterion_main};
use scopemon::DAY_MS;
use scopemon::instrument::{InstrumentationLayer, Sampling, SpanTimingLayer};
use scopemon::protection::{CallOptions, Infrastructure, ProtectionLayer, RateLimit, Settings};
use scopemon::{Config, ManualClock, Monitor};
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 5 * 3_600_000 + 7_000;

struct Env {
    _dir: tempfile::TempDir,
    monitor: Arc<Monitor>,
    rt: tokio::runtime::Runtime,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let monitor = Monitor::builder(Config::with_data_dir(dir.path()))
        .clock(Arc::new(ManualClock::new(T0)))
        .background(false)
        .open()
        .expect("open monitor");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    Env {
        _dir: dir,
        monitor: Arc::new(monitor),
        rt,
    }
}

/// Every protection on, none refusing: a limiter of a billion calls a
/// second, the default breaker, a 5 s timeout, the (admitting) memory gate.
fn all_closed(env: &Env) -> Infrastructure {
    let settings = Settings {
        rate_limit: Some(RateLimit::new(
            1_000_000_000,
            Duration::from_secs(1),
            1_000_000_000,
        )),
        ..Settings::default()
    };
    Infrastructure::builder()
        .monitor(env.monitor.clone(), "bench")
        .key("bench.op", settings)
        .build()
}

/// Mean time of one request through `svc`, measured over `iters` calls.
fn drive<S>(rt: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let r = svc.ready().await.expect("ready");
            black_box(r.call(Request::new(Body::empty())).await.expect("call"));
        }
        start.elapsed()
    })
}

async fn ok(_: Request<Body>) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(Response::new(Body::empty()))
}

fn tower_layers(c: &mut Criterion) {
    let env = env();
    let mut g = c.benchmark_group("tower");
    g.bench_function("bare", |b| {
        let mut svc = tower::service_fn(ok);
        b.iter_custom(|n| drive(&env.rt, &mut svc, n));
    });
    g.bench_function("instrumentation_layer", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(InstrumentationLayer::new(env.monitor.clone(), "bench"))
            .service_fn(ok);
        b.iter_custom(|n| drive(&env.rt, &mut svc, n));
    });
    g.bench_function("protection_layer", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(ProtectionLayer::new(all_closed(&env), "bench.op"))
            .service_fn(ok);
        b.iter_custom(|n| drive(&env.rt, &mut svc, n));
    });
    g.bench_function("tower_limit_timeout", |b| {
        let mut svc = env.rt.block_on(async {
            ServiceBuilder::new()
                .concurrency_limit(1_024)
                .rate_limit(1_000_000_000, Duration::from_secs(1))
                .timeout(Duration::from_secs(5))
                .service_fn(ok)
        });
        b.iter_custom(|n| drive(&env.rt, &mut svc, n));
    });
    g.finish();
}

fn facade(c: &mut Criterion) {
    let env = env();
    let infra = all_closed(&env);
    let mut g = c.benchmark_group("facade");
    g.bench_function("bare", |b| {
        b.iter_custom(|n| {
            env.rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let r: Result<u64, ()> = async { Ok(black_box(i)) }.await;
                    black_box(r).ok();
                }
                start.elapsed()
            })
        });
    });
    g.bench_function("execute_protected", |b| {
        b.iter_custom(|n| {
            env.rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let r = infra
                        .execute_protected("bench.op", &CallOptions::DEFAULT, async {
                            Ok::<_, ()>(black_box(i))
                        })
                        .await;
                    black_box(r).ok();
                }
                start.elapsed()
            })
        });
    });
    g.bench_function("protection_handle", |b| {
        let p = infra.protection("bench.op");
        b.iter_custom(|n| {
            env.rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let r = p
                        .execute(&CallOptions::DEFAULT, async { Ok::<_, ()>(black_box(i)) })
                        .await;
                    black_box(r).ok();
                }
                start.elapsed()
            })
        });
    });
    g.finish();
}

fn spans(c: &mut Criterion) {
    let env = env();
    let mut g = c.benchmark_group("tracing");
    let bare = tracing::Dispatch::new(tracing_subscriber::registry());
    let all = tracing::Dispatch::new(
        tracing_subscriber::registry().with(SpanTimingLayer::new(env.monitor.clone(), "bench")),
    );
    let tenth = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(SpanTimingLayer::new(env.monitor.clone(), "bench").sampling(Sampling::OneIn(10))),
    );
    for (name, dispatch) in [
        ("registry_span", &bare),
        ("span_timing_layer", &all),
        ("span_timing_layer_1_in_10", &tenth),
    ] {
        g.bench_function(name, |b| {
            tracing::dispatcher::with_default(dispatch, || {
                b.iter(|| {
                    let span = tracing::info_span!("bench.span");
                    let _entered = black_box(span.enter());
                });
            });
        });
    }
    g.finish();
}

fn clocks(c: &mut Criterion) {
    let env = env();
    let mut g = c.benchmark_group("clock");
    g.bench_function("std_instant_now", |b| b.iter(|| black_box(Instant::now())));
    g.bench_function("tokio_instant_now_in_runtime", |b| {
        let _guard = env.rt.enter();
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = clocks, tower_layers, facade, spans
}
criterion_main!(benches);
