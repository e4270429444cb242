//! A full disk for real: `scopemon serve` with its data directory on a
//! small tmpfs this test mounts (the CI machines run as root; a refused
//! mount fails the test rather than skipping it). Ingest until the disk
//! fills, then free space (a ballast file is deleted) and check that
//! scopemon recovered by itself, and after a clean restart that every
//! acknowledged sample is stored exactly once.
//! (tests/full_disk.rs holds the same promises deterministically.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The tmpfs, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn post(base: &str, body: &Value) -> (u16, Value) {
    let mut r = agent()
        .post(&format!("{base}/v1/ingest"))
        .send_json(body)
        .expect("ingest request");
    let v = r.body_mut().read_json().unwrap_or(Value::Null);
    (r.status().as_u16(), v)
}

fn get(base: &str, path: &str) -> (u16, String) {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .call()
        .expect("request");
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), text)
}

/// A batch of 500 samples over 50 series, each sample in a (series,
/// minute) of the last 40 hours that no earlier batch used, so every sample
/// is a new record and the store keeps growing.
fn batch(n: usize, now_ms: i64) -> Value {
    let samples: Vec<Value> = (0..500)
        .map(|i| {
            let slot = (n * 500 + i) as i64;
            let minute = 5 + (slot / 50) % 2_400;
            json!({"namespace": "prod", "metric": "fill", "value": 1000 + i,
                   "tags": {"host": format!("h{}", slot % 50)},
                   "timestamp": now_ms - minute * 60_000})
        })
        .collect();
    json!({ "samples": samples })
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms")
}

/// Every `fill` sample stored, all series merged.
fn stored(base: &str) -> u64 {
    let (status, text) = get(
        base,
        "/v1/query?namespace=prod&metric=fill&window=range&from=now-47h",
    );
    assert_eq!(status, 200, "queries keep answering: {text}");
    let v: Value = serde_json::from_str(&text).expect("query JSON");
    v["points"][0]["count"].as_u64().unwrap_or(0)
}

/// Polls `probe` every 100 ms until it holds, for at most `limit`.
fn wait_for(limit: Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let start = Instant::now();
    while !probe() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes free on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    // SAFETY: statvfs(3) reads the NUL-terminated path and fills the struct
    // we own; the zeroed struct is a valid value of this plain C type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(path.as_ptr(), &mut st) },
        0,
        "statvfs"
    );
    #[allow(clippy::unnecessary_cast)]
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    free
}

/// SIGTERM, then the exit status.
fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the child's pid with SIGTERM has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().expect("wait")
}

#[test]
fn a_real_full_disk_refuses_ingest_then_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, "8m");
    std::fs::write(
        dir.path().join("scopemon.toml"),
        "[storage]\nflush_interval = \"300ms\"\nmin_free_space = \"0B\"\nmax_hot_bytes = \"16MiB\"\n\
         [health]\ncheck_interval = \"200ms\"\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let (child, base) = common::spawn_serve(dir.path(), Stdio::from(log));
    // Ballast that leaves 512 KiB free; deleting it is "space comes back".
    let ballast = data.join("ballast");
    let room = free_bytes(&data).saturating_sub(512 << 10);
    std::fs::write(&ballast, vec![1u8; usize::try_from(room).expect("size")]).expect("ballast");

    // Ingest until the disk is full.
    let t0 = now_ms();
    let mut acked = 0u64;
    let mut n = 0;
    let start = Instant::now();
    let refusal = loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
        let (status, v) = post(&base, &batch(n, t0));
        n += 1;
        match status {
            200 => acked += v["accepted"].as_u64().expect("accepted"),
            507 => break v,
            // Hot data at its cap while a flush catches up: resend later.
            429 => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("unexpected {other}: {v}"),
        }
    };
    assert_eq!(refusal["error"], "insufficient_storage", "{refusal}");
    assert_eq!(stored(&base), acked, "every acknowledged sample, once");
    wait_for(Duration::from_secs(20), "readyz 503 on a full disk", || {
        get(&base, "/readyz").0 == 503
    });
    wait_for(Duration::from_secs(20), "health/quick NOT_OK", || {
        get(&base, "/health/quick").1.contains("NOT_OK")
    });
    let (status, _) = post(&base, &batch(n, t0));
    assert_eq!(status, 507, "still refused while full");
    assert_eq!(stored(&base), acked, "a refused body keeps nothing");

    // Space comes back: ingest resumes by itself.
    std::fs::remove_file(&ballast).expect("free space");
    wait_for(Duration::from_secs(60), "ingest resumes", || {
        let (status, v) = post(&base, &batch(n, t0));
        n += 1;
        if status == 200 {
            acked += v["accepted"].as_u64().unwrap_or(0);
        }
        status == 200
    });
    wait_for(Duration::from_secs(20), "readyz 200 again", || {
        get(&base, "/readyz").0 == 200
    });
    assert_eq!(stored(&base), acked);
    let status = stop(child);
    assert!(status.success(), "clean shutdown: {status:?}");

    // A restart finds every acknowledged sample, once.
    let log = std::fs::File::create(dir.path().join("serve2.log")).unwrap();
    let (child, base) = common::spawn_serve(dir.path(), Stdio::from(log));
    assert_eq!(stored(&base), acked, "after restart");
    let status = stop(child);
    assert!(status.success(), "clean shutdown: {status:?}");
}
