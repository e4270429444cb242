//! A full disk, deterministically: the store sits on a redb backend whose
//! writes fail with `ENOSPC` once a byte budget is spent
//! ([`scopemon::DiskBudget`]), and whose `fsync`s can fail after the data
//! reached the file (a commit that errs but landed).
//!
//! Promises held here: HTTP ingest answers `507 insufficient_storage` and
//! keeps nothing of the body while writes fail; queries and health keep
//! answering (`/readyz` 503, `/health/quick` NOT_OK); once space is back
//! scopemon recovers by itself; every sample is counted exactly once
//! whether the failed commit landed or not; a clean shutdown on a full
//! disk says how much it could not write. (tests/full_disk_tmpfs.rs does
//! the same on a real, small tmpfs through the binary.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::T0;
use scopemon::{
    Config, DiskBudget, HealthAggregator, Kind, ManualClock, Monitor, QuerySpec, Tags, Window,
};

const UNLIMITED: u64 = u64::MAX;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::with_data_dir(dir);
    // The budget, not the host's free space, decides here.
    c.storage.min_free_space = 0;
    c
}

fn open(dir: &std::path::Path, clock: &ManualClock, budget: &DiskBudget) -> Monitor {
    Monitor::builder(config(dir))
        .clock(Arc::new(clock.clone()))
        .background(false)
        .disk_budget(budget.clone())
        .open()
        .expect("open monitor")
}

/// A store on a temp dir with a [`DiskBudget`] (unlimited until a test
/// sets it), holding 10 samples of 1,000 µs already flushed.
struct Rig {
    dir: tempfile::TempDir,
    clock: ManualClock,
    budget: DiskBudget,
}

impl Rig {
    fn flushed_once() -> (Rig, Monitor) {
        let rig = Rig {
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(T0 + 5_000),
            budget: DiskBudget::new(UNLIMITED),
        };
        let m = open(rig.dir.path(), &rig.clock, &rig.budget);
        record(&m, 10, 1_000);
        m.flush().expect("flush");
        (rig, m)
    }

    /// Closes `m` cleanly and opens the store again.
    fn reopen(&self, m: Monitor) -> Monitor {
        m.close().expect("close");
        drop(m);
        open(self.dir.path(), &self.clock, &self.budget)
    }
}

/// Every `api` latency in `prod`, one whole-range point.
fn spec() -> QuerySpec {
    QuerySpec {
        namespace: "prod".into(),
        metric: "api".into(),
        kind: Kind::Latency,
        window: Window::Range,
        from: T0 - 10 * 60_000,
        to: T0 + 10 * 60_000,
        tags: Tags::empty(),
    }
}

/// (count, sum) of every `api` latency in `prod`; a failed query fails the
/// test (queries must keep answering on a full disk).
fn totals(m: &Monitor) -> (u64, f64) {
    let r = m.query(&spec()).expect("queries keep answering");
    r.points.first().map_or((0, 0.0), |p| (p.count, p.sum))
}

/// Records `n` latencies of `value` µs into one series.
fn record(m: &Monitor, n: usize, value: u64) {
    for _ in 0..n {
        m.record_latency("prod", "api", Duration::from_micros(value), &[])
            .expect("library recording is never refused for the disk");
    }
}

