//! tether-state as gateways and push senders see it: the real binary on a Unix socket and a
//! loopback HTTP port, checked against doc/protocol.md ("State kinds") frame by frame.
//!
//! Timings are shortened (`--heartbeat-s 1`, `--resume-window-s 2`, `--push-retry-base-ms
//! 100` where a test is about them, long values elsewhere so that timers never interleave
//! with what a test reads).

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tether_e2e::state::{
    check_login_ok, check_push, check_routed_error, describe, now_ms, now_s, route_of, temp_dir,
    token, token_with, Event, StateDaemon, StateLink, SECRET,
};
use tether_e2e::{binary, eventually, free_addr, http_get, Reply};
use tether_proto::{encode, Kind};
use tether_state::journal::{FsyncPolicy, Journal};
use tether_state::record::Record;

/// Timers long enough never to fire during a test that is not about them.
const QUIET: [&str; 6] = [
    "--heartbeat-s",
    "30",
    "--resume-window-s",
    "30",
    "--push-retry-base-ms",
    "10000",
];

/// Routes with the reactor and generation bits set, so the whole u64 must survive.
const R1: u64 = 0x0100_0001_0000_0001;
const R2: u64 = 0x0200_0002_0000_0002;
const R3: u64 = 0x0300_0003_0000_0003;
const R4: u64 = 0x0400_0004_0000_0004;
const R5: u64 = 0x0500_0005_0000_0005;

fn flags<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

fn state_of(d: &StateDaemon, device: &str) -> String {
    d.session_of(device)["state"]
        .as_str()
        .expect("state is a string")
        .to_string()
}

fn pending_of(d: &StateDaemon, device: &str) -> u64 {
    d.session_of(device)["pending"]
        .as_u64()
        .expect("pending is an integer")
}

/// Reads until a STATE_PUSH arrives (within 5 s), skipping nothing.
fn expect_push(link: &mut StateLink, msg_id: u64, route: u64, payload: &[u8]) {
    let reply = link.recv();
    check_push(&reply, msg_id, route, payload);
}

/// Reads off re-sends of `msg_id` that the daemon wrote before it processed the ACK, once
/// `/v1/sessions` has shown the ACK processed: the daemon's single loop writes an iteration's
/// frames before it answers a later command, and processes an ACK before it fires that
/// iteration's timers, so every such re-send is already in the socket buffer by then.
fn drain_resends(link: &mut StateLink, msg_id: u64, route: u64, payload: &[u8]) {
    while let Some(reply) = link.recv_timeout(Duration::from_millis(50)) {
        check_push(&reply, msg_id, route, payload);
    }
}

/// Reads the first send of a push and its re-sends until `sends` have come (within 10 s).
fn collect_sends(link: &mut StateLink, sends: usize, msg_id: u64, payload: &[u8]) -> Vec<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut arrivals = Vec::new();
    while arrivals.len() < sends {
        match link.next_event(deadline.saturating_duration_since(Instant::now())) {
            Event::Frame(reply) => {
                check_push(&reply, msg_id, R1, payload);
                arrivals.push(Instant::now());
            }
            Event::Timeout => break,
            Event::Closed => panic!("link closed"),
        }
    }
    arrivals
}

/// Checks send `k` arrived at least 0.7 × `offsets_ms[k]` and at most `offsets_ms[k]` +
/// `slack_ms` after `t0` (taken before the push). A re-send is timed from the previous send,
/// so delays only push later arrivals later: the lower bounds hold however loaded the machine
/// is, and together they make the backoff exponential; the upper bounds are generous.
fn check_send_offsets(t0: Instant, arrivals: &[Instant], offsets_ms: &[u64], slack_ms: u64) {
    let elapsed: Vec<u64> = arrivals
        .iter()
        .map(|a| a.duration_since(t0).as_millis() as u64)
        .collect();
    for (&at, &nominal) in elapsed.iter().zip(offsets_ms) {
        assert!(
            at >= nominal * 7 / 10 && at <= nominal + slack_ms,
            "sends at {elapsed:?} ms after the push, expected about {offsets_ms:?} ms"
        );
    }
}

#[test]
fn login_ok_gives_a_session_visible_over_http() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "7",
        "--resume-window-s",
        "11",
        "--max-pending",
        "5",
    ]);
    let (status, _) = http_get(d.http, "/healthz");
    assert_eq!(status, 200);

    let mut link = StateLink::connect(&d.socket);
    let hello = link.hello("gw-login");
    assert_eq!(hello["heartbeat_s"], 7, "{hello}");
    assert_eq!(hello["resume_window_s"], 11, "{hello}");
    assert_eq!(hello["max_pending"], 5, "{hello}");
    link.announce_end();

    let before = now_ms();
    let ok = link.login_ok(R1, 77, "dev-login");
    let after = now_ms();
    assert_eq!(ok.heartbeat_s, 7);

    let s = d.session_of("dev-login");
    assert_eq!(s["session"], ok.session.as_str(), "{s}");
    assert_eq!(s["device_id"], "dev-login", "{s}");
    assert_eq!(s["gateway"], "gw-login", "{s}");
    assert_eq!(s["route"].as_u64(), Some(R1), "{s}");
    assert_eq!(s["state"], "online", "{s}");
    assert_eq!(s["pending"], 0, "{s}");
    let login_ms = s["login_unix_ms"].as_u64().expect("login_unix_ms");
    assert!(
        (before.saturating_sub(5)..=after + 5).contains(&login_ms),
        "login_unix_ms {login_ms} outside [{before}, {after}]"
    );
    let hb_ms = s["last_heartbeat_unix_ms"]
        .as_u64()
        .expect("last_heartbeat_unix_ms");
    assert!(hb_ms >= login_ms && hb_ms <= now_ms() + 5, "{s}");

    // A heartbeat moves last_heartbeat_unix_ms; one for a route with no session is a
    // zombie connection, told to go with KICK TIMEOUT.
    std::thread::sleep(Duration::from_millis(30));
    link.heartbeat(&[R1, 0xdead]);
    let kick = link.expect(Kind::Kick);
    check_routed_error(&kick, Kind::Kick, 0, 0xdead, 10);
    eventually(Duration::from_secs(3), "a newer last heartbeat", || {
        d.session_of("dev-login")["last_heartbeat_unix_ms"]
            .as_u64()
            .unwrap()
            > hb_ms
    });
    link.expect_silence(Duration::from_millis(200));

    assert!(d.session("nobody").is_none());
    let (status, body) = http_get(d.http, "/v1/sessions/nobody");
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        d.metric("tether_state_sessions{state=\"online\"}"),
        Some(1.0)
    );

    // A second login on the same route detaches the first session.
    let other = link.login_ok(R1, 78, "dev-other");
    assert_ne!(other.session, ok.session);
    assert_eq!(state_of(&d, "dev-login"), "detached");
    assert_eq!(state_of(&d, "dev-other"), "online");
    assert_eq!(
        d.metric("tether_state_sessions{state=\"online\"}"),
        Some(1.0)
    );
}

