//! Webhook delivery: every transition POSTed as JSON to `alerts.webhook_url`,
//! in order, with `webhook_attempts` tries (backoff 0.5 s, 1 s, 2 s, ...).
//!
//! [`Delivery`] is a unit a background runner drives: evaluation only
//! [`Delivery::enqueue`]s (never blocks, never waits for the network), and
//! [`Delivery::run_once`] sends what is queued. Until the engine's task
//! runner drives it, `spawn_thread` runs it on its own thread.
//!
//! Invariants: at most [`QUEUE_CAPACITY`] transitions wait (more are dropped
//! and counted in `webhook_dropped`); one run at a time, so transitions
//! reach the webhook in the order they were made; a transition that fails
//! every attempt is counted in `webhook_failures` and not retried later.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::AlertCounters;
use super::alert::Transition;
use crate::config::AlertsConfig;
use crate::error::{Error, Result};

/// Transitions that may wait for delivery.
pub const QUEUE_CAPACITY: usize = 1024;

/// Wait before the second attempt (doubling after each).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Transition>,
    closed: bool,
}

/// The webhook queue and its sender.
pub struct Delivery {
    url: String,
    attempts: u32,
    agent: ureq::Agent,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Held by a run: one at a time keeps transitions in order.
    running: Mutex<()>,
    counters: Arc<AlertCounters>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("url", &self.url)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Delivery {
    /// A delivery to `url` with the timeout and attempts of `cfg`.
    pub fn new(url: String, cfg: &AlertsConfig, counters: Arc<AlertCounters>) -> Delivery {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.webhook_timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Delivery {
            url,
            attempts: cfg.webhook_attempts.max(1),
            agent,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            running: Mutex::new(()),
            counters,
        }
    }

    /// Transitions waiting.
    pub fn queued(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// Queues `t`; when [`QUEUE_CAPACITY`] are already waiting it is
    /// dropped (and counted). Never blocks on the network.
    pub fn enqueue(&self, t: Transition) {
        let mut q = self.queue.lock();
        if q.items.len() >= QUEUE_CAPACITY {
            drop(q);
            self.counters
                .webhook_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.items.push_back(t);
        drop(q);
        self.ready.notify_one();
    }

    /// Sends every transition queued when called, in order, each with up
    /// to `webhook_attempts` tries; returns how many were delivered, or an
    /// error when some failed every attempt (each counted in
    /// `webhook_failures` and logged). Blocks for the network and backoff:
    /// run it off the evaluation path.
    pub fn run_once(&self) -> Result<usize> {
        let _one = self.running.lock();
        let n = self.queued();
        let (mut delivered, mut failed) = (0, 0);
        for _ in 0..n {
            let Some(t) = self.queue.lock().items.pop_front() else {
                break;
            };
            if self.send(&t) {
                delivered += 1;
            } else {
                failed += 1;
                self.counters
                    .webhook_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    alert = t.alert.id,
                    event = t.event.as_str(),
                    "webhook delivery failed after {} attempts",
                    self.attempts
                );
            }
        }
        if failed > 0 {
            return Err(Error::Io(std::io::Error::other(format!(
                "webhook {}: {failed} of {} alert transitions undelivered after {} attempts",
                self.url,
                delivered + failed,
                self.attempts
            ))));
        }
        Ok(delivered)
    }

    /// One transition, with retries; true when the webhook answered 2xx.
    fn send(&self, t: &Transition) -> bool {
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=self.attempts {
            match self.agent.post(&self.url).send_json(t) {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => tracing::warn!(
                    status = r.status().as_u16(),
                    attempt,
                    "webhook refused the alert"
                ),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
            }
            if attempt < self.attempts {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
        false
    }

    /// Blocks until a transition is queued or the delivery is closed;
    /// false once it is closed and nothing is left to send.
    pub fn wait(&self) -> bool {
        let mut q = self.queue.lock();
        while q.items.is_empty() && !q.closed {
            self.ready.wait(&mut q);
        }
        !q.items.is_empty()
    }

    /// Ends [`Delivery::wait`]ers once the queue is empty.
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Closes the delivery when dropped (its thread then sends what is left
/// and ends).
#[derive(Debug)]
pub(super) struct Worker(Arc<Delivery>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs `delivery` on a thread of its own: wait for work, `run_once`.
/// (Interim: the engine's task runner is to drive `run_once` instead.)
pub(super) fn spawn_thread(delivery: &Arc<Delivery>) -> Option<Worker> {
    let d = delivery.clone();
    let spawned = std::thread::Builder::new()
        .name("scopemon-webhook".into())
        .spawn(move || {
            while d.wait() {
                // Each failed transition is already counted and logged.
                let _ = d.run_once();
            }
        });
    match spawned {
        Ok(_) => Some(Worker(delivery.clone())),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the webhook thread; alerts will only be logged");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alerts::{Alert, AlertState, Severity, TransitionKind};
    use crate::model::Kind;

    fn transition(id: u64) -> Transition {
        Transition {
            event: TransitionKind::Firing,
            alert: Alert {
                id,
                threshold_id: "t".into(),
                namespace: "prod".into(),
                metric: "m".into(),
                kind: Kind::Latency,
                tags: BTreeMap::new(),
                severity: Severity::Warning,
                value: 2.0,
                threshold: 1.0,
                state: AlertState::Firing,
                started_at: "2027-01-15T08:00:00Z".into(),
                resolved_at: None,
            },
        }
    }

    /// A URL nobody listens on.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    }

    fn delivery(attempts: u32) -> (Delivery, Arc<AlertCounters>) {
        let counters = Arc::new(AlertCounters::default());
        let cfg = AlertsConfig {
            webhook_attempts: attempts,
            ..AlertsConfig::default()
        };
        (Delivery::new(dead_url(), &cfg, counters.clone()), counters)
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (d, counters) = delivery(1);
        for i in 0..QUEUE_CAPACITY as u64 + 3 {
            d.enqueue(transition(i));
        }
        assert_eq!(d.queued(), QUEUE_CAPACITY);
        assert_eq!(counters.webhook_dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_run_reports_what_failed_every_attempt() {
        let (d, counters) = delivery(1);
        assert_eq!(d.run_once().unwrap(), 0, "nothing queued");
        d.enqueue(transition(1));
        d.enqueue(transition(2));
        let e = d.run_once().unwrap_err().to_string();
        assert!(e.contains("2 of 2 alert transitions undelivered"), "{e}");
        assert_eq!(counters.webhook_failures.load(Ordering::Relaxed), 2);
        assert_eq!(d.queued(), 0, "failed transitions are not retried later");
    }

    #[test]
    fn closing_ends_the_wait() {
        let (d, _) = delivery(1);
        d.enqueue(transition(1));
        d.close();
        assert!(d.wait(), "queued work is still handed out after close");
        let _ = d.run_once();
        assert!(!d.wait());
    }
}
