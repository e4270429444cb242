//! The versioned bucket record: what one stored bucket (or one flushed delta)
//! looks like on disk.
//!
//! Layout: one version byte, then the body of that version. scopemon writes
//! version 2 and reads both; a version never changes meaning.
//! - Version 1 (bincode, standard config): first/last minute covered, exact
//!   sum/min/max, error count, and the histogram in HdrHistogram V2
//!   encoding, optionally zstd-compressed; the decoder also reads the
//!   crate's V2+deflate, recognising each form by its cookie. Its fixed
//!   ~60 bytes of framing and 40-byte histogram header made a minute of
//!   ~26 samples cost ~220 bytes.
//! - Version 2 (`codec/v2.rs`): the same fields as varints (whole-number
//!   scalars and minute-aligned spans as small integers) and only the
//!   non-empty histogram buckets, in the smaller of a sparse (gap, count)
//!   form and HdrHistogram's dense run form, zstd-compressed when asked and
//!   smaller.
//!
//! Either way the sample count is the histogram's total count, so it
//! cannot disagree with the histogram, and damaged bytes are an error,
//! never a panic.
//!
//! Series records (the catalog) use the same scheme with their own body.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use crate::model::{Kind, SeriesKey, Tags};
use crate::stats::sparse::{Layout, Sparse};
use crate::stats::{Hist, Stats};

mod v2;

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
    /// (index, count) pairs of the record being encoded or decoded.
    pairs: Vec<(u32, u64)>,
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

/// A record's exact scalars and span, whatever its version.
struct Scalars {
    first: i64,
    last: i64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
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

impl From<&v2::Record<'_>> for Scalars {
    fn from(r: &v2::Record<'_>) -> Scalars {
        Scalars {
            first: r.first,
            last: r.last,
            sum: r.sum,
            min: r.min,
            max: r.max,
            errors: r.errors,
        }
    }
}

