//! The gateway with a state daemon (`--state`): real tether-gateway, tether-state and echo
//! node processes. Login gating, login timeout, pushes and their ACKs, heartbeats and KICKs,
//! RESUME on another gateway with unacknowledged pushes redelivered, and the state daemon
//! going away and coming back while clients stay connected.

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use tether_e2e::state::{gateway_login, token, StateDaemon};
use tether_e2e::{echo_node, eventually, metric, wait_for_state_links, Client, Proc, Reply};
use tether_proto::Kind;

/// A gateway in front of one echo node of its own, logging in through `state`, with quick
/// reconnects to it.
fn gateway_with_state(
    socket: &Path,
    id: &str,
    extra: &[&str],
) -> (Proc, Proc, SocketAddr, SocketAddr) {
    let (node, node_addr) = echo_node(&["--reactors", "1"]);
    let mut args = vec!["--reconnect-min-ms", "50", "--reconnect-max-ms", "200"];
    args.extend_from_slice(extra);
    let (gw, listen, admin) = tether_e2e::gateway_with_state(&[node_addr], socket, id, &args);
    (node, gw, listen, admin)
}

/// Both reactors' links to the state daemon are up.
fn state_links_up(admin: SocketAddr) {
    wait_for_state_links(admin, 2, Duration::from_secs(10));
}

fn expect_error_then_close(c: &mut Client, code: u16) -> Reply {
    let r = c.expect();
    assert_eq!((r.kind, r.error_code()), (Kind::Error, Some(code)), "{r:?}");
    c.expect_closed();
    r
}

fn push(state: &StateDaemon, device: &str, payload: &[u8]) -> u64 {
    let (status, body) = state.push(device, payload, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivered", "{body}");
    body["msg_id"].as_u64().expect("msg_id")
}

#[test]
fn a_client_must_log_in_before_anything_else() {
    let state = StateDaemon::start(&[]);
    let (_node, _gw, listen, _admin) = gateway_with_state(&state.socket, "gw-login", &[]);

    let mut early = Client::connect(listen);
    early.send_frame(Kind::Data, 3, b"too soon");
    let r = expect_error_then_close(&mut early, 4);
    assert_eq!(r.id, 3);

    let mut pinger = Client::connect(listen);
    pinger.send_frame(Kind::Ping, 4, b"");
    expect_error_then_close(&mut pinger, 4);

    let mut forger = Client::connect(listen);
    let bad =
        tether_state::token::sign(b"not the secret", "dev-x", tether_e2e::state::now_s() + 60);
    forger.send_frame(Kind::Login, 5, bad.as_bytes());
    let r = expect_error_then_close(&mut forger, 5);
    assert_eq!(r.id, 5);

    let (mut c, json) = gateway_login(listen, "dev-login");
    assert_eq!(json["session"].as_str().map(str::len), Some(16), "{json}");
    assert!(
        json["resume_token"].as_str().is_some_and(|t| t.len() == 49),
        "{json}"
    );
    assert_eq!(json["heartbeat_s"], 30);
    c.send_frame(Kind::Data, 6, b"echo me");
    let r = c.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Data, 6, &b"echo me"[..])
    );
    c.send_frame(Kind::Ping, 7, b"");
    assert_eq!(c.expect().kind, Kind::Pong);

    let session = state.session_of("dev-login");
    assert_eq!(session["state"], "online");
    assert_eq!(session["session"], json["session"]);
    assert!(
        session["gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("gw-login/")),
        "{session}"
    );
    // A clean close detaches the session (it stays resumable).
    drop(c);
    eventually(Duration::from_secs(5), "the session detached", || {
        state.session_of("dev-login")["state"] == "detached"
    });
}

#[test]
fn no_login_within_the_timeout_is_timeout() {
    let state = StateDaemon::start(&[]);
    let (_node, _gw, listen, _admin) =
        gateway_with_state(&state.socket, "gw-timeout", &["--login-timeout-ms", "300"]);
    let started = Instant::now();
    let mut idle = Client::connect(listen);
    expect_error_then_close(&mut idle, 10);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn pushes_reach_the_client_and_its_ack_empties_the_queue() {
    // A re-send is due 1 s after the push: the ACK below is processed well before that, even
    // on a loaded machine, so whatever comes after it would be a re-send of an acknowledged push.
    let state = StateDaemon::start(&["--push-retry-base-ms", "1000"]);
    let (_node, _gw, listen, admin) = gateway_with_state(&state.socket, "gw-push", &[]);
    let (mut c, _) = gateway_login(listen, "dev-push");
    let msg = push(&state, "dev-push", b"\x00binary push\xff");
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Push, msg), "{r:?}");
    assert_eq!(r.body, b"\x00binary push\xff");
    c.send_frame(Kind::Ack, msg, b"");
    eventually(Duration::from_secs(5), "the push acknowledged", || {
        state.session_of("dev-push")["pending"] == 0
    });
    // Acknowledged: never sent again (the first re-send would have been due 1 s after the
    // push, inside this window).
    let late = c.recv_timeout(Duration::from_millis(1500));
    assert!(late.is_none(), "after the ACK: {late:?}");
    assert_eq!(
        metric(admin, "tether_gateway_session_events_total{event=\"ack\"}"),
        Some(1.0)
    );
}

