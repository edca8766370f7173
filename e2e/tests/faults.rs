//! The data path under faults, with the real gateway: a node that never answers requests,
//! an overloaded node beside a healthy one, a pipelining client held back by backpressure,
//! pushes for connections that are gone, and logins past the admission bound. Nodes and a
//! state daemon that misbehave on purpose are played by threads of this test.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tether_e2e::{echo_node, eventually, free_addr, gateway, metric, stats, Client, Proc, Reply};
use tether_proto::{encode, Decoder, ErrorBody, Frame, Kind, Routed};

const RESEND_SAFE: u8 = 0x01;

/// Reads frames off a blocking stream, calling `on` for each until it returns false or the
/// stream ends.
fn serve_frames(mut stream: impl Read, mut on: impl FnMut(Frame<'_>) -> bool) {
    let decoder = Decoder::new(1 << 21);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Ok(Some((frame, used))) = decoder.decode(&buf[at..]) {
            at += used;
            if !on(frame) {
                return;
            }
        }
        buf.drain(..at);
    }
}

/// A node that answers health probes and never answers a request. Returns its address and
/// a channel counting the REQUESTs it swallowed.
fn black_hole_node() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                serve_frames(stream, |frame| {
                    match frame.kind {
                        Kind::NodePing => {
                            let mut out = Vec::new();
                            encode::frame(&mut out, Kind::NodePong, frame.id, &[]);
                            if writer.write_all(&out).is_err() {
                                return false;
                            }
                        }
                        Kind::Request => {
                            let _ = tx.send(());
                        }
                        _ => {}
                    }
                    true
                });
            });
        }
    });
    (addr, rx)
}

fn data(id: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode::header(&mut out, Kind::Data, flags, id, payload.len());
    out.extend_from_slice(payload);
    out
}

fn error_of(reply: &Reply) -> (u16, String) {
    let body = ErrorBody::parse(&reply.body).expect("an ERROR body");
    (body.code, body.reason.to_string())
}

#[test]
fn requests_to_a_black_hole_node_time_out_and_free_everything() {
    // Fault: a node that answers pings but never requests grew the gateway from 6 MB to
    // 203 MB, node_outstanding never came back to 0, and clients heard nothing.
    let (node, swallowed) = black_hole_node();
    let (_gw, listen, admin) = gateway(&[node], &["--request-timeout-ms", "500"]);
    let mut client = Client::connect(listen);
    let started = Instant::now();
    for id in 1..=20u64 {
        let flags = if id % 2 == 0 { RESEND_SAFE } else { 0 };
        client.send(&data(id, flags, &[id as u8; 1000]));
    }
    let mut timed_out = Vec::new();
    for _ in 0..20 {
        let reply = client.expect();
        assert_eq!(reply.kind, Kind::Error, "{reply:?}");
        let (code, reason) = error_of(&reply);
        assert_eq!(code, 15, "REQUEST_TIMEOUT: {reason}");
        timed_out.push(reply.id);
    }
    timed_out.sort_unstable();
    assert_eq!(
        timed_out,
        (1..=20).collect::<Vec<u64>>(),
        "each with its own id"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        swallowed.try_iter().count(),
        20,
        "each went to the node once"
    );
    // The connection stays: a PING still gets its PONG.
    client.send_frame(Kind::Ping, 99, &[]);
    assert_eq!(client.expect().kind, Kind::Pong);
    eventually(Duration::from_secs(3), "node_outstanding back to 0", || {
        let st = stats(admin);
        st["nodes"][0]["outstanding"] == 0
    });
    assert!(
        metric(
            admin,
            r#"tether_gateway_errors_total{code="REQUEST_TIMEOUT"}"#
        ) == Some(20.0)
    );
}

