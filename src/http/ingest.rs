//! `POST /v1/ingest`: a JSON batch of samples. Whole-body problems (bad
//! JSON, too large) reject the body; a bad sample is reported by index and
//! the rest of the batch is stored.
//!
//! Each sample is kept as a raw JSON slice first and decoded on its own, so
//! one sample of the wrong shape does not spoil the batch; strings are
//! borrowed from the body wherever they contain no escapes.

use std::borrow::Cow;
use std::fmt;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::error::Error;
use crate::model::{Kind, Outcome};
use crate::monitor::{Monitor, Sample};

pub(super) fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .layer(DefaultBodyLimit::max(max_body))
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    samples: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleIn<'a> {
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    value: f64,
    #[serde(borrow, default)]
    tags: TagsIn<'a>,
    #[serde(borrow, default)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<TimestampIn<'a>>,
}

/// Tags as a JSON object, kept in order and borrowed.
#[derive(Default)]
struct TagsIn<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for TagsIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TagsIn<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string tags")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<TagsIn<'a>, M::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<Cow<'de, str>, Cow<'de, str>>()? {
                    v.push((k, val));
                }
                Ok(TagsIn(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TagsIn<'a>, E> {
                Ok(TagsIn(Vec::new()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Integer Unix milliseconds or an RFC 3339 string.
enum TimestampIn<'a> {
    Millis(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TimestampIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TimestampIn<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("integer Unix milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimestampIn::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(TimestampIn::Millis)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TimestampIn::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimestampIn::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Serialize)]
struct Rejected {
    index: usize,
    error: &'static str,
    message: String,
}

#[derive(Serialize)]
struct IngestResponse {
    accepted: usize,
    rejected: Vec<Rejected>,
}

/// A sample decoded from JSON, owning nothing but its tag list.
struct Parsed<'a> {
    s: SampleIn<'a>,
    kind: Kind,
    outcome: Outcome,
    timestamp_ms: Option<i64>,
}

fn parse_sample(raw: &RawValue) -> Result<Parsed<'_>, Error> {
    let s: SampleIn<'_> = serde_json::from_str(raw.get()).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("number out of range") {
            Error::InvalidValue(format!("value is not a finite number: {msg}"))
        } else {
            Error::InvalidSample(msg)
        }
    })?;
    let kind = match &s.kind {
        None => Kind::Latency,
        Some(k) => k.parse()?,
    };
    let outcome = match s.outcome.as_deref() {
        None | Some("ok") => Outcome::Ok,
        Some("error") => Outcome::Error,
        Some(other) => {
            return Err(Error::InvalidSample(format!(
                "outcome {other:?} must be \"ok\" or \"error\""
            )));
        }
    };
    let timestamp_ms = match &s.timestamp {
        None => None,
        Some(TimestampIn::Millis(ms)) => Some(*ms),
        Some(TimestampIn::Text(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    Error::InvalidSample(format!(
                        "timestamp {t:?} is not RFC 3339 or Unix milliseconds"
                    ))
                })?
                .timestamp_millis(),
        ),
    };
    Ok(Parsed {
        s,
        kind,
        outcome,
        timestamp_ms,
    })
}

/// The body, or the answer that refuses it whole (too large, unreadable).
fn body_or_refusal(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body exceeds server.max_body_size ({} bytes); send smaller batches",
                    st.monitor.config().server.max_body_size
                ),
            )
        } else {
            ApiError::new(rej.status(), "invalid_body", rej.body_text())
        }
    })
}