#[test]
fn bad_tokens_get_login_fail_5_with_the_same_id_and_route() {
    let d = StateDaemon::start(&QUIET);
    let mut link = d.link("gw-tokens");
    let now = now_s();
    let cases: Vec<(&str, String)> = vec![
        (
            "bad signature",
            tether_state::token::sign(b"another secret", "dev-bad", now + 3600),
        ),
        (
            "expired beyond the leeway",
            tether_state::token::sign(SECRET.as_bytes(), "dev-bad", now - 3600),
        ),
        ("missing sub", token_with(&json!({"exp": now + 3600}))),
        (
            "empty sub",
            token_with(&json!({"sub": "", "exp": now + 3600})),
        ),
        (
            "sub over 128 bytes",
            token_with(&json!({"sub": "x".repeat(129), "exp": now + 3600})),
        ),
        ("missing exp", token_with(&json!({"sub": "dev-bad"}))),
        (
            "nbf in the future",
            token_with(&json!({"sub": "dev-bad", "exp": now + 7200, "nbf": now + 3600})),
        ),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    // Pipelined: the answers come in the order received.
    for (i, (_, token)) in cases.iter().enumerate() {
        link.send_login(R1 + i as u64, 100 + i as u64, token);
    }
    for (i, (what, _)) in cases.iter().enumerate() {
        let reply = link.recv();
        assert_eq!(reply.kind, Kind::LoginFail, "{what}: {}", describe(&reply));
        check_routed_error(&reply, Kind::LoginFail, 100 + i as u64, R1 + i as u64, 5);
    }
    assert!(d.session("dev-bad").is_none());

    // The link stays usable; an expired token within the leeway (default 30 s) is accepted.
    let within_leeway = tether_state::token::sign(SECRET.as_bytes(), "dev-good", now - 5);
    check_login_ok(&link.login(R2, 200, &within_leeway), 200, R2);
    assert_eq!(state_of(&d, "dev-good"), "online");
}

#[test]
fn heartbeats_keep_a_session_alive_and_silence_gets_kick_10() {
    let d = StateDaemon::start(&["--heartbeat-s", "1", "--resume-window-s", "10"]);
    let mut link = StateLink::connect(&d.socket);
    assert_eq!(link.hello("gw-hb")["heartbeat_s"], 1);
    link.announce_end();
    let alive = link.login_ok(R1, 1, "hb-alive");
    // Before the silent login, so its 3 s deadline cannot start before the clock does.
    let start = Instant::now();
    let silent = link.login_ok(R2, 2, "hb-silent");
    assert_eq!(alive.heartbeat_s, 1);

    let mut kicked_at = None;
    while start.elapsed() < Duration::from_secs(7) {
        link.heartbeat(&[R1]);
        let next = Instant::now() + Duration::from_millis(300);
        while let Some(reply) = link.recv_timeout(next.saturating_duration_since(Instant::now())) {
            check_routed_error(&reply, Kind::Kick, 0, R2, 10);
            assert!(kicked_at.is_none(), "a second KICK: {}", describe(&reply));
            kicked_at = Some(start.elapsed());
        }
    }
    let kicked_at = kicked_at.expect("the silent session was never kicked");
    assert!(
        kicked_at >= Duration::from_millis(2700) && kicked_at <= Duration::from_secs(6),
        "KICK after {kicked_at:?}, expected ~3 s (3 × heartbeat_s)"
    );
    assert_eq!(state_of(&d, "hb-alive"), "online");
    assert_eq!(state_of(&d, "hb-silent"), "detached");

    // A timed-out session may still be resumed.
    let resumed = check_login_ok(&link.resume(R3, 3, &silent.resume_token), 3, R3);
    assert_eq!(resumed.session, silent.session);
    assert_eq!(resumed.resume_token, silent.resume_token);
    assert_eq!(state_of(&d, "hb-silent"), "online");
}

#[test]
fn resume_inside_the_window_keeps_the_session_and_resends_pushes_oldest_first() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--resume-window-s",
        "5",
        "--push-retry-base-ms",
        "10000",
    ]);
    let mut link = d.link("gw-resume");
    let ok = link.login_ok(R1, 1, "dev-r");
    let m1 = d.push_expect("dev-r", b"first", "delivered").unwrap();
    expect_push(&mut link, m1, R1, b"first");
    let m2 = d.push_expect("dev-r", b"second", "delivered").unwrap();
    expect_push(&mut link, m2, R1, b"second");
    assert!(m2 > m1, "message ids increase: {m1} then {m2}");

    link.closed(R1, "client went away");
    eventually(Duration::from_secs(3), "detached", || {
        state_of(&d, "dev-r") == "detached"
    });
    let m3 = d.push_expect("dev-r", b"third", "queued").unwrap();
    assert!(m3 > m2);
    assert_eq!(pending_of(&d, "dev-r"), 3);
    link.expect_silence(Duration::from_millis(200));

    // A wrong secret or a garbage token is refused.
    let wrong = format!("{}.{}", ok.session, "0".repeat(32));
    check_routed_error(&link.resume(R3, 7, &wrong), Kind::LoginFail, 7, R3, 5);
    check_routed_error(&link.resume(R3, 8, "nope"), Kind::LoginFail, 8, R3, 5);

    let resumed = check_login_ok(&link.resume(R2, 9, &ok.resume_token), 9, R2);
    assert_eq!(resumed.session, ok.session);
    assert_eq!(resumed.resume_token, ok.resume_token);
    expect_push(&mut link, m1, R2, b"first");
    expect_push(&mut link, m2, R2, b"second");
    expect_push(&mut link, m3, R2, b"third");
    let s = d.session_of("dev-r");
    assert_eq!(s["route"].as_u64(), Some(R2), "{s}");
    assert_eq!(s["state"], "online", "{s}");
    assert_eq!(s["session"], ok.session.as_str(), "{s}");
    for m in [m1, m2, m3] {
        link.ack(R2, m);
    }
    eventually(Duration::from_secs(3), "pending 0", || {
        pending_of(&d, "dev-r") == 0
    });

    // Resuming a session online elsewhere KICKs that connection (12) first.
    let mut other = d.link("gw-resume-2");
    let again = check_login_ok(&other.resume(R4, 10, &ok.resume_token), 10, R4);
    assert_eq!(again.session, ok.session);
    check_routed_error(&link.recv(), Kind::Kick, 0, R2, 12);
    let s = d.session_of("dev-r");
    assert_eq!(s["gateway"], "gw-resume-2", "{s}");
    assert_eq!(s["route"].as_u64(), Some(R4), "{s}");
    link.expect_silence(Duration::from_millis(200));
}

