//! Retention and compaction over a simulated 90 days (manual clock):
//! after every compaction each remaining bucket is within its namespace's
//! retention, every bucket inside it is still there, old samples still count
//! in their hour and day buckets, and the file stays bounded.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use redb::ReadableTable;
use scopemon::CompactOptions;
use scopemon::RetentionRule;
use scopemon::internals::{OpenOptions, Store};
use scopemon::internals::{group_members, tables};
use scopemon::{
    Clock, Config, Kind, ManualClock, Monitor, Outcome, QuerySpec, Resolution, Sample, Tags, Window,
};
use scopemon::{DAY_MS, HOUR_MS, MINUTE_MS};

use common::T0;
const NAMESPACES: [&str; 3] = ["long", "short", "ovr"];

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::from_toml(
        "[retention.default]\nhour = \"10d\"\nday = \"30d\"\n\
         [retention.namespaces.\"short\"]\nminute = \"6h\"\nhour = \"3d\"\nday = \"20d\"\n\
         [retention.namespaces.\"ovr\"]\nminute = \"12h\"\n",
    )
    .unwrap();
    c.storage.data_dir = dir.to_path_buf();
    c
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Monitor {
    common::open_with(config(dir), clock)
}

/// Every (namespace, resolution, bucket start) holding data, from the file.
fn stored(m: &Monitor) -> BTreeSet<(String, Resolution, i64)> {
    let ns_of: std::collections::HashMap<u64, String> = m
        .store()
        .load_series()
        .unwrap()
        .into_iter()
        .map(|(id, r)| (id, r.key.namespace))
        .collect();
    let txn = m.store().begin_read().unwrap();
    let mut out = BTreeSet::new();
    for res in Resolution::ALL {
        let t = txn.open_table(tables::buckets(res)).unwrap();
        for e in t.iter().unwrap() {
            let (k, _) = e.unwrap();
            let (sid, start) = k.value();
            // scopemon's own series (compactor figures) are not under test
            if ns_of[&sid] != scopemon::OWN_NAMESPACE {
                out.insert((ns_of[&sid].clone(), res, start));
            }
        }
    }
    // Sealed hours' minutes live in their hour's group.
    let groups = txn.open_table(tables::MINUTE_GROUPS).unwrap();
    for e in groups.iter().unwrap() {
        let (k, v) = e.unwrap();
        let (sid, key) = k.value();
        if ns_of[&sid] != scopemon::OWN_NAMESPACE {
            for (minute, _) in group_members(key, v.value()).unwrap() {
                out.insert((ns_of[&sid].clone(), Resolution::Minute, minute));
            }
        }
    }
    out
}

fn reclaim(dir: &std::path::Path) -> u64 {
    let mut store = Store::open(dir, OpenOptions::default()).unwrap();
    while store.db_mut().unwrap().compact().unwrap() {}
    store.file_size().unwrap()
}

