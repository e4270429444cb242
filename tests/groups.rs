//! Minute groups (`src/store/group.rs`): compaction folds every sealed
//! hour's minute records into one entry. Held here against an exact oracle
//! of what was recorded: grouping changes no answer, a late sample for a
//! grouped hour counts once before and after the next compaction merges
//! it in, retention removes exactly the expired minutes of a group it cuts
//! through, and `scopemon check` reads groups.

mod common;

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata};
use scopemon::internals::{GROUP_TARGET_BYTES, group_members, tables};
use scopemon::{
    Clock, CompactOptions, Config, Kind, ManualClock, Monitor, Outcome, QuerySpec, Resolution,
    Sample, Tags, Window,
};
use scopemon::{HOUR_MS, MINUTE_MS};

use common::{Rng, T0};

const HOSTS: usize = 4;

fn config(dir: &std::path::Path) -> Config {
    let mut c =
        Config::from_toml("[retention.namespaces.\"ns\"]\nminute = \"6h\"\n").expect("config");
    c.storage.data_dir = dir.to_path_buf();
    c
}

/// Exact counts per (host, minute) and what the store is asked.
#[derive(Default)]
struct Oracle(BTreeMap<(usize, i64), u64>);

impl Oracle {
    fn count(&self, host: Option<usize>, a: i64, b: i64) -> u64 {
        self.0
            .iter()
            .filter(|((h, m), _)| host.is_none_or(|x| x == *h) && (a..b).contains(m))
            .map(|(_, c)| c)
            .sum()
    }
}

/// Records a pseudo-random load over `minutes` minutes from `start`:
/// each minute, some hosts get 1..40 samples (some errors).
/// The clock follows the load (never backwards: a late load keeps it).
fn load(
    m: &Monitor,
    clock: &ManualClock,
    oracle: &mut Oracle,
    start: i64,
    minutes: i64,
    seed: u64,
) {
    let names: Vec<String> = (0..HOSTS).map(|h| format!("h{h}")).collect();
    let tags: Vec<[(&str, &str); 1]> = names.iter().map(|h| [("host", h.as_str())]).collect();
    let mut rng = Rng(seed | 1);
    let mut next = move || rng.next_u64();
    for i in 0..minutes {
        let t = start + i * MINUTE_MS;
        if clock.now_ms() < t + 59_000 {
            clock.set(t + 59_000);
        }
        let mut samples = Vec::new();
        for (h, tag) in tags.iter().enumerate() {
            if next() % 3 == 0 {
                continue;
            }
            let n = 1 + next() % 40;
            for _ in 0..n {
                let r = next();
                samples.push(Sample {
                    namespace: "ns",
                    metric: "api",
                    kind: Kind::Latency,
                    value: (50 + r % 90_000) as f64,
                    tags: tag,
                    outcome: if r % 17 == 0 {
                        Outcome::Error
                    } else {
                        Outcome::Ok
                    },
                    timestamp_ms: Some(t + (r % 59_000) as i64),
                });
            }
            *oracle.0.entry((h, t)).or_default() += n;
        }
        let want = samples.len();
        let (ok, rejected) = m.record_batch(samples);
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        assert_eq!(ok, want);
    }
}

fn spec(host: Option<usize>, window: Window, from: i64, to: i64) -> QuerySpec {
    let tags = match host {
        Some(h) => Tags::new(&[("host", format!("h{h}"))]).expect("tags"),
        None => Tags::empty(),
    };
    QuerySpec {
        namespace: "ns".into(),
        metric: "api".into(),
        kind: Kind::Latency,
        window,
        from,
        to,
        tags,
    }
}

/// Ranges that start and end inside hours, on hour edges, across several
/// hours and inside one.
fn ranges(base: i64) -> Vec<(i64, i64)> {
    let m = |n: i64| base + n * MINUTE_MS;
    vec![
        (m(0), m(200)),
        (m(7), m(133)),
        (m(59), m(61)),
        (m(60), m(120)),
        (m(61), m(62)),
        (m(118), m(185)),
        (m(150), m(200)),
    ]
}

/// Every answer the test compares: minute, hour and range windows, per
/// host and merged, over every range. Also checks the counts against the
/// oracle.
fn answers(m: &Monitor, oracle: &Oracle, base: i64) -> Vec<String> {
    let mut out = Vec::new();
    let hosts = (0..HOSTS).map(Some).chain([None]);
    for host in hosts {
        for (a, b) in ranges(base) {
            for window in [
                Window::Range,
                Window::Buckets(Resolution::Minute),
                Window::Buckets(Resolution::Hour),
            ] {
                let r = m.query(&spec(host, window, a, b)).expect("query");
                if window != Window::Buckets(Resolution::Hour) {
                    let got: u64 = r.points.iter().map(|p| p.count).sum();
                    assert_eq!(
                        got,
                        oracle.count(host, a, b),
                        "{host:?} {window:?} {a}..{b}"
                    );
                }
                out.push(serde_json::to_string(&r).expect("json"));
            }
        }
    }
    out
}

