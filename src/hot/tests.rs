//! Unit tests of the registry, the hot state machine and handles.

use std::time::Duration;

use super::*;

#[test]
fn lookup_ignores_tag_order_and_creates_once() {
    let r = Registry::new(10, Precision::DEFAULT, 0);
    let a = r
        .get_or_create("ns", Kind::Latency, "m", &[("a", "1"), ("b", "2")], 0)
        .unwrap();
    let b = r
        .get_or_create("ns", Kind::Latency, "m", &[("b", "2"), ("a", "1")], 0)
        .unwrap();
    assert_eq!(a.id(), b.id());
    let c = r
        .get_or_create("ns", Kind::Latency, "m", &[("a", "1")], 0)
        .unwrap();
    assert_ne!(a.id(), c.id());
    assert_eq!(r.select("ns", "m", Kind::Latency, &Tags::empty()).len(), 2);
}

#[test]
fn the_total_limit_spans_namespaces() {
    let r = Registry::new(10, Precision::DEFAULT, 0).with_total_limit(3);
    for ns in ["a", "b", "c"] {
        r.get_or_create(ns, Kind::Latency, "m", &[], 0).unwrap();
    }
    let e = r
        .get_or_create("d", Kind::Latency, "m", &[], 0)
        .unwrap_err();
    assert_eq!(e.code(), "series_limit_exceeded");
    assert!(e.to_string().contains("storage.series_limit"), "{e}");
    // existing series still record
    r.get_or_create("a", Kind::Latency, "m", &[], 0).unwrap();
}

#[test]
fn series_limit_is_per_namespace() {
    let r = Registry::new(2, Precision::DEFAULT, 0);
    r.get_or_create("a", Kind::Latency, "m1", &[], 0).unwrap();
    r.get_or_create("a", Kind::Latency, "m2", &[], 0).unwrap();
    let e = r
        .get_or_create("a", Kind::Latency, "m3", &[], 0)
        .unwrap_err();
    assert_eq!(e.code(), "series_limit_exceeded");
    // existing series still record, other namespaces are unaffected
    r.get_or_create("a", Kind::Latency, "m1", &[], 0).unwrap();
    r.get_or_create("b", Kind::Latency, "m1", &[], 0).unwrap();
}

#[test]
fn invalid_names_are_refused_on_creation() {
    let r = Registry::new(2, Precision::DEFAULT, 0);
    assert_eq!(
        r.get_or_create("bad ns", Kind::Latency, "m", &[], 0)
            .unwrap_err()
            .code(),
        "invalid_name"
    );
}

/// What `hot_bytes` should be: every stats a hot bucket holds.
fn held(s: &Series) -> usize {
    let st = s.state.lock();
    st.buckets
        .iter()
        .map(|b| {
            b.live.as_ref().map_or(0, Stats::heap_bytes)
                + b.inflight.as_ref().map_or(0, |x| x.heap_bytes())
        })
        .sum()
}

#[test]
fn hot_bytes_follow_sparse_growth_conversion_and_flush_exactly() {
    let r = Registry::new(10, Precision::DEFAULT, 0);
    let s = r.get_or_create("ns", Kind::Latency, "m", &[], 0).unwrap();
    let m = crate::model::MINUTE_MS;
    // A backfill: many minutes with a few samples, one with many
    // distinct values (it converts to dense part way through).
    for i in 0..5_000u64 {
        let minute = (i as i64 % 50) * m;
        s.record(minute, 1 + i % 40, 1.0, false);
        s.record(7 * m, 10 + i * 7, 1.0, false);
    }
    assert_eq!(r.hot_bytes(), held(&s));
    assert!(r.hot_bytes() < 200 * 1024, "{}", r.hot_bytes());
    // taken (inflight), more recorded (live), the commit fails, taken
    // again: live merges into inflight
    let taken = s.take_for_flush().unwrap();
    for i in 0..300u64 {
        s.record((i as i64 % 60) * m, 5 + i, 1.0, false);
    }
    assert_eq!(r.hot_bytes(), held(&s));
    drop(taken);
    s.flush_failed();
    let taken = s.take_for_flush().unwrap();
    assert_eq!(r.hot_bytes(), held(&s));
    let gate = CommitGate::default();
    let w = gate.write();
    for (minute, stats) in &taken {
        s.finish_flush(*minute, stats, &w);
    }
    assert_eq!(r.hot_bytes(), 0);
    assert!(!s.is_hot());
}

