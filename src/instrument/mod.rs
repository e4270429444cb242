//! ServiceInstrumentation: measure any Rust service into the monitor with
//! one line — the tower [`InstrumentationLayer`] for services and routers,
//! the `tracing` [`SpanTimingLayer`] for every `#[tracing::instrument]`
//! function — and scopemon's own API measured and protected the same way
//! ([`instrument_router`]).
//!
//! Invariants:
//! - Everything is recorded through the public [`Monitor`] API with
//!   handles resolved once per route or callsite; recording never looks a
//!   series up by name on the hot path.
//! - Series cardinality is bounded by code (routes, callsites), never by
//!   request data.
//! - scopemon's own figures go to namespace `scopemon`
//!   ([`crate::monitor::OWN_NAMESPACE`]): metric `http.request` per route
//!   and method, and the ingest route's protection key
//!   [`INGEST_KEY`] (rate limit off, memory gate on, unless
//!   `[protection."scopemon.ingest"]` says otherwise).
//!
//! ```no_run
//! # fn demo(monitor: std::sync::Arc<scopemon::Monitor>, app: axum::Router) {
//! use scopemon::{InstrumentationLayer, SpanTimingLayer};
//! use tracing_subscriber::layer::SubscriberExt;
//! let app = app.layer(InstrumentationLayer::new(monitor.clone(), "production"));
//! let subscriber = tracing_subscriber::registry()
//!     .with(SpanTimingLayer::new(monitor, "production"));
//! # }
//! ```

mod layer;
mod spans;

use std::sync::Arc;

use axum::Router;

pub use layer::{InstrumentationLayer, InstrumentationService, InstrumentedFuture};
pub use spans::{Sampling, SpanTimingLayer};

use crate::monitor::{Monitor, OWN_NAMESPACE};
use crate::protection::{Infrastructure, ProtectionLayer, Settings};

/// Protection key of scopemon's own `POST /v1/ingest`.
pub const INGEST_KEY: &str = "scopemon.ingest";

/// The daemon's protections: recorded into namespace `scopemon`, the
/// `[protection]` tables of the monitor's configuration, and
/// [`INGEST_KEY`] set up without rate limit or timeout (a large batch on a
/// slow link must not be cut) but behind the memory gate and a breaker.
pub fn daemon_infrastructure(monitor: &Arc<Monitor>) -> Infrastructure {
    let ingest = Settings {
        rate_limit: None,
        timeout: None,
        memory_gate: true,
        ..Settings::default()
    };
    // The gate is the memory manager's: it refuses at critical pressure.
    let gated = monitor.clone();
    Infrastructure::builder()
        .monitor(monitor.clone(), OWN_NAMESPACE)
        .memory_gate(move || gated.check_operation_allowed().is_ok())
        .config(&monitor.config().protection)
        .key(INGEST_KEY, ingest)
        .build()
}

/// scopemon's API measured by its own [`InstrumentationLayer`] (namespace
/// `scopemon`) and its ingest route behind its own [`ProtectionLayer`]
/// (key [`INGEST_KEY`]). Protection rejections are measured too: the
/// instrumentation is the outer layer.
pub fn instrument_router(router: Router, monitor: Arc<Monitor>, infra: Infrastructure) -> Router {
    router
        .layer(ProtectionLayer::routes(infra, [("/v1/ingest", INGEST_KEY)]))
        .layer(InstrumentationLayer::new(monitor, OWN_NAMESPACE))
}
