//! Schema version 2: runtime retention overrides.
//!
//! - `retention`  &str namespace -> versioned record of the override's
//!   minute/hour/day durations (each optional; missing keys inherit the
//!   configuration). Written by `PUT /v1/namespaces/{ns}/retention` and
//!   `scopemon retention set`; survives restarts.

use redb::{TableDefinition, WriteTransaction};

const RETENTION: TableDefinition<&str, &[u8]> = TableDefinition::new("retention");

/// Creates the `retention` table.
pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(RETENTION)?;
    Ok(())
}
