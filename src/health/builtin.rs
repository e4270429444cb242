//! The checks `scopemon serve` registers about itself:
//! - `store:writable` (critical): a tiny write and read-back transaction on
//!   `meta.health_probe`, in turn with every other writer; unhealthy too
//!   while ingest is refused for storage (a failed write not yet followed
//!   by a successful one, or less than `storage.min_free_space` free);
//! - `store:flush` (critical): the last flush failed, or the time since the
//!   last successful one is far past `storage.flush_interval`;
//! - `disk:data_dir`: free space of the data directory's file system;
//! - `task:<name>`, one per background task: its last run failed, or it is
//!   overdue by more than a period;
//! - `alerts:firing`: firing performance alerts (warning → degraded,
//!   critical → unhealthy; not critical itself, so a slow dependency never
//!   pulls the instance out of a load balancer).
//!
//! - `memory:pressure` (critical): the memory manager's level (high →
//!   degraded, critical → unhealthy, so a load balancer moves traffic away
//!   while ingest answers 503); it reads the level the `memory` task last
//!   measured, no I/O.
//!
//! Invariants: only `store:writable` and `disk:data_dir` do I/O, on tokio's
//! blocking pool; the store probe never has two runs in flight (a probe
//! stuck on a dead disk is reported, not piled up), and times use the
//! engine's clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::check::{CheckFuture, CheckResult, HealthCheck};
use crate::alerts::{AlertState, Severity};
use crate::config::HealthConfig;
use crate::memory::PressureLevel;
use crate::monitor::Monitor;
use crate::store::space::disk_space;

/// Every built-in check over `monitor`.
pub(super) fn checks(monitor: &Arc<Monitor>, cfg: &HealthConfig) -> Vec<Arc<dyn HealthCheck>> {
    let mut out: Vec<Arc<dyn HealthCheck>> = vec![
        Arc::new(StoreWritable {
            monitor: monitor.clone(),
            busy: Arc::new(AtomicBool::new(false)),
        }),
        Arc::new(FlushLag {
            monitor: monitor.clone(),
            started_ms: monitor.now_ms(),
        }),
        Arc::new(DiskSpace {
            dir: monitor.config().storage.data_dir.clone(),
            degraded: cfg.disk_degraded,
            unhealthy: cfg.disk_unhealthy,
        }),
        Arc::new(FiringAlerts {
            monitor: monitor.clone(),
        }),
        Arc::new(MemoryPressure {
            monitor: monitor.clone(),
        }),
    ];
    for t in monitor.tasks() {
        out.push(Arc::new(TaskCheck {
            monitor: monitor.clone(),
            task: t.name,
            name: format!("task:{}", t.name),
        }));
    }
    out
}

/// Milliseconds since `started`, as a float.
fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

struct StoreWritable {
    monitor: Arc<Monitor>,
    /// A probe is running on the blocking pool.
    busy: Arc<AtomicBool>,
}

impl HealthCheck for StoreWritable {
    fn name(&self) -> &str {
        "store:writable"
    }
    fn component_type(&self) -> &str {
        "datastore"
    }
    fn critical(&self) -> bool {
        true
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.busy.swap(true, Ordering::SeqCst) {
                return CheckResult::unhealthy("the previous write probe has not finished");
            }
            let (m, busy) = (self.monitor.clone(), self.busy.clone());
            let value = u64::try_from(m.now_ms()).unwrap_or(0);
            let started = Instant::now();
            let probed = tokio::task::spawn_blocking(move || {
                let r = m.store().probe(value);
                let refusal = m.storage_refusal();
                busy.store(false, Ordering::SeqCst);
                r.map(|read| (read, refusal))
            })
            .await;
            let ms = ms_since(started);
            match probed {
                Ok(Ok((_, Some(refusal)))) => CheckResult::unhealthy(refusal.to_string()),
                Ok(Ok((Some(v), None))) if v == value => {
                    CheckResult::healthy("write and read back").observed(ms, "ms")
                }
                Ok(Ok((other, None))) => {
                    CheckResult::unhealthy(format!("wrote {value} but read back {other:?}"))
                }
                Ok(Err(e)) => CheckResult::unhealthy(format!("write probe failed: {e}")),
                Err(e) => CheckResult::unhealthy(format!("write probe did not finish: {e}")),
            }
        })
    }
}

struct FlushLag {
    monitor: Arc<Monitor>,
    /// Clock time the check was created (the lag before the first flush).
    started_ms: i64,
}

