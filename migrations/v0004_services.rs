//! Schema version 4: external services watched by the health aggregator.
//!
//! - `services`  &str service name -> versioned record of its registration
//!   (critical flag and check: http URL, tcp address or ttl, interval,
//!   timeout), written by `POST /v1/services`, removed by
//!   `DELETE /v1/services/{name}`; reloaded at start-up.

use redb::{TableDefinition, WriteTransaction};

const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");

/// Creates the `services` table.
pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SERVICES)?;
    Ok(())
}
