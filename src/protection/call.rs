//! One protected call: the admission a key's protections granted, and the
//! [`ProtectedCall`] future that runs the call under its deadline and
//! reports its end.
//!
//! Invariants:
//! - Admission is decided synchronously, before the call's future is first
//!   polled; a rejected call's future is dropped unpolled.
//! - An admission reports exactly once: to the breaker and the monitor
//!   when the call finished (or timed out), or — the future dropped first
//!   — only to the breaker, giving back a half-open trial slot.
//! - The deadline's timer is armed only once the call returned `Pending`:
//!   a call that completes at once costs no timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::ProtectionError;
use super::breaker::Ticket;
use super::facade::Entry;
use crate::model::Outcome;

/// Why a call was not let through.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rejection {
    MemoryPressure,
    RateLimited(Duration),
    CircuitOpen(Duration),
}

impl<E> From<Rejection> for ProtectionError<E> {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::MemoryPressure => ProtectionError::MemoryPressure,
            Rejection::RateLimited(retry_after) => ProtectionError::RateLimited { retry_after },
            Rejection::CircuitOpen(retry_after) => ProtectionError::CircuitOpen { retry_after },
        }
    }
}

/// A call every protection let through, not yet reported.
pub(super) struct Admission {
    pub(super) entry: Arc<Entry>,
    pub(super) ticket: Option<Ticket>,
    pub(super) start: Instant,
}

impl Admission {
    fn deadline(&self) -> Option<Instant> {
        self.entry.settings.timeout.map(|t| self.start + t)
    }

    /// Reports the finished call (`ok` false for errors and timeouts).
    fn finish(mut self, ok: bool) {
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(self.start);
        if let Some(t) = self.ticket.take() {
            self.entry.breaker.complete(t, ok, elapsed, end);
        }
        if let Some(h) = &self.entry.ran {
            h.record_outcome(elapsed, if ok { Outcome::Ok } else { Outcome::Error });
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.entry.breaker.release(t);
        }
    }
}

pin_project_lite::pin_project! {
    /// `fut` with an optional deadline.
    struct Deadline<F> {
        #[pin]
        fut: F,
        at: Option<Instant>,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
    }
}

impl<F: Future> Future for Deadline<F> {
    /// `None` once the deadline passed first.
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let mut this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        let Some(at) = *this.at else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(at)));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F: Future> {
        Running {
            #[pin]
            call: Deadline<F>,
            admission: Admission,
            is_ok: fn(&F::Output) -> bool,
        },
        Rejected {
            rejection: Rejection,
        },
        Done,
    }
}

pin_project_lite::pin_project! {
    /// The future of a protected call
    /// ([`Infrastructure::execute_protected`](super::Infrastructure::execute_protected)):
    /// the protections were consulted when it was made; await it at once.
    pub struct ProtectedCall<F: Future> {
        #[pin]
        state: State<F>,
    }
}

impl<F: Future> ProtectedCall<F> {
    /// Runs `fut` under `admission`, or answers the rejection; `is_ok`
    /// says which results count as successes.
    pub(super) fn new(
        admitted: Result<Admission, Rejection>,
        fut: F,
        is_ok: fn(&F::Output) -> bool,
    ) -> ProtectedCall<F> {
        let state = match admitted {
            Ok(admission) => State::Running {
                call: Deadline {
                    fut,
                    at: admission.deadline(),
                    sleep: None,
                },
                admission,
                is_ok,
            },
            Err(rejection) => State::Rejected { rejection },
        };
        ProtectedCall { state }
    }
}

impl<F, T, E> Future for ProtectedCall<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, ProtectionError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let out = match state.as_mut().project() {
            StateProj::Running { call, .. } => match call.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(out) => out,
            },
            StateProj::Rejected { rejection } => {
                let r = *rejection;
                state.set(State::Done);
                return Poll::Ready(Err(r.into()));
            }
            StateProj::Done => panic!("ProtectedCall polled after completion"),
        };
        if let StateReplace::Running {
            admission, is_ok, ..
        } = state.project_replace(State::Done)
        {
            admission.finish(out.as_ref().is_some_and(is_ok));
        }
        Poll::Ready(match out {
            Some(r) => r.map_err(ProtectionError::Inner),
            None => Err(ProtectionError::Timeout),
        })
    }
}
