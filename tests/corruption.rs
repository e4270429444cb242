//! Damaged store files never panic scopemon (issue 9, item 2). A store
//! with data in every table (series, deltas, minute, hour, day, meta,
//! retention) is damaged in copies — bytes flipped after the first 4 KiB,
//! bytes flipped at seeded offsets, truncated, a page zeroed, the header
//! hit — and each copy goes through the real binary: `query` and `summary`
//! exit with one line and code 8 (never 101, never a backtrace), `check`
//! finds the damage (exit 8) without changing the file, `serve` refuses to
//! start with one line and code 8, and `check --repair` leaves a store
//! that `check` passes, that `query` answers and that `serve` serves (or,
//! when nothing can be read, says to restore a backup and changes nothing).
//! Damage met while serving answers 500 `store_corrupted`.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use scopemon::{
    Config, HOUR_MS, Kind, MINUTE_MS, ManualClock, Monitor, Outcome, RetentionRule, Sample,
};

use common::{BIN, T0};

/// The exit code of every command that meets a damaged store.
const CORRUPTED: i32 = 8;

/// Data from T0 - 3 h to T0 + 2 h (a day boundary inside): 8 series.
const START: i64 = T0 - 3 * HOUR_MS;
const MINUTES: i64 = 5 * 60;

/// Builds the clean store in `dir` (library, manual clock): samples
/// every minute, flushed every 10 minutes, closed with the last minute
/// still in `deltas`.
fn build_store(dir: &Path) {
    let clock = ManualClock::new(START);
    let m = Monitor::builder(Config::with_data_dir(dir))
        .clock(Arc::new(clock.clone()))
        .background(false)
        .open()
        .expect("open");
    let hosts = ["a", "b"];
    for minute in 0..MINUTES {
        let t = START + minute * MINUTE_MS;
        clock.set(t + 30_000);
        for s in 0..8i64 {
            let metric = format!("m{}", s % 4);
            m.record(&Sample {
                namespace: "prod",
                metric: &metric,
                kind: Kind::Latency,
                value: (100 + minute * 7 + s * 13) as f64,
                tags: &[("host", hosts[(s / 4) as usize])],
                outcome: if minute % 7 == 0 {
                    Outcome::Error
                } else {
                    Outcome::Ok
                },
                timestamp_ms: Some(t + s * 1000),
            })
            .expect("record");
        }
        if minute % 10 == 9 {
            m.flush().expect("flush");
            m.rollup().expect("rollup");
        }
    }
    let rule = RetentionRule {
        minute: Some(std::time::Duration::from_secs(72 * 3600)),
        ..Default::default()
    };
    m.set_retention("prod", &rule).expect("retention");
    m.close().expect("close");
}

/// A deterministic generator (splitmix64) for the damage offsets.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The ways a copy is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// 20 bytes inverted right after the first 4 KiB.
    Flip20After4K,
    /// One byte inverted at each of 24 seeded offsets past the first 4 KiB.
    FlipSeeded,
    /// The file cut to half its length.
    Truncate,
    /// One 4 KiB page in the middle of the file zeroed.
    ZeroPage,
    /// 16 bytes of the header inverted: the first commit slot's format
    /// version and root page. Nothing can be read without it: `--repair`
    /// refuses (restore a backup) and leaves the file as it was.
    Header,
}

const DAMAGES: [Damage; 5] = [
    Damage::Flip20After4K,
    Damage::FlipSeeded,
    Damage::Truncate,
    Damage::ZeroPage,
    Damage::Header,
];

fn damage(bytes: &mut Vec<u8>, how: Damage) {
    let len = bytes.len();
    let mut flip = |range: std::ops::Range<usize>| {
        for b in &mut bytes[range] {
            *b = !*b;
        }
    };
    match how {
        Damage::Flip20After4K => flip(4096..4116),
        Damage::FlipSeeded => {
            let mut rng = Seeded(9);
            for _ in 0..24 {
                let at = 4096 + (rng.next() as usize) % (len - 4096);
                flip(at..at + 1);
            }
        }
        Damage::Truncate => bytes.truncate(len / 2),
        Damage::ZeroPage => {
            let at = (len / 2) / 4096 * 4096;
            bytes[at..at + 4096].fill(0);
        }
        Damage::Header => flip(64..80),
    }
}

