//! Bucket record version 2: a byte layout whose size follows the samples.
//!
//! ```text
//! 2                               version byte
//! flags                           varint, the F_* bits below
//! first                           zigzag varint, in minutes when F_MINUTES else ms
//! last − first                    zigzag varint, same unit
//! errors                          varint
//! sum, min, max                   each a zigzag varint when its F_*_INT bit is set
//!                                 (an integer-valued f64, bit-exact), else 8 bytes LE
//! histogram configuration         varint: 1 + kind code × 8 + digits for
//!                                 (low 1, high = that kind's max_scaled), or 0
//!                                 then digits, low, high as varints
//! counts                          to the end of the record; with F_ZSTD a varint
//!                                 plain length then one zstd frame of them
//! ```
//!
//! Counts are the histogram's non-zero (bucket index, count) pairs in
//! index order, in whichever of two forms is smaller (F_RUNS picks):
//! - *gaps* (sparse): per pair `varint(gap << 1 | (count > 1))`, then
//!   `varint(count − 2)` when that bit is set; gap = index − previous − 1.
//! - *runs* (dense, HdrHistogram V2's scheme): `varint(first index)`, then
//!   per index a zigzag varint, positive = its count, negative = that many
//!   empty indexes skipped.
//!
//! The sample count is the sum of the counts, so it cannot disagree with
//! the histogram. Every read is bounds-checked: damaged bytes give an
//! error, never a panic or an unbounded allocation.

use crate::error::Result;
use crate::model::{Kind, MINUTE_MS};
use crate::stats::sparse::Layout;

use super::corrupt;

pub(super) const VERSION: u8 = 2;

const F_SUM_INT: u64 = 1;
const F_MIN_INT: u64 = 2;
const F_MAX_INT: u64 = 4;
const F_MINUTES: u64 = 8;
const F_ZSTD: u64 = 16;
const F_RUNS: u64 = 32;
const F_ALL: u64 = 63;

/// Counts sections at least this long are offered to zstd.
const ZSTD_MIN: usize = 96;

/// A parsed record: everything but the counts, which stay encoded.
#[derive(Debug)]
pub(super) struct Record<'a> {
    pub first: i64,
    pub last: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub errors: u64,
    pub layout: Layout,
    /// Counts in the runs form (else gaps).
    pub runs: bool,
    /// The counts section, compressed when `plain_len` is set.
    pub counts: &'a [u8],
    pub plain_len: Option<usize>,
}

/// Appends `v` as LEB128.
pub(super) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes of `v` as LEB128.
fn len_of(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A bounds-checked reader of the layout above.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| corrupt("record ends inside a number"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("number longer than 64 bits"))
    }

    fn f64_le(&mut self) -> Result<f64> {
        let b = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| corrupt("record ends inside a float"))?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// The next `n` bytes, or `None` when fewer are left.
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// `v` as an i64 when that is bit-exact.
fn as_int(v: f64) -> Option<i64> {
    let i = v as i64;
    ((i as f64).to_bits() == v.to_bits()).then_some(i)
}

