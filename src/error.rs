//! The library's error type. Every variant carries a stable machine code
//! ([`Error::code`], the `error` field of HTTP answers) and a human sentence
//! that says what to do next.
//!
//! Variants carry structured fields where a caller would match on them
//! (paths, addresses, timestamps); the rest wrap the sentence they print.
//! A variant wrapping another error both prints it and returns it from
//! `source()`, so a reporter walking the chain must not print it twice
//! (the CLI's `report` skips a cause its parent already says).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::model::{format_duration_ms, format_ts};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in scopemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, metric or tag breaks its pattern.
    #[error("{0}")]
    InvalidName(String),
    /// Unknown metric kind.
    #[error("{0}")]
    InvalidKind(String),
    /// NaN, infinite or negative value.
    #[error("{0}")]
    InvalidValue(String),
    /// A value beyond the kind's histogram range.
    #[error("{0}")]
    ValueOutOfRange(String),
    /// A sample that is not the shape of a sample (wrong types, missing fields).
    #[error("{0}")]
    InvalidSample(String),
    /// The sample would create a series past the namespace's limit.
    #[error(
        "namespace {namespace:?} already holds {limit} series (storage.series_limit_per_namespace); reuse existing tags or raise the limit"
    )]
    SeriesLimitExceeded {
        /// The namespace.
        namespace: String,
        /// Its limit.
        limit: usize,
    },
    /// The sample would create a series past the limit across namespaces.
    #[error(
        "the store already holds {limit} series across all namespaces (storage.series_limit); reuse existing tags or raise the limit"
    )]
    TotalSeriesLimitExceeded {
        /// The limit.
        limit: usize,
    },
    /// Timestamp older than the namespace's longest retention.
    #[error(
        "timestamp {} is older than namespace {namespace:?}'s longest retention ({}); it would be deleted at once",
        format_ts(*timestamp_ms),
        format_duration_ms(*retention_ms)
    )]
    OutsideRetention {
        /// The sample's timestamp, Unix ms.
        timestamp_ms: i64,
        /// Its namespace.
        namespace: String,
        /// The namespace's longest retention, ms.
        retention_ms: i64,
    },
    /// Timestamp more than 5 minutes ahead of the server clock.
    #[error(
        "timestamp {} is more than 5 minutes ahead of the server clock ({})",
        format_ts(*timestamp_ms),
        format_ts(*now_ms)
    )]
    TimestampInFuture {
        /// The sample's timestamp, Unix ms.
        timestamp_ms: i64,
        /// The server clock when it arrived, Unix ms.
        now_ms: i64,
    },
    /// A query parameter is malformed or unknown.
    #[error("{0}")]
    InvalidParameter(String),
    /// A query range is empty or inverted.
    #[error("{0}")]
    InvalidRange(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store file is held by another process.
    #[error(
        "the store {path} is in use by another process (a running `scopemon serve`?); stop it first"
    )]
    StoreLocked {
        /// The redb file.
        path: PathBuf,
    },
    /// The store was written by a newer scopemon.
    #[error(
        "the store {path} has schema version {found}, newer than this scopemon understands ({supported}); upgrade scopemon, the file was not changed"
    )]
    SchemaTooNew {
        /// The redb file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Newest version this build knows.
        supported: u64,
    },
    /// The store needs migrations that were not allowed to run.
    #[error("the store {path} has schema version {found} but {supported} is required; run `scopemon migrate --data-dir {dir}`", dir = path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    SchemaTooOld {
        /// The redb file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Version this build needs.
        supported: u64,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A file given as a store (a backup to restore) is not one.
    #[error("{path} is not a scopemon store: {reason}; nothing was changed")]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The operation would replace a file or a store holding data, and
    /// replacing was not asked for.
    #[error("{0}")]
    WouldOverwrite(String),
    /// The store file holds damaged bytes: a read met a record, a page or
    /// a table entry that does not decode (redb's own decoders included:
    /// their panics are caught where the store is read and become this).
    #[error(
        "the store {path} is damaged ({what}: {detail}); stop scopemon and run `scopemon check --data-dir {dir} --repair`, or `scopemon restore` a backup",
        dir = path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    StoreCorrupted {
        /// The redb file.
        path: PathBuf,
        /// What was being done, e.g. "opening the store", "answering a query".
        what: &'static str,
        /// What was wrong (redb's or the decoder's words, or the panic's).
        detail: String,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory, or a file in it, cannot be created or opened.
    #[error("cannot {action} {path}: {source}")]
    DataDir {
        /// What was tried, e.g. "create the data directory".
        action: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A failure of scopemon itself, not of the input: a background task
    /// that panicked or was cancelled, an answer that could not be
    /// serialised (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
    /// Alert transitions that the webhook refused or never answered, every
    /// attempt (each is counted and logged; delivery goes on).
    #[error(
        "webhook {url}: {failed} of {total} alert transitions undelivered after {attempts} attempts"
    )]
    Webhook {
        /// The webhook URL.
        url: String,
        /// Transitions that failed every attempt.
        failed: usize,
        /// Transitions in the run.
        total: usize,
        /// Attempts per transition.
        attempts: u32,
    },
    /// Memory pressure is high: a sample that would create a new series is
    /// refused (existing series keep recording).
    #[error(
        "memory pressure is high ({:.0}% of the pressure base in use): samples that would create a new series are refused until it falls; existing series keep recording",
        ratio * 100.0
    )]
    MemoryPressureHigh {
        /// The pressure ratio of the last check.
        ratio: f64,
    },
    /// Memory pressure is critical: the operation is refused.
    #[error(
        "memory pressure is critical ({:.0}% of the pressure base in use): the operation was refused; retry once it falls (GET /v1/memory)",
        ratio * 100.0
    )]
    MemoryPressureCritical {
        /// The pressure ratio of the last check.
        ratio: f64,
    },
    /// The disk holding the store is full, or a write to it failed: ingest
    /// is refused (nothing of the batch is kept) until writes succeed again,
    /// which scopemon detects by itself; reads keep answering.
    #[error(
        "the store cannot take writes ({reason}); nothing of this batch was kept: free space on the data directory's disk (GET /health shows it) and resend; ingest resumes by itself"
    )]
    InsufficientStorage {
        /// What failed, or how little space is left.
        reason: String,
    },
    /// The store file is closed after a write error and could not be opened
    /// again yet; scopemon retries on every flush interval.
    #[error(
        "the store {path} is closed after a write error and reopening it failed ({reason}); it is retried every flush interval: free space on its disk"
    )]
    StoreUnavailable {
        /// The redb file.
        path: PathBuf,
        /// The last error.
        reason: String,
    },
    /// A clean shutdown could not write everything accepted (the final
    /// flush failed, e.g. on a full disk).
    #[error(
        "{samples} accepted samples in {buckets} series-minutes could not be written and are lost: {reason}"
    )]
    NotPersisted {
        /// Samples still in memory.
        samples: u64,
        /// (series, minute) buckets holding them.
        buckets: usize,
        /// Why the final flush failed.
        reason: String,
    },
    /// The monitor has been closed.
    #[error("the monitor is closed")]
    Closed,
    /// An error from redb.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// An I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError
);