/// (loose minute records, groups, grouped minutes) of the test namespace's
/// series, straight from the file.
fn census(m: &Monitor) -> (u64, u64, u64) {
    let ours: std::collections::HashSet<u64> = m
        .store()
        .load_series()
        .expect("series")
        .into_iter()
        .filter(|(_, r)| r.key.namespace == "ns")
        .map(|(id, _)| id)
        .collect();
    let txn = m.store().begin_read().expect("read");
    let loose = txn.open_table(tables::MINUTE).expect("minute");
    let n_loose = loose
        .iter()
        .expect("iter")
        .filter(|e| ours.contains(&e.as_ref().expect("entry").0.value().0))
        .count() as u64;
    let groups = txn.open_table(tables::MINUTE_GROUPS).expect("groups");
    let (mut n_groups, mut grouped) = (0, 0);
    for e in groups.iter().expect("iter") {
        let (k, v) = e.expect("entry");
        let (sid, key) = k.value();
        if ours.contains(&sid) {
            n_groups += 1;
            grouped += group_members(key, v.value()).expect("group").len() as u64;
        }
    }
    (n_loose, n_groups, grouped)
}

/// Checks how compaction packed the groups: within each (series, hour),
/// a run holds members while their bytes (each counted with 2 bytes of
/// framing) stay within [`GROUP_TARGET_BYTES`], and takes the next member
/// unless it would overflow; a member larger than the target runs alone.
/// Returns the members that ran alone for being too large.
fn assert_runs_packed(m: &Monitor) -> usize {
    let txn = m.store().begin_read().expect("read");
    let groups = txn.open_table(tables::MINUTE_GROUPS).expect("groups");
    // (sid, hour) -> each run's member sizes, in key order
    let mut runs: BTreeMap<(u64, i64), Vec<Vec<usize>>> = BTreeMap::new();
    for e in groups.iter().expect("iter") {
        let (k, v) = e.expect("entry");
        let (sid, key) = k.value();
        let sizes = group_members(key, v.value())
            .expect("group")
            .iter()
            .map(|(_, bytes)| bytes.len() + 2)
            .collect();
        runs.entry((sid, key - key.rem_euclid(HOUR_MS)))
            .or_default()
            .push(sizes);
    }
    let mut alone = 0;
    for ((sid, hour), hour_runs) in &runs {
        for (i, run) in hour_runs.iter().enumerate() {
            let bytes: usize = run.iter().sum();
            if run.len() == 1 && bytes > GROUP_TARGET_BYTES {
                alone += 1;
            } else {
                assert!(bytes <= GROUP_TARGET_BYTES, "{sid} {hour}: run {i} {run:?}");
            }
            if let Some(next) = hour_runs.get(i + 1) {
                assert!(
                    bytes + next[0] > GROUP_TARGET_BYTES,
                    "{sid} {hour}: run {i} {run:?} had room for {}",
                    next[0]
                );
            }
        }
    }
    alone
}

/// Minutes of the oracle in [a, b) (records the store should hold).
fn records(oracle: &Oracle, a: i64, b: i64) -> u64 {
    oracle.0.keys().filter(|(_, m)| (a..b).contains(m)).count() as u64
}

/// 3 h 20 min of data from the hour `base`, flushed and rolled up at
/// `base + 3 h 20 min + 30 s`.
fn setup(dir: &std::path::Path) -> (ManualClock, Monitor, Oracle, i64) {
    let base = Resolution::Hour.align(T0) + 5 * HOUR_MS;
    let clock = ManualClock::new(base);
    let m = common::open_with(config(dir), &clock);
    let mut oracle = Oracle::default();
    load(&m, &clock, &mut oracle, base, 200, 0x9e37_79b9_7f4a_7c15);
    clock.set(base + 200 * MINUTE_MS + 30_000);
    m.flush().expect("flush");
    m.rollup().expect("rollup");
    (clock, m, oracle, base)
}

