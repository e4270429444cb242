//! Minute groups (schema 5): compaction folds the minute records of every
//! sealed hour of a series into a few `minute_groups` entries, runs of
//! consecutive minutes of about half a kilobyte each, keyed by their first
//! minute; readers see a minute's data as its loose `minute` record plus
//! its group member.
//!
//! Why: a minute of ~26 samples is a ~46-byte record, and redb adds a
//! 16-byte key and ~8 bytes of entry overhead to every one; a group pays
//! them once per run (the format, and why runs are short, are in
//! `codec/group.rs`).
//!
//! Invariants:
//! - Every group lies inside one hour and is keyed by its first minute, so
//!   the groups holding minutes of [a, b) are exactly the entries keyed in
//!   [start of a's hour, b).
//! - A (series, minute) has at most one loose record and at most one group
//!   member; its data is their sum. Rollups keep writing loose records (a
//!   late sample for a grouped hour lands there), and the next grouping
//!   merges them in.
//! - Grouping moves records: the hour's new groups written, its old groups
//!   and loose records deleted, in one write transaction, so a reader's
//!   snapshot counts each sample once, before or after.
//! - Only hours that ended by the grouping's `before` (the start of the
//!   current hour) are grouped, so the open hour's rollups stay cheap.
//! - Every reader of minute data goes through [`for_each_minute`], and
//!   retention through [`expire`] / [`count_expired`].

use redb::{ReadableTable, Table};

use super::Store;
use super::codec::{Codec, GROUP_TARGET_BYTES, encode_group, group_members, hour_of};
use super::tables::{MINUTE, MINUTE_GROUPS};
use crate::error::Result;
use crate::model::HOUR_MS;

/// What a grouping pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Grouped {
    /// (Series, hour)s whose minutes were grouped (new, or merged into).
    pub hours: u64,
    /// Loose minute records folded into them.
    pub minutes: u64,
    /// Write transactions used.
    pub transactions: usize,
    /// The longest of them, milliseconds.
    pub longest_txn_ms: f64,
}

/// Visits every stored minute record of series `sid` whose minute starts
/// in [a, b): the loose `minute` records, then the members of the groups of
/// the hours the range touches. A minute may be visited twice (a loose
/// record and a member): its data is the sum.
pub fn for_each_minute(
    loose: &impl ReadableTable<(u64, i64), &'static [u8]>,
    groups: &impl ReadableTable<(u64, i64), &'static [u8]>,
    sid: u64,
    a: i64,
    b: i64,
    mut visit: impl FnMut(i64, &[u8]) -> Result<()>,
) -> Result<()> {
    if a >= b {
        return Ok(());
    }
    for entry in loose.range((sid, a)..(sid, b))? {
        let (k, v) = entry?;
        visit(k.value().1, v.value())?;
    }
    // Runs partition their hour: the first that can hold `a` is the last
    // keyed at or before it (earlier runs of the hour end before it).
    let first = match groups.range((sid, hour_of(a))..=(sid, a))?.next_back() {
        Some(entry) => entry?.0.value().1,
        None => a,
    };
    for entry in groups.range((sid, first)..(sid, b))? {
        let (k, v) = entry?;
        for (minute, rec) in group_members(k.value().1, v.value())? {
            if (a..b).contains(&minute) {
                visit(minute, rec)?;
            }
        }
    }
    Ok(())
}

