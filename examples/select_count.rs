//! A fixed amount of query work over many series of one metric, for
//! instruction counts of a tag-filtered query (selection of one series
//! among many) without timing noise:
//!
//! ```sh
//! cargo build --release --example select_count
//! for n in 1000 2000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/select_count 10000 $n 2>&1 | grep refs
//! done
//! ```
//!
//! The difference between the two totals, divided by 1,000, is the
//! instructions one `window=range` day query for `host=h42` costs (set-up
//! and shutdown cancel out). Each series holds one rolled-up minute two
//! hours ago and one flushed delta five minutes ago.

use std::sync::Arc;

use scopemon::{
    Config, DAY_MS, HOUR_MS, Kind, MINUTE_MS, ManualClock, Monitor, Outcome, QuerySpec, Sample,
    Tags, Window,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().as_deref().unwrap_or("10000").parse()?;
    let n: u64 = args.next().as_deref().unwrap_or("1000").parse()?;
    let now: i64 = 1_800_000_000_000;
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_data_dir(dir.path());
    config.storage.series_limit_per_namespace = series.max(1) + 10;
    let clock = ManualClock::new(now - 2 * HOUR_MS);
    let m = Monitor::builder(config)
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()?;
    let hosts: Vec<String> = (0..series).map(|i| format!("h{i}")).collect();
    let tags: Vec<[(&str, &str); 1]> = hosts.iter().map(|h| [("host", h.as_str())]).collect();
    for (at, rollup) in [(now - 2 * HOUR_MS, true), (now - 5 * MINUTE_MS, false)] {
        clock.set(at + 1_000);
        let samples = tags.iter().flat_map(|t| {
            (0..5).map(move |k| Sample {
                namespace: "bench",
                metric: "api.latency",
                kind: Kind::Latency,
                value: 500.0 + 100.0 * k as f64,
                tags: t,
                outcome: Outcome::Ok,
                timestamp_ms: Some(at),
            })
        });
        let (_, rejected) = m.record_batch(samples);
        if let Some((_, e)) = rejected.first() {
            return Err(format!("sample refused: {e}").into());
        }
        clock.set(at + 2 * MINUTE_MS);
        m.flush()?;
        if rollup {
            m.rollup()?;
        }
    }
    clock.set(now);
    let spec = QuerySpec {
        namespace: "bench".into(),
        metric: "api.latency".into(),
        kind: Kind::Latency,
        window: Window::Range,
        from: now - DAY_MS,
        to: now,
        tags: Tags::new(&[("host", "h42")])?,
    };
    let mut count = 0;
    for _ in 0..n {
        count += m.query(&spec)?.points.first().map_or(0, |p| p.count);
    }
    eprintln!("{series} series, {n} queries, {count} samples counted");
    m.close()?;
    Ok(())
}
