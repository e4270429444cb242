//! Property tests of the two histogram forms (issue 8, item 1): a bucket
//! recorded sparse (hot buckets) and the same samples recorded dense give
//! identical counts, quantiles and exact scalars, whether the sparse one
//! stays sparse, converts to dense part way through (mid-minute), or is
//! merged into a dense one or takes a dense one in; and every answer is
//! within 1 % of the exact nearest-rank value, as in `tests/accuracy.rs`.

use proptest::collection::vec;
use proptest::prelude::*;

use scopemon::internals::Stats;
use scopemon::{Kind, Point, Precision};

/// p50, p90, p95, p99, p99.9.
const PER_MILLE: [u64; 5] = [500, 900, 950, 990, 999];

/// A value spread log-uniformly over 1 µs .. 1 h, or clustered (few
/// distinct buckets), from one random draw.
fn value(cluster: bool, u: f64) -> u64 {
    if cluster {
        1_000 + (u * 40.0) as u64
    } else {
        (3_600_000_000f64.powf(u)).round().max(1.0) as u64
    }
}

fn record(s: &mut Stats, values: &[u64]) {
    for (i, v) in values.iter().enumerate() {
        s.record_scaled(*v, *v as f64, i % 5 == 0);
    }
}

fn dense_of(values: &[u64], p: Precision) -> Stats {
    let mut d = Stats::new(Kind::Latency, p);
    record(&mut d, values);
    d
}

fn point(s: &Stats) -> Point {
    s.point(Kind::Latency, 0, 60_000).expect("non-empty")
}

/// Exact nearest rank, as `tests/accuracy.rs` checks every stage: within
/// 1 % at 2 digits or more (5 % at 1 digit).
fn check_exact(p: &Point, values: &[u64], digits: u8) -> Result<(), TestCaseError> {
    let tolerance = if digits >= 2 { 0.01 } else { 0.05 };
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    prop_assert_eq!(p.count, n);
    prop_assert_eq!(p.min, sorted[0] as f64);
    prop_assert_eq!(p.max, sorted[sorted.len() - 1] as f64);
    let got = [p.p50, p.p90, p.p95, p.p99, p.p999];
    for (q, g) in PER_MILLE.iter().zip(got) {
        let rank = (n * q).div_ceil(1000).max(1);
        let exact = sorted[(rank - 1) as usize] as f64;
        prop_assert!(
            (g - exact).abs() <= exact * tolerance + 0.5,
            "q{}‰: {} vs exact {}",
            q,
            g,
            exact
        );
    }
    Ok(())
}

fn samples() -> impl Strategy<Value = (bool, Vec<f64>)> {
    (any::<bool>(), vec(0.0f64..1.0, 1..3_000))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Sparse (converting to dense past its cap, at whatever sample that
    /// happens: mid-minute) and dense agree exactly.
    #[test]
    fn sparse_and_dense_give_identical_points(
        (cluster, us) in samples(),
        digits in 1u8..=3,
    ) {
        let p = Precision::new(digits).unwrap();
        let values: Vec<u64> = us.iter().map(|u| value(cluster, *u)).collect();
        let mut s = Stats::new_sparse(Kind::Latency, p);
        record(&mut s, &values);
        let d = dense_of(&values, p);
        prop_assert_eq!(point(&s), point(&d));
        prop_assert_eq!(s.count(), values.len() as u64);
        check_exact(&point(&s), &values, digits)?;
        if cluster {
            // ≤ 41 distinct buckets: always stays sparse.
            prop_assert!(s.is_sparse());
        }
    }

    /// Merges: sparse into dense, dense into sparse, sparse into sparse,
    /// with the split anywhere; all equal recording everything dense.
    #[test]
    fn merges_across_forms_equal_one_dense_histogram(
        (cluster, us) in samples(),
        (cluster_b, us_b) in samples(),
        split in 0.0f64..1.0,
    ) {
        let p = Precision::DEFAULT;
        let a: Vec<u64> = us.iter().map(|u| value(cluster, *u)).collect();
        let b: Vec<u64> = us_b.iter().map(|u| value(cluster_b, *u)).collect();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let want = point(&dense_of(&all, p));
        let sparse = |v: &[u64]| {
            let mut s = Stats::new_sparse(Kind::Latency, p);
            record(&mut s, v);
            s
        };
        // b's errors restart at its index 0, as in `dense_of(&all)` only
        // when a's length is a multiple of 5: compare errors separately.
        let errors = |v: &[u64]| (0..v.len()).filter(|i| i % 5 == 0).count() as u64;
        let cases: [(Stats, Stats); 4] = [
            (dense_of(&a, p), sparse(&b)),
            (sparse(&a), dense_of(&b, p)),
            (sparse(&a), sparse(&b)),
            (dense_of(&a, p), dense_of(&b, p)),
        ];
        for (i, (mut x, y)) in cases.into_iter().enumerate() {
            x.merge(&y).unwrap();
            let got = point(&x);
            prop_assert_eq!(got.count, want.count, "case {}", i);
            prop_assert_eq!(
                [got.p50, got.p90, got.p95, got.p99, got.p999],
                [want.p50, want.p90, want.p95, want.p99, want.p999],
                "case {}", i
            );
            prop_assert_eq!((got.min, got.max), (want.min, want.max), "case {}", i);
            prop_assert_eq!(got.errors, errors(&a) + errors(&b), "case {}", i);
            check_exact(&got, &all, 2)?;
        }
        // a sparse one converting mid-way, then merged
        let cut = ((a.len() as f64) * split) as usize;
        let mut x = sparse(&a[..cut]);
        x.merge(&dense_of(&b, p)).unwrap();
        record(&mut x, &a[cut..]);
        let got = point(&x);
        prop_assert_eq!(
            [got.count as f64, got.p50, got.p90, got.p99, got.p999],
            [want.count as f64, want.p50, want.p90, want.p99, want.p999]
        );
    }
}

#[test]
fn a_sparse_bucket_becomes_dense_past_its_cap_and_says_how_much_it_grew() {
    let mut s = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
    let mut counted = s.heap_bytes();
    let mut converted_at = None;
    for v in 1..=2_000u64 {
        counted += s.record_scaled(v * 3, 1.0, false);
        assert_eq!(counted, s.heap_bytes(), "after {v}");
        if converted_at.is_none() && !s.is_sparse() {
            converted_at = Some(v);
        }
    }
    let at = converted_at.expect("converts");
    assert!((100..=2_000).contains(&at), "converted at {at}");
    // Dense is the crate's histogram: ~26 KiB at 2 digits.
    assert!(s.heap_bytes() > 20_000);
}