impl HealthCheck for FlushLag {
    fn name(&self) -> &str {
        "store:flush"
    }
    fn component_type(&self) -> &str {
        "datastore"
    }
    fn critical(&self) -> bool {
        true
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let m = &self.monitor;
            if m.is_closed() {
                return CheckResult::unhealthy("the monitor is closed");
            }
            let s = m.stats();
            let interval = m.config().storage.flush_interval.as_secs_f64() * 1e3;
            let lag = (m.now_ms() - s.last_flush_ms.max(self.started_ms)).max(0) as f64;
            let r = if !m.is_healthy() {
                CheckResult::unhealthy(format!(
                    "the last flush failed ({} failures so far)",
                    s.flush_errors
                ))
            } else if lag > 5.0 * interval {
                CheckResult::unhealthy("no flush for over 5 flush intervals")
            } else if lag > 2.0 * interval {
                CheckResult::degraded("no flush for over 2 flush intervals")
            } else {
                CheckResult::healthy("")
            };
            r.observed(lag, "ms")
                .meta("flush_interval_ms", interval)
                .meta("flush_errors", s.flush_errors)
        })
    }
}

struct DiskSpace {
    dir: PathBuf,
    degraded: f64,
    unhealthy: f64,
}

impl HealthCheck for DiskSpace {
    fn name(&self) -> &str {
        "disk:data_dir"
    }
    fn component_type(&self) -> &str {
        "system"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let path = dir.display().to_string();
            let space = match tokio::task::spawn_blocking(move || disk_space(&dir)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return CheckResult::unhealthy(format!("statvfs {path}: {e}")),
                Err(e) => return CheckResult::unhealthy(format!("statvfs did not finish: {e}")),
            };
            let (free, total) = space;
            let frac = if total > 0 {
                free as f64 / total as f64
            } else {
                0.0
            };
            let r = if frac < self.unhealthy {
                CheckResult::unhealthy("the data directory's disk is almost full")
            } else if frac < self.degraded {
                CheckResult::degraded("the data directory's disk is filling up")
            } else {
                CheckResult::healthy("")
            };
            r.observed((frac * 1e4).round() / 100.0, "percent")
                .meta("available_bytes", free)
                .meta("total_bytes", total)
                .meta("path", path)
        })
    }
}

struct TaskCheck {
    monitor: Arc<Monitor>,
    task: &'static str,
    name: String,
}

impl HealthCheck for TaskCheck {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let now = self.monitor.now_ms();
            let Some(t) = self
                .monitor
                .tasks()
                .into_iter()
                .find(|t| t.name == self.task)
            else {
                return CheckResult::unhealthy("the task is not registered");
            };
            let overdue = now - t.next_run_ms;
            let r = if let Some(e) = &t.last_error {
                CheckResult::degraded(format!("the last run failed: {e}"))
            } else if overdue > t.period_ms {
                CheckResult::degraded("overdue by more than a period")
            } else {
                CheckResult::healthy("")
            };
            let r = r
                .observed(overdue.max(0) as f64, "ms")
                .meta("runs", t.runs)
                .meta("failures", t.failures);
            match t.last_run_ms {
                Some(ms) => r.meta("last_run", crate::model::format_ts(ms)),
                None => r,
            }
        })
    }
}

struct FiringAlerts {
    monitor: Arc<Monitor>,
}

impl HealthCheck for FiringAlerts {
    fn name(&self) -> &str {
        "alerts:firing"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let firing = self.monitor.alerts(Some(AlertState::Firing));
            let critical = firing
                .iter()
                .filter(|a| a.severity == Severity::Critical)
                .count();
            let ids: Vec<&str> = firing.iter().map(|a| a.threshold_id.as_str()).collect();
            let r = if critical > 0 {
                CheckResult::unhealthy(format!("{critical} critical alerts firing"))
            } else if !firing.is_empty() {
                CheckResult::degraded(format!("{} warning alerts firing", firing.len()))
            } else {
                CheckResult::healthy("")
            };
            r.observed(firing.len() as f64, "alerts")
                .meta("thresholds", ids)
        })
    }
}

struct MemoryPressure {
    monitor: Arc<Monitor>,
}

impl HealthCheck for MemoryPressure {
    fn name(&self) -> &str {
        "memory:pressure"
    }
    fn component_type(&self) -> &str {
        "system"
    }
    fn critical(&self) -> bool {
        true
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let m = self.monitor.memory();
            let level = m.pressure_level;
            let message = format!(
                "{} pressure: {:.1} % of the pressure base",
                level.as_str(),
                m.threshold_percentage * 100.0
            );
            let r = match level {
                PressureLevel::Critical => CheckResult::unhealthy(message),
                PressureLevel::High => CheckResult::degraded(message),
                PressureLevel::Low | PressureLevel::Medium => CheckResult::healthy(message),
            };
            r.observed(m.threshold_percentage * 100.0, "percent")
                .meta("level", level.as_str())
        })
    }
}