#[test]
fn resume_after_the_window_fails_and_the_session_is_gone() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--resume-window-s",
        "2",
        "--push-retry-base-ms",
        "10000",
    ]);
    let mut link = d.link("gw-window");
    let ok = link.login_ok(R1, 1, "dev-w");
    let m = d.push_expect("dev-w", b"lost", "delivered").unwrap();
    expect_push(&mut link, m, R1, b"lost");
    link.closed(R1, "bye");
    let closed_at = Instant::now();
    eventually(Duration::from_secs(2), "detached", || {
        d.session("dev-w").map(|s| s["state"] == "detached") == Some(true)
    });
    eventually(Duration::from_secs(6), "the session removed", || {
        d.session("dev-w").is_none()
    });
    assert!(
        closed_at.elapsed() >= Duration::from_millis(1800),
        "removed after {:?}, before the 2 s window",
        closed_at.elapsed()
    );
    check_routed_error(
        &link.resume(R2, 5, &ok.resume_token),
        Kind::LoginFail,
        5,
        R2,
        5,
    );
    assert!(d.session("dev-w").is_none());
    d.push_expect("dev-w", b"nobody home", "offline");
}

#[test]
fn push_then_ack_stops_retransmits_and_empties_the_queue() {
    let d = StateDaemon::start(&["--heartbeat-s", "30", "--push-retry-base-ms", "500"]);
    let mut link = d.link("gw-push");
    link.login_ok(R1, 1, "dev-p");
    let payload: Vec<u8> = (0..=255u8).collect();
    let m1 = d.push_expect("dev-p", &payload, "delivered").unwrap();
    expect_push(&mut link, m1, R1, &payload);
    link.ack(R1, m1);
    eventually(Duration::from_secs(2), "pending 0", || {
        pending_of(&d, "dev-p") == 0
    });
    drain_resends(&mut link, m1, R1, &payload);
    link.expect_silence(Duration::from_millis(1500));

    let m2 = d.push_expect("dev-p", b"second", "delivered").unwrap();
    assert!(m2 > m1, "message ids increase: {m1} then {m2}");
    expect_push(&mut link, m2, R1, b"second");
    assert_eq!(pending_of(&d, "dev-p"), 1);
    // An ACK on another route or for another id removes nothing.
    link.ack(R2, m2);
    link.ack(R1, m2 + 1000);
    link.ack(R1, m2);
    eventually(Duration::from_secs(2), "pending 0", || {
        pending_of(&d, "dev-p") == 0
    });
    drain_resends(&mut link, m2, R1, b"second");
    link.expect_silence(Duration::from_millis(1200));
}

#[test]
fn unacked_push_is_resent_with_growing_backoff_up_to_push_retry_max() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--push-retry-base-ms",
        "100",
        "--push-retry-cap-ms",
        "30000",
        "--push-retry-max",
        "5",
    ]);
    let mut link = d.link("gw-backoff");
    link.login_ok(R1, 1, "dev-b");
    let t0 = Instant::now();
    let m = d.push_expect("dev-b", b"again", "delivered").unwrap();
    let arrivals = collect_sends(&mut link, 5, m, b"again");
    assert_eq!(
        arrivals.len(),
        5,
        "push_retry_max 5: one send and four re-sends"
    );
    // Gaps of 100, 200, 400 and 800 ms: sends 0, 100, 300, 700 and 1500 ms after the first.
    check_send_offsets(t0, &arrivals, &[0, 100, 300, 700, 1500], 1500);
    // No sixth send (it would be due 1.6 s after the fifth).
    link.expect_silence(Duration::from_millis(2500));
    // After the last send it waits (for a RESUME or its TTL): still queued.
    assert_eq!(pending_of(&d, "dev-b"), 1);
}

#[test]
fn a_push_whose_ttl_passes_is_dropped() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--push-retry-base-ms",
        "10000",
        "--push-ttl-s",
        "60",
    ]);
    let mut link = d.link("gw-ttl");
    let ok = link.login_ok(R1, 1, "dev-t");
    let (status, v) = d.push("dev-t", b"short-lived", Some(2));
    assert_eq!((status, &v["status"]), (200, &json!("delivered")), "{v}");
    let short = v["msg_id"].as_u64().unwrap();
    expect_push(&mut link, short, R1, b"short-lived");
    let long = d.push_expect("dev-t", b"long-lived", "delivered").unwrap();
    expect_push(&mut link, long, R1, b"long-lived");
    assert_eq!(pending_of(&d, "dev-t"), 2);
    eventually(Duration::from_secs(6), "the 2 s push dropped", || {
        pending_of(&d, "dev-t") == 1
    });
    // A resume re-sends only what is left.
    link.closed(R1, "bye");
    check_login_ok(&link.resume(R2, 2, &ok.resume_token), 2, R2);
    expect_push(&mut link, long, R2, b"long-lived");
    link.expect_silence(Duration::from_millis(300));
}

#[test]
fn push_status_is_delivered_queued_or_offline() {
    let d = StateDaemon::start(&QUIET);
    // No session: nothing stored.
    d.push_expect("nobody", b"x", "offline");
    assert!(d.session("nobody").is_none());

    let mut link = d.link("gw-status");
    link.login_ok(R1, 1, "dev-s");
    let m1 = d.push_expect("dev-s", b"one", "delivered").unwrap();
    expect_push(&mut link, m1, R1, b"one");

    // Detached: queued, nothing sent.
    link.closed(R1, "bye");
    eventually(Duration::from_secs(2), "detached", || {
        state_of(&d, "dev-s") == "detached"
    });
    let m2 = d.push_expect("dev-s", b"two", "queued").unwrap();
    assert!(m2 > m1);
    assert_eq!(pending_of(&d, "dev-s"), 2);

    // Online but its gateway link is down: queued.
    link.login_ok(R2, 2, "dev-s2");
    link.expect_silence(Duration::from_millis(100));
    drop(link);
    eventually(Duration::from_secs(5), "the link closed", || {
        d.metric("tether_state_links_open") == Some(0.0)
    });
    let m3 = d.push_expect("dev-s2", b"three", "queued").unwrap();
    assert!(m3 > m2);
    assert_eq!(pending_of(&d, "dev-s2"), 1);
}