/// Folds the loose minute records of hours that ended by `before` into
/// their groups, series by series, about `batch` loose records per write
/// transaction (whole hours: a transaction finishes the hour it started).
pub fn group_sealed(
    store: &Store,
    codec: &mut Codec,
    before: i64,
    batch: usize,
) -> Result<Grouped> {
    let before = hour_of(before);
    let mut done = Grouped::default();
    let sids: Vec<u64> = store.load_series()?.into_iter().map(|(id, _)| id).collect();
    let mut next = 0;
    while next < sids.len() {
        let started = std::time::Instant::now();
        let txn = store.begin_write()?;
        let mut budget = batch.max(1);
        {
            let mut loose = txn.open_table(MINUTE)?;
            let mut groups = txn.open_table(MINUTE_GROUPS)?;
            while next < sids.len() && budget > 0 {
                let sid = sids[next];
                let (hours, minutes, finished) =
                    group_series(&mut loose, &mut groups, codec, sid, before, budget)?;
                done.hours += hours;
                done.minutes += minutes;
                budget = budget.saturating_sub(minutes as usize);
                if finished {
                    next += 1;
                }
            }
        }
        txn.commit()?;
        done.transactions += 1;
        done.longest_txn_ms = done
            .longest_txn_ms
            .max(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(done)
}

/// Loose records of one series' sealed hours, whole hours at a time until
/// `budget` is spent: (hours, minutes, whether the series is finished).
fn group_series(
    loose: &mut Table<(u64, i64), &'static [u8]>,
    groups: &mut Table<(u64, i64), &'static [u8]>,
    codec: &mut Codec,
    sid: u64,
    before: i64,
    budget: usize,
) -> Result<(u64, u64, bool)> {
    let mut taken: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut finished = true;
    for entry in loose.range((sid, i64::MIN)..(sid, before))? {
        let (k, v) = entry?;
        let minute = k.value().1;
        if taken.len() >= budget
            && taken
                .last()
                .is_some_and(|(m, _)| hour_of(*m) != hour_of(minute))
        {
            finished = false;
            break;
        }
        taken.push((minute, v.value().to_vec()));
    }
    let mut hours = 0u64;
    for hour in taken.chunk_by(|x, y| hour_of(x.0) == hour_of(y.0)) {
        let start = hour_of(hour[0].0);
        let old = take_groups(groups, sid, start, start + HOUR_MS)?;
        let mut members = Vec::new();
        for (key, bytes) in &old {
            members.extend(group_members(*key, bytes)?);
        }
        let merged = merge_members(codec, &members, hour)?;
        put_runs(groups, sid, &merged)?;
        for (m, _) in hour {
            loose.remove((sid, *m))?;
        }
        hours += 1;
    }
    Ok((hours, taken.len() as u64, finished))
}

/// Removes and returns the groups of series `sid` keyed in [a, b).
fn take_groups(
    groups: &mut Table<(u64, i64), &'static [u8]>,
    sid: u64,
    a: i64,
    b: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in groups.extract_from_if((sid, a)..(sid, b), |_, _| true)? {
        let (k, v) = entry?;
        out.push((k.value().1, v.value().to_vec()));
    }
    Ok(out)
}

/// Writes `members` (sorted, one hour) as runs of at most
/// [`GROUP_TARGET_BYTES`] of members (or one larger member), each keyed by
/// its first minute.
fn put_runs(
    groups: &mut Table<(u64, i64), &'static [u8]>,
    sid: u64,
    members: &[(i64, impl AsRef<[u8]>)],
) -> Result<()> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < members.len() {
        // Members join while the run stays within the target (a member
        // larger than it runs alone): smaller entries pack leaves fuller.
        let mut to = from;
        let mut bytes = 0;
        while to < members.len() {
            let len = members[to].1.as_ref().len() + 2;
            if to > from && bytes + len > GROUP_TARGET_BYTES {
                break;
            }
            bytes += len;
            to += 1;
        }
        let run = &members[from..to];
        encode_group(run.iter().map(|(m, r)| (*m, r.as_ref())), &mut out)?;
        groups.insert((sid, run[0].0), out.as_slice())?;
        from = to;
    }
    Ok(())
}

/// An hour's group members after adding its loose records (both sorted by
/// minute): a minute in both is decoded, merged and re-encoded.
fn merge_members(
    codec: &mut Codec,
    old: &[(i64, &[u8])],
    loose: &[(i64, Vec<u8>)],
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut out = Vec::with_capacity(old.len() + loose.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < loose.len() {
        let take_old = j == loose.len() || (i < old.len() && old[i].0 < loose[j].0);
        if take_old {
            out.push((old[i].0, old[i].1.to_vec()));
            i += 1;
        } else if i < old.len() && old[i].0 == loose[j].0 {
            let mut rec = codec.decode(old[i].1)?;
            rec.stats.merge(&codec.decode(&loose[j].1)?.stats)?;
            // A member's span is relative to its minute (`codec/group.rs`).
            let mut bytes = Vec::new();
            codec.encode(&rec.stats, 0, 0, true, &mut bytes)?;
            out.push((old[i].0, bytes));
            i += 1;
            j += 1;
        } else {
            let mut bytes = Vec::new();
            codec.as_member(&loose[j].1, loose[j].0, &mut bytes);
            out.push((loose[j].0, bytes));
            j += 1;
        }
    }
    Ok(out)
}

/// Removes the group members of series `sid` whose minute starts before
/// `horizon`: whole groups of hours that ended by it, and the older
/// members of the hour it falls in (those groups rewritten). At most
/// `budget` whole groups are removed; returns (members removed, whether
/// every expired member is gone).
pub fn expire(
    groups: &mut Table<(u64, i64), &'static [u8]>,
    sid: u64,
    horizon: i64,
    budget: usize,
) -> Result<(u64, bool)> {
    let straddled = hour_of(horizon);
    let mut removed = 0u64;
    let mut whole = 0usize;
    for entry in groups.extract_from_if((sid, i64::MIN)..(sid, straddled), |_, _| true)? {
        let (k, v) = entry?;
        removed += group_members(k.value().1, v.value())?.len() as u64;
        whole += 1;
        if whole >= budget {
            return Ok((removed, false));
        }
    }
    // Groups keyed before the horizon in its hour: keep their members
    // from the horizon on.
    let cut = take_groups(groups, sid, straddled, horizon)?;
    let mut kept = Vec::new();
    for (key, bytes) in &cut {
        for (m, rec) in group_members(*key, bytes)? {
            if m >= horizon {
                kept.push((m, rec));
            } else {
                removed += 1;
            }
        }
    }
    put_runs(groups, sid, &kept)?;
    Ok((removed, true))
}

/// Group members of series `sid` whose minute starts before `horizon`
/// (what [`expire`] would remove), reading only.
pub fn count_expired(
    groups: &impl ReadableTable<(u64, i64), &'static [u8]>,
    sid: u64,
    horizon: i64,
) -> Result<u64> {
    let mut n = 0u64;
    for entry in groups.range((sid, i64::MIN)..(sid, horizon))? {
        let (k, v) = entry?;
        let members = group_members(k.value().1, v.value())?;
        n += members.iter().filter(|(m, _)| *m < horizon).count() as u64;
    }
    Ok(n)
}