#[test]
fn compaction_groups_sealed_hours_and_changes_no_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_clock, m, oracle, base) = setup(dir.path());
    let before = answers(&m, &oracle, base);
    assert_eq!(
        census(&m),
        (records(&oracle, base, base + 200 * MINUTE_MS), 0, 0)
    );

    let report = m.compact(CompactOptions::default()).expect("compact");
    // The three hours before the current one are sealed; the current
    // hour's 20 minutes stay loose.
    let sealed = records(&oracle, base, base + 3 * HOUR_MS);
    assert_eq!(report.grouped_minutes, sealed, "{report:?}");
    assert_eq!(report.grouped_hours, 3 * HOSTS as u64, "{report:?}");
    let open_hour = records(&oracle, base + 3 * HOUR_MS, base + 200 * MINUTE_MS);
    let (loose, groups, grouped) = census(&m);
    assert_eq!((loose, grouped), (open_hour, sealed));
    // Runs of about half a kilobyte: several per hour, far fewer than minutes.
    assert!(
        (3 * HOSTS as u64..sealed / 4).contains(&groups),
        "{groups} groups"
    );
    assert_eq!(answers(&m, &oracle, base), before);
    assert_eq!(assert_runs_packed(&m), 0, "no member is that large");

    // A second compaction finds nothing more to group.
    let again = m.compact(CompactOptions::default()).expect("compact");
    assert_eq!((again.grouped_hours, again.grouped_minutes), (0, 0));

    // Across a restart, and `scopemon check` reads every group (scopemon's
    // own series have some too).
    let all_groups = {
        let txn = m.store().begin_read().expect("read");
        let groups = txn.open_table(tables::MINUTE_GROUPS).expect("groups");
        groups.len().expect("len")
    };
    m.close().expect("close");
    drop(m);
    let check = scopemon::offline::check(dir.path(), |_, _| {}).expect("check");
    assert!(check.is_clean(), "{check:?}");
    assert_eq!(check.minute_groups, all_groups);
    let clock = ManualClock::new(base + 200 * MINUTE_MS + 30_000);
    let m = common::open_with(config(dir.path()), &clock);
    assert_eq!(answers(&m, &oracle, base), before);
}

#[test]
fn a_late_sample_for_a_grouped_hour_counts_once_and_is_merged_by_the_next_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, m, mut oracle, base) = setup(dir.path());
    m.compact(CompactOptions::default()).expect("compact");
    let (loose_before, _, grouped) = census(&m);

    // Late data: minutes 10..40 of the first (grouped) hour, some already
    // in the group, some new.
    load(
        &m,
        &clock,
        &mut oracle,
        base + 10 * MINUTE_MS,
        30,
        0x2545_f491_4f6c_dd1d,
    );
    clock.advance_ms(MINUTE_MS);
    m.flush().expect("flush");
    m.rollup().expect("rollup");
    let (loose, _, _) = census(&m);
    assert!(loose > loose_before, "late minutes land loose: {loose}");
    // Loose record plus group member, each sample once.
    let with_late = answers(&m, &oracle, base);

    let report = m.compact(CompactOptions::default()).expect("compact");
    assert!(report.grouped_minutes > 0, "{report:?}");
    let (loose_after, _, grouped_after) = census(&m);
    assert_eq!(loose_after, loose_before, "the late minutes are folded in");
    assert_eq!(grouped_after, records(&oracle, base, base + 3 * HOUR_MS));
    assert!(
        grouped_after > grouped,
        "new minutes joined their hour's groups"
    );
    assert_eq!(answers(&m, &oracle, base), with_late);
}

/// With a batch of one record, grouping takes one write transaction per
/// sealed (series, hour) (an hour is never split), counts them, and times
/// each inside the whole compaction; answers do not change.
#[test]
fn grouping_in_small_batches_takes_a_transaction_per_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_clock, m, oracle, base) = setup(dir.path());
    let before = answers(&m, &oracle, base);
    let report = m
        .compact(CompactOptions {
            batch: 1,
            ..CompactOptions::default()
        })
        .expect("compact");
    let hours = 3 * HOSTS;
    assert_eq!(report.grouped_hours, hours as u64, "{report:?}");
    assert_eq!(
        report.grouped_minutes,
        records(&oracle, base, base + 3 * HOUR_MS),
        "{report:?}"
    );
    // One per hour, after one per resolution for deleting (nothing here).
    assert_eq!(report.transactions, hours + 3, "{report:?}");
    assert!(
        report.longest_txn_ms > 0.0 && report.longest_txn_ms <= report.duration_ms,
        "{report:?}"
    );
    assert_eq!(answers(&m, &oracle, base), before);
}

