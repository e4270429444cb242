//! The flush writer and the rollup.
//!
//! **Flush** (every `flush_interval`): for every dirty series, move each hot
//! bucket's `live` stats to `inflight` (under the series lock, a pointer
//! move), encode them outside the lock and write one `deltas` record per
//! (series, minute) in a single write transaction. The only record read back
//! is an earlier flush's delta of the same minute, merged in (so there is
//! one delta per (series, minute)); minute, hour and day records are never
//! read by a flush.
//! The commit happens under the engine's *commit gate* (write side), and the
//! `inflight` stats are dropped before the gate is released. A reader holds
//! the gate (read side) while it opens its read transaction and looks at the
//! hot buckets, so it sees either "delta not committed, inflight present" or
//! "delta committed, inflight gone" — never both, never neither.
//! If the write fails, `inflight` stays (still visible to readers) until
//! the failure is settled: a failed commit may nevertheless be durable, and
//! redb then refuses writes until the file is reopened. So the flusher
//! reopens the store and reads back the flush sequence number, which every
//! flush writes in its own transaction: if it landed, the inflight stats
//! are dropped (under the gate, as after a successful commit); if not, the
//! series are marked dirty again and the next flush writes them (merged
//! with what was recorded since). Until it is settled nothing else is taken.
//!
//! **Rollup**: deltas of closed minutes are merged into the `minute`, `hour`
//! and `day` records and deleted, all in one write transaction per batch
//! (bounded, so a flush never waits long behind it). Readers merge
//! records ⊕ deltas ⊕ hot; each sample is in exactly one of them in every
//! snapshot, so rollups are invisible to queries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable};

use crate::error::{Error, Result};
use crate::hot::{CommitGate, Registry, Series};
use crate::model::Resolution;
use crate::stats::Stats;
use crate::store::codec::{Codec, encode_series};
use crate::store::tables::{self, DELTAS, FLUSH_SEQ_KEY, META, SERIES};
use crate::store::{Store, Write};

/// What one flush did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FlushReport {
    /// Flush sequence number (0 when nothing was dirty).
    pub seq: u64,
    /// Series written.
    pub series: usize,
    /// Delta records written.
    pub buckets: usize,
    /// Bytes of delta records written.
    pub bytes: usize,
    /// Wall time.
    pub duration: Duration,
}

/// What a flush took from the hot buckets: (series, minute, stats).
type Taken = Vec<(Arc<Series>, i64, Arc<Stats>)>;

