//! Minute groups: runs of consecutive minute records of one (series,
//! hour), each stored as one `minute_groups` entry keyed by its first
//! minute once the hour is sealed (`store/group.rs` builds them at
//! compaction).
//!
//! Why: a minute record of ~26 samples is ~46 bytes, and redb adds a
//! 16-byte key and ~8 bytes of entry overhead to each; a group pays those
//! once per run. Runs hold at most [`TARGET_BYTES`]: a redb leaf page
//! (4 KiB) holds whole entries only, so entries of half a page or more
//! would leave a third of every leaf empty (a whole hour of such minutes is
//! ~2.8 KiB: measured 31 % of leaf bytes free, `examples/backfill_bytes`).
//!
//! ```text
//! 1                       group format version
//! count                   varint, members (1..=60)
//! per member, in increasing minute order:
//!   offset                varint, minutes after the start of the key's hour (0..60)
//!   len                   varint, then that many bytes: the minute's bucket
//!                         record (version 1 or 2, `codec.rs`); a version-2
//!                         record's span is relative to its minute
//!                         (`Codec::as_member`: 0 instead of ~4 bytes of
//!                         absolute time)
//! ```
//!
//! A member's own span is therefore not its time: readers take the minute
//! from the group, never from the member.
//!
//! Invariants: the first member's minute is the entry's key; offsets
//! strictly increase and stay inside the key's hour; every member is
//! non-empty; nothing follows the last member. Parsing checks all of them
//! (damaged bytes are an error, never a panic); the members' own bytes are
//! checked by the record decoder when they are read.

use super::corrupt;
use super::v2::{Reader, put};
use crate::error::{Error, Result};
use crate::model::{HOUR_MS, MINUTE_MS};

const VERSION: u8 = 1;

/// Minutes in an hour: the most members a group holds.
const MINUTES: u64 = (HOUR_MS / MINUTE_MS) as u64;

fn bad(detail: impl Into<String>) -> Error {
    match corrupt(detail) {
        Error::Corrupt { detail, .. } => Error::Corrupt {
            table: "minute_groups",
            detail,
        },
        other => other,
    }
}

/// Most bytes of members in a group (a larger member is a group of its
/// own), so entries stay small against a leaf page: dense minutes of
/// ~340 B cut after the member that passed 512 B made ~690 B entries and
/// left 15 % of the leaves empty (0.46 B/sample against 0.42 loose,
/// `examples/backfill_bytes --series 10 --per-minute 1000`).
pub const TARGET_BYTES: usize = 512;

/// The start of the hour holding `t` (saturating at the far past).
pub fn hour_of(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(HOUR_MS))
}

/// Encodes a group: its members, each (minute start, record bytes), in
/// increasing minute order inside one hour; its key is the first minute.
pub fn encode_group<'a>(
    members: impl IntoIterator<Item = (i64, &'a [u8])>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut body = Vec::new();
    let mut count = 0u64;
    let mut last: Option<i64> = None;
    let mut hour = 0;
    for (minute, rec) in members {
        if last.is_none() {
            hour = hour_of(minute);
        }
        let offset = (minute - hour) / MINUTE_MS;
        let in_hour = hour_of(minute) == hour && (minute - hour) % MINUTE_MS == 0;
        if !in_hour || last.is_some_and(|l| l >= minute) || rec.is_empty() {
            return Err(bad(format!(
                "member at minute {minute} does not follow the group's order inside hour {hour}"
            )));
        }
        put(&mut body, offset as u64);
        put(&mut body, rec.len() as u64);
        body.extend_from_slice(rec);
        count += 1;
        last = Some(minute);
    }
    if count == 0 {
        return Err(bad("a minute group needs at least one member"));
    }
    out.clear();
    out.push(VERSION);
    put(out, count);
    out.extend_from_slice(&body);
    Ok(())
}

