//! Reports this gateway's load to the ip-config service(s) every second, so `/ip_list` can
//! send new clients to the least loaded gateway; and at once, with `draining`, when the
//! gateway starts to drain, so it stops being listed before its clients reconnect.
//!
//! A report is `POST /v1/report` with `{"id","addr","connections","max_connections",
//! "bytes_in_per_s","bytes_out_per_s","bandwidth_bytes_per_s","cpu","draining","transports"}`
//! (`transports`: where clients dial each transport offered, see [`crate::advertise`]). Traffic is
//! the larger of what the reactors moved for clients and what the host's non-loopback NICs
//! moved (sysinfo), since both draw on the same link; cpu is the host's, in percent.
//!
//! With `ipconfig_key_file` set every report is signed ([`Signer`], the scheme of
//! [`tether_proto::report_auth`]): this gateway's id, a timestamp that only grows, and an
//! HMAC-SHA256 of both and the body under the gateway's key, in three headers. An ipconfig
//! with `report_keys_file` refuses anything else; one without it (loopback only) ignores
//! them. SIGHUP reads the key file again, so a key rotates without a restart.
//!
//! With `etcd` set the same report is this gateway's record in etcd: each report replaces the
//! value of `/tether/gateways/{id}` (kept under a lease by a [`Registration`]), which every
//! ipconfig replica watching etcd records as if it had been posted to it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use tether_daemon::secret::Secret;
use tether_discovery::Registration;
use tether_proto::report_auth::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use thiserror::Error;

use crate::advertise::Transports;
use crate::metrics::{GatewayInfo, Metrics};

/// What one report says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    pub id: String,
    pub addr: String,
    pub connections: u64,
    pub max_connections: u64,
    pub bytes_in_per_s: u64,
    pub bytes_out_per_s: u64,
    pub bandwidth_bytes_per_s: u64,
    pub cpu: f64,
    pub draining: bool,
    pub transports: Transports,
}

/// An ip-config endpoint: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host_port: String,
    pub path: String,
}

#[derive(Debug, Error)]
pub(crate) enum ReportError {
    #[error("{0} is not an http:// URL")]
    NotHttp(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} answered {1}")]
    Status(String, String),
}

impl Endpoint {
    /// Parses `http://host:port[/prefix]` (the report goes to `prefix/v1/report`).
    pub(crate) fn parse(url: &str) -> Result<Endpoint, ReportError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ReportError::NotHttp(url.to_string()))?;
        let (host_port, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host_port.is_empty() || !host_port.contains(':') {
            return Err(ReportError::NotHttp(url.to_string()));
        }
        Ok(Endpoint {
            host_port: host_port.to_string(),
            path: format!("{prefix}/v1/report"),
        })
    }

    /// Sends one report with `extra` header lines (each ending in CRLF); a non-2xx answer is
    /// an error carrying the status line.
    pub(crate) fn post(
        &self,
        body: &[u8],
        extra: &str,
        timeout: Duration,
    ) -> Result<(), ReportError> {
        let target = self.host_port.clone();
        let addr = self
            .host_port
            .to_socket_addrs()
            .map_err(|e| ReportError::Connect(target.clone(), e))?
            .next()
            .ok_or_else(|| {
                ReportError::Connect(target.clone(), std::io::ErrorKind::NotFound.into())
            })?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| ReportError::Connect(target.clone(), e))?;
        let io = |e| ReportError::Io(target.clone(), e);
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            self.path,
            self.host_port,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io)?;
        let mut response = Vec::new();
        let _ = stream.take(4096).read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let status = text.lines().next().unwrap_or("").to_string();
        if status
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2'))
        {
            Ok(())
        } else {
            Err(ReportError::Status(target, status))
        }
    }
}

