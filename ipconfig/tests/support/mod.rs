//! A plain HTTP/1.1 client over `std::net::TcpStream` for the API tests: keep-alive
//! requests, `Content-Length` and chunked bodies, and raw bytes for malformed requests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection.
pub(crate) struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
}

impl Http {
    pub(crate) fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Http {
            stream,
            buf: Vec::new(),
            host: addr.to_string(),
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    pub(crate) fn post(&mut self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, Some(body))
    }

    pub(crate) fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        self.request_with(method, path, &[], body)
    }

    /// A request with extra header fields.
    pub(crate) fn request_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host).into_bytes();
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some(body) = body {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            out.extend_from_slice(body);
        }
        self.send_raw(&out);
        self.read_response_to(method)
    }

    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).expect("read response");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response (its status line, headers and body).
    pub(crate) fn read_response(&mut self) -> Response {
        self.read_response_to("GET")
    }

    /// Reads the response to a `method` request (a HEAD answer has no body).
    pub(crate) fn read_response_to(&mut self, method: &str) -> Response {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill() > 0, "EOF before a response head");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill() > 0, "EOF inside a body");
            }
            self.buf.drain(..len).collect()
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            self.read_chunked()
        } else {
            while self.fill() > 0 {}
            std::mem::take(&mut self.buf)
        };
        Response {
            status,
            headers,
            body,
        }
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                assert!(self.fill() > 0, "EOF in a chunk size");
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill() > 0, "EOF in a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub(crate) fn once(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Response {
    Http::connect(addr).request(method, path, body)
}

/// A report body.
pub(crate) fn report_json(
    id: &str,
    addr: &str,
    spare_gib: f64,
    spare_conns: u64,
    draining: bool,
) -> Vec<u8> {
    let gib = (1u64 << 30) as f64;
    serde_json::json!({
        "id": id,
        "addr": addr,
        "connections": 100_000 - spare_conns,
        "max_connections": 100_000,
        "bytes_in_per_s": 1000,
        "bytes_out_per_s": 3000,
        "bandwidth_bytes_per_s": spare_gib * gib + 4000.0,
        "cpu": 10.0,
        "draining": draining,
    })
    .to_string()
    .into_bytes()
}

/// Polls `check` every 10 ms until it holds, or panics after `timeout`.
pub(crate) fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids of an `/ip_list` answer, in order.
pub(crate) fn ids(list: &Value) -> Vec<String> {
    list["gateways"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| g["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one Prometheus series, exactly as written (`name{labels}`).
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}
