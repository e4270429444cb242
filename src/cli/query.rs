//! `scopemon query` and `scopemon summary` against a stopped store
//! (opened by [`scopemon::offline::open`]).

use std::path::PathBuf;

use scopemon::{Config, Kind, Monitor, Point, QuerySpec, Resolution, Window};
use scopemon::{Tags, parse_query_time};

use super::Format;

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
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
    /// minute, hour, day or range.
    #[arg(long, default_value = "minute")]
    window: Window,
    /// Start: RFC 3339, Unix seconds, now or now-<duration> (default: one
    /// window's span before --to).
    #[arg(long)]
    from: Option<String>,
    /// End, in the same forms as --from (default: now).
    #[arg(long)]
    to: Option<String>,
    /// k=v; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    /// Data directory holding scopemon.redb.
    #[arg(long)]
    data_dir: PathBuf,
    /// The namespace to summarise.
    #[arg(long)]
    namespace: String,
    /// How far back: the last minute, hour or day.
    #[arg(long, value_enum, default_value = "minute")]
    window: SummaryWindow,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// The windows a summary covers (clap lists them in --help).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SummaryWindow {
    /// The last minute.
    Minute,
    /// The last hour.
    Hour,
    /// The last day.
    Day,
}

impl From<SummaryWindow> for Resolution {
    fn from(w: SummaryWindow) -> Resolution {
        match w {
            SummaryWindow::Minute => Resolution::Minute,
            SummaryWindow::Hour => Resolution::Hour,
            SummaryWindow::Day => Resolution::Day,
        }
    }
}

fn open(data_dir: PathBuf) -> anyhow::Result<Monitor> {
    Ok(scopemon::offline::open(Config::with_data_dir(data_dir))?)
}

const HEADER: &str =
    "count        avg        p50        p90        p95        p99        max  errors     rate";

fn row(p: &Point) -> String {
    format!(
        "{:>5} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7} {:>8.3}",
        p.count, p.avg, p.p50, p.p90, p.p95, p.p99, p.max, p.errors, p.rate
    )
}

pub fn run_query(a: QueryArgs) -> anyhow::Result<()> {
    let monitor = open(a.data_dir)?;
    let now = monitor.now_ms();
    let to =
        a.to.as_deref()
            .map(|t| parse_query_time(t, now))
            .transpose()?
            .unwrap_or(now);
    let from = match a.from.as_deref() {
        Some(f) => parse_query_time(f, now)?,
        None => to - a.window.default_span_ms(),
    };
    let mut pairs = Vec::new();
    for t in &a.tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--tag {t:?} must be key=value"))?;
        pairs.push((k, v));
    }
    let result = monitor.query(&QuerySpec {
        namespace: a.namespace,
        metric: a.metric,
        kind: a.kind,
        window: a.window,
        from,
        to,
        tags: Tags::new(&pairs)?,
    })?;
    monitor.close()?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Format::Table => {
            // 21 fits a whole-second RFC 3339 time; a range's starts carry
            // milliseconds and widen the column.
            let w = result
                .points
                .iter()
                .map(|p| p.start.len() + 1)
                .fold(21, usize::max);
            println!("{:<w$} {HEADER}", "start");
            for p in &result.points {
                println!("{:<w$} {}", p.start, row(p));
            }
        }
    }
    Ok(())
}

pub fn run_summary(a: SummaryArgs) -> anyhow::Result<()> {
    let monitor = open(a.data_dir)?;
    let s = monitor.summary(&a.namespace, a.window.into(), None, None)?;
    monitor.close()?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Format::Table => {
            println!("{} {} .. {}", s.namespace, s.from, s.to);
            println!("{:<40} {:<14} {HEADER}", "metric{tags}", "kind");
            for m in &s.metrics {
                let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let name = if tags.is_empty() {
                    m.metric.clone()
                } else {
                    format!("{}{{{}}}", m.metric, tags.join(","))
                };
                println!("{name:<40} {:<14} {}", m.kind.as_str(), row(&m.point));
            }
        }
    }
    Ok(())
}
