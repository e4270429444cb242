//! Allocator variants for the scopemon server, swapped in without
//! rebuilding it: `LD_PRELOAD` of Debian's allocator libraries, and for
//! glibc with `malloc_trim(0)` a small preload library built here that
//! trims every `TRIM_SECS` (default 5 s, the default flush interval — a
//! stand-in for "trim after a large flush", which needs a hook in the
//! flush path).
//!
//! - `binary`: whatever the scopemon binary was built with (glibc malloc
//!   before the allocator was wired in, the wired one after).
//! - `jemalloc`: `libjemalloc2` (5.3) with `MALLOC_CONF` from
//!   `JEMALLOC_CONF` (default [`JEMALLOC_CONF`]).
//! - `mimalloc`: `libmimalloc2.0` (2.0.9), its defaults.
//! - `trim`: glibc, plus `malloc_trim(0)` every `TRIM_SECS`; each trim
//!   that takes over 1 ms is logged to the server's stderr as
//!   `malloc_trim_ms=<ms>`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Background purging on; dirty pages go back to the OS after about a
/// second, no muzzy stage.
pub const JEMALLOC_CONF: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

const JEMALLOC_SO: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const MIMALLOC_SO: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";

const TRIM_C: &str = r#"
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static void *trim_loop(void *arg) {
    (void)arg;
    const char *e = getenv("TRIM_SECS");
    unsigned secs = e ? (unsigned)atoi(e) : 5;
    if (secs == 0) secs = 5;
    for (;;) {
        sleep(secs);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        malloc_trim(0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        if (ms > 1.0) fprintf(stderr, "malloc_trim_ms=%.1f\n", ms);
    }
    return NULL;
}
__attribute__((constructor)) static void trim_start(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, trim_loop, NULL) == 0) pthread_detach(t);
}
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alloc {
    Binary,
    Jemalloc,
    Mimalloc,
    Trim,
}

impl Alloc {
    pub fn parse(s: &str) -> Alloc {
        match s.trim() {
            "binary" | "glibc" | "" => Alloc::Binary,
            "jemalloc" => Alloc::Jemalloc,
            "mimalloc" => Alloc::Mimalloc,
            "trim" | "glibc-trim" => Alloc::Trim,
            other => panic!("allocator {other:?}: expected binary, jemalloc, mimalloc or trim"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alloc::Binary => "binary",
            Alloc::Jemalloc => "jemalloc",
            Alloc::Mimalloc => "mimalloc",
            Alloc::Trim => "trim",
        }
    }

    /// Environment for the server process; `dir` holds the trim library.
    pub fn env(self, dir: &Path) -> Vec<(String, String)> {
        let preload = |p: &str| {
            assert!(
                Path::new(p).is_file(),
                "{p} is missing: apt-get install -y libjemalloc2 libmimalloc2.0"
            );
            ("LD_PRELOAD".to_owned(), p.to_owned())
        };
        match self {
            Alloc::Binary => vec![],
            Alloc::Jemalloc => vec![
                preload(JEMALLOC_SO),
                (
                    "MALLOC_CONF".into(),
                    std::env::var("JEMALLOC_CONF").unwrap_or_else(|_| JEMALLOC_CONF.into()),
                ),
            ],
            Alloc::Mimalloc => vec![preload(MIMALLOC_SO)],
            Alloc::Trim => {
                let so = build_trim_lib(dir);
                vec![("LD_PRELOAD".into(), so.display().to_string())]
            }
        }
    }
}

/// Compiles the trim preload library into `dir` (needs `cc`).
fn build_trim_lib(dir: &Path) -> PathBuf {
    let src = dir.join("trim.c");
    let so = dir.join("libtrim.so");
    if so.is_file() {
        return so;
    }
    std::fs::write(&src, TRIM_C).expect("write trim.c");
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-pthread", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed to build the trim library");
    so
}

/// The longest and the number of logged trims in a server log.
pub fn trim_pauses(log: &Path) -> Option<(f64, usize)> {
    let text = std::fs::read_to_string(log).ok()?;
    let ms: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("malloc_trim_ms="))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    (!ms.is_empty()).then(|| (ms.iter().cloned().fold(0.0, f64::max), ms.len()))
}
