//! tether-ipconfig as gateways and clients see it: the real binary on a loopback port.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_e2e::{
    binary, eventually, free_addr, http_get, http_post, ipconfig, spawn_with_env, wait_for_port,
};

fn report(id: &str, addr: &str, spare_gib: f64, spare_conns: u64, draining: bool) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "addr": addr,
        "connections": 1000 - spare_conns,
        "max_connections": 1000,
        "bytes_in_per_s": 0,
        "bytes_out_per_s": 0,
        "bandwidth_bytes_per_s": spare_gib * (1u64 << 30) as f64,
        "cpu": 3.5,
        "draining": draining,
    })
    .to_string()
    .into_bytes()
}

fn ids(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["gateways"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| g["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gateways_report_and_clients_get_the_best_first() {
    let (_svc, addr) = ipconfig(&["--rebuild-interval-ms", "10", "--workers", "2"]);
    let (status, body) = http_get(addr, "/ip_list");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    for (id, gw, gib, conns, draining) in [
        ("gw-a", "10.0.0.1:8900", 1.0, 100, false),
        ("gw-b", "10.0.0.2:8900", 2.0, 100, false),
        ("gw-c", "10.0.0.3:8900", 2.0, 500, false),
        ("gw-d", "10.0.0.4:8900", 9.0, 900, true),
    ] {
        let (status, body) = http_post(addr, "/v1/report", &report(id, gw, gib, conns, draining));
        assert_eq!(status, 200, "{body}");
    }
    eventually(Duration::from_secs(5), "three gateways listed", || {
        ids(&http_get(addr, "/ip_list").1) == ["gw-c", "gw-b", "gw-a"]
    });
    let (_, body) = http_get(addr, "/ip_list");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["gateways"][0]["addr"], "10.0.0.3:8900");
    assert_eq!(v["gateways"][0]["score"]["dynamic"], 2.0);
    assert_eq!(v["gateways"][0]["score"]["static"], 500.0);
    assert!(v["generated_at_ms"].as_u64().unwrap() > 1_600_000_000_000);

    // A bad report is a 400 naming the field, and changes nothing.
    let mut bad: Value =
        serde_json::from_slice(&report("gw-a", "10.0.0.1:8900", 50.0, 1, false)).unwrap();
    bad["cpu"] = Value::from(-2);
    let (status, body) = http_post(addr, "/v1/report", bad.to_string().as_bytes());
    assert_eq!(status, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["field"], "cpu");
    assert!(err["error"].as_str().unwrap().starts_with("cpu: "));
    assert_eq!(ids(&http_get(addr, "/ip_list").1), ["gw-c", "gw-b", "gw-a"]);

    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("tether_ipconfig_reports_accepted_total 4\n"),
        "{text}"
    );
    assert!(text.contains("tether_ipconfig_reports_rejected_total{reason=\"invalid\"} 1\n"));
    // The gauge is set by a rebuild: the one that published the list above may have run
    // before gw-d's report was recorded, so wait for one that counted it.
    eventually(Duration::from_secs(5), "gw-d counted as draining", || {
        http_get(addr, "/metrics")
            .1
            .contains("tether_ipconfig_gateways{state=\"draining\"} 1\n")
    });
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[test]
fn a_silent_gateway_goes_stale() {
    let (_svc, addr) = ipconfig(&["--stale-after-ms", "1000", "--rebuild-interval-ms", "10"]);
    let (status, _) = http_post(
        addr,
        "/v1/report",
        &report("gw", "gw.example:8900", 1.0, 1, false),
    );
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "listed", || {
        http_get(addr, "/ip_list").0 == 200
    });
    let listed = Instant::now();
    eventually(Duration::from_secs(5), "dropped", || {
        http_get(addr, "/ip_list").0 == 503
    });
    // Dropped for staleness (1 s after the report), not kept for long after it.
    assert!(
        listed.elapsed() < Duration::from_secs(3),
        "{:?}",
        listed.elapsed()
    );
    let (_, text) = http_get(addr, "/metrics");
    assert!(
        text.contains("tether_ipconfig_gateways_stale_dropped_total 1\n"),
        "{text}"
    );
}