impl Error {
    /// Stable machine-readable code (the HTTP `error` field).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidName(_) => "invalid_name",
            Error::InvalidKind(_) => "invalid_kind",
            Error::InvalidValue(_) => "invalid_value",
            Error::ValueOutOfRange(_) => "value_out_of_range",
            Error::InvalidSample(_) => "invalid_sample",
            Error::SeriesLimitExceeded { .. } | Error::TotalSeriesLimitExceeded { .. } => {
                "series_limit_exceeded"
            }
            Error::OutsideRetention { .. } => "outside_retention",
            Error::TimestampInFuture { .. } => "timestamp_in_future",
            Error::InvalidParameter(_) => "invalid_parameter",
            Error::InvalidRange(_) => "invalid_range",
            Error::NotFound(_) => "not_found",
            Error::StoreLocked { .. } => "store_locked",
            Error::SchemaTooNew { .. } => "schema_too_new",
            Error::SchemaTooOld { .. } => "schema_too_old",
            Error::Corrupt { .. } | Error::StoreCorrupted { .. } => "store_corrupted",
            Error::NotAStore { .. } => "not_a_store",
            Error::WouldOverwrite(_) => "would_overwrite",
            Error::Config(_) => "invalid_config",
            Error::Listen { .. } => "listen_failed",
            Error::DataDir { .. } => "data_dir_unusable",
            Error::Internal(_) => "internal",
            Error::Webhook { .. } => "webhook_failed",
            Error::MemoryPressureHigh { .. } => "memory_pressure_high",
            Error::MemoryPressureCritical { .. } => "memory_pressure_critical",
            Error::InsufficientStorage { .. } => "insufficient_storage",
            Error::StoreUnavailable { .. } => "store_unavailable",
            Error::NotPersisted { .. } => "not_persisted",
            Error::Closed => "closed",
            Error::Storage(redb::Error::Corrupted(_)) => "store_corrupted",
            Error::Storage(_) => "storage_error",
            Error::Io(_) => "io_error",
        }
    }

    /// True for damaged bytes met in the store: [`Error::StoreCorrupted`],
    /// a record that does not decode ([`Error::Corrupt`]) and redb's own
    /// `Corrupted` (HTTP 500 `store_corrupted`).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::StoreCorrupted { .. }
                | Error::Corrupt { .. }
                | Error::Storage(redb::Error::Corrupted(_))
        )
    }

    /// True for errors caused by the caller's input (HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::StoreLocked { .. }
                | Error::SchemaTooNew { .. }
                | Error::SchemaTooOld { .. }
                | Error::Corrupt { .. }
                | Error::StoreCorrupted { .. }
                | Error::Config(_)
                | Error::Listen { .. }
                | Error::DataDir { .. }
                | Error::Internal(_)
                | Error::Webhook { .. }
                | Error::MemoryPressureHigh { .. }
                | Error::MemoryPressureCritical { .. }
                | Error::InsufficientStorage { .. }
                | Error::StoreUnavailable { .. }
                | Error::NotPersisted { .. }
                | Error::Closed
                | Error::Storage(_)
                | Error::Io(_)
        )
    }
}
