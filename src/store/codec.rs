//! The versioned bucket record: what one stored bucket (or one flushed delta)
//! looks like on disk, and [`Codec`], which writes it and reads it back,
//! whole or merged straight into a reader's statistics.
//!
//! Layout: one version byte, then the body of that version. scopemon writes
//! version 2 and reads both; a version never changes meaning.
//! - Version 1 (`codec/v1.rs`, bincode, standard config): first/last minute
//!   covered, exact sum/min/max, error count, and the histogram in
//!   HdrHistogram V2 encoding, optionally zstd-compressed; the decoder also
//!   reads the crate's V2+deflate, recognising each form by its cookie. Its
//!   fixed ~60 bytes of framing and 40-byte histogram header made a minute
//!   of ~26 samples cost ~220 bytes.
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
//! Series records (the catalog, `codec/series.rs`) use the same scheme with
//! their own body; the version-byte framing and the bincode and JSON bodies
//! the other tables' records share are in `codec/framing.rs`.
//!
//! This file is the front: it sends each record to its version's reader,
//! adds a record's exact scalars to the target's, and keeps the buffers and
//! (de)compressors reused across records. Counts staged by
//! [`Codec::stage_into`] are not in the target until [`Codec::settle`].

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, V2Serializer};

use crate::error::{Error, Result};
use crate::stats::sparse::{Layout, Sparse};
use crate::stats::{Hist, Stats};

use v1::{add_via_crate, bucket_body, crate_deserialize, merge_v2, walk_v2};

mod framing;
mod group;
mod series;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use framing::{decode_bincode, decode_json, encode_bincode, encode_json, versioned_body};
pub use group::{
    TARGET_BYTES as GROUP_TARGET_BYTES, encode_group, hour_of, members as group_members,
};
pub use series::{SeriesRecord, decode_series, encode_series};

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

    /// A zstd frame of `hist_buf` (left as it is).
    fn compress_hist(&mut self) -> Result<Vec<u8>> {
        let plain = std::mem::take(&mut self.hist_buf);
        let frame = self.compressor().and_then(|c| {
            c.compress(&plain)
                .map_err(|e| corrupt(format!("cannot compress histogram: {e}")))
        });
        self.hist_buf = plain;
        frame
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
            let frame = self.compress_hist()?;
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

    /// A record as a group member stores it (`codec/group.rs`): a
    /// version-2 record's span made relative to `minute`, its start (so
    /// ~4 bytes of absolute time become 1); other records unchanged.
    pub fn as_member(&self, bytes: &[u8], minute: i64, out: &mut Vec<u8>) {
        if v2::shift_span(bytes, minute, out).is_none() {
            out.clear();
            out.extend_from_slice(bytes);
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

/// Adds a record's exact sum, min, max and errors.
fn add_scalars(s: &Scalars, into: &mut Stats) {
    into.sum += s.sum;
    into.min = into.min.min(s.min);
    into.max = into.max.max(s.max);
    into.errors += s.errors;
}

/// Decompressors kept across records (their tables are reused). The
/// version-1 histogram forms are read in `codec/v1.rs` (`Unpacker::plain`).
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
