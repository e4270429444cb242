//! The `scopemon` command: parses arguments and dispatches to one file per
//! subcommand under `cli/`. All logic lives in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args);
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => cli::report(&err),
    }
}
