//! `scopemon compact`: apply retention to a stopped store, then reclaim file
//! space with redb's `compact()`.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use scopemon::Clock;
use scopemon::CompactOptions;
use scopemon::internals::Codec;
use scopemon::internals::{self as retention, RetentionPolicy};
use scopemon::internals::{OpenOptions, Store};

use super::{Format, load_config, require_store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Configuration file with the retention rules (default:
    /// config/scopemon.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = require_store(&a.data_dir)?;
    let config = load_config(a.config.as_deref())?;
    let before = std::fs::metadata(&path)?.len();
    let now = scopemon::SystemClock.now_ms();
    let report = if a.dry_run {
        // Read-only: a dry run leaves the file byte-for-byte unchanged.
        let db = scopemon::internals::open_read_only(&a.data_dir)?;
        let policy = RetentionPolicy::load(&config, &db)?;
        retention::count_expired(&db, &policy, now)?
    } else {
        let mut store = Store::open(
            &a.data_dir,
            OpenOptions {
                create: false,
                migrate: false,
            },
        )?;
        let policy = RetentionPolicy::load(&config, store.db())?;
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{spinner} applying retention {bar:40} {pos}/{len} series×resolutions ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let report = retention::compact(
            &store,
            &policy,
            &mut Codec::new(),
            now,
            CompactOptions::default(),
            |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )?;
        bar.finish_and_clear();
        let spinner =
            ProgressBar::new_spinner().with_message("reclaiming file space (redb compact)");
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        while store.db_mut().compact()? {}
        spinner.finish_and_clear();
        report
    };
    let after = std::fs::metadata(&path)?.len();
    match a.format {
        Format::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["file_bytes_before"] = serde_json::json!(before);
            v["file_bytes_after"] = serde_json::json!(after);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            println!(
                "{:<32} {:<8} {:>12}",
                "namespace",
                "window",
                if a.dry_run { "would remove" } else { "removed" }
            );
            for (ns, per) in &report.removed {
                for (res, n) in per {
                    println!("{ns:<32} {res:<8} {n:>12}");
                }
            }
            println!(
                "{} buckets {} in {:.0} ms ({} transactions, longest {:.1} ms); file {} -> {}",
                report.total_removed,
                if a.dry_run {
                    "would be removed"
                } else {
                    "removed"
                },
                report.duration_ms,
                report.transactions,
                report.longest_txn_ms,
                bytesize::ByteSize::b(before),
                bytesize::ByteSize::b(after)
            );
        }
    }
    Ok(())
}
