//! `scopemon migrate`: show and apply pending schema migrations.

use std::path::PathBuf;

use scopemon::internals::migrations::{self, CURRENT};
use scopemon::internals::{OpenOptions, Store};

use super::require_store;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    /// Only say what would be applied.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    require_store(&a.data_dir)?;
    let found = Store::inspect_version(&a.data_dir)?;
    if found > CURRENT {
        return Err(scopemon::Error::SchemaTooNew {
            path: a.data_dir.join(scopemon::DB_FILE),
            found,
            supported: CURRENT,
        }
        .into());
    }
    let pending: Vec<_> = migrations::pending(found).collect();
    if pending.is_empty() {
        println!("schema version {found} is current; nothing to do");
        return Ok(());
    }
    for m in &pending {
        println!(
            "{} v{:04} {}",
            if a.dry_run { "would apply" } else { "applying" },
            m.version,
            m.name
        );
    }
    if !a.dry_run {
        Store::open(
            &a.data_dir,
            OpenOptions {
                create: false,
                migrate: true,
            },
        )?;
        println!("schema version {found} -> {CURRENT}");
    }
    Ok(())
}