fn put_scalar(out: &mut Vec<u8>, v: f64) {
    match as_int(v) {
        Some(i) => put(out, zigzag(i)),
        None => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn read_scalar(r: &mut Reader<'_>, int: bool) -> Result<f64> {
    if int {
        Ok(unzigzag(r.varint()?) as f64)
    } else {
        r.f64_le()
    }
}

/// The header of a record (everything before the counts), written to `out`
/// after the version byte; `section_flags` are F_RUNS / F_ZSTD.
pub(super) struct Head {
    pub first: i64,
    pub last: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub errors: u64,
    pub layout: Layout,
}

pub(super) fn put_head(out: &mut Vec<u8>, h: &Head, section_flags: u64) {
    let mut flags = section_flags;
    for (bit, v) in [(F_SUM_INT, h.sum), (F_MIN_INT, h.min), (F_MAX_INT, h.max)] {
        if as_int(v).is_some() {
            flags |= bit;
        }
    }
    let minutes = h.first % MINUTE_MS == 0 && h.last % MINUTE_MS == 0;
    let unit = if minutes {
        flags |= F_MINUTES;
        MINUTE_MS
    } else {
        1
    };
    out.push(VERSION);
    put(out, flags);
    put(out, zigzag(h.first / unit));
    put(out, zigzag(h.last.wrapping_sub(h.first) / unit));
    put(out, h.errors);
    for v in [h.sum, h.min, h.max] {
        put_scalar(out, v);
    }
    let l = &h.layout;
    match Kind::ALL
        .iter()
        .find(|k| l.low() == 1 && l.high() == k.max_scaled() && l.digits() < 8)
    {
        Some(k) => put(out, 1 + u64::from(k.code()) * 8 + u64::from(l.digits())),
        None => {
            put(out, 0);
            put(out, u64::from(l.digits()));
            put(out, l.low());
            put(out, l.high());
        }
    }
}

/// `bytes` with its span moved `by` milliseconds earlier (the rest of the
/// record unchanged), or `None` when it is not a version-2 record or `by`
/// is not a whole number of its span unit.
pub(super) fn shift_span(bytes: &[u8], by: i64, out: &mut Vec<u8>) -> Option<()> {
    if bytes.first() != Some(&VERSION) {
        return None;
    }
    let mut r = Reader::new(&bytes[1..]);
    let flags = r.varint().ok()?;
    let unit = if flags & F_MINUTES != 0 { MINUTE_MS } else { 1 };
    let first = unzigzag(r.varint().ok()?);
    if by % unit != 0 {
        return None;
    }
    let shifted = first.checked_sub(by / unit)?;
    out.clear();
    out.push(VERSION);
    put(out, flags);
    put(out, zigzag(shifted));
    out.extend_from_slice(r.rest());
    Some(())
}

/// Parses a version-2 record (`bytes` includes the version byte).
pub(super) fn parse(bytes: &[u8]) -> Result<Record<'_>> {
    let mut r = Reader::new(bytes.get(1..).unwrap_or(&[]));
    let flags = r.varint()?;
    if flags & !F_ALL != 0 {
        return Err(corrupt(format!("unknown record flags {flags:#x}")));
    }
    let unit = if flags & F_MINUTES != 0 { MINUTE_MS } else { 1 };
    let first = unzigzag(r.varint()?)
        .checked_mul(unit)
        .ok_or_else(|| corrupt("record start out of range"))?;
    let last = unzigzag(r.varint()?)
        .checked_mul(unit)
        .and_then(|d| first.checked_add(d))
        .ok_or_else(|| corrupt("record end out of range"))?;
    let errors = r.varint()?;
    let sum = read_scalar(&mut r, flags & F_SUM_INT != 0)?;
    let min = read_scalar(&mut r, flags & F_MIN_INT != 0)?;
    let max = read_scalar(&mut r, flags & F_MAX_INT != 0)?;
    let layout = read_layout(&mut r)?;
    let plain_len = if flags & F_ZSTD != 0 {
        let n = r.varint()?;
        // Never more than ~2 varints of 10 bytes per counted index.
        if n > 20 * layout.len() as u64 + 16 {
            return Err(corrupt("compressed counts claim an absurd size"));
        }
        Some(n as usize)
    } else {
        None
    };
    Ok(Record {
        first,
        last,
        sum,
        min,
        max,
        errors,
        layout,
        runs: flags & F_RUNS != 0,
        counts: r.rest(),
        plain_len,
    })
}

fn read_layout(r: &mut Reader<'_>) -> Result<Layout> {
    let cfg = r.varint()?;
    let (low, high, digits) = if cfg == 0 {
        let digits = r.varint()?;
        (r.varint()?, r.varint()?, digits)
    } else {
        let kind = u8::try_from((cfg - 1) / 8)
            .ok()
            .and_then(Kind::from_code)
            .ok_or_else(|| corrupt(format!("unknown histogram configuration {cfg}")))?;
        (1, kind.max_scaled(), (cfg - 1) % 8)
    };
    u8::try_from(digits)
        .ok()
        .and_then(|d| Layout::new(low, high, d))
        .ok_or_else(|| {
            corrupt(format!(
                "bad histogram bounds {low}..{high} at {digits} digits"
            ))
        })
}

/// Appends the counts section of `pairs` (non-empty indexes in increasing
/// order) in its smaller form; returns F_RUNS when that is the one.
pub(super) fn put_counts(out: &mut Vec<u8>, pairs: &[(u32, u64)]) -> u64 {
    let mut gaps = 0usize;
    let mut runs = pairs.first().map_or(1, |p| len_of(u64::from(p.0)));
    let mut next = 0u32;
    for &(index, count) in pairs {
        let gap = u64::from(index - next);
        gaps += len_of(gap << 1) + if count > 1 { len_of(count - 2) } else { 0 };
        if gap > 0 && index != pairs[0].0 {
            runs += len_of(zigzag(-(gap as i64)));
        }
        runs += len_of(zigzag(count as i64));
        next = index + 1;
    }
    if runs < gaps {
        let mut at = pairs.first().map_or(0, |p| p.0);
        put(out, u64::from(at));
        for &(index, count) in pairs {
            if index > at {
                put(out, zigzag(-i64::from(index - at)));
            }
            put(out, zigzag(count as i64));
            at = index + 1;
        }
        F_RUNS
    } else {
        let mut next = 0u32;
        for &(index, count) in pairs {
            let gap = u64::from(index - next);
            put(out, (gap << 1) | u64::from(count > 1));
            if count > 1 {
                put(out, count - 2);
            }
            next = index + 1;
        }
        0
    }
}

/// Whether a counts section of `len` bytes is worth offering to zstd.
pub(super) fn worth_compressing(len: usize) -> bool {
    len >= ZSTD_MIN
}

/// Flag of a compressed counts section.
pub(super) const ZSTD: u64 = F_ZSTD;

/// Calls `add(index, count)` for every pair of a plain counts section, in
/// increasing index order; checks every index against `layout` and every
/// count is ≥ 1.
pub(super) fn walk(
    counts: &[u8],
    runs: bool,
    layout: &Layout,
    mut add: impl FnMut(u32, u64) -> Result<()>,
) -> Result<()> {
    let mut r = Reader::new(counts);
    let len = layout.len() as u64;
    let bad_index = || corrupt("histogram index out of range");
    if runs {
        let mut at = r.varint()?;
        while !r.at_end() {
            let v = unzigzag(r.varint()?);
            if v < 0 {
                at = at.checked_add(v.unsigned_abs()).ok_or_else(bad_index)?;
                continue;
            }
            if v == 0 {
                return Err(corrupt("empty count in a counts run"));
            }
            if at >= len {
                return Err(bad_index());
            }
            add(at as u32, v as u64)?;
            at += 1;
        }
    } else {
        let mut next = 0u64;
        while !r.at_end() {
            let h = r.varint()?;
            let index = next.checked_add(h >> 1).ok_or_else(bad_index)?;
            let count = if h & 1 == 1 {
                r.varint()?
                    .checked_add(2)
                    .ok_or_else(|| corrupt("count out of range"))?
            } else {
                1
            };
            if index >= len {
                return Err(bad_index());
            }
            add(index as u32, count)?;
            next = index + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX / 3, u64::MAX] {
            let mut b = Vec::new();
            put(&mut b, v);
            assert_eq!(b.len(), len_of(v), "{v}");
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert!(Reader::new(&[0x80; 11]).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn both_count_forms_read_back_and_the_smaller_is_chosen() {
        let l = Layout::new(1, Kind::Latency.max_scaled(), 2).unwrap();
        let sparse: Vec<(u32, u64)> = vec![(3, 1), (90, 2), (91, 1), (700, 40_000)];
        let dense: Vec<(u32, u64)> = (1_000..1_300).map(|i| (i, 1 + u64::from(i % 7))).collect();
        for (pairs, want_runs) in [(sparse, false), (dense, true)] {
            let mut b = Vec::new();
            let runs = put_counts(&mut b, &pairs) == F_RUNS;
            assert_eq!(runs, want_runs);
            let mut back = Vec::new();
            walk(&b, runs, &l, |i, c| {
                back.push((i, c));
                Ok(())
            })
            .unwrap();
            assert_eq!(back, pairs);
        }
    }

    /// `put_counts` writes exactly the smaller of the two forms (gaps on a
    /// tie), each written here straight from the layout in the module doc.
    #[test]
    fn the_smaller_form_is_written_byte_for_byte() {
        let gaps_form = |pairs: &[(u32, u64)]| {
            let (mut out, mut next) = (Vec::new(), 0);
            for &(index, count) in pairs {
                put(
                    &mut out,
                    u64::from(index - next) << 1 | u64::from(count > 1),
                );
                if count > 1 {
                    put(&mut out, count - 2);
                }
                next = index + 1;
            }
            out
        };
        let runs_form = |pairs: &[(u32, u64)]| {
            let mut out = Vec::new();
            let mut at = pairs.first().map_or(0, |p| p.0);
            put(&mut out, u64::from(at));
            for &(index, count) in pairs {
                if index > at {
                    put(&mut out, zigzag(-i64::from(index - at)));
                }
                put(&mut out, zigzag(count as i64));
                at = index + 1;
            }
            out
        };
        let mut next = super::super::tests::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut chose = [0; 2];
        for case in 0..2_000 {
            // gaps from none to a few hundred, counts from 1 to ~100,000
            let (max_gap, max_count) = (
                [1, 3, 70, 300][case % 4],
                [1, 3, 200, 100_000][case / 4 % 4],
            );
            let mut pairs = Vec::new();
            let mut index = (next() % 200) as u32;
            for _ in 0..1 + next() % 40 {
                pairs.push((index, 1 + next() % max_count));
                index += 1 + (next() % max_gap) as u32;
            }
            let (g, r) = (gaps_form(&pairs), runs_form(&pairs));
            let mut out = Vec::new();
            let runs = put_counts(&mut out, &pairs) == F_RUNS;
            assert_eq!(runs, r.len() < g.len(), "{pairs:?}");
            assert_eq!(out, if runs { r } else { g }, "{pairs:?}");
            chose[usize::from(runs)] += 1;
        }
        assert!(chose[0] > 100 && chose[1] > 100, "{chose:?}");
    }

    /// A compressed counts section may claim at most 20 bytes per index of
    /// its layout, plus 16: one byte more is refused as absurd before
    /// anything is allocated; the bound itself goes on to the decompressor.
    #[test]
    fn a_compressed_section_claiming_too_much_is_refused() {
        let l = Layout::new(1, Kind::Latency.max_scaled(), 2).unwrap();
        let bound = 20 * l.len() as u64 + 16;
        for (claim, absurd) in [(bound, false), (bound + 1, true)] {
            // flags ZSTD | the three INT bits, zero span, scalars and errors,
            // latency at 2 digits, then the claimed plain length
            let mut rec = vec![VERSION, (F_ZSTD | 7) as u8, 0, 0, 0, 0, 0, 0, 3];
            put(&mut rec, claim);
            rec.extend_from_slice(b"not a zstd frame");
            match parse(&rec) {
                Ok(r) => {
                    assert!(!absurd, "{claim} accepted");
                    assert_eq!(r.plain_len, Some(claim as usize));
                }
                Err(e) => {
                    assert!(absurd, "{claim}: {e}");
                    assert!(e.to_string().contains("absurd"), "{e}");
                }
            }
        }
    }

    /// A runs section holds no zero count (an empty index is a skip): a
    /// zero is damage, refused rather than read as nothing.
    #[test]
    fn a_zero_count_in_a_run_is_refused() {
        let l = Layout::new(1, Kind::Latency.max_scaled(), 2).unwrap();
        // from index 10: count 1, then a zero
        let e = walk(&[10, 2, 0], true, &l, |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("empty count"), "{e}");
    }

    #[test]
    fn integer_scalars_are_bit_exact() {
        assert_eq!(as_int(3.0), Some(3));
        assert_eq!(as_int(-0.0), None);
        assert_eq!(as_int(0.5), None);
        assert_eq!(as_int(f64::INFINITY), None);
        assert_eq!(as_int(f64::NAN), None);
        assert_eq!(as_int(1e300), None);
    }
}
