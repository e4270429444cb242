//! `scopemon retention show|set` on a stopped store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scopemon::RetentionRule;
use scopemon::internals::RetentionPolicy;
use scopemon::internals::{OpenOptions, Store};

use super::{Format, load_config, require_store};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Show the retention in force and where it comes from.
    Show {
        #[arg(long)]
        data_dir: PathBuf,
        /// One namespace (default: every namespace with data or a rule).
        #[arg(long)]
        namespace: Option<String>,
        /// Configuration file (default: config/scopemon.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Store an override for one namespace (any subset of the three).
    Set {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        minute: Option<Duration>,
        #[arg(long, value_parser = humantime::parse_duration)]
        hour: Option<Duration>,
        #[arg(long, value_parser = humantime::parse_duration)]
        day: Option<Duration>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The configuration, the stopped store and its retention policy.
fn open(
    data_dir: &Path,
    config: Option<&Path>,
) -> anyhow::Result<(scopemon::Config, Store, RetentionPolicy)> {
    require_store(data_dir)?;
    let config = load_config(config)?;
    let store = Store::open(
        data_dir,
        OpenOptions {
            create: false,
            migrate: false,
        },
    )?;
    let policy = RetentionPolicy::load(&config, store.db())?;
    Ok((config, store, policy))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a {
        Args::Show {
            data_dir,
            namespace,
            config,
            format,
        } => {
            let (config, store, policy) = open(&data_dir, config.as_deref())?;
            let names: Vec<String> = match namespace {
                Some(ns) => vec![ns],
                None => {
                    let mut v: Vec<String> = store
                        .load_series()?
                        .into_iter()
                        .map(|(_, r)| r.key.namespace)
                        .collect();
                    v.extend(policy.overridden());
                    v.extend(config.retention.namespaces.keys().cloned());
                    v.sort();
                    v.dedup();
                    v
                }
            };
            let rows: Vec<serde_json::Value> = names
                .iter()
                .map(|ns| {
                    let r = policy.of(ns);
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
            let (_, store, policy) = open(&data_dir, config.as_deref())?;
            let r =
                policy.set_override(&store, &namespace, &RetentionRule { minute, hour, day })?;
            let d = r.describe();
            println!(
                "{namespace}: minute {} hour {} day {} (override stored)",
                d["minute"], d["hour"], d["day"]
            );
            Ok(())
        }
    }
}
