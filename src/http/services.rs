//! External services the daemon watches: `POST /v1/services` (register or
//! replace), `GET /v1/services`, `DELETE /v1/services/{name}`,
//! `POST /v1/services/{name}/heartbeat` (ttl checks). Registrations are
//! validated and stored by the health aggregator; a bad one is a 400.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::query::{P, Params};
use super::{ApiError, AppState, blocking, to_json};
use crate::error::Error;
use crate::health::ServiceRegistration;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(list).post(register))
        .route("/v1/services/{name}", delete(remove))
        .route("/v1/services/{name}/heartbeat", post(heartbeat))
}

async fn register(
    State(st): State<AppState>,
    Params(params): Params,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    P::new(params, &[], false)?;
    let reg: ServiceRegistration = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidParameter(format!("not a service registration: {e}")))?;
    let health = st.health.clone();
    let reg = blocking(move || health.add_service(reg)).await?;
    Ok((StatusCode::CREATED, Json(to_json(&reg)?)))
}

async fn list(State(st): State<AppState>, Params(params): Params) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let services = to_json(&st.health.services())?;
    Ok(Json(json!({ "services": services })))
}

async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let health = st.health.clone();
    let key = name.clone();
    if blocking(move || health.remove_service(&key)).await? {
        Ok(Json(json!({ "deleted": name })))
    } else {
        Err(Error::NotFound(format!("no service {name:?}")).into())
    }
}

async fn heartbeat(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    st.health.heartbeat(&name)?;
    Ok(Json(json!({ "service": name, "heartbeat": "ok" })))
}
