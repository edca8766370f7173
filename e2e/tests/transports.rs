//! The gateway's TLS, WebSocket and WebSocket-over-TLS listeners against clients nobody in
//! Tether wrote: Python's `ssl` and `websockets`, Node's `ws`, `openssl s_client`. Sessions
//! through the state daemon (login, echo, PING, a push ACKed, an error that closes) on each
//! transport; TLS 1.2 and 1.3 forced, each resumed; WebSocket conformance (pings,
//! fragmentation, text, limits, origins, subprotocols); refused handshakes with their HTTP
//! status or TLS alert; a certificate replaced on SIGHUP without dropping a client; a
//! WebSocket client's close 1001 at the drain deadline (read off a raw socket).
//! Certificates are made at run time with the openssl CLI (ECDSA P-256 and RSA 2048).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_e2e::state::{temp_dir, token, StateDaemon};
use tether_e2e::transports::{
    node_ws_modules, passed, python_with_websockets, run, script, KeyType, TestCa, TestCert,
};
use tether_e2e::{echo_node, eventually, free_addr, metric, wait_for_port, Proc};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A gateway with every kind of listener, in front of an echo node of its own.
struct Gateway {
    _node: Proc,
    proc: Proc,
    tls: SocketAddr,
    ws: SocketAddr,
    wss: SocketAddr,
    admin: SocketAddr,
}

