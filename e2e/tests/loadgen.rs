//! tether-loadgen against real echo nodes (every reply verified, the summary complete) and
//! as a real client of the whole stack: JWT logins and heartbeats through a gateway with a
//! state daemon, pushes acknowledged (nothing left pending), gateways found through
//! tether-ipconfig, and a gateway's GOAWAY followed by RESUME on the other one.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tether_e2e::state::{temp_dir, write_api_tokens, StateDaemon, SECRET};
use tether_e2e::{binary, echo_node, eventually, gateway_with_state, ipconfig, listed, loadgen};

fn run_loadgen(args: &[&str], json: &std::path::Path) -> (bool, serde_json::Value, String) {
    let out = Command::new(binary("tether-loadgen"))
        .args(args)
        .args(["--quiet", "--json", json.to_str().unwrap()])
        .output()
        .expect("run tether-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no summary at {}: {e}\n{stdout}", json.display()));
    let summary = serde_json::from_str(&text).expect("summary is JSON");
    (out.status.success(), summary, stdout)
}

fn temp_json(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tether-e2e-{name}-{}.json", std::process::id()))
}

/// 1,000 concurrent connections pipelining DATA, every payload checked.
#[test]
fn a_thousand_pipelining_connections_get_every_payload_back() {
    let (_a, addr_a) = echo_node(&["--reactors", "2"]);
    let (_b, addr_b) = echo_node(&["--reactors", "1"]);
    let targets = format!("{addr_a},{addr_b}");
    let json = temp_json("pipeline");
    let (ok, s, stdout) = run_loadgen(
        &[
            "--target",
            &targets,
            "--conns",
            "1000",
            "--pipeline",
            "4",
            "--payload",
            "64",
            "--duration",
            "3",
            "--threads",
            "2",
        ],
        &json,
    );
    assert!(ok, "loadgen reported failure:\n{stdout}\n{s:#}");
    assert_eq!(s["conns"]["established"], 1000, "{s:#}");
    assert_eq!(s["conns"]["failed"], 0, "{s:#}");
    assert_eq!(s["conns"]["dropped"], 0, "{s:#}");
    assert_eq!(s["verify_failures"], 0, "{s:#}");
    let received = s["frames"]["received"].as_u64().unwrap();
    let sent = s["frames"]["sent"].as_u64().unwrap();
    assert!(received >= 10_000, "a real load, not a trickle: {s:#}");
    assert!(received <= sent, "{s:#}");
    assert!(s["throughput_per_s"].as_f64().unwrap() > 0.0);
    let lat = &s["latency_us"];
    let (p50, p99, max) = (
        lat["p50"].as_u64().unwrap(),
        lat["p99"].as_u64().unwrap(),
        lat["max"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{lat}");
    for key in ["p90", "p999"] {
        assert!(lat[key].is_u64(), "latency_us.{key} missing: {lat}");
    }
    assert!(s["errors"].is_object());
    let _ = std::fs::remove_file(json);
}

/// Open loop: the offered rate is kept, so frames sent ≈ conns × rate × duration.
#[test]
fn open_loop_keeps_the_offered_rate() {
    let (_node, addr) = echo_node(&[]);
    let json = temp_json("rate");
    let target = addr.to_string();
    let (ok, s, stdout) = run_loadgen(
        &[
            "--target",
            &target,
            "--conns",
            "50",
            "--rate",
            "100",
            "--payload",
            "32",
            "--duration",
            "2",
        ],
        &json,
    );
    assert!(ok, "{stdout}\n{s:#}");
    assert_eq!(s["verify_failures"], 0);
    let sent = s["frames"]["sent"].as_u64().unwrap() as f64;
    let expected = 50.0 * 100.0 * 2.0;
    assert!(
        (sent - expected).abs() / expected < 0.1,
        "sent {sent}, expected about {expected}: {s:#}"
    );
    let _ = std::fs::remove_file(json);
}

/// A node that dies mid-run shows up as dropped connections and a failing exit status.
#[test]
fn a_dead_node_is_reported_not_hidden() {
    let (node, addr) = echo_node(&[]);
    let json = temp_json("dead");
    let target = addr.to_string();
    let child = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        node.signal(libc::SIGKILL);
        node
    });
    let (ok, s, _) = run_loadgen(
        &[
            "--target",
            &target,
            "--conns",
            "20",
            "--pipeline",
            "2",
            "--duration",
            "2",
        ],
        &json,
    );
    let _node = child.join().unwrap();
    assert!(!ok, "losing every connection must fail the run: {s:#}");
    assert_eq!(s["conns"]["dropped"], 20, "{s:#}");
    assert_eq!(s["verify_failures"], 0);
    let _ = std::fs::remove_file(json);
}

