//! `scopemon baseline`: a baseline computed from a stopped store
//! (opened by [`scopemon::offline::open`]).

use std::path::PathBuf;

use scopemon::{Band, Selection};
use scopemon::{Kind, Tags};

use super::{Format, load_config, with_data_dir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// Namespace of the metric.
    #[arg(long)]
    namespace: String,
    /// Metric name.
    #[arg(long)]
    metric: String,
    /// latency, throughput, error_rate or resource_usage.
    #[arg(long, default_value = "latency")]
    kind: Kind,
    /// k=v; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Configuration file (baseline settings; default config/scopemon.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let config = with_data_dir(load_config(a.config.as_deref())?, a.data_dir);
    let monitor = scopemon::offline::open(config)?;
    let mut pairs = Vec::new();
    for t in &a.tags {
        pairs.push(
            t.split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--tag {t:?} must be key=value"))?,
        );
    }
    let b = monitor.baseline(&Selection {
        namespace: a.namespace,
        metric: a.metric,
        kind: a.kind,
        tags: Tags::new(&pairs)?,
    })?;
    monitor.close()?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&b)?),
        Format::Table => {
            println!(
                "status {}, {} hourly buckets over {}, seasonal {}{}, computed {}",
                // the serde name, as in the JSON (insufficient_data)
                serde_json::to_value(b.status)?.as_str().unwrap_or_default(),
                b.buckets,
                b.window,
                b.seasonal,
                b.hour_of_day
                    .map(|h| format!(" (hour {h:02})"))
                    .unwrap_or_default(),
                b.computed_at
            );
            println!(
                "{:<11} {:>12} {:>12} {:>12}",
                "aggregation", "lower", "baseline", "upper"
            );
            let rows: [(&str, Option<Band>); 6] = [
                ("p50", b.p50),
                ("p95", b.p95),
                ("p99", b.p99),
                ("avg", b.avg),
                ("rate", b.rate),
                ("error_rate", b.error_rate),
            ];
            for (name, band) in rows {
                if let Some(x) = band {
                    println!(
                        "{name:<11} {:>12.3} {:>12.3} {:>12.3}",
                        x.lower, x.baseline, x.upper
                    );
                }
            }
        }
    }
    Ok(())
}
