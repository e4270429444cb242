//! Setup shared by the integration tests: engines on a temp dir driven by a
//! manual clock, and the fixed times tests start from.
//!
//! Each test binary includes this module (`mod common;`) and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use scopemon::{Config, DAY_MS, ManualClock, Monitor};

/// A UTC midnight in 2027, far from any real clock.
pub const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

/// An engine on `config` whose time is `clock` and whose background tasks
/// the test drives itself (`Monitor::run_due_tasks`, or `flush`/`rollup`).
pub fn open_with(config: Config, clock: &ManualClock) -> Monitor {
    Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open monitor")
}

/// [`open_with`] the default configuration storing in `dir`.
pub fn open(dir: &Path, clock: &ManualClock) -> Monitor {
    open_with(Config::with_data_dir(dir), clock)
}

/// One request to an in-process router (no network): status, content type
/// and body text.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let req = req
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, ctype, String::from_utf8_lossy(&bytes).into_owned())
}
