//! Child processes of the ingest load (the servers, `perf`) and what the
//! bench reads about them from /proc and the file system.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// User + system CPU time of a process, from /proc.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// CPU time of this (load generator) process.
pub fn self_cpu() -> Duration {
    process_cpu(std::process::id()).unwrap_or_default()
}

/// A child killed (SIGKILL) if still running when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub name: &'static str,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits; returns how long the exit took.
    pub fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let status = child.wait().expect("wait for the server");
        (start.elapsed(), status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            eprintln!("killing {} (pid {})", self.name, c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Records `perf record -g` of a pid until stopped.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn start(call_graph: Option<&str>, pid: u32, name: &str) -> Perf {
        let Some(call_graph) = call_graph else {
            return Perf(None);
        };
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("ingest_load.{name}.perf.data"));
        match Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", call_graph, "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => {
                println!("  perf record -> {}", out.display());
                std::thread::sleep(Duration::from_millis(300));
                Perf(Some(c))
            }
            Err(e) => {
                println!("  LOAD_PERF is set but perf could not start: {e}");
                Perf(None)
            }
        }
    }

    pub fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: SIGINT to our own child; perf writes its file and exits.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Reads the first line `child` prints on stdout (and every later one) on
/// a thread of its own.
pub fn spawn_stdout_line(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.trim_end().to_owned());
            line.clear();
        }
    });
    rx
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
