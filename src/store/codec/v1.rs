//! Bucket record version 1: the legacy read path (what scopemon wrote
//! before version 2, still read from older files), and its writer
//! [`Codec::encode_v1`], kept to test and measure that path.
//!
//! ```text
//! 1                               version byte
//! body                            bincode, standard config: first, last,
//!                                 sum, min, max, errors, then the
//!                                 histogram bytes (length-prefixed)
//! ```
//!
//! The histogram bytes are HdrHistogram V2 encoding in one of three forms,
//! recognised by their leading cookie: plain V2, the crate's V2+deflate,
//! or scopemon's V2+zstd (cookie, plain length, one zstd frame). A plain V2
//! histogram of the target's own configuration is walked in place
//! (`walk_v2`, `merge_v2`); any other goes through the crate's deserializer.
//!
//! Invariants: bytes reach the crate's deserializer only once checked to
//! be plain V2 with the whole payload its header claims (the crate
//! allocates that length first) and no zero run of `i64::MIN` (which it
//! negates); a compressed histogram may claim (or inflate to) at most
//! 16 MiB. Damaged bytes are an error, never a panic or an unbounded
//! allocation.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stats::Stats;
use crate::stats::sparse::Layout;

use super::{Codec, Scalars, Unpacker, corrupt, versioned_body};

pub(super) const BUCKET_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
pub(super) struct BucketBodyV1<'a> {
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) sum: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) errors: u64,
    #[serde(borrow)]
    pub(super) hist: &'a [u8],
}

/// The body of a bucket record, borrowing its histogram bytes.
pub(super) fn bucket_body(bytes: &[u8]) -> Result<BucketBodyV1<'_>> {
    let body = versioned_body("buckets", bytes, BUCKET_V1)?;
    bincode::serde::borrow_decode_from_slice(body, bincode::config::standard())
        .map(|(b, _)| b)
        .map_err(|e| corrupt(format!("bad bucket body: {e}")))
}

impl From<&BucketBodyV1<'_>> for Scalars {
    fn from(b: &BucketBodyV1<'_>) -> Scalars {
        Scalars {
            first: b.first,
            last: b.last,
            sum: b.sum,
            min: b.min,
            max: b.max,
            errors: b.errors,
        }
    }
}

impl Codec {
    /// Encodes a bucket as a version-1 record (what scopemon wrote before
    /// version 2; kept to test and measure reading old files): the
    /// histogram in HdrHistogram V2 encoding, V2+zstd with `compress`.
    #[doc(hidden)]
    pub fn encode_v1(
        &mut self,
        stats: &Stats,
        first: i64,
        last: i64,
        compress: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let dense = stats.to_dense();
        self.hist_buf.clear();
        self.v2
            .serialize(&dense, &mut self.hist_buf)
            .map_err(|e| corrupt(format!("cannot encode histogram: {e:?}")))?;
        if compress {
            let frame = self.compress_hist()?;
            self.packed.clear();
            self.packed.extend_from_slice(&V2_ZSTD_COOKIE.to_be_bytes());
            self.packed
                .extend_from_slice(&(self.hist_buf.len() as u32).to_be_bytes());
            self.packed.extend_from_slice(&frame);
        }
        let body = BucketBodyV1 {
            first,
            last,
            sum: stats.sum,
            min: stats.min,
            max: stats.max,
            errors: stats.errors,
            hist: if compress {
                &self.packed
            } else {
                &self.hist_buf
            },
        };
        out.clear();
        out.push(BUCKET_V1);
        bincode::serde::encode_into_std_write(&body, out, bincode::config::standard())
            .map_err(|e| corrupt(format!("cannot encode bucket: {e}")))?;
        Ok(())
    }
}

/// The slow path: materialise the histogram with the crate's deserializer
/// and add it (other precisions or bounds than `into`).
pub(super) fn add_via_crate(
    de: &mut Deserializer,
    plain: &[u8],
    into: &mut Histogram<u64>,
) -> Result<()> {
    let hist = crate_deserialize(de, plain)?;
    into.add(&hist)
        .map_err(|e| corrupt(format!("histogram out of range: {e:?}")))
}

/// The crate's deserializer on a plain V2 histogram (as checked by
/// `Unpacker::plain`), refusing first a zero run of `i64::MIN`, which the
/// crate negates (an overflow panic where overflow checks are on).
pub(super) fn crate_deserialize(de: &mut Deserializer, mut plain: &[u8]) -> Result<Histogram<u64>> {
    let mut payload = plain.get(V2_HEADER..).unwrap_or_default();
    while let Some((zz, n)) = read_varint(payload) {
        if zz == u64::MAX {
            return Err(corrupt("histogram has a zero run out of range"));
        }
        payload = &payload[n..];
    }
    de.deserialize::<u64, _>(&mut plain)
        .map_err(|e| corrupt(format!("bad histogram: {e:?}")))
}

/// Cookie of a plain (uncompressed) V2 histogram.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// Cookie of a V2+deflate histogram: cookie, length, then a zlib stream of
/// a plain V2 histogram.
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// Cookie of a V2+zstd histogram (scopemon's own framing): cookie, length
/// of the plain V2 histogram, then one zstd frame of it.
const V2_ZSTD_COOKIE: u32 = 0x5c0d_5a01;

