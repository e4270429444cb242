//! The versioned bucket record: what one stored bucket (or one flushed delta)
//! looks like on disk.
//!
//! Layout: one version byte, then a bincode (standard config) body. Version 1
//! body: first/last minute covered, exact sum/min/max, error count, and the
//! histogram in HdrHistogram V2 encoding, optionally zstd-compressed (minute
//! records are written that way); the decoder also reads the crate's
//! V2+deflate, recognising each form by its cookie. The sample count is the
//! histogram's total count, so it cannot disagree with the histogram.
//!
//! Series records (the catalog) use the same scheme with their own body.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Kind, SeriesKey, Tags};
use crate::stats::Stats;

const BUCKET_V1: u8 = 1;
const SERIES_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct BucketBodyV1<'a> {
    first: i64,
    last: i64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
    #[serde(borrow)]
    hist: &'a [u8],
}

/// Checks a versioned record's leading version byte and returns its body.
pub fn versioned_body<'a>(table: &'static str, bytes: &'a [u8], version: u8) -> Result<&'a [u8]> {
    let bad = |detail: String| Error::Corrupt { table, detail };
    let (&v, body) = bytes
        .split_first()
        .ok_or_else(|| bad("empty record".into()))?;
    if v != version {
        return Err(bad(format!(
            "unknown record version {v} (this scopemon reads {version})"
        )));
    }
    Ok(body)
}

/// A version byte followed by the bincode (standard config) body.
pub fn encode_bincode<T: Serialize>(table: &'static str, version: u8, body: &T) -> Result<Vec<u8>> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(body, &mut out, bincode::config::standard()).map_err(
        |e| Error::Corrupt {
            table,
            detail: format!("cannot encode: {e}"),
        },
    )?;
    Ok(out)
}

/// Most bytes a bincode record body may claim to hold (names, tags and
/// overrides are far smaller).
const MAX_BINCODE_BODY: usize = 1 << 20;

/// Inverse of [`encode_bincode`].
pub fn decode_bincode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T> {
    let body = versioned_body(table, bytes, version)?;
    // The limit makes a damaged length prefix an error before it becomes
    // an allocation (bincode reserves what a string or vector claims).
    let config = bincode::config::standard().with_limit::<MAX_BINCODE_BODY>();
    bincode::serde::decode_from_slice(body, config)
        .map(|(v, _)| v)
        .map_err(|e| Error::Corrupt {
            table,
            detail: format!("bad body: {e}"),
        })
}

