//! `scopemon check [--repair]`: redb's own verification, then every record
//! decoded ([`scopemon::offline::check`], which never writes the file);
//! with `--repair`, [`scopemon::offline::repair`], printing what it
//! removed. A store still damaged at the end exits 8 ([`super::CORRUPTED`]).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use scopemon::offline::{CheckReport, RepairMethod, RepairReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// Repair a damaged store: redb's repair, then drop the records that
    /// do not decode (or copy what can be read into a new file, keeping
    /// the damaged one); prints what was removed.
    #[arg(long)]
    repair: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} checking records {bar:40} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    if a.repair {
        let r = scopemon::offline::repair(&a.data_dir, progress)?;
        bar.finish_and_clear();
        print_repair(&r);
        return verdict(&r.after, &a.data_dir);
    }
    let r = scopemon::offline::check(&a.data_dir, progress)?;
    bar.finish_and_clear();
    print_check(&r);
    verdict(&r, &a.data_dir)
}

fn print_check(r: &CheckReport) {
    println!(
        "{}: schema v{}, redb integrity {}, {} series, {} deltas, {} minute / {} hour / {} day buckets, {} bad records",
        r.path.display(),
        r.schema_version,
        match &r.integrity {
            None => "ok".to_owned(),
            Some(why) => format!("FAILED ({why})"),
        },
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
    if r.bad.len() > 20 {
        println!("  ... and {} more", r.bad.len() - 20);
    }
}

fn print_repair(r: &RepairReport) {
    print_check(&r.before);
    match r.method {
        RepairMethod::NothingToDo => println!("nothing to repair"),
        RepairMethod::InPlace if !r.before.intact => {
            println!("repaired in place: redb rolled back to its last intact commit")
        }
        RepairMethod::InPlace => println!("repaired in place"),
        RepairMethod::Copied => println!(
            "repaired by copying every readable record into a new file; the damaged file is kept at {}",
            r.damaged_copy
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        ),
    }
    for (table, n) in &r.removed {
        println!("  removed {n} {table} records");
    }
    for (table, n) in &r.unreadable {
        println!("  {table}: {n} damaged stretches could not be read; their records are lost");
    }
    if r.method != RepairMethod::NothingToDo {
        print!("after: ");
        print_check(&r.after);
    }
}

/// Ok for a clean store; otherwise the one-line error (exit 8).
fn verdict(r: &CheckReport, data_dir: &Path) -> anyhow::Result<()> {
    if r.is_clean() {
        return Ok(());
    }
    let problems = r.bad.len() + usize::from(!r.intact);
    Err(scopemon::Error::StoreCorrupted {
        path: data_dir.join(scopemon::DB_FILE),
        what: "checking the store",
        detail: format!("{problems} problems, listed above"),
    }
    .into())
}
