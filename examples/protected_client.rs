//! A flaky operation behind `Infrastructure::execute_protected`: the
//! breaker opens after three failures, rejects while open, re-opens on a
//! failed trial, and closes once the operation recovers. Every call (and
//! every rejection) is recorded into a monitor in a temp dir.
//!
//! `cargo run --example protected_client` (about half a second; exits
//! non-zero if the breaker does not behave as printed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use scopemon::HOUR_MS;
use scopemon::protection::{BreakerConfig, CallOptions, Infrastructure, ProtectionError, Settings};
use scopemon::{Config, Kind, Monitor, QuerySpec, Tags, Window};

/// Fails its first `failures` calls, then succeeds.
struct Flaky {
    calls: AtomicU32,
    failures: u32,
}

impl Flaky {
    async fn fetch(&self) -> Result<&'static str, String> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if n < self.failures {
            Err(format!("upstream error #{}", n + 1))
        } else {
            Ok("payload")
        }
    }
}

async fn call(infra: &Infrastructure, flaky: &Flaky, label: &str) -> &'static str {
    let r = infra
        .execute_protected("upstream.fetch", &CallOptions::DEFAULT, flaky.fetch())
        .await;
    let (outcome, code) = match &r {
        Ok(v) => (format!("ok: {v}"), "ok"),
        Err(ProtectionError::CircuitOpen { retry_after }) => (
            format!("rejected, circuit open (retry after {retry_after:.0?})"),
            "circuit_open",
        ),
        Err(e) => (format!("failed: {e}"), e.code()),
    };
    println!("{label:<22} {outcome}");
    code
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let monitor = Arc::new(Monitor::open(Config::with_data_dir(dir.path()))?);
    let settings = Settings {
        rate_limit: None,
        timeout: Some(Duration::from_secs(1)),
        breaker: BreakerConfig {
            consecutive_failures: Some(3),
            reset_timeout: Duration::from_millis(200),
            ..BreakerConfig::default()
        },
        memory_gate: true,
    };
    let infra = Infrastructure::builder()
        .monitor(monitor.clone(), "example")
        .key("upstream.fetch", settings)
        .on_transition(|t| {
            println!(
                "  >> breaker {}: {} -> {}",
                t.name,
                t.from.as_str(),
                t.to.as_str()
            )
        })
        .build();
    let flaky = Flaky {
        calls: AtomicU32::new(0),
        failures: 4,
    };

    let mut codes = Vec::new();
    for i in 1..=3 {
        codes.push(call(&infra, &flaky, &format!("call {i}")).await);
    }
    for i in 4..=5 {
        codes.push(call(&infra, &flaky, &format!("call {i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    codes.push(call(&infra, &flaky, "trial (still failing)").await);
    tokio::time::sleep(Duration::from_millis(250)).await;
    codes.push(call(&infra, &flaky, "trial (recovered)").await);
    for i in 8..=10 {
        codes.push(call(&infra, &flaky, &format!("call {i}")).await);
    }

    let snap = infra.snapshot();
    let b = &snap.keys[0].breaker;
    println!(
        "\nbreaker {}: opened {} times, closed {} times, {} calls, {} rejected",
        b.state.as_str(),
        b.opened,
        b.closed,
        b.calls,
        b.rejections
    );
    let now = monitor.now_ms();
    let spec = |metric: &str| QuerySpec {
        namespace: "example".into(),
        metric: metric.into(),
        kind: Kind::Latency,
        window: Window::Range,
        from: now - HOUR_MS,
        to: now + HOUR_MS,
        tags: Tags::empty(),
    };
    let ran = monitor.query(&spec("upstream.fetch"))?;
    let rejected = monitor.query(&spec("upstream.fetch.rejected"))?;
    if let (Some(p), Some(r)) = (ran.points.first(), rejected.points.first()) {
        println!(
            "recorded: {} calls ({} errors, p99 {:.0} µs), {} rejections",
            p.count, p.errors, p.p99, r.count
        );
    }
    monitor.close()?;

    let expected = [
        "inner",
        "inner",
        "inner",
        "circuit_open",
        "circuit_open",
        "inner",
        "ok",
        "ok",
        "ok",
        "ok",
    ];
    if codes != expected || b.opened != 2 || b.closed != 1 {
        return Err(format!("unexpected sequence {codes:?}").into());
    }
    Ok(())
}
