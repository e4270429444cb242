//! Tests of the bucket record codec: both versions round trip, every merge
//! path agrees with a full decode, and damaged bytes are an error, never a
//! panic.

use hdrhistogram::serialization::Serializer;

use super::v1::{BUCKET_V1, BucketBodyV1};
use super::*;
use crate::model::Kind;
use crate::stats::Precision;

#[test]
fn buckets_round_trip_plain_and_compressed() {
    let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
    for v in [100u64, 250, 1_000, 99_000] {
        s.record_scaled(v, v as f64, v == 250);
    }
    let mut c = Codec::new();
    for compress in [false, true] {
        let mut buf = Vec::new();
        c.encode(&s, 60_000, 120_000, compress, &mut buf).unwrap();
        let r = c.decode(&buf).unwrap();
        assert_eq!((r.first, r.last), (60_000, 120_000));
        assert_eq!(r.stats.count(), 4);
        assert_eq!(r.stats.errors, 1);
        assert_eq!(r.stats.max, 99_000.0);
        assert_eq!(r.stats.hist, s.hist);
        // and as written before version 2
        c.encode_v1(&s, 60_000, 120_000, compress, &mut buf)
            .unwrap();
        let r = c.decode(&buf).unwrap();
        assert_eq!((r.first, r.last), (60_000, 120_000));
        assert_eq!((r.stats.count(), r.stats.errors), (4, 1));
        assert_eq!(r.stats.hist, s.hist);
    }
}

/// A xorshift generator from `state` (not 0): the codec tests' random
/// inputs, the same on every run.
pub(super) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[test]
fn merging_in_place_equals_the_crates_decoder() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut c = Codec::new();
    // records of both versions, of a dense and of a sparse histogram
    for (v1, sparse) in [(true, false), (false, false), (false, true)] {
        let enc = |c: &mut Codec, s: &Stats, compress: bool, buf: &mut Vec<u8>| {
            if v1 {
                c.encode_v1(s, 0, 0, compress, buf).unwrap();
            } else {
                c.encode(s, 0, 0, compress, buf).unwrap();
            }
        };
        for kind in Kind::ALL {
            for digits in [1u8, 2, 3] {
                let p = Precision::new(digits).unwrap();
                let mut a = Stats::new(kind, p);
                let mut b = if sparse {
                    Stats::new_sparse(kind, p)
                } else {
                    Stats::new(kind, p)
                };
                for i in 0..500 {
                    // spread over the whole range, log-uniformly
                    let v = (next() % kind.max_scaled()) >> (next() % 40);
                    b.record_scaled(v, v as f64, i % 3 == 0);
                    a.record_scaled(v / 2 + 1, 1.0, false);
                }
                let mut buf = Vec::new();
                enc(&mut c, &b, false, &mut buf);
                let mut fast = a.clone();
                c.decode_into(&buf, &mut fast).unwrap();
                let mut staged = a.clone();
                c.stage_into(&buf, &mut staged).unwrap();
                c.stage_into(&buf, &mut staged).unwrap();
                c.settle(&mut staged).unwrap();
                let mut twice = fast.clone();
                c.decode_into(&buf, &mut twice).unwrap();
                assert_eq!(staged.hist, twice.hist, "{kind:?} {digits} staged");
                assert_eq!(staged.count(), twice.count());
                let mut slow = a.clone();
                slow.merge(&c.decode(&buf).unwrap().stats).unwrap();
                assert_eq!(fast.hist, slow.hist, "{kind:?} {digits}");
                assert_eq!(
                    (fast.count(), fast.errors, fast.min, fast.max),
                    (slow.count(), slow.errors, slow.min, slow.max)
                );
                assert_eq!(fast.sum, slow.sum);
                // compressed records inflate into the same fast paths
                enc(&mut c, &b, true, &mut buf);
                let mut inflated = a.clone();
                c.decode_into(&buf, &mut inflated).unwrap();
                assert_eq!(inflated.hist, slow.hist, "{kind:?} {digits} deflate");
                let mut staged_z = a.clone();
                c.stage_into(&buf, &mut staged_z).unwrap();
                c.settle(&mut staged_z).unwrap();
                assert_eq!(staged_z.hist, slow.hist, "{kind:?} {digits} deflate staged");
                // records written as the crate's V2+deflate read the same
                let rec = crate_deflate_record(&b);
                let mut deflated = a.clone();
                c.decode_into(&rec, &mut deflated).unwrap();
                assert_eq!(deflated.hist, slow.hist, "{kind:?} {digits} V2+deflate");
                assert_other_targets_read(&mut c, &buf, &b, kind, digits);
            }
        }
    }
}

