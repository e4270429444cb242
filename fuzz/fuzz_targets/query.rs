//! The query string of `GET /v1/query`: decoded and checked exactly as the
//! handler does (`scopemon::internals::query_spec_of`: strict parameters,
//! `window`, `kind`, `tag.<k>=<v>`, and `from`/`to` as `now`, `now-5m`,
//! Unix seconds or RFC 3339), then run against a monitor holding a few
//! series.
//!
//! Asserts: a parsed range has both names, `from < to` is left to the
//! query to refuse, and every time the parser accepted prints (RFC 3339)
//! and parses back to itself.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use scopemon::internals::query_spec_of;
use scopemon::{Kind, Outcome, Sample, format_ts, parse_query_time};

fn seed(m: &scopemon::Monitor) {
    static SEEDED: Once = Once::new();
    SEEDED.call_once(|| {
        for (i, metric) in ["api.get", "api.put"].iter().enumerate() {
            for back in 0..5 {
                let s = Sample {
                    namespace: "prod",
                    metric,
                    kind: Kind::Latency,
                    value: 1.0 + i as f64,
                    tags: &[("host", "a")],
                    outcome: Outcome::Ok,
                    timestamp_ms: Some(common::NOW_MS - back * 3_600_000),
                };
                m.record(&s).expect("a seed sample");
            }
        }
        m.flush().expect("flushing the seed samples");
    });
}

fuzz_target!(|query: &[u8]| {
    let mut target = b"/v1/query?".to_vec();
    target.extend_from_slice(query);
    let Ok(uri) = http::Uri::try_from(target) else {
        return; // hyper refuses such a request line before any handler
    };
    let m = &common::fixture().monitor;
    seed(m);
    let Ok(spec) = query_spec_of(&uri, common::NOW_MS) else {
        return;
    };
    assert!(!spec.namespace.is_empty() && !spec.metric.is_empty());
    // The parser refuses times it cannot print back.
    let back = parse_query_time(&format_ts(spec.to), common::NOW_MS);
    assert_eq!(back.ok(), Some(spec.to), "to = {}", spec.to);
    if let Ok(from) = parse_query_time(&format_ts(spec.from), common::NOW_MS) {
        assert_eq!(from, spec.from);
    }
    let _ = m.query(&spec);
});
