//! Schema version 1: the initial layout.
//!
//! Tables (keys are big-endian-ordered redb tuples, so each series' buckets
//! are contiguous and time-ordered):
//! - `meta`      &str -> u64: `schema_version`, `flush_seq`
//! - `series`    u64 series id -> versioned series record (namespace, kind,
//!   metric, tags, first/last seen)
//! - `deltas`    (series id, minute start ms, flush seq) -> bucket record:
//!   what one flush wrote for one minute, not yet rolled up
//! - `minute` / `hour` / `day`   (series id, bucket start ms) -> bucket record
//!
//! A migration only creates or rewrites tables; the runner records the
//! version in `meta` in the same write transaction, so a crash leaves the
//! file at the old version or the new one, never between.

use redb::{TableDefinition, WriteTransaction};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
const DELTAS: TableDefinition<(u64, i64, u64), &[u8]> = TableDefinition::new("deltas");
const MINUTE: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("minute");
const HOUR: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("hour");
const DAY: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("day");

/// Creates every table of schema 1.
pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(SERIES)?;
    txn.open_table(DELTAS)?;
    txn.open_table(MINUTE)?;
    txn.open_table(HOUR)?;
    txn.open_table(DAY)?;
    Ok(())
}