/// The flusher's own state: its codec buffers, and a flush whose write
/// failed and whose outcome is not settled yet.
#[derive(Default)]
pub struct Flusher {
    codec: Codec,
    pending: Option<Pending>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// A flush whose write failed: its taken stats are still `inflight` in the
/// hot buckets, and whether its transaction landed is read back from the
/// file (the flush sequence number commits with the deltas).
#[derive(Debug)]
struct Pending {
    seq: u64,
    taken: Taken,
    catalog: Vec<(Arc<Series>, i64)>,
}

impl Flusher {
    /// A flusher with nothing pending.
    pub fn new() -> Self {
        Flusher::default()
    }
}

/// Flushes every dirty series. Callers serialise flushes (one at a time).
///
/// A failed write is settled before anything else is taken: the store is
/// reopened when redb asks for it, and the failed flush's inflight stats
/// are dropped if its sequence number is in the file (the commit landed
/// despite its error) or handed back to the next flush otherwise, so every
/// sample is counted exactly once either way.
pub fn flush(
    registry: &Registry,
    store: &Store,
    gate: &CommitGate,
    flusher: &mut Flusher,
    now_ms: i64,
) -> Result<FlushReport> {
    let started = Instant::now();
    if flusher.pending.is_some() || store.write_health().needs_reopen() {
        recover(store, gate, flusher)?;
    }
    registry.observe_time(now_ms);
    let mut taken: Taken = Vec::new();
    let mut catalog: Vec<(Arc<Series>, i64)> = Vec::new();
    for s in registry.all() {
        if let Some(last_seen) = s.catalog_change() {
            catalog.push((s.clone(), last_seen));
        }
        for (minute, stats) in s.take_for_flush()? {
            taken.push((s.clone(), minute, stats));
        }
    }
    if taken.is_empty() && catalog.is_empty() {
        if store.write_health().failing().is_some() {
            // Nothing to write, but ingest waits for proof that writes work.
            store.probe(u64::try_from(now_ms).unwrap_or(0))?;
            store.writes_succeed();
        }
        return Ok(FlushReport {
            duration: started.elapsed(),
            ..FlushReport::default()
        });
    }
    let seq = next_seq(store)?;
    let written = write_deltas(store, &mut flusher.codec, &taken, &catalog, gate, seq);
    let report = |bytes| report(&taken, seq, bytes, started);
    match written {
        Written::Done(bytes) => {
            store.writes_succeed();
            for (s, last_seen) in &catalog {
                s.catalog_written(*last_seen);
            }
            Ok(report(bytes))
        }
        Written::NotLanded(err) => {
            for (s, _, _) in &taken {
                s.flush_failed();
            }
            Err(store.failed(err))
        }
        Written::Unknown(err) => {
            // Nothing else is taken until a later flush settles this one.
            flusher.pending = Some(Pending {
                seq,
                taken,
                catalog,
            });
            Err(store.failed(err))
        }
    }
}

fn report(taken: &Taken, seq: u64, bytes: usize, started: Instant) -> FlushReport {
    let mut series: Vec<u64> = taken.iter().map(|(s, _, _)| s.id()).collect();
    series.dedup();
    FlushReport {
        seq,
        series: series.len(),
        buckets: taken.len(),
        bytes,
        duration: started.elapsed(),
    }
}

/// The flush sequence number the file holds (0 before the first flush).
fn durable_seq(store: &Store) -> Result<u64> {
    let rtx = store.begin_read()?;
    let meta = rtx.open_table(META)?;
    Ok(meta.get(FLUSH_SEQ_KEY)?.map(|v| v.value()).unwrap_or(0))
}

/// The next flush's sequence number. Only flushes (serialised) write it.
fn next_seq(store: &Store) -> Result<u64> {
    Ok(durable_seq(store)? + 1)
}

/// Brings the file and the hot buckets back in step after a failed write:
/// reopens the database if redb asks for it, then settles the pending
/// flush by the sequence number in the file. Holds the writers' turn and
/// the commit gate throughout, so no reader sees the file and the inflight
/// stats disagree. Returns whether the pending flush landed (`None`: none
/// was pending). On error the pending flush stays pending.
pub fn recover(store: &Store, gate: &CommitGate, flusher: &mut Flusher) -> Result<Option<bool>> {
    let turn = store.turn();
    let gate = gate.write();
    if store.write_health().needs_reopen() {
        store.reopen(&turn)?;
    }
    let Some(pending) = flusher.pending.as_ref() else {
        return Ok(None);
    };
    let landed = durable_seq(store)? >= pending.seq;
    let Some(p) = flusher.pending.take() else {
        return Ok(None);
    };
    if landed {
        for (s, minute, stats) in &p.taken {
            s.finish_flush(*minute, stats, &gate);
        }
        for (s, last_seen) in &p.catalog {
            s.catalog_written(*last_seen);
        }
        tracing::warn!(
            seq = p.seq,
            "a flush whose commit failed had landed: its data is kept once"
        );
    } else {
        for (s, _, _) in &p.taken {
            s.flush_failed();
        }
        tracing::warn!(
            seq = p.seq,
            buckets = p.taken.len(),
            "a failed flush did not land: its data stays hot and is written again"
        );
    }
    Ok(Some(landed))
}

/// How a flush's write ended.
enum Written {
    /// Committed (or failed to say so but landed): `bytes` of deltas, and
    /// the inflight stats are dropped.
    Done(usize),
    /// Certainly not in the file: the taken stats go back to the next flush.
    NotLanded(Error),
    /// The file could not be read back after a failed commit: settled by a
    /// later flush ([`recover`]).
    Unknown(Error),
}

/// Writes the taken stats as deltas (and the catalog changes) with flush
/// sequence number `seq`, in one transaction, and settles the outcome
/// while still holding the commit gate: on success, or on a failed commit
/// whose sequence number is in the file nevertheless (the store reopened
/// it, see [`crate::store::Write::commit`]), the inflight stats are
/// dropped; so no reader ever sees a landed delta and its inflight copy.
fn write_deltas(
    store: &Store,
    codec: &mut Codec,
    taken: &[(Arc<Series>, i64, Arc<Stats>)],
    catalog: &[(Arc<Series>, i64)],
    gate: &CommitGate,
    seq: u64,
) -> Written {
    let (txn, bytes) = match stage(store, codec, taken, catalog, seq) {
        Ok(staged) => staged,
        // Never committed: nothing of it is in the file.
        Err(err) => return Written::NotLanded(err),
    };
    let gate = gate.write();
    if let Err(err) = txn.commit() {
        match durable_seq(store) {
            Ok(durable) if durable >= seq => {
                tracing::warn!(seq, error = %err, "a flush whose commit failed had landed: its data is kept once");
            }
            Ok(_) => return Written::NotLanded(err),
            Err(_) => return Written::Unknown(err),
        }
    }
    for (s, minute, stats) in taken {
        s.finish_flush(*minute, stats, &gate);
    }
    Written::Done(bytes)
}

/// Builds the flush's write transaction: the sequence number, one delta per
/// taken (series, minute) merged with an earlier flush's delta of the same
/// minute, and the catalog changes. Returns it uncommitted, with the bytes
/// of deltas it holds.
fn stage<'s>(
    store: &'s Store,
    codec: &mut Codec,
    taken: &[(Arc<Series>, i64, Arc<Stats>)],
    catalog: &[(Arc<Series>, i64)],
    seq: u64,
) -> Result<(Write<'s>, usize)> {
    let mut txn = store.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut bytes = 0;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(FLUSH_SEQ_KEY, seq)?;
        let mut deltas = txn.open_table(DELTAS)?;
        let mut buf = Vec::with_capacity(1024);
        for (s, minute, stats) in taken {
            // One delta per (series, minute): an earlier flush's delta of
            // the same minute is merged in, so readers decode at most one
            // per minute (the open minute is flushed ~12 times).
            let key = (s.id(), *minute, 0);
            let merged;
            let stats: &Stats = match deltas.get(key)? {
                Some(old) => {
                    let mut m = Stats::clone(stats);
                    codec.decode_into(old.value(), &mut m)?;
                    merged = m;
                    &merged
                }
                None => stats,
            };
            codec.encode(stats, *minute, *minute, false, &mut buf)?;
            bytes += buf.len();
            deltas.insert(key, buf.as_slice())?;
        }
        let mut series = txn.open_table(SERIES)?;
        for (s, last_seen) in catalog {
            let rec = encode_series(s.key(), s.first_seen(), *last_seen)?;
            series.insert(s.id(), rec.as_slice())?;
        }
    }
    Ok((txn, bytes))
}

