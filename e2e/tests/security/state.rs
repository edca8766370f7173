//! The state daemon's trust boundaries, each probe as an attacker tried it and the legitimate
//! path beside it: the push API's bearer tokens and scopes (push to someone else's device,
//! read or end their session), the metrics listener kept apart from it, `check` refusing an
//! open push API off loopback, token rotation on SIGHUP, the state socket's peer allow-list
//! (a foreign uid), and HELLO refused for a gateway id a live link holds — while a gateway
//! killed and restarted at once takes its id straight back.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_e2e::state::{
    check_push, check_routed_error, gateway_login, hello_as, temp_dir, write_api_tokens,
    StateDaemon, StateLink,
};
use tether_e2e::{
    binary, echo_node, eventually, gateway_with_state, http_get, http_request, Client, Proc,
};
use tether_proto::Kind;

const R1: u64 = 0x0100_0001_0000_0001;
const R2: u64 = 0x0200_0002_0000_0002;

/// The push API's tokens in these tests (the file holds their SHA-256 only).
const PUSHER: &str = "pusher-7d1c0e9a4b2f4f3e8a6b5c4d3e2f1a0b";
const READER: &str = "reader-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const OPERATOR: &str = "operator-f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// Timers that never fire during these tests.
const QUIET: [&str; 4] = ["--heartbeat-s", "30", "--push-retry-base-ms", "10000"];

/// A token file in a fresh directory: `backend` may push, `support` read sessions, `ops`
/// kick.
fn token_file() -> PathBuf {
    let file = temp_dir("security-tokens").join("api-tokens");
    write_api_tokens(
        &file,
        &[
            ("backend", PUSHER, "push"),
            ("support", READER, "sessions:read"),
            ("ops", OPERATOR, "kick"),
        ],
    );
    file
}

fn daemon_with(file: &std::path::Path) -> StateDaemon {
    let path = file.to_str().expect("UTF-8 path");
    let mut args = vec!["--api-tokens-file", path];
    args.extend_from_slice(&QUIET);
    StateDaemon::start(&args)
}

fn push_body(device: &str, payload: &str) -> Vec<u8> {
    json!({ "device_id": device, "payload": payload })
        .to_string()
        .into_bytes()
}

