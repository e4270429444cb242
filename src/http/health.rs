//! Health endpoints for load balancers, orchestrators and monitoring:
//! `/livez`, `/readyz`, the deep `/health` (`application/health+json`,
//! `?fresh=true` re-runs every check) and the cached `/health/quick`. All
//! answer from the [`HealthAggregator`](crate::health::HealthAggregator)'s
//! cache; only `?fresh=true` waits for checks. They stay outside the token.
//!
//! Their non-2xx answers (`503 NOT_READY`, `NOT_OK`, a failing health
//! document) are the probes' contract, so they are marked [`PlainText`]
//! and kept out of the JSON error shape.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::errors::PlainText;
use super::query::{P, Params};
use super::{ApiError, AppState};
use crate::alerts::HealthStatus;
use crate::health::document;

/// `Content-Type` of the deep health document.
const HEALTH_JSON: &str = "application/health+json";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/health/quick", get(quick))
}

async fn livez() -> &'static str {
    "OK"
}

/// Ready once the store is open and the first round of checks completed,
/// and while the store takes writes (a full disk turns it 503, so a load
/// balancer sends ingest elsewhere; reads still answer).
async fn readyz(State(st): State<AppState>) -> Response {
    if st.health.is_ready() && !st.monitor.is_closed() && !st.monitor.storage_refused() {
        "OK".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Extension(PlainText),
            "NOT_READY",
        )
            .into_response()
    }
}

async fn health(State(st): State<AppState>, Params(params): Params) -> Result<Response, ApiError> {
    let p = P::new(params, &["fresh"], false)?;
    let h = if p.flag("fresh")? {
        st.health.fresh_system_health().await
    } else {
        st.health.system_health()
    };
    let status = if h.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&document(&h))
        .map_err(|e| ApiError::internal(format!("cannot serialize the answer: {e}")))?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok((status, headers, Extension(PlainText), body).into_response())
}

/// From the cache: one atomic load, no lock, no I/O.
async fn quick(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let q = st.health.quick_health();
    let status = if q.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        let body = st.health.quick_health_json();
        (status, Extension(PlainText), axum::Json(body)).into_response()
    } else {
        (status, Extension(PlainText), q.text()).into_response()
    }
}
