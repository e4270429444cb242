//! External services the daemon watches (Consul's three kinds of check):
//! - `http`: `GET url` answers 2xx within the timeout (plain HTTP/1.1);
//! - `tcp`: a TCP connection to `addr` opens within the timeout;
//! - `ttl`: the service calls `POST /v1/services/{name}/heartbeat` at least
//!   every `ttl`; after a registration or a restart it has one `ttl` to
//!   send the first.
//!
//! A [`ServiceRegistration`] is what `POST /v1/services` takes and what
//! the `services` table stores (versioned JSON, normalised: durations
//! written as `<integer><unit>`); [`Service::parse`] validates one into
//! the check the aggregator runs, as check `service:<name>`.
//!
//! Invariants: only a registration that parsed is stored; a stored one that
//! no longer parses is logged and skipped at start-up, never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::check::{CheckFuture, CheckResult, HealthCheck};
use crate::config::HealthConfig;
use crate::error::{Error, Result};
use crate::model::format_duration_ms;
use crate::store::Store;
use crate::store::codec;
use crate::store::tables::SERVICES;

/// Version byte of `services` records.
const RECORD_V1: u8 = 1;

/// An external service to watch, as registered (`POST /v1/services`) and
/// stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRegistration {
    /// `[A-Za-z0-9_.-]{1,128}`; its check is named `service:<name>`.
    pub name: String,
    /// Whether its failure makes the whole system unhealthy.
    #[serde(default)]
    pub critical: bool,
    /// How to check it.
    pub check: ServiceCheckSpec,
}

/// How a service is checked; which fields apply depends on `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCheckSpec {
    /// `http`, `tcp` or `ttl`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `http`: the URL to GET (`http://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `tcp`: `host:port` to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// `ttl`: the longest allowed gap between heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How often it is checked (default `[health] check_interval`; for
    /// `ttl` at most the ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// `http`/`tcp`: how long a check may take (default
    /// `[health] check_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What a service check does.
#[derive(Debug, Clone)]
enum Target {
    Http(Uri),
    Tcp(String),
    Ttl(Arc<Ttl>),
}

/// A TTL check's deadline, moved by heartbeats.
#[derive(Debug)]
pub(super) struct Ttl {
    ttl: Duration,
    deadline: Mutex<tokio::time::Instant>,
}

impl Ttl {
    /// Moves the deadline one ttl past now.
    pub(super) fn heartbeat(&self) {
        *self.deadline.lock() = tokio::time::Instant::now() + self.ttl;
    }
}

/// A validated registration: the check the aggregator runs.
#[derive(Debug, Clone)]
pub struct Service {
    /// The registration, normalised.
    pub registration: ServiceRegistration,
    check_name: String,
    target: Target,
    interval: Duration,
    timeout: Duration,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidParameter(msg.into())
}

fn duration(field: &str, s: Option<&str>, default: Duration) -> Result<Duration> {
    let Some(s) = s else { return Ok(default) };
    let d = humantime::parse_duration(s)
        .map_err(|e| bad(format!("check.{field} {s:?} is not a duration: {e}")))?;
    if d.is_zero() || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(bad(format!(
            "check.{field} {s:?} must be > 0 and whole milliseconds"
        )));
    }
    Ok(d)
}

fn parse_url(url: &str) -> Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(format!("check.url {url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(format!(
                "check.url {url:?}: only http:// is supported (scopemon speaks no TLS)"
            )));
        }
        _ => return Err(bad(format!("check.url {url:?} must be an http:// URL"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(format!("check.url {url:?} has no host")));
    }
    Ok(uri)
}

fn parse_addr(addr: &str) -> Result<String> {
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(addr.to_owned())
    } else {
        Err(bad(format!(
            "check.addr {addr:?} must be host:port (e.g. 127.0.0.1:5432)"
        )))
    }
}

fn check_name_chars(name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "service name {name:?} must match [A-Za-z0-9_.-]{{1,128}}"
        )))
    }
}

/// The fields a check type takes, for the "does not apply" message.
fn refuse_extra(spec: &ServiceCheckSpec, allowed: &[&str]) -> Result<()> {
    let given = [
        ("url", spec.url.is_some()),
        ("addr", spec.addr.is_some()),
        ("ttl", spec.ttl.is_some()),
        ("timeout", spec.timeout.is_some()),
    ];
    for (field, present) in given {
        if present && !allowed.contains(&field) {
            return Err(bad(format!(
                "check.{field} does not apply to a {} check",
                spec.kind
            )));
        }
    }
    Ok(())
}

fn required<'a>(field: &str, v: Option<&'a String>, kind: &str) -> Result<&'a str> {
    v.map(String::as_str)
        .ok_or_else(|| bad(format!("a {kind} check needs check.{field}")))
}

