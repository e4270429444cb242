//! The HTTP API: one router per area, the error → status mapping and auth.
//! No business logic lives here; handlers translate to [`Monitor`] calls.
//!
//! Invariants:
//! - every error response has the body `{"error": code, "message": text}`:
//!   handlers answer [`ApiError`], and the `errors` layers reshape what
//!   axum itself produces (405, extractor rejections) and enforce the URI
//!   and header limits with JSON 414/431 (see that module for the one case
//!   left to hyper);
//! - engine calls that may block run through `blocking`, which answers a
//!   failed background task as a 500 `internal`, never as a client error.

mod admin;
mod alerts;
mod errors;
mod health;
mod ingest;
mod memory;
mod metrics;
mod protection;
mod query;
mod services;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

#[doc(hidden)]
pub use self::ingest::{IngestOutcome, ingest_body};
#[doc(hidden)]
pub use self::query::query_spec_of;
use crate::error::Error;
use crate::health::HealthAggregator;
use crate::monitor::Monitor;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub monitor: Arc<Monitor>,
    /// The health checks and their cache.
    pub health: HealthAggregator,
    /// The process' protections (`GET /v1/protection`).
    pub infra: crate::protection::Infrastructure,
}

/// An error answered as `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A custom error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A failure of the server's own (500 `internal`), logged.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Closed
            | Error::StoreUnavailable { .. }
            | Error::MemoryPressureHigh { .. }
            | Error::MemoryPressureCritical { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            e if e.is_client_error() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// Runs blocking engine work on tokio's blocking pool. A task that panicked
/// or was cancelled is the server's failure: 500 `internal`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(Error::Internal(format!("the request's task failed: {e}")).into()),
    }
}

/// A value as JSON; failing to serialize is the server's failure (500).
fn to_json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v)
        .map_err(|e| Error::Internal(format!("cannot serialize the answer: {e}")).into())
}

async fn require_token(
    State(token): State<Arc<str>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.as_bytes() == token.as_bytes());
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs \"Authorization: Bearer <token>\" on /v1/* (server.token)",
        )
        .into_response()
    }
}

/// The whole API over `health`'s monitor, with the daemon's protections
/// ([`crate::instrument::daemon_infrastructure`]); `health` answers the
/// health endpoints (start it, and wait for its first round, before
/// serving).
pub fn router(health: HealthAggregator) -> Router {
    let infra = crate::instrument::daemon_infrastructure(health.monitor());
    router_with(health, infra)
}

/// The whole API over the given protections.
pub fn router_with(health: HealthAggregator, infra: crate::protection::Infrastructure) -> Router {
    let state = AppState {
        monitor: health.monitor().clone(),
        health,
        infra,
    };
    let max_body =
        usize::try_from(state.monitor.config().server.max_body_size).unwrap_or(usize::MAX);
    let mut v1 = Router::new()
        .merge(ingest::routes(max_body))
        .merge(query::routes())
        .merge(admin::routes())
        .merge(alerts::routes())
        .merge(services::routes())
        .merge(memory::routes())
        .merge(protection::routes());
    if let Some(token) = state.monitor.config().server.token.clone() {
        v1 = v1.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        ));
    }
    // Inside the error layer, so a timeout answers the JSON 408.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.monitor.config().server.request_timeout,
    );
    Router::new()
        .merge(v1)
        .merge(health::routes())
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(errors::not_found)
        .layer(timeout)
        .layer(middleware::from_fn(errors::json_errors))
        .layer(middleware::from_fn(errors::limits))
        .layer(errors::catch_panic())
        .with_state(state)
}
