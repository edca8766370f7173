//! C1M readiness on this machine: 15,000 logged-in connections through one gateway, from two
//! loadgen worker processes (`--procs 2`) on eight source addresses, held 60 s with
//! heartbeats only while 1% of them echo DATA at a fixed rate; none is dropped, every one
//! answers a PING at the end, and the gateway and the state daemon count exactly 15,000
//! throughout the hold. The echo subset's p99 goes to stderr and to
//! `$CARGO_TARGET_TMPDIR/c1m-summary.json`.

use std::thread;
use std::time::{Duration, Instant};

use tether_e2e::state::{StateDaemon, SECRET};
use tether_e2e::{echo_node, eventually, gateway, loadgen, metric, wait_for_state_links};

const CONNS: u64 = 15_000;
const HOLD_S: u64 = 60;
/// DATA per second per echoing connection (1% of them: 150 × 10 = 1,500/s).
const RATE: u64 = 10;

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn fifteen_thousand_logged_in_connections_held_a_minute_with_heartbeats() {
    // heartbeat_s = 10: six PINGs per connection during the hold, and a connection whose
    // heartbeats stopped would be kicked after 30 s, inside the hold.
    let state = StateDaemon::start(&["--heartbeat-s", "10"]);
    let (_node, node) = echo_node(&["--reactors", "1"]);
    let socket = state
        .socket
        .to_str()
        .expect("UTF-8 socket path")
        .to_string();
    let (_gw, listen, admin) = gateway(&[node], &["--state", &socket, "--id", "gw-c1m"]);
    wait_for_state_links(admin, 2, Duration::from_secs(10));

    let args: Vec<String> = [
        "--target",
        &listen.to_string(),
        "--jwt-secret",
        SECRET,
        "--device-prefix",
        "c1m",
        "--conns",
        &CONNS.to_string(),
        "--procs",
        "2",
        "--threads",
        "1",
        "--source-ips",
        "127.0.0.2-127.0.0.9",
        "--connect-rate",
        "5000",
        "--hold",
        &HOLD_S.to_string(),
        "--rate",
        &RATE.to_string(),
        "--echo-fraction",
        "0.01",
        "--connect-timeout",
        "10",
    ]
    .map(String::from)
    .to_vec();
    let load = thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loadgen(&args)
    });

    let online = || state.metric("tether_state_sessions{state=\"online\"}");
    let open = || metric(admin, "tether_gateway_connections_open");
    eventually(Duration::from_secs(60), "15,000 logged in", || {
        online() == Some(CONNS as f64) && open() == Some(CONNS as f64)
    });
    let all_in = Instant::now();
    // Halfway through the hold: still every session online and every connection open. Each
    // worker process holds from when its own connections are up, so one may have started
    // (and will end) its hold well before `all_in`; halfway leaves room for that.
    thread::sleep(Duration::from_secs(HOLD_S / 2));
    assert_eq!(
        online(),
        Some(CONNS as f64),
        "sessions online after {:?}",
        all_in.elapsed()
    );
    assert_eq!(
        open(),
        Some(CONNS as f64),
        "gateway connections after {:?}",
        all_in.elapsed()
    );

    let (ok, s) = load.join().expect("loadgen thread");
    let summary = serde_json::to_string_pretty(&s).unwrap_or_default();
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("c1m-summary.json"),
        &summary,
    );
    assert!(ok, "loadgen reported failure: {summary}");
    assert_eq!(n(&s["procs"]), 2, "{summary}");
    let c = &s["conns"];
    assert_eq!(
        (
            n(&c["established"]),
            n(&c["logged_in"]),
            n(&c["failed"]),
            n(&c["dropped"])
        ),
        (CONNS, CONNS, 0, 0),
        "{summary}"
    );
    assert_eq!(s["errors"], serde_json::json!({}), "{summary}");
    assert_eq!(s["verify_failures"], 0, "{summary}");
    // Every connection answered the PING at the end of the hold.
    assert_eq!(
        (n(&s["hold"]["checked"]), n(&s["hold"]["answered"])),
        (CONNS, CONNS),
        "{summary}"
    );
    // Heartbeats really happened: ~6 per connection in 60 s at 10 s, plus the check.
    let (sent, pongs) = (n(&s["heartbeats"]["sent"]), n(&s["heartbeats"]["pongs"]));
    assert!(sent >= 6 * CONNS, "{summary}");
    assert!(pongs + CONNS >= sent, "{summary}");
    // The 1% subset echoed at its rate, every reply verified.
    let expected = CONNS / 100 * RATE * HOLD_S;
    let received = n(&s["frames"]["received"]);
    assert!(
        received * 10 >= expected * 9,
        "{received} of ~{expected}: {summary}"
    );
    let p99 = n(&s["latency_us"]["p99"]);
    eprintln!(
        "c1m: {CONNS} held {HOLD_S} s, {received} echoes, p50 {} µs, p99 {p99} µs, p99.9 {} µs",
        s["latency_us"]["p50"], s["latency_us"]["p999"]
    );
    // After the run the connections are gone from the gateway.
    eventually(Duration::from_secs(10), "connections closed", || {
        open() == Some(0.0)
    });
}
