//! `scopemon serve`: load the config (file, then flags) and run the daemon.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (default: config/scopemon.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address (overrides server.listen); port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = super::load_config(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.storage.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scopemon-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(scopemon::server::run(
        config,
        scopemon::server::shutdown_signal(),
        |addr| {
            // One line on stdout that scripts (and tests) can wait for.
            println!("scopemon listening on http://{addr}");
            let _ = std::io::stdout().flush();
        },
    ))?;
    Ok(())
}