/// READY=1 once listening, STOPPING=1 and exit 0 on SIGTERM (and on SIGINT).
#[test]
fn notifies_systemd_and_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = std::env::temp_dir();
        let socket_path = dir.join(format!(
            "tether-ipconfig-notify-{}-{signal}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&socket_path);
        let notify = UnixDatagram::bind(&socket_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let addr = free_addr();
        let listen = addr.to_string();
        let mut proc = spawn_with_env(
            "tether-ipconfig",
            &["--listen", &listen],
            &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
        );
        let mut buf = [0u8; 64];
        let n = notify.recv(&mut buf).expect("READY=1");
        assert_eq!(&buf[..n], b"READY=1");
        // Ready means accepting: no wait needed.
        assert_eq!(http_get(addr, "/healthz").0, 200);
        proc.signal(signal);
        let n = notify.recv(&mut buf).expect("STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let status = proc.wait_timeout(Duration::from_secs(5)).expect("exits");
        assert!(status.success(), "signal {signal}: {status:?}");
        let _ = std::fs::remove_file(&socket_path);
    }
}

#[test]
fn check_lists_every_error_at_once() {
    let dir = std::env::temp_dir();
    let run_check = |name: &str, toml: &str| {
        let path = dir.join(format!(
            "tether-ipconfig-check-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(binary("tether-ipconfig"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // Keys of the wrong type or unknown: all named.
    let (ok, stderr, _) = run_check(
        "types",
        "listen = \"not an address\"\ntop_n = \"five\"\ncolour = \"blue\"\nwindow = 5\n",
    );
    assert!(!ok);
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    for key in ["listen", "top_n", "colour"] {
        assert!(
            stderr.contains(&format!("  - {key}: ")),
            "{key} missing in {stderr}"
        );
    }

    // Values out of range: all named.
    let (ok, stderr, _) = run_check(
        "ranges",
        "window = 0\ntop_n = 1000\nstale_after_ms = 50\nrebuild_interval_ms = 100\nmax_gateways = 0\nmax_report_bytes = 1\n",
    );
    assert!(!ok);
    assert!(stderr.contains("5 error(s)"), "{stderr}");
    for key in [
        "window",
        "top_n",
        "rebuild_interval_ms",
        "max_gateways",
        "max_report_bytes",
    ] {
        assert!(
            stderr.contains(&format!("  - {key}: ")),
            "{key} missing in {stderr}"
        );
    }

    // A good file prints the whole config.
    let (ok, stderr, stdout) = run_check("good", "listen = \"127.0.0.1:6790\"\ntop_n = 3\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:6790\""), "{stdout}");
    assert!(stdout.contains("top_n = 3"), "{stdout}");
    assert!(stdout.contains("max_gateways = 10000"), "{stdout}");

    // An empty file is the defaults.
    let (ok, stderr, stdout) = run_check("empty", "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:6789\""), "{stdout}");
}

#[test]
fn env_vars_configure_the_binary() {
    let addr = free_addr();
    let listen = addr.to_string();
    let _proc = spawn_with_env(
        "tether-ipconfig",
        &[],
        &[
            ("TETHER_IPCONFIG_LISTEN", listen.as_str()),
            ("TETHER_IPCONFIG_TOP_N", "1"),
            ("TETHER_IPCONFIG_REBUILD_INTERVAL_MS", "5"),
        ],
    );
    wait_for_port(addr, Duration::from_secs(10));
    for (id, gib) in [("one", 1.0), ("two", 2.0)] {
        let gw = format!("{id}.example:1");
        assert_eq!(
            http_post(addr, "/v1/report", &report(id, &gw, gib, 1, false)).0,
            200
        );
    }
    eventually(Duration::from_secs(5), "top_n = 1", || {
        ids(&http_get(addr, "/ip_list").1) == ["two"]
    });
}