/// The members of the group stored under `key`: (minute start, record
/// bytes), in increasing minute order, the first at `key`. Fails on any
/// damage to the group's framing.
pub fn members(key: i64, bytes: &[u8]) -> Result<Vec<(i64, &[u8])>> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| bad("empty minute group"))?;
    if version != VERSION {
        return Err(bad(format!("unknown minute group version {version}")));
    }
    let hour = hour_of(key);
    let mut r = Reader::new(rest);
    let count = r.varint()?;
    if !(1..=MINUTES).contains(&count) {
        return Err(bad(format!("a minute group of {count} members")));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut next = 0u64;
    for _ in 0..count {
        let offset = r.varint()?;
        if offset < next || offset >= MINUTES {
            return Err(bad(format!("member offset {offset} out of order")));
        }
        next = offset + 1;
        let len = usize::try_from(r.varint()?).map_err(|_| bad("member length too large"))?;
        let rec = r
            .take(len)
            .ok_or_else(|| bad("group ends inside a member"))?;
        if rec.is_empty() {
            return Err(bad("empty member"));
        }
        out.push((hour + offset as i64 * MINUTE_MS, rec));
    }
    if !r.at_end() {
        return Err(bad("bytes after the last member"));
    }
    if out.first().map(|m| m.0) != Some(key) {
        return Err(bad(format!(
            "the group under minute {key} starts elsewhere"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS;

    #[test]
    fn groups_round_trip_in_minute_order() {
        let recs: Vec<(i64, Vec<u8>)> = [0, 1, 17, 59]
            .iter()
            .map(|&m| (H + m * MINUTE_MS, vec![2, m as u8, 9]))
            .collect();
        let mut out = Vec::new();
        encode_group(recs.iter().map(|(m, r)| (*m, r.as_slice())), &mut out).unwrap();
        let want: Vec<(i64, &[u8])> = recs.iter().map(|(m, r)| (*m, r.as_slice())).collect();
        let got = members(H, &out).unwrap();
        assert_eq!(got, want);
        // stored under another minute than its first: damage
        assert!(members(H + MINUTE_MS, &out).is_err());
        // a run that starts mid-hour is keyed by its first minute
        encode_group(recs[2..].iter().map(|(m, r)| (*m, r.as_slice())), &mut out).unwrap();
        assert_eq!(
            members(H + 17 * MINUTE_MS, &out).unwrap(),
            want[2..].to_vec()
        );
    }

    #[test]
    fn encoding_refuses_what_the_invariants_forbid() {
        let mut out = Vec::new();
        let rec: &[u8] = &[2, 0];
        for bad_members in [
            vec![],
            vec![(H + 59 * MINUTE_MS, rec), (H + HOUR_MS, rec)],
            vec![(H - MINUTE_MS, rec), (H, rec)],
            vec![(H + 1, rec)],
            vec![(H + MINUTE_MS, rec), (H, rec)],
            vec![(H, rec), (H, rec)],
            vec![(H, &[][..])],
        ] {
            assert!(encode_group(bad_members, &mut out).is_err());
        }
    }

    #[test]
    fn damaged_groups_are_errors_never_panics() {
        let mut good = Vec::new();
        let rec: &[u8] = &[2, 1, 2, 3];
        encode_group([(H, rec), (H + 5 * MINUTE_MS, rec)], &mut good).unwrap();
        // every truncation, and every single-byte change, parses or fails cleanly
        for n in 0..good.len() {
            assert!(members(H, &good[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 0x3b, 0x3c, 0x7f, 0x80, 0xff] {
                let mut d = good.clone();
                d[i] = b;
                if let Ok(ms) = members(H, &d) {
                    assert!(ms.windows(2).all(|w| w[0].0 < w[1].0));
                    assert!(
                        ms.iter()
                            .all(|(m, r)| (H..H + HOUR_MS).contains(m) && !r.is_empty())
                    );
                }
            }
        }
        let mut long = good.clone();
        long.push(0);
        assert!(members(H, &long).is_err());
    }
}