/// The clean store, built once per test in `root/clean`, then compacted
/// by redb so that (nearly) every page of the file is live: damage to a
/// free page is harmless and rightly found by nobody, and the fixed
/// offsets below must land in data whatever the record format's size.
fn clean(root: &Path) -> PathBuf {
    let dir = root.join("clean");
    build_store(&dir);
    let mut db = redb::Database::open(dir.join(scopemon::DB_FILE)).expect("reopen clean");
    while db.compact().expect("compact clean") {}
    drop(db);
    dir
}

/// A damaged copy of the clean store in `root/<how>/data`.
fn damaged_copy(root: &Path, clean: &Path, how: Damage) -> PathBuf {
    let data = root.join(format!("{how:?}")).join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let mut bytes = std::fs::read(clean.join(scopemon::DB_FILE)).expect("read clean");
    damage(&mut bytes, how);
    std::fs::write(data.join(scopemon::DB_FILE), bytes).expect("write damaged");
    data
}

fn run(args: &[&str], data: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run scopemon")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command that met the damage: exit 8, one line naming the repair.
fn assert_refused(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(CORRUPTED), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    assert!(err.starts_with("error: the store "), "{what}: {err}");
    assert!(
        err.contains("check --data-dir") && err.contains("--repair"),
        "{what}: {err}"
    );
    assert!(
        !err.contains("panicked at") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
}

fn secs(ms: i64) -> String {
    (ms / 1000).to_string()
}

/// `scopemon query` of metric m0 over the whole data, minute window.
fn query(data: &Path) -> Output {
    let (from, to) = (secs(START), secs(START + MINUTES * MINUTE_MS + MINUTE_MS));
    run(
        &[
            "query",
            "--namespace",
            "prod",
            "--metric",
            "m0",
            "--window",
            "minute",
            "--from",
            &from,
            "--to",
            &to,
            "--format",
            "json",
        ],
        data,
    )
}

/// Starts `scopemon serve` on `data`: `Ok(base url)` once it listens, or
/// `Err(output)` when it exits first.
/// A served daemon, killed when dropped (also when an assertion fails
/// while it runs, so a failing test leaves no process behind).
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(root: &Path, data: &Path) -> Result<(Served, String), Output> {
    let config = root.join("empty.toml");
    std::fs::write(&config, "").expect("config");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read");
    match line.trim().strip_prefix("scopemon listening on ") {
        Some(base) => Ok((Served(child), base.to_owned())),
        None => Err(child.wait_with_output().expect("wait")),
    }
}

fn get(base: &str, path: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e} (the server died?)"));
    let v = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
    (r.status().as_u16(), v)
}

/// The read endpoints over the whole data.
fn read_paths() -> Vec<String> {
    let (from, to) = (secs(START), secs(START + MINUTES * MINUTE_MS + MINUTE_MS));
    let mut paths = Vec::new();
    for window in ["minute", "hour", "day", "range"] {
        for metric in ["m0", "m1", "m2", "m3"] {
            paths.push(format!(
                "/v1/query?namespace=prod&metric={metric}&window={window}&from={from}&to={to}"
            ));
        }
    }
    paths.push("/v1/summary?namespace=prod&window=day".to_owned());
    paths.push("/v1/baseline?namespace=prod&metric=m0".to_owned());
    paths
}

/// Every answer of a server over a store is 200, 404 `not_found` for a
/// series whose records the damage (and so the repair) cost, or 500
/// `store_corrupted` (never a 400, never a dropped connection); returns
/// how many were 500.
fn answers(base: &str) -> usize {
    let mut corrupted = 0;
    for path in read_paths() {
        let (status, body) = get(base, &path);
        match status {
            200 => {}
            404 => assert_eq!(body["error"], "not_found", "{path}: {body}"),
            500 => {
                assert_eq!(body["error"], "store_corrupted", "{path}: {body}");
                let message = body["message"].as_str().unwrap_or_default();
                assert!(message.contains("--repair"), "{path}: {body}");
                corrupted += 1;
            }
            _ => panic!("{path}: {status} {body}"),
        }
    }
    corrupted
}

fn stop(served: Served) {
    drop(served);
}

#[test]
fn damaged_copies_are_refused_in_one_line_and_check_finds_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let clean = clean(root.path());
    // The clean store: check passes, query answers, serve serves.
    let out = run(&["check"], &clean);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(query(&clean).status.success());
    for how in DAMAGES {
        let data = damaged_copy(root.path(), &clean, how);
        let file = data.join(scopemon::DB_FILE);
        let before = std::fs::read(&file).expect("read");
        let out = run(&["check"], &data);
        let report = text(&out.stdout);
        assert_eq!(out.status.code(), Some(CORRUPTED), "{how:?}: {report}");
        assert!(
            report.contains("FAILED") || report.contains("unreadable"),
            "{how:?}: {report}"
        );
        assert_eq!(
            std::fs::read(&file).expect("read"),
            before,
            "{how:?}: check wrote"
        );
        assert_refused(&query(&data), &format!("{how:?} query"));
        assert_refused(
            &run(
                &["summary", "--namespace", "prod", "--window", "day"],
                &data,
            ),
            &format!("{how:?} summary"),
        );
        match serve(root.path(), &data) {
            Ok((child, base)) => {
                // Only damage no read ever meets may be served.
                let corrupted = answers(&base);
                stop(child);
                panic!("{how:?}: served a damaged store ({corrupted} answers 500)");
            }
            Err(out) => assert_refused(&out, &format!("{how:?} serve")),
        }
    }
}