/// An echo node that answers one request at a time after `work_us` and refuses the rest
/// with NODE_ERROR OVERLOADED, and a healthy one, under each balancer: every request is
/// answered DATA (re-sent to the healthy node), never NO_BACKEND. The overloaded node is
/// first, then second in the list, so that under ip-hash (which sends every request of
/// this client to one node) one of the two runs puts the client on the overloaded node.
#[test]
fn an_overloaded_node_never_gets_its_refused_request_back() {
    // Fault: the re-send after NODE_ERROR OVERLOADED could pick the overloaded node itself
    // and then answered NO_BACKEND "no other healthy node" (38 of 40 under ip-hash).
    for balance in ["ip-hash", "round-robin", "least-outstanding", "random"] {
        for slow_first in [true, false] {
            let (_slow, slow) = echo_node(&[
                "--reactors",
                "1",
                "--workers",
                "1",
                "--queue",
                "1",
                "--work-us",
                "50000",
            ]);
            let (_fast, fast) = echo_node(&["--reactors", "1"]);
            let nodes = if slow_first {
                [slow, fast]
            } else {
                [fast, slow]
            };
            let (_gw, listen, _admin) = gateway(&nodes, &["--balance", balance]);
            let mut client = Client::connect(listen);
            let mut batch = Vec::new();
            for id in 1..=40u64 {
                batch.extend_from_slice(&data(id, RESEND_SAFE, &id.to_be_bytes()));
            }
            client.send(&batch);
            let mut ids = Vec::new();
            for _ in 0..40 {
                let reply = client.expect();
                assert_eq!(
                    reply.kind,
                    Kind::Data,
                    "{balance}, slow first {slow_first}: {reply:?} {:?}",
                    (reply.kind == Kind::Error).then(|| error_of(&reply))
                );
                assert_eq!(reply.body, reply.id.to_be_bytes());
                ids.push(reply.id);
            }
            ids.sort_unstable();
            assert_eq!(ids, (1..=40).collect::<Vec<u64>>());
        }
    }
}

#[test]
fn a_pipelining_client_held_back_by_backpressure_is_not_timed_out() {
    // Fault: at max_inflight the gateway stopped reading the client, yet its partial-frame
    // clock ran on, and after frame_timeout_ms the client got TIMEOUT and was closed.
    let (_node, node) = echo_node(&["--reactors", "1", "--workers", "1", "--work-us", "300000"]);
    let (_gw, listen, _admin) = gateway(
        &[node],
        &["--max-inflight", "4", "--frame-timeout-ms", "200"],
    );
    let mut client = Client::connect(listen);
    let mut first = Vec::new();
    for id in 1..=4u64 {
        first.extend_from_slice(&data(id, 0, b"x"));
    }
    let fifth = data(5, 0, b"fifth request");
    first.extend_from_slice(&fifth[..8]);
    client.send(&first);
    // The gateway reads the four and the fifth's head, and stops reading: four at the node.
    thread::sleep(Duration::from_millis(100));
    client.send(&fifth[8..]);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let reply = client.expect();
        assert_eq!(reply.kind, Kind::Data, "{reply:?}");
        ids.push(reply.id);
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        [1, 2, 3, 4, 5],
        "over a second at the node, no TIMEOUT"
    );
}

type Seen = mpsc::Receiver<(Kind, u64, Vec<u8>)>;

/// A state daemon played by the test: accepts every reactor's link, answers HELLO, and
/// passes every frame it receives to the returned channel. Frames for the gateway go
/// through the returned [`Links`], to the reactor a route names.
fn fake_state_daemon() -> (PathBuf, Seen, Links) {
    let dir = std::env::temp_dir().join(format!(
        "tether-faults-{}-{}",
        std::process::id(),
        free_addr().port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("state.sock");
    let listener = UnixListener::bind(&socket).expect("bind the socket");
    let (tx, rx) = mpsc::channel();
    let links = Links::default();
    let accepted = links.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (tx, links) = (tx.clone(), accepted.clone());
            thread::spawn(move || link_reader(stream, tx, links));
        }
    });
    (socket, rx, links)
}

/// The fake daemon's links, by reactor index (from HELLO `<id>/<index>`).
#[derive(Clone, Default)]
struct Links(Arc<Mutex<HashMap<u8, UnixStream>>>);

impl Links {
    /// Writes `frame` on the link of the reactor `route` names.
    fn send(&self, route: u64, frame: &[u8]) {
        let reactor = (route >> 56) as u8;
        let mut links = self.0.lock().expect("links");
        let link = links.get_mut(&reactor).expect("that reactor's link");
        link.write_all(frame).expect("write to the gateway");
    }
}

