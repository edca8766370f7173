//! tether-loadgen against real echo nodes: every reply verified, the summary complete.

use std::process::Command;

use tether_e2e::{binary, echo_node};

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
