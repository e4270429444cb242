//! Table definitions of the current schema (see `migrations/` for how each
//! came to be). Keys order every series' buckets by time.

use redb::TableDefinition;

use crate::model::Resolution;

/// `schema_version`, `flush_seq`, `health_probe`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Series id -> series record.
pub const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
/// (series id, minute start, 0) -> bucket record not yet rolled up: at most
/// one per (series, minute), merged by each flush (the third key part is
/// kept for schema compatibility and is always 0).
pub const DELTAS: TableDefinition<(u64, i64, u64), &[u8]> = TableDefinition::new("deltas");
/// (series id, minute start) -> bucket record.
pub const MINUTE: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("minute");
/// (series id, first minute) -> a run of consecutive minute records of
/// one sealed hour, at most ~512 B (`codec/group.rs`, schema 5). A
/// minute's data is its `minute` record plus its member here; compaction
/// builds groups (`group.rs`).
pub const MINUTE_GROUPS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("minute_groups");
/// (series id, hour start) -> bucket record.
pub const HOUR: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("hour");
/// (series id, day start) -> bucket record.
pub const DAY: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("day");

/// Namespace -> retention override record (schema 2).
pub const RETENTION: TableDefinition<&str, &[u8]> = TableDefinition::new("retention");

/// Selection key -> cached baseline (schema 3).
pub const BASELINES: TableDefinition<&str, &[u8]> = TableDefinition::new("baselines");
/// Threshold id -> threshold (schema 3).
pub const THRESHOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("thresholds");
/// Alert id -> alert (schema 3).
pub const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// Service name -> registration of an external service the health
/// aggregator watches (schema 4).
pub const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");

/// Key in `META` the health check "store writable" writes and reads back.
pub const HEALTH_PROBE_KEY: &str = "health_probe";

/// Key of the last committed flush sequence in `META`.
pub const FLUSH_SEQ_KEY: &str = "flush_seq";

/// The bucket table of a resolution.
pub fn buckets(res: Resolution) -> TableDefinition<'static, (u64, i64), &'static [u8]> {
    match res {
        Resolution::Minute => MINUTE,
        Resolution::Hour => HOUR,
        Resolution::Day => DAY,
    }
}
