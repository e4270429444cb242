//! `kill -9` promises of the real daemon (issue 9, items 5 and 10).
//!
//! The crash loop runs `scopemon serve` with short flush, rollup and
//! compaction intervals while a client streams numbered samples, and kills
//! it with SIGKILL at a random moment (seeded; the seed is printed, set
//! `CRASH_SEED` to repeat a run) at least 20 times. After each kill: the
//! file passes `scopemon check` (a copy, taken while nothing runs) with
//! redb's integrity intact, the daemon starts on it again, and every
//! sample acknowledged before the last flush known to have completed is
//! there exactly once; what is missing was sent after it.
//!
//! Which samples a flush holds: the client reads `scopemon_flushes_total`
//! after each acknowledged batch. Flushes run one at a time and each takes
//! what was recorded when it starts, so once the counter has moved two
//! past that reading, a flush that started after the acknowledgement has
//! committed (durably). Within a series, a flush takes a prefix of what
//! the series was sent, so each series' stored count `n` and sum must be
//! those of its first `n` samples: a lost middle or a sample counted twice
//! breaks the sum.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::BIN;

const KILLS: usize = 20;
/// Series per segment (one segment per daemon run).
const SERIES: usize = 6;
const BATCH: usize = 36;

/// splitmix64: a seeded generator without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The daemon's completed-flush counter.
fn flushes(agent: &ureq::Agent, base: &str) -> Option<u64> {
    let text = agent
        .get(&format!("{base}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("scopemon_flushes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// POSTs one batch; `None` when the daemon is gone (killed mid-request).
fn ingest(agent: &ureq::Agent, base: &str, samples: &[Value]) -> Option<()> {
    let mut r = agent
        .post(&format!("{base}/v1/ingest"))
        .send_json(json!({ "samples": samples }))
        .ok()?;
    let status = r.status().as_u16();
    let body: Value = r.body_mut().read_json().ok()?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], samples.len(), "{body}");
    Some(())
}

/// `(count, sum)` stored for `tags` (`tag.k=v&...`), all time.
fn stored(agent: &ureq::Agent, base: &str, metric: &str, tags: &str) -> (u64, f64) {
    let url = format!(
        "{base}/v1/query?namespace=crash&metric={metric}&kind=resource_usage\
         &window=range&from=now-2d&to=now%2B1h&{tags}"
    );
    let mut r = agent.get(&url).call().expect("query");
    let status = r.status().as_u16();
    let body: Value = r.body_mut().read_json().expect("json");
    if status == 404 {
        return (0, 0.0); // the series never reached the store
    }
    assert_eq!(status, 200, "{url}: {body}");
    let p = &body["points"][0];
    (
        p["count"].as_u64().unwrap_or(0),
        p["sum"].as_f64().unwrap_or(0.0),
    )
}

/// One daemon run's samples, per series, in the order they were sent.
struct Segment {
    values: Vec<Vec<f64>>,
    /// Samples per series acknowledged before the last flush known done.
    confirmed: Vec<usize>,
    /// What each series held when first checked after the kill.
    found: Vec<(u64, f64)>,
}

impl Segment {
    fn check(&mut self, agent: &ureq::Agent, base: &str, seg: usize) {
        for k in 0..SERIES {
            let (n, sum) = stored(agent, base, "seq", &format!("tag.seg={seg}&tag.s={k}"));
            let sent = &self.values[k];
            assert!(
                n as usize >= self.confirmed[k],
                "segment {seg} series {k}: {n} stored, but {} were acknowledged before a completed flush",
                self.confirmed[k]
            );
            assert!(
                n as usize <= sent.len(),
                "segment {seg} series {k}: {n} stored, only {} sent (counted twice)",
                sent.len()
            );
            let want: f64 = sent[..n as usize].iter().sum();
            assert_eq!(
                sum, want,
                "segment {seg} series {k}: the sum of {n} stored is not that of the first {n} sent"
            );
            self.found.push((n, sum));
        }
    }

    /// Later runs (rollups, compactions, crashes) change nothing stored.
    fn recheck(&self, agent: &ureq::Agent, base: &str, seg: usize) {
        for k in 0..SERIES {
            let now = stored(agent, base, "seq", &format!("tag.seg={seg}&tag.s={k}"));
            assert_eq!(now, self.found[k], "segment {seg} series {k} changed later");
        }
    }
}

/// Streams batches into segment `seg` until the daemon dies; the daemon
/// is killed after `delay` by another thread.
fn stream(agent: &ureq::Agent, base: &str, seg: usize, next: &mut u64) -> Segment {
    let mut values = vec![Vec::new(); SERIES];
    let mut confirmed = vec![0; SERIES];
    // (flush counter read after the ack, samples per series acknowledged)
    let mut acked: Vec<(u64, Vec<usize>)> = Vec::new();
    loop {
        let now = now_ms();
        let batch: Vec<Value> = (0..BATCH)
            .map(|i| {
                let j = *next + i as u64;
                let k = (j as usize) % SERIES;
                let v = (1 + (j * 7919) % 1000) as f64;
                values[k].push(v);
                // Half in the open minute; half in minutes past the minute
                // retention (1h), which rollups write and compaction
                // deletes again (their hours and days keep them).
                let ts = if j.is_multiple_of(2) {
                    now
                } else {
                    now - (61 + (j % 4) as i64) * 60_000
                };
                json!({
                    "namespace": "crash", "metric": "seq", "kind": "resource_usage",
                    "value": v, "timestamp": ts,
                    "tags": {"seg": seg.to_string(), "s": k.to_string()},
                })
            })
            .collect();
        *next += BATCH as u64;
        if ingest(agent, base, &batch).is_none() {
            break;
        }
        let Some(f) = flushes(agent, base) else {
            break;
        };
        acked.push((f, values.iter().map(Vec::len).collect()));
        if let Some((_, c)) = acked.iter().rev().find(|(fa, _)| fa + 2 <= f) {
            confirmed.clone_from(c);
        }
    }
    Segment {
        values,
        confirmed,
        found: Vec::new(),
    }
}

fn kill_after(child: &Child, delay: Duration) -> std::thread::JoinHandle<()> {
    let pid = i32::try_from(child.id()).expect("pid");
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: plain kill(2) on our own child, which is not reaped
        // before this thread is joined.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    })
}

/// `scopemon check` on a copy of the stopped store: exit 0, redb's
/// integrity intact, no bad record.
fn check_copy(dir: &Path, round: usize) {
    let copy = dir.join("check");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::copy(
        dir.join("data").join(scopemon::DB_FILE),
        copy.join(scopemon::DB_FILE),
    )
    .expect("copy store");
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(&copy)
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "round {round}: check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("redb integrity ok") && stdout.contains(", 0 bad records"),
        "round {round}: {stdout}"
    );
}