/// The batch as raw samples (`400 invalid_json` when it is not one).
fn decode(body: &[u8]) -> Result<Body<'_>, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m);
    let text = std::str::from_utf8(body).map_err(|e| invalid(format!("body is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| invalid(format!("expected {{\"samples\": [...]}}: {e}")))
}

async fn ingest(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body_or_refusal(&st, body) {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    // A store that cannot write is the cause of hot data piling up to its
    // cap, so it is named first.
    if let Some(e) = st.monitor.storage_refusal() {
        return insufficient_storage(&e);
    }
    if st.monitor.at_hot_cap() {
        return backpressure(&st);
    }
    if let Err(e) = st.monitor.check_operation_allowed() {
        return memory_critical(&e);
    }
    match ingest_batch(&st.monitor, &body) {
        Ok((_, answer)) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Everything ingest does with a body after the admission checks: decode
/// the batch, parse each sample, record those that pass. Returns the
/// number of samples in the batch and the answer; `Err` refuses the body
/// whole (nothing of it was stored).
fn ingest_batch(monitor: &Monitor, body: &[u8]) -> Result<(usize, IngestResponse), ApiError> {
    let batch = decode(body)?;
    let mut rejected = Vec::new();
    let mut parsed = Vec::with_capacity(batch.samples.len());
    for (i, raw) in batch.samples.iter().enumerate() {
        match parse_sample(raw) {
            Ok(p) => parsed.push((i, p)),
            Err(e) => rejected.push(Rejected {
                index: i,
                error: e.code(),
                message: e.to_string(),
            }),
        }
    }
    let tag_lists: Vec<Vec<(&str, &str)>> = parsed
        .iter()
        .map(|(_, p)| {
            p.s.tags
                .0
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref()))
                .collect()
        })
        .collect();
    let samples = parsed.iter().zip(&tag_lists).map(|((_, p), tags)| Sample {
        namespace: &p.s.namespace,
        metric: &p.s.metric,
        kind: p.kind,
        value: p.s.value,
        tags,
        outcome: p.outcome,
        timestamp_ms: p.timestamp_ms,
    });
    let (accepted, errors) = monitor.record_batch(samples);
    rejected.extend(errors.into_iter().map(|(j, e)| Rejected {
        index: parsed[j].0,
        error: e.code(),
        message: e.to_string(),
    }));
    rejected.sort_by_key(|r| r.index);
    Ok((batch.samples.len(), IngestResponse { accepted, rejected }))
}

/// What `POST /v1/ingest` makes of a body once admitted: the hidden entry
/// point of the ingest fuzz target (`scopemon::internals::ingest_body`).
#[doc(hidden)]
#[derive(Debug)]
pub struct IngestOutcome {
    /// Samples in the batch.
    pub samples: usize,
    /// Samples stored.
    pub accepted: usize,
    /// (index, error code) of each refused sample, by index.
    pub rejected: Vec<(usize, &'static str)>,
}

/// Runs `body` through ingest's decode, parse and record path into
/// `monitor`, as the handler does after its admission checks; `Err` is the
/// error code of a whole-body refusal.
#[doc(hidden)]
pub fn ingest_body(monitor: &Monitor, body: &[u8]) -> Result<IngestOutcome, &'static str> {
    let (samples, answer) = ingest_batch(monitor, body).map_err(|e| e.code)?;
    Ok(IngestOutcome {
        samples,
        accepted: answer.accepted,
        rejected: answer
            .rejected
            .into_iter()
            .map(|r| (r.index, r.error))
            .collect(),
    })
}

/// `429 ingest_backpressure`: hot data is at `storage.max_hot_bytes` while
/// the (already woken) flush catches up; nothing of the body was stored.
fn backpressure(st: &AppState) -> Response {
    let cap = st.monitor.config().storage.max_hot_bytes;
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "ingest_backpressure",
        format!(
            "unflushed data is at storage.max_hot_bytes ({}); nothing of this body was stored: resend it after Retry-After",
            bytesize::ByteSize::b(cap)
        ),
    )
    .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// `507 insufficient_storage`: the store cannot take writes (a full disk,
/// or below `storage.min_free_space`); nothing of the body was stored.
/// Ingest resumes by itself once a write succeeds again.
fn insufficient_storage(e: &Error) -> Response {
    let mut r =
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.code(), e.to_string()).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("10"),
    );
    r
}

/// `503 memory_pressure_critical`: the process is at critical memory
/// pressure; nothing of the body was stored (queries and health still
/// answer).
fn memory_critical(e: &Error) -> Response {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        e.code(),
        format!("{e}; nothing of this body was stored: resend it after Retry-After"),
    )
    .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    r
}