/// What one rollup pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RollupReport {
    /// (series, minute) groups moved into records.
    pub minutes: usize,
    /// Delta records consumed.
    pub deltas: usize,
    /// Write transactions used.
    pub transactions: usize,
    /// Longest single write transaction.
    pub longest_txn: Duration,
    /// Wall time.
    pub duration: Duration,
}

/// Most (series, minute) groups rolled up per write transaction.
pub const ROLLUP_BATCH: usize = 1_000;

/// (series, minute) groups of one rollup batch, each with the delta keys
/// that make it up and their merged statistics.
type DeltaKey = (u64, i64, u64);
struct Batch {
    groups: Vec<((u64, i64), Vec<DeltaKey>)>,
    merged: HashMap<(u64, i64), Stats>,
}

/// Moves the deltas of every minute that closed before `now_ms` into the
/// minute, hour and day records. `max_batches` bounds the work of one call.
pub fn rollup(
    store: &Store,
    codec: &mut Codec,
    now_ms: i64,
    max_batches: usize,
) -> Result<RollupReport> {
    let started = Instant::now();
    let open_minute = Resolution::Minute.align(now_ms);
    let mut report = RollupReport::default();
    for _ in 0..max_batches {
        let txn_started = Instant::now();
        let txn = store.begin_write()?;
        let batch = collect_batch(&txn, codec, open_minute)?;
        if batch.groups.is_empty() {
            drop(txn);
            break;
        }
        write_records(&txn, codec, &batch)?;
        let mut deltas = txn.open_table(DELTAS)?;
        for (_, keys) in &batch.groups {
            for k in keys {
                deltas.remove(*k)?;
                report.deltas += 1;
            }
        }
        drop(deltas);
        txn.commit()?;
        report.transactions += 1;
        report.minutes += batch.groups.len();
        report.longest_txn = report.longest_txn.max(txn_started.elapsed());
        if batch.groups.len() < ROLLUP_BATCH {
            break;
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// Reads up to [`ROLLUP_BATCH`] closed (series, minute) groups of deltas
/// and merges each group.
fn collect_batch(
    txn: &redb::WriteTransaction,
    codec: &mut Codec,
    open_minute: i64,
) -> Result<Batch> {
    let deltas = txn.open_table(DELTAS)?;
    let mut batch = Batch {
        groups: Vec::new(),
        merged: HashMap::new(),
    };
    for entry in deltas.iter()? {
        let (k, v) = entry?;
        let key = k.value();
        let (sid, minute, _) = key;
        if minute >= open_minute {
            continue;
        }
        let group = (sid, minute);
        if batch.groups.last().map(|g| g.0) != Some(group) {
            if batch.groups.len() == ROLLUP_BATCH {
                break;
            }
            batch.groups.push((group, Vec::new()));
        }
        if let Some(g) = batch.groups.last_mut() {
            g.1.push(key);
        }
        let rec = codec.decode(v.value())?;
        match batch.merged.get_mut(&group) {
            Some(acc) => acc.merge(&rec.stats)?,
            None => {
                batch.merged.insert(group, rec.stats);
            }
        }
    }
    Ok(batch)
}

/// Merges each group of `batch` into its minute, hour and day records.
fn write_records(txn: &redb::WriteTransaction, codec: &mut Codec, batch: &Batch) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    for res in Resolution::ALL {
        let mut table = txn.open_table(tables::buckets(res))?;
        for ((sid, minute), _) in &batch.groups {
            let Some(delta) = batch.merged.get(&(*sid, *minute)) else {
                continue;
            };
            let start = res.align(*minute);
            let existing = table
                .get((*sid, start))?
                .map(|v| codec.decode(v.value()))
                .transpose()?;
            let (stats, first, last) = match existing {
                Some(mut rec) => {
                    rec.stats.merge(delta)?;
                    (rec.stats, rec.first.min(*minute), rec.last.max(*minute))
                }
                None => (delta.clone(), *minute, *minute),
            };
            // Minute records are most of the file: kept V2+zstd (written
            // once, read through the same fast merge after decompressing).
            // Hour and day records, read by most queries, stay plain.
            let compress = res == Resolution::Minute;
            codec.encode(&stats, first, last, compress, &mut buf)?;
            table.insert((*sid, start), buf.as_slice())?;
        }
    }
    Ok(())
}