fn write_config(dir: &Path, text: &str) {
    std::fs::write(dir.join("scopemon.toml"), text).expect("config");
}

const LOOP_CONFIG: &str = "[storage]\nflush_interval = \"250ms\"\ncompact_interval = \"600ms\"\n\
    [retention.default]\nminute = \"1h\"\n\
    [baseline]\nrecompute_interval = \"3s\"\n[health]\ncheck_interval = \"1s\"\n";

#[test]
fn kill_9_in_a_loop_loses_only_what_no_flush_took() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("crash loop seed {seed} (set CRASH_SEED={seed} to repeat)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), LOOP_CONFIG);
    let agent = agent();
    let started = Instant::now();
    let mut segments: Vec<Segment> = Vec::new();
    let mut next = 0u64;
    let (mut child, mut base) = common::spawn_serve(dir.path(), Stdio::null());
    for round in 0..KILLS {
        let delay = Duration::from_millis(200 + rng.below(1_800));
        let killer = kill_after(&child, delay);
        let seg = stream(&agent, &base, round, &mut next);
        killer.join().expect("killer");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: {status}");
        segments.push(seg);
        check_copy(dir.path(), round);
        (child, base) = common::spawn_serve(dir.path(), Stdio::null());
        segments[round].check(&agent, &base, round);
    }
    // Nothing stored changed in later runs; a clean stop keeps it all.
    for (seg, s) in segments.iter().enumerate() {
        s.recheck(&agent, &base, seg);
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(child.wait().expect("wait").success());
    check_copy(dir.path(), KILLS);
    let confirmed: usize = segments.iter().flat_map(|s| &s.confirmed).sum();
    let sent: usize = segments
        .iter()
        .flat_map(|s| s.values.iter().map(Vec::len))
        .sum();
    let kept: u64 = segments.iter().flat_map(|s| &s.found).map(|f| f.0).sum();
    eprintln!(
        "{KILLS} kills in {:?}: {sent} samples sent, {confirmed} confirmed flushed, {kept} kept",
        started.elapsed()
    );
    // The loop must have had flushes to check against.
    assert!(
        segments
            .iter()
            .filter(|s| s.confirmed.iter().sum::<usize>() > 0)
            .count()
            >= KILLS / 2,
        "too few runs saw a flush complete"
    );
}

/// Samples of the still-open minute (so no rollup or compaction, whose
/// commits are durable, writes them) must survive a kill once a flush
/// took them: the flush's own commit is durable.
#[test]
fn a_kill_right_after_a_flush_loses_nothing_of_the_open_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the flush writes while the test watches.
    write_config(
        dir.path(),
        "[storage]\nflush_interval = \"200ms\"\ncompact_interval = \"1h\"\n\
         [baseline]\nrecompute_interval = \"1h\"\n[health]\ncheck_interval = \"1h\"\n",
    );
    let agent = agent();
    for round in 0..3 {
        let (mut child, base) = common::spawn_serve(dir.path(), Stdio::null());
        // Two minutes ahead: the minute stays open through the round.
        let ts = now_ms() + 120_000;
        let batch: Vec<Value> = (0..50)
            .map(|i| {
                json!({
                    "namespace": "crash", "metric": "open", "kind": "resource_usage",
                    "value": i + 1, "timestamp": ts,
                    "tags": {"round": round.to_string()},
                })
            })
            .collect();
        ingest(&agent, &base, &batch).expect("ingest");
        let f0 = flushes(&agent, &base).expect("metrics");
        let deadline = Instant::now() + Duration::from_secs(30);
        while flushes(&agent, &base).expect("metrics") < f0 + 2 {
            assert!(Instant::now() < deadline, "no flush within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        let (mut child, base) = common::spawn_serve(dir.path(), Stdio::null());
        let got = stored(&agent, &base, "open", &format!("tag.round={round}"));
        assert_eq!(
            got,
            (50, 1275.0),
            "round {round}: samples a completed flush took were lost by kill -9"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}