/// Records one latency of `value` µs into each of `n` new series (tag
/// `host=<tag><i>`): enough new records that a flush needs new space, as
/// redb first reuses the pages it freed inside the file.
fn record_wide(m: &Monitor, tag: &str, n: usize, value: u64) {
    for i in 0..n {
        let host = format!("{tag}{i}");
        m.record_latency(
            "prod",
            "api",
            Duration::from_micros(value),
            &[("host", &host)],
        )
        .expect("library recording is never refused for the disk");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_keeps_reads_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 5_000);
    let budget = DiskBudget::new(UNLIMITED);
    let m = Arc::new(open(dir.path(), &clock, &budget));
    record(&m, 100, 1_000);
    m.flush().expect("flush with space");

    // The disk fills up: the next flush fails, its samples stay hot.
    budget.set(0);
    record_wide(&m, "a", 2_000, 2_000);
    let err = m.flush().expect_err("a flush on a full disk fails");
    assert!(err.to_string().contains("No space left"), "{err}");
    // A second try fails too, after reopening the store redb now refuses
    // writes on.
    m.flush().expect_err("still full");
    let s = m.stats();
    assert!(s.store_write_failures >= 2 && s.store_reopens >= 1, "{s:?}");
    assert_eq!(
        totals(&m),
        (2_100, 4_100_000.0),
        "every accepted sample, once"
    );

    // HTTP ingest answers 507 and keeps nothing; reads and health answer.
    let health = HealthAggregator::with_builtin_checks(m.clone());
    health.start().await.expect("health");
    let app = scopemon::router(health.clone());
    let body = json!({"samples": [{"namespace": "prod", "metric": "api", "value": 9}]});
    let (status, _, text) = common::call(&app, "POST", "/v1/ingest", &body.to_string(), None).await;
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("insufficient_storage"), "{text}");
    let q = "/v1/query?namespace=prod&metric=api&window=range&from=now-1h";
    let (status, _, text) = common::call(&app, "GET", q, "", None).await;
    assert_eq!(status, 200, "queries keep answering: {text}");
    health.fresh_system_health().await;
    let (status, _, text) = common::call(&app, "GET", "/readyz", "", None).await;
    assert_eq!(status, 503, "not ready while writes fail: {text}");
    let (_, _, text) = common::call(&app, "GET", "/health/quick", "", None).await;
    assert!(text.contains("NOT_OK"), "{text}");
    assert_eq!(
        totals(&m),
        (2_100, 4_100_000.0),
        "the 507 body kept nothing"
    );

    // Space comes back: the next flush (the background task's job) writes
    // everything, and ingest resumes without a restart.
    budget.set(UNLIMITED);
    m.flush().expect("flush once space is back");
    assert!(m.storage_refusal().is_none(), "writes succeed again");
    // Failed writes and reopens are counted; a healthy flush adds to
    // neither (the store is not reopened again once it takes writes).
    let healed = m.stats();
    assert!(healed.store_reopens >= 2, "{healed:?}");
    record(&m, 1, 1_000);
    m.flush().expect("a healthy flush");
    let s = m.stats();
    assert_eq!(
        (s.store_write_failures, s.store_reopens),
        (healed.store_write_failures, healed.store_reopens)
    );
    let (status, _, text) = common::call(&app, "POST", "/v1/ingest", &body.to_string(), None).await;
    assert_eq!(status, 200, "{text}");
    health.fresh_system_health().await;
    let (status, _, text) = common::call(&app, "GET", "/readyz", "", None).await;
    assert_eq!(status, 200, "ready again: {text}");
    health.stop().await;
    m.close().expect("clean shutdown");
    drop(app);
    drop(health);
    drop(m);

    let m = open(dir.path(), &clock, &DiskBudget::new(UNLIMITED));
    assert_eq!(totals(&m), (2_102, 4_101_009.0), "all of it on disk, once");
}

#[test]
fn a_failed_commit_that_landed_is_counted_once() {
    let (rig, m) = Rig::flushed_once();
    let budget = &rig.budget;
    record(&m, 20, 3_000);
    // The commit's data reaches the file but its fsync reports an error:
    // redb then refuses writes until reopened. The flush reopens, finds
    // its sequence number in the file and drops the inflight copy.
    budget.fail_next_syncs(1);
    let _ = m.flush();
    assert_eq!(totals(&m), (30, 70_000.0), "read once, not twice");
    record(&m, 1, 5_000);
    m.flush().expect("the store takes writes again");
    assert_eq!(totals(&m), (31, 75_000.0));
    let m = rig.reopen(m);
    assert_eq!(totals(&m), (31, 75_000.0), "on disk once");
}

/// The commit's fsync fails and the disk stops answering reads at once:
/// the store cannot be reopened nor the commit read back, so the flush
/// stays unsettled. Queries refuse rather than guess; once reads come back
/// the next flush reopens, settles by the sequence number and counts
/// every sample once (the path `flush::recover` takes).
#[test]
fn an_unsettled_flush_is_settled_by_the_next_once_reads_come_back() {
    let (rig, m) = Rig::flushed_once();
    let budget = &rig.budget;
    record(&m, 20, 3_000);
    budget.fail_next_sync_then_reads();
    m.flush().expect_err("the commit cannot be confirmed");
    m.flush().expect_err("reads still fail");
    // A disk that cannot be read: queries say so (never a half answer).
    let e = m.query(&spec()).expect_err("the store cannot be read");
    assert_eq!(e.code(), "store_unavailable", "{e}");
    budget.heal_reads();
    // Reads are back before any flush retried the reopen: the query
    // itself reopens the store (settling the unconfirmed flush) and
    // answers, every sample once.
    assert_eq!(totals(&m), (30, 70_000.0), "answered after a reopen");
    record(&m, 1, 5_000);
    m.flush().expect("settled, then written");
    assert_eq!(totals(&m), (31, 75_000.0), "every sample once");
    let m = rig.reopen(m);
    assert_eq!(totals(&m), (31, 75_000.0), "on disk once");
}

