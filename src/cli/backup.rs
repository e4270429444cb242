//! `scopemon backup` and `scopemon restore`: a consistent copy of a stopped
//! store, and putting one back ([`scopemon::offline::backup`],
//! [`scopemon::offline::restore`]). A running server is backed up with
//! `POST /v1/admin/backup` instead.

use std::path::PathBuf;

use scopemon::offline;

/// The end of `scopemon backup --help`.
pub const BACKUP_HELP: &str = "\
The copy is one read snapshot of every table, written under a temporary
name, fsynced and renamed into place. A running server is backed up with
POST /v1/admin/backup instead.

Exit codes: 0 written; 1 failed (FILE exists without --force, no store,
...); 2 the store is held by a running scopemon serve; 64 invalid command
line.";

/// The end of `scopemon restore --help`.
pub const RESTORE_HELP: &str = "\
FILE is checked first (a redb file with a known scopemon schema; redb's
integrity check on a private copy); the store is then migrated and
replaced by one rename. A refused FILE changes nothing.

Exit codes: 0 restored; 1 refused or failed (not a store, a store holding
data without --force, ...); 2 the store is held by a running scopemon
serve; 64 invalid command line.";

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// The backup file to write (refused when it exists, unless --force).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Replace FILE when it already exists.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore (checked before anything changes).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Data directory to restore into (created when missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Replace a store in the data directory that holds data.
    #[arg(long)]
    force: bool,
}

pub fn run_backup(a: BackupArgs) -> anyhow::Result<()> {
    let r = offline::backup(&a.data_dir, &a.to, a.force)?;
    println!(
        "backed up {} records to {} ({} bytes)",
        r.total_records(),
        r.path.display(),
        r.bytes
    );
    Ok(())
}

pub fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let r = offline::restore(&a.from, &a.data_dir, a.force)?;
    println!(
        "restored {} (schema v{}) into {} ({} bytes){}",
        a.from.display(),
        r.schema_version,
        r.path.display(),
        r.bytes,
        if r.replaced {
            ", replacing the store there"
        } else {
            ""
        }
    );
    Ok(())
}