impl Service {
    /// Validates a registration (defaults from `cfg`) and normalises it.
    pub fn parse(reg: ServiceRegistration, cfg: &HealthConfig) -> Result<Service> {
        check_name_chars(&reg.name)?;
        let spec = &reg.check;
        let interval = duration("interval", spec.interval.as_deref(), cfg.check_interval)?;
        let timeout = duration("timeout", spec.timeout.as_deref(), cfg.check_timeout)?;
        let (target, interval) = match spec.kind.as_str() {
            "http" => {
                refuse_extra(spec, &["url", "timeout"])?;
                let url = required("url", spec.url.as_ref(), "http")?;
                (Target::Http(parse_url(url)?), interval)
            }
            "tcp" => {
                refuse_extra(spec, &["addr", "timeout"])?;
                let addr = required("addr", spec.addr.as_ref(), "tcp")?;
                (Target::Tcp(parse_addr(addr)?), interval)
            }
            "ttl" => {
                refuse_extra(spec, &["ttl"])?;
                let ttl = required("ttl", spec.ttl.as_ref(), "ttl")?;
                let ttl = duration("ttl", Some(ttl), cfg.check_interval)?;
                let state = Ttl {
                    ttl,
                    deadline: Mutex::new(tokio::time::Instant::now() + ttl),
                };
                (Target::Ttl(Arc::new(state)), interval.min(ttl))
            }
            other => {
                return Err(bad(format!(
                    "check.type {other:?} is not one of http, tcp, ttl"
                )));
            }
        };
        let ms = |d: Duration| format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut registration = reg.clone();
        let s = &mut registration.check;
        s.interval = Some(ms(interval));
        if let Target::Ttl(t) = &target {
            s.ttl = Some(ms(t.ttl));
        } else {
            s.timeout = Some(ms(timeout));
        }
        Ok(Service {
            check_name: format!("service:{}", reg.name),
            registration,
            target,
            interval,
            timeout,
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.registration.name
    }

    /// The TTL state of a `ttl` service.
    pub(super) fn ttl(&self) -> Option<Arc<Ttl>> {
        match &self.target {
            Target::Ttl(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl HealthCheck for Service {
    fn name(&self) -> &str {
        &self.check_name
    }
    fn component_type(&self) -> &str {
        "service"
    }
    fn critical(&self) -> bool {
        self.registration.critical
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            match &self.target {
                Target::Http(uri) => http_check(uri).await,
                Target::Tcp(addr) => tcp_check(addr).await,
                Target::Ttl(t) => ttl_check(t),
            }
        })
    }
}

async fn tcp_check(addr: &str) -> CheckResult {
    let started = Instant::now();
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => CheckResult::healthy("")
            .observed(started.elapsed().as_secs_f64() * 1e3, "ms")
            .meta("addr", addr),
        Err(e) => CheckResult::unhealthy(format!("cannot connect to {addr}: {e}")),
    }
}

async fn http_check(uri: &Uri) -> CheckResult {
    let started = Instant::now();
    match http_get(uri).await {
        Ok(code) if (200..300).contains(&code) => CheckResult::healthy("")
            .observed(started.elapsed().as_secs_f64() * 1e3, "ms")
            .meta("status_code", code),
        Ok(code) => {
            CheckResult::unhealthy(format!("GET {uri} answered {code}")).meta("status_code", code)
        }
        Err(e) => CheckResult::unhealthy(format!("GET {uri} failed: {e}")),
    }
}

/// The status code of `GET uri` (HTTP/1.1, no body read).
async fn http_get(uri: &Uri) -> std::result::Result<u16, String> {
    let host = uri.host().unwrap_or_default();
    // `[::1]` in a URL is `::1` to the resolver.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "scopemon-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let conn = std::pin::pin!(conn);
    tokio::select! {
        res = sender.send_request(req) => res.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
        end = conn => Err(match end {
            Ok(()) => "the connection closed before an answer".to_owned(),
            Err(e) => e.to_string(),
        }),
    }
}

fn ttl_check(t: &Ttl) -> CheckResult {
    let now = tokio::time::Instant::now();
    let deadline = *t.deadline.lock();
    let ttl_ms = format_duration_ms(i64::try_from(t.ttl.as_millis()).unwrap_or(i64::MAX));
    if now <= deadline {
        let left = deadline - now;
        CheckResult::healthy("").observed(left.as_secs_f64() * 1e3, "ms left")
    } else {
        CheckResult::unhealthy(format!("no heartbeat within the {ttl_ms} ttl"))
            .observed(-((now - deadline).as_secs_f64() * 1e3), "ms left")
    }
}

/// Every stored registration.
pub(super) fn load(store: &Store) -> Result<Vec<ServiceRegistration>> {
    let txn = store.begin_read()?;
    let mut out = Vec::new();
    for e in txn.open_table(SERVICES)?.iter()? {
        let (_, v) = e?;
        out.push(codec::decode_json("services", RECORD_V1, v.value())?);
    }
    Ok(out)
}

/// Stores (or replaces) a registration.
pub(super) fn save(store: &Store, reg: &ServiceRegistration) -> Result<()> {
    let bytes = codec::encode_json("services", RECORD_V1, reg)?;
    let txn = store.begin_write()?;
    txn.open_table(SERVICES)?
        .insert(reg.name.as_str(), bytes.as_slice())?;
    txn.commit()
}

/// Deletes a registration; false when there was none.
pub(super) fn remove(store: &Store, name: &str) -> Result<bool> {
    let txn = store.begin_write()?;
    let existed = txn.open_table(SERVICES)?.remove(name)?.is_some();
    txn.commit()?;
    Ok(existed)
}
