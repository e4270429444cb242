//! Resident memory of a server over time: `VmRSS` from `/proc/PID/status`
//! every 250 ms on a thread of its own, from before the load until the
//! bench stops the sampler (normally some seconds after the load).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sampling period (the "sampled every 250 ms").
pub const PERIOD: Duration = Duration::from_millis(250);

/// `VmRSS` of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A running sampler.
pub struct Sampler {
    start: Instant,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(Duration, u64)>>,
}

/// What a sampler saw; times are from the start of the sampler.
pub struct Trace {
    pub samples: Vec<(Duration, u64)>,
    /// When the load stopped.
    pub load_end: Duration,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if let Some(b) = rss_bytes(pid) {
                    out.push((start.elapsed(), b));
                }
                next += PERIOD;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            out
        });
        Sampler {
            start,
            stop,
            handle,
        }
    }

    /// Time since the sampler started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops sampling; `load_end` is [`Sampler::elapsed`] when the load
    /// stopped.
    pub fn finish(self, load_end: Duration) -> Trace {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.join().expect("rss sampler panicked");
        Trace { samples, load_end }
    }
}

impl Trace {
    /// Highest resident memory seen, during the load and after it.
    pub fn peak(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// Highest resident memory seen while the load ran.
    pub fn peak_during_load(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.0 <= self.load_end)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    }

    /// The last sample (taken when the sampler stopped).
    pub fn last(&self) -> u64 {
        self.samples.last().map_or(0, |s| s.1)
    }

    /// The first sample at or after `secs` past the end of the load.
    pub fn after(&self, secs: f64) -> Option<u64> {
        let at = self.load_end + Duration::from_secs_f64(secs);
        self.samples.iter().find(|s| s.0 >= at).map(|s| s.1)
    }

    /// Resident MiB every `step` seconds, relative to the end of the load
    /// (negative: during it), for a printed timeline.
    pub fn timeline(&self, step: f64) -> String {
        let mut out = String::new();
        let mut next = 0.0;
        for &(t, b) in &self.samples {
            let secs = t.as_secs_f64();
            if secs + 1e-9 >= next {
                let rel = secs - self.load_end.as_secs_f64();
                out.push_str(&format!("{rel:+.0}s:{:.0} ", b as f64 / 1048576.0));
                next = secs + step;
            }
        }
        out.trim_end().to_owned()
    }
}