/// `b` as a version-1 record whose histogram is the crate's V2+deflate.
fn crate_deflate_record(b: &Stats) -> Vec<u8> {
    let mut z = Vec::new();
    hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(&*b.to_dense(), &mut z)
        .unwrap();
    v1_record(b, &z)
}

/// A version-1 record of `b`'s scalars with `hist` as its histogram bytes.
fn v1_record(b: &Stats, hist: &[u8]) -> Vec<u8> {
    let mut rec = vec![BUCKET_V1];
    let body = BucketBodyV1 {
        first: 0,
        last: 0,
        sum: b.sum,
        min: b.min,
        max: b.max,
        errors: b.errors,
        hist,
    };
    bincode::serde::encode_into_std_write(&body, &mut rec, bincode::config::standard()).unwrap();
    rec
}

/// `buf` (the record of `b`) merged into targets of another precision and
/// into a sparse one.
fn assert_other_targets_read(c: &mut Codec, buf: &[u8], b: &Stats, kind: Kind, digits: u8) {
    let p = Precision::new(digits).unwrap();
    // other precisions go the crate's way: each value where the crate puts
    // it, not only as many
    let op = Precision::new(if digits == 3 { 2 } else { 3 }).unwrap();
    let mut want = Stats::new(kind, op);
    want.merge(b).unwrap();
    let mut other = Stats::new(kind, op);
    c.decode_into(buf, &mut other).unwrap();
    assert_eq!(other.hist, want.hist, "{kind:?} {digits} into {op:?}");
    let mut other = Stats::new(kind, op);
    c.stage_into(buf, &mut other).unwrap();
    c.settle(&mut other).unwrap();
    assert_eq!(
        other.hist, want.hist,
        "{kind:?} {digits} staged into {op:?}"
    );
    // a sparse target (a flush merging an earlier delta)
    let mut hot = Stats::new_sparse(kind, p);
    hot.record_scaled(1, 1.0, false);
    c.decode_into(buf, &mut hot).unwrap();
    let mut want = Stats::new(kind, p);
    want.record_scaled(1, 1.0, false);
    want.merge(b).unwrap();
    assert_eq!(hot.hist, want.hist, "{kind:?} {digits} into sparse");
    assert_eq!((hot.count(), hot.errors), (want.count(), want.errors));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut c = Codec::new();
    for bad in [
        &b""[..],
        &[1u8][..],
        &[9u8, 1, 2][..],
        &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5][..],
    ] {
        assert!(c.decode(bad).is_err());
    }
    assert!(decode_series(b"\x01\xff").is_err());
    // every prefix and every single-byte change of version-2 records:
    // an error or some record, never a panic
    let mut s = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
    for v in [3u64, 3, 40, 41, 900, 12_345, 3_600_000_000] {
        s.record_scaled(v, v as f64 + 0.25, v == 40);
    }
    let mut dense = Stats::new(Kind::Throughput, Precision::DEFAULT);
    for v in 0..3_000u64 {
        dense.record_scaled(v * 7, v as f64, false);
    }
    let mut buf = Vec::new();
    for (st, compress) in [(&s, false), (&dense, false), (&dense, true)] {
        c.encode(st, 60_000, 60_000, compress, &mut buf).unwrap();
        assert_eq!(c.decode(&buf).unwrap().stats.count(), st.count());
        for cut in 0..buf.len() {
            let _ = c.decode(&buf[..cut]);
            let _ = c.span(&buf[..cut]);
        }
        for at in 0..buf.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = buf.clone();
                bad[at] ^= x;
                let _ = c.decode(&bad);
                let mut into = Stats::new(Kind::Latency, Precision::DEFAULT);
                let _ = c.decode_into(&bad, &mut into);
                let _ = c.stage_into(&bad, &mut into);
                let _ = c.settle(&mut into);
                let mut into = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
                let _ = c.decode_into(&bad, &mut into);
            }
        }
    }
}

