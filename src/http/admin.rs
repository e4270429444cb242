//! Retention and compaction endpoints:
//! `GET|PUT /v1/namespaces/{ns}/retention`,
//! `POST /v1/admin/compact[?dry_run=true]` (a dry run counts what would be
//! removed and deletes nothing, as `scopemon compact --dry-run` does),
//! `POST /v1/admin/backup` (flush, then a one-snapshot copy of the store
//! under `<data_dir>/backups/`; answers `{"path", "bytes"}`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::query::{P, Params};
use super::{ApiError, AppState, blocking, to_json};
use crate::config::{Retention, RetentionRule};
use crate::error::Error;
use crate::model::validate_namespace;
use crate::retention::CompactOptions;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/namespaces/{ns}/retention", get(show).put(set))
        .route("/v1/admin/compact", post(compact))
        .route("/v1/admin/backup", post(backup))
}

/// The SPEC's retention JSON: durations plus where they come from.
pub(super) fn retention_json(r: &Retention) -> Result<Value, ApiError> {
    let mut v = to_json(&r.describe())?;
    v["source"] = to_json(&r.source)?;
    Ok(v)
}

async fn show(
    State(st): State<AppState>,
    Path(ns): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    validate_namespace(&ns)?;
    Ok(Json(retention_json(&st.monitor.retention(&ns))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionIn {
    minute: Option<String>,
    hour: Option<String>,
    day: Option<String>,
}

fn duration(key: &str, v: Option<&str>) -> Result<Option<std::time::Duration>, Error> {
    v.map(|s| {
        humantime::parse_duration(s).map_err(|e| {
            Error::InvalidParameter(format!(
                "{key} = {s:?} is not a duration (e.g. 6h, 30d): {e}"
            ))
        })
    })
    .transpose()
}

async fn set(
    State(st): State<AppState>,
    Path(ns): Path<String>,
    Params(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let input: RetentionIn = serde_json::from_slice(&body).map_err(|e| {
        Error::InvalidParameter(format!(
            "expected {{\"minute\"?, \"hour\"?, \"day\"?}} with duration strings: {e}"
        ))
    })?;
    let rule = RetentionRule {
        minute: duration("minute", input.minute.as_deref())?,
        hour: duration("hour", input.hour.as_deref())?,
        day: duration("day", input.day.as_deref())?,
    };
    let monitor = st.monitor.clone();
    let r = blocking(move || monitor.set_retention(&ns, &rule)).await?;
    Ok(Json(retention_json(&r)?))
}

async fn compact(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["dry_run"], false)?;
    let opts = CompactOptions {
        dry_run: p.flag("dry_run")?,
        ..CompactOptions::default()
    };
    let monitor = st.monitor.clone();
    let report = blocking(move || monitor.compact(opts)).await?;
    Ok(Json(to_json(&report)?))
}

async fn backup(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let monitor = st.monitor.clone();
    let report = blocking(move || monitor.backup()).await?;
    Ok(Json(serde_json::json!({
        "path": report.path.display().to_string(),
        "bytes": report.bytes,
    })))
}
