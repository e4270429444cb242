//! A fixed amount of recording work, for instruction counts that compare
//! two versions of the record path without timing noise:
//!
//! ```sh
//! cargo build --release --example record_count
//! for n in 1000000 2000000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/record_count handle $n 2>&1 | grep refs   # or lookup, prometheus
//! done
//! ```
//!
//! The difference between the two totals, divided by 1,000,000, is the
//! instructions one call costs (set-up and shutdown cancel out).

use std::time::Duration;

use scopemon::{Config, Monitor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "handle".into());
    let n: u64 = args.next().as_deref().unwrap_or("1000000").parse()?;
    let dir = tempfile::tempdir()?;
    let m = Monitor::builder(Config::with_data_dir(dir.path()))
        .background(false)
        .open()?;
    match mode.as_str() {
        "handle" => {
            let h = m.latency_handle("bench", "hot.path", &[("host", "a")])?;
            for i in 0..n {
                h.record(Duration::from_nanos(800 + (i & 1023)));
            }
        }
        "lookup" => {
            for i in 0..n {
                let d = Duration::from_nanos(800 + (i & 1023));
                m.record_latency("bench", "hot.path", d, &[("host", "a")])?;
            }
        }
        "prometheus" => {
            // The peer of the issue's ratio, the same values.
            let h = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
                "hot_path", "peer",
            ))?;
            for i in 0..n {
                h.observe(Duration::from_nanos(800 + (i & 1023)).as_secs_f64());
            }
        }
        other => return Err(format!("mode {other:?}: handle, lookup or prometheus").into()),
    }
    m.close()?;
    Ok(())
}
