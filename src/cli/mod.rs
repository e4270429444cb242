//! Argument definitions and dispatch; one module per subcommand, each a
//! thin layer over the library ([`scopemon::offline`] for a stopped store,
//! [`scopemon::server`] for the daemon).
//! Errors end here as one line on stderr; the exit code is 1, or 2 when
//! another process holds the store, or 8 when the store is damaged
//! ([`CORRUPTED`], every command), or (for `serve`) one per start-up
//! failure ([`SERVE_EXIT_CODES`]); a command line clap refuses exits 64.

mod backup;
mod baseline;
mod check;
mod compact;
mod migrate;
mod query;
mod retention;
mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use scopemon::{Config, Error};

/// scopemon: a persistent performance-monitoring store.
#[derive(Parser, Debug)]
#[command(version, about, help_expected = true, disable_help_subcommand = true)]
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

/// Exit code of every command that meets a damaged store (and of
/// `scopemon check` when it finds one, or `--repair` cannot mend it).
pub const CORRUPTED: u8 = 8;

/// Exit codes of `scopemon check`, shown in its `--help`.
pub const CHECK_EXIT_CODES: &str = "\
Exit codes:
   0  the store is intact (with --repair: intact, or repaired)
   1  any other failure
   2  the store is held by another process (a running scopemon serve)
   8  the store is damaged (with --repair: it could not be repaired;
      restore a backup with `scopemon restore`)
  64  invalid command line

`scopemon check` never writes the file; `--repair` prints what it removed.";

/// Exit codes of `scopemon serve`, shown in its `--help`.
pub const SERVE_EXIT_CODES: &str = "\
Exit codes:
   0  stopped by SIGINT or SIGTERM; everything was flushed
   1  any other failure
   2  the store is held by another process (a running scopemon serve)
   3  invalid configuration (file unreadable, not TOML, or a bad value)
   4  cannot listen on the address (in use, not local, not permitted)
   5  the data directory, or a file in it, cannot be created or opened
   6  the store cannot be used (schema too new or too old, storage error)
   7  internal error (a start-up or shutdown task failed)
   8  the store file is damaged: run `scopemon check --data-dir D --repair`,
      or `scopemon restore` a backup
  64  invalid command line

A start-up failure creates nothing: the configuration and the listen
address are checked before the data directory and the store are created.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP daemon.
    #[command(after_help = SERVE_EXIT_CODES)]
    Serve(serve::Args),
    /// Query one metric of a stopped store.
    Query(query::QueryArgs),
    /// One aggregate per series over the last window, from a stopped store.
    Summary(query::SummaryArgs),
    /// Baseline of one metric, from a stopped store.
    Baseline(baseline::Args),
    /// Apply pending schema migrations to a stopped store.
    Migrate(migrate::Args),
    /// Check a stopped store's integrity (and repair it with --repair).
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(check::Args),
    /// Show or set retention per namespace (stopped store).
    #[command(subcommand)]
    Retention(retention::Args),
    /// Apply retention to a stopped store and reclaim file space.
    Compact(compact::Args),
    /// Write a consistent copy of a stopped store to a file.
    #[command(after_help = backup::BACKUP_HELP)]
    Backup(backup::BackupArgs),
    /// Replace the store in a data directory by a backup.
    #[command(after_help = backup::RESTORE_HELP)]
    Restore(backup::RestoreArgs),
    /// Print this message or the help of the given subcommand(s).
    Help(HelpArgs),
}

#[derive(clap::Args, Debug)]
struct HelpArgs {
    /// The subcommand to describe, e.g. `retention set`.
    #[arg(value_name = "COMMAND")]
    command: Vec<String>,
}