/// A version byte followed by a JSON body (for small records read by people
/// as often as by code: baselines, thresholds, alerts).
pub fn encode_json<T: Serialize>(table: &'static str, version: u8, body: &T) -> Result<Vec<u8>> {
    let mut out = vec![version];
    serde_json::to_writer(&mut out, body).map_err(|e| Error::Corrupt {
        table,
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Inverse of [`encode_json`].
pub fn decode_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T> {
    let body = versioned_body(table, bytes, version)?;
    serde_json::from_slice(body).map_err(|e| Error::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// The body of a bucket record, borrowing its histogram bytes.
fn bucket_body(bytes: &[u8]) -> Result<BucketBodyV1<'_>> {
    let body = versioned_body("buckets", bytes, BUCKET_V1)?;
    bincode::serde::borrow_decode_from_slice(body, bincode::config::standard())
        .map(|(b, _)| b)
        .map_err(|e| corrupt(format!("bad bucket body: {e}")))
}

/// A decoded bucket: its statistics and the minutes it covers.
#[derive(Debug, Clone)]
pub struct BucketRecord {
    /// First minute start covered (Unix ms).
    pub first: i64,
    /// Last minute start covered (Unix ms).
    pub last: i64,
    /// The statistics.
    pub stats: Stats,
}

/// Reusable encoder/decoder state (serializer buffers).
pub struct Codec {
    v2: V2Serializer,
    de: Deserializer,
    hist_buf: Vec<u8>,
    staged: Option<Staged>,
    unpacker: Unpacker,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    packed: Vec<u8>,
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        table: "buckets",
        detail: detail.into(),
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    /// A fresh codec.
    pub fn new() -> Codec {
        Codec {
            v2: V2Serializer::new(),
            de: Deserializer::new(),
            hist_buf: Vec::new(),
            staged: None,
            unpacker: Unpacker::new(),
            zstd: None,
            packed: Vec::new(),
        }
    }

    /// Encodes a bucket; `compress` picks V2+zstd (about half the bytes).
    pub fn encode(
        &mut self,
        stats: &Stats,
        first: i64,
        last: i64,
        compress: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.hist_buf.clear();
        self.v2
            .serialize(&stats.hist, &mut self.hist_buf)
            .map_err(|e| corrupt(format!("cannot encode histogram: {e:?}")))?;
        if compress {
            // zstd rather than the crate's V2+deflate: about the same size,
            // but inflating rebuilds Huffman tables for every record, which
            // made reading a compressed minute ~7 µs.
            let z = match &mut self.zstd {
                Some(z) => z,
                slot => slot.insert(
                    zstd::bulk::Compressor::new(3).map_err(|e| corrupt(format!("zstd: {e}")))?,
                ),
            };
            let frame = z
                .compress(&self.hist_buf)
                .map_err(|e| corrupt(format!("cannot compress histogram: {e}")))?;
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

    /// Decodes a bucket of `kind`.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<BucketRecord> {
        let body = bucket_body(bytes)?;
        let plain = self.unpacker.plain(body.hist)?;
        let hist = crate_deserialize(&mut self.de, plain)?;
        Ok(BucketRecord {
            first: body.first,
            last: body.last,
            stats: Stats::from_parts(hist, body.sum, body.min, body.max, body.errors),
        })
    }

    /// Like [`Codec::decode_into`], but plain V2 counts are staged in index
    /// space rather than recorded into `into.hist` one by one: much cheaper
    /// when many records are merged into one answer. `into.hist` lacks the
    /// staged counts until [`Codec::settle`] is called with the same
    /// `into`, which must happen before `into` is read or another target is
    /// staged into (the scalars are added at once).
    pub fn stage_into(&mut self, bytes: &[u8], into: &mut Stats) -> Result<(i64, i64)> {
        let body = bucket_body(bytes)?;
        let map = IndexMap::of(&into.hist);
        let staged = match &mut self.staged {
            Some(s) if s.map == map => s,
            slot => {
                debug_assert!(
                    slot.as_ref().is_none_or(Staged::is_empty),
                    "staged counts not settled"
                );
                slot.insert(Staged::new(map, into.hist.distinct_values()))
            }
        };
        let hist = self.unpacker.plain(body.hist)?;
        match walk_v2(hist, &map, |index, count| staged.add(index, count)) {
            Some(res) => res?,
            None => add_via_crate(&mut self.de, hist, into)?,
        }
        add_scalars(&body, into);
        Ok((body.first, body.last))
    }

    /// Records the counts staged by [`Codec::stage_into`] into `into`.
    pub fn settle(&mut self, into: &mut Stats) -> Result<()> {
        match &mut self.staged {
            Some(s) => s.settle(&mut into.hist),
            None => Ok(()),
        }
    }

    /// The (first, last) minutes a record covers, without decoding its
    /// histogram.
    pub fn span(&self, bytes: &[u8]) -> Result<(i64, i64)> {
        let body = bucket_body(bytes)?;
        Ok((body.first, body.last))
    }

    /// Decodes a bucket and merges it into `into`; returns its span.
    ///
    /// Plain V2 histograms of the same configuration as `into` (the usual
    /// case) are added count by count straight into `into`, skipping the
    /// fresh histogram (26 KiB to allocate, zero and add back) that the
    /// crate's deserializer would build; anything else takes that path.
    pub fn decode_into(&mut self, bytes: &[u8], into: &mut Stats) -> Result<(i64, i64)> {
        let body = bucket_body(bytes)?;
        let hist = self.unpacker.plain(body.hist)?;
        match merge_v2(hist, &mut into.hist) {
            Some(res) => res?,
            None => add_via_crate(&mut self.de, hist, into)?,
        }
        add_scalars(&body, into);
        Ok((body.first, body.last))
    }
}

/// The slow path: materialise the histogram with the crate's deserializer
/// and add it (other precisions or bounds than `into`).
fn add_via_crate(de: &mut Deserializer, plain: &[u8], into: &mut Stats) -> Result<()> {
    let hist = crate_deserialize(de, plain)?;
    into.hist
        .add(&hist)
        .map_err(|e| corrupt(format!("histogram out of range: {e:?}")))
}

/// The crate's deserializer on a plain V2 histogram (as checked by
/// `Unpacker::plain`), refusing first a zero run of `i64::MIN`, which the
/// crate negates (an overflow panic where overflow checks are on).
fn crate_deserialize(de: &mut Deserializer, mut plain: &[u8]) -> Result<Histogram<u64>> {
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

/// Adds a record's exact sum, min, max and errors.
fn add_scalars(body: &BucketBodyV1<'_>, into: &mut Stats) {
    into.sum += body.sum;
    into.min = into.min.min(body.min);
    into.max = into.max.max(body.max);
    into.errors += body.errors;
}

/// Cookie of a plain (uncompressed) V2 histogram.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// Cookie of a V2+deflate histogram: cookie, length, then a zlib stream of
/// a plain V2 histogram.
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// Cookie of a V2+zstd histogram (scopemon's own framing): cookie, length
/// of the plain V2 histogram, then one zstd frame of it.
const V2_ZSTD_COOKIE: u32 = 0x5c0d_5a01;

/// Decompressors kept across records (their tables are reused).
struct Unpacker {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    inflater: flate2::Decompress,
    out: Vec<u8>,
}

impl Unpacker {
    fn new() -> Unpacker {
        Unpacker {
            zstd: None,
            inflater: flate2::Decompress::new(true),
            out: Vec::new(),
        }
    }

    /// The plain V2 bytes of `hist`: itself when plain, else decompressed
    /// into this unpacker's buffer; checked to be a plain V2 histogram
    /// whose payload is all there (the crate's deserializer allocates the
    /// length its header claims before reading it).
    fn plain<'a>(&'a mut self, hist: &'a [u8]) -> Result<&'a [u8]> {
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
                if len > 16 << 20 {
                    return Err(corrupt("compressed histogram claims an absurd size"));
                }
                let z = match &mut self.zstd {
                    Some(z) => z,
                    slot => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| corrupt(format!("zstd: {e}")))?,
                    ),
                };
                self.out.clear();
                self.out.reserve(len);
                let n = z
                    .decompress_to_buffer(&hist[8..], &mut self.out)
                    .map_err(|e| corrupt(format!("bad compressed histogram: {e}")))?;
                if n != len {
                    return Err(corrupt("compressed histogram has the wrong size"));
                }
                Ok(&self.out)
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
        match inflater.decompress_vec(
            &stream[before.min(stream.len())..],
            out,
            flate2::FlushDecompress::Finish,
        ) {
            Ok(flate2::Status::StreamEnd) => return Some(Ok(())),
            Ok(_) if out.len() == out.capacity() => out.reserve(out.capacity().max(256)),
            Ok(_) => return Some(Err(corrupt("compressed histogram ends early"))),
            Err(e) => return Some(Err(corrupt(format!("bad compressed histogram: {e}")))),
        }
    }
}
/// Bytes of the V2 header before the counts payload.
const V2_HEADER: usize = 40;

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

/// HdrHistogram's index → value mapping for one configuration (the crate's
/// private `value_for`); the codec tests check it against the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexMap {
    digits: u32,
    low: u64,
    high: u64,
    half_magnitude: u32,
    unit_magnitude: u32,
}

impl IndexMap {
    fn of(h: &hdrhistogram::Histogram<u64>) -> IndexMap {
        let digits = u32::from(h.sigfig());
        let largest = 2.0 * 10f64.powi(digits as i32);
        IndexMap {
            digits,
            low: h.low(),
            high: h.high(),
            half_magnitude: largest.log2().ceil() as u32 - 1,
            unit_magnitude: (h.low() as f64).log2().floor() as u32,
        }
    }

    fn value_for(&self, index: usize) -> Option<u64> {
        let half_count = 1usize << self.half_magnitude;
        let mut bucket = (index >> self.half_magnitude) as i64 - 1;
        let mut sub = (index & (half_count - 1)) + half_count;
        if bucket < 0 {
            sub -= half_count;
            bucket = 0;
        }
        (sub as u64)
            .checked_shl(u32::try_from(bucket).ok()? + self.unit_magnitude)
            .filter(|&v| v <= self.high)
    }
}

/// Walks the counts of a plain V2 histogram encoded for `map`'s exact
/// configuration, calling `add(index, count)` for each non-zero count.
/// `None` when the encoding is not that (compressed, other bounds or
/// precision): the caller then uses the crate's deserializer.
fn walk_v2(
    buf: &[u8],
    map: &IndexMap,
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
    if be32(12)? != map.digits || be64(16)? != map.low || be64(24)? != map.high {
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
fn merge_v2(buf: &[u8], into: &mut hdrhistogram::Histogram<u64>) -> Option<Result<()>> {
    let map = IndexMap::of(into);
    walk_v2(buf, &map, |index, count| {
        map.value_for(index)
            .and_then(|value| into.record_n(value, count).ok())
            .is_some()
    })
}

/// Counts staged in a histogram's own index space: adding a stored count is
/// one array add, and the staged counts become histogram records once, in
/// [`Staged::settle`], instead of one `record_n` per count per record.
#[derive(Debug)]
struct Staged {
    map: IndexMap,
    counts: Vec<u64>,
    /// Touched index range (empty when lo > hi).
    lo: usize,
    hi: usize,
}

impl Staged {
    fn new(map: IndexMap, len: usize) -> Staged {
        Staged {
            map,
            counts: vec![0; len],
            lo: usize::MAX,
            hi: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    fn add(&mut self, index: usize, count: u64) -> bool {
        let Some(c) = self.counts.get_mut(index) else {
            return false;
        };
        *c = c.saturating_add(count);
        self.lo = self.lo.min(index);
        self.hi = self.hi.max(index);
        true
    }

    fn settle(&mut self, into: &mut hdrhistogram::Histogram<u64>) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        for index in self.lo..=self.hi {
            let c = std::mem::take(&mut self.counts[index]);
            if c > 0 {
                let value = self
                    .map
                    .value_for(index)
                    .ok_or_else(|| corrupt("staged index out of range"))?;
                into.record_n(value, c)
                    .map_err(|e| corrupt(format!("staged count out of range: {e:?}")))?;
            }
        }
        self.lo = usize::MAX;
        self.hi = 0;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct SeriesBodyV1 {
    namespace: String,
    kind: u8,
    metric: String,
    tags: Vec<(String, String)>,
    first_seen: i64,
    last_seen: i64,
}

/// A catalog entry: a series' identity and when it was seen.
#[derive(Debug, Clone)]
pub struct SeriesRecord {
    /// Identity.
    pub key: SeriesKey,
    /// First minute with data.
    pub first_seen: i64,
    /// Last minute with data.
    pub last_seen: i64,
}

/// Encodes a catalog entry.
pub fn encode_series(key: &SeriesKey, first_seen: i64, last_seen: i64) -> Result<Vec<u8>> {
    let body = SeriesBodyV1 {
        namespace: key.namespace.clone(),
        kind: key.kind.code(),
        metric: key.metric.clone(),
        tags: key.tags.pairs().to_vec(),
        first_seen,
        last_seen,
    };
    encode_bincode("series", SERIES_V1, &body)
}

/// Decodes a catalog entry.
pub fn decode_series(bytes: &[u8]) -> Result<SeriesRecord> {
    let bad = |detail: String| Error::Corrupt {
        table: "series",
        detail,
    };
    let b: SeriesBodyV1 = decode_bincode("series", SERIES_V1, bytes)?;
    let kind =
        Kind::from_code(b.kind).ok_or_else(|| bad(format!("unknown kind code {}", b.kind)))?;
    let tags = Tags::new(&b.tags).map_err(|e| bad(e.to_string()))?;
    let key =
        SeriesKey::new(&b.namespace, kind, &b.metric, tags).map_err(|e| bad(e.to_string()))?;
    Ok(SeriesRecord {
        key,
        first_seen: b.first_seen,
        last_seen: b.last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    #[test]
    fn merging_in_place_equals_the_crates_decoder() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut c = Codec::new();
        for kind in Kind::ALL {
            for digits in [1u8, 2, 3] {
                let p = Precision::new(digits).unwrap();
                let mut a = Stats::new(kind, p);
                let mut b = Stats::new(kind, p);
                for i in 0..500 {
                    // spread over the whole range, log-uniformly
                    let v = (next() % kind.max_scaled()) >> (next() % 40);
                    b.record_scaled(v, v as f64, i % 3 == 0);
                    a.record_scaled(v / 2 + 1, 1.0, false);
                }
                let mut buf = Vec::new();
                c.encode(&b, 0, 0, false, &mut buf).unwrap();
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
                c.encode(&b, 0, 0, true, &mut buf).unwrap();
                let mut inflated = a.clone();
                c.decode_into(&buf, &mut inflated).unwrap();
                assert_eq!(inflated.hist, slow.hist, "{kind:?} {digits} deflate");
                let mut staged_z = a.clone();
                c.stage_into(&buf, &mut staged_z).unwrap();
                c.settle(&mut staged_z).unwrap();
                assert_eq!(staged_z.hist, slow.hist, "{kind:?} {digits} deflate staged");
                // records written as the crate's V2+deflate read the same
                let mut z = Vec::new();
                hdrhistogram::serialization::V2DeflateSerializer::new()
                    .serialize(&b.hist, &mut z)
                    .unwrap();
                let mut rec = vec![BUCKET_V1];
                let body = BucketBodyV1 {
                    first: 0,
                    last: 0,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                    errors: b.errors,
                    hist: &z,
                };
                bincode::serde::encode_into_std_write(&body, &mut rec, bincode::config::standard())
                    .unwrap();
                let mut deflated = a.clone();
                c.decode_into(&rec, &mut deflated).unwrap();
                assert_eq!(deflated.hist, slow.hist, "{kind:?} {digits} V2+deflate");
                // other precisions go the crate's way
                let mut other = Stats::new(
                    kind,
                    Precision::new(if digits == 3 { 2 } else { 3 }).unwrap(),
                );
                c.decode_into(&buf, &mut other).unwrap();
                assert_eq!(other.count(), b.count());
            }
        }
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
    }

    #[test]
    fn series_round_trip() {
        let key = SeriesKey::new(
            "ns",
            Kind::Throughput,
            "m.x",
            Tags::new(&[("a", "b")]).unwrap(),
        )
        .unwrap();
        let r = decode_series(&encode_series(&key, 1, 2).unwrap()).unwrap();
        assert_eq!(r.key, key);
        assert_eq!((r.first_seen, r.last_seen), (1, 2));
    }
}
