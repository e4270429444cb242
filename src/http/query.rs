//! Read endpoints: `/v1/query`, `/v1/summary`, `/v1/series`,
//! `/v1/namespaces`, and the query-string parser every `/v1` route but
//! ingest uses ([`Params`], [`P`]). Parameters are checked strictly: an
//! unknown or repeated one is a 400 `invalid_parameter`, so a typo never
//! silently widens a query or turns a dry run into a real one.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::Uri;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, to_json};
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

/// The query string as (name, value) pairs, in order. A query string that
/// does not decode is a 400 `invalid_parameter`.
pub(super) struct Params(pub(super) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Params(params_of(&parts.uri)?))
    }
}

/// The query string of `uri` as (name, value) pairs.
fn params_of(uri: &Uri) -> Result<Vec<(String, String)>, Error> {
    Query::try_from_uri(uri)
        .map(|Query(pairs)| pairs)
        .map_err(|e| Error::InvalidParameter(e.body_text()))
}

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
                return Err(Error::InvalidParameter(
                    if known.is_empty() && !tags_allowed {
                        format!("unknown parameter {k:?}; this endpoint takes none")
                    } else {
                        format!(
                            "unknown parameter {k:?}; expected {}{}",
                            known.join(", "),
                            if tags_allowed { ", tag.<key>" } else { "" }
                        )
                    },
                ));
            }
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(Error::InvalidParameter(format!(
                    "parameter {k:?} is given twice"
                )));
            }
        }
        Ok(P { pairs })
    }

    /// A boolean parameter: absent is `false`; only `true` and `false`
    /// are accepted.
    pub(super) fn flag(&self, k: &str) -> Result<bool, Error> {
        match self.get(k) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(Error::InvalidParameter(format!(
                "{k} = {other:?} must be true or false"
            ))),
        }
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

async fn query(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, QUERY_PARAMS, true)?;
    let spec = query_spec(&p, st.monitor.now_ms())?;
    let monitor = st.monitor.clone();
    let result = blocking(move || monitor.query(&spec)).await?;
    Ok(Json(to_json(&result)?))
}

/// The [`QuerySpec`] `/v1/query` asks for, times read against `now`.
fn query_spec(p: &P, now: i64) -> Result<QuerySpec, Error> {
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
    Ok(QuerySpec {
        namespace: p.required("namespace")?.to_owned(),
        metric: p.required("metric")?.to_owned(),
        kind: p.kind()?.unwrap_or(Kind::Latency),
        window,
        from,
        to,
        tags: p.tags()?,
    })
}

/// The [`QuerySpec`] a `GET` of `uri` on `/v1/query` asks for, parsed
/// exactly as the handler does (times read against `now_ms`): the hidden
/// entry point of the query fuzz target
/// (`scopemon::internals::query_spec_of`).
#[doc(hidden)]
pub fn query_spec_of(uri: &Uri, now_ms: i64) -> Result<QuerySpec, Error> {
    let p = P::new(params_of(uri)?, QUERY_PARAMS, true)?;
    query_spec(&p, now_ms)
}

/// The parameters `/v1/query` takes besides `tag.<key>`.
const QUERY_PARAMS: &[&str] = &["namespace", "metric", "kind", "window", "from", "to"];

async fn summary(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace", "window", "metric", "kind"], false)?;
    let ns = p.required("namespace")?.to_owned();
    let window: Resolution = p.get("window").unwrap_or("minute").parse()?;
    let metric = p.get("metric").map(str::to_owned);
    let kind = p.kind()?;
    let monitor = st.monitor.clone();
    let result = blocking(move || monitor.summary(&ns, window, metric.as_deref(), kind)).await?;
    Ok(Json(to_json(&result)?))
}

async fn series(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let p = P::new(params, &["namespace"], false)?;
    let series = to_json(&st.monitor.series(p.get("namespace")))?;
    Ok(Json(json!({ "series": series })))
}

async fn namespaces(
    State(st): State<AppState>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    P::new(params, &[], false)?;
    let list: Vec<Value> = st
        .monitor
        .namespaces()
        .into_iter()
        .map(|(ns, n)| {
            let retention = super::admin::retention_json(&st.monitor.retention(&ns))?;
            Ok(json!({"namespace": ns, "series": n, "retention": retention}))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(json!({ "namespaces": list })))
}