impl Gateway {
    fn start(cert: &TestCert, extra: &[&str]) -> Gateway {
        let (node, node_addr) = echo_node(&["--reactors", "1"]);
        let (tls, ws, wss) = (free_addr(), free_addr(), free_addr());
        let (tls_s, ws_s, wss_s) = (tls.to_string(), ws.to_string(), wss.to_string());
        let cert_flags = cert.flags();
        let mut args: Vec<&str> = vec![
            "--listen-tls",
            &tls_s,
            "--listen-ws",
            &ws_s,
            "--listen-wss",
            &wss_s,
        ];
        args.extend(cert_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let (proc, _tcp, admin) = tether_e2e::gateway(&[node_addr], &args);
        for addr in [tls, ws, wss] {
            wait_for_port(addr, Duration::from_secs(10));
        }
        Gateway {
            _node: node,
            proc,
            tls,
            ws,
            wss,
            admin,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ws.port())
    }

    fn wss_url(&self) -> String {
        format!("wss://localhost:{}/ws", self.wss.port())
    }

    fn metric(&self, series: &str) -> f64 {
        metric(self.admin, series).unwrap_or(0.0)
    }
}

fn python(args: &[&str]) -> String {
    let python = python_with_websockets();
    let run = run(
        Command::new(python)
            .arg("-u") // unbuffered: a client that hangs still shows how far it got
            .arg(script("transport_clients.py"))
            .args(args),
        CLIENT_TIMEOUT,
    );
    passed(&format!("transport_clients.py {}", args[0]), run)
}

#[test]
fn sessions_through_the_state_daemon_over_tls_ws_and_wss() {
    let dir = temp_dir("transports-session");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let state = StateDaemon::start(&[]);
    let socket = state.socket.display().to_string();
    let gw = Gateway::start(&cert, &["--state", &socket, "--id", "gw-transports"]);
    tether_e2e::wait_for_state_links(gw.admin, 2, Duration::from_secs(10));
    let push_url = format!("http://{}/v1/push", state.http);
    let cafile = ca.cert.display().to_string();
    let targets = [
        ("tls", gw.tls.to_string()),
        ("ws", gw.ws_url()),
        ("wss", gw.wss_url()),
    ];
    for (transport, target) in &targets {
        let device = format!("dev-{transport}");
        let out = python(&[
            "session",
            transport,
            target,
            &cafile,
            &token(&device),
            &push_url,
            &device,
        ]);
        for check in [
            "ok login",
            "ok echo and ping",
            "ok push and ack",
            "ok error closes",
        ] {
            assert!(out.contains(check), "{transport}: {out}");
        }
    }
    let ack = r#"tether_gateway_session_events_total{event="ack"}"#;
    eventually(
        Duration::from_secs(10),
        "three ACKs reach the daemon",
        || gw.metric(ack) >= 3.0,
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_session_events_total{event="push"}"#),
        3.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_tls_handshakes_total{result="full"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="accepted"}"#),
        2.0
    );
    // The UNKNOWN_KIND error closed each WebSocket with 1008.
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_closes_total{code="1008"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_connections_closed_total{reason="unknown_kind"}"#),
        3.0
    );
}

#[test]
fn tls_1_2_and_1_3_forced_and_resumed_with_python_and_openssl() {
    let dir = temp_dir("transports-tls");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let gw = Gateway::start(&cert, &[]);
    let out = python(&[
        "tls-versions",
        &gw.tls.to_string(),
        &ca.cert.display().to_string(),
    ]);
    assert!(out.contains("ok TLSv1.2 and its resumption"), "{out}");
    assert!(out.contains("ok TLSv1.3 and its resumption"), "{out}");

    for version in ["-tls1_2", "-tls1_3"] {
        let session = dir.join(format!("session{version}"));
        let first = s_client(&gw, &ca, version, &["-sess_out", path(&session)]);
        assert!(first.contains("New, TLSv1."), "{version}: {first}");
        assert!(
            first.contains("Verify return code: 0 (ok)"),
            "{version}: {first}"
        );
        let again = s_client(&gw, &ca, version, &["-sess_in", path(&session)]);
        assert!(again.contains("Reused, TLSv1."), "{version}: {again}");
    }
    // Two resumptions by Python, two by openssl.
    assert_eq!(
        gw.metric(r#"tether_gateway_tls_handshakes_total{result="resumed"}"#),
        4.0
    );

    // TLS 1.1 is refused with an alert, and not-TLS bytes too.
    let old = s_client(&gw, &ca, "-tls1_1", &[]);
    assert!(!old.contains("New, TLSv1.1"), "{old}");
    let mut raw = TcpStream::connect(gw.tls).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    assert!(gw.metric(r#"tether_gateway_tls_handshakes_total{result="failed"}"#) >= 1.0);
    assert!(gw.metric(r#"tether_gateway_connections_closed_total{reason="tls_error"}"#) >= 1.0);
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `openssl s_client` to the TLS listener with `version` forced: it sends a v1 PING and
/// keeps its input open until the PONG (and, in TLS 1.3, the session ticket sent with it)
/// is in. Returns what it printed.
fn s_client(gw: &Gateway, ca: &TestCa, version: &str, extra: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.tls.to_string(),
            "-servername",
            "localhost",
        ])
        .args(["-CAfile", path(&ca.cert), version])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut ping = Vec::new();
    tether_proto::encode::frame(&mut ping, tether_proto::Kind::Ping, 1, b"");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(&ping);
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The PONG is the last thing the gateway sends: read until it shows.
        let mut pong = Vec::new();
        tether_proto::encode::frame(&mut pong, tether_proto::Kind::Pong, 1, b"");
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(pong.len()).any(|w| w == pong.as_slice()) {
                break;
            }
        }
        (out, stdout)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let (out, mut rest) = reader.join().expect("reader");
    let mut tail = Vec::new();
    let _ = rest.read_to_end(&mut tail);
    format!(
        "{}{}\n{err}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&tail)
    )
}

#[test]
fn websocket_conformance_with_python_websockets_and_node_ws() {
    let dir = temp_dir("transports-ws");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let gw = Gateway::start(&cert, &["--ws-origins", "https://app.example"]);
    let cafile = ca.cert.display().to_string();
    for url in [gw.ws_url(), gw.wss_url()] {
        let out = python(&["ws-conformance", &url, &cafile, "https://app.example"]);
        for check in [
            "ok ping answered",
            "ok fragmented message",
            "ok close echoed",
            "ok text refused with 1003",
            "ok message past the limit refused with 1009",
            "ok origins and subprotocols",
        ] {
            assert!(out.contains(check), "{url}: {out}");
        }
        let node = run(
            Command::new("node")
                .arg(script("transport_client_ws.cjs"))
                .args([&url, &cafile])
                .env("NODE_PATH", node_ws_modules()),
            CLIENT_TIMEOUT,
        );
        let out = passed(&format!("node ws {url}"), node);
        assert!(
            out.contains("ok echo and v1 ping") && out.contains("ok websocket ping"),
            "{out}"
        );
    }
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_closes_total{code="1003"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_closes_total{code="1009"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="403"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="400"}"#),
        4.0
    );

    // Not an upgrade: 426 with the fields RFC 6455 asks for, then the close.
    let mut raw = TcpStream::connect(gw.ws).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="426"}"#),
        1.0
    );
}

#[test]
fn a_new_certificate_on_sighup_keeps_open_clients() {
    let dir = temp_dir("transports-reload");
    let ca = TestCa::new(&dir);
    let ec = ca.issue("ec", KeyType::EcdsaP256);
    let live = TestCert {
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
    };
    std::fs::copy(&ec.cert, &live.cert).unwrap();
    std::fs::copy(&ec.key, &live.key).unwrap();
    let gw = Gateway::start(&live, &[]);
    assert!(server_key(&gw).contains("256 bit"));

    // A client that stays connected across the reload.
    let rsa = ca.issue("rsa", KeyType::Rsa2048);
    let mut held = Command::new(python_with_websockets())
        .arg(script("transport_clients.py"))
        .args(["hold", &gw.tls.to_string(), path(&ca.cert)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ok first")
    );

    std::fs::copy(&rsa.cert, &live.cert).unwrap();
    std::fs::copy(&rsa.key, &live.key).unwrap();
    gw.proc.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "new connections get the RSA key",
        || server_key(&gw).contains("2048 bit"),
    );
    let mut stdin = held.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ok second")
    );
    assert!(held.wait().expect("python").success());

    // A key that does not load is refused and the running one kept.
    std::fs::write(&live.key, "not a key").unwrap();
    gw.proc.signal(libc::SIGHUP);
    // Nothing to wait for when nothing changes: give the signal time to be handled, then
    // check the certificate is the same and the gateway still takes a good one.
    std::thread::sleep(Duration::from_millis(300));
    assert!(server_key(&gw).contains("2048 bit"));
    std::fs::copy(&ec.key, &live.key).unwrap();
    std::fs::copy(&ec.cert, &live.cert).unwrap();
    gw.proc.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "the EC certificate back", || {
        server_key(&gw).contains("256 bit")
    });
}