#[test]
fn check_repair_leaves_a_store_that_opens_and_answers() {
    let root = tempfile::tempdir().expect("tempdir");
    let clean = clean(root.path());
    let out = run(&["check", "--repair"], &clean);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("nothing to repair"));
    for how in DAMAGES {
        let data = damaged_copy(root.path(), &clean, how);
        let file = data.join(scopemon::DB_FILE);
        let before = std::fs::read(&file).expect("read");
        let out = run(&["check", "--repair"], &data);
        let report = text(&out.stdout);
        if matches!(how, Damage::Header) {
            assert_refused(&out, "Header repair");
            assert!(text(&out.stderr).contains("restore a backup"));
            assert_eq!(
                std::fs::read(&file).expect("read"),
                before,
                "repair changed it"
            );
            continue;
        }
        assert!(
            out.status.success(),
            "{how:?}: {report}{}",
            text(&out.stderr)
        );
        assert!(report.contains("repaired"), "{how:?}: {report}");
        let out = run(&["check"], &data);
        assert!(
            out.status.success(),
            "{how:?} after repair: {}",
            text(&out.stdout)
        );
        // The store opens and answers: a query is answered or finds no
        // such series (its records were what the damage cost).
        let out = query(&data);
        let err = text(&out.stderr);
        assert!(
            out.status.success()
                || (out.status.code() == Some(1) && err.contains("no latency series")),
            "{how:?}: {err}"
        );
        let out = run(
            &["summary", "--namespace", "prod", "--window", "day"],
            &data,
        );
        assert!(out.status.success(), "{how:?}: {}", text(&out.stderr));
        let (child, base) = serve(root.path(), &data)
            .unwrap_or_else(|out| panic!("{how:?}: serve refused: {}", text(&out.stderr)));
        let corrupted = answers(&base);
        stop(child);
        assert_eq!(corrupted, 0, "{how:?}");
    }
}

#[test]
fn damage_met_while_serving_answers_500_store_corrupted() {
    let root = tempfile::tempdir().expect("tempdir");
    let clean = clean(root.path());
    let mut config = Config::with_data_dir(&clean);
    // A small page cache, so reads go to the file.
    config.storage.cache_size = 64 * 1024;
    let clock = ManualClock::new(START + MINUTES * MINUTE_MS + 30_000);
    let m = Arc::new(common::open_with(config, &clock));
    let http = common::Http::start(m.clone());
    assert_eq!(answers(http.base()), 0, "the clean store");
    // Every page after the first 8 KiB inverted under the open store.
    let file = clean.join(scopemon::DB_FILE);
    let mut bytes = std::fs::read(&file).expect("read");
    for b in &mut bytes[8192..] {
        *b = !*b;
    }
    std::fs::write(&file, &bytes).expect("write");
    let corrupted = answers(http.base());
    assert!(corrupted > 0, "no read met the damage");
    // The library says the same.
    let spec = scopemon::QuerySpec {
        namespace: "prod".into(),
        metric: "m0".into(),
        kind: Kind::Latency,
        window: scopemon::Window::Range,
        from: START,
        to: START + MINUTES * MINUTE_MS,
        tags: scopemon::Tags::empty(),
    };
    let err = m.query(&spec).expect_err("a damaged read");
    assert_eq!(err.code(), "store_corrupted", "{err}");
    assert!(
        matches!(err, scopemon::Error::StoreCorrupted { .. }),
        "{err:?}"
    );
    // The monitor must not write over the damage on drop: forget it.
    std::mem::forget(m);
}