#[test]
fn a_full_queue_answers_429() {
    let d = StateDaemon::start(&flags(&QUIET, &["--max-pending", "2"]));
    let mut link = StateLink::connect(&d.socket);
    assert_eq!(link.hello("gw-full")["max_pending"], 2);
    link.announce_end();
    link.login_ok(R1, 1, "dev-q");
    let m1 = d.push_expect("dev-q", b"1", "delivered").unwrap();
    expect_push(&mut link, m1, R1, b"1");
    let m2 = d.push_expect("dev-q", b"2", "delivered").unwrap();
    expect_push(&mut link, m2, R1, b"2");
    let (status, v) = d.push("dev-q", b"3", None);
    assert_eq!(status, 429, "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert_eq!(pending_of(&d, "dev-q"), 2);
    link.expect_silence(Duration::from_millis(200));

    link.ack(R1, m1);
    eventually(Duration::from_secs(2), "pending 1", || {
        pending_of(&d, "dev-q") == 1
    });
    let m4 = d.push_expect("dev-q", b"4", "delivered").unwrap();
    expect_push(&mut link, m4, R1, b"4");
}

#[test]
fn bad_push_requests_get_400_and_oversize_payloads_413() {
    let d = StateDaemon::start(&flags(&QUIET, &["--max-payload", "1024"]));
    let mut link = d.link("gw-400");
    link.login_ok(R1, 1, "dev-x");
    let bad: [&[u8]; 10] = [
        b"{not json",
        b"",
        br#"{"payload":"aGk="}"#,
        br#"{"device_id":"dev-x"}"#,
        br#"{"device_id":"dev-x","payload":"!!!not base64"}"#,
        br#"{"device_id":"dev-x","payload":42}"#,
        br#"{"device_id":7,"payload":"aGk="}"#,
        br#"{"device_id":"dev-x","payload":"aGk=","ttl_s":0}"#,
        br#"{"device_id":"dev-x","payload":"aGk=","ttl_s":-5}"#,
        br#"{"device_id":"dev-x","payload":"aGk=","ttl_s":"5"}"#,
    ];
    for body in bad {
        let (status, v) = d.post_push(body);
        assert_eq!(status, 400, "{:?} → {v}", String::from_utf8_lossy(body));
        assert!(
            v["error"].is_string(),
            "{:?} → {v}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(pending_of(&d, "dev-x"), 0);
    link.expect_silence(Duration::from_millis(200));

    let (status, v) = d.push("dev-x", &[7u8; 1025], None);
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].is_string(), "413 with a JSON error: {v}");
    assert_eq!(pending_of(&d, "dev-x"), 0);
    let exact = vec![9u8; 1024];
    let m = d.push_expect("dev-x", &exact, "delivered").unwrap();
    expect_push(&mut link, m, R1, &exact);
}

#[test]
fn duplicate_login_kicks_the_older_route_with_12_and_moves_its_pushes() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--resume-window-s",
        "30",
        "--push-retry-base-ms",
        "200",
    ]);
    let mut link = d.link("gw-dup");
    let first = link.login_ok(R1, 1, "dev-d");
    let m = d.push_expect("dev-d", b"carry me", "delivered").unwrap();
    expect_push(&mut link, m, R1, b"carry me");

    link.send_login(R2, 2, &token("dev-d"));
    let (mut kicked, mut second, mut moved) = (false, None, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(kicked && second.is_some() && moved) {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = link
            .recv_timeout(left)
            .unwrap_or_else(|| panic!("kicked {kicked}, login ok {second:?}, push moved {moved}"));
        match reply.kind {
            Kind::StatePush if route_of(&reply) == R1 && !kicked => {
                check_push(&reply, m, R1, b"carry me") // a re-send before the KICK
            }
            Kind::StatePush => {
                check_push(&reply, m, R2, b"carry me");
                moved = true;
            }
            Kind::Kick => {
                check_routed_error(&reply, Kind::Kick, 0, R1, 12);
                assert!(!kicked, "two KICKs");
                kicked = true;
            }
            _ => {
                let ok = check_login_ok(&reply, 2, R2);
                assert_ne!(ok.session, first.session, "a new session");
                second = Some(ok);
            }
        }
    }
    let second = second.unwrap();
    let s = d.session_of("dev-d");
    assert_eq!(s["session"], second.session.as_str(), "{s}");
    assert_eq!(s["route"].as_u64(), Some(R2), "{s}");
    assert_eq!(s["pending"], 1, "{s}");
    link.ack(R2, m);
    eventually(Duration::from_secs(2), "pending 0", || {
        pending_of(&d, "dev-d") == 0
    });
    // Drain re-sends that were already on their way, then the old session is gone.
    while let Some(reply) = link.recv_timeout(Duration::from_millis(300)) {
        check_push(&reply, m, R2, b"carry me");
    }
    check_routed_error(
        &link.resume(R3, 3, &first.resume_token),
        Kind::LoginFail,
        3,
        R3,
        5,
    );

    // A login replacing a detached session: no KICK, and its queued push moves and is sent.
    link.closed(R2, "bye");
    eventually(Duration::from_secs(2), "detached", || {
        state_of(&d, "dev-d") == "detached"
    });
    let q = d.push_expect("dev-d", b"queued", "queued").unwrap();
    let third = check_login_ok(&link.login(R4, 4, &token("dev-d")), 4, R4);
    assert_ne!(third.session, second.session);
    let s = d.session_of("dev-d");
    assert_eq!(
        (&s["session"], &s["pending"]),
        (&json!(third.session), &json!(1)),
        "{s}"
    );
    let reply = link
        .recv_timeout(Duration::from_secs(5))
        .expect("the moved push is sent to the new session");
    check_push(&reply, q, R4, b"queued");
}

#[test]
fn duplicate_login_refuse_gives_login_fail_5() {
    let d = StateDaemon::start(&flags(&QUIET, &["--duplicate-login", "refuse"]));
    let mut link = d.link("gw-refuse");
    let first = link.login_ok(R1, 1, "dev-f");
    check_routed_error(
        &link.login(R2, 9, &token("dev-f")),
        Kind::LoginFail,
        9,
        R2,
        5,
    );
    link.expect_silence(Duration::from_millis(300));
    let s = d.session_of("dev-f");
    assert_eq!(s["session"], first.session.as_str(), "{s}");
    assert_eq!(s["route"].as_u64(), Some(R1), "{s}");
    assert_eq!(s["state"], "online", "{s}");
}

