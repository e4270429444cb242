//! The timed load: K client threads, one keep-alive connection each,
//! batches back to back until the deadline or the backfill's total.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ingest::http::Conn;
use crate::ingest::procs::{process_cpu, self_cpu};
use crate::{Gen, Request, Settings, Stamps, TS_WINDOW_MS, Target};
// ---------------------------------------------------------------- load

struct ThreadResult {
    accepted: u64,
    batches: u64,
    retries: u64,
    latency_us: Histogram<u64>,
    finished: Instant,
}

pub struct LoadResult {
    pub accepted: u64,
    pub batches: u64,
    /// Bodies resent after a `429`/`503` with `Retry-After`.
    pub retries: u64,
    /// Unix ms of the first sample timestamp handed out.
    pub ts_first: u64,
    /// Unix ms just past the last sample timestamp handed out.
    pub ts_end: u64,
    /// The timestamp window wrapped: some timestamps were sent twice.
    pub wrapped: bool,
    /// Backfill: every one of `LOAD_SAMPLES` was acknowledged.
    pub complete: bool,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub server_cpu: Option<Duration>,
    pub client_cpu: Duration,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

fn check_response(target: Target, status: u16, body: &[u8], batch: usize) -> Result<(), String> {
    let text = || {
        String::from_utf8_lossy(body)
            .chars()
            .take(600)
            .collect::<String>()
    };
    match target {
        Target::Influx | Target::Vm => {
            if status == 204 {
                Ok(())
            } else {
                Err(format!("{} answered {status}: {}", target.name(), text()))
            }
        }
        Target::Scopemon => {
            if status != 200 {
                return Err(format!("scopemon answered {status}: {}", text()));
            }
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("bad JSON ({e}): {}", text()))?;
            let accepted = v.get("accepted").and_then(|a| a.as_u64());
            let rejected = v.get("rejected").and_then(|r| r.as_array()).map(Vec::len);
            if accepted == Some(batch as u64) && rejected == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "expected {batch} accepted and none rejected: {}",
                    text()
                ))
            }
        }
    }
}

/// Sends one request until it is accepted: a `429`/`503` with
/// `Retry-After` from scopemon is waited out and the same body resent.
/// Returns the resends.
fn send(conn: &mut Conn, target: Target, req: &[u8], batch: usize) -> Result<u64, String> {
    let mut retries = 0;
    loop {
        let status = conn
            .round_trip(req)
            .map_err(|e| format!("request failed: {e}"))?;
        if target == Target::Scopemon
            && (status == 429 || status == 503)
            && let Some(secs) = conn.retry_after
        {
            retries += 1;
            std::thread::sleep(Duration::from_secs(secs.min(30)));
            continue;
        }
        check_response(target, status, &conn.body, batch)?;
        return Ok(retries);
    }
}

/// One client thread: batches back to back until the deadline or, in
/// backfill, until the shared counter passes the sample total.
fn client(
    mut conn: Conn,
    mut pool: Vec<Request>,
    target: Target,
    (seq, stamps, barrier): (Arc<AtomicU64>, Arc<Stamps>, Arc<Barrier>),
    (batch, total, duration): (usize, Option<u64>, Duration),
) -> Result<ThreadResult, String> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("hist");
    let (mut accepted, mut batches, mut retries) = (0u64, 0u64, 0u64);
    barrier.wait();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let first = seq.fetch_add(batch as u64, Ordering::Relaxed);
        if total.is_some_and(|t| first >= t) {
            break;
        }
        let k = (first / batch as u64) as usize % pool.len();
        let req = &mut pool[k];
        stamps.apply(req, first, batch as u64);
        let sent = Instant::now();
        retries += send(&mut conn, target, &req.bytes, batch)?;
        hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        accepted += batch as u64;
        batches += 1;
    }
    Ok(ThreadResult {
        accepted,
        batches,
        retries,
        latency_us: hist,
        finished: Instant::now(),
    })
}

/// Runs the load against `addr`; `server_pid` is used for CPU time.
pub fn run_load(
    target: Target,
    addr: SocketAddr,
    s: &Settings,
    gens: &[Vec<Gen>],
    server_pid: u32,
) -> LoadResult {
    let t_build = Instant::now();
    let pool: Vec<Request> = gens
        .iter()
        .map(|g| Request::build(target, s.mode, addr, g))
        .collect();
    println!(
        "  {} threads x {} pre-built requests of {} samples ({} KiB each), built in {:.2?}",
        s.threads,
        s.pool,
        s.batch,
        pool[0].bytes.len() / 1024,
        t_build.elapsed()
    );
    let stamps = Arc::new(Stamps::new(s));
    let seq = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(s.threads + 1));
    let duration = Duration::from_secs_f64(s.secs);
    let handles: Vec<_> = (0..s.threads)
        .map(|_| {
            let conn = Conn::connect(addr).expect("connect to the server");
            let shared = (seq.clone(), stamps.clone(), barrier.clone());
            let pool = pool.clone();
            let limits = (s.batch, s.samples, duration);
            std::thread::spawn(move || client(conn, pool, target, shared, limits))
        })
        .collect();

    let cpu_before = process_cpu(server_pid);
    let self_before = self_cpu();
    barrier.wait();
    let start = Instant::now();
    let (mut accepted, mut batches, mut retries) = (0, 0, 0);
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("hist");
    let mut last = start;
    let mut errors = Vec::new();
    for h in handles {
        match h.join().expect("load thread panicked") {
            Ok(r) => {
                accepted += r.accepted;
                batches += r.batches;
                retries += r.retries;
                latency_us.add(&r.latency_us).expect("merge histograms");
                last = last.max(r.finished);
            }
            Err(e) => errors.push(e),
        }
    }
    let elapsed = last - start;
    let cpu_after = process_cpu(server_pid);
    let client_cpu = self_cpu().saturating_sub(self_before);
    if !errors.is_empty() {
        panic!("{} load failed: {}", target.name(), errors.join("; "));
    }
    let wrapped = stamps.wrapped();
    if wrapped {
        println!(
            "  note: more than {TS_WINDOW_MS} samples were sent; timestamps wrapped and repeat"
        );
    }
    let (ts_first, ts_end) = stamps.span_ms(seq.load(Ordering::Relaxed));
    let complete = s.samples.is_none_or(|t| accepted == t);
    if !complete {
        println!("  note: LOAD_SECS ended the backfill before all samples were sent");
    }
    LoadResult {
        accepted,
        batches,
        retries,
        ts_first,
        ts_end,
        wrapped,
        complete,
        elapsed,
        latency_us,
        server_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
        client_cpu,
    }
}
