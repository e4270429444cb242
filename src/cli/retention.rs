//! `scopemon retention show|set` on a stopped store
//! ([`scopemon::offline::retention_show`], [`scopemon::offline::retention_set`]).

use std::path::PathBuf;
use std::time::Duration;

use scopemon::RetentionRule;
use scopemon::offline;

use super::{Format, load_config, with_data_dir};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Show the retention in force and where it comes from.
    Show {
        /// Data directory holding scopemon.redb.
        #[arg(long)]
        data_dir: PathBuf,
        /// One namespace (default: every namespace with data or a rule).
        #[arg(long)]
        namespace: Option<String>,
        /// Configuration file (default: config/scopemon.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Store an override for one namespace (any subset of the three).
    Set {
        /// Data directory holding scopemon.redb.
        #[arg(long)]
        data_dir: PathBuf,
        /// The namespace to override.
        #[arg(long)]
        namespace: String,
        /// How long minute buckets are kept (e.g. 6h, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        minute: Option<Duration>,
        /// How long hour buckets are kept (e.g. 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        hour: Option<Duration>,
        /// How long day buckets are kept (e.g. 400d).
        #[arg(long, value_parser = humantime::parse_duration)]
        day: Option<Duration>,
        /// Configuration file (default: config/scopemon.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a {
        Args::Show {
            data_dir,
            namespace,
            config,
            format,
        } => {
            let config = with_data_dir(load_config(config.as_deref())?, data_dir);
            let rows: Vec<serde_json::Value> =
                offline::retention_show(&config, namespace.as_deref())?
                    .into_iter()
                    .map(|(ns, r)| {
                        let mut v = serde_json::json!(r.describe());
                        v["namespace"] = serde_json::json!(ns);
                        v["source"] = serde_json::json!(r.source);
                        v
                    })
                    .collect();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Table => {
                    println!(
                        "{:<32} {:>8} {:>8} {:>8}  source",
                        "namespace", "minute", "hour", "day"
                    );
                    for r in &rows {
                        println!(
                            "{:<32} {:>8} {:>8} {:>8}  {}",
                            r["namespace"].as_str().unwrap_or(""),
                            r["minute"].as_str().unwrap_or(""),
                            r["hour"].as_str().unwrap_or(""),
                            r["day"].as_str().unwrap_or(""),
                            r["source"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        Args::Set {
            data_dir,
            namespace,
            minute,
            hour,
            day,
            config,
        } => {
            let config = with_data_dir(load_config(config.as_deref())?, data_dir);
            let rule = RetentionRule { minute, hour, day };
            let d = offline::retention_set(&config, &namespace, &rule)?.describe();
            println!(
                "{namespace}: minute {} hour {} day {} (override stored)",
                d["minute"], d["hour"], d["day"]
            );
            Ok(())
        }
    }
}
