//! The echo node as a client or a gateway sees it: real binary, real sockets.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_e2e::{binary, echo_node, Client};
use tether_proto::{encode, ErrorBody, Kind, NodeErrorBody, Routed};

fn routed_body(route: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = route.to_be_bytes().to_vec();
    body.extend_from_slice(payload);
    body
}

#[test]
fn echoes_every_client_and_backend_kind() {
    let (_node, addr) = echo_node(&["--reactors", "2"]);
    let mut c = Client::connect(addr);

    c.send_frame(Kind::Data, 1, b"hello");
    let r = c.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Data, 1, &b"hello"[..])
    );

    c.send_frame(Kind::Ping, 2, b"");
    let r = c.expect();
    assert_eq!((r.kind, r.id, r.body.len()), (Kind::Pong, 2, 0));

    c.send_frame(Kind::Login, 3, b"any.jwt.token");
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 3));
    let login: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(login["session"].as_str().unwrap().starts_with("anon-"));
    assert_eq!(login["resume_token"], "");
    assert_eq!(login["heartbeat_s"], 30);

    let body = routed_body(0x0000_0001_0000_0002, b"payload");
    c.send_frame(Kind::Request, 4, &body);
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Response, 4));
    let routed = Routed::parse(&r.body).unwrap();
    assert_eq!(
        (routed.route, routed.payload),
        (0x0000_0001_0000_0002, &b"payload"[..])
    );

    c.send_frame(Kind::NodePing, 5, b"");
    let r = c.expect();
    assert_eq!((r.kind, r.id, r.body.len()), (Kind::NodePong, 5, 0));

    // A body of exactly max_body is accepted and echoed whole.
    let big: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    c.send_frame(Kind::Data, 6, &big);
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Data, 6));
    assert_eq!(r.body, big);

    // RESUME is answered UNAVAILABLE and the connection stays.
    c.send_frame(Kind::Resume, 7, b"token");
    let r = c.expect();
    assert_eq!((r.id, r.error_code()), (7, Some(11)));
    c.send_frame(Kind::Data, 8, b"still here");
    assert_eq!(c.expect().body, b"still here");
}

#[test]
fn byte_at_a_time_writes_decode_the_same() {
    let (_node, addr) = echo_node(&[]);
    let mut c = Client::connect(addr);
    let mut stream = Vec::new();
    encode::frame(&mut stream, Kind::Data, 41, b"slowly, byte by byte");
    encode::frame(&mut stream, Kind::Ping, 42, b"");
    encode::routed(&mut stream, Kind::Request, 43, 9, b"routed");
    for byte in &stream {
        c.send(std::slice::from_ref(byte));
        std::thread::sleep(Duration::from_micros(200));
    }
    let r = c.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Data, 41, &b"slowly, byte by byte"[..])
    );
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Pong, 42));
    let r = c.expect();
    assert_eq!(
        (r.kind, r.id, r.body),
        (Kind::Response, 43, routed_body(9, b"routed"))
    );
}

/// Each bad input gets its ERROR, then close, and the node goes on serving others.
#[test]
fn bad_input_gets_the_right_error_then_close() {
    let (_node, addr) = echo_node(&["--max-body", "1000"]);
    let mut bystander = Client::connect(addr);

    let mut unknown = vec![0, 0, 0, 10, 0x7f, 0];
    unknown.extend_from_slice(&1234u64.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, u16, u64)> = vec![
        ("len below 10", 9u32.to_be_bytes().to_vec(), 1, 0),
        // Only the length field is sent: the answer may not wait for the body.
        (
            "body over max_body",
            (10u32 + 1001).to_be_bytes().to_vec(),
            2,
            0,
        ),
        ("4 GiB length", u32::MAX.to_be_bytes().to_vec(), 2, 0),
        ("unknown kind", unknown, 3, 1234),
        (
            "REQUEST without a route",
            {
                let mut v = Vec::new();
                encode::frame(&mut v, Kind::Request, 77, b"short");
                v
            },
            1,
            77,
        ),
        (
            "kind a node does not accept",
            {
                let mut v = Vec::new();
                encode::frame(&mut v, Kind::Push, 78, b"");
                v
            },
            3,
            78,
        ),
    ];
    for (name, bytes, code, id) in cases {
        let mut c = Client::connect(addr);
        c.send(&bytes);
        let r = c.expect();
        assert_eq!(r.kind, Kind::Error, "{name}");
        let body = ErrorBody::parse(&r.body).unwrap();
        assert_eq!((body.code, r.id), (code, id), "{name}: {}", body.reason);
        assert!(!body.reason.is_empty(), "{name}: a reason is given");
        c.expect_closed();

        bystander.send_frame(Kind::Data, code as u64, name.as_bytes());
        let r = bystander.expect();
        assert_eq!((r.id, r.body.as_slice()), (code as u64, name.as_bytes()));
    }
}