#[test]
fn two_gateways_get_their_own_pushes_and_a_bad_frame_closes_only_its_link() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--resume-window-s",
        "30",
        "--push-retry-base-ms",
        "10000",
    ]);
    let mut a = d.link("gw-a");
    let mut b = d.link("gw-b");
    // The same route number on two gateways names two connections.
    a.login_ok(R1, 1, "dev-a");
    b.login_ok(R1, 1, "dev-b");
    let mb = d.push_expect("dev-b", b"for b", "delivered").unwrap();
    expect_push(&mut b, mb, R1, b"for b");
    b.ack(R1, mb);
    let ma = d.push_expect("dev-a", b"for a", "delivered").unwrap();
    expect_push(&mut a, ma, R1, b"for a");
    a.ack(R1, ma);
    assert_eq!(d.session_of("dev-a")["gateway"], "gw-a");
    assert_eq!(d.session_of("dev-b")["gateway"], "gw-b");
    eventually(Duration::from_secs(2), "acks processed", || {
        pending_of(&d, "dev-a") == 0 && pending_of(&d, "dev-b") == 0
    });
    a.expect_silence(Duration::from_millis(100));
    b.expect_silence(Duration::from_millis(100));

    // A login of dev-a through gw-b KICKs it on gw-a.
    check_login_ok(&b.login(R2, 2, &token("dev-a")), 2, R2);
    check_routed_error(&a.recv(), Kind::Kick, 0, R1, 12);
    let s = d.session_of("dev-a");
    assert_eq!(
        (&s["gateway"], s["route"].as_u64()),
        (&json!("gw-b"), Some(R2))
    );

    // A malformed frame on gw-a: STATE_ERROR BAD_FRAME with its id, then close.
    a.login_ok(R3, 3, "dev-a2");
    let errors_before = d
        .metric("tether_state_link_errors_total")
        .expect("tether_state_link_errors_total");
    a.send_frame(Kind::StateLogin, 55, &[1, 2, 3]);
    a.expect_state_error(1, 55);
    eventually(Duration::from_secs(2), "link error counted", || {
        d.metric("tether_state_link_errors_total") == Some(errors_before + 1.0)
    });
    // gw-a's sessions stay as they are; a push to one is queued while the link is down.
    let s = d.session_of("dev-a2");
    assert_eq!(
        (&s["gateway"], &s["state"]),
        (&json!("gw-a"), &json!("online"))
    );
    let queued = d.push_expect("dev-a2", b"wait for gw-a", "queued").unwrap();

    // gw-b is not affected.
    b.heartbeat(&[R1, R2]);
    let mb2 = d.push_expect("dev-b", b"still here", "delivered").unwrap();
    expect_push(&mut b, mb2, R1, b"still here");
    b.ack(R1, mb2);
    check_login_ok(&b.login(R3, 4, &token("dev-b2")), 4, R3);

    // gw-a comes back and announces: the queued push reaches it.
    let mut a2 = StateLink::connect(&d.socket);
    a2.hello("gw-a");
    a2.announce(&[R3]);
    a2.announce_end();
    let reply = a2
        .recv_timeout(Duration::from_secs(5))
        .expect("the queued push after gw-a reconnected");
    check_push(&reply, queued, R3, b"wait for gw-a");
    a2.ack(R3, queued);
    assert_eq!(state_of(&d, "dev-a2"), "online");
    b.expect_silence(Duration::from_millis(100));
}

#[test]
fn bad_frames_get_state_error_and_close_the_link() {
    let d = StateDaemon::start(&QUIET);
    let before = d
        .metric("tether_state_link_errors_total")
        .expect("tether_state_link_errors_total");
    let mut count = 0.0;

    // A first frame that is not HELLO.
    let mut link = StateLink::connect(&d.socket);
    link.send_frame(Kind::AnnounceEnd, 0, &[]);
    let reply = link.expect(Kind::StateError);
    let code = tether_proto::ErrorBody::parse(&reply.body).unwrap().code;
    assert!(
        reply.id == 0 && (code == 1 || code == 3),
        "{}",
        describe(&reply)
    );
    link.expect_closed();
    count += 1.0;

    // HELLO with an empty, an over-long or a control-character gateway id.
    for id in [String::new(), "g".repeat(129), "gw\n1".to_string()] {
        let mut link = StateLink::connect(&d.socket);
        link.send_frame(Kind::Hello, 0, id.as_bytes());
        link.expect_state_error(1, 0);
        count += 1.0;
    }

    // Each of these, after a good HELLO: (bytes, code, id).
    let mut cases: Vec<(&str, Vec<u8>, u16, u64)> = Vec::new();
    cases.push(("len < 10", vec![0, 0, 0, 9], 1, 0));
    let too_large = (10 + (1u32 << 20) + 1).to_be_bytes().to_vec();
    cases.push(("body over 1 MiB, length field only", too_large, 2, 0));
    let mut unknown = Vec::new();
    unknown.extend_from_slice(&[0, 0, 0, 10, 0x4A, 0]);
    unknown.extend_from_slice(&1234u64.to_be_bytes());
    cases.push(("reserved kind 0x4A", unknown, 3, 1234));
    let mut push = Vec::new();
    encode::routed(&mut push, Kind::StatePush, 9, R1, b"x");
    cases.push(("STATE_PUSH from a gateway", push, 3, 9));
    let mut data = Vec::new();
    encode::frame(&mut data, Kind::Data, 10, b"hi");
    cases.push(("a client kind", data, 3, 10));
    let mut heartbeat = Vec::new();
    encode::frame(&mut heartbeat, Kind::Heartbeat, 0, &[0; 9]);
    cases.push(("HEARTBEAT with a partial route", heartbeat, 1, 0));
    let mut closed = Vec::new();
    encode::frame(&mut closed, Kind::Closed, 0, &[1, 2]);
    cases.push(("CLOSED shorter than a route", closed, 1, 0));
    for (what, bytes, code, id) in cases {
        let mut link = d.link(&format!("gw-bad-{count}"));
        link.send(&bytes);
        let reply = link.recv();
        assert_eq!(reply.kind, Kind::StateError, "{what}: {}", describe(&reply));
        let body = tether_proto::ErrorBody::parse(&reply.body).unwrap();
        assert_eq!(
            (body.code, reply.id),
            (code, id),
            "{what}: {}",
            describe(&reply)
        );
        link.expect_closed();
        count += 1.0;
    }

    // A body of exactly 1 MiB is accepted (a CLOSED for an unknown route: ignored).
    let mut link = d.link("gw-big");
    link.closed(0xdead, &"r".repeat((1 << 20) - 8));
    link.login_ok(R1, 1, "dev-big");

    eventually(Duration::from_secs(2), "every link error counted", || {
        d.metric("tether_state_link_errors_total") == Some(before + count)
    });
}