/// Reads one link's frames, answering HELLO, and sends each to `seen`.
fn link_reader(stream: UnixStream, seen: mpsc::Sender<(Kind, u64, Vec<u8>)>, links: Links) {
    let mut writer = stream.try_clone().expect("clone");
    serve_frames(stream, |frame| {
        if frame.kind == Kind::Hello {
            let name = String::from_utf8_lossy(frame.body).to_string();
            let index = name
                .rsplit_once('/')
                .and_then(|(_, i)| i.parse::<u8>().ok())
                .expect("HELLO <id>/<reactor>");
            let mut out = Vec::new();
            encode::frame(
                &mut out,
                Kind::HelloOk,
                0,
                br#"{"heartbeat_s":30,"resume_window_s":60,"max_pending":16}"#,
            );
            if writer.write_all(&out).is_err() {
                return false;
            }
            let clone = writer.try_clone().expect("clone");
            links.0.lock().expect("links").insert(index, clone);
        }
        seen.send((frame.kind, frame.id, frame.body.to_vec()))
            .is_ok()
    });
}

/// A gateway with one echo node, logging clients in through the state socket `socket`.
fn gateway_on(socket: &std::path::Path, extra: &[&str]) -> (Proc, Proc, SocketAddr) {
    let (node_proc, node) = echo_node(&["--reactors", "1"]);
    let socket = socket.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["--state", socket.as_str(), "--id", "gw-faults"];
    args.extend_from_slice(extra);
    let (gw, listen, _admin) = gateway(&[node], &args);
    (node_proc, gw, listen)
}

fn wait_for(rx: &mpsc::Receiver<(Kind, u64, Vec<u8>)>, kind: Kind) -> (Kind, u64, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {}", kind.name()));
        if got.0 == kind {
            return got;
        }
    }
}

#[test]
fn a_push_for_a_connection_that_is_not_logged_in_goes_back_undelivered() {
    // Fault: a PUSH for a connection no longer logged in was dropped by the gateway while
    // the daemon counted it delivered.
    let (socket, seen, links) = fake_state_daemon();
    let (_node, _gw, _listen) = gateway_on(&socket, &[]);
    wait_for(&seen, Kind::AnnounceEnd);
    wait_for(&seen, Kind::AnnounceEnd);
    // A route no connection of this gateway has: reactor 0, generation 7, slot 12345.
    let route = (7u64 << 32) | 12345;
    let mut push = Vec::new();
    encode::routed(&mut push, Kind::StatePush, 4242, route, b"for nobody");
    links.send(route, &push);
    let (_, id, body) = wait_for(&seen, Kind::Undelivered);
    assert_eq!(id, 4242, "the message id");
    assert_eq!(Routed::parse(&body).expect("a route").route, route);
}

#[test]
fn logins_past_the_bound_are_refused_busy_with_a_retry_hint() {
    // Fault: a login storm queued on the state link until clients timed out after the work
    // was done; goodput collapsed as offered load grew. Bounded, the login past the bound
    // gets BUSY at once, and the connection stays to try again.
    let (socket, seen, links) = fake_state_daemon();
    // Two reactors, one login each at the daemon at most.
    let (_node, _gw, listen) = gateway_on(&socket, &["--max-logins-inflight", "1"]);
    wait_for(&seen, Kind::AnnounceEnd);
    wait_for(&seen, Kind::AnnounceEnd);
    // Acceptors hand each new connection to the reactor with the fewest: one each.
    let mut waiting = Vec::new();
    let mut routes = Vec::new();
    for id in 1..=2u64 {
        let mut client = Client::connect(listen);
        client.send_frame(Kind::Login, id, b"token");
        let (_, got, body) = wait_for(&seen, Kind::StateLogin);
        assert_eq!(got, id);
        routes.push((id, Routed::parse(&body).expect("a route").route));
        waiting.push(client);
    }
    let mut third = Client::connect(listen);
    third.send_frame(Kind::Login, 3, b"token");
    let reply = third.expect();
    assert_eq!((reply.kind, reply.id), (Kind::Error, 3), "{reply:?}");
    let (code, reason) = error_of(&reply);
    assert_eq!(code, 14, "BUSY: {reason}");
    assert!(reason.starts_with("retry_after_ms="), "{reason}");
    // The daemon answers the first two; the third, on the same connection, now goes through.
    for (id, route) in routes {
        let mut ok = Vec::new();
        encode::routed(
            &mut ok,
            Kind::StateLoginOk,
            id,
            route,
            br#"{"session":"s","resume_token":"t","heartbeat_s":30}"#,
        );
        links.send(route, &ok);
    }
    for client in &mut waiting {
        assert_eq!(client.expect().kind, Kind::LoginOk);
    }
    third.send_frame(Kind::Login, 4, b"token");
    let (_, id, _) = wait_for(&seen, Kind::StateLogin);
    assert_eq!(id, 4);
}