#[test]
fn ninety_days_of_ingest_with_daily_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut m = open(dir.path(), &clock);
    m.set_retention(
        "ovr",
        &RetentionRule {
            hour: Some(Duration::from_secs(5 * 86_400)),
            ..Default::default()
        },
    )
    .unwrap();
    // Every bucket we wrote, to compare with what the file holds.
    let mut written: BTreeSet<(String, Resolution, i64)> = BTreeSet::new();
    let mut sizes = Vec::new();
    for day in 0..90 {
        for hour in 0..24 {
            for minute in [7, 41] {
                let t = T0 + day * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS;
                clock.set(t + 1_000);
                for ns in NAMESPACES {
                    m.record(&Sample {
                        namespace: ns,
                        metric: "api.latency",
                        kind: Kind::Latency,
                        value: 1000.0 + f64::from(minute as i32),
                        tags: &[],
                        outcome: Outcome::Ok,
                        timestamp_ms: Some(t),
                    })
                    .unwrap();
                    for res in Resolution::ALL {
                        written.insert((ns.to_owned(), res, res.align(t)));
                    }
                }
            }
            if hour % 6 == 5 {
                m.flush().unwrap();
            }
        }
        clock.advance_ms(HOUR_MS / 2);
        m.flush().unwrap();
        let report = m.compact(CompactOptions::default()).unwrap();
        // Three resolutions, at least one deletion transaction each, all
        // timed inside the whole run.
        assert!(
            report.transactions >= 3
                && report.longest_txn_ms > 0.0
                && report.longest_txn_ms <= report.duration_ms,
            "day {day}: {report:?}"
        );
        let now = clock.now_ms();
        let expected: BTreeSet<_> = written
            .iter()
            .filter(|(ns, res, start)| start + res.width_ms() > now - m.retention(ns).of(*res))
            .cloned()
            .collect();
        let have = stored(&m);
        let expired: Vec<_> = have.difference(&expected).take(3).collect();
        assert!(
            expired.is_empty(),
            "day {day}: expired buckets kept: {expired:?}"
        );
        let lost: Vec<_> = expected.difference(&have).take(3).collect();
        assert!(
            lost.is_empty(),
            "day {day}: buckets inside retention lost: {lost:?}"
        );
        if day == 44 || day == 89 {
            m.close().unwrap();
            drop(m);
            sizes.push(reclaim(dir.path()));
            m = open(dir.path(), &clock);
        }
    }
    // Every retention here is <= 30 days: from then on as many buckets
    // expire as are written, and the compacted file must not grow.
    assert!(
        (sizes[1] as f64) < sizes[0] as f64 * 1.1,
        "file grew with time: {sizes:?}"
    );

    // Samples older than the minute retention still count, in hours and days.
    let now = clock.now_ms();
    let q = |ns: &str, window, from| {
        m.query(&QuerySpec {
            namespace: ns.into(),
            metric: "api.latency".into(),
            kind: Kind::Latency,
            window,
            from,
            to: now,
            tags: Tags::empty(),
        })
        .unwrap()
    };
    // (from hour-aligned: buckets whose start lies in [from, to) are counted)
    let from = Resolution::Hour.align(now) - 5 * DAY_MS;
    let hours = q("long", Window::Buckets(Resolution::Hour), from);
    let c: u64 = hours.points.iter().map(|p| p.count).sum();
    assert_eq!(c, 5 * 24 * 2, "5 days of hours, minutes long gone");
    // A range reaching past the minute retention is answered by whole hours.
    let r = q("long", Window::Range, from);
    assert_eq!(r.points[0].count, 5 * 24 * 2);
    // ...and past the hour retention by whole days.
    let r = q(
        "short",
        Window::Range,
        Resolution::Day.align(now) - 15 * DAY_MS,
    );
    assert_eq!(r.points[0].count, 15 * 48, "{:?}", r.points);
    // Expired buckets are never answered, deleted or not.
    let minutes = q("short", Window::Buckets(Resolution::Minute), now - DAY_MS);
    assert!(minutes.points.iter().all(|p| {
        let start = chrono::DateTime::parse_from_rfc3339(&p.start)
            .unwrap()
            .timestamp_millis();
        start + MINUTE_MS > now - 6 * HOUR_MS
    }));
    // now = day 90 00:11: minutes :07/:41 of 18:41 .. 23:41 of day 89
    assert_eq!(minutes.points.len(), 11);

    // Overrides survive a restart.
    m.close().unwrap();
    drop(m);
    let m = open(dir.path(), &clock);
    let r = m.retention("ovr");
    assert_eq!((r.minute_ms, r.hour_ms), (12 * HOUR_MS, 5 * DAY_MS));
    assert_eq!(r.source, scopemon::RetentionSource::Override);
}

#[test]
fn ingest_refuses_samples_older_than_the_longest_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 100 * DAY_MS);
    let m = open(dir.path(), &clock);
    let sample = |ns, age| Sample {
        namespace: ns,
        metric: "m",
        kind: Kind::Latency,
        value: 1.0,
        tags: &[],
        outcome: Outcome::Ok,
        timestamp_ms: Some(clock.now_ms() - age),
    };
    assert!(m.record(&sample("short", 19 * DAY_MS)).is_ok());
    assert_eq!(
        m.record(&sample("short", 21 * DAY_MS)).unwrap_err().code(),
        "outside_retention"
    );
    assert!(m.record(&sample("long", 21 * DAY_MS)).is_ok());
    // invalid overrides change nothing
    for bad in [
        RetentionRule {
            hour: Some(Duration::from_secs(1800)),
            ..Default::default()
        },
        RetentionRule {
            minute: Some(Duration::ZERO),
            ..Default::default()
        },
        RetentionRule {
            minute: Some(Duration::from_secs(40 * 86_400)),
            ..Default::default()
        },
        RetentionRule::default(),
    ] {
        assert!(m.set_retention("short", &bad).is_err(), "{bad:?}");
    }
    assert_eq!(m.retention("short").minute_ms, 6 * HOUR_MS);
}