#[test]
fn announce_end_detaches_unannounced_sessions() {
    let d = StateDaemon::start(&QUIET);
    let mut first = d.link("gw-x");
    let x1 = first.login_ok(R1, 1, "x1");
    let x2 = first.login_ok(R2, 2, "x2");
    first.login_ok(R3, 3, "x3");
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state_of(&d, "x2"),
        "online",
        "the link going down changes nothing"
    );

    let mut link = StateLink::connect(&d.socket);
    link.hello("gw-x");
    link.announce(&[R1, 0xdead]);
    // An announced route the daemon has no session for is KICKed (TIMEOUT).
    let kick = link.expect(Kind::Kick);
    check_routed_error(&kick, Kind::Kick, 0, 0xdead, 10);
    // A login before ANNOUNCE_END is kept; its answer also shows ANNOUNCE was processed.
    link.login_ok(R4, 4, "x4");
    assert_eq!(
        state_of(&d, "x2"),
        "online",
        "nothing detached before ANNOUNCE_END"
    );
    link.announce(&[R3]);
    link.announce_end();
    eventually(Duration::from_secs(2), "x2 detached", || {
        state_of(&d, "x2") == "detached"
    });
    for device in ["x1", "x3", "x4"] {
        assert_eq!(state_of(&d, device), "online", "{device}");
    }
    assert_eq!(d.session_of("x1")["session"], x1.session.as_str());
    link.expect_silence(Duration::from_millis(100));

    // A vanished session can be resumed.
    let resumed = check_login_ok(&link.resume(R5, 5, &x2.resume_token), 5, R5);
    assert_eq!(resumed.session, x2.session);
    assert_eq!(state_of(&d, "x2"), "online");
}

#[test]
fn a_gateway_id_held_by_a_live_link_is_refused_and_taken_once_that_link_closes() {
    let d = StateDaemon::start(&QUIET);
    let mut old = d.link("gw-y");
    old.login_ok(R1, 1, "dev-y");
    // A second link naming the same id while the first lives: STATE_ERROR 5, closed.
    let mut second = StateLink::connect(&d.socket);
    second.send_frame(Kind::Hello, 0, b"gw-y");
    let reason = second.expect_state_error(5, 0);
    assert!(reason.contains("held by a live link"), "{reason}");
    eventually(Duration::from_secs(2), "the refusal counted", || {
        d.metric("tether_state_hellos_refused_total") == Some(1.0)
    });
    assert_eq!(d.metric("tether_state_link_errors_total"), Some(0.0));
    // The first link is untouched: its pushes still reach it.
    let m = d.push_expect("dev-y", b"still old", "delivered").unwrap();
    expect_push(&mut old, m, R1, b"still old");
    old.ack(R1, m);
    eventually(Duration::from_secs(2), "the ack processed", || {
        pending_of(&d, "dev-y") == 0
    });
    // Closed, the id is free: a new link (connected right after the close, before the daemon
    // may have read its EOF) takes it, announces and gets the pushes.
    drop(old);
    let mut new = StateLink::connect(&d.socket);
    new.hello("gw-y");
    new.announce(&[R1]);
    new.announce_end();
    let m = d
        .push_expect("dev-y", b"on the new link", "delivered")
        .unwrap();
    expect_push(&mut new, m, R1, b"on the new link");
    assert_eq!(state_of(&d, "dev-y"), "online");
    assert_eq!(d.metric("tether_state_hellos_refused_total"), Some(1.0));
}

#[test]
fn sigkill_and_restart_bring_back_sessions_and_unacked_pushes() {
    let mut d = StateDaemon::start(&[
        "--journal-fsync",
        "always",
        "--heartbeat-s",
        "30",
        "--resume-window-s",
        "30",
        "--push-retry-base-ms",
        "10000",
    ]);
    let mut link = d.link("gw-k");
    let k1 = link.login_ok(R1, 1, "k1");
    let k2 = link.login_ok(R2, 2, "k2");
    let k3 = link.login_ok(R3, 3, "k3");
    // k1's pushes (on R1) are checked only after the restart: skip them before.
    let not_resend = |r: &Reply| r.kind == Kind::StatePush && route_of(r) == R1;
    let m1 = d.push_expect("k1", b"one", "delivered").unwrap();
    let m2 = d.push_expect("k2", b"two", "delivered").unwrap();
    let reply = link
        .recv_skipping(Duration::from_secs(5), not_resend)
        .expect("push to k2");
    check_push(&reply, m2, R2, b"two");
    link.ack(R2, m2);
    let m3 = d.push_expect("k1", b"three", "delivered").unwrap();
    link.closed(R3, "bye");
    eventually(Duration::from_secs(2), "k3 detached, k2 acked", || {
        state_of(&d, "k3") == "detached" && pending_of(&d, "k2") == 0
    });
    let m4 = d.push_expect("k3", b"four", "queued").unwrap();
    assert_eq!(pending_of(&d, "k1"), 2);

    d.kill();
    assert!(
        link.recv_skipping(Duration::from_secs(2), not_resend)
            .is_none(),
        "nothing but k1's pushes before the link closed"
    );
    d.restart();

    let s1 = d.session_of("k1");
    assert_eq!(
        (&s1["session"], &s1["pending"]),
        (&json!(k1.session), &json!(2)),
        "{s1}"
    );
    assert_eq!(s1["route"].as_u64(), Some(R1), "{s1}");
    assert_eq!(s1["gateway"], "gw-k", "{s1}");
    let s2 = d.session_of("k2");
    assert_eq!(
        (&s2["session"], &s2["pending"]),
        (&json!(k2.session), &json!(0)),
        "{s2}"
    );
    let s3 = d.session_of("k3");
    assert_eq!(s3["session"], k3.session.as_str(), "{s3}");
    assert_eq!(
        (&s3["state"], &s3["pending"]),
        (&json!("detached"), &json!(1)),
        "{s3}"
    );

    // The gateway reconnects and announces k1 and k2: k1's pushes come again.
    let mut link = StateLink::connect(&d.socket);
    link.hello("gw-k");
    link.announce(&[R1, R2]);
    link.announce_end();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = link
            .recv_timeout(left)
            .unwrap_or_else(|| panic!("after restart only {seen:?} of [{m1}, {m3}] came again"));
        if reply.id == m1 {
            check_push(&reply, m1, R1, b"one");
        } else {
            check_push(&reply, m3, R1, b"three");
        }
        link.ack(R1, reply.id);
        seen.insert(reply.id);
    }
    eventually(Duration::from_secs(2), "k1 acked", || {
        pending_of(&d, "k1") == 0
    });
    assert_eq!(state_of(&d, "k1"), "online");
    assert_eq!(state_of(&d, "k2"), "online");

    // k3 resumes with the token it had before the crash and gets its queued push.
    let resumed = check_login_ok(&link.resume(R4, 7, &k3.resume_token), 7, R4);
    assert_eq!(resumed.session, k3.session);
    let reply = link
        .recv_skipping(Duration::from_secs(5), not_resend)
        .expect("k3's push after the resume");
    check_push(&reply, m4, R4, b"four");

    // Message ids keep increasing across the restart.
    let m5 = d.push_expect("k2", b"five", "delivered").unwrap();
    assert!(
        m5 > m4 && m4 > m3 && m3 > m2 && m2 > m1,
        "{m1} {m2} {m3} {m4} {m5}"
    );
}

