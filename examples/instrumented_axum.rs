//! An axum app measured by both layers: `InstrumentationLayer` records
//! every request per route, `SpanTimingLayer` every `#[instrument]`ed
//! function, `ProtectionLayer` guards the API. The example serves on
//! 127.0.0.1:0, drives 200 requests at itself, then prints each route's
//! p99 from the store (a temp dir).
//!
//! `cargo run --example instrumented_axum` (about a second).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use scopemon::HOUR_MS;
use scopemon::protection::{Infrastructure, Settings};
use scopemon::{
    Config, InstrumentationLayer, Kind, Monitor, ProtectionLayer, QuerySpec, SpanTimingLayer, Tags,
    Window,
};
use tracing_subscriber::layer::SubscriberExt;

const REQUESTS: u32 = 200;

#[tracing::instrument]
async fn load_order(id: u32) -> String {
    // 1 to 4 ms of "database".
    tokio::time::sleep(Duration::from_millis(1 + u64::from(id % 4))).await;
    format!("order {id}")
}

async fn order(Path(id): Path<u32>) -> String {
    load_order(id).await
}

fn p99(monitor: &Monitor, metric: &str, tags: &[(&str, &str)]) -> Option<(u64, f64)> {
    let now = monitor.now_ms();
    let spec = QuerySpec {
        namespace: "demo".into(),
        metric: metric.into(),
        kind: Kind::Latency,
        window: Window::Range,
        from: now - HOUR_MS,
        to: now + HOUR_MS,
        tags: Tags::new(tags).ok()?,
    };
    let p = monitor.query(&spec).ok()?.points.into_iter().next()?;
    Some((p.count, p.p99))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let monitor = Arc::new(Monitor::open(Config::with_data_dir(dir.path()))?);
    let subscriber =
        tracing_subscriber::registry().with(SpanTimingLayer::new(monitor.clone(), "demo"));
    tracing::subscriber::set_global_default(subscriber)?;

    let infra = Infrastructure::builder()
        .monitor(monitor.clone(), "demo")
        .key(
            "demo.api",
            Settings {
                rate_limit: None,
                ..Settings::default()
            },
        )
        .build();
    let app = Router::new()
        .route("/orders/{id}", get(order))
        .route("/health", get(|| async { "OK" }))
        .layer(ProtectionLayer::new(infra, "demo.api"))
        .layer(InstrumentationLayer::new(monitor.clone(), "demo"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on http://{addr}; sending {REQUESTS} requests");

    let client = tokio::task::spawn_blocking(move || -> Result<(), ureq::Error> {
        let agent = ureq::Agent::new_with_defaults();
        for i in 0..REQUESTS {
            let path = if i % 10 == 0 {
                "/health".to_owned()
            } else {
                format!("/orders/{i}")
            };
            agent.get(&format!("http://{addr}{path}")).call()?;
        }
        Ok(())
    });
    client.await??;
    let _ = stop.send(());
    server.await??;

    for (label, metric, tags) in [
        (
            "GET /orders/{id}",
            "http.request",
            vec![("route", "/orders/{id}")],
        ),
        ("GET /health", "http.request", vec![("route", "/health")]),
        ("span load_order", "load_order", vec![]),
        ("protected demo.api", "demo.api", vec![]),
    ] {
        let Some((count, p99)) = p99(&monitor, metric, &tags) else {
            return Err(format!("nothing recorded for {label}").into());
        };
        println!("{label:<20} {count:>4} calls, p99 {:>7.2} ms", p99 / 1e3);
    }
    monitor.close()?;
    Ok(())
}