/// Logs go to stderr, coloured only when it is a terminal (and `NO_COLOR`
/// is unset); `RUST_LOG` overrides the level (info for serve).
pub fn init_tracing(cli: &Cli) {
    let default = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Runs the chosen subcommand and turns its failure into one line on
/// stderr and an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let serving = matches!(cli.command, Command::Serve(_));
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Query(a) => query::run_query(a),
        Command::Summary(a) => query::run_summary(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Baseline(a) => baseline::run(a),
        Command::Check(a) => check::run(a),
        Command::Retention(a) => retention::run(a),
        Command::Compact(a) => compact::run(a),
        Command::Backup(a) => backup::run_backup(a),
        Command::Restore(a) => backup::run_restore(a),
        Command::Help(a) => return help(&a.command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err, serving),
    }
}

/// Prints clap's message; 0 for `--help`/`--version`, else 64 (EX_USAGE),
/// so a usage error is never mistaken for "the store is locked" (2).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(64)
    } else {
        ExitCode::SUCCESS
    }
}

/// `scopemon help [COMMAND]...`: exactly what `scopemon [COMMAND]... --help`
/// prints (clap's own help subcommand has no `--help` of its own).
fn help(path: &[String]) -> ExitCode {
    let argv = std::iter::once("scopemon")
        .chain(path.iter().map(String::as_str))
        .chain(std::iter::once("--help"));
    match Cli::command().try_get_matches_from(argv) {
        Err(e) => usage_error(&e),
        Ok(_) => ExitCode::SUCCESS,
    }
}

/// Prints the error as one line and picks the exit code.
fn report(err: &anyhow::Error, serving: bool) -> ExitCode {
    let lib = err.downcast_ref::<Error>();
    if let Some(Error::StoreLocked { path }) = lib {
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
    eprintln!("error: {}", one_line(err));
    ExitCode::from(match lib {
        Some(e) if e.is_corruption() => CORRUPTED,
        Some(e) if serving => serve_exit_code(e),
        _ => 1,
    })
}

/// The exit code of a `serve` failure (see [`SERVE_EXIT_CODES`]).
fn serve_exit_code(e: &Error) -> u8 {
    match e {
        Error::StoreLocked { .. } => 2,
        Error::Config(_) => 3,
        Error::Listen { .. } => 4,
        Error::DataDir { .. } => 5,
        e if e.is_corruption() => CORRUPTED,
        Error::SchemaTooNew { .. }
        | Error::SchemaTooOld { .. }
        | Error::NotPersisted { .. }
        | Error::StoreUnavailable { .. }
        | Error::Storage(_) => 6,
        Error::Internal(_) => 7,
        _ => 1,
    }
}

/// The error and its causes on one line, each said once: a library error
/// that already prints its source is not followed by it again.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Default config file, used when present and no --config is given.
pub const DEFAULT_CONFIG: &str = "config/scopemon.toml";

/// The configuration: `path`, else `config/scopemon.toml` when it exists,
/// else built-in defaults. A bad file is one [`Error::Config`] line naming
/// it (and the line and column of a TOML error).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let path = match path {
        Some(p) => p,
        None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
        None => return Ok(Config::default()),
    };
    Ok(read_config(path)?)
}

fn read_config(path: &Path) -> scopemon::Result<Config> {
    let bad = |detail: String| Error::Config(format!("{}: {detail}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let config: Config = toml::from_str(&text).map_err(|e| bad(toml_error(&text, &e)))?;
    config.validate().map_err(|e| match e {
        Error::Config(detail) => bad(detail),
        other => bad(other.to_string()),
    })?;
    Ok(config)
}

/// A TOML error as `line L, column C: message` (toml's own text spans
/// several lines with a snippet of the file).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span().and_then(|s| text.get(..s.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The store's data directory from `--data-dir` over the configuration's.
pub fn with_data_dir(mut config: Config, data_dir: PathBuf) -> Config {
    config.storage.data_dir = data_dir;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_is_described() {
        // help_expected: clap's debug assertions fail on an undocumented arg.
        Cli::command().debug_assert();
    }

    #[test]
    fn toml_errors_name_line_and_column() {
        let text = "[storage]\nflush_interval = \n";
        let e = toml::from_str::<Config>(text).unwrap_err();
        let s = toml_error(text, &e);
        assert!(s.starts_with("line 2, column "), "{s}");
        assert!(!s.contains('\n'), "{s}");
    }
}
