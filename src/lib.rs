//! scopemon: a persistent time-series store for service performance
//! monitoring, embeddable as a library ([`Monitor`]) or run as a daemon
//! (`scopemon serve`).
//!
//! The trunk is one data path: [`model`] (validated names and samples) →
//! [`hot`] (sharded in-memory series) → [`store`] (the redb file: deltas and
//! minute/hour/day records) → [`query`] (merges all three). [`http`] and the
//! CLI are thin layers over [`Monitor`].

#![warn(missing_docs)]

pub mod alerts;
pub mod baseline;
pub mod clock;
pub mod config;
pub mod error;
pub mod hot;
pub mod http;
pub mod instrument;
pub mod model;
pub mod monitor;
pub mod protection;
pub mod query;
pub mod retention;
pub mod server;
pub mod stats;
pub mod store;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::Config;
pub use error::{Error, Result};
pub use hot::Handle;
pub use model::{Kind, Outcome, Resolution, SeriesKey, Tags};
pub use monitor::{Monitor, MonitorBuilder, Sample};
pub use query::{QueryResult, QuerySpec, Window};
pub use stats::Point;

pub use instrument::{InstrumentationLayer, SpanTimingLayer};
pub use protection::{CallOptions, Infrastructure, ProtectionError, ProtectionLayer};
