//! Memory endpoints: `GET /v1/memory` (figures, pressure level, last
//! cleanup) and `POST /v1/memory/cleanup {"priority": "low|medium|high|critical"}`
//! (runs the cleanup strategies for that level now and answers what each
//! freed). Both are served at any pressure level.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::query::{P, Params};
use super::{ApiError, AppState, blocking, to_json};
use crate::error::Error;
use crate::memory::PressureLevel;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/memory", get(show))
        .route("/v1/memory/cleanup", post(cleanup))
}

async fn show(State(st): State<AppState>, Params(params): Params) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let monitor = st.monitor.clone();
    let status = blocking(move || Ok(monitor.memory())).await?;
    Ok(Json(to_json(&status)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CleanupIn {
    priority: String,
}

async fn cleanup(
    State(st): State<AppState>,
    Params(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let input: CleanupIn = serde_json::from_slice(&body).map_err(|e| {
        Error::InvalidParameter(format!(
            "expected {{\"priority\": \"low|medium|high|critical\"}}: {e}"
        ))
    })?;
    let level: PressureLevel = input.priority.parse()?;
    let monitor = st.monitor.clone();
    let report = blocking(move || Ok(monitor.request_cleanup(level))).await?;
    Ok(Json(to_json(&report)?))
}
