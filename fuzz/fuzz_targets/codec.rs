//! The record decoder (`store/codec.rs` and `store/codec/`): what a damaged
//! store file hands the readers. Arbitrary bytes are decoded as a bucket
//! record (whole, merged into each kind's statistics, staged and settled,
//! its span alone), as a minute group (framing, then each member as a
//! bucket record) and as a series record.
//!
//! Asserts: nothing panics (an `Err` is the answer to damage); a record
//! that decodes re-encodes, plain and compressed, to one that decodes to
//! the same span and statistics, and whose plain encoding is the same
//! bytes; the span read alone agrees with the full decode; a group that
//! parses has its members in minute order inside its hour and re-encodes
//! to the same members; a series
//! record that decodes re-encodes to the same identity.
//! Absurd allocations are caught by `-malloc_limit_mb` (see fuzz/README.md).

#![no_main]

use libfuzzer_sys::fuzz_target;
use scopemon::internals::{Codec, Stats, decode_series, encode_group, encode_series, group_members};
use scopemon::{Kind, Precision};

/// The statistics as a reader sees them: count, and sum, min, max and
/// errors of the point a query would answer (floats by their bits).
fn facts(s: &Stats) -> (u64, Option<[u64; 4]>) {
    let p = s.point(Kind::Latency, 0, 60_000);
    let scalars = p.map(|p| [p.sum.to_bits(), p.min.to_bits(), p.max.to_bits(), p.errors]);
    (s.count(), scalars)
}

fn round_trip(codec: &mut Codec, data: &[u8]) {
    let span = codec.span(data);
    let Ok(rec) = codec.decode(data) else {
        return;
    };
    assert_eq!(span.ok(), Some((rec.first, rec.last)));
    if rec.stats.heap_bytes() > 4 << 20 {
        // Bounds and precision no kind has (up to 45 MiB of counts):
        // decoding them is the test; re-encoding would only be slow.
        return;
    }
    let mut plain = Vec::new();
    codec
        .encode(&rec.stats, rec.first, rec.last, false, &mut plain)
        .expect("a decoded record encodes");
    for compress in [false, true] {
        let mut buf = Vec::new();
        codec
            .encode(&rec.stats, rec.first, rec.last, compress, &mut buf)
            .expect("a decoded record encodes");
        let again = codec.decode(&buf).expect("a re-encoded record decodes");
        assert_eq!((again.first, again.last), (rec.first, rec.last));
        assert_eq!(facts(&again.stats), facts(&rec.stats));
        let mut replain = Vec::new();
        codec
            .encode(&again.stats, again.first, again.last, false, &mut replain)
            .expect("a decoded record encodes");
        assert!(
            replain == plain,
            "compress = {compress}: the histogram changed"
        );
    }
}

fn merge_into_each_kind(codec: &mut Codec, data: &[u8]) {
    for kind in Kind::ALL {
        for digits in [2, 3] {
            if digits == 3 && kind != Kind::Latency {
                continue; // one other precision takes the crate's path
            }
            let p = Precision::new(digits).expect("a valid precision");
            let mut merged = Stats::new(kind, p);
            let _ = codec.decode_into(data, &mut merged);
            let mut staged = Stats::new(kind, p);
            if codec.stage_into(data, &mut staged).is_ok() {
                let _ = codec.settle(&mut staged);
            } else {
                // An error may leave counts staged: settle them away, as
                // the reader does before it reads another record.
                let _ = codec.settle(&mut Stats::new(kind, p));
            }
        }
    }
}

/// A minute group stored under minute 0.
fn group(codec: &mut Codec, data: &[u8]) {
    const HOUR: i64 = 3_600_000;
    let Ok(members) = group_members(0, data) else {
        return;
    };
    assert!(members.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(members.iter().all(|(m, r)| (0..HOUR).contains(m) && !r.is_empty()));
    let mut again = Vec::new();
    encode_group(members.iter().copied(), &mut again).expect("a parsed group encodes");
    let reparsed = group_members(0, &again).expect("a re-encoded group parses");
    assert!(reparsed == members, "a parsed group re-encodes to other members");
    for (_, member) in members {
        let _ = codec.decode(member);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut codec = Codec::new();
    round_trip(&mut codec, data);
    merge_into_each_kind(&mut codec, data);
    group(&mut codec, data);
    if let Ok(rec) = decode_series(data) {
        let bytes = encode_series(&rec.key, rec.first_seen, rec.last_seen)
            .expect("a decoded series encodes");
        let again = decode_series(&bytes).expect("a re-encoded series decodes");
        assert_eq!(again.key, rec.key);
        assert_eq!(
            (again.first_seen, again.last_seen),
            (rec.first_seen, rec.last_seen)
        );
    }
});
