//! Baselines, thresholds, alerts and performance health:
//! `GET /v1/baseline`, `PUT|GET /v1/thresholds`, `DELETE /v1/thresholds/{id}`,
//! `GET /v1/alerts`, `GET /v1/health/performance`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::query::{P, Params};
use super::{ApiError, AppState, blocking, to_json};
use crate::alerts::AlertState;
use crate::baseline::Selection;
use crate::config::ThresholdSpec;
use crate::error::Error;
use crate::model::Kind;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/baseline", get(baseline))
        .route("/v1/thresholds", get(list).put(put))
        .route("/v1/thresholds/{id}", delete(remove))
        .route("/v1/alerts", get(alerts))
        .route("/v1/health/performance", get(performance))
}

async fn baseline(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace", "metric", "kind"], true)?;
    let sel = Selection {
        namespace: p.required("namespace")?.to_owned(),
        metric: p.required("metric")?.to_owned(),
        kind: p.kind()?.unwrap_or(Kind::Latency),
        tags: p.tags()?,
    };
    let monitor = st.monitor.clone();
    let b = blocking(move || {
        if monitor
            .series(Some(&sel.namespace))
            .iter()
            .all(|s| s.metric != sel.metric || s.kind != sel.kind)
        {
            return Err(Error::NotFound(format!(
                "no {} series {:?} in namespace {:?}",
                sel.kind, sel.metric, sel.namespace
            )));
        }
        monitor.baseline(&sel)
    })
    .await?;
    Ok(Json(to_json(&b)?))
}

async fn put(
    State(st): State<AppState>,
    Params(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let t: ThresholdSpec = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidParameter(format!("not a threshold: {e}")))?;
    let monitor = st.monitor.clone();
    let t = blocking(move || monitor.put_threshold(t)).await?;
    Ok(Json(to_json(&t)?))
}

async fn list(State(st): State<AppState>, Params(params): Params) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let thresholds = to_json(&st.monitor.thresholds())?;
    Ok(Json(json!({ "thresholds": thresholds })))
}

async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let monitor = st.monitor.clone();
    let key = id.clone();
    if blocking(move || monitor.delete_threshold(&key)).await? {
        Ok(Json(json!({"deleted": id})))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no threshold {id:?}"),
        ))
    }
}

async fn alerts(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["state"], false)?;
    let state = match p.get("state") {
        None => None,
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return Err(Error::InvalidParameter(format!(
                "state {other:?} must be firing or resolved"
            ))
            .into());
        }
    };
    let alerts = to_json(&st.monitor.alerts(state))?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn performance(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace"], false)?;
    let ns = p.required("namespace")?.to_owned();
    crate::model::validate_namespace(&ns)?;
    let monitor = st.monitor.clone();
    let h = blocking(move || monitor.performance_health(&ns)).await?;
    Ok(Json(to_json(&h)?))
}