/// Connections the gateway accepted so far, from `/stats`.
fn accepted(admin: SocketAddr) -> u64 {
    tether_e2e::stats(admin)["totals"]["accepted"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the gateway has accepted the one start-up probe `gateway()` made on its client
/// port (`wait_for_port`): the kernel completes that connection before the gateway's
/// acceptors exist, and they take it only later.
fn probe_accepted(admin: SocketAddr) {
    eventually(
        Duration::from_secs(10),
        "the start-up probe accepted",
        || accepted(admin) >= 1,
    );
}

/// Runs tether-loadgen on a thread, so a test can act on the stack while it runs.
fn loadgen_in_background(args: Vec<String>) -> thread::JoinHandle<(bool, serde_json::Value)> {
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loadgen(&args)
    })
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every connection logs in with its own JWT and heartbeats; pushes POSTed to the state
/// daemon during the run reach their devices, are acknowledged, and nothing stays pending.
#[test]
fn jwt_logins_heartbeats_and_pushes_through_a_gateway_with_state() {
    let state = StateDaemon::start(&["--heartbeat-s", "1"]);
    let (_node, node) = echo_node(&["--reactors", "1"]);
    let (_gw, listen, _admin) = gateway_with_state(&[node], &state.socket, "gw-lg", &[]);
    let conns = 400;
    let load = loadgen_in_background(
        [
            "--target",
            &listen.to_string(),
            "--jwt-secret",
            SECRET,
            "--device-prefix",
            "e2e-lg",
            "--conns",
            &conns.to_string(),
            "--rate",
            "20",
            "--duration",
            "3.5",
            "--threads",
            "2",
        ]
        .map(String::from)
        .to_vec(),
    );
    // Push to 50 devices once they are all online, each payload stamped with its send time.
    eventually(Duration::from_secs(10), "every device logged in", || {
        state.metric("tether_state_sessions{state=\"online\"}") == Some(conns as f64)
    });
    thread::sleep(Duration::from_millis(300));
    let devices: Vec<String> = (0..50).map(|i| format!("e2e-lg-{}", i * 7)).collect();
    for device in &devices {
        let now_us = tether_e2e::state::now_ms() * 1000;
        let mut payload = now_us.to_be_bytes().to_vec();
        payload.extend_from_slice(b"e2e push");
        state.push_expect(device, &payload, "delivered");
    }
    let (ok, s) = load.join().expect("loadgen thread");
    assert!(ok, "loadgen reported failure: {s:#}");
    assert_eq!(s["login"], "jwt", "{s:#}");
    assert_eq!(n(&s["conns"]["logged_in"]), conns, "{s:#}");
    assert_eq!(n(&s["logins"]["ok"]), conns, "{s:#}");
    assert_eq!(n(&s["logins"]["failed"]), 0, "{s:#}");
    assert_eq!(s["errors"], serde_json::json!({}), "{s:#}");
    // heartbeat_s = 1 from LOGIN_OK: about 3 PINGs per connection, answered.
    let (sent, pongs) = (n(&s["heartbeats"]["sent"]), n(&s["heartbeats"]["pongs"]));
    assert!(sent >= 2 * conns, "{s:#}");
    assert!(pongs + conns >= sent, "{s:#}");
    let push = &s["push"];
    assert_eq!(n(&push["unique"]), 50, "{s:#}");
    assert_eq!(n(&push["acked"]), n(&push["received"]), "{s:#}");
    assert_eq!(n(&push["out_of_order"]), 0, "{s:#}");
    let p50 = n(&push["latency_us"]["p50"]);
    assert!((1..5_000_000).contains(&p50), "{s:#}");
    for device in &devices {
        eventually(Duration::from_secs(5), "the push acknowledged", || {
            state.session_of(device)["pending"] == 0
        });
    }
    assert_eq!(state.metric("tether_state_pushes_pending"), Some(0.0));
}

/// Gateways found through `/ip_list`: two gateways report to a real tether-ipconfig, the
/// connections spread over both, and the loadgen's own pushes (`--push-rate`, with a bearer
/// token from `--push-token-file`) all arrive.
#[test]
fn ipconfig_spreads_connections_and_push_rate_pushes_arrive() {
    let tokens = temp_dir("loadgen-push-token");
    let (token_file, api_tokens) = (tokens.join("push-token"), tokens.join("api-tokens"));
    std::fs::write(&token_file, "loadgen-push-token-5f0c\n").expect("write the push token");
    write_api_tokens(
        &api_tokens,
        &[("loadgen", "loadgen-push-token-5f0c", "push")],
    );
    let state = StateDaemon::start(&["--api-tokens-file", api_tokens.to_str().unwrap()]);
    let (_node, node) = echo_node(&["--reactors", "1"]);
    let (_ipc, ipc) = ipconfig(&["--stale-after-ms", "3000"]);
    let url = format!("http://{ipc}");
    let report = ["--ipconfig", url.as_str(), "--report-interval-ms", "100"];
    let (_gw1, _, admin1) = gateway_with_state(&[node], &state.socket, "gw-1", &report);
    let (_gw2, _, admin2) = gateway_with_state(&[node], &state.socket, "gw-2", &report);
    eventually(Duration::from_secs(5), "both gateways listed", || {
        listed(ipc) == ["gw-1", "gw-2"]
    });
    let conns = 300;
    // The start-up probes (wait_for_port) were connections too.
    probe_accepted(admin1);
    probe_accepted(admin2);
    let before = (accepted(admin1), accepted(admin2));
    let push_url = format!("http://{}", state.http);
    let (ok, s) = loadgen(&[
        "--ipconfig",
        &url,
        "--jwt-secret",
        SECRET,
        "--device-prefix",
        "e2e-ipc",
        "--conns",
        &conns.to_string(),
        "--pipeline",
        "2",
        "--duration",
        "2.5",
        "--threads",
        "2",
        "--push-rate",
        "200",
        "--push-url",
        &push_url,
        "--push-token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(ok, "loadgen reported failure: {s:#}");
    assert_eq!(n(&s["conns"]["logged_in"]), conns, "{s:#}");
    assert_eq!(s["errors"], serde_json::json!({}), "{s:#}");
    let (a, b) = (accepted(admin1) - before.0, accepted(admin2) - before.1);
    assert_eq!(a + b, conns, "gw-1 {a}, gw-2 {b}");
    assert!(
        a > 0 && b > 0,
        "ties are dealt over both gateways: gw-1 {a}, gw-2 {b}"
    );
    let api = &s["push_api"];
    let posted = n(&api["posted"]);
    assert!(posted >= 300, "200/s for 2.25 s: {s:#}");
    assert_eq!(n(&api["delivered"]), posted, "{s:#}");
    // Every message reached its device exactly once as a new id, and was acknowledged.
    assert_eq!(n(&s["push"]["unique"]), posted, "{s:#}");
    assert_eq!(n(&s["push"]["acked"]), n(&s["push"]["received"]), "{s:#}");
    assert!(s["push"]["latency_us"]["p99"].is_u64(), "{s:#}");
    eventually(Duration::from_secs(5), "no push pending", || {
        state.metric("tether_state_pushes_pending") == Some(0.0)
    });
    let _ = std::fs::remove_dir_all(&tokens);
}

/// SIGTERM one of two gateways mid-run: its clients get GOAWAY, find the other through
/// `/ip_list`, RESUME their sessions there, and the run passes; pushes sent meanwhile (some
/// queued while their sessions were detached) all arrive.
#[test]
fn goaway_clients_resume_on_the_other_gateway() {
    let state = StateDaemon::start(&[]);
    let (_node, node) = echo_node(&["--reactors", "1"]);
    let (_ipc, ipc) = ipconfig(&["--stale-after-ms", "3000"]);
    let url = format!("http://{ipc}");
    let report = [
        "--ipconfig",
        url.as_str(),
        "--report-interval-ms",
        "100",
        "--drain-timeout-ms",
        "10000",
    ];
    let (mut leaving, _, admin_x) = gateway_with_state(&[node], &state.socket, "gw-x", &report);
    let (_staying, _, admin_y) = gateway_with_state(&[node], &state.socket, "gw-y", &report);
    eventually(Duration::from_secs(5), "both gateways listed", || {
        listed(ipc) == ["gw-x", "gw-y"]
    });
    let conns: u64 = 400;
    // The start-up probes (wait_for_port) were connections too.
    probe_accepted(admin_x);
    probe_accepted(admin_y);
    let before = (accepted(admin_x), accepted(admin_y));
    let push_url = format!("http://{}", state.http);
    let load = loadgen_in_background(
        [
            "--ipconfig",
            &url,
            "--jwt-secret",
            SECRET,
            "--device-prefix",
            "e2e-goaway",
            "--conns",
            &conns.to_string(),
            "--rate",
            "20",
            "--duration",
            "4",
            "--threads",
            "2",
            "--push-rate",
            "200",
            "--push-url",
            &push_url,
        ]
        .map(String::from)
        .to_vec(),
    );
    eventually(Duration::from_secs(10), "every device logged in", || {
        state.metric("tether_state_sessions{state=\"online\"}") == Some(conns as f64)
    });
    thread::sleep(Duration::from_millis(500));
    let on_x = accepted(admin_x) - before.0;
    assert!(on_x > 0, "gw-x has clients to send away");
    let signalled = Instant::now();
    leaving.signal(libc::SIGTERM);
    let status = leaving
        .wait_timeout(Duration::from_secs(15))
        .expect("gw-x exits once its clients left");
    assert!(status.success(), "gw-x: {status}");
    // Well short of the 10 s drain timeout.
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "the clients left at once, not at the drain timeout: {:?}",
        signalled.elapsed()
    );
    let (ok, s) = load.join().expect("loadgen thread");
    assert!(ok, "a GOAWAY followed by a resume is not a failure: {s:#}");
    assert_eq!(n(&s["conns"]["dropped"]), 0, "{s:#}");
    let re = &s["reconnects"];
    assert_eq!(n(&re["goaways"]), on_x, "{s:#}");
    assert_eq!(n(&re["ok"]), on_x, "{s:#}");
    assert_eq!(n(&s["resumes"]["ok"]), on_x, "{s:#}");
    assert_eq!(
        n(&s["resumes"]["failed"]) + n(&s["resumes"]["new_session"]),
        0,
        "{s:#}"
    );
    assert_eq!(s["verify_failures"], 0, "{s:#}");
    let on_y = accepted(admin_y) - before.1;
    assert_eq!(on_y, conns, "gw-y took gw-x's {on_x} clients");
    let api = &s["push_api"];
    let accepted_pushes = n(&api["delivered"]) + n(&api["queued"]);
    assert_eq!(n(&api["offline"]) + n(&api["failed"]), 0, "{s:#}");
    assert_eq!(
        n(&s["push"]["unique"]),
        accepted_pushes,
        "no push lost: {s:#}"
    );
    eventually(Duration::from_secs(5), "no push pending", || {
        state.metric("tether_state_pushes_pending") == Some(0.0)
    });
}