#[test]
fn version_2_keeps_every_scalar_bit_exact_and_is_small() {
    let mut c = Codec::new();
    let mut buf = Vec::new();
    let mut s = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
    for i in 0..26u64 {
        s.record_scaled(600 + i * i * 13, (600 + i * i * 13) as f64, i == 3);
    }
    c.encode(&s, 1_800_000_000_000, 1_800_000_000_000, true, &mut buf)
        .unwrap();
    assert!(buf.len() < 64, "{} bytes", buf.len());
    let r = c.decode(&buf).unwrap();
    assert!(r.stats.is_sparse());
    assert_eq!(r.stats.hist, s.hist);
    for (sum, min, max, first, last) in [
        (0.1 + 0.2, 1e-300, f64::MAX, -7, 13),
        (-0.0, 0.0, 5.0, i64::MIN / 2, i64::MAX / 2),
        (0.0, f64::INFINITY, f64::NEG_INFINITY, 0, 0),
        // one end on a minute, the other not: kept in ms
        (1.0, 1.0, 1.0, 120_000, 150_001),
        (1.0, 1.0, 1.0, 90_001, 120_000),
    ] {
        let mut t = s.clone();
        (t.sum, t.min, t.max) = (sum, min, max);
        c.encode(&t, first, last, false, &mut buf).unwrap();
        let r = c.decode(&buf).unwrap();
        assert_eq!(
            [r.stats.sum, r.stats.min, r.stats.max].map(f64::to_bits),
            [sum, min, max].map(f64::to_bits)
        );
        assert_eq!((r.first, r.last), (first, last));
        assert_eq!(c.span(&buf).unwrap(), (first, last));
    }
}

#[test]
fn a_member_keeps_its_statistics_and_drops_its_absolute_time() {
    let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
    for v in [120u64, 4_000, 4_100, 77_000] {
        s.record_scaled(v, v as f64, v == 4_000);
    }
    let minute = 30_000_001 * 60_000;
    let mut c = Codec::new();
    let mut rec = Vec::new();
    c.encode(&s, minute, minute, true, &mut rec).unwrap();
    let mut member = Vec::new();
    c.as_member(&rec, minute, &mut member);
    assert!(
        member.len() + 3 <= rec.len(),
        "{} vs {}",
        member.len(),
        rec.len()
    );
    let m = c.decode(&member).unwrap();
    assert_eq!((m.first, m.last), (0, 0));
    assert_eq!(m.stats.hist, s.hist);
    assert_eq!(
        (m.stats.count(), m.stats.errors, m.stats.sum),
        (4, 1, s.sum)
    );
    // version 1 has no span to shift: kept as it is
    c.encode_v1(&s, minute, minute, true, &mut rec).unwrap();
    c.as_member(&rec, minute, &mut member);
    assert_eq!(member, rec);
}

/// A minute record (`compress`) of a wide histogram is zstd-compressed
/// when that makes it smaller, and reads back the same; an hour or day
/// record (read far more often than written) never is. The sizes tell
/// which form was written.
#[test]
fn wide_minute_records_are_compressed_and_rollups_are_not() {
    let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
    for i in 0..3_000u64 {
        // Many distinct buckets, with counts in a repeating pattern.
        let v = 100 + i * 37;
        for _ in 0..=(i % 3) {
            s.record_scaled(v, v as f64, false);
        }
    }
    let mut c = Codec::new();
    let (mut minute, mut rollup) = (Vec::new(), Vec::new());
    c.encode(&s, 60_000, 120_000, true, &mut minute).unwrap();
    c.encode(&s, 60_000, 120_000, false, &mut rollup).unwrap();
    assert!(
        minute.len() < rollup.len(),
        "compressed {} bytes, plain {}",
        minute.len(),
        rollup.len()
    );
    for buf in [&minute, &rollup] {
        let r = c.decode(buf).unwrap();
        assert_eq!(r.stats.hist, s.hist);
        assert_eq!((r.stats.count(), r.stats.sum), (s.count(), s.sum));
    }
}

