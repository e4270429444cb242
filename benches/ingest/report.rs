//! The summary table, same-run ratios and per-allocator medians.

use crate::ingest::alloc::Alloc;
use crate::ingest::procs::{loadavg, mib};
use crate::ingest::servers::Outcome;
use crate::{Settings, Target};
// ---------------------------------------------------------------- main

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn row_name(o: &Outcome) -> String {
    match o.alloc {
        Some(a) => format!("{}/{}", o.target.name(), a.name()),
        None => o.target.name().to_owned(),
    }
}

fn print_rows(s: &Settings, outcomes: &[Outcome]) {
    println!(
        "{:<18} {:>10} {:>7} {:>7} {:>6} {:>11} {:>7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7}",
        "target",
        "samples/s",
        "p50 ms",
        "p99 ms",
        "cores",
        "per cpu-s",
        "resent",
        "peak MiB",
        format!("+{:.0}s MiB", s.after_secs),
        "back",
        "stop",
        "disk MiB",
        "B/smpl"
    );
    for o in outcomes {
        let r = &o.load;
        let cpu = r.server_cpu.map_or(0.0, |c| c.as_secs_f64());
        println!(
            "{:<18} {:>10.0} {:>7.2} {:>7.2} {:>6.2} {:>11.0} {:>7} {:>8.1} {:>8.1} {:>5.0}% {:>5.2}s {:>8.1} {:>7.2}",
            row_name(o),
            r.rate(),
            r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            cpu / r.elapsed.as_secs_f64(),
            r.accepted as f64 / cpu.max(1e-9),
            r.retries,
            mib(o.rss.peak()),
            mib(o.rss_after(s)),
            100.0 * o.returned(s),
            o.shutdown.as_secs_f64(),
            mib(o.disk),
            o.bytes_per_sample()
        );
    }
}

pub fn print_summary(s: &Settings, outcomes: &[Outcome]) {
    println!();
    println!(
        "== summary: mode {} (load average now {}) ==",
        s.mode.name(),
        loadavg()
    );
    print_rows(s, outcomes);
    for o in outcomes {
        let how = match o.target {
            Target::Scopemon if o.compact.is_some() => {
                "after SIGTERM, scopemon compact and a restart"
            }
            Target::Scopemon => "after SIGTERM and a restart on the same data dir",
            Target::Influx => "by SELECT count(value) after the load",
            Target::Vm => "by sum(count_over_time) after force_flush and force_merge",
        };
        let complete = if o.load.complete {
            ""
        } else {
            " (LOAD_SECS cut the backfill short)"
        };
        println!(
            "stored {}: {} of {} acknowledged samples counted {how}{complete}",
            row_name(o),
            o.stored,
            o.load.accepted
        );
        if let Some(h) = o.hot_bytes {
            println!(
                "  {} scopemon_hot_bytes {:.0} s after the load: {:.1} MiB",
                row_name(o),
                s.after_secs,
                mib(h)
            );
        }
    }
    // Same-run ratios: each scopemon run against the other targets' run of
    // the same round (the nearest one before or after it).
    let find = |t: Target, i: usize| {
        outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.target == t)
            .min_by_key(|(j, _)| j.abs_diff(i))
            .map(|(_, o)| o)
    };
    let per_cpu = |o: &Outcome| {
        o.load.accepted as f64 / o.load.server_cpu.map_or(f64::NAN, |c| c.as_secs_f64())
    };
    for (i, o) in outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.target == Target::Scopemon)
    {
        if let Some(inf) = find(Target::Influx, i) {
            println!(
                "ratio {}/influxdb: {:.2}x samples/s, {:.2}x samples per server CPU-second; peak resident {:.2}x",
                row_name(o),
                o.load.rate() / inf.load.rate(),
                per_cpu(o) / per_cpu(inf),
                o.rss.peak() as f64 / inf.rss.peak().max(1) as f64
            );
        }
        if let Some(v) = find(Target::Vm, i) {
            println!(
                "bytes per sample {}/victoria-metrics: {:.2} / {:.2} = {:.2}x",
                row_name(o),
                o.bytes_per_sample(),
                v.bytes_per_sample(),
                o.bytes_per_sample() / v.bytes_per_sample()
            );
        }
    }
    print_alloc_medians(s, outcomes);
}

/// Medians per allocator over the rounds.
fn print_alloc_medians(s: &Settings, outcomes: &[Outcome]) {
    let mut allocs: Vec<Alloc> = outcomes.iter().filter_map(|o| o.alloc).collect();
    allocs.dedup();
    allocs.sort_by_key(|a| a.name());
    allocs.dedup();
    if allocs.is_empty() {
        return;
    }
    println!(
        "allocator medians (n runs each): samples/s, peak MiB, MiB {:.0} s after, share of the peak given back",
        s.after_secs
    );
    for a in allocs {
        let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.alloc == Some(a)).collect();
        let m = |f: &dyn Fn(&Outcome) -> f64| median(runs.iter().map(|o| f(o)).collect());
        println!(
            "  {:<9} n={} {:>10.0} {:>8.1} {:>8.1} {:>5.0}%",
            a.name(),
            runs.len(),
            m(&|o| o.load.rate()),
            m(&|o| mib(o.rss.peak())),
            m(&|o| mib(o.rss_after(s))),
            m(&|o| 100.0 * o.returned(s))
        );
    }
}
