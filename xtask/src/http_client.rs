//! The few HTTP/1.1 requests xtask makes to the stack it runs (readiness, metrics, stats, the
//! push API the page server forwards to): one request per fresh connection, std only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use tether_daemon::prometheus::read_sample;

/// The largest answer read.
const MAX_ANSWER: u64 = 4 << 20;

/// One request on a fresh connection, with extra `headers`; (status, body).
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = String::new();
    stream.take(MAX_ANSWER).read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One series of the Prometheus page at `http://addr/metrics`.
pub(crate) fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http(addr, "GET", "/metrics", &[], None).ok()?;
    read_sample(&text, series)
}