/// A full compute queue answers OVERLOADED at once instead of queueing: NODE_ERROR on a
/// backend link, which stays open; ERROR then close for a client's DATA.
#[test]
fn a_full_worker_queue_answers_overloaded() {
    // Jobs of 2 s: a refusal that waited for the worker could not come within 1 s.
    let (_node, addr) = echo_node(&["--work-us", "2000000", "--workers", "1", "--queue", "1"]);

    let mut gateway = Client::connect(addr);
    let mut burst = Vec::new();
    for id in 1..=4u64 {
        encode::routed(&mut burst, Kind::Request, id, 100 + id, b"work");
    }
    gateway.send(&burst);
    let started = Instant::now();
    let mut answers = HashMap::new();
    let mut first_overload = None;
    while answers.len() < 4 {
        let r = gateway.expect();
        match r.kind {
            Kind::NodeError => {
                let body = NodeErrorBody::parse(&r.body).unwrap();
                assert_eq!((body.code, body.route), (6, 100 + r.id));
                first_overload.get_or_insert(started.elapsed());
                answers.insert(r.id, "overloaded");
            }
            Kind::Response => {
                assert_eq!(r.body, routed_body(100 + r.id, b"work"));
                answers.insert(r.id, "computed");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let overloaded = answers.values().filter(|a| **a == "overloaded").count();
    // One worker holds one job, the queue one more: at least two of four are refused.
    assert!(overloaded >= 2, "{answers:?}");
    assert!(overloaded < 4, "{answers:?}");
    assert!(
        first_overload.unwrap() < Duration::from_secs(1),
        "refusal must not wait for a worker: {first_overload:?}"
    );
    gateway.send_frame(Kind::NodePing, 9, b"");
    assert_eq!(
        gateway.expect().kind,
        Kind::NodePong,
        "the backend link stays open"
    );

    let mut client = Client::connect(addr);
    let mut burst = Vec::new();
    for id in 1..=4u64 {
        encode::frame(&mut burst, Kind::Data, id, b"work");
    }
    client.send(&burst);
    let mut saw_overload = false;
    while let Some(r) = client.recv() {
        if r.kind == Kind::Error {
            assert_eq!(r.error_code(), Some(6));
            saw_overload = true;
        }
    }
    assert!(
        saw_overload,
        "a client's DATA is refused with ERROR OVERLOADED, then close"
    );
}

#[test]
fn sigterm_stops_within_two_seconds_with_status_zero() {
    let (mut node, addr) = echo_node(&[]);
    let mut idle = Client::connect(addr);
    idle.send_frame(Kind::Ping, 1, b"");
    assert_eq!(idle.expect().kind, Kind::Pong);
    node.signal(libc::SIGTERM);
    let status = node
        .wait_timeout(Duration::from_secs(2))
        .expect("exited within 2 s");
    assert!(status.success(), "{status:?}");
    idle.expect_closed();
}

#[test]
fn check_lists_every_config_error_at_once() {
    let dir = std::env::temp_dir().join(format!("tether-e2e-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        "queue = 0\nlisten = \"nowhere\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let out = Command::new(binary("tether-echo-node"))
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for key in ["colour", "listen", "queue"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }

    std::fs::write(&file, "work_us = 5\n").unwrap();
    let out = Command::new(binary("tether-echo-node"))
        .args(["check", "--config", file.to_str().unwrap(), "--queue", "7"])
        .env("TETHER_NODE_WORKERS", "3")
        .output()
        .unwrap();
    assert!(out.status.success());
    let effective = String::from_utf8_lossy(&out.stdout);
    for line in ["work_us = 5", "queue = 7", "workers = 3"] {
        assert!(effective.contains(line), "{line} missing from: {effective}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under systemd (Type=notify) READY=1 must mean "accepts now".
#[test]
fn ready_is_notified_only_once_the_port_accepts() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("tether-e2e-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let addr = tether_e2e::free_addr();
    let mut node = std::process::Command::new(binary("tether-echo-node"))
        .args(["--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    let mut c = Client::connect(addr);
    c.send_frame(Kind::Ping, 1, b"");
    assert_eq!(c.expect().kind, Kind::Pong);

    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
