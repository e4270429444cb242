//! `scopemon serve`: opens the engine, runs the first round of health
//! checks, serves the HTTP API, and on SIGINT or SIGTERM stops accepting
//! requests, lets in-flight ones finish, stops the health checks, then
//! flushes every hot bucket before exiting (a clean shutdown loses nothing).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::HealthAggregator;
use crate::monitor::Monitor;

/// Name of the file recording the serving process' id in the data dir.
pub const PID_FILE: &str = "scopemon.pid";

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Removes the pid file when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(config: &Config) -> Result<PidFile> {
        let path = config.storage.data_dir.join(PID_FILE);
        std::fs::write(&path, format!("{}\n", std::process::id())).map_err(|source| {
            Error::DataDir {
                action: "write the pid file",
                path: path.clone(),
                source,
            }
        })?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the daemon until `shutdown` resolves; `on_listen` is told the bound
/// address (the port may have been 0).
///
/// Start-up checks what can fail without side effects first — the
/// configuration, then the listen address (bound here) — and only then
/// creates the data directory and the store, so a bad configuration or a
/// port in use leaves the disk untouched. Each failure is its own variant:
/// [`Error::Config`], [`Error::Listen`], [`Error::DataDir`],
/// [`Error::StoreLocked`], the store's own errors, [`Error::Internal`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    config.validate()?;
    crate::connections::raise_fd_limit();
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    let monitor = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Monitor::open(config))
            .await
            .map_err(|e| Error::Internal(format!("opening the store failed: {e}")))??
    };
    let monitor = Arc::new(monitor);
    let _pid = PidFile::create(&config)?;
    // The first round of health checks completes before the address is
    // announced, so a reachable server is a ready one (each check is
    // bounded by its timeout).
    let health = HealthAggregator::with_builtin_checks(monitor.clone());
    health.start().await?;
    health.wait_ready().await;
    tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), "scopemon listening");
    on_listen(addr);
    // scopemon's own API runs behind its own instrumentation (namespace
    // `scopemon`, metric `http.request`) and its ingest behind its own
    // protection (memory gate on, no rate limit unless configured).
    let infra = crate::instrument::daemon_infrastructure(&monitor);
    let api = crate::http::router_with(health.clone(), infra.clone());
    let app = crate::instrument::instrument_router(api, monitor.clone(), infra)
        .layer(tower_http::trace::TraceLayer::new_for_http());
    crate::connections::serve(listener, app, &config.server, shutdown).await;
    health.stop().await;
    let closing = monitor.clone();
    let closed = tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| Error::Internal(format!("the final flush failed: {e}")))?;
    closed?;
    tracing::info!("all data flushed; bye");
    Ok(())
}
