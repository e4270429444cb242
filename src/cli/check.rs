//! `scopemon check`: redb's own integrity check, then every record decoded.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use scopemon::internals::tables::{DAY, DELTAS, HOUR, MINUTE, SERIES};
use scopemon::internals::{Codec, decode_series};
use scopemon::internals::{OpenOptions, Store};

use super::require_store;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    require_store(&a.data_dir)?;
    let mut store = Store::open(
        &a.data_dir,
        OpenOptions {
            create: false,
            migrate: false,
        },
    )?;
    let intact = store.db_mut().check_integrity()?;
    let txn = store.db().begin_read()?;
    let series = txn.open_table(SERIES)?;
    let deltas = txn.open_table(DELTAS)?;
    let buckets = [
        ("minute", txn.open_table(MINUTE)?),
        ("hour", txn.open_table(HOUR)?),
        ("day", txn.open_table(DAY)?),
    ];
    let total = series.len()?
        + deltas.len()?
        + buckets
            .iter()
            .map(|(_, t)| t.len().unwrap_or(0))
            .sum::<u64>();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} checking records {bar:40} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut bad = Vec::new();
    for entry in series.iter()? {
        let (k, v) = entry?;
        if let Err(e) = decode_series(v.value()) {
            bad.push(format!("series {}: {e}", k.value()));
        }
        bar.inc(1);
    }
    let mut codec = Codec::new();
    for entry in deltas.iter()? {
        let (k, v) = entry?;
        if let Err(e) = codec.decode(v.value()) {
            bad.push(format!("delta {:?}: {e}", k.value()));
        }
        bar.inc(1);
    }
    for (name, table) in &buckets {
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let Err(e) = codec.decode(v.value()) {
                bad.push(format!("{name} bucket {:?}: {e}", k.value()));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!(
        "{}: schema v{}, redb integrity {}, {} series, {} deltas, {} minute / {} hour / {} day buckets, {} bad records",
        store.path().display(),
        store.schema_version(),
        if intact { "ok" } else { "repaired" },
        series.len()?,
        deltas.len()?,
        buckets[0].1.len()?,
        buckets[1].1.len()?,
        buckets[2].1.len()?,
        bad.len()
    );
    for b in bad.iter().take(20) {
        println!("  {b}");
    }
    if !bad.is_empty() {
        anyhow::bail!("{} records failed to decode", bad.len());
    }
    Ok(())
}