#[test]
fn heartbeats_keep_a_session_and_a_newer_login_kicks_the_older() {
    let state = StateDaemon::start(&["--heartbeat-s", "1"]);
    let (_node, _gw, listen, _admin) = gateway_with_state(&state.socket, "gw-beat", &[]);
    let (mut c, json) = gateway_login(listen, "dev-beat");
    assert_eq!(json["heartbeat_s"], 1);
    // 4 s of PINGs every 300 ms: well past the 3 s deadline, still online.
    let until = Instant::now() + Duration::from_secs(4);
    let mut id = 10;
    while Instant::now() < until {
        c.send_frame(Kind::Ping, id, b"");
        assert_eq!(c.expect().kind, Kind::Pong);
        id += 1;
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state.session_of("dev-beat")["state"], "online");

    let (_newer, _) = gateway_login(listen, "dev-beat");
    expect_error_then_close(&mut c, 12);

    // A silent client is KICKed with TIMEOUT after 3 × 1 s.
    let (mut silent, _) = gateway_login(listen, "dev-silent");
    let r = silent
        .recv_timeout(Duration::from_secs(6))
        .expect("a KICK within 6 s");
    assert_eq!((r.kind, r.error_code()), (Kind::Error, Some(10)), "{r:?}");
}

#[test]
fn resume_on_another_gateway_redelivers_unacknowledged_pushes() {
    let state = StateDaemon::start(&["--push-retry-base-ms", "5000"]);
    let (_n1, _gw1, listen1, _) = gateway_with_state(&state.socket, "gw-one", &[]);
    let (_n2, _gw2, listen2, _) = gateway_with_state(&state.socket, "gw-two", &[]);
    let (mut c, json) = gateway_login(listen1, "dev-move");
    let first = push(&state, "dev-move", b"first");
    let second = push(&state, "dev-move", b"second");
    assert_eq!(c.expect().id, first);
    assert_eq!(c.expect().id, second);
    c.send_frame(Kind::Ack, first, b"");
    eventually(Duration::from_secs(5), "one push acknowledged", || {
        state.session_of("dev-move")["pending"] == 1
    });
    drop(c);
    eventually(Duration::from_secs(5), "the session detached", || {
        state.session_of("dev-move")["state"] == "detached"
    });

    let mut moved = Client::connect(listen2);
    let resume_token = json["resume_token"].as_str().expect("resume token");
    moved.send_frame(Kind::Resume, 9, resume_token.as_bytes());
    let r = moved.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 9), "{r:?}");
    let again: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(again["session"], json["session"]);
    let r = moved.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Push, second, &b"second"[..])
    );
    let session = state.session_of("dev-move");
    assert!(
        session["gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("gw-two/")),
        "{session}"
    );
    moved.send_frame(Kind::Data, 10, b"works here");
    assert_eq!(moved.expect().body, b"works here");
}

#[test]
fn without_the_state_daemon_logged_in_clients_carry_on_and_logins_get_unavailable() {
    let mut state = StateDaemon::start(&[]);
    let (_node, _gw, listen, admin) = gateway_with_state(&state.socket, "gw-away", &[]);
    let (mut c, json) = gateway_login(listen, "dev-stays");
    state.kill();
    eventually(Duration::from_secs(5), "state links down", || {
        metric(admin, "tether_gateway_state_links_up") == Some(0.0)
    });
    c.send_frame(Kind::Data, 1, b"still here");
    assert_eq!(c.expect().body, b"still here");

    let mut newcomer = Client::connect(listen);
    newcomer.send_frame(Kind::Login, 2, token("dev-new").as_bytes());
    let r = newcomer.expect();
    assert_eq!(
        (r.kind, r.id, r.error_code()),
        (Kind::Error, 2, Some(11)),
        "{r:?}"
    );

    // Back on the same journal: the gateway reconnects and re-announces its routes, so the
    // old session is online again, and the newcomer's retry succeeds.
    state.restart();
    state_links_up(admin);
    // The links count as up at HELLO_OK; the ANNOUNCE that brings the session back online
    // follows it.
    eventually(
        Duration::from_secs(5),
        "the old session online again",
        || state.session_of("dev-stays")["state"] == "online",
    );
    let session = state.session_of("dev-stays");
    assert_eq!(session["state"], "online", "{session}");
    assert_eq!(session["session"], json["session"]);
    newcomer.send_frame(Kind::Login, 3, token("dev-new").as_bytes());
    let r = newcomer.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 3), "{r:?}");
    let msg = push(&state, "dev-stays", b"after restart");
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::Push, msg));
}