fn is_v2(bytes: &[u8]) -> bool {
    bytes.first() == Some(&v2::VERSION)
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
            pairs: Vec::new(),
        }
    }

    fn compressor(&mut self) -> Result<&mut zstd::bulk::Compressor<'static>> {
        Ok(match &mut self.zstd {
            Some(z) => z,
            slot => slot
                .insert(zstd::bulk::Compressor::new(3).map_err(|e| corrupt(format!("zstd: {e}")))?),
        })
    }

    /// Encodes a bucket as a version-2 record (see `codec/v2.rs`): its
    /// non-empty histogram buckets in the smaller of the sparse and dense
    /// forms; with `compress` (minute records) they are zstd-compressed
    /// when that is smaller still.
    pub fn encode(
        &mut self,
        stats: &Stats,
        first: i64,
        last: i64,
        compress: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let layout = stats
            .layout()
            .ok_or_else(|| corrupt("histogram bounds no layout describes"))?;
        self.pairs.clear();
        stats.for_each_pair(&layout, |i, c| self.pairs.push((i, c)));
        self.hist_buf.clear();
        let mut flags = v2::put_counts(&mut self.hist_buf, &self.pairs);
        let head = v2::Head {
            first,
            last,
            sum: stats.sum,
            min: stats.min,
            max: stats.max,
            errors: stats.errors,
            layout,
        };
        out.clear();
        if compress && v2::worth_compressing(self.hist_buf.len()) {
            let plain = std::mem::take(&mut self.hist_buf);
            let frame = self
                .compressor()?
                .compress(&plain)
                .map_err(|e| corrupt(format!("cannot compress histogram: {e}")));
            self.hist_buf = plain;
            let frame = frame?;
            if frame.len() + 10 < self.hist_buf.len() {
                flags |= v2::ZSTD;
                v2::put_head(out, &head, flags);
                v2::put(out, self.hist_buf.len() as u64);
                out.extend_from_slice(&frame);
                return Ok(());
            }
        }
        v2::put_head(out, &head, flags);
        out.extend_from_slice(&self.hist_buf);
        Ok(())
    }

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
            let plain = std::mem::take(&mut self.hist_buf);
            let frame = self
                .compressor()?
                .compress(&plain)
                .map_err(|e| corrupt(format!("cannot compress histogram: {e}")));
            self.hist_buf = plain;
            let frame = frame?;
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

    /// Decodes a bucket (either version). A version-2 record small enough
    /// comes back in the sparse form.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<BucketRecord> {
        if is_v2(bytes) {
            return self.decode_v2(bytes);
        }
        let body = bucket_body(bytes)?;
        let plain = self.unpacker.plain(body.hist)?;
        let hist = crate_deserialize(&mut self.de, plain)?;
        Ok(BucketRecord {
            first: body.first,
            last: body.last,
            stats: Stats::from_parts(hist, body.sum, body.min, body.max, body.errors),
        })
    }

    fn decode_v2(&mut self, bytes: &[u8]) -> Result<BucketRecord> {
        let rec = v2::parse(bytes)?;
        let counts = self.unpacker.counts(&rec)?;
        let pairs = &mut self.pairs;
        pairs.clear();
        let mut total = 0u64;
        v2::walk(counts, rec.runs, &rec.layout, |i, c| {
            total = total
                .checked_add(c)
                .ok_or_else(|| corrupt("sample count overflows"))?;
            pairs.push((i, c));
            Ok(())
        })?;
        let hist = match Sparse::from_entries(rec.layout, pairs) {
            Some(s) => Hist::Sparse(s),
            None => {
                let mut h = rec.layout.histogram();
                for &(i, c) in pairs.iter() {
                    h.saturating_record_n(rec.layout.value_for(i as usize), c);
                }
                Hist::Dense(h)
            }
        };
        Ok(BucketRecord {
            first: rec.first,
            last: rec.last,
            stats: Stats::from_hist(hist, rec.sum, rec.min, rec.max, rec.errors),
        })
    }

    /// Like [`Codec::decode_into`], but counts of `into`'s own layout are
    /// staged in index space rather than recorded into its histogram one by
    /// one: much cheaper when many records are merged into one answer.
    /// `into` (made dense) lacks the staged counts until [`Codec::settle`]
    /// is called with the same `into`, which must happen before `into` is
    /// read or another target is staged into (the scalars are added at
    /// once).
    pub fn stage_into(&mut self, bytes: &[u8], into: &mut Stats) -> Result<(i64, i64)> {
        let h = into.dense_mut();
        let map = Layout::of(h).ok_or_else(|| corrupt("histogram bounds no layout describes"))?;
        let staged = match &mut self.staged {
            Some(s) if s.map == map => s,
            slot => {
                debug_assert!(
                    slot.as_ref().is_none_or(Staged::is_empty),
                    "staged counts not settled"
                );
                slot.insert(Staged::new(map))
            }
        };
        let scalars = if is_v2(bytes) {
            let rec = v2::parse(bytes)?;
            let counts = self.unpacker.counts(&rec)?;
            if rec.layout == map {
                v2::walk(counts, rec.runs, &rec.layout, |i, c| {
                    staged
                        .add(i as usize, c)
                        .then_some(())
                        .ok_or_else(|| corrupt("staged index out of range"))
                })?;
            } else {
                record_pairs(counts, &rec, h)?;
            }
            Scalars::from(&rec)
        } else {
            let body = bucket_body(bytes)?;
            let hist = self.unpacker.plain(body.hist)?;
            match walk_v2(hist, &map, |index, count| staged.add(index, count)) {
                Some(res) => res?,
                None => add_via_crate(&mut self.de, hist, h)?,
            }
            Scalars::from(&body)
        };
        add_scalars(&scalars, into);
        Ok((scalars.first, scalars.last))
    }

    /// Records the counts staged by [`Codec::stage_into`] into `into`.
    pub fn settle(&mut self, into: &mut Stats) -> Result<()> {
        match &mut self.staged {
            Some(s) if !s.is_empty() => s.settle(into.dense_mut()),
            _ => Ok(()),
        }
    }

    /// The (first, last) minutes a record covers, without decoding its
    /// histogram.
    pub fn span(&self, bytes: &[u8]) -> Result<(i64, i64)> {
        if is_v2(bytes) {
            let rec = v2::parse(bytes)?;
            return Ok((rec.first, rec.last));
        }
        let body = bucket_body(bytes)?;
        Ok((body.first, body.last))
    }

    /// Decodes a bucket and merges it into `into`; returns its span.
    ///
    /// Into a dense `into`, counts are added one by one straight into its
    /// histogram, skipping the fresh histogram (26 KiB to allocate, zero
    /// and add back) a full decode would build; a sparse `into` takes a
    /// version-2 record in a sorted merge (and stays sparse while it fits).
    pub fn decode_into(&mut self, bytes: &[u8], into: &mut Stats) -> Result<(i64, i64)> {
        if is_v2(bytes) {
            if into.is_sparse() {
                let rec = self.decode_v2(bytes)?;
                into.merge(&rec.stats)?;
                return Ok((rec.first, rec.last));
            }
            let rec = v2::parse(bytes)?;
            let counts = self.unpacker.counts(&rec)?;
            record_pairs(counts, &rec, into.dense_mut())?;
            let scalars = Scalars::from(&rec);
            add_scalars(&scalars, into);
            return Ok((scalars.first, scalars.last));
        }
        let body = bucket_body(bytes)?;
        let hist = self.unpacker.plain(body.hist)?;
        let h = into.dense_mut();
        match merge_v2(hist, h) {
            Some(res) => res?,
            None => add_via_crate(&mut self.de, hist, h)?,
        }
        let scalars = Scalars::from(&body);
        add_scalars(&scalars, into);
        Ok((scalars.first, scalars.last))
    }
}

