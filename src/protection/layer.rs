//! [`ProtectionLayer`]: the facade as a tower layer, for any HTTP service
//! (axum routers included).
//!
//! Invariants:
//! - A request reaches the inner service only when every protection of its
//!   key admitted it; the inner service's `call` is not even made otherwise.
//! - No allocation per request: the response future is an enum over the
//!   inner service's future.
//! - Rejections become JSON errors: `429 rate_limited` and
//!   `503 circuit_open` / `503 memory_pressure_critical` with `Retry-After` (whole
//!   seconds, rounded up, at least 1); a timeout is `503 timeout`.
//! - A 5xx response counts as a failed call for the breaker and the
//!   monitor, and is still returned unchanged; the inner service's own
//!   errors pass through unchanged.
//! - With per-route keys ([`ProtectionLayer::routes`], applied with axum's
//!   `Router::layer` so the matched route is known), requests to routes
//!   without a key pass straight through.
//! - Keys are resolved when the layer is made (no lookup per request); a
//!   later [`Infrastructure::configure`] of a key is not seen by layers
//!   made before it.

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

use super::{Infrastructure, ProtectedCall, Protection, ProtectionError};

type Identify = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
enum Keys {
    Fixed(Protection),
    Routes(Arc<HashMap<String, Protection>>),
}

/// Applies [`Infrastructure::execute_protected`] to every request.
#[derive(Clone)]
pub struct ProtectionLayer {
    keys: Keys,
    identify: Option<Identify>,
}

impl ProtectionLayer {
    /// Every request runs behind the protections of `key`.
    pub fn new(infra: Infrastructure, key: &str) -> ProtectionLayer {
        ProtectionLayer {
            keys: Keys::Fixed(infra.protection(key)),
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
            .map(|(route, key)| (route.to_owned(), infra.protection(key)))
            .collect();
        ProtectionLayer {
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for ProtectionService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: From<String>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ProtectionFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let protection = match &self.layer.keys {
            Keys::Fixed(p) => Some(p),
            Keys::Routes(m) => req
                .extensions()
                .get::<MatchedPath>()
                .and_then(|p| m.get(p.as_str())),
        };
        let Some(protection) = protection else {
            return ProtectionFuture::new(State::Passthrough {
                fut: self.inner.call(req),
            });
        };
        let (req, id) = match &self.layer.identify {
            Some(f) => {
                let (parts, body) = req.into_parts();
                let id = f(&parts);
                (Request::from_parts(parts, body), id)
            }
            None => (req, None),
        };
        let inner = &mut self.inner;
        match protection.admit_then(
            id.as_deref(),
            || inner.call(req),
            succeeded::<ResB, S::Error>,
        ) {
            Ok(call) => ProtectionFuture::new(State::Protected { call }),
            Err(rejection) => ProtectionFuture::new(State::Rejected {
                response: Some(rejection_response(&ProtectionError::<()>::from(rejection))),
            }),
        }
    }
}

/// A 5xx response or an error of the service is a failed call.
fn succeeded<B, E>(r: &Result<Response<B>, E>) -> bool {
    matches!(r, Ok(resp) if !resp.status().is_server_error())
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F: Future, B> {
        // No protection applies to the request.
        Passthrough {
            #[pin]
            fut: F,
        },
        // Admitted: the call runs behind its protections.
        Protected {
            #[pin]
            call: ProtectedCall<F>,
        },
        // Rejected: the answer is ready (taken when returned).
        Rejected {
            response: Option<Response<B>>,
        },
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ProtectionService`].
    pub struct ProtectionFuture<F: Future, B> {
        #[pin]
        state: State<F, B>,
    }
}

impl<F: Future, B> ProtectionFuture<F, B> {
    fn new(state: State<F, B>) -> Self {
        ProtectionFuture { state }
    }
}

impl<F, B, E> Future for ProtectionFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { fut } => fut.poll(cx),
            StateProj::Protected { call } => call.poll(cx).map(|r| match r {
                Ok(resp) => Ok(resp),
                Err(ProtectionError::Inner(e)) => Err(e),
                Err(other) => Ok(rejection_response(&other)),
            }),
            StateProj::Rejected { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("ProtectionFuture polled after completion"),
            },
        }
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
    // Over HTTP a memory-gate refusal is the API's one code for it (SPEC:
    // `503 memory_pressure_critical`); the metric's reason stays generic.
    let code = match e {
        ProtectionError::MemoryPressure => "memory_pressure_critical",
        other => other.code(),
    };
    let body = serde_json::json!({"error": code, "message": message}).to_string();
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
