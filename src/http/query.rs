//! Read endpoints: `/v1/query`, `/v1/summary`, `/v1/series`,
//! `/v1/namespaces`. Parameters are checked strictly: an unknown one is a
//! 400, so a typo never silently widens a query.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::error::Error;
use crate::model::{Kind, Resolution, Tags, parse_query_time};
use crate::query::{QuerySpec, Window};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/query", get(query))
        .route("/v1/summary", get(summary))
        .route("/v1/series", get(series))
        .route("/v1/namespaces", get(namespaces))
}

pub(super) type Params = Query<Vec<(String, String)>>;

/// Parameters by name, refusing unknown and repeated ones.
pub(super) struct P {
    pairs: Vec<(String, String)>,
}

impl P {
    pub(super) fn new(
        pairs: Vec<(String, String)>,
        known: &[&str],
        tags_allowed: bool,
    ) -> Result<P, Error> {
        for (i, (k, _)) in pairs.iter().enumerate() {
            let is_tag = tags_allowed && k.starts_with("tag.") && k.len() > 4;
            if !is_tag && !known.contains(&k.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "unknown parameter {k:?}; expected {}{}",
                    known.join(", "),
                    if tags_allowed { ", tag.<key>" } else { "" }
                )));
            }
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(Error::InvalidParameter(format!(
                    "parameter {k:?} is given twice"
                )));
            }
        }
        Ok(P { pairs })
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k2, _)| k2 == k)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn required(&self, k: &str) -> Result<&str, Error> {
        self.get(k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::InvalidParameter(format!("parameter {k:?} is required")))
    }

    pub(super) fn kind(&self) -> Result<Option<Kind>, Error> {
        self.get("kind").map(str::parse).transpose()
    }

    pub(super) fn tags(&self) -> Result<Tags, Error> {
        let pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("tag.")?, v.as_str())))
            .collect();
        Tags::new(&pairs)
    }
}

async fn query(State(st): State<AppState>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    let p = P::new(
        params,
        &["namespace", "metric", "kind", "window", "from", "to"],
        true,
    )?;
    let now = st.monitor.now_ms();
    let window: Window = p.get("window").unwrap_or("minute").parse()?;
    let to = p
        .get("to")
        .map(|t| parse_query_time(t, now))
        .transpose()?
        .unwrap_or(now);
    let from = match p.get("from") {
        Some(f) => parse_query_time(f, now)?,
        None => to - window.default_span_ms(),
    };
    let spec = QuerySpec {
        namespace: p.required("namespace")?.to_owned(),
        metric: p.required("metric")?.to_owned(),
        kind: p.kind()?.unwrap_or(Kind::Latency),
        window,
        from,
        to,
        tags: p.tags()?,
    };
    let monitor = st.monitor.clone();
    let result = tokio::task::spawn_blocking(move || monitor.query(&spec))
        .await
        .map_err(|e| Error::Internal(format!("the query failed: {e}")))??;
    Ok(Json(serde_json::to_value(result).map_err(|e| {
        Error::Internal(format!("cannot serialise the answer: {e}"))
    })?))
}

async fn summary(
    State(st): State<AppState>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace", "window", "metric", "kind"], false)?;
    let ns = p.required("namespace")?.to_owned();
    let window: Resolution = p.get("window").unwrap_or("minute").parse()?;
    let metric = p.get("metric").map(str::to_owned);
    let kind = p.kind()?;
    let monitor = st.monitor.clone();
    let result =
        tokio::task::spawn_blocking(move || monitor.summary(&ns, window, metric.as_deref(), kind))
            .await
            .map_err(|e| Error::Internal(format!("the summary failed: {e}")))??;
    Ok(Json(serde_json::to_value(result).map_err(|e| {
        Error::Internal(format!("cannot serialise the answer: {e}"))
    })?))
}

async fn series(
    State(st): State<AppState>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace"], false)?;
    Ok(Json(
        json!({"series": st.monitor.series(p.get("namespace"))}),
    ))
}

async fn namespaces(
    State(st): State<AppState>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let list: Vec<Value> = st
        .monitor
        .namespaces()
        .into_iter()
        .map(|(ns, n)| {
            let retention = super::admin::retention_json(&st.monitor.retention(&ns));
            json!({"namespace": ns, "series": n, "retention": retention})
        })
        .collect();
    Ok(Json(json!({ "namespaces": list })))
}