/// Records a version-2 record's counts into `h` by value (its own layout
/// or another: values out of `h`'s range are an error, as in
/// `Histogram::add`).
fn record_pairs(counts: &[u8], rec: &v2::Record<'_>, h: &mut Histogram<u64>) -> Result<()> {
    v2::walk(counts, rec.runs, &rec.layout, |i, c| {
        h.record_n(rec.layout.value_for(i as usize), c)
            .map_err(|e| corrupt(format!("histogram count out of range: {e:?}")))
    })
}

/// The slow path: materialise the histogram with the crate's deserializer
/// and add it (other precisions or bounds than `into`).
fn add_via_crate(de: &mut Deserializer, plain: &[u8], into: &mut Histogram<u64>) -> Result<()> {
    let hist = crate_deserialize(de, plain)?;
    into.add(&hist)
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
fn add_scalars(s: &Scalars, into: &mut Stats) {
    into.sum += s.sum;
    into.min = into.min.min(s.min);
    into.max = into.max.max(s.max);
    into.errors += s.errors;
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

    /// The plain counts section of a version-2 record: itself, or
    /// decompressed into this unpacker's buffer.
    fn counts<'a>(&'a mut self, rec: &v2::Record<'a>) -> Result<&'a [u8]> {
        match rec.plain_len {
            None => Ok(rec.counts),
            Some(len) => self.unzstd(rec.counts, len),
        }
    }

    /// Decompresses one zstd frame of exactly `len` bytes.
    fn unzstd(&mut self, frame: &[u8], len: usize) -> Result<&[u8]> {
        let z = match &mut self.zstd {
            Some(z) => z,
            slot => slot.insert(
                zstd::bulk::Decompressor::new().map_err(|e| corrupt(format!("zstd: {e}")))?,
            ),
        };
        self.out.clear();
        self.out.reserve(len);
        let n = z
            .decompress_to_buffer(frame, &mut self.out)
            .map_err(|e| corrupt(format!("bad compressed histogram: {e}")))?;
        if n != len {
            return Err(corrupt("compressed histogram has the wrong size"));
        }
        Ok(&self.out)
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

/// Walks the counts of a plain V2 histogram encoded for `map`'s exact
/// configuration, calling `add(index, count)` for each non-zero count.
/// `None` when the encoding is not that (compressed, other bounds or
/// precision): the caller then uses the crate's deserializer.
fn walk_v2(
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
fn merge_v2(buf: &[u8], into: &mut hdrhistogram::Histogram<u64>) -> Option<Result<()>> {
    let map = Layout::of(into)?;
    walk_v2(buf, &map, |index, count| {
        index < map.len() && into.record_n(map.value_for(index), count).is_ok()
    })
}

/// Counts staged in a histogram's own index space: adding a stored count is
/// one array add, and the staged counts become histogram records once, in
/// [`Staged::settle`], instead of one `record_n` per count per record.
#[derive(Debug)]
struct Staged {
    map: Layout,
    counts: Vec<u64>,
    /// Touched index range (empty when lo > hi).
    lo: usize,
    hi: usize,
}

impl Staged {
    fn new(map: Layout) -> Staged {
        Staged {
            map,
            counts: vec![0; map.len()],
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
                into.record_n(self.map.value_for(index), c)
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
            // and as written before version 2
            c.encode_v1(&s, 60_000, 120_000, compress, &mut buf)
                .unwrap();
            let r = c.decode(&buf).unwrap();
            assert_eq!((r.first, r.last), (60_000, 120_000));
            assert_eq!((r.stats.count(), r.stats.errors), (4, 1));
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
                    let mut z = Vec::new();
                    hdrhistogram::serialization::V2DeflateSerializer::new()
                        .serialize(&*b.to_dense(), &mut z)
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
                    bincode::serde::encode_into_std_write(
                        &body,
                        &mut rec,
                        bincode::config::standard(),
                    )
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
                    let mut other = Stats::new(
                        kind,
                        Precision::new(if digits == 3 { 2 } else { 3 }).unwrap(),
                    );
                    c.stage_into(&buf, &mut other).unwrap();
                    c.settle(&mut other).unwrap();
                    assert_eq!(other.count(), b.count());
                    // a sparse target (a flush merging an earlier delta)
                    let mut hot = Stats::new_sparse(kind, p);
                    hot.record_scaled(1, 1.0, false);
                    c.decode_into(&buf, &mut hot).unwrap();
                    let mut want = Stats::new(kind, p);
                    want.record_scaled(1, 1.0, false);
                    want.merge(&b).unwrap();
                    assert_eq!(hot.hist, want.hist, "{kind:?} {digits} into sparse");
                    assert_eq!((hot.count(), hot.errors), (want.count(), want.errors));
                }
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
