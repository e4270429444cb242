//! [`ProtectionLayer`]: the facade as a tower layer, for any HTTP service
//! (axum routers included).
//!
//! Invariants:
//! - A request reaches the inner service only when every protection of its
//!   key admitted it; the inner service's `call` is not even made otherwise.
//! - Rejections become JSON errors: `429 rate_limited` and
//!   `503 circuit_open` / `503 memory_pressure` with `Retry-After` (whole
//!   seconds, rounded up, at least 1); a timeout is `503 timeout`.
//! - A 5xx response counts as a failed call for the breaker and the
//!   monitor, and is still returned unchanged; the inner service's own
//!   errors pass through unchanged.
//! - With per-route keys ([`ProtectionLayer::routes`], applied with axum's
//!   `Router::layer` so the matched route is known), requests to routes
//!   without a key pass straight through.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use super::{CallOptions, Infrastructure, ProtectionError};

type Identify = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
enum Keys {
    Fixed(Arc<str>),
    Routes(Arc<HashMap<String, Arc<str>>>),
}

/// Applies [`Infrastructure::execute_protected`] to every request.
#[derive(Clone)]
pub struct ProtectionLayer {
    infra: Infrastructure,
    keys: Keys,
    identify: Option<Identify>,
}

impl ProtectionLayer {
    /// Every request runs behind the protections of `key`.
    pub fn new(infra: Infrastructure, key: &str) -> ProtectionLayer {
        ProtectionLayer {
            infra,
            keys: Keys::Fixed(Arc::from(key)),
            identify: None,
        }
    }

    /// Requests to the given axum routes (`"/v1/ingest"` → key) run behind
    /// their key's protections; others pass through.
    pub fn routes<'a>(
        infra: Infrastructure,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ProtectionLayer {
        let map = routes
            .into_iter()
            .map(|(route, key)| (route.to_owned(), Arc::from(key)))
            .collect();
        ProtectionLayer {
            infra,
            keys: Keys::Routes(Arc::new(map)),
            identify: None,
        }
    }

    /// Rate-limits per caller: `f` names the caller of a request (an API
    /// key header, a client address); `None` uses the shared bucket.
    pub fn identify(
        mut self,
        f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.identify = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for ProtectionLayer {
    type Service = ProtectionService<S>;
    fn layer(&self, inner: S) -> ProtectionService<S> {
        ProtectionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ProtectionLayer`].
#[derive(Clone)]
pub struct ProtectionService<S> {
    inner: S,
    layer: ProtectionLayer,
}

/// Why the inner call counts as failed.
enum Failure<R, E> {
    Response(R),
    Service(E),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for ProtectionService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The clone that was polled ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = match &self.layer.keys {
            Keys::Fixed(k) => Some(k.clone()),
            Keys::Routes(m) => req
                .extensions()
                .get::<MatchedPath>()
                .and_then(|p| m.get(p.as_str()).cloned()),
        };
        let Some(key) = key else {
            return Box::pin(inner.call(req));
        };
        let (parts, body) = req.into_parts();
        let id = self.layer.identify.as_ref().and_then(|f| f(&parts));
        let req = Request::from_parts(parts, body);
        let infra = self.layer.infra.clone();
        Box::pin(async move {
            let opts = CallOptions {
                identifier: id.as_deref(),
            };
            let call = async move {
                match inner.call(req).await {
                    Ok(r) if r.status().is_server_error() => Err(Failure::Response(r)),
                    Ok(r) => Ok(r),
                    Err(e) => Err(Failure::Service(e)),
                }
            };
            match infra.execute_protected(&key, &opts, call).await {
                Ok(r) => Ok(r),
                Err(ProtectionError::Inner(Failure::Response(r))) => Ok(r),
                Err(ProtectionError::Inner(Failure::Service(e))) => Err(e),
                Err(rejection) => Ok(rejection_response(&rejection)),
            }
        })
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The JSON error answering a request a protection stopped.
fn rejection_response<E, B: From<String>>(e: &ProtectionError<E>) -> Response<B> {
    let (status, message, retry) = match e {
        ProtectionError::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded; retry later",
            Some(*retry_after),
        ),
        ProtectionError::CircuitOpen { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit breaker open after repeated failures; retry later",
            Some(*retry_after),
        ),
        ProtectionError::MemoryPressure => (
            StatusCode::SERVICE_UNAVAILABLE,
            "refused under memory pressure; retry later",
            Some(Duration::from_secs(1)),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request did not finish within its timeout",
            None,
        ),
    };
    let body = serde_json::json!({"error": e.code(), "message": message}).to_string();
    let mut r = Response::new(B::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(d) = retry {
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
    }
    r
}
