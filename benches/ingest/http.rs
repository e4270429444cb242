//! A minimal blocking HTTP/1.1 keep-alive client for the ingest load: the
//! generator's own CPU must stay small, so no async runtime and no request
//! building in the timed loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A minimal blocking HTTP/1.1 keep-alive client.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The last response's body.
    pub body: Vec<u8>,
    /// The last response's `Retry-After` in seconds, if it had one.
    pub retry_after: Option<u64>,
    line: String,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::with_capacity(64 * 1024, s),
            body: Vec::with_capacity(4096),
            retry_after: None,
            line: String::new(),
        })
    }

    /// Sends the raw request; returns the status (the body is in `self.body`).
    pub fn round_trip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.writer.write_all(request)?;
        self.read_response()
    }

    fn read_line(&mut self) -> std::io::Result<&str> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        Ok(self.line.trim_end())
    }

    fn read_response(&mut self) -> std::io::Result<u16> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let status_line = self.read_line()?.to_owned();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        self.retry_after = None;
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(
                        v.parse::<usize>()
                            .map_err(|_| bad(format!("bad length {v:?}")))?,
                    );
                } else if k.eq_ignore_ascii_case("retry-after") {
                    self.retry_after = v.parse().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
        self.body.clear();
        if chunked {
            loop {
                let size_line = self.read_line()?.to_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let start = self.body.len();
                self.body.resize(start + size, 0);
                self.reader.read_exact(&mut self.body[start..])?;
                self.read_line()?;
            }
        } else if let Some(n) = length {
            self.body.resize(n, 0);
            self.reader.read_exact(&mut self.body)?;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            return Err(bad(format!(
                "status {status} without Content-Length or chunked body"
            )));
        }
        Ok(status)
    }
}

/// One request on a fresh connection (setup calls, not timed).
pub fn simple_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut c = Conn::connect(addr)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let status = c.round_trip(req.as_bytes())?;
    Ok((status, String::from_utf8_lossy(&c.body).into_owned()))
}