/// Expired buckets are never answered, even while the file still holds
/// them: the clock moves past each horizon with no compaction in between
/// (issue 9, item 10; the test above queries right after compacting, when
/// they are already gone).
#[test]
fn expired_buckets_are_not_answered_before_any_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 10 * MINUTE_MS);
    let m = open(dir.path(), &clock);
    for i in 0..5 {
        m.record(&Sample {
            namespace: "short",
            metric: "api.latency",
            kind: Kind::Latency,
            value: 100.0,
            tags: &[],
            outcome: Outcome::Ok,
            timestamp_ms: Some(T0 + i * MINUTE_MS),
        })
        .unwrap();
    }
    m.flush().unwrap();
    m.rollup().unwrap();
    let counts = |window| {
        let r = m
            .query(&QuerySpec {
                namespace: "short".into(),
                metric: "api.latency".into(),
                kind: Kind::Latency,
                window,
                from: T0,
                to: clock.now_ms(),
                tags: Tags::empty(),
            })
            .unwrap();
        r.points.iter().map(|p| p.count).collect::<Vec<u64>>()
    };
    let minutes = Window::Buckets(Resolution::Minute);
    let hours = Window::Buckets(Resolution::Hour);
    let days = Window::Buckets(Resolution::Day);
    assert_eq!(counts(minutes), [1; 5]);
    assert_eq!(counts(hours), [5]);
    assert_eq!(counts(days), [5]);
    let expired = |m: &Monitor| {
        let opts = CompactOptions {
            dry_run: true,
            ..CompactOptions::default()
        };
        m.compact(opts).unwrap().total_removed
    };

    // "short" keeps minutes 6 h, hours 3 d, days 20 d.
    clock.set(T0 + 7 * HOUR_MS);
    assert_eq!(expired(&m), 5, "the minute records are still in the file");
    assert_eq!(
        counts(minutes),
        Vec::<u64>::new(),
        "expired minutes answered"
    );
    assert_eq!(counts(hours), [5]);
    assert_eq!(counts(Window::Range), [5], "answered from the hour");

    clock.set(T0 + 4 * DAY_MS);
    assert_eq!(expired(&m), 6);
    assert_eq!(counts(hours), Vec::<u64>::new(), "expired hours answered");
    assert_eq!(counts(days), [5]);
    assert_eq!(counts(Window::Range), [5], "answered from the day");

    clock.set(T0 + 21 * DAY_MS);
    assert_eq!(expired(&m), 7);
    assert_eq!(counts(days), Vec::<u64>::new(), "expired days answered");
    assert_eq!(counts(Window::Range), Vec::<u64>::new());
}

/// Free fraction of the leaf bytes of each bucket table.
fn leaf_slack(dir: &std::path::Path) -> Vec<f64> {
    use redb::ReadableTableMetadata;
    let store = Store::open(dir, OpenOptions::default()).unwrap();
    let txn = store.begin_read().unwrap();
    Resolution::ALL
        .iter()
        .map(|&res| {
            let s = txn
                .open_table(tables::buckets(res))
                .unwrap()
                .stats()
                .unwrap();
            let free = s.fragmented_bytes() as f64;
            free / (free + (s.stored_bytes() + s.metadata_bytes()) as f64)
        })
        .collect()
}

/// Every query answer of every series, minute to day (the oracle a repack
/// must not change).
fn answers(m: &Monitor, hosts: usize, from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    for h in 0..hosts {
        for window in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
            let spec = QuerySpec {
                namespace: "long".into(),
                metric: "api".into(),
                kind: Kind::Latency,
                window: Window::Buckets(window),
                from,
                to,
                tags: Tags::new(&[("host", format!("h{h}"))]).unwrap(),
            };
            out.push(serde_json::to_string(&m.query(&spec).unwrap()).unwrap());
        }
    }
    out
}