fn denied(d: &StateDaemon, reason: &str) -> f64 {
    d.metric(&format!(
        "tether_state_api_denied_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or_else(|| panic!("no api_denied_total{{reason={reason}}}"))
}

#[test]
fn the_push_api_refuses_requests_without_the_token_and_scope_they_need() {
    let file = token_file();
    let d = daemon_with(&file);
    let mut link = d.link("gw-victim");
    let victim = link.login_ok(R1, 1, "victim");
    let body = push_body("victim", "aGk="); // "hi"

    // Probe: a local user pushes to someone else's logged-in device.
    let a = d.api("POST", "/v1/push", None, &body);
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.header("WWW-Authenticate"),
        Some(r#"Bearer realm="tether-state""#)
    );
    assert_eq!(
        a.json(),
        json!({"error": "a bearer token is required (Authorization: Bearer <token>)"})
    );
    let a = d.api("POST", "/v1/push", Some("a-guessed-token"), &body);
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.header("WWW-Authenticate"),
        Some(r#"Bearer realm="tether-state", error="invalid_token""#)
    );
    assert_eq!(a.json(), json!({"error": "unknown bearer token"}));
    let a = d.api("POST", "/v1/push", Some(READER), &body);
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(
        a.header("WWW-Authenticate"),
        Some(r#"Bearer realm="tether-state", error="insufficient_scope", scope="push""#)
    );
    assert_eq!(
        a.json(),
        json!({"error": "this token lacks the scope \"push\""})
    );
    link.expect_silence(Duration::from_millis(300));

    // Probe: reading its session (gateway, route, login time), and ending it.
    let refusals = [
        (None, 401),
        (Some("a-guessed-token"), 401),
        (Some(PUSHER), 403),
        (Some(OPERATOR), 403),
    ];
    for (token, status) in refusals {
        let a = d.api("GET", "/v1/sessions/victim", token, b"");
        assert_eq!(a.status, status, "GET with {token:?}: {a:?}");
        assert!(a.json()["error"].is_string(), "{a:?}");
        assert!(
            !a.body.contains("gw-victim") && !a.body.contains("login_unix_ms"),
            "{a:?}"
        );
    }
    for (token, status) in [(None, 401), (Some(PUSHER), 403), (Some(READER), 403)] {
        let a = d.api("DELETE", "/v1/sessions/victim", token, b"");
        assert_eq!(a.status, status, "DELETE with {token:?}: {a:?}");
        assert!(a.json()["error"].is_string(), "{a:?}");
    }
    link.expect_silence(Duration::from_millis(300));
    assert_eq!(
        d.metric("tether_state_pushes_total{status=\"delivered\"}"),
        Some(0.0)
    );
    eventually(Duration::from_secs(2), "every refusal counted", || {
        denied(&d, "missing_token") == 3.0
            && denied(&d, "unknown_token") == 2.0
            && denied(&d, "missing_scope") == 5.0
    });

    // The legitimate paths, each with its own token.
    let a = d.api("POST", "/v1/push", Some(PUSHER), &body);
    assert_eq!(
        (a.status, &a.json()["status"]),
        (200, &json!("delivered")),
        "{a:?}"
    );
    let msg = a.json()["msg_id"].as_u64().expect("msg_id");
    check_push(&link.recv(), msg, R1, b"hi");
    let a = d.api("GET", "/v1/sessions/victim", Some(READER), b"");
    assert_eq!(a.status, 200, "{a:?}");
    let s = a.json();
    assert_eq!(
        (&s["gateway"], s["route"].as_u64(), &s["session"]),
        (&json!("gw-victim"), Some(R1), &json!(victim.session)),
        "{s}"
    );

    // Ending the session: the gateway is told KICK 12; the session is gone for good.
    let a = d.api("DELETE", "/v1/sessions/victim", Some(OPERATOR), b"");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json(),
        json!({
            "session": victim.session,
            "device_id": "victim",
            "was_online": true,
            "dropped_pushes": 1,
        })
    );
    check_routed_error(&link.recv(), Kind::Kick, 0, R1, 12);
    let a = d.api("GET", "/v1/sessions/victim", Some(READER), b"");
    assert_eq!(a.status, 404, "{a:?}");
    let a = d.api("DELETE", "/v1/sessions/victim", Some(OPERATOR), b"");
    assert_eq!(a.status, 404, "{a:?}");
    check_routed_error(
        &link.resume(R2, 5, &victim.resume_token),
        Kind::LoginFail,
        5,
        R2,
        5,
    );
    assert_eq!(
        d.metric("tether_state_kicks_total{reason=\"operator\"}"),
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(file.parent().expect("token dir"));
}

#[test]
fn metrics_are_served_on_their_own_listener_and_not_beside_the_push_api() {
    let file = token_file();
    let d = daemon_with(&file);
    // Probe: scraping the push API's listener.
    let (status, body) = http_get(d.http, "/metrics");
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("metrics listener")),
        "{v}"
    );
    assert_eq!(d.api("GET", "/metrics", Some(PUSHER), b"").status, 404);
    // The metrics listener: unauthenticated, and nothing of the push API.
    let (status, text) = http_get(d.metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\ntether_state_api_tokens 3\n"), "{text}");
    let bearer = format!("Bearer {PUSHER}");
    let a = http_request(
        d.metrics,
        "POST",
        "/v1/push",
        &[("Authorization", &bearer)],
        &push_body("anyone", "aGk="),
    );
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(http_get(d.metrics, "/v1/sessions/anyone").0, 404);
    // Health on both.
    for addr in [d.http, d.metrics] {
        assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_string()));
    }
    let _ = std::fs::remove_dir_all(file.parent().expect("token dir"));
}

