//! Per-thread rings of pending samples: the handle record path without a
//! locked instruction.
//!
//! A [`Handle`](super::Handle) records into the calling thread's ring of
//! its series: two plain stores and a release store of `head`, no lock, no
//! read-modify-write. Whoever holds the series lock (the producer itself
//! when its ring is full or the minute moved, a reader, the flusher) drains
//! every ring into the hot buckets before looking at them, so a query right
//! after `record` sees the sample (read-your-writes) and a flush takes it.
//!
//! Invariants (each ring is single-producer, single-consumer):
//! - Only the owning thread advances `head`, and writes a slot only while
//!   `head - tail < CAP` (the slot was drained: `tail` is read with
//!   acquire, stored with release after the slots were read).
//! - Only a holder of the series lock advances `tail`, so consumers never
//!   race each other. The caller proves it holds the lock by passing the
//!   guarded state.
//! - `minute` (where every pending sample of the ring belongs) changes only
//!   under the series lock, by the owner, while its ring is empty; a
//!   consumer reads it under that lock, so it always names the minute of
//!   the samples it drains.
//!
//! Memory: one ring of `CAP` samples (about 1 KiB) per thread that records
//! into a series through a handle, allocated on its first record and kept
//! with the series (a thread that exits hands its rings to the next thread
//! `thread_local` gives its id). So T threads recording into S series
//! through handles hold up to T × S KiB: 16 threads × 100 hot-path series
//! is 1.6 MiB, but handles over 10,000 series from 16 threads would be
//! 160 MiB; the name-lookup API (`Monitor::record*`) and HTTP ingest take
//! the lock and use no ring. Rings are series structure, like the
//! registry's maps: they are not in `hot_bytes`, which counts the hot
//! buckets' statistics.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use thread_local::ThreadLocal;

use super::HotState;

/// Samples a ring holds before its producer drains it under the lock.
pub(super) const CAP: usize = 64;

/// The error flag, in the top bit of a slot's scaled value (scaled values
/// are at most [`Kind::max_scaled`](crate::model::Kind), far below it).
const ERROR_BIT: u64 = 1 << 63;

#[derive(Default)]
struct Slot {
    /// Scaled value, with [`ERROR_BIT`] for an error outcome.
    scaled: AtomicU64,
    /// The exact value's bits (f64).
    value: AtomicU64,
}

/// One thread's pending samples of one series.
pub(super) struct Ring {
    minute: AtomicI64,
    /// Samples ever pushed (owner only).
    head: AtomicUsize,
    /// Samples ever drained (series-lock holders only).
    tail: AtomicUsize,
    slots: [Slot; CAP],
}

impl Ring {
    fn new(minute: i64) -> Ring {
        Ring {
            minute: AtomicI64::new(minute),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }

    /// Owner, holding the series lock (`_locked`) with this ring drained:
    /// moves the ring to `minute`.
    pub(super) fn set_minute(&self, minute: i64, _locked: &mut HotState) {
        debug_assert_eq!(
            self.head.load(Ordering::Relaxed),
            self.tail.load(Ordering::Relaxed)
        );
        self.minute.store(minute, Ordering::Relaxed);
    }
}

/// The rings of one series, one per recording thread.
#[derive(Default)]
pub(super) struct Rings(ThreadLocal<Ring>);

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings").finish_non_exhaustive()
    }
}

/// A sample drained from a ring.
pub(super) struct Pending {
    pub minute: i64,
    pub scaled: u64,
    pub value: f64,
    pub error: bool,
}

impl Rings {
    /// Producer: appends to the calling thread's ring. `Err(ring)` when the
    /// ring cannot take it (full, or its samples belong to another
    /// minute): drain under the series lock, then [`Ring::set_minute`].
    #[inline]
    pub(super) fn push(
        &self,
        minute: i64,
        scaled: u64,
        value: f64,
        error: bool,
    ) -> Result<(), &Ring> {
        let ring = self.0.get_or(|| Ring::new(minute));
        let head = ring.head.load(Ordering::Relaxed);
        if ring.minute.load(Ordering::Relaxed) != minute
            || head.wrapping_sub(ring.tail.load(Ordering::Acquire)) >= CAP
        {
            return Err(ring);
        }
        let slot = &ring.slots[head % CAP];
        let flag = if error { ERROR_BIT } else { 0 };
        slot.scaled.store(scaled | flag, Ordering::Relaxed);
        slot.value.store(value.to_bits(), Ordering::Relaxed);
        ring.head.store(head.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Consumer, holding the series lock (`_locked`): hands every pending
    /// sample of every ring to `into`, oldest first per ring.
    pub(super) fn drain(
        &self,
        locked: &mut HotState,
        mut into: impl FnMut(&mut HotState, Pending),
    ) {
        for ring in self.0.iter() {
            let tail = ring.tail.load(Ordering::Relaxed);
            let head = ring.head.load(Ordering::Acquire);
            if head == tail {
                continue;
            }
            let minute = ring.minute.load(Ordering::Relaxed);
            let mut at = tail;
            while at != head {
                let slot = &ring.slots[at % CAP];
                let scaled = slot.scaled.load(Ordering::Relaxed);
                into(
                    locked,
                    Pending {
                        minute,
                        scaled: scaled & !ERROR_BIT,
                        value: f64::from_bits(slot.value.load(Ordering::Relaxed)),
                        error: scaled & ERROR_BIT != 0,
                    },
                );
                at = at.wrapping_add(1);
            }
            ring.tail.store(head, Ordering::Release);
        }
    }

    /// Whether any ring holds pending samples (for the flusher, which
    /// must not trust the series' dirty flag alone: see `Series::dirty`).
    pub(super) fn pending(&self) -> bool {
        self.0
            .iter()
            .any(|r| r.head.load(Ordering::Acquire) != r.tail.load(Ordering::Relaxed))
    }
}
