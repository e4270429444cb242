//! The configuration file: TOML text → `Config::from_toml` (serde, then
//! `Config::validate`), then what start-up derives from a valid one: the
//! alert rules (`alerts` parses `[[alerts.thresholds]]` when the engine
//! opens), each namespace's retention, each `[protection.<key>]` limiter
//! and breaker.
//!
//! Asserts: an invalid file is one `invalid_config` error; a valid one
//! validates again; retention never shrinks with coarser resolutions.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scopemon::internals::configured_rules;
use scopemon::{Config, Infrastructure};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses the file first
    };
    let config = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.code(), "invalid_config", "{e}");
            return;
        }
    };
    config.validate().expect("a parsed config validates again");
    let _ = configured_rules(&config.alerts);
    let namespaces = config.retention.namespaces.keys().map(String::as_str);
    for ns in std::iter::once("").chain(namespaces) {
        let r = config.retention_for(ns);
        r.check_order()
            .expect("validate checked every namespace's order");
        let _ = r.describe();
    }
    let infra = Infrastructure::builder().config(&config.protection).build();
    for key in config.protection.keys() {
        let _ = infra.settings(key);
    }
    let _ = infra.snapshot();
    let _ = config.precision();
});