/// What `openssl s_client` says of the server's public key.
fn server_key(gw: &Gateway) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.tls.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("Server public key is"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn loadgen_logs_in_echoes_and_acks_pushes_over_tls_ws_and_wss() {
    let dir = temp_dir("transports-loadgen");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let state = StateDaemon::start(&[]);
    let socket = state.socket.display().to_string();
    let gw = Gateway::start(&cert, &["--state", &socket, "--id", "gw-loadgen"]);
    tether_e2e::wait_for_state_links(gw.admin, 2, Duration::from_secs(10));
    let push_url = format!("http://{}", state.http);
    let targets = [("--tls", gw.tls), ("--ws", gw.ws), ("--wss", gw.wss)];
    for (flag, target) in targets {
        let target = target.to_string();
        let (ok, s) = tether_e2e::loadgen(&[
            flag,
            "--target",
            &target,
            "--tls-ca",
            path(&ca.cert),
            "--jwt-secret",
            tether_e2e::state::SECRET,
            "--device-prefix",
            &flag[2..],
            "--conns",
            "50",
            "--pipeline",
            "4",
            "--payload",
            "200",
            "--duration",
            "2",
            "--push-rate",
            "50",
            "--push-url",
            &push_url,
        ]);
        assert!(ok, "{flag}: {s}");
        assert_eq!(s["conns"]["logged_in"], 50, "{flag}: {s}");
        assert_eq!(s["verify_failures"], 0, "{flag}: {s}");
        assert!(s["frames"]["received"].as_u64() > Some(100), "{flag}: {s}");
        assert!(s["push"]["acked"].as_u64() > Some(10), "{flag}: {s}");
        assert_eq!(s["errors"], serde_json::json!({}), "{flag}: {s}");
    }
    assert_eq!(
        gw.metric(r#"tether_gateway_tls_handshakes_total{result="full"}"#),
        100.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="accepted"}"#),
        100.0
    );
}

/// A load generator that finds its gateway through `/ip_list` dials the address listed for
/// its own transport (`transports.ws`, `.wss`, `.tls`), not `addr` (the plain TCP one).
#[test]
fn loadgen_finds_each_transports_address_through_ip_list() {
    let dir = temp_dir("transports-ip-list");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let (_ipc, ipc) = tether_e2e::ipconfig(&[]);
    let url = format!("http://{ipc}");
    let gw = Gateway::start(
        &cert,
        &[
            "--ipconfig",
            &url,
            "--id",
            "gw-listed",
            "--report-interval-ms",
            "200",
        ],
    );
    eventually(Duration::from_secs(10), "the gateway listed", || {
        tether_e2e::listed(ipc) == ["gw-listed"]
    });
    let (_, body) = tether_e2e::http_get(ipc, "/ip_list");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let transports = &list["gateways"][0]["transports"];
    assert_eq!(transports["ws"], gw.ws.to_string(), "{list}");
    assert_eq!(transports["wss"], gw.wss.to_string(), "{list}");
    assert_eq!(transports["tls"], gw.tls.to_string(), "{list}");
    for flag in ["--ws", "--wss", "--tls"] {
        let (ok, s) = tether_e2e::loadgen(&[
            flag,
            "--ipconfig",
            &url,
            "--tls-ca",
            path(&ca.cert),
            "--conns",
            "10",
            "--pipeline",
            "2",
            "--duration",
            "1",
        ]);
        assert!(ok, "{flag}: {s}");
        assert_eq!(s["conns"]["established"], 10, "{flag}: {s}");
        assert_eq!(s["conns"]["failed"], 0, "{flag}: {s}");
        assert!(s["frames"]["received"].as_u64() > Some(10), "{flag}: {s}");
        assert_eq!(s["verify_failures"], 0, "{flag}: {s}");
        assert_eq!(s["errors"], serde_json::json!({}), "{flag}: {s}");
    }
    assert_eq!(
        gw.metric(r#"tether_gateway_websocket_upgrades_total{result="accepted"}"#),
        20.0
    );
    assert_eq!(
        gw.metric(r#"tether_gateway_tls_handshakes_total{result="full"}"#),
        20.0
    );
}

/// A WebSocket client that stays past `drain_timeout_ms` hears GOAWAY when the drain starts
/// and a close frame with 1001 (going away) at the deadline, before the connection ends.
#[test]
fn a_websocket_client_still_open_at_the_drain_deadline_gets_close_1001() {
    let dir = temp_dir("transports-drain");
    let ca = TestCa::new(&dir);
    let cert = ca.issue("gw", KeyType::EcdsaP256);
    let mut gw = Gateway::start(&cert, &["--drain-timeout-ms", "500"]);
    let mut raw = TcpStream::connect(gw.ws).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: tether.v1\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(raw);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    gw.proc.signal(libc::SIGTERM);
    // Unmasked server frames, each whole: (opcode, payload), until the connection ends.
    let mut wire = Vec::new();
    let _ = reader.read_to_end(&mut wire);
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 2 <= wire.len() {
        let opcode = wire[at] & 0x0f;
        let (len, head) = match wire[at + 1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([wire[at + 2], wire[at + 3]])),
                4,
            ),
            127 => panic!("no frame here is that long"),
            n => (usize::from(n), 2),
        };
        messages.push((opcode, wire[at + head..at + head + len].to_vec()));
        at += head + len;
    }
    assert_eq!(at, wire.len(), "whole frames only: {wire:?}");
    let opcodes: Vec<u8> = messages.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        opcodes,
        [0x2, 0x8],
        "a binary message, then a close: {messages:?}"
    );
    let decoder = tether_proto::Decoder::new(tether_proto::DEFAULT_MAX_BODY);
    let (goaway, _) = decoder.decode(&messages[0].1).unwrap().unwrap();
    assert_eq!(goaway.kind, tether_proto::Kind::GoAway);
    assert_eq!(&messages[1].1[..2], &1001u16.to_be_bytes(), "going away");
    let exit = gw.proc.wait_timeout(Duration::from_secs(5)).expect("exits");
    assert!(exit.success(), "{exit:?}");
}