/// The version-1 histogram forms (the zstd and deflate decompressors are
/// shared with version 2: see `Unpacker` in `codec.rs`).
impl Unpacker {
    /// The plain V2 bytes of `hist`: itself when plain, else decompressed
    /// into this unpacker's buffer; checked to be a plain V2 histogram
    /// whose payload is all there (the crate's deserializer allocates the
    /// length its header claims before reading it).
    pub(super) fn plain<'a>(&'a mut self, hist: &'a [u8]) -> Result<&'a [u8]> {
        let plain = self.unpack(hist)?;
        let be32 = |at: usize| {
            plain
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
        };
        if be32(0) != Some(V2_COOKIE) {
            return Err(corrupt("histogram is not HdrHistogram V2"));
        }
        match be32(4) {
            Some(len) if len as usize <= plain.len().saturating_sub(V2_HEADER) => Ok(plain),
            _ => Err(corrupt("histogram payload is truncated")),
        }
    }

    fn unpack<'a>(&'a mut self, hist: &'a [u8]) -> Result<&'a [u8]> {
        let cookie = hist
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes);
        match cookie {
            Some(V2_ZSTD_COOKIE) => {
                let len = hist
                    .get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| corrupt("compressed histogram is truncated"))?
                    as usize;
                if len > MAX_PLAIN {
                    return Err(corrupt("compressed histogram claims an absurd size"));
                }
                self.unzstd(&hist[8..], len)
            }
            _ => match inflate_v2(hist, &mut self.inflater, &mut self.out) {
                Some(res) => {
                    res?;
                    Ok(&self.out)
                }
                None => Ok(hist),
            },
        }
    }
}

/// Inflates a V2+deflate histogram into `out` (a plain V2 histogram);
/// `None` when `buf` is not one.
fn inflate_v2(
    buf: &[u8],
    inflater: &mut flate2::Decompress,
    out: &mut Vec<u8>,
) -> Option<Result<()>> {
    let cookie = buf
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)?;
    if cookie != V2_DEFLATE_COOKIE {
        return None;
    }
    let len = buf
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)? as usize;
    let Some(stream) = buf.get(8..8 + len) else {
        return Some(Err(corrupt("compressed histogram is truncated")));
    };
    inflater.reset(true);
    out.clear();
    out.reserve(len * 4 + 64);
    loop {
        let before = inflater.total_in() as usize;
        // Streaming (not `Finish`): with `Finish`, a first call that runs
        // out of output space leaves miniz unable to go on.
        match inflater.decompress_vec(
            &stream[before.min(stream.len())..],
            out,
            flate2::FlushDecompress::None,
        ) {
            Ok(flate2::Status::StreamEnd) => return Some(Ok(())),
            Ok(_) if out.len() == out.capacity() => {
                if out.len() >= MAX_PLAIN {
                    return Some(Err(corrupt(
                        "compressed histogram inflates to an absurd size",
                    )));
                }
                out.reserve(out.capacity().max(256));
            }
            // Output space left, so every byte of input was taken.
            Ok(_) => return Some(Err(corrupt("compressed histogram ends early"))),
            Err(e) => return Some(Err(corrupt(format!("bad compressed histogram: {e}")))),
        }
    }
}
/// Bytes of the V2 header before the counts payload.
const V2_HEADER: usize = 40;

/// Most bytes a compressed histogram may inflate to (a plain V2 histogram
/// of the widest layout is ~200 KiB).
const MAX_PLAIN: usize = 16 << 20;

/// Reads hdrhistogram's LEB128 variant: up to 8 bytes of 7 bits, then a
/// 9th byte of 8 bits. Returns (value, bytes read).
fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *buf.get(i)?;
        if i == 8 {
            return Some((value | (u64::from(b) << 56), 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Walks the counts of a plain V2 histogram encoded for `map`'s exact
/// configuration, calling `add(index, count)` for each non-zero count.
/// `None` when the encoding is not that (compressed, other bounds or
/// precision): the caller then uses the crate's deserializer.
pub(super) fn walk_v2(
    buf: &[u8],
    map: &Layout,
    mut add: impl FnMut(usize, u64) -> bool,
) -> Option<Result<()>> {
    let be32 = |at: usize| {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let be64 = |at: usize| {
        buf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    if be32(0)? != V2_COOKIE || be32(8)? != 0 || f64::from_bits(be64(32)?) != 1.0 {
        return None;
    }
    if be32(12)? != u32::from(map.digits()) || be64(16)? != map.low() || be64(24)? != map.high() {
        return None;
    }
    let len = usize::try_from(be32(4)?).ok()?;
    let Some(payload) = buf.get(V2_HEADER..V2_HEADER + len) else {
        return Some(Err(corrupt("histogram payload is truncated")));
    };
    let mut index = 0usize;
    let mut pos = 0;
    while pos < payload.len() {
        let Some((zz, n)) = read_varint(&payload[pos..]) else {
            return Some(Err(corrupt("histogram payload ends inside a number")));
        };
        pos += n;
        let v = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        if v < 0 {
            index = index.saturating_add(v.unsigned_abs() as usize);
            continue;
        }
        if v > 0 && !add(index, v as u64) {
            return Some(Err(corrupt(format!(
                "histogram count at index {index} is out of range"
            ))));
        }
        index = index.saturating_add(1);
    }
    Some(Ok(()))
}

/// Adds a plain V2-encoded histogram into `into` without materialising it.
pub(super) fn merge_v2(buf: &[u8], into: &mut hdrhistogram::Histogram<u64>) -> Option<Result<()>> {
    let map = Layout::of(into)?;
    walk_v2(buf, &map, |index, count| {
        index < map.len() && into.record_n(map.value_for(index), count).is_ok()
    })
}