#[test]
fn tokens_rotate_on_sighup_without_a_restart() {
    let file = temp_dir("security-rotate").join("api-tokens");
    write_api_tokens(
        &file,
        &[
            ("old", "old-token-1", "push"),
            ("new", "new-token-2", "push"),
        ],
    );
    let mut d = daemon_with(&file);
    let body = push_body("nobody", "aGk=");
    let status = |d: &StateDaemon, token| d.api("POST", "/v1/push", Some(token), &body).status;
    assert_eq!(
        (status(&d, "old-token-1"), status(&d, "new-token-2")),
        (200, 200)
    );
    write_api_tokens(&file, &[("new", "new-token-2", "push")]);
    d.reload();
    eventually(Duration::from_secs(5), "the old token refused", || {
        status(&d, "old-token-1") == 401
    });
    let a = d.api("POST", "/v1/push", Some("new-token-2"), &body);
    assert_eq!(
        (a.status, a.json()["status"].clone()),
        (200, json!("offline"))
    );
    assert_eq!(d.metric("tether_state_api_tokens"), Some(1.0));
    let pid = d.proc().child.id();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon kept running"
    );
    let _ = std::fs::remove_dir_all(file.parent().expect("token dir"));
}

#[test]
fn check_and_start_refuse_a_public_push_api_without_tokens() {
    let dir = temp_dir("security-check");
    let socket = dir.join("s.sock").display().to_string();
    let journal = dir.join("journal").display().to_string();
    let run = |sub: Option<&str>, extra: &[&str]| {
        let mut command = Command::new(binary("tether-state"));
        command.args(sub);
        command
            .args(["--socket", &socket, "--journal", &journal])
            .args(["--jwt-secret", "s3cret", "--http", "0.0.0.0:1"])
            .args(extra)
            .env_remove("TETHER_STATE_API_TOKENS_FILE")
            .env_remove("TETHER_STATE_HTTP");
        command.output().expect("run tether-state")
    };
    for sub in [Some("check"), None] {
        let out = run(sub, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sub:?}: {stderr}");
        assert!(
            stderr.contains(
                "api_tokens_file: required when http (0.0.0.0:1) is not a loopback address"
            ),
            "{sub:?}: {stderr}"
        );
    }
    let file = dir.join("api-tokens");
    write_api_tokens(&file, &[("backend", PUSHER, "push")]);
    let out = run(
        Some("check"),
        &["--api-tokens-file", file.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(PUSHER), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_outside_the_allow_list_is_refused_at_connect() {
    // Without privileges: an allow-list that leaves this very process out.
    // SAFETY: getters without side effects.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut args = vec!["--allow-uids", "4000000000", "--allow-gids", "4000000000"];
    args.extend_from_slice(&QUIET);
    let d = StateDaemon::start(&args);
    let mut link = StateLink::connect(&d.socket);
    let _ = link.try_send(&hello_frame("gw-intruder"));
    let reason = link.expect_state_error(5, 0);
    assert_eq!(
        reason,
        format!("uid {uid} gid {gid} may not use this socket (allow_uids, allow_gids)")
    );
    // Counted with the start-up probes' connections, refused the same way (how many the
    // start-up made is not known here).
    let refused = d.metric("tether_state_peers_refused_total");
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
    assert_eq!(d.metric("tether_state_links_open"), Some(0.0));
    drop(d);

    if uid != 0 {
        eprintln!("not root: the probes as another uid are skipped");
        return;
    }
    // As the attacker was: uid 65534 on the daemon's default allow-list (its own uid, the
    // socket's group).
    let d = StateDaemon::start(&QUIET);
    let socket_gid = std::fs::metadata(&d.socket).expect("socket").gid();
    // With the socket's mode 0660 the kernel refuses it first.
    let a = hello_as(&d.socket, "gw-intruder", 65534, 65534, &[]);
    assert_eq!(a["connected"], false, "{a}");
    assert!(
        a["error"]
            .as_str()
            .is_some_and(|e| e.contains("ermission denied")),
        "{a}"
    );
    // On a socket opened to everyone by mistake, the daemon refuses it.
    let before = d.metric("tether_state_peers_refused_total").unwrap();
    let set_mode = |mode| {
        std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    set_mode(0o666);
    let a = hello_as(&d.socket, "gw-intruder", 65534, 65534, &[]);
    assert_eq!(
        a,
        json!({
            "connected": true,
            "kind": "STATE_ERROR",
            "code": 5,
            "reason": "uid 65534 gid 65534 may not use this socket (allow_uids, allow_gids)",
        })
    );
    eventually(Duration::from_secs(2), "the refusal counted", || {
        d.metric("tether_state_peers_refused_total") == Some(before + 1.0)
    });
    set_mode(0o660);
    // A member of the socket's group through a supplementary group — a gateway under
    // systemd with DynamicUser= and SupplementaryGroups= — is let in.
    let a = hello_as(&d.socket, "gw-member", 65534, 65534, &[socket_gid]);
    assert_eq!(a, json!({ "connected": true, "kind": "HELLO_OK" }));
}

fn hello_frame(gateway: &str) -> Vec<u8> {
    let mut out = Vec::new();
    tether_proto::encode::frame(&mut out, Kind::Hello, 0, gateway.as_bytes());
    out
}

/// A gateway with one echo node of its own, logging in through `state`, reconnecting fast.
fn gateway(state: &StateDaemon, id: &str) -> (Proc, Proc, std::net::SocketAddr) {
    let (node, node_addr) = echo_node(&["--reactors", "1"]);
    let fast = ["--reconnect-min-ms", "50", "--reconnect-max-ms", "200"];
    let (gw, listen, _admin) = gateway_with_state(&[node_addr], &state.socket, id, &fast);
    (node, gw, listen)
}

#[test]
fn a_hello_naming_a_live_gateway_is_refused_and_its_clients_keep_their_pushes() {
    let state = StateDaemon::start(&QUIET);
    let (_node, _gw, listen) = gateway(&state, "gw-victim");
    let (mut c, _) = gateway_login(listen, "victim");
    // Probe: another process in the socket's group introduces itself as the gateway's
    // reactors, to take their links and receive their pushes.
    for reactor in 0..2 {
        let mut intruder = StateLink::connect(&state.socket);
        intruder.send_frame(Kind::Hello, 0, format!("gw-victim/{reactor}").as_bytes());
        let reason = intruder.expect_state_error(5, 0);
        assert_eq!(
            reason,
            format!(
                "gateway id \"gw-victim/{reactor}\" is held by a live link; it is free once that link closes"
            )
        );
    }
    eventually(Duration::from_secs(2), "both refusals counted", || {
        state.metric("tether_state_hellos_refused_total") == Some(2.0)
    });
    assert_eq!(state.metric("tether_state_link_errors_total"), Some(0.0));
    // The gateway keeps its links: a push still reaches its client.
    let (status, v) = state.push("victim", b"for the victim", None);
    assert_eq!((status, &v["status"]), (200, &json!("delivered")), "{v}");
    let r = c.expect();
    assert_eq!(
        (r.kind, Some(r.id), r.body.as_slice()),
        (
            Kind::Push,
            v["msg_id"].as_u64(),
            b"for the victim".as_slice()
        )
    );
}

#[test]
fn a_gateway_killed_and_restarted_at_once_takes_its_id_back() {
    let state = StateDaemon::start(&QUIET);
    let (_node, mut gw, listen) = gateway(&state, "gw-phoenix");
    let (_c, login_ok) = gateway_login(listen, "dev-phoenix");
    gw.signal(libc::SIGKILL);
    gw.wait_timeout(Duration::from_secs(5))
        .expect("the gateway survived SIGKILL");
    // The same id at once, on new ports: it returns once both reactors' links are up.
    let killed = Instant::now();
    let (_node2, _gw2, listen2) = gateway(&state, "gw-phoenix");
    let took = killed.elapsed();
    eprintln!("the restarted gateway's links were up {took:?} after its predecessor died");
    assert_eq!(
        state.metric("tether_state_hellos_refused_total"),
        Some(0.0),
        "a HELLO of the restarted gateway was refused"
    );
    // Its client resumes through it and gets the pushes.
    let mut c = Client::connect(listen2);
    let resume_token = login_ok["resume_token"].as_str().expect("resume_token");
    c.send_frame(Kind::Resume, 2, resume_token.as_bytes());
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 2), "{r:?}");
    let (status, v) = state.push("dev-phoenix", b"after the restart", None);
    assert_eq!((status, &v["status"]), (200, &json!("delivered")), "{v}");
    let r = c.expect();
    assert_eq!(
        (r.kind, r.body.as_slice()),
        (Kind::Push, b"after the restart".as_slice())
    );
}