#[test]
fn handles_follow_the_current_minute() {
    let r = Registry::new(10, Precision::DEFAULT, 0);
    let h = r.handle(r.get_or_create("ns", Kind::Latency, "m", &[], 0).unwrap());
    h.record(Duration::from_micros(100));
    r.observe_time(crate::model::MINUTE_MS + 5);
    h.record(Duration::from_micros(200));
    let st = h.series().lock();
    let minutes: Vec<i64> = st.buckets.iter().map(|b| b.minute).collect();
    assert_eq!(minutes, vec![0, crate::model::MINUTE_MS]);
    assert!(r.hot_bytes() > 0);
}

#[test]
fn evicting_idle_series_frees_exactly_their_empty_bucket_lists_and_never_data() {
    let r = Registry::new(10, Precision::DEFAULT, 0);
    let busy = r
        .get_or_create("ns", Kind::Latency, "busy", &[], 0)
        .unwrap();
    let idle = r
        .get_or_create("ns", Kind::Latency, "idle", &[], 0)
        .unwrap();
    let m = crate::model::MINUTE_MS;
    for minute in 0..3 {
        busy.record(minute * m, 10, 10.0, false);
        idle.record(minute * m, 10, 10.0, false);
    }
    // `idle` is flushed (its buckets gone, their list's capacity kept).
    let taken = idle.take_for_flush().unwrap();
    let gate = CommitGate::default();
    let w = gate.write();
    for (minute, stats) in &taken {
        idle.finish_flush(*minute, stats, &w);
    }
    drop(w);
    let cap = idle.state.lock().buckets.capacity();
    assert!(cap >= 3, "{cap}");
    let held_before = held(&busy);
    assert_eq!(r.evict_idle(), cap * std::mem::size_of::<HotBucket>());
    assert_eq!(idle.state.lock().buckets.capacity(), 0);
    // The series with data keeps every bucket.
    assert_eq!(held(&busy), held_before);
    assert_eq!(busy.state.lock().buckets.len(), 3);
    assert_eq!(r.evict_idle(), 0);
}

/// A flush whose commit failed keeps its inflight stats; the next take
/// merges the live stats into them. When that merge turns two sparse
/// histograms into a dense one, hot bytes grow by exactly the difference.
#[test]
fn a_merge_after_a_failed_flush_that_turns_dense_is_counted_exactly() {
    let r = Registry::new(10, Precision::DEFAULT, 0);
    let s = r.get_or_create("ns", Kind::Latency, "m", &[], 0).unwrap();
    // 255 distinct buckets in flight, then 384 others live: each fits the
    // sparse form (at most 512 entries), the two together do not.
    for v in 1..=255u64 {
        s.record(0, v, 1.0, false);
    }
    let taken = s.take_for_flush().unwrap();
    for v in 256..2048u64 {
        s.record(0, v, 1.0, false);
    }
    let before = held(&s);
    assert_eq!(r.hot_bytes(), before);
    drop(taken);
    s.flush_failed();
    let taken = s.take_for_flush().unwrap();
    assert!(!taken[0].1.is_sparse(), "the merge went dense");
    assert!(held(&s) > before, "{} <= {before}", held(&s));
    assert_eq!(r.hot_bytes(), held(&s));
}

/// The early-flush wake fires once hot bytes reach the mark, not before.
#[test]
fn the_early_flush_wakes_at_the_mark_and_not_before() {
    use std::sync::atomic::AtomicUsize;
    let r = Registry::new(100, Precision::DEFAULT, 0);
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    // Four one-sample buckets' worth of bytes.
    let one = {
        let probe = Registry::new(1, Precision::DEFAULT, 0);
        let s = probe
            .get_or_create("ns", Kind::Latency, "m", &[], 0)
            .unwrap();
        s.record(0, 5, 1.0, false);
        probe.hot_bytes()
    };
    r.on_hot_bytes_above(4 * one, move || {
        w.fetch_add(1, Ordering::Relaxed);
    });
    let s = r.get_or_create("ns", Kind::Latency, "m", &[], 0).unwrap();
    let m = crate::model::MINUTE_MS;
    for minute in 0..3 {
        s.record(minute * m, 5, 1.0, false);
    }
    assert_eq!(r.hot_bytes(), 3 * one);
    assert_eq!(woken.load(Ordering::Relaxed), 0, "below the mark");
    s.record(3 * m, 5, 1.0, false);
    assert_eq!(woken.load(Ordering::Relaxed), 1, "at the mark");
}
