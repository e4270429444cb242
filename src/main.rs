//! The `scopemon` command: parses arguments and dispatches to one file per
//! subcommand under `cli/`. All logic lives in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage_error(&e),
    };
    cli::init_tracing(&args);
    cli::run(args)
}