#[test]
fn sigterm_flushes_the_journal_and_exits_0() {
    let mut d = StateDaemon::start(&flags(&QUIET, &["--journal-fsync", "no"]));
    let mut link = d.link("gw-term");
    let t1 = link.login_ok(R1, 1, "t1");
    let m = d.push_expect("t1", b"kept", "delivered").unwrap();
    expect_push(&mut link, m, R1, b"kept");
    let status = d.stop();
    assert!(status.success(), "SIGTERM exit: {status}");
    d.restart();
    let s = d.session_of("t1");
    assert_eq!(
        (&s["session"], &s["pending"]),
        (&json!(t1.session), &json!(1)),
        "{s}"
    );
}

/// The `journal-<g>.log` with the highest generation in `dir`.
fn newest_journal(dir: &std::path::Path) -> std::path::PathBuf {
    fs::read_dir(dir)
        .expect("journal dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let g: u64 = name
                .strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((g, dir.join(name)))
        })
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("no journal-*.log in {}", dir.display()))
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open journal");
    file.write_all(bytes).expect("append");
}

#[test]
fn a_torn_journal_tail_is_dropped_at_restart() {
    let mut d = StateDaemon::start(&flags(&QUIET, &["--journal-fsync", "always"]));
    let mut link = d.link("gw-torn");
    let j1 = link.login_ok(R1, 1, "j1");
    let j2 = link.login_ok(R2, 2, "j2");
    let m = d
        .push_expect("j1", b"before the tear", "delivered")
        .unwrap();
    expect_push(&mut link, m, R1, b"before the tear");
    drop(link);
    assert!(d.stop().success());

    // A partial record: a length of 100, a checksum, and only 10 bytes of payload.
    let mut partial = 100u32.to_le_bytes().to_vec();
    partial.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    partial.extend_from_slice(b"torn recor");
    append(&newest_journal(&d.journal), &partial);
    d.restart();
    assert_eq!(d.session_of("j1")["session"], j1.session.as_str());
    assert_eq!(pending_of(&d, "j1"), 1);
    assert_eq!(d.session_of("j2")["session"], j2.session.as_str());

    // What is written after the tear survives the next crash, and so do other tails a crash
    // can leave: a last record whose checksum fails, and a header cut short.
    let mut link = d.link("gw-torn");
    let j3 = link.login_ok(R3, 3, "j3");
    d.kill();
    let mut bad_crc = 12u32.to_le_bytes().to_vec();
    bad_crc.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    bad_crc.extend_from_slice(b"not a record");
    append(&newest_journal(&d.journal), &bad_crc);
    d.restart();
    let mut link = d.link("gw-torn");
    let j4 = link.login_ok(R4, 4, "j4");
    d.kill();
    append(&newest_journal(&d.journal), &[0x07, 0x00, 0x00]);
    d.restart();
    for (device, ok) in [("j1", &j1), ("j2", &j2), ("j3", &j3), ("j4", &j4)] {
        assert_eq!(
            d.session_of(device)["session"],
            ok.session.as_str(),
            "{device}"
        );
    }
    assert_eq!(pending_of(&d, "j1"), 1);
}

/// A record with a good checksum that the daemon never writes (a journal from another
/// program, or edited by hand): an ATTACH to a gateway index that no GATEWAY record
/// registered. The daemon refuses to start and names the record; it does not panic.
#[test]
fn a_record_naming_an_unregistered_gateway_refuses_the_start() {
    let mut d = StateDaemon::start(&QUIET);
    let login = d.link("gw-forged").login_ok(R1, 1, "forged");
    assert!(d.stop().success());
    let session = u64::from_str_radix(&login.session, 16).expect("a hex session id");
    let (mut journal, replay) =
        Journal::open(&d.journal, FsyncPolicy::Always).expect("open the journal");
    drop(replay);
    let mut attach = Vec::new();
    Record::Attach {
        session,
        gateway: 7,
        route: R2,
    }
    .encode(&mut attach);
    journal.append(&attach).expect("append");
    drop(journal);

    let args = StateDaemon::args(&d.socket, free_addr(), free_addr(), &d.journal, &[]);
    let mut child = Command::new(binary("tether-state"))
        .args(&args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tether-state");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tether-state") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tether-state started on a journal naming an unregistered gateway");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("replaying the journal: record")
            && stderr.contains("names gateway index 7"),
        "{stderr}"
    );
}

#[test]
fn the_socket_is_mode_0660_or_stricter() {
    let d = StateDaemon::start(&QUIET);
    let meta = fs::metadata(&d.socket).expect("socket file");
    assert!(meta.file_type().is_socket());
    let mode = meta.permissions().mode() & 0o777;
    assert_eq!(mode & !0o660, 0, "socket mode {mode:o}");
}

#[test]
fn a_second_daemon_on_the_same_socket_or_journal_refuses_to_start() {
    let d = StateDaemon::start(&QUIET);
    let other = temp_dir("state-second");

    let args = StateDaemon::args(
        &d.socket,
        free_addr(),
        free_addr(),
        &other.join("journal"),
        &[],
    );
    let mut second = StateDaemon::spawn_raw(&args);
    let status = second
        .wait_timeout(Duration::from_secs(5))
        .expect("a second daemon on the same socket is still running");
    assert!(!status.success(), "{status}");
    assert!(
        d.socket.exists(),
        "the second daemon removed the live socket"
    );
    d.link("gw-still-there").login_ok(R1, 1, "dev-2nd");

    let args = StateDaemon::args(
        &other.join("other.sock"),
        free_addr(),
        free_addr(),
        &d.journal,
        &[],
    );
    let mut third = StateDaemon::spawn_raw(&args);
    let status = third
        .wait_timeout(Duration::from_secs(5))
        .expect("a second daemon on the same journal is still running");
    assert!(!status.success(), "{status}");
    assert_eq!(state_of(&d, "dev-2nd"), "online");
    let _ = fs::remove_dir_all(&other);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let mut d = StateDaemon::start(&QUIET);
    d.kill();
    // Whatever SIGKILL left behind, make the path a socket file nobody listens on.
    let _ = fs::remove_file(&d.socket);
    drop(UnixListener::bind(&d.socket).expect("bind"));
    assert!(
        UnixStream::connect(&d.socket).is_err(),
        "the socket is stale"
    );
    d.restart();
    d.link("gw-stale").login_ok(R1, 1, "dev-stale");
}

