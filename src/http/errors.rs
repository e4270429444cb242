//! Errors the handlers do not write themselves, in the API's one shape
//! `{"error": code, "message": text}`:
//! - [`json_errors`] reshapes every 4xx/5xx response that is not JSON
//!   already (axum's bodiless 405, its plain-text extractor rejections, a
//!   500 from a failed serialization), keeping the status and headers. A response marked [`PlainText`] (the health probes' `503
//!   NOT_OK`) is left as it is;
//! - [`limits`] answers a request target over [`MAX_URI_BYTES`] with 414
//!   and a header section over [`MAX_HEADER_BYTES`] with 431;
//! - [`not_found`] is the fallback, naming the routes that exist;
//! - [`catch_panic`] turns a panicking handler into a 500 instead of a
//!   dropped connection.
//!
//! The one case outside the router's reach: hyper refuses a request line
//! over 64 KiB, more than 100 headers, or a head over ~400 KB before any
//! service runs, and answers those with an empty 414/431. The limits here
//! are far below those, so a request merely too large gets the JSON answer.

use std::any::Any;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use super::ApiError;

/// Longest request target (path and query) served; longer is 414.
pub(super) const MAX_URI_BYTES: usize = 8 * 1024;

/// Largest header section (names and values) served; larger is 431.
pub(super) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Every route of the API, as the 404 message lists them.
pub(super) const ROUTES: &[&str] = &[
    "/v1/ingest",
    "/v1/query",
    "/v1/summary",
    "/v1/series",
    "/v1/namespaces",
    "/v1/namespaces/{ns}/retention",
    "/v1/admin/compact",
    "/v1/admin/backup",
    "/v1/baseline",
    "/v1/thresholds",
    "/v1/thresholds/{id}",
    "/v1/alerts",
    "/v1/health/performance",
    "/v1/services",
    "/v1/services/{name}",
    "/v1/services/{name}/heartbeat",
    "/v1/memory",
    "/v1/memory/cleanup",
    "/v1/protection",
    "/metrics",
    "/livez",
    "/readyz",
    "/health",
    "/health/quick",
];

/// Marks a response whose plain-text error body is the contract (probes).
#[derive(Clone, Copy, Debug)]
pub(super) struct PlainText;

/// The fallback: no route matches the path.
pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint {method} {}; the routes are {} (the README has examples)",
            uri.path(),
            ROUTES.join(", ")
        ),
    )
}

/// Refuses request targets and header sections over the limits.
pub(super) async fn limits(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {uri_len} bytes; at most {MAX_URI_BYTES} are served"),
        )
        .into_response();
    }
    let header_len = header_bytes(req.headers());
    if header_len > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the headers are {header_len} bytes; at most {MAX_HEADER_BYTES} are served"),
        )
        .into_response();
    }
    next.run(req).await
}

fn header_bytes(h: &HeaderMap) -> usize {
    h.iter()
        .map(|(k, v)| k.as_str().len() + v.as_bytes().len() + 4)
        .sum()
}

/// Gives every error response that is not JSON the API's JSON shape.
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let res = next.run(req).await;
    let status = res.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_error || is_json || res.extensions().get::<PlainText>().is_some() {
        return res;
    }
    reshape(res, &method).await
}

/// Rewrites one error response: same status and headers, JSON body whose
/// message is the original text (or says what the status means).
async fn reshape(res: Response, method: &Method) -> Response {
    let (parts, body) = res.into_parts();
    let status = parts.status;
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    // axum adds the `Allow` header outside this layer, to this response.
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("method {method} is not allowed here; the Allow header lists those that are")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = if status.is_server_error() {
        ApiError::internal(message)
    } else {
        ApiError::new(status, code(status), message)
    }
    .into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// The error code for a status the handlers did not answer themselves.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        _ => "bad_request",
    }
}

/// A layer answering a panicking handler with 500 `internal`.
pub(super) fn catch_panic() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(panicked as fn(Box<dyn Any + Send + 'static>) -> Response)
}

fn panicked(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::internal(format!("the handler panicked: {what}")).into_response()
}
