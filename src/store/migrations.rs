//! The schema migrations runner. `migrations/` holds one file per schema
//! version (`vNNNN_<name>.rs`, each with `pub fn up(&WriteTransaction)`);
//! they are compiled in here and applied in order.
//!
//! Crash safety: each migration runs in its own write transaction together
//! with the update of `meta.schema_version`, so the recorded version always
//! describes the tables actually present. A file whose version is newer than
//! [`CURRENT`] is refused before any write.

use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::error::Result;
use crate::store::tables::META;

#[path = "../../migrations/v0001_initial.rs"]
mod v0001_initial;
#[path = "../../migrations/v0002_retention.rs"]
mod v0002_retention;
#[path = "../../migrations/v0003_baselines_alerts.rs"]
mod v0003_baselines_alerts;
#[path = "../../migrations/v0004_services.rs"]
mod v0004_services;
#[path = "../../migrations/v0005_minute_groups.rs"]
mod v0005_minute_groups;

/// One schema step.
pub struct Migration {
    /// Version the file is at after this migration.
    pub version: u64,
    /// Short name.
    pub name: &'static str,
    up: fn(&WriteTransaction) -> std::result::Result<(), redb::Error>,
}

/// Every migration, in order. Versions are 1, 2, 3, ... without gaps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        up: v0001_initial::up,
    },
    Migration {
        version: 2,
        name: "retention",
        up: v0002_retention::up,
    },
    Migration {
        version: 3,
        name: "baselines_alerts",
        up: v0003_baselines_alerts::up,
    },
    Migration {
        version: 4,
        name: "services",
        up: v0004_services::up,
    },
    Migration {
        version: 5,
        name: "minute_groups",
        up: v0005_minute_groups::up,
    },
];

/// Newest schema version this build writes.
pub const CURRENT: u64 = 5;

/// Key of the schema version in `meta`.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The version recorded in the file (0 for a new, empty file).
pub fn recorded_version(db: &impl ReadableDatabase) -> Result<u64> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(table
        .get(SCHEMA_VERSION_KEY)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Migrations a file at `version` still needs.
pub fn pending(version: u64) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.version > version)
}

/// Applies every pending migration; returns the ones applied.
pub fn apply(db: &Database, from: u64) -> Result<Vec<&'static Migration>> {
    apply_up_to(db, from, CURRENT)
}

/// Applies the migrations after `from` up to and including `target` (tests
/// use it to build files of older schemas).
pub fn apply_up_to(db: &Database, from: u64, target: u64) -> Result<Vec<&'static Migration>> {
    let mut applied = Vec::new();
    for m in pending(from).filter(|m| m.version <= target) {
        let txn = db.begin_write()?;
        (m.up)(&txn)?;
        txn.open_table(META)?
            .insert(SCHEMA_VERSION_KEY, m.version)?;
        txn.commit()?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
        applied.push(m);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_and_end_at_current() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as u64 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(CURRENT));
    }
}
