//! `scopemon check`: redb's own integrity check, then every record decoded
//! ([`scopemon::offline::check`]).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} checking records {bar:40} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let r = scopemon::offline::check(&a.data_dir, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    println!(
        "{}: schema v{}, redb integrity {}, {} series, {} deltas, {} minute / {} hour / {} day buckets, {} bad records",
        r.path.display(),
        r.schema_version,
        if r.intact { "ok" } else { "repaired" },
        r.series,
        r.deltas,
        r.minute,
        r.hour,
        r.day,
        r.bad.len()
    );
    for b in r.bad.iter().take(20) {
        println!("  {b}");
    }
    if !r.bad.is_empty() {
        anyhow::bail!("{} records failed to decode", r.bad.len());
    }
    Ok(())
}
