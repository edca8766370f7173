//! The admin listener over real sockets: /metrics, /stats, /healthz, 404, bind errors, stop.
//!
//! Requests are written by hand on a `std::net::TcpStream` (HTTP/1.1, `Connection: close`), so
//! the test needs no HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_gateway::metrics::{BackendDrop, CloseReason, GatewayInfo, Metrics, NodeStatus};
use tether_gateway::{Admin, AdminError};
use tether_proto::ErrorCode;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("no end of headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_string(),
    };
    assert_ne!(
        reply.header("transfer-encoding"),
        Some("chunked"),
        "expected a sized body"
    );
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len());
    }
    reply
}

fn value(text: &str, series: &str) -> f64 {
    tether_daemon::prometheus::read_sample(text, series)
        .unwrap_or_else(|| panic!("{series} is not exactly one sample in\n{text}"))
}

fn setup() -> (Admin, Vec<Arc<Metrics>>, Arc<GatewayInfo>) {
    let reactors = vec![Arc::new(Metrics::new()), Arc::new(Metrics::new())];
    let info = Arc::new(GatewayInfo::new(
        "9.9.9",
        vec!["127.0.0.1:8900".into()],
        2,
        100_000,
    ));
    let admin = Admin::start(
        "127.0.0.1:0".parse().unwrap(),
        reactors.clone(),
        info.clone(),
    )
    .unwrap();
    (admin, reactors, info)
}

#[test]
fn admin_serves_metrics_stats_healthz_and_404() {
    let (admin, r, info) = setup();
    let addr = admin.local_addr();
    assert_ne!(addr.port(), 0);

    r[0].accepted.add(10);
    r[1].accepted.add(6);
    r[0].close(CloseReason::PeerClosed);
    r[1].close(CloseReason::Timeout);
    r[1].close(CloseReason::Timeout);
    r[0].frames_in.add(100);
    r[1].frames_in.add(50);
    r[0].backend_requests.add(40);
    r[1].retries.inc();
    r[0].error(ErrorCode::NoBackend);
    r[1].drop_backend(BackendDrop::UnknownRoute);
    r[0].latency.record_us(120);
    r[1].latency.record_us(700);
    info.rejected_at_accept.add_shared(3);
    let up = |up| NodeStatus {
        addr: "127.0.0.1:8890".into(),
        up,
        connected: true,
        outstanding: 2,
        requests: 5,
    };
    r[0].set_nodes(vec![up(true)]);
    r[1].set_nodes(vec![up(false)]);

    // /metrics
    let m = request(addr, "GET", "/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let t = &m.body;
    assert!(t.contains("# TYPE tether_gateway_connections_open gauge\n"));
    assert_eq!(value(t, "tether_gateway_connections_accepted_total"), 16.0);
    assert_eq!(value(t, "tether_gateway_connections_open"), 13.0);
    assert_eq!(
        value(
            t,
            r#"tether_gateway_connections_closed_total{reason="timeout"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_connections_closed_total{reason="kicked"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_connections_rejected_total{reason="overloaded"}"#
        ),
        3.0
    );
    assert_eq!(value(t, "tether_gateway_frames_received_total"), 150.0);
    assert_eq!(value(t, "tether_gateway_backend_requests_total"), 40.0);
    assert_eq!(value(t, "tether_gateway_backend_retries_total"), 1.0);
    assert_eq!(
        value(t, r#"tether_gateway_errors_total{code="NO_BACKEND"}"#),
        1.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_backend_dropped_frames_total{reason="unknown_route"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_request_duration_seconds_bucket{le="0.00025"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        2.0
    );
    assert_eq!(
        value(t, r#"tether_gateway_node_up{node="127.0.0.1:8890"}"#),
        0.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_node_up_reactors{node="127.0.0.1:8890"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            t,
            r#"tether_gateway_node_outstanding{node="127.0.0.1:8890"}"#
        ),
        4.0
    );
    assert_eq!(value(t, "tether_gateway_reactors"), 2.0);

    // /stats
    let s = request(addr, "GET", "/stats");
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("application/json"));
    let v = s.json();
    assert_eq!(v["version"], "9.9.9");
    assert_eq!(v["draining"], false);
    assert_eq!(v["reactors"][0]["accepted"], 10);
    assert_eq!(v["reactors"][0]["open"], 9);
    assert_eq!(v["reactors"][1]["accepted"], 6);
    assert_eq!(v["reactors"][1]["open"], 4);
    assert_eq!(v["totals"]["open"], 13);
    assert_eq!(v["totals"]["rejected_at_accept"], 3);
    assert_eq!(v["closed"]["timeout"], 2);
    assert_eq!(v["errors"]["NO_BACKEND"], 1);
    assert_eq!(v["nodes"][0]["addr"], "127.0.0.1:8890");
    assert_eq!(v["nodes"][0]["up"], false);
    assert_eq!(v["nodes"][0]["up_reactors"], 1);
    assert_eq!(v["latency_us"]["p50"], 250);
    assert_eq!(v["latency_us"]["p99"], 1000);

    // /healthz, then draining
    let h = request(addr, "GET", "/healthz");
    assert_eq!(h.status, 200);
    assert_eq!(h.body, "ok");
    info.draining.store(true, Relaxed);
    let h = request(addr, "GET", "/healthz");
    assert_eq!(h.status, 503);
    assert_eq!(h.json(), serde_json::json!({"status": "draining"}));
    assert_eq!(
        value(
            &request(addr, "GET", "/metrics").body,
            "tether_gateway_draining"
        ),
        1.0
    );

    // Unknown path and wrong method: JSON errors.
    let n = request(addr, "GET", "/nope?x=1");
    assert_eq!(n.status, 404);
    assert_eq!(n.header("content-type"), Some("application/json"));
    assert_eq!(n.json()["path"], "/nope");
    let p = request(addr, "POST", "/metrics");
    assert_eq!(p.status, 405);
    assert_eq!(p.json()["error"], "method not allowed");

    // Garbage is answered (400 from hyper) or closed, and the listener keeps serving.
    let mut g = TcpStream::connect(addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"\x00\x01 nonsense \r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = g.read_to_end(&mut sink);
    assert_eq!(request(addr, "GET", "/healthz").status, 503);

    let t0 = Instant::now();
    admin.stop();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

#[test]
fn admin_bind_error_is_returned() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Admin::start(
        addr,
        vec![Arc::new(Metrics::new())],
        Arc::new(GatewayInfo::new("0", vec![], 1, 1)),
    )
    .unwrap_err();
    assert!(
        matches!(err, AdminError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn admin_stop_is_prompt_with_an_idle_connection_open() {
    let (admin, _r, _info) = setup();
    let addr = admin.local_addr();
    // One connection that never sends anything, one kept alive after a request.
    let _idle = TcpStream::connect(addr).unwrap();
    let mut kept = TcpStream::connect(addr).unwrap();
    write!(kept, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(50));

    let t0 = Instant::now();
    admin.stop();
    // The grace period bounds the wait even if a connection never finishes.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}
