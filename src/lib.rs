//! scopemon: a persistent time-series store for service performance
//! monitoring, embeddable as a library ([`Monitor`]) or run as a daemon
//! (`scopemon serve`).
//!
//! The trunk is one data path: `model` (validated names and samples) →
//! `hot` (sharded in-memory series) → `store` (the redb file: deltas and
//! minute/hour/day records) → `query` (merges all three). Side rooms read
//! or trim the trunk: `retention`, `baseline`, `alerts`; `memory`
//! (pressure levels, [cleanups](MemoryCleanup), the admission gate) guards
//! the process, and `health` ([`HealthAggregator`]) watches every room and
//! external service. [`Monitor`] wires them and runs their background
//! [`tasks`](TaskStatus); the HTTP API ([`router`]), the daemon
//! ([`server`]) and the offline commands are thin layers over it, and
//! [`offline`] holds the operations on a stopped store.
//! See `ARCHITECTURE.md` for every room's job and invariant.
//!
//! This page is the whole public surface: modules are private, and what an
//! embedder needs is re-exported here.

#![warn(missing_docs)]

mod alerts;
mod backup;
mod baseline;
mod clock;
mod config;
mod connections;
mod error;
mod health;
mod hot;
mod http;
mod index;
pub mod instrument;
mod integrity;
mod memory;
mod model;
mod monitor;
pub mod offline;
pub mod protection;
mod query;
mod retention;
pub mod server;
mod stats;
mod store;
mod tasks;

pub use alerts::{
    Alert, AlertCounters, AlertState, HealthStatus, Issue, PerformanceHealth, Reason, Severity,
    Transition, TransitionKind,
};
pub use backup::{BackupReport, RestoreReport};
pub use baseline::{Band, Baseline, BaselineStatus, Selection};
pub use clock::{Clock, JumpWaker, ManualClock, SharedClock, SystemClock};
pub use config::{
    AlertsConfig, BaselineConfig, Config, HealthConfig, MemoryConfig, Op, Retention,
    RetentionConfig, RetentionRule, RetentionSource, ServerConfig, StorageConfig, ThresholdSpec,
};
pub use error::{Error, Result};
pub use health::{
    CheckFuture, CheckOutcome, CheckResult, HealthAggregator, HealthCheck, QuickHealth,
    ServiceCheckSpec, ServiceRegistration, ServiceStatus, StatusChange, SystemHealth,
};
pub use hot::Handle;
pub use http::{router, router_with};
pub use memory::{
    CgroupMemory, CleanupError, CleanupRecord, CleanupReport, CleanupTrigger, ManualMemory,
    MemoryCleanup, MemoryReading, MemorySource, PressureLevel, SystemMemory,
};
pub use model::{
    DAY_MS, HOUR_MS, Kind, MINUTE_MS, Outcome, Resolution, SeriesKey, Tags, format_duration_ms,
    format_ts, parse_query_time,
};
pub use monitor::{
    EngineStats, MAX_FUTURE_MS, MemoryStats, MemoryStatus, Monitor, MonitorBuilder, OWN_NAMESPACE,
    Sample, SeriesInfo,
};
pub use query::{MAX_POINTS, QueryResult, QuerySpec, Summary, SummaryRow, Window};
pub use retention::{CompactOptions, CompactReport};
pub use stats::{Aggregation, Point, Precision};
pub use store::DB_FILE;
pub use store::flush::{FlushReport, RollupReport};
pub use store::limited::DiskBudget;
pub use tasks::TaskStatus;

pub use instrument::{InstrumentationLayer, SpanTimingLayer};
pub use protection::{CallOptions, Infrastructure, ProtectionError, ProtectionLayer};

/// Not part of scopemon's API: store internals for the project's own
/// benchmarks, tests and the offline commands, which build, inspect or
/// damage store files directly, and the entry points of the fuzz targets
/// (`fuzz/`). Anything here may change at any time.
#[doc(hidden)]
pub mod internals {
    pub use crate::alerts::configured_rules;
    pub use crate::hot::Series;
    pub use crate::http::{IngestOutcome, ingest_body, query_spec_of};
    pub use crate::retention::{RetentionPolicy, compact, count_expired};
    pub use crate::stats::Stats;
    pub use crate::store::codec::{
        Codec, GROUP_TARGET_BYTES, decode_series, encode_group, encode_series, group_members,
    };
    pub use crate::store::migrations::{self, CURRENT, SCHEMA_VERSION_KEY};
    pub use crate::store::tables;
    pub use crate::store::{OpenOptions, Store, load_series, open_read_only};
}
