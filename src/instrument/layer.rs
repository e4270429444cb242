//! [`InstrumentationLayer`]: a tower layer recording every request's
//! latency and outcome, per route and method, into the monitor.
//!
//! Invariants:
//! - One latency sample per finished request, in metric `http.request`
//!   (configurable) tagged `method` and `route`; throughput is the
//!   series' count per bucket (`rate` in query answers).
//! - The outcome is `error` for a 5xx response or an error of the inner
//!   service, `ok` otherwise. A request whose future is dropped before it
//!   finished (the client went away) is not recorded.
//! - `route` is axum's matched route template (`/v1/series/{id}`), never
//!   the raw path, and methods outside the standard nine are `OTHER`: the
//!   number of series is bounded by the router's routes. Requests that
//!   matched no route (or services without axum routing) use the
//!   fallback route name (`unmatched`).
//! - Handles are resolved once per (route, method) and cached; a request
//!   costs one read-locked map lookup, two clock reads and the record.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use parking_lot::RwLock;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::hot::Handle;
use crate::model::{Kind, Outcome};
use crate::monitor::Monitor;

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

fn method_index(m: &Method) -> usize {
    METHODS.iter().position(|x| x == m).unwrap_or(METHODS.len())
}

fn method_name(i: usize) -> &'static str {
    METHODS.get(i).map_or("OTHER", Method::as_str)
}

/// One handle slot per method (the last is `OTHER`); `None` inside when
/// the series could not be made.
type Slots = [OnceLock<Option<Arc<Handle>>>; METHODS.len() + 1];

struct Shared {
    monitor: Arc<Monitor>,
    namespace: String,
    metric: String,
    fallback_route: String,
    routes: RwLock<HashMap<String, Arc<Slots>, foldhash::fast::RandomState>>,
}

impl Shared {
    fn handle(&self, route: &str, method: &Method) -> Option<Arc<Handle>> {
        let i = method_index(method);
        // Fast path: the handle is made; clone it under the read lock.
        if let Some(h) = self.routes.read().get(route).and_then(|s| s[i].get()) {
            return h.clone();
        }
        let found = self.routes.read().get(route).cloned();
        let slots = match found {
            Some(s) => s,
            None => self
                .routes
                .write()
                .entry(route.to_owned())
                .or_insert_with(|| Arc::new(Default::default()))
                .clone(),
        };
        slots[i]
            .get_or_init(|| {
                let tags = [("method", method_name(i)), ("route", route)];
                self.monitor
                    .handle(&self.namespace, Kind::Latency, &self.metric, &tags)
                    .map_err(|e| tracing::warn!(route, error = %e, "requests to this route are not recorded"))
                    .ok()
                    .map(Arc::new)
            })
            .clone()
    }
}

/// Records every request's latency and outcome into the monitor.
#[derive(Clone)]
pub struct InstrumentationLayer {
    shared: Arc<Shared>,
}

impl InstrumentationLayer {
    /// Records into `namespace`, metric `http.request`.
    pub fn new(monitor: Arc<Monitor>, namespace: &str) -> InstrumentationLayer {
        InstrumentationLayer {
            shared: Arc::new(Shared {
                monitor,
                namespace: namespace.to_owned(),
                metric: "http.request".to_owned(),
                fallback_route: "unmatched".to_owned(),
                routes: RwLock::new(HashMap::default()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            f(s);
        } else {
            tracing::warn!("InstrumentationLayer already shared; setting ignored");
        }
        self
    }

    /// The metric requests are recorded in (default `http.request`).
    pub fn metric(self, metric: &str) -> Self {
        self.edit(|s| s.metric = metric.to_owned())
    }

    /// The `route` tag of requests without a matched axum route (default
    /// `unmatched`; name the operation when wrapping a plain service).
    pub fn fallback_route(self, route: &str) -> Self {
        self.edit(|s| s.fallback_route = route.to_owned())
    }
}

impl<S> Layer<S> for InstrumentationLayer {
    type Service = InstrumentationService<S>;
    fn layer(&self, inner: S) -> InstrumentationService<S> {
        InstrumentationService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`InstrumentationLayer`].
#[derive(Clone)]
pub struct InstrumentationService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for InstrumentationService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = InstrumentedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let route = match req.extensions().get::<MatchedPath>() {
            Some(p) => p.as_str(),
            None => self.shared.fallback_route.as_str(),
        };
        let handle = self.shared.handle(route, req.method());
        let start = Instant::now();
        InstrumentedFuture {
            inner: self.inner.call(req),
            handle,
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`InstrumentationService`].
    pub struct InstrumentedFuture<F> {
        #[pin]
        inner: F,
        handle: Option<Arc<Handle>>,
        start: Instant,
    }
}

impl<F, B, E> Future for InstrumentedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(h) = this.handle.take() {
            let outcome = match &result {
                Ok(r) if !r.status().is_server_error() => Outcome::Ok,
                _ => Outcome::Error,
            };
            h.record_outcome(this.start.elapsed(), outcome);
        }
        Poll::Ready(result)
    }
}
