//! Schema version 5: minute groups.
//!
//! - `minute_groups`  (series id, first minute) -> a run of consecutive
//!   minute records of one sealed hour (`store/codec/group.rs`), built by
//!   compaction from `minute` entries it then deletes. A minute's data is
//!   the sum of its `minute` record and its member in a group (a late
//!   sample rolled up after the hour was grouped lands in `minute` until
//!   the next compaction merges it in).

use redb::{TableDefinition, WriteTransaction};

const MINUTE_GROUPS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("minute_groups");

/// Creates the `minute_groups` table.
pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(MINUTE_GROUPS)?;
    Ok(())
}