/// One read fails (a transient disk error) with nothing failing to write:
/// redb then refuses every access until the file is reopened. The query
/// that met the error reopens the store itself and answers, without
/// waiting for a flush to notice.
#[test]
fn a_query_that_meets_a_read_error_reopens_the_store_and_answers() {
    let (rig, m) = Rig::flushed_once();
    // A cold page cache, so the query reads the file.
    let m = rig.reopen(m);
    let reopens = m.stats().store_reopens;
    rig.budget.fail_next_reads(1);
    assert_eq!(totals(&m), (10, 10_000.0), "answered after a reopen");
    assert_eq!(m.stats().store_reopens, reopens + 1, "reopened once");
    record(&m, 1, 5_000);
    m.flush().expect("the store takes writes");
    assert_eq!(totals(&m), (11, 15_000.0));
}

/// Reads fail long enough that the query's reopen fails too: the store
/// stays closed, waiting for a reopen, with no flush pending. Once reads
/// are back, the next flush reopens it before writing, and succeeds at
/// its first try.
#[test]
fn a_flush_reopens_a_store_a_failed_read_left_closed() {
    let (rig, m) = Rig::flushed_once();
    let m = rig.reopen(m);
    record(&m, 1, 5_000);
    rig.budget.fail_next_reads(1_000_000);
    m.query(&spec()).expect_err("the file cannot be read");
    assert!(m.stats().store_reopens == 0, "the reopen failed too");
    rig.budget.fail_next_reads(0);
    m.flush().expect("reopened, then written");
    assert_eq!(totals(&m), (11, 15_000.0));
    let m = rig.reopen(m);
    assert_eq!(totals(&m), (11, 15_000.0), "on disk once");
}

#[test]
fn a_failed_commit_that_did_not_land_is_written_again() {
    let (rig, m) = Rig::flushed_once();
    let budget = &rig.budget;
    budget.set(0);
    record_wide(&m, "a", 2_000, 3_000);
    m.flush().expect_err("no space");
    m.flush().expect_err("still no space");
    record_wide(&m, "a", 500, 7_000);
    budget.set(UNLIMITED);
    m.flush().expect("space is back");
    assert_eq!(totals(&m), (2_510, 9_510_000.0));
    let m = rig.reopen(m);
    assert_eq!(
        totals(&m),
        (2_510, 9_510_000.0),
        "written once, nothing lost"
    );
}

#[test]
fn a_clean_shutdown_on_a_full_disk_says_what_it_could_not_write() {
    let (rig, m) = Rig::flushed_once();
    let budget = &rig.budget;
    budget.set(0);
    record_wide(&m, "a", 2_000, 1_000);
    let err = m.close().expect_err("the final flush cannot write");
    let msg = err.to_string();
    assert_eq!(err.code(), "not_persisted", "{msg}");
    assert!(
        msg.starts_with("2000 accepted samples in 2000 series-minutes"),
        "{msg}"
    );
}

/// The budget is spent by the bytes the file grows by and no more: a
/// store opened on a budget has taken some of it (and at most its file's
/// length) once a flush has written.
#[test]
fn the_budget_counts_the_bytes_the_file_grew_by() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 5_000);
    let budget = DiskBudget::new(64 << 20);
    let m = open(dir.path(), &clock, &budget);
    record(&m, 10, 1_000);
    m.flush().expect("flush");
    let spent = (64 << 20) - budget.remaining();
    let file = std::fs::metadata(dir.path().join(scopemon::DB_FILE))
        .unwrap()
        .len();
    assert!(
        spent > 0 && spent <= file,
        "spent {spent} of a {file}-byte file"
    );
}
