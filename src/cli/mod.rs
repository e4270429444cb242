//! Argument definitions and dispatch; one module per subcommand.
//! Errors get `anyhow` context here, at the edge, and end as one line on
//! stderr with exit code 1 (2 when another process holds the store).

mod baseline;
mod check;
mod compact;
mod migrate;
mod query;
mod retention;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// scopemon: a persistent performance-monitoring store.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format of offline commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP daemon.
    Serve(serve::Args),
    /// Query one metric of a stopped store.
    Query(query::QueryArgs),
    /// One aggregate per series over the last window, from a stopped store.
    Summary(query::SummaryArgs),
    /// Baseline of one metric, from a stopped store.
    Baseline(baseline::Args),
    /// Apply pending schema migrations to a stopped store.
    Migrate(migrate::Args),
    /// Check a stopped store's integrity.
    Check(check::Args),
    /// Show or set retention per namespace (stopped store).
    #[command(subcommand)]
    Retention(retention::Args),
    /// Apply retention to a stopped store and reclaim file space.
    Compact(compact::Args),
}

/// Logs go to stderr; `RUST_LOG` overrides the level (info for serve).
pub fn init_tracing(cli: &Cli) {
    let default = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Query(a) => query::run_query(a),
        Command::Summary(a) => query::run_summary(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Baseline(a) => baseline::run(a),
        Command::Check(a) => check::run(a),
        Command::Retention(a) => retention::run(a),
        Command::Compact(a) => compact::run(a),
    }
}

/// Prints the error as one line and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(scopemon::Error::StoreLocked { path }) = err.downcast_ref::<scopemon::Error>() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let holder = std::fs::read_to_string(dir.join(scopemon::server::PID_FILE))
            .map(|pid| format!(" (scopemon serve, pid {})", pid.trim()))
            .unwrap_or_default();
        eprintln!(
            "error: the store {} is locked by another process{holder}; stop it first or use the HTTP API",
            path.display()
        );
        return ExitCode::from(2);
    }
    eprintln!("error: {err:#}");
    ExitCode::from(1)
}

/// Fails with a clear message when `data_dir` holds no store.
pub fn require_store(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(scopemon::DB_FILE);
    if !path.exists() {
        anyhow::bail!("no store at {} (check --data-dir)", path.display());
    }
    Ok(path)
}

/// Default config file, used when present and no --config is given.
pub const DEFAULT_CONFIG: &str = "config/scopemon.toml";

/// The configuration: `path`, else `config/scopemon.toml` when it exists,
/// else built-in defaults.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<scopemon::Config> {
    Ok(match path {
        Some(p) => scopemon::Config::load(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => {
            scopemon::Config::load(Path::new(DEFAULT_CONFIG))?
        }
        None => scopemon::Config::default(),
    })
}
