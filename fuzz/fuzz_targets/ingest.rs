//! The body of `POST /v1/ingest`, from bytes to accepted and rejected
//! samples: the handler's own decode, parse and record path
//! (`scopemon::internals::ingest_body`), into a real monitor.
//!
//! Asserts: a refused body is `invalid_json`; otherwise every sample is
//! either accepted or rejected once, rejections come in index order with
//! a non-empty error code, and the monitor's series stay within its limit.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use scopemon::internals::ingest_body;

fuzz_target!(|body: &[u8]| {
    let f = common::fixture();
    let m = &f.monitor;
    match ingest_body(m, body) {
        Err(code) => assert_eq!(code, "invalid_json"),
        Ok(o) => {
            assert_eq!(o.accepted + o.rejected.len(), o.samples, "{o:?}");
            for pair in o.rejected.windows(2) {
                assert!(pair[0].0 < pair[1].0, "rejections out of order: {o:?}");
            }
            for (index, code) in &o.rejected {
                assert!(*index < o.samples && !code.is_empty(), "{o:?}");
            }
        }
    }
    assert!(m.stats().series <= m.config().storage.series_limit);
    if m.at_hot_cap() {
        // What the woken flush task does in the daemon.
        m.flush().expect("flushing the fixture's hot data");
    }
});
