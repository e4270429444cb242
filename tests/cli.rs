//! The `scopemon` command's own surface, running the real binary: help
//! that describes every argument, `help --help`, and the offline tables
//! (aligned columns, the JSON's names).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use scopemon::{Config, Monitor};

use common::BIN;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run scopemon")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every subcommand, as typed after `scopemon`.
const SUBCOMMANDS: &[&[&str]] = &[
    &["serve"],
    &["query"],
    &["summary"],
    &["baseline"],
    &["migrate"],
    &["check"],
    &["retention", "show"],
    &["retention", "set"],
    &["compact"],
    &["backup"],
    &["restore"],
    &["help"],
];

#[test]
fn every_argument_has_a_description() {
    for sub in SUBCOMMANDS {
        let mut args = sub.to_vec();
        args.push("-h");
        let help = stdout(&run(&args));
        // Short help: one line per argument, `  --name <V>  description`.
        let undescribed: Vec<&str> = help
            .lines()
            .filter(|l| l.starts_with("  "))
            .filter(|l| {
                let t = l.trim();
                t.starts_with('-') || t.starts_with('[') || t.starts_with('<')
            })
            .filter(|l| {
                l.trim()
                    .split_once("  ")
                    .is_none_or(|(_, d)| d.trim().is_empty())
            })
            .collect();
        assert!(undescribed.is_empty(), "{sub:?}: {undescribed:?}\n{help}");
    }
}

#[test]
fn summary_window_lists_its_values() {
    let help = stdout(&run(&["summary", "-h"]));
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--window"))
        .unwrap_or_else(|| panic!("no --window in\n{help}"));
    assert!(
        line.contains("[possible values: minute, hour, day]"),
        "{line}"
    );
}

#[test]
fn help_has_help_and_describes_nested_commands() {
    let out = stdout(&run(&["help", "--help"]));
    assert!(out.contains("Usage: scopemon help [COMMAND]..."), "{out}");
    let out = stdout(&run(&["help", "retention", "set"]));
    assert!(
        out.contains("Usage: scopemon retention set") && out.contains("--minute"),
        "{out}"
    );
    assert_eq!(stdout(&run(&["help"])), stdout(&run(&["--help"])));
    let out = run(&["help", "nope"]);
    assert_eq!(out.status.code(), Some(64));
}

/// A stopped store with one latency sample recorded now.
fn store_with_a_sample(dir: &Path) {
    let m = Monitor::builder(Config::with_data_dir(dir))
        .background(false)
        .open()
        .expect("open");
    m.record_latency("p", "m", Duration::from_micros(1500), &[])
        .expect("record");
    m.close().expect("close");
}

#[test]
fn query_table_columns_line_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_a_sample(dir.path());
    let data = dir.path().to_str().expect("utf-8");
    for window in ["range", "minute"] {
        let out = stdout(&run(&[
            "query",
            "--data-dir",
            data,
            "--namespace",
            "p",
            "--metric",
            "m",
            "--window",
            window,
        ]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{window}: {out}");
        // Right-aligned columns of equal widths: the header and the row end
        // each column at the same place, so the lines are equally long and
        // `count` ends where the count does.
        assert_eq!(lines[0].len(), lines[1].len(), "{window}:\n{out}");
        let count_end = lines[0].find("count").expect("count") + "count".len();
        assert!(lines[1][..count_end].ends_with(" 1"), "{window}:\n{out}");
    }
}

#[test]
fn baseline_table_prints_the_json_status_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_a_sample(dir.path());
    let data = dir.path().to_str().expect("utf-8");
    let args = [
        "baseline",
        "--data-dir",
        data,
        "--namespace",
        "p",
        "--metric",
        "m",
    ];
    let table = stdout(&run(&args));
    assert!(table.starts_with("status insufficient_data, "), "{table}");
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&run(&json_args))).expect("json");
    assert_eq!(json["status"], "insufficient_data");
}
