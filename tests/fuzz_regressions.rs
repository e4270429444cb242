//! Inputs the fuzz targets (`fuzz/`) found crashing the library, each
//! kept as a plain test next to the fix's reason. The fuzz corpus holds
//! them too; these run with `cargo test`.

use scopemon::internals::{Codec, Stats, decode_series};
use scopemon::{Kind, Precision};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every way a reader decodes a bucket record answers `bytes` with an
/// error, not a panic and not an allocation of what the bytes claim.
fn every_bucket_decode_refuses(bytes: &[u8]) {
    let mut c = Codec::new();
    assert!(c.decode(bytes).is_err());
    for kind in Kind::ALL {
        let mut into = Stats::new(kind, Precision::DEFAULT);
        assert!(c.decode_into(bytes, &mut into).is_err());
        let mut staged = Stats::new(kind, Precision::DEFAULT);
        assert!(c.stage_into(bytes, &mut staged).is_err());
        c.settle(&mut staged).unwrap();
    }
}

/// codec: a plain V2 histogram whose header claims a 4 GiB payload made
/// hdrhistogram's deserializer allocate (and zero) 4 GiB before reading
/// the 1 byte that was there (libFuzzer: malloc(4294967280)).
#[test]
fn a_histogram_claiming_more_payload_than_it_has_is_an_error() {
    let record = hex(concat!(
        "010000000000000000f03f000000000000f03f000000000000f03f00291c8493",
        "13fffffff00000000000000002000000000000000100000000d693a4003ff000",
        "000000000002",
    ));
    every_bucket_decode_refuses(&record);
}

/// codec: a bucket record read as a series record: its first "string"
/// claims 3.4 TB, which bincode reserved before reading (ASan:
/// allocation-size-too-big, 0x3179fc9e5a0 bytes).
#[test]
fn a_series_record_claiming_a_huge_name_is_an_error() {
    let record = hex(concat!(
        "01fda0e5c99f17030000fda0e5c99f170300000000000000408f400000000000",
        "0014400000000000007940012d1c849313000000050000000000000002000000",
        "000000000100000000d693a4003ff00000000000000906bb0102",
    ));
    assert!(decode_series(&record).is_err());
}

/// A bucket record around `hist`, with plausible scalars.
fn bucket_record(hist: &[u8]) -> Vec<u8> {
    let mut r = vec![1u8, 0, 0]; // version, first = 0, last = 0
    for x in [1.0f64, 1.0, 1.0] {
        r.extend_from_slice(&x.to_le_bytes());
    }
    r.push(0); // errors
    let len = u32::try_from(hist.len()).unwrap();
    assert!(len < 1 << 16);
    if len < 251 {
        r.push(len as u8);
    } else {
        r.push(251);
        r.extend_from_slice(&(len as u16).to_le_bytes());
    }
    r.extend_from_slice(hist);
    r
}

/// A plain V2 histogram with a latency histogram's exact header (1 ..
/// 3,600,000,000 at 2 digits), so the codec's own fast paths read it.
fn latency_v2(payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x1c84_9313u32.to_be_bytes());
    h.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&2u32.to_be_bytes());
    h.extend_from_slice(&1u64.to_be_bytes());
    h.extend_from_slice(&Kind::Latency.max_scaled().to_be_bytes());
    h.extend_from_slice(&1.0f64.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// codec (found reading the code the fuzzer pointed at): two runs of
/// 2^63 zero counts saturate the index, and a zero count after them
/// overflowed it (`index += 1`: a panic with overflow checks on).
#[test]
fn a_zero_count_after_saturating_runs_of_zeros_does_not_overflow() {
    let mut payload = vec![0xffu8; 18]; // two zigzag i64::MIN runs
    payload.push(0); // a zero count
    let record = bucket_record(&latency_v2(&payload));
    let mut c = Codec::new();
    // The fuzz target then found the crate's deserializer negating the
    // same i64::MIN run (an overflow panic in debug builds).
    assert!(c.decode(&record).is_err());
    let mut other = Stats::new(Kind::Latency, Precision::new(3).unwrap());
    assert!(c.decode_into(&record, &mut other).is_err());
    let mut into = Stats::new(Kind::Latency, Precision::DEFAULT);
    let _ = c.decode_into(&record, &mut into);
    let mut staged = Stats::new(Kind::Latency, Precision::DEFAULT);
    if c.stage_into(&record, &mut staged).is_ok() {
        c.settle(&mut staged).unwrap();
    }
    assert_eq!(staged.count(), 0);
}

/// codec → stats: a record whose max is NaN decoded fine, and the point a
/// query answers from it panicked in `f64::clamp` (min > max or NaN).
#[test]
fn a_record_with_a_nan_max_answers_a_point_without_panicking() {
    let record = hex(concat!(
        "01fda0e5c99f17030000fda0e5c99f178300000000000000408f400000000000",
        "001440007ff80000000000002d1c849313000000050000000000000002000000",
        "000000000100000000d693a43d3ff00000000000008906bb0102",
    ));
    let rec = Codec::new().decode(&record).unwrap();
    assert!(rec.stats.point(Kind::Latency, 0, 60_000).is_some());
}
