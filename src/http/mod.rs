//! The HTTP API: one router per area, the error → status mapping and auth.
//! No business logic lives here; handlers translate to [`Monitor`] calls.

mod admin;
mod alerts;
mod health;
mod ingest;
mod metrics;
mod protection;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;
use crate::monitor::Monitor;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub monitor: Arc<Monitor>,
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
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
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

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see GET /openapi.json",
    )
}

/// The whole API, with the daemon's protections
/// ([`crate::instrument::daemon_infrastructure`]).
pub fn router(monitor: Arc<Monitor>) -> Router {
    let infra = crate::instrument::daemon_infrastructure(&monitor);
    router_with(monitor, infra)
}

/// The whole API over the given protections.
pub fn router_with(monitor: Arc<Monitor>, infra: crate::protection::Infrastructure) -> Router {
    let state = AppState { monitor, infra };
    let max_body =
        usize::try_from(state.monitor.config().server.max_body_size).unwrap_or(usize::MAX);
    let mut v1 = Router::new()
        .merge(ingest::routes(max_body))
        .merge(query::routes())
        .merge(admin::routes())
        .merge(alerts::routes())
        .merge(protection::routes());
    if let Some(token) = state.monitor.config().server.token.clone() {
        v1 = v1.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        ));
    }
    Router::new()
        .merge(v1)
        .merge(health::routes())
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(not_found)
        .with_state(state)
}
