//! Webhook delivery: every transition POSTed as JSON to `alerts.webhook_url`,
//! in order, with `webhook_attempts` tries (backoff 0.5 s, 1 s, 2 s, ...).
//!
//! [`Delivery`] is a unit a background runner drives: evaluation only
//! [`Delivery::enqueue`]s (never blocks, never waits for the network), and
//! [`Delivery::run_once`] sends what is queued. The engine runs it as its
//! `alert-delivery` background task, woken by every enqueue.
//!
//! Invariants: at most [`QUEUE_CAPACITY`] transitions wait (more are dropped
//! and counted in `webhook_dropped`); one run at a time, so transitions
//! reach the webhook in the order they were made; a transition that fails
//! every attempt is counted in `webhook_failures` and not retried later.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
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
}

/// The webhook queue and its sender.
pub struct Delivery {
    url: String,
    attempts: u32,
    agent: ureq::Agent,
    queue: Mutex<Queue>,
    /// Wakes whatever runs [`Delivery::run_once`].
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Set by [`Delivery::shutdown`]; the condvar cuts backoffs short.
    shut: Mutex<bool>,
    shut_cond: Condvar,
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
            waker: OnceLock::new(),
            shut: Mutex::new(false),
            shut_cond: Condvar::new(),
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
        if let Some(wake) = self.waker.get() {
            wake();
        }
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
            if *self.shut.lock() {
                break; // what is left stays queued (and is logged at close)
            }
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
            return Err(Error::Webhook {
                url: self.url.clone(),
                failed,
                total: delivered + failed,
                attempts: self.attempts,
            });
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
                // A backoff that shutdown cuts short.
                let mut shut = self.shut.lock();
                if !*shut {
                    self.shut_cond.wait_for(&mut shut, delay);
                }
                if *shut {
                    return false;
                }
                delay *= 2;
            }
        }
        false
    }

    /// Ends delivery for good: a run in progress stops after the attempt it
    /// is making (backoff cut short), so shutting down never waits for a
    /// dead webhook. Returns how many transitions were still queued.
    pub fn shutdown(&self) -> usize {
        *self.shut.lock() = true;
        self.shut_cond.notify_all();
        self.queued()
    }

    /// Registers what to call when a transition is queued (the engine
    /// wakes its delivery task). Only the first registration counts.
    pub fn on_enqueue(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.waker.set(Box::new(wake));
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
    fn queueing_wakes_the_runner() {
        let (d, _) = delivery(1);
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        d.on_enqueue(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        d.enqueue(transition(1));
        d.enqueue(transition(2));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
    }
}
