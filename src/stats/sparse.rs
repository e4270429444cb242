//! The sparse form of a bucket's histogram, and HdrHistogram's bucket
//! indexing ([`Layout`]) that both forms share.
//!
//! A [`Sparse`] histogram is a sorted list of (bucket index, count) for the
//! buckets that hold samples; its indexes are exactly the ones the dense
//! `Histogram<u64>` of the same [`Layout`] uses (the mapping mirrors the
//! crate's private `index_for`/`value_for` and is tested against it), so
//! converting it records every count at the same index and every quantile
//! comes out identical.
//!
//! Invariants: entries are sorted by strictly increasing index, every index
//! is `< layout.len()`, every count is in `1..=u32::MAX`, `total` is the
//! sum of the counts, and `entries.len() <= max_entries(layout)`. Capacity
//! grows only through [`Sparse::record`] and [`Sparse::merge`], which report
//! every byte they add so hot memory stays counted exactly.

use std::cmp::Ordering;

use hdrhistogram::Histogram;

/// Most distinct buckets a sparse histogram holds before it becomes dense,
/// whatever the dense size: the record path is a binary search and, for a
/// new bucket, an insert that moves the entries after it; past a few
/// hundred entries the dense array is the faster form (see the
/// `sizes` bench, "Hot bucket forms").
pub const SPEED_CAP: usize = 512;

/// Smallest capacity a sparse histogram allocates.
const MIN_CAP: usize = 4;

/// Largest dense histogram a layout may describe (counts), so that damaged
/// record headers cannot ask for absurd allocations.
const MAX_LEN: u32 = 1 << 24;

/// HdrHistogram's bucket indexing for one configuration
/// (`Histogram::new_with_bounds(low, high, digits)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    low: u64,
    high: u64,
    digits: u8,
    unit_magnitude: u8,
    half_magnitude: u8,
    /// Length of the dense counts array.
    len: u32,
}

impl Layout {
    /// The layout of `Histogram::new_with_bounds(low, high, digits)`;
    /// `None` where the crate refuses those bounds (or they would need more
    /// than 2²⁴ counts).
    pub fn new(low: u64, high: u64, digits: u8) -> Option<Layout> {
        if !(1..=u64::MAX / 2).contains(&low) || high < 2 * low || digits > 5 {
            return None;
        }
        // The crate's own arithmetic, step by step (`new_with_bounds`,
        // `buckets_to_cover`, `num_bins`).
        let largest = 2 * 10u32.pow(u32::from(digits));
        let unit_magnitude = (low as f64).log2().floor() as u8;
        let count_magnitude = f64::from(largest).log2().ceil() as u8;
        if unit_magnitude + count_magnitude > 63 {
            return None;
        }
        let half_magnitude = count_magnitude - 1;
        let mut untrackable = (1u64 << count_magnitude) << unit_magnitude;
        let mut buckets = 1u32;
        while untrackable <= high {
            if untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            untrackable <<= 1;
            buckets += 1;
        }
        let len = (buckets + 1).checked_mul(1u32 << half_magnitude)?;
        (len <= MAX_LEN).then_some(Layout {
            low,
            high,
            digits,
            unit_magnitude,
            half_magnitude,
            len,
        })
    }

    /// The layout of an existing histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Layout> {
        Layout::new(h.low(), h.high(), h.sigfig())
    }

    /// Lowest discernible value.
    pub fn low(&self) -> u64 {
        self.low
    }

    /// Highest trackable value.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// Significant digits.
    pub fn digits(&self) -> u8 {
        self.digits
    }

    /// Length of the dense counts array (every valid index is below it).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Bytes of the dense form: the histogram struct and its counts.
    pub fn dense_bytes(&self) -> usize {
        std::mem::size_of::<Histogram<u64>>() + self.len() * std::mem::size_of::<u64>()
    }

    /// An empty dense histogram of this layout.
    pub fn histogram(&self) -> Histogram<u64> {
        // Cannot fail: `Layout::new` accepted exactly the bounds the crate
        // accepts, and the counts array is at most 2^24 long.
        Histogram::new_with_bounds(self.low, self.high, self.digits)
            .expect("a layout's bounds are always a valid histogram")
    }

    /// The crate's `index_for`.
    #[inline]
    pub fn index_for(&self, value: u64) -> usize {
        let count_magnitude = self.half_magnitude + 1;
        let mask = ((1u64 << count_magnitude) - 1) << self.unit_magnitude;
        let base = 64 - self.unit_magnitude - count_magnitude;
        let bucket = base - (value | mask).leading_zeros() as u8;
        let sub = (value >> (bucket + self.unit_magnitude)) as usize;
        (((bucket as usize) + 1) << self.half_magnitude) + sub - (1usize << self.half_magnitude)
    }

    /// The index `saturating_record(value)` counts at: out-of-range values
    /// are clamped to `high` (above) or `low` (below), as the crate does.
    #[inline]
    pub fn saturating_index(&self, value: u64) -> u32 {
        let i = self.index_for(value);
        if i < self.len() {
            return i as u32;
        }
        let clamped = if value > self.high {
            self.high
        } else {
            self.low
        };
        self.index_for(clamped) as u32
    }

    /// The crate's `value_for`: the lowest value counted at `index`.
    pub fn value_for(&self, index: usize) -> u64 {
        let half_count = 1usize << self.half_magnitude;
        let mut bucket = (index >> self.half_magnitude) as i64 - 1;
        let mut sub = (index & (half_count - 1)) + half_count;
        if bucket < 0 {
            sub -= half_count;
            bucket = 0;
        }
        (sub as u64) << (bucket as u32 + u32::from(self.unit_magnitude))
    }
}

