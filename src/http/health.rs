//! Liveness and readiness endpoints for scripts and load balancers:
//! `/livez`, `/readyz` and the cached `/health/quick` (no I/O). The deep
//! `/health` aggregator builds on these. Their plain-text `503 NOT_READY` /
//! `NOT_OK` is the probes' contract, so it is marked [`PlainText`] and kept
//! out of the JSON error shape.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;

use super::AppState;
use super::errors::PlainText;
use crate::model::format_ts;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health/quick", get(quick))
}

async fn livez() -> &'static str {
    "OK"
}

/// Ready once the store is open and migrated, which happens before the
/// listener is bound, so a reachable server is a ready one.
async fn readyz(State(st): State<AppState>) -> Response {
    if st.monitor.is_closed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Extension(PlainText),
            "NOT_READY",
        )
            .into_response()
    } else {
        "OK".into_response()
    }
}

async fn quick(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let healthy = st.monitor.is_healthy();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        let body = json!({
            "status": if healthy { "pass" } else { "fail" },
            "healthy": u32::from(healthy),
            "total": 1,
            "timestamp": format_ts(st.monitor.now_ms()),
        });
        (status, axum::Json(body)).into_response()
    } else {
        let text = if healthy { "OK" } else { "NOT_OK" };
        (status, Extension(PlainText), text).into_response()
    }
}