/// Version-2 records byte for byte, worked out by hand from the layout in
/// `codec/v2.rs` (the format files on disk are in): what the encoder
/// writes, and what the decoder reads from those bytes.
#[test]
fn version_2_bytes_are_the_documented_layout() {
    // Latency at 2 digits (an index is its value below 256): 5 once, 7
    // three times, one error; a whole-minute span; integer scalars.
    let mut a = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
    a.record_scaled(5, 5.0, true);
    for _ in 0..3 {
        a.record_scaled(7, 7.0, false);
    }
    let a_bytes: &[u8] = &[
        2,    // version
        0x0f, // flags: SUM_INT | MIN_INT | MAX_INT | MINUTES, gaps form
        4,    // first: minute 2, zigzag
        2,    // last − first: 1 minute, zigzag
        1,    // errors
        52,   // sum 26, zigzag
        10,   // min 5, zigzag
        14,   // max 7, zigzag
        3,    // configuration: 1 + latency (0) × 8 + 2 digits
        10,   // index 5: gap 5 << 1, count 1
        3, 1, // index 7: gap 1 << 1 | 1, then count − 2
    ];
    // Throughput at 3 digits (an index is its value below 2048): 10..=13
    // five times each, so the runs form is the smaller; a span in ms;
    // sum and max not integers.
    let mut b = Stats::new_sparse(Kind::Throughput, Precision::new(3).unwrap());
    for v in 10..=13u64 {
        for _ in 0..5 {
            b.record_scaled(v, v as f64, false);
        }
    }
    (b.sum, b.min, b.max) = (1.5, 10.0, 13.25);
    let b_bytes: &[u8] = &[
        2,    // version
        0x22, // flags: MIN_INT | RUNS
        0x90, 0xb9, 0x07, // first: 61,000 ms, zigzag 122,000
        0xe8, 0x07, // last − first: 500 ms, zigzag 1,000
        0,    // errors
        0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // sum 1.5, f64 LE
        20,   // min 10, zigzag
        0, 0, 0, 0, 0, 0x80, 0x2a, 0x40, // max 13.25, f64 LE
        12,   // configuration: 1 + throughput (1) × 8 + 3 digits
        10,   // runs from index 10
        10, 10, 10, 10, // counts 5, zigzag, at 10, 11, 12, 13
    ];
    let mut c = Codec::new();
    let mut buf = Vec::new();
    for (stats, first, last, bytes) in [
        (&a, 120_000, 180_000, a_bytes),
        (&b, 61_000, 61_500, b_bytes),
    ] {
        c.encode(stats, first, last, true, &mut buf).unwrap();
        assert_eq!(buf, bytes);
        let r = c.decode(bytes).unwrap();
        assert_eq!((r.first, r.last), (first, last));
        assert_eq!(r.stats.hist, stats.hist);
        assert_eq!(r.stats.count(), stats.count());
        assert_eq!(r.stats.errors, stats.errors);
        assert_eq!(
            [r.stats.sum, r.stats.min, r.stats.max].map(f64::to_bits),
            [stats.sum, stats.min, stats.max].map(f64::to_bits)
        );
    }
    // As a group member (`codec/group.rs`), a record's start becomes
    // relative to its minute, in the record's own unit.
    let mut member = Vec::new();
    c.as_member(a_bytes, 120_000, &mut member);
    let mut relative = a_bytes.to_vec();
    relative[2] = 0; // minute 0
    assert_eq!(member, relative);
    c.as_member(b_bytes, 60_000, &mut member);
    let relative = [&b_bytes[..2], &[0xd0, 0x0f], &b_bytes[5..]].concat(); // 1,000 ms
    assert_eq!(member, relative);
}

