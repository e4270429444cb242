//! Repacking the bucket tables: what `scopemon compact` does after
//! retention and before redb's `compact()`.
//!
//! Why: keys are (series, time), but buckets are written time-major (a
//! rollup writes the hour of every series, then the next hour), so most
//! inserts land in the middle of a leaf page and split it in half. A table
//! written that way keeps its leaves about half full for good: redb's
//! `compact()` moves pages to the front of the file but never merges them.
//! Measured after the backfill load of issue 8 (`examples/backfill_bytes`):
//! the hour table's leaves were 49 % free.
//!
//! How: a table whose leaves are more than [`SLACK`] free is copied in key
//! order into a scratch table (sequential inserts fill leaves), deleted,
//! and copied back the same way, all in one write transaction: a crash
//! leaves the table as it was, never half-copied. The scratch table never
//! outlives the transaction. The cost: the transaction needs room for a
//! second copy of the table until it commits (on a full disk it fails and
//! changes nothing), and it runs offline (`scopemon compact`), where it
//! blocks no flush.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{Store, tables};
use crate::error::Result;

/// Free fraction of a table's leaf bytes above which it is repacked.
pub const SLACK: f64 = 0.25;

type Buckets = TableDefinition<'static, (u64, i64), &'static [u8]>;

/// What repacking did to one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Repacked {
    /// The table's name.
    pub table: &'static str,
    /// Free bytes in its leaf pages before and after.
    pub free_before: u64,
    pub free_after: u64,
}

/// Every bucket table: its name, definition and scratch table.
const TABLES: [(&str, Buckets, Buckets); 4] = [
    (
        "minute",
        tables::MINUTE,
        TableDefinition::new("minute~repack"),
    ),
    (
        "minute_groups",
        tables::MINUTE_GROUPS,
        TableDefinition::new("minute_groups~repack"),
    ),
    ("hour", tables::HOUR, TableDefinition::new("hour~repack")),
    ("day", tables::DAY, TableDefinition::new("day~repack")),
];

/// Free bytes in the leaves of `def` and their fraction of all leaf bytes.
fn slack(txn: &WriteTransaction, def: Buckets) -> Result<(u64, f64)> {
    let stats = txn.open_table(def)?.stats()?;
    let free = stats.fragmented_bytes();
    let total = free + stats.stored_bytes() + stats.metadata_bytes();
    Ok((free, free as f64 / total.max(1) as f64))
}

fn copy(txn: &WriteTransaction, from: Buckets, to: Buckets) -> Result<()> {
    let src = txn.open_table(from)?;
    let mut dst = txn.open_table(to)?;
    for row in src.iter()? {
        let (k, v) = row?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// Repacks every bucket table whose leaves are more than [`SLACK`] free;
/// returns what it did to each table it repacked.
pub fn repack(store: &Store) -> Result<Vec<Repacked>> {
    let mut done = Vec::new();
    for (table, def, tmp) in TABLES {
        let txn = store.begin_write()?;
        let (free_before, fraction) = slack(&txn, def)?;
        if fraction <= SLACK {
            continue; // dropped: nothing written
        }
        copy(&txn, def, tmp)?;
        txn.delete_table(def)?;
        copy(&txn, tmp, def)?;
        txn.delete_table(tmp)?;
        let (free_after, _) = slack(&txn, def)?;
        txn.commit()?;
        done.push(Repacked {
            table,
            free_before,
            free_after,
        });
    }
    Ok(done)
}
