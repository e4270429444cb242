//! With `server.token` set, every `/v1` route answers `401 unauthorized`
//! without the bearer token (or with a wrong one), while the health
//! endpoints and `/metrics` stay open; the default bind is loopback.

mod common;

use std::sync::Arc;

use common::{Http, T0};
use scopemon::{Config, ManualClock};

/// Every `/v1` route with each method it answers.
const V1: &[(&str, &str)] = &[
    ("POST", "/v1/ingest"),
    ("GET", "/v1/query?namespace=p&metric=m"),
    ("GET", "/v1/summary?namespace=p"),
    ("GET", "/v1/series"),
    ("GET", "/v1/namespaces"),
    ("GET", "/v1/namespaces/p/retention"),
    ("PUT", "/v1/namespaces/p/retention"),
    ("POST", "/v1/admin/compact"),
    ("POST", "/v1/admin/backup"),
    ("GET", "/v1/baseline?namespace=p&metric=m"),
    ("GET", "/v1/thresholds"),
    ("PUT", "/v1/thresholds"),
    ("DELETE", "/v1/thresholds/t"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/health/performance?namespace=p"),
    ("GET", "/v1/services"),
    ("POST", "/v1/services"),
    ("DELETE", "/v1/services/s"),
    ("POST", "/v1/services/s/heartbeat"),
    ("GET", "/v1/memory"),
    ("POST", "/v1/memory/cleanup"),
    ("GET", "/v1/protection"),
];

const OPEN: &[&str] = &["/livez", "/readyz", "/health", "/health/quick", "/metrics"];

fn status(agent: &ureq::Agent, method: &str, url: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req.body("{}".to_owned()).expect("request");
    let mut r = agent.run(req).expect("response");
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), body)
}

#[test]
fn every_v1_route_needs_the_token_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut c = Config::with_data_dir(dir.path());
    c.server.token = Some("s3cret".into());
    let http = Http::start(Arc::new(common::open_with(c, &clock)));
    // A fresh connection per request: a 401 answered before the body was
    // read may close its connection, which a pooled agent would then reuse.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    for (method, path) in V1 {
        let url = format!("{}{path}", http.base());
        for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
            let (st, body) = status(&agent, method, &url, auth);
            assert_eq!(st, 401, "{method} {path} with {auth:?}: {body}");
            assert!(body.contains("\"error\":\"unauthorized\""), "{body}");
        }
        let (st, body) = status(&agent, method, &url, Some("Bearer s3cret"));
        assert_ne!(st, 401, "{method} {path} refused the right token: {body}");
    }
    for path in OPEN {
        let (st, body) = status(&agent, "GET", &format!("{}{path}", http.base()), None);
        assert_ne!(st, 401, "{path} needs no token: {body}");
        assert_ne!(st, 404, "{path}: {body}");
    }
}

#[test]
fn the_default_bind_is_loopback() {
    assert!(Config::default().server.listen.ip().is_loopback());
    let shipped = Config::from_toml(include_str!("../config/scopemon.toml")).unwrap();
    assert!(shipped.server.listen.ip().is_loopback());
}