/// Most entries a sparse histogram of `layout` holds: no more bytes than
/// the dense form, and no more than [`SPEED_CAP`].
pub fn max_entries(layout: &Layout) -> usize {
    (layout.dense_bytes() / std::mem::size_of::<u64>()).min(SPEED_CAP)
}

/// Sorted (index, count) pairs; see the module doc for the invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    layout: Layout,
    total: u64,
    /// `index << 32 | count`, so the order of entries is the order of
    /// their indexes.
    entries: Vec<u64>,
}

#[inline]
fn pack(index: u32, count: u32) -> u64 {
    (u64::from(index) << 32) | u64::from(count)
}

#[inline]
fn index_of(e: u64) -> u32 {
    (e >> 32) as u32
}

#[inline]
fn count_of(e: u64) -> u32 {
    e as u32
}

impl Sparse {
    /// Empty, without an allocation.
    pub fn new(layout: Layout) -> Sparse {
        Sparse {
            layout,
            total: 0,
            entries: Vec::new(),
        }
    }

    /// From (index, count) pairs already checked by the caller: strictly
    /// increasing indexes below `layout.len()`, counts ≥ 1. `None` when
    /// they are too many for the sparse form or a count exceeds `u32`.
    pub fn from_entries(layout: Layout, pairs: &[(u32, u64)]) -> Option<Sparse> {
        if pairs.len() > max_entries(&layout) {
            return None;
        }
        let mut entries = Vec::with_capacity(pairs.len());
        let mut total = 0u64;
        for &(index, count) in pairs {
            debug_assert!((index as usize) < layout.len() && count > 0);
            entries.push(pack(index, u32::try_from(count).ok()?));
            total = total.checked_add(count)?;
        }
        Some(Sparse {
            layout,
            total,
            entries,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Samples counted.
    #[inline]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The highest value equivalent to the largest one counted (the
    /// crate's `max()`); `None` when empty.
    pub fn max_equivalent(&self) -> Option<u64> {
        let last = index_of(*self.entries.last()?) as usize;
        // `wrapping_sub`: a top bucket ending at 2^64 wraps to 0, whose
        // predecessor is u64::MAX, the right answer.
        Some(self.layout.value_for(last + 1).wrapping_sub(1))
    }

    /// Heap bytes of the entries (their capacity).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u64>()
    }

    /// Every (index, count), by increasing index.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries
            .iter()
            .map(|&e| (index_of(e), u64::from(count_of(e))))
    }

    /// Counts one `value` (clamped as `saturating_record` does); returns
    /// the heap bytes added, or `None` (nothing changed) when the sparse
    /// form would outgrow its cap or a count its `u32`: the caller then
    /// converts to the dense form.
    #[inline]
    pub fn record(&mut self, value: u64) -> Option<usize> {
        let index = self.layout.saturating_index(value);
        let at = self.entries.partition_point(|&e| index_of(e) < index);
        if let Some(e) = self.entries.get_mut(at)
            && index_of(*e) == index
        {
            if count_of(*e) == u32::MAX {
                return None;
            }
            *e += 1;
            self.total += 1;
            return Some(0);
        }
        let grown = self.reserve_one()?;
        self.entries.insert(at, pack(index, 1));
        self.total += 1;
        Some(grown)
    }

    /// Room for one more entry: doubles the capacity when full (exactly,
    /// so the bytes are known); `None` past the cap.
    fn reserve_one(&mut self) -> Option<usize> {
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if len < cap {
            return Some(0);
        }
        let want = (cap * 2).max(MIN_CAP).min(max_entries(&self.layout));
        if want <= len {
            return None;
        }
        self.entries.reserve_exact(want - len);
        Some((self.entries.capacity() - cap) * std::mem::size_of::<u64>())
    }

    /// Adds `other` (same layout) in one sorted merge; the result's
    /// capacity is its length. `None` (nothing changed) when the result
    /// would not stay sparse or the layouts differ.
    pub fn merge(&mut self, other: &Sparse) -> Option<()> {
        if other.layout != self.layout {
            return None;
        }
        let (a, b) = (&self.entries, &other.entries);
        let mut out = Vec::with_capacity((a.len() + b.len()).min(max_entries(&self.layout)));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => match index_of(x).cmp(&index_of(y)) {
                    Ordering::Less => {
                        i += 1;
                        x
                    }
                    Ordering::Greater => {
                        j += 1;
                        y
                    }
                    Ordering::Equal => {
                        i += 1;
                        j += 1;
                        let c = count_of(x).checked_add(count_of(y))?;
                        pack(index_of(x), c)
                    }
                },
                (Some(&x), None) => {
                    i += 1;
                    x
                }
                (None, Some(&y)) => {
                    j += 1;
                    y
                }
                (None, None) => break,
            };
            if out.len() == max_entries(&self.layout) {
                return None;
            }
            out.push(next);
        }
        out.shrink_to_fit();
        self.entries = out;
        self.total += other.total;
        Some(())
    }

    /// The same counts in a dense histogram of the same layout.
    pub fn to_dense(&self) -> Histogram<u64> {
        let mut h = self.layout.histogram();
        self.add_to(&mut h);
        h
    }

    /// Adds every count to `h` by value, as `Histogram::add` does (so `h`
    /// may have another layout; values beyond its range are clamped, which
    /// the caller avoids by checking ranges first).
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for (index, count) in self.iter() {
            h.saturating_record_n(self.layout.value_for(index as usize), count);
        }
    }

    /// Forgets every count, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn layouts() -> Vec<(Layout, Histogram<u64>)> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            for digits in 1..=5u8 {
                let h = Histogram::<u64>::new_with_bounds(1, kind.max_scaled(), digits).unwrap();
                out.push((Layout::of(&h).unwrap(), h));
            }
        }
        for (low, high, digits) in [(1000, 1 << 40, 2), (3, 100, 1), (1, 2, 0)] {
            let h = Histogram::<u64>::new_with_bounds(low, high, digits).unwrap();
            out.push((Layout::of(&h).unwrap(), h));
        }
        out
    }

    #[test]
    fn the_layout_is_the_crates() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for (l, mut h) in layouts() {
            assert_eq!(l.len(), h.distinct_values(), "{l:?}");
            for index in (0..l.len()).step_by(7).chain([l.len() - 1]) {
                let v = l.value_for(index);
                assert_eq!(h.lowest_equivalent(v), v, "{l:?} {index}");
                assert_eq!(l.index_for(v), index, "{l:?} {index}");
                assert_eq!(l.index_for(h.highest_equivalent(v)), index);
            }
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state % (l.high() * 2)) >> (state % 40);
                // the crate counts `v` at the index we say
                let at = l.value_for(l.saturating_index(v) as usize);
                let before = h.count_at(at);
                h.saturating_record(v);
                assert_eq!(h.count_at(at), before + 1, "{l:?} value {v}");
            }
        }
    }

    #[test]
    fn sparse_converts_to_the_same_dense_histogram() {
        for (l, h) in layouts() {
            let mut s = Sparse::new(l);
            let mut d = h.clone();
            for v in [
                0u64,
                1,
                2,
                5,
                99,
                100,
                255,
                256,
                1_000,
                65_537,
                l.high(),
                u64::MAX,
            ] {
                if s.record(v).is_none() {
                    break;
                }
                d.saturating_record(v);
            }
            assert_eq!(s.to_dense(), d, "{l:?}");
            assert_eq!(s.total(), d.len());
        }
    }

    #[test]
    fn growth_reports_every_byte_and_stops_at_the_cap() {
        let l = Layout::new(1, Kind::Latency.max_scaled(), 2).unwrap();
        let mut s = Sparse::new(l);
        let mut counted = 0;
        let mut v = 1u64;
        while let Some(grown) = s.record(v) {
            counted += grown;
            assert_eq!(counted, s.heap_bytes());
            v += 1;
        }
        assert_eq!(s.entries.len(), max_entries(&l));
        assert!(s.heap_bytes() <= l.dense_bytes());
    }
}
