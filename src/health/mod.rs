//! Health: a registry of checks run in the background on the daemon's
//! tokio runtime, aggregated into a cached system status and score that
//! `/health`, `/health/quick`, `/readyz` and `/metrics` answer from.
//!
//! Files: `check.rs` what a check is and returns (the [`HealthCheck`]
//! trait, results, the aggregation rule); `builtin.rs` the checks about
//! scopemon itself; `services.rs` external services (http, tcp, ttl) and
//! their `services` table; `runner.rs` one task per check, bounded by its
//! timeout; `aggregator.rs` the registry, cache, status, history and own
//! series; `report.rs` the JSON answers.
//!
//! Invariants (argued in each file): the status is unhealthy if any
//! critical check is unhealthy, degraded if any check is not healthy (or
//! pending, or the first round is not complete), healthy otherwise; the
//! score is the weighted mean of 1 / 0.5 / 0; a hung check becomes
//! unhealthy at its timeout and never delays another; readers never wait
//! for a check.
//!
//! Room rules: health reads the engine only through [`Monitor`]'s public
//! methods (`stats`, `tasks`, `alerts`, `record`, `store` for the write
//! probe and the `services` table) and owns only that table.
//!
//! [`Monitor`]: crate::monitor::Monitor

mod aggregator;
mod builtin;
mod check;
mod report;
mod runner;
mod services;

pub use aggregator::{HealthAggregator, ServiceStatus};
pub(crate) use check::status_score;
pub use check::{
    CheckFuture, CheckOutcome, CheckResult, HealthCheck, QuickHealth, StatusChange, SystemHealth,
};
pub(crate) use report::document;
pub use services::{ServiceCheckSpec, ServiceRegistration};
