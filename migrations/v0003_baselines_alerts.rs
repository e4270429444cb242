//! Schema version 3: baselines, thresholds and alert history.
//!
//! - `baselines`   &str selection key (namespace, kind, metric, tag filter)
//!   -> versioned baseline record (JSON body), the background calculator's
//!   cache;
//! - `thresholds`  &str threshold id -> versioned threshold record;
//! - `alerts`      u64 alert id -> versioned alert record (firing and the
//!   most recent resolved ones; the evaluator bounds the history).

use redb::{TableDefinition, WriteTransaction};

const BASELINES: TableDefinition<&str, &[u8]> = TableDefinition::new("baselines");
const THRESHOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("thresholds");
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// Creates the three tables.
pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(BASELINES)?;
    txn.open_table(THRESHOLDS)?;
    txn.open_table(ALERTS)?;
    Ok(())
}
