//! The daemon's connections, bounded: a hostile or broken client can hold
//! neither a connection nor a file descriptor for long.
//!
//! Invariants:
//! - At most `server.max_connections` connections are served at once; a
//!   connection past that is closed as soon as it is accepted, so the
//!   process never runs out of descriptors and `/livez` keeps answering
//!   once the flood stops.
//! - A connection that has not sent a whole request head within
//!   `server.header_read_timeout` is closed (hyper's header timer, which
//!   also runs while a keep-alive connection waits for its next request).
//! - A request gets `server.request_timeout` to be answered, body included
//!   (`tower_http`'s timeout inside the router, answered as the JSON
//!   `408 request_timeout`).
//! - On shutdown no connection is accepted any more; requests in flight
//!   finish, idle connections close, and then `serve` returns.
//! - At start the soft descriptor limit is raised to the hard one.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// Serves `app` on `listener` until `shutdown` resolves, bounding every
/// connection as the module doc says; returns once in-flight requests ended.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: server.max_connections reached");
            drop(stream);
            continue;
        };
        // No upgrades: the API has no WebSocket or CONNECT routes.
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Raises the soft limit on open files to the hard limit (a daemon holding
/// many connections needs more than the usual 1,024); failures are logged.
pub(crate) fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we own.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if got != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::debug!(before, after = lim.rlim_cur, "raised the open-file limit");
        } else {
            tracing::warn!("cannot raise the open-file limit");
        }
    }
}
