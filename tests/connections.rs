//! Connections are bounded (the real daemon, raw TCP): a slow request head,
//! an idle keep-alive connection and a slow body are cut off by their
//! timeouts, and connections past `server.max_connections` are closed at
//! once while the server keeps answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child, String);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, server: &str) -> Daemon {
    std::fs::write(dir.join("scopemon.toml"), format!("[server]\n{server}")).expect("config");
    let (child, base) = common::spawn_serve(dir, Stdio::null());
    Daemon(child, base.trim_start_matches("http://").to_owned())
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s
}

/// Reads until the server closes the connection (Ok(0) or a reset);
/// `None` when it is still open at `deadline`. Bytes read are returned.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

#[test]
fn slow_heads_idle_connections_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        "header_read_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
    );
    let started = Instant::now();

    // One header byte every 200 ms: closed after about a second.
    let mut slow = connect(&d.1);
    slow.write_all(b"GET /livez HTTP/1.1\r\n").unwrap();
    let mut closed = None;
    for _ in 0..50 {
        if slow.write_all(b"X").is_err() {
            closed = Some(Vec::new());
            break;
        }
        if let Some(b) = closed_by(&mut slow, Instant::now() + Duration::from_millis(200)) {
            closed = Some(b);
            break;
        }
    }
    assert!(
        closed.is_some(),
        "a slow head was still connected after 10 s"
    );

    // An idle keep-alive connection: served, then closed.
    let mut idle = connect(&d.1);
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = closed_by(&mut idle, Instant::now() + Duration::from_secs(10))
        .expect("an idle keep-alive connection was still open after 10 s");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{got:?}"
    );

    // A body that never arrives whole: 408 with the JSON error body.
    let mut body = connect(&d.1);
    body.write_all(
        b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"samples\":",
    )
    .unwrap();
    let got = closed_by(&mut body, Instant::now() + Duration::from_secs(10))
        .expect("a slow body was still connected after 10 s");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn connections_past_the_cap_are_closed_at_once_and_the_server_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        "header_read_timeout = \"30s\"\nmax_connections = 4\n",
    );
    let held: Vec<TcpStream> = (0..4).map(|_| connect(&d.1)).collect();
    // Give the server time to accept the four (they send nothing).
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect(&d.1);
    let _ = extra.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = closed_by(&mut extra, Instant::now() + Duration::from_secs(5))
        .expect("the fifth connection was kept open");
    assert!(got.is_empty(), "the fifth connection was served: {got:?}");
    drop(held);
    // Slots free up once the held connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(&d.1);
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let got = closed_by(&mut s, Instant::now() + Duration::from_secs(2)).unwrap_or_default();
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "/livez never answered again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
