//! `scopemon compact`: apply retention to a stopped store and fold sealed
//! hours' minute records into groups, then reclaim file space with redb's
//! `compact()` ([`scopemon::offline::compact`]).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use scopemon::Clock;
use scopemon::offline::{self, CompactStep};

use super::{Format, load_config, with_data_dir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Configuration file with the retention rules (default:
    /// config/scopemon.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Progress bars: one for the retention pass, a spinner for redb's compact.
struct Bars {
    retention: ProgressBar,
    reclaim: Option<ProgressBar>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            retention: ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{spinner} applying retention {bar:40} {pos}/{len} series×resolutions ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            reclaim: None,
        }
    }

    fn step(&mut self, step: CompactStep) {
        match step {
            CompactStep::Retention { done, total } => {
                self.retention.set_length(total);
                self.retention.set_position(done);
            }
            CompactStep::Reclaiming => {
                self.retention.finish_and_clear();
                let spinner =
                    ProgressBar::new_spinner().with_message("reclaiming file space (redb compact)");
                spinner.enable_steady_tick(std::time::Duration::from_millis(120));
                self.reclaim = Some(spinner);
            }
        }
    }

    fn finish(self) {
        self.retention.finish_and_clear();
        if let Some(s) = self.reclaim {
            s.finish_and_clear();
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let config = with_data_dir(load_config(a.config.as_deref())?, a.data_dir);
    let now = scopemon::SystemClock.now_ms();
    let mut bars = Bars::new();
    let done = offline::compact(&config, a.dry_run, now, |s| bars.step(s));
    bars.finish();
    let done = done?;
    let report = &done.report;
    match a.format {
        // Through a `Value`: its keys print sorted, as they always have.
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(&done)?)?
        ),
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
                bytesize::ByteSize::b(done.file_bytes_before),
                bytesize::ByteSize::b(done.file_bytes_after)
            );
        }
    }
    Ok(())
}