/// Minutes whose records are larger than a run's target (hundreds of
/// distinct latencies each) run alone between packed runs of small ones;
/// every sample still counts once.
#[test]
fn a_minute_record_larger_than_a_run_runs_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = Resolution::Hour.align(T0) + 5 * HOUR_MS;
    let clock = ManualClock::new(base);
    let m = common::open_with(config(dir.path()), &clock);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let tags = [("host", "h0")];
    let mut total = 0;
    for minute in 0..60 {
        let t = base + minute * MINUTE_MS;
        clock.set(t + 59_000);
        // Every tenth minute is wide, the rest hold a few samples.
        let n = if minute % 10 == 3 {
            3_000
        } else {
            1 + rng.next_u64() % 20
        };
        let samples: Vec<Sample> = (0..n)
            .map(|i| Sample {
                namespace: "ns",
                metric: "api",
                kind: Kind::Latency,
                // log-uniform over the latency range: many indexes
                value: (50 + ((rng.next_u64() % 3_000_000_000) >> (rng.next_u64() % 30))) as f64,
                tags: &tags,
                outcome: Outcome::Ok,
                timestamp_ms: Some(t + (i % 59_000) as i64),
            })
            .collect();
        let (ok, rejected) = m.record_batch(samples);
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        total += ok as u64;
    }
    clock.set(base + HOUR_MS + 30_000);
    m.flush().expect("flush");
    m.rollup().expect("rollup");
    let report = m.compact(CompactOptions::default()).expect("compact");
    assert_eq!(report.grouped_minutes, 60, "{report:?}");
    assert_eq!(assert_runs_packed(&m), 6, "the six wide minutes");
    let r = m
        .query(&spec(Some(0), Window::Range, base, base + HOUR_MS))
        .expect("query");
    assert_eq!(r.points.iter().map(|p| p.count).sum::<u64>(), total);
}

#[test]
fn minute_retention_cuts_a_group_at_its_horizon_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, m, oracle, base) = setup(dir.path());
    m.compact(CompactOptions::default()).expect("compact");
    // Minute retention is 6 h: at base + 7 h 35 min 10 s the horizon is
    // base + 1 h 35 min, inside the second grouped hour.
    clock.set(base + 7 * HOUR_MS + 35 * MINUTE_MS + 10_000);
    let horizon = base + HOUR_MS + 35 * MINUTE_MS;
    let expired = records(&oracle, base, horizon);
    let dry = m
        .compact(CompactOptions {
            dry_run: true,
            ..CompactOptions::default()
        })
        .expect("dry run");
    let removed = |r: &scopemon::CompactReport| {
        r.removed
            .get("ns")
            .and_then(|by| by.get("minute"))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(removed(&dry), expired, "{dry:?}");
    let report = m.compact(CompactOptions::default()).expect("compact");
    assert_eq!(removed(&report), expired, "{report:?}");
    // What is left of minute data is exactly the minutes from the horizon.
    let kept = records(&oracle, horizon, base + 200 * MINUTE_MS);
    let (loose, _, grouped) = census(&m);
    assert_eq!(loose + grouped, kept);
    let r = m
        .query(&spec(
            None,
            Window::Buckets(Resolution::Minute),
            base,
            base + 200 * MINUTE_MS,
        ))
        .expect("query");
    let got: u64 = r.points.iter().map(|p| p.count).sum();
    assert_eq!(got, oracle.count(None, horizon, base + 200 * MINUTE_MS));
    // Hours still count every sample.
    let r = m
        .query(&spec(None, Window::Range, base, base + 3 * HOUR_MS))
        .expect("query");
    assert_eq!(
        r.points[0].count,
        oracle.count(None, base, base + 3 * HOUR_MS)
    );
}

/// Expiring whole groups in batches of one takes a write transaction per
/// group (the batch bounds a transaction however many groups a series
/// has), and removes exactly the expired minutes.
#[test]
fn expiring_groups_in_small_batches_takes_a_transaction_per_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, m, oracle, base) = setup(dir.path());
    m.compact(CompactOptions::default()).expect("compact");
    let (_, groups_before, _) = census(&m);
    // Minute retention is 6 h: at base + 8 h the first two hours expire,
    // on an hour edge, so only whole groups go.
    clock.set(base + 8 * HOUR_MS);
    let report = m
        .compact(CompactOptions {
            batch: 1,
            ..CompactOptions::default()
        })
        .expect("compact");
    let (_, groups_after, _) = census(&m);
    let expired_groups = (groups_before - groups_after) as usize;
    assert!(expired_groups > 2 * HOSTS, "{expired_groups} groups");
    let removed = report.removed["ns"]["minute"];
    assert_eq!(removed, records(&oracle, base, base + 2 * HOUR_MS));
    assert!(report.transactions > expired_groups, "{report:?}");
}