/// The key in `ipconfig_key_file` (one line, as `openssl rand -hex 32` prints it).
pub(crate) fn load_key(path: &Path) -> Result<Secret, String> {
    let contents =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    report_auth::key_from_file(&contents)
        .map(Secret::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Signs this gateway's reports with its key.
#[derive(Debug)]
pub(crate) struct Signer {
    key: Mutex<Secret>,
    /// The last timestamp signed (Unix ms): each report gets a later one, even if the clock
    /// steps back, so ipconfig never takes a report for a replay.
    last_ms: AtomicU64,
}

impl Signer {
    pub(crate) fn new(key: Secret) -> Signer {
        Signer {
            key: Mutex::new(key),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Signs with `key` from now on (SIGHUP).
    pub(crate) fn replace(&self, key: Secret) {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The three header lines that sign `body` as gateway `id`'s report, at `now_ms` or just
    /// after the last one signed.
    pub(crate) fn headers(&self, id: &str, body: &[u8], now_ms: u64) -> String {
        let previous = self.last_ms.fetch_max(now_ms, Ordering::AcqRel);
        let timestamp = if previous >= now_ms {
            self.last_ms.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            now_ms
        };
        let key = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        let signature = report_auth::sign(key.expose(), id, timestamp, body);
        format!(
            "{ID_HEADER}: {id}\r\n{TIMESTAMP_HEADER}: {timestamp}\r\n{SIGNATURE_HEADER}: {signature}\r\n"
        )
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes per second from two readings of a running total.
pub(crate) fn rate(before: u64, after: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (after.saturating_sub(before) as f64 / secs) as u64
}

/// What the reporter is configured with.
pub(crate) struct Setup {
    pub endpoints: Vec<Endpoint>,
    pub id: String,
    pub addr: String,
    pub transports: Transports,
    pub bandwidth_bytes_per_s: u64,
    pub interval: Duration,
    pub metrics: Vec<Arc<Metrics>>,
    pub info: Arc<GatewayInfo>,
    /// The etcd registration whose value each report replaces.
    pub registration: Option<Arc<Registration>>,
    /// Signs the reports to ipconfig, with `ipconfig_key_file`.
    pub signer: Option<Arc<Signer>>,
}

impl Setup {
    /// A report of no traffic and no clients: the first value registered, before any was
    /// measured.
    pub(crate) fn idle_report(&self) -> Report {
        Report {
            id: self.id.clone(),
            addr: self.addr.clone(),
            connections: 0,
            max_connections: self.info.max_connections.load(Ordering::Relaxed),
            bytes_in_per_s: 0,
            bytes_out_per_s: 0,
            bandwidth_bytes_per_s: self.bandwidth_bytes_per_s,
            cpu: 0.0,
            draining: self.info.draining.load(Ordering::Acquire),
            transports: self.transports.clone(),
        }
    }
}

#[derive(Default)]
struct Signal {
    stop: bool,
    now: bool,
    sent: u64,
}

/// The running reporter thread.
pub(crate) struct Reporter {
    signal: Arc<(Mutex<Signal>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    pub(crate) fn start(setup: Setup) -> std::io::Result<Reporter> {
        let signal = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
        let for_thread = signal.clone();
        let thread = thread::Builder::new()
            .name("reporter".into())
            .spawn(move || report_loop(setup, &for_thread))?;
        Ok(Reporter {
            signal,
            thread: Some(thread),
        })
    }

    /// Reports at once (e.g. the draining flag) and waits, up to `timeout`, until sent.
    pub(crate) fn report_now(&self, timeout: Duration) {
        let (lock, cvar) = &*self.signal;
        let Ok(mut s) = lock.lock() else { return };
        let target = s.sent + 1;
        s.now = true;
        cvar.notify_all();
        let deadline = Instant::now() + timeout;
        while s.sent < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match cvar.wait_timeout(s, left) {
                Ok((guard, _)) => s = guard,
                Err(_) => return,
            }
        }
    }

    pub(crate) fn stop(mut self) {
        if let Ok(mut s) = self.signal.0.lock() {
            s.stop = true;
        }
        self.signal.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn report_loop(setup: Setup, signal: &(Mutex<Signal>, Condvar)) {
    let mut system = sysinfo::System::new();
    let mut networks = sysinfo::Networks::new_with_refreshed_list();
    system.refresh_cpu_usage();
    let totals = |m: &[Arc<Metrics>]| {
        m.iter().fold((0u64, 0u64), |(i, o), r| {
            (i + r.bytes_in.get(), o + r.bytes_out.get())
        })
    };
    let mut last = Instant::now();
    let (mut last_in, mut last_out) = totals(&setup.metrics);
    let mut failing = false;
    loop {
        {
            let (lock, cvar) = signal;
            let Ok(mut s) = lock.lock() else { return };
            if !s.now && !s.stop {
                s = match cvar.wait_timeout(s, setup.interval) {
                    Ok((guard, _)) => guard,
                    Err(_) => return,
                };
            }
            if s.stop {
                return;
            }
            s.now = false;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(last);
        let (bytes_in, bytes_out) = totals(&setup.metrics);
        networks.refresh(true);
        system.refresh_cpu_usage();
        let (nic_in, nic_out) = networks
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .fold((0u64, 0u64), |(i, o), (_, n)| {
                (i + n.received(), o + n.transmitted())
            });
        let secs = elapsed.as_secs_f64().max(1e-3);
        let report = Report {
            id: setup.id.clone(),
            addr: setup.addr.clone(),
            connections: setup.metrics.iter().map(|m| m.open()).sum(),
            max_connections: setup.info.max_connections.load(Ordering::Relaxed),
            bytes_in_per_s: rate(last_in, bytes_in, elapsed).max((nic_in as f64 / secs) as u64),
            bytes_out_per_s: rate(last_out, bytes_out, elapsed).max((nic_out as f64 / secs) as u64),
            bandwidth_bytes_per_s: setup.bandwidth_bytes_per_s,
            cpu: f64::from(system.global_cpu_usage()).clamp(0.0, 100.0),
            draining: setup.info.draining.load(Ordering::Acquire),
            transports: setup.transports.clone(),
        };
        (last, last_in, last_out) = (now, bytes_in, bytes_out);
        let body = serde_json::to_vec(&report).unwrap_or_default();
        if let Some(registration) = &setup.registration {
            registration.update(body.clone());
        }
        let signature = match &setup.signer {
            Some(signer) if !setup.endpoints.is_empty() => {
                signer.headers(&setup.id, &body, unix_ms())
            }
            _ => String::new(),
        };
        let mut all_ok = true;
        for endpoint in &setup.endpoints {
            if let Err(e) = endpoint.post(&body, &signature, Duration::from_secs(1)) {
                all_ok = false;
                if !failing {
                    tracing::warn!(error = %e, "cannot report to ipconfig (logged once until it works again)");
                }
            }
        }
        if all_ok && failing {
            tracing::info!("reporting to ipconfig again");
        }
        failing = !all_ok;
        let (lock, cvar) = signal;
        if let Ok(mut s) = lock.lock() {
            s.sent += 1;
            cvar.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_a_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:6789").unwrap();
        assert_eq!(
            (e.host_port.as_str(), e.path.as_str()),
            ("127.0.0.1:6789", "/v1/report")
        );
        let e = Endpoint::parse("http://ipconfig.local:80/tether/").unwrap();
        assert_eq!(e.path, "/tether/v1/report");
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://no-port").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    #[test]
    fn rates_are_per_second_and_never_negative() {
        assert_eq!(rate(1000, 3000, Duration::from_secs(2)), 1000);
        assert_eq!(rate(3000, 1000, Duration::from_secs(1)), 0);
        assert_eq!(rate(0, 10, Duration::ZERO), 0);
    }

    #[test]
    fn a_report_has_exactly_the_fields_ipconfig_expects() {
        let report = Report {
            id: "gw-1".into(),
            addr: "127.0.0.1:8900".into(),
            connections: 3,
            max_connections: 10,
            bytes_in_per_s: 1,
            bytes_out_per_s: 2,
            bandwidth_bytes_per_s: 1000,
            cpu: 12.5,
            draining: false,
            transports: Transports {
                tcp: Some("127.0.0.1:8900".into()),
                ws: Some("127.0.0.1:8920".into()),
                ..Transports::default()
            },
        };
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(
            value["transports"],
            serde_json::json!({"tcp": "127.0.0.1:8900", "ws": "127.0.0.1:8920"})
        );
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "addr",
                "bandwidth_bytes_per_s",
                "bytes_in_per_s",
                "bytes_out_per_s",
                "connections",
                "cpu",
                "draining",
                "id",
                "max_connections",
                "transports"
            ]
        );
    }

    #[test]
    fn posts_to_a_real_listener_and_reads_the_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut got = Vec::new();
            for status in ["204 No Content", "400 Bad Request"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            got
        });
        let e = Endpoint::parse(&format!("http://{addr}")).unwrap();
        assert!(e.post(b"{}", "", Duration::from_secs(2)).is_ok());
        let signed = "x-tether-gateway: gw-1\r\n";
        assert!(matches!(
            e.post(b"{}", signed, Duration::from_secs(2)),
            Err(ReportError::Status(..))
        ));
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("POST /v1/report HTTP/1.1\r\n"));
        assert!(requests[0].ends_with("\r\n\r\n{}"));
        assert!(requests[1].contains("\r\nx-tether-gateway: gw-1\r\nConnection: close\r\n"));
    }

    #[test]
    fn signatures_verify_and_timestamps_only_grow() {
        let key = "k".repeat(64);
        let signer = Signer::new(Secret::new(key.as_bytes()));
        let header = |text: &str, name: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .trim_end()
                .to_string()
        };
        let mut last = 0;
        // The clock steps back after the second report: timestamps still grow.
        for now in [1_000, 2_000, 1_500, 1_500] {
            let text = signer.headers("gw-1", b"{}", now);
            assert_eq!(header(&text, ID_HEADER), "gw-1");
            let ts: u64 = header(&text, TIMESTAMP_HEADER).parse().unwrap();
            assert!(ts > last, "{ts} after {last}");
            last = ts;
            let sig = header(&text, SIGNATURE_HEADER);
            assert!(report_auth::verifies(
                key.as_bytes(),
                "gw-1",
                ts,
                b"{}",
                &sig
            ));
        }
        assert_eq!(last, 2_002);
        let next = "n".repeat(64);
        signer.replace(Secret::new(next.as_bytes()));
        let text = signer.headers("gw-1", b"{}", 5_000);
        let sig = header(&text, SIGNATURE_HEADER);
        assert!(report_auth::verifies(
            next.as_bytes(),
            "gw-1",
            5_000,
            b"{}",
            &sig
        ));
    }

    #[test]
    fn key_files_hold_one_good_key() {
        let dir = std::env::temp_dir().join(format!("gw-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "a".repeat(64))).unwrap();
        assert_eq!(load_key(&good).unwrap().expose(), "a".repeat(64).as_bytes());
        let short = dir.join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        let err = load_key(&short).unwrap_err();
        assert!(
            err.contains("the key is 7 characters") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(load_key(&dir.join("missing"))
            .unwrap_err()
            .starts_with("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