#[test]
fn check_without_a_jwt_secret_exits_1_and_lists_every_error() {
    let dir = temp_dir("state-check");
    let socket = dir.join("s.sock").display().to_string();
    let journal = dir.join("journal").display().to_string();
    let check = |extra: &[&str]| {
        Command::new(binary("tether-state"))
            .arg("check")
            .args(["--socket", &socket, "--journal", &journal])
            .args(extra)
            .env_remove("TETHER_STATE_JWT_SECRET")
            .env_remove("TETHER_STATE_JWT_SECRET_FILE")
            .env_remove("TETHER_STATE_JOURNAL_FSYNC")
            .output()
            .expect("run tether-state check")
    };
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("jwt_secret"), "{stderr}");

    let config = dir.join("state.toml");
    fs::write(&config, "journal_fsync = \"sometimes\"\n").unwrap();
    let out = check(&["--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("jwt_secret") && stderr.contains("journal_fsync"),
        "both errors listed: {stderr}"
    );

    let out = check(&["--jwt-secret", "s3cr3t-never-printed"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stdout.contains("s3cr3t-never-printed") && !stderr.contains("s3cr3t-never-printed"),
        "the secret is printed: {stdout}{stderr}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_jwt_secret_can_come_from_a_file() {
    let dir = temp_dir("state-secret");
    let file = dir.join("secret");
    fs::write(&file, "secret-from-a-file").unwrap();
    let file_flag = file.display().to_string();
    let d = StateDaemon::start(&flags(&QUIET, &["--jwt-secret-file", &file_flag]));
    let mut link = d.link("gw-file");
    let good = tether_state::token::sign(b"secret-from-a-file", "dev-file", now_s() + 60);
    check_login_ok(&link.login(R1, 1, &good), 1, R1);
    check_routed_error(
        &link.login(R2, 2, &token("dev-other")),
        Kind::LoginFail,
        2,
        R2,
        5,
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn max_sessions_reached_gives_login_fail_6() {
    let d = StateDaemon::start(&flags(&QUIET, &["--max-sessions", "2"]));
    let mut link = d.link("gw-max");
    link.login_ok(R1, 1, "m1");
    link.login_ok(R2, 2, "m2");
    check_routed_error(&link.login(R3, 3, &token("m3")), Kind::LoginFail, 3, R3, 6);
    assert!(d.session("m3").is_none());
    assert_eq!(state_of(&d, "m1"), "online");
}

#[test]
fn retransmit_intervals_are_capped_by_push_retry_cap_ms() {
    let d = StateDaemon::start(&[
        "--heartbeat-s",
        "30",
        "--push-retry-base-ms",
        "200",
        "--push-retry-cap-ms",
        "300",
        "--push-retry-max",
        "5",
    ]);
    let mut link = d.link("gw-cap");
    link.login_ok(R1, 1, "dev-cap");
    let t0 = Instant::now();
    let m = d.push_expect("dev-cap", b"capped", "delivered").unwrap();
    let arrivals = collect_sends(&mut link, 5, m, b"capped");
    assert_eq!(arrivals.len(), 5, "push_retry_max 5");
    // Gaps of 200, then 300 (capped) instead of 400, 800 and 1600: sends 0, 200, 500, 800 and
    // 1100 ms after the first. Uncapped, the fifth could not come before 3000 ms, which is
    // past the upper bound here.
    check_send_offsets(t0, &arrivals, &[0, 200, 500, 800, 1100], 1500);
    // No sixth send (it would be due 300 ms after the fifth).
    link.expect_silence(Duration::from_millis(1500));
}

#[test]
fn the_jwt_leeway_is_configurable() {
    let d = StateDaemon::start(&flags(&QUIET, &["--jwt-leeway-s", "0"]));
    let mut link = d.link("gw-leeway");
    let now = now_s();
    let expired = tether_state::token::sign(SECRET.as_bytes(), "dev-l", now - 5);
    check_routed_error(&link.login(R1, 1, &expired), Kind::LoginFail, 1, R1, 5);
    let early = token_with(&json!({"sub": "dev-l", "exp": now + 60, "nbf": now + 5}));
    check_routed_error(&link.login(R1, 2, &early), Kind::LoginFail, 2, R1, 5);
    check_login_ok(&link.login(R1, 3, &token("dev-l")), 3, R1);
}

#[test]
fn a_compacted_journal_brings_everything_back_after_sigkill() {
    let mut d = StateDaemon::start(&flags(
        &QUIET,
        &["--journal-fsync", "always", "--compact-bytes", "1048576"],
    ));
    let mut link = d.link("gw-c");
    let c1 = link.login_ok(R1, 1, "c1");
    let c2 = link.login_ok(R2, 2, "c2");
    // 24 pushes of 60 kB: well over compact_bytes. Every other one is acknowledged.
    let mut unacked = Vec::new();
    for i in 0..24u8 {
        let payload = vec![i; 60_000];
        let m = d.push_expect("c1", &payload, "delivered").unwrap();
        expect_push(&mut link, m, R1, &payload);
        if i % 2 == 0 {
            link.ack(R1, m);
        } else {
            unacked.push((m, payload));
        }
    }
    link.closed(R2, "bye");
    eventually(Duration::from_secs(3), "acks and close processed", || {
        pending_of(&d, "c1") == 12 && state_of(&d, "c2") == "detached"
    });
    let m2 = d.push_expect("c2", b"for c2", "queued").unwrap();
    let snapshots = || {
        fs::read_dir(&d.journal)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("snapshot-") && n.ends_with(".snap"))
            .count()
    };
    // The snapshot is written on the daemon's compaction thread: it may land a little later.
    eventually(Duration::from_secs(5), "a compaction's snapshot", || {
        snapshots() >= 1
    });
    let c3 = link.login_ok(R3, 3, "c3");

    d.kill();
    d.restart();
    let s = d.session_of("c1");
    assert_eq!(
        (&s["session"], &s["pending"]),
        (&json!(c1.session), &json!(12)),
        "{s}"
    );
    let s = d.session_of("c2");
    assert_eq!(
        (&s["session"], &s["pending"]),
        (&json!(c2.session), &json!(1)),
        "{s}"
    );
    assert_eq!(s["state"], "detached", "{s}");
    assert_eq!(d.session_of("c3")["session"], c3.session.as_str());

    // The gateway comes back without c1's connection; c1 resumes and gets its 12 unacked
    // pushes, oldest first, payloads intact; c2 resumes and gets its queued push.
    let mut link = StateLink::connect(&d.socket);
    link.hello("gw-c");
    link.announce(&[R3]);
    link.announce_end();
    check_login_ok(&link.resume(R4, 4, &c1.resume_token), 4, R4);
    for (m, payload) in &unacked {
        expect_push(&mut link, *m, R4, payload);
    }
    check_login_ok(&link.resume(R5, 5, &c2.resume_token), 5, R5);
    expect_push(&mut link, m2, R5, b"for c2");
    assert_eq!(state_of(&d, "c3"), "online");
}
