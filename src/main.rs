//! The `scopemon` command: parses arguments and dispatches to one file per
//! subcommand under `cli/`. All logic lives in the library.

mod cli;

/// The daemon's allocator: jemalloc with background purging.
///
/// Measured against glibc malloc (what Rust's `System` uses), mimalloc and
/// glibc with `malloc_trim(0)` every flush interval, on the issue 8 backfill
/// burst (`cargo bench --bench ingest_load -- backfill`, see
/// benches/INGEST_RESULTS.md): 20 s after the load glibc still held 96 % of
/// its peak, mimalloc 44 %, glibc + trim 13 % (with trims of 0.3–0.55 s
/// that hold the arena locks), jemalloc 11 %, with no hook in the flush
/// path; on the current-time load jemalloc also ingested more per CPU
/// second than glibc. Only the binary sets it: the library leaves the
/// allocator to its embedder.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (the crate's prefixed
/// `malloc_conf` symbol): background threads purge freed pages, dirty
/// pages go back to the OS after about a second, no muzzy stage.
/// `_RJEM_MALLOC_CONF` in the environment still overrides them.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
