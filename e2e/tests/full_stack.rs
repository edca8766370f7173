//! The whole stack under stress, with real processes: the state daemon SIGKILLed and
//! restarted while logged-in clients keep sending (no session lost, no request failed); a
//! gateway SIGTERMed, whose clients get GOAWAY and RESUME on the other gateway with their
//! unacknowledged pushes redelivered; and ipconfig gone while clients keep working.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tether_e2e::state::{gateway_login, StateDaemon};
use tether_e2e::{echo_node, eventually, http_get, ipconfig, metric, Client, Proc};
use tether_proto::Kind;

/// A gateway (2 reactors) in front of `node`, logging in through `socket`, with quick
/// reconnects to it and `extra` flags.
fn gateway(
    node: SocketAddr,
    socket: &Path,
    id: &str,
    extra: &[&str],
) -> (Proc, SocketAddr, SocketAddr) {
    let mut args = vec!["--reconnect-min-ms", "50", "--reconnect-max-ms", "200"];
    args.extend_from_slice(extra);
    tether_e2e::gateway_with_state(&[node], socket, id, &args)
}

#[test]
fn state_sigkilled_and_restarted_under_load_loses_no_session_and_no_request() {
    const CLIENTS: usize = 100;
    let mut state = StateDaemon::start(&["--journal-fsync", "always"]);
    let (_node_proc, node) = echo_node(&["--reactors", "1"]);
    let (_gw, listen, admin) = gateway(node, &state.socket, "gw-kill", &[]);
    let mut sessions = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (c, json) = gateway_login(listen, &format!("kill-{i}"));
        sessions.push(json["session"].as_str().expect("session").to_string());
        clients.push(c);
    }
    // Every client keeps a request in flight, checking each reply, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut id = 10u64;
                while !stop.load(Ordering::Relaxed) {
                    let payload = format!("client {i} request {id}");
                    c.send_frame(Kind::Data, id, payload.as_bytes());
                    let r = c.expect();
                    assert_eq!((r.kind, r.id), (Kind::Data, id), "client {i}: {r:?}");
                    assert_eq!(r.body, payload.as_bytes());
                    id += 1;
                    thread::sleep(Duration::from_millis(5));
                }
                (c, id - 10)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    state.kill();
    eventually(
        Duration::from_secs(5),
        "the gateway saw the daemon go",
        || metric(admin, "tether_gateway_state_links_up") == Some(0.0),
    );
    thread::sleep(Duration::from_millis(500));
    state.restart();
    eventually(Duration::from_secs(10), "links back", || {
        metric(admin, "tether_gateway_state_links_up") == Some(2.0)
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    // The clients stay connected until the end: a close would detach their sessions.
    let mut connected = Vec::new();
    for w in workers {
        let (client, done) = w.join().expect("a client saw a failed or wrong reply");
        requests += done;
        connected.push(client);
    }
    assert!(requests >= CLIENTS as u64 * 10, "only {requests} requests");
    let detached: Vec<String> = (0..CLIENTS)
        .map(|i| state.session_of(&format!("kill-{i}")))
        .filter(|v| v["state"] != "online")
        .map(|v| format!("{} {}", v["device_id"], v["gateway"]))
        .collect();
    assert!(
        detached.is_empty(),
        "detached after the restart: {detached:?}\n{}",
        state.metrics()
    );
    for (i, session) in sessions.iter().enumerate() {
        let view = state.session_of(&format!("kill-{i}"));
        assert_eq!(view["session"], session.as_str(), "kill-{i}");
        assert_eq!(view["state"], "online", "kill-{i}: {view}");
    }
    assert_eq!(
        state.metric("tether_state_sessions{state=\"online\"}"),
        Some(CLIENTS as f64)
    );
}

#[test]
fn a_draining_gateway_sends_goaway_and_its_clients_resume_elsewhere_with_their_pushes() {
    let state = StateDaemon::start(&["--push-retry-base-ms", "10000"]);
    let (_node_proc, node) = echo_node(&["--reactors", "1"]);
    let (mut gw1, listen1, _) = gateway(
        node,
        &state.socket,
        "gw-drain",
        &["--drain-timeout-ms", "5000"],
    );
    let (_gw2, listen2, _) = gateway(node, &state.socket, "gw-stay", &[]);
    let (mut c, json) = gateway_login(listen1, "mover");
    let (status, body) = state.push("mover", b"unacked", None);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("delivered")),
        "{body}"
    );
    let msg = body["msg_id"].as_u64().expect("msg_id");
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Push, msg));
    // Not acknowledged. The gateway drains:
    gw1.signal(libc::SIGTERM);
    let r = c.expect();
    assert_eq!(r.kind, Kind::GoAway, "{r:?}");
    drop(c);
    assert!(
        gw1.wait_timeout(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "the drained gateway exits 0"
    );
    eventually(Duration::from_secs(5), "the session detached", || {
        state.session_of("mover")["state"] == "detached"
    });
    let mut moved = Client::connect(listen2);
    moved.send_frame(
        Kind::Resume,
        2,
        json["resume_token"].as_str().expect("token").as_bytes(),
    );
    let r = moved.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 2), "{r:?}");
    let r = moved.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Push, msg, &b"unacked"[..])
    );
    moved.send_frame(Kind::Ack, msg, b"");
    eventually(Duration::from_secs(5), "acknowledged", || {
        state.session_of("mover")["pending"] == 0
    });
}

#[test]
fn clients_keep_working_when_ipconfig_goes_away() {
    let state = StateDaemon::start(&[]);
    let (_node_proc, node) = echo_node(&["--reactors", "1"]);
    let (mut ipc_proc, ipc) = ipconfig(&[]);
    let url = format!("http://{ipc}");
    let (_gw, listen, admin) = gateway(
        node,
        &state.socket,
        "gw-report",
        &["--ipconfig", &url, "--report-interval-ms", "100"],
    );
    eventually(Duration::from_secs(5), "the gateway listed", || {
        http_get(ipc, "/ip_list").1.contains("gw-report")
    });
    let (mut c, _) = gateway_login(listen, "steady");
    ipc_proc.signal(libc::SIGKILL);
    ipc_proc.wait_timeout(Duration::from_secs(5));
    for id in 10..40u64 {
        c.send_frame(Kind::Data, id, b"no ipconfig needed");
        let r = c.expect();
        assert_eq!((r.kind, r.id), (Kind::Data, id));
        thread::sleep(Duration::from_millis(20));
    }
    let (mut late, _) = gateway_login(listen, "newcomer");
    late.send_frame(Kind::Ping, 3, b"");
    assert_eq!(late.expect().kind, Kind::Pong);
    let (_, stats) = http_get(admin, "/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["totals"]["errors"], 0, "{stats}");
}
