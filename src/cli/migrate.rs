//! `scopemon migrate`: show and apply pending schema migrations
//! ([`scopemon::offline::migration_plan`], [`scopemon::offline::migrate`]).

use std::path::PathBuf;

use scopemon::offline;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// Only say what would be applied.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let plan = offline::migration_plan(&a.data_dir)?;
    if plan.pending.is_empty() {
        println!("schema version {} is current; nothing to do", plan.found);
        return Ok(());
    }
    for m in &plan.pending {
        println!(
            "{} v{:04} {}",
            if a.dry_run { "would apply" } else { "applying" },
            m.version,
            m.name
        );
    }
    if !a.dry_run {
        let now = offline::migrate(&a.data_dir)?;
        println!("schema version {} -> {now}", plan.found);
    }
    Ok(())
}
