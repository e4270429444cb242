//! Interop with a real load balancer: two `scopemon serve` backends behind
//! Debian's HAProxy checking `GET /health/quick` every 200 ms (fall 2,
//! rise 2). A critical TCP service check to a closed port registered on
//! backend A makes HAProxy mark A DOWN (seen through its stats socket) and
//! route every request to B; deleting the service brings A back UP.
//!
//! Needs `/usr/sbin/haproxy` (`.ci/run` installs it): without it the test
//! fails, it does not skip. Waiting is polling with bounded deadlines.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const HAPROXY: &str = "/usr/sbin/haproxy";

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// Starts `scopemon serve` on a free port with health checks every 200 ms;
/// returns it and its `127.0.0.1:port`.
fn backend(dir: &Path) -> (Proc, String) {
    std::fs::write(
        dir.join("scopemon.toml"),
        "[health]\ncheck_interval = \"200ms\"\ncheck_timeout = \"200ms\"\n",
    )
    .expect("config");
    let (child, base) = common::spawn_serve(dir, Stdio::null());
    let addr = base.trim_start_matches("http://").to_owned();
    (Proc(child), addr)
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn haproxy_config(dir: &Path, front: u16, a: &str, b: &str) -> PathBuf {
    let sock = dir.join("stats.sock");
    let cfg = format!(
        "global\n  stats socket {sock} mode 600 level admin\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind 127.0.0.1:{front}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  option httpchk GET /health/quick\n\
         \x20 http-check expect status 200\n\
         \x20 server a {a} check inter 200ms fall 2 rise 2\n\
         \x20 server b {b} check inter 200ms fall 2 rise 2\n",
        sock = sock.display()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("haproxy config");
    path
}

/// The `status` column of `show stat` for server `name` of backend `be`.
fn server_status(sock: &Path, name: &str) -> Option<String> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = header.iter().position(|h| *h == "status")?;
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"be") && f.get(1) == Some(&name))
        .and_then(|f| f.get(col).map(|s| (*s).to_owned()))
}

/// Polls until server `name` has `status`; how long it took.
fn wait_status(sock: &Path, name: &str, status: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < within {
        last = server_status(sock, name);
        if last.as_deref() == Some(status) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server {name} not {status} within {within:?} (last {last:?})");
}

fn post(url: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .expect("POST");
    (
        r.status().as_u16(),
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// Which backend answered a request through the frontend (each backend
/// holds one namespace named after it). A fresh agent per request: a new
/// connection, balanced on its own.
fn answered_by(front: u16) -> String {
    let mut r = agent()
        .get(&format!("http://127.0.0.1:{front}/v1/namespaces"))
        .call()
        .expect("GET through haproxy");
    let body: Value = r.body_mut().read_json().expect("json");
    let names: Vec<&str> = body["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["namespace"].as_str()).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .find(|n| n.starts_with("backend-"))
        .unwrap_or_else(|| panic!("no backend namespace in {body}"))
        .to_owned()
}

#[test]
fn haproxy_takes_a_backend_out_when_a_critical_check_fails_and_back_when_it_recovers() {
    assert!(
        Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing: install Debian's haproxy (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).expect("dir a");
    std::fs::create_dir_all(&db).expect("dir b");
    let (_a, addr_a) = backend(&da);
    let (_b, addr_b) = backend(&db);
    for (addr, ns) in [(&addr_a, "backend-a"), (&addr_b, "backend-b")] {
        let body =
            format!(r#"{{"samples": [{{"namespace": "{ns}", "metric": "m", "value": 1}}]}}"#);
        let (st, r) = post(&format!("http://{addr}/v1/ingest"), &body);
        assert_eq!(st, 200, "{r}");
    }
    let front = free_port();
    let cfg = haproxy_config(dir.path(), front, &addr_a, &addr_b);
    let _haproxy = Proc(
        Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy"),
    );
    let sock = dir.path().join("stats.sock");
    let bound = Duration::from_secs(10);
    wait_status(&sock, "a", "UP", bound);
    wait_status(&sock, "b", "UP", bound);

    let closed = free_port();
    let reg = format!(
        r#"{{"name": "dead", "critical": true, "check": {{"type": "tcp", "addr": "127.0.0.1:{closed}", "interval": "200ms", "timeout": "200ms"}}}}"#
    );
    let (st, r) = post(&format!("http://{addr_a}/v1/services"), &reg);
    assert_eq!(st, 201, "{r}");
    let took = wait_status(&sock, "a", "DOWN", bound);
    eprintln!("backend a DOWN after {took:?}");
    for _ in 0..20 {
        assert_eq!(answered_by(front), "backend-b", "a is DOWN");
    }

    let mut r = agent()
        .delete(&format!("http://{addr_a}/v1/services/dead"))
        .call()
        .expect("DELETE");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{:?}",
        r.body_mut().read_to_string()
    );
    let took = wait_status(&sock, "a", "UP", bound);
    eprintln!("backend a UP after {took:?}");
    let mut seen: Vec<String> = (0..20).map(|_| answered_by(front)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["backend-a", "backend-b"], "both serve again");
}