/// Rollups write every series' hour, then the next hour: time-major
/// inserts into (series, time) keys split leaf pages in half. `compact`
/// repacks such tables (src/store/repack.rs) and every answer stays the
/// same.
#[test]
fn compact_repacks_half_empty_bucket_tables_and_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let m = open(dir.path(), &clock);
    let hosts = 40;
    let names: Vec<String> = (0..hosts).map(|h| format!("h{h}")).collect();
    let tags: Vec<[(&str, &str); 1]> = names.iter().map(|h| [("host", h.as_str())]).collect();
    let hours = 12;
    for minute in 0..hours * 60 {
        let t = T0 + minute * MINUTE_MS;
        clock.set(t + 1_000);
        let samples: Vec<Sample<'_>> = (0..hosts)
            .map(|h| Sample {
                namespace: "long",
                metric: "api",
                kind: Kind::Latency,
                value: (100 + (minute * 37 + h * 11) % 5_000) as f64,
                tags: &tags[h as usize],
                outcome: Outcome::Ok,
                timestamp_ms: Some(t),
            })
            .collect();
        let (ok, rejected) = m.record_batch(samples);
        assert!(rejected.is_empty());
        assert_eq!(ok, hosts as usize);
        if minute % 60 == 59 {
            m.flush().unwrap();
            m.rollup().unwrap();
        }
    }
    m.flush().unwrap();
    m.rollup().unwrap();
    let (from, to) = (T0, T0 + hours * HOUR_MS);
    let before = answers(&m, hosts as usize, from, to);
    m.close().unwrap();
    drop(m);
    let slack_before = leaf_slack(dir.path());
    assert!(slack_before[1] > 0.25, "hour leaves {slack_before:?}");
    let now = clock.now_ms();
    let c = scopemon::offline::compact(&config(dir.path()), false, now, |_| {}).unwrap();
    assert!(c.file_bytes_after < c.file_bytes_before, "{c:?}");
    let slack_after = leaf_slack(dir.path());
    for (res, s) in Resolution::ALL.iter().zip(&slack_after) {
        assert!(
            *s <= 0.25,
            "{res:?}: {slack_after:?} (before {slack_before:?})"
        );
    }
    let m = open(dir.path(), &clock);
    assert_eq!(answers(&m, hosts as usize, from, to), before);
}

/// `scopemon compact` reports its progress step by step, one step per
/// series and resolution, up to the total, then reclaims space.
#[test]
fn offline_compaction_reports_every_step_up_to_its_total() {
    use scopemon::offline::CompactStep;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + HOUR_MS);
    let m = open(dir.path(), &clock);
    for host in ["a", "b"] {
        m.record_latency("long", "api", Duration::from_micros(100), &[("host", host)])
            .unwrap();
    }
    m.close().unwrap();
    drop(m);
    let mut steps = Vec::new();
    scopemon::offline::compact(&config(dir.path()), false, clock.now_ms(), |s| {
        steps.push(s)
    })
    .unwrap();
    let mut want: Vec<CompactStep> = (1..=6)
        .map(|done| CompactStep::Retention { done, total: 6 })
        .collect();
    want.push(CompactStep::Reclaiming);
    assert_eq!(steps, want);
}

/// A transaction's batch that runs out in the middle of a series leaves
/// the rest of that series to the next transaction, not to the next
/// compaction: one compaction removes every expired record.
#[test]
fn a_batch_that_runs_out_mid_series_still_removes_everything_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let m = open(dir.path(), &clock);
    for minute in 0..5 {
        clock.set(T0 + minute * MINUTE_MS + 1_000);
        for host in ["a", "b"] {
            m.record_latency(
                "short",
                "api",
                Duration::from_micros(100),
                &[("host", host)],
            )
            .unwrap();
        }
    }
    clock.set(T0 + 10 * MINUTE_MS);
    m.flush().unwrap();
    m.rollup().unwrap();
    // "short" keeps minutes 6 h: ten minute records (5 per series) expire.
    clock.set(T0 + 7 * HOUR_MS);
    let opts = |dry_run| CompactOptions { dry_run, batch: 7 };
    let removed = m.compact(opts(false)).unwrap();
    assert_eq!(removed.total_removed, 10, "{removed:?}");
    assert_eq!(m.compact(opts(true)).unwrap().total_removed, 0);
}
