//! `GET /v1/protection`: the state of every circuit breaker and rate
//! limiter the process runs (`closed|open|half_open`, failure rate, calls,
//! rejections), one entry per protection key, sorted by key.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/protection", get(show))
}

async fn show(State(st): State<AppState>) -> Json<Value> {
    let snap = st.infra.snapshot();
    let breakers: Vec<Value> = snap
        .keys
        .iter()
        .map(|k| {
            let mut v = json!(k.breaker);
            v["key"] = json!(k.key);
            v["timeout"] = json!(k.timeout);
            v
        })
        .collect();
    let limiters: Vec<Value> = snap
        .keys
        .iter()
        .filter_map(|k| {
            let mut v = json!(k.limiter.as_ref()?);
            v["key"] = json!(k.key);
            Some(v)
        })
        .collect();
    let memory: Vec<Value> = snap
        .keys
        .iter()
        .filter(|k| k.memory_gate)
        .map(|k| json!({"key": k.key, "rejections": k.memory_rejections}))
        .collect();
    Json(json!({
        "breakers": breakers,
        "limiters": limiters,
        "memory_gate": {"admits": snap.memory_admits, "keys": memory},
    }))
}