/// Records whose samples all fall in one histogram index stage and settle
/// like any other (one touched index is not an empty stage).
#[test]
fn staging_records_of_one_index_keeps_every_count() {
    let mut c = Codec::new();
    let mut s = Stats::new_sparse(Kind::Latency, Precision::DEFAULT);
    for _ in 0..3 {
        s.record_scaled(1_000, 1_000.0, false);
    }
    let mut buf = Vec::new();
    c.encode(&s, 0, 0, true, &mut buf).unwrap();
    let mut into = Stats::new(Kind::Latency, Precision::DEFAULT);
    c.stage_into(&buf, &mut into).unwrap();
    c.stage_into(&buf, &mut into).unwrap();
    c.settle(&mut into).unwrap();
    let mut expected = Stats::new(Kind::Latency, Precision::DEFAULT);
    for _ in 0..6 {
        expected.record_scaled(1_000, 1_000.0, false);
    }
    assert_eq!(into.count(), 6);
    assert_eq!(into.hist, expected.hist);
}

/// A legacy (version-1) histogram that claims more than it holds is
/// refused by name before anything allocates what it claims: a plain V2
/// payload longer than the bytes, a zstd frame or a deflate stream of more
/// than 16 MiB, a zero run of `i64::MIN` (which the crate's decoder would
/// negate), a deflate stream cut short. The message says which, on every
/// read path.
#[test]
fn legacy_histograms_that_claim_too_much_are_refused_by_name() {
    let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
    for v in [5u64, 7, 7, 900] {
        s.record_scaled(v, v as f64, false);
    }
    let mut plain = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(&*s.to_dense(), &mut plain)
        .unwrap();
    let header = |payload_len: u32, payload: &[u8]| {
        let mut h = plain[..40].to_vec();
        h[4..8].copy_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(payload);
        h
    };
    let zstd = |claimed: u32| {
        let mut h = 0x5c0d_5a01u32.to_be_bytes().to_vec();
        h.extend_from_slice(&claimed.to_be_bytes());
        h.extend_from_slice(b"not a zstd frame");
        h
    };
    let mut deflated = Vec::new();
    let mut wide = Stats::new(Kind::Latency, Precision::DEFAULT);
    for v in 1..=5_000u64 {
        wide.record_scaled(v * 3, v as f64, false);
    }
    hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(&*wide.to_dense(), &mut deflated)
        .unwrap();
    let cut = (deflated.len() - 8) / 2;
    deflated.truncate(8 + cut);
    deflated[4..8].copy_from_slice(&(cut as u32).to_be_bytes());
    // 20 MiB of zeros in a few KiB: a deflate bomb.
    let bomb = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 20 << 20]).unwrap();
        let z = z.finish().unwrap();
        let mut h = 0x1c84_9314u32.to_be_bytes().to_vec();
        h.extend_from_slice(&(z.len() as u32).to_be_bytes());
        h.extend_from_slice(&z);
        h
    };
    let payload = &plain[40..];
    let cases: [(Vec<u8>, &str); 6] = [
        (header(payload.len() as u32 + 1_000, payload), "truncated"),
        (zstd((16 << 20) + 1), "absurd size"),
        (zstd(16 << 20), "bad compressed histogram"),
        // zigzag(i64::MIN) = u64::MAX: 8 bytes of 7 bits, a 9th of 8
        (header(9, &[0xff; 9]), "zero run out of range"),
        (deflated, "ends early"),
        (bomb, "inflates to an absurd size"),
    ];
    let mut c = Codec::new();
    for (hist, says) in cases {
        let rec = v1_record(&s, &hist);
        let other = Precision::new(3).unwrap();
        let errors = [
            c.decode(&rec).err(),
            c.decode_into(&rec, &mut Stats::new(Kind::Latency, other))
                .err(),
            c.stage_into(&rec, &mut Stats::new(Kind::Latency, other))
                .err(),
        ];
        for e in errors {
            let e = e.unwrap_or_else(|| panic!("read as a record ({says})"));
            assert!(e.to_string().contains(says), "{e} (wanted {says})");
        }
    }
}

/// A legacy V2+deflate histogram that inflates to far more than 4 times
/// its compressed size (long runs of equal counts) reads whole.
#[test]
fn legacy_histograms_that_inflate_far_read_whole() {
    let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
    for v in 1..=20_000u64 {
        s.record_scaled(v, v as f64, false);
    }
    let rec = crate_deflate_record(&s);
    assert!(rec.len() * 4 + 64 < 20_000, "{} bytes", rec.len());
    let mut c = Codec::new();
    assert_eq!(c.decode(&rec).unwrap().stats.hist, s.hist);
}
