//! `cargo xtask demo`: the whole stack on loopback, under load, in one command.
//!
//! Starts, as separate processes ([`Stack`], `stack.rs`): tether-ipconfig (127.0.0.1:6789), tether-state (socket,
//! journal and push API token files under `target/demo/`, push API 127.0.0.1:8902 behind a
//! bearer token made for the run, metrics 127.0.0.1:8903), four echo nodes
//! (127.0.0.1:8890–8893) and two gateways (127.0.0.1:8900 admin 8901, 127.0.0.1:8910 admin
//! 8911) that log clients in through the state daemon and report to ipconfig, each report
//! signed with the gateway's own key (`target/demo/gw-*.key`; ipconfig's
//! `target/demo/report-keys`, fresh random keys every run). Then
//! tether-loadgen finds the gateways through `/ip_list`, logs every connection in with a JWT,
//! heartbeats, pipelines echo DATA, pushes to its own devices through the state daemon's
//! `POST /v1/push` (`--push-rate`, with the token: `--push-token-file`) and acknowledges the
//! pushes it receives, measuring their latency. This command prints one summary table,
//! stops everything with SIGTERM and fails if anything went wrong: a loadgen failure, a push
//! not accepted, an error counted by a daemon, a report ipconfig refused, or a process that
//! did not exit cleanly.
//!
//! `cargo xtask demo --page` keeps the same stack running for a browser instead: `page.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tether_daemon::prometheus::read_sample;

use crate::http_client::http;
use crate::stack::{localhost, unclean_exits, Ports, Stack, JWT_SECRET};

/// Devices the load generator logs in as: `<prefix>-<connection index>`.
const DEVICE_PREFIX: &str = "demo";
/// Pushes per second the load generator sends through the push API while the load runs.
const PUSH_RATE: &str = "200";

/// loadgen flags used unless the caller gives its own (they are added after the stack's).
const DEMO_LOAD: &[&str] = &[
    "--conns",
    "1000",
    "--payload",
    "64",
    "--pipeline",
    "4",
    "--duration",
    "20",
    "--warmup",
    "2",
];

pub(crate) fn demo(root: &Path, cargo: impl Fn() -> Command, extra: &[String]) -> Result<()> {
    crate::run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    // Where the build above put them (CARGO_TARGET_DIR when set).
    let bin = crate::target_dir().join("release");
    let work = root.join("target/demo");
    // No page (its port is unused without a web origin).
    let mut stack = Stack::start(&bin, &work, Ports::fixed(0), None)?;
    let ports = stack.ports.clone();
    let gateways = ports.gateways;
    let ipconfig_url = ports.ipconfig_url();
    let state_http = localhost(ports.state_http);
    let state_metrics = localhost(ports.state_metrics);
    let push_token = stack.files.push_token.clone();
    let baseline: Vec<u64> = stack
        .gateway_pids()
        .iter()
        .map(|&pid| rss_kib(pid))
        .collect();
    let nodes: Vec<String> = ports
        .nodes
        .iter()
        .map(|&p| localhost(p).to_string())
        .collect();
    println!(
        "demo: ipconfig {ipconfig_url}, state {} (push API http://{state_http}, token in {}; metrics http://{state_metrics}), nodes {}, gateways {}",
        stack.files.socket.display(),
        push_token.display(),
        nodes.join(" "),
        gateways.map(|g| format!("{} 127.0.0.1:{}", g.id, g.tcp)).join(", ")
    );

    let summary_path = root.join("target/demo-summary.json");
    let mut load = Command::new(bin.join("tether-loadgen"));
    load.args(["--ipconfig", &ipconfig_url])
        .env("TETHER_LOADGEN_JWT_SECRET", JWT_SECRET)
        .args(["--device-prefix", DEVICE_PREFIX])
        .args(["--push-rate", PUSH_RATE])
        .args(["--push-url", &format!("http://{state_http}")])
        .arg("--push-token-file")
        .arg(&push_token);
    let load_args: Vec<String> = if extra.is_empty() {
        DEMO_LOAD.iter().map(|s| s.to_string()).collect()
    } else {
        extra.to_vec()
    };
    load.args(&load_args)
        .arg("--quiet")
        .arg("--json")
        .arg(&summary_path);
    let duration = flag_value(&load_args, "--duration").unwrap_or(10);
    println!("demo: tether-loadgen {}", load_args.join(" "));
    // Its own table goes to a file: the demo prints one summary.
    let loadgen_out = std::fs::File::create(work.join("loadgen.txt"))
        .context("cannot create target/demo/loadgen.txt")?;
    let mut loadgen = load
        .stdin(Stdio::null())
        .stdout(loadgen_out)
        .spawn()
        .context("cannot start tether-loadgen")?;

    // The gateways' memory and connections while the load runs, sampled every 200 ms.
    let mut peak = baseline.clone();
    let mut peak_open = vec![0u64; gateways.len()];
    let started = Instant::now();
    let load_status = loop {
        if let Some(status) = loadgen.try_wait()? {
            break status;
        }
        for (i, &pid) in stack.gateway_pids().iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(pid));
            let open = http(localhost(gateways[i].admin), "GET", "/stats", &[], None)
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .and_then(|stats| stats["totals"]["open"].as_u64())
                .unwrap_or(0);
            peak_open[i] = peak_open[i].max(open);
        }
        if started.elapsed() > Duration::from_secs(duration + 60) {
            let _ = loadgen.kill();
            bail!("tether-loadgen did not finish within {} s", duration + 60);
        }
        thread::sleep(Duration::from_millis(200));
    };

    let mut failures = Vec::new();
    let summary: Value = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    if !load_status.success() {
        failures.push(format!(
            "tether-loadgen reported failures ({load_status}); see {}",
            summary_path.display()
        ));
    }
    let push_api = &summary["push_api"];
    let refused = push_api["failed"].as_u64().unwrap_or(0);
    if refused > 0 {
        failures.push(format!(
            "{refused} pushes were not accepted by the push API"
        ));
    }
    let pushes_posted = push_api["posted"].as_u64().unwrap_or(0);
    let pushes_received = summary["push"]["unique"].as_u64().unwrap_or(0);
    if pushes_posted == 0 {
        failures.push("no push was posted".into());
    }
    let delivered = push_api["delivered"].as_u64().unwrap_or(0);
    if pushes_received < delivered {
        failures.push(format!(
            "{delivered} pushes delivered to gateways but only {pushes_received} reached clients"
        ));
    }
    let mut gateway_rows = Vec::new();
    for (i, g) in gateways.iter().enumerate() {
        let id = g.id;
        let stats = http(localhost(g.admin), "GET", "/stats", &[], None)
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .unwrap_or(Value::Null);
        let accepted = stats["totals"]["accepted"].as_u64().unwrap_or(0);
        let errors = stats["totals"]["errors"].as_u64().unwrap_or(0);
        if errors > 0 {
            failures.push(format!(
                "{id} sent {errors} ERROR frames: {}",
                stats["errors"]
            ));
        }
        let growth = peak[i].saturating_sub(baseline[i]) * 1024;
        gateway_rows.push((id.to_string(), accepted, peak_open[i], growth));
    }
    let state_metrics = http(state_metrics, "GET", "/metrics", &[], None)
        .map(|(_, body)| body)
        .unwrap_or_default();
    let state_errors = [
        (
            "tether_state_link_errors_total",
            "gateway links closed for bad input",
        ),
        ("tether_state_peers_refused_total", "socket peers refused"),
        ("tether_state_hellos_refused_total", "HELLOs refused"),
        (
            "tether_state_api_denied_total{reason=\"missing_token\"}",
            "push API requests without a token",
        ),
        (
            "tether_state_api_denied_total{reason=\"unknown_token\"}",
            "push API requests with an unknown token",
        ),
        (
            "tether_state_api_denied_total{reason=\"missing_scope\"}",
            "push API requests without the scope they need",
        ),
    ];
    for (series, what) in state_errors {
        let n = read_sample(&state_metrics, series).unwrap_or(0.0);
        if n > 0.0 {
            failures.push(format!("tether-state counted {n} {what} ({series})"));
        }
    }

    let ipconfig_metrics = http(localhost(ports.ipconfig), "GET", "/metrics", &[], None)
        .map(|(_, body)| body)
        .unwrap_or_default();
    let refused_reports: f64 = ipconfig_metrics
        .lines()
        .filter(|line| line.starts_with("tether_ipconfig_reports_rejected_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    if refused_reports > 0.0 {
        failures.push(format!(
            "ipconfig refused {refused_reports} gateway reports (see reports_rejected_total)"
        ));
    }

    print_table(&summary, &gateway_rows, &state_metrics);
    failures.extend(unclean_exits(stack.stop_all()));
    if failures.is_empty() {
        println!(
            "demo: ok — zero errors, every process stopped cleanly; loadgen summary in {}",
            summary_path.display()
        );
        Ok(())
    } else {
        bail!("demo failed:\n  {}", failures.join("\n  "))
    }
}

fn print_table(summary: &Value, gateways: &[(String, u64, u64, u64)], state: &str) {
    let ms = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |us| format!("{:.2} ms", us / 1000.0))
    };
    let lat = &summary["latency_us"];
    let conns = &summary["conns"];
    println!();
    println!("  Tether demo: ipconfig + state + 4 echo nodes + 2 gateways, all on loopback");
    println!("  ─────────────────────────────────────────────────────────────────────────");
    println!(
        "  connections       {} requested, {} logged in, {} failed, {} dropped; {} GOAWAYs, {} resumed",
        conns["requested"],
        conns["logged_in"],
        conns["failed"],
        conns["dropped"],
        summary["reconnects"]["goaways"],
        summary["resumes"]["ok"]
    );
    for (id, accepted, open, growth) in gateways {
        let per_conn = if *open > 0 { growth / open } else { 0 };
        println!(
            "  {id:<17} {accepted} accepted, {open} open at most; RSS grew {} KiB under load = {per_conn} B per connection (buffers of busy connections included)",
            growth / 1024
        );
    }
    println!(
        "  echo msgs/s       {:.0}  (latency p50 {}, p99 {}, p99.9 {})",
        summary["throughput_per_s"].as_f64().unwrap_or(0.0),
        ms(&lat["p50"]),
        ms(&lat["p99"]),
        ms(&lat["p999"])
    );
    let push = &summary["push"];
    let api = &summary["push_api"];
    println!(
        "  pushes            {} posted ({} delivered, {} queued, {} offline, {} refused); {} reached clients ({} duplicates), {} acked",
        api["posted"], api["delivered"], api["queued"], api["offline"], api["failed"],
        push["unique"], push["duplicates"], push["acked"]
    );
    println!(
        "  push latency      p50 {}, p99 {}, p99.9 {}  (POST /v1/push → PUSH at the client)",
        ms(&push["latency_us"]["p50"]),
        ms(&push["latency_us"]["p99"]),
        ms(&push["latency_us"]["p999"])
    );
    println!(
        "  heartbeats        {} PINGs sent, {} PONGs",
        summary["heartbeats"]["sent"], summary["heartbeats"]["pongs"]
    );
    println!(
        "  state daemon      {} logins, {} sessions detached as their clients left, {} acks, {} pushes still pending",
        read_sample(state, "tether_state_logins_total{result=\"ok\"}").unwrap_or(0.0),
        read_sample(state, "tether_state_sessions{state=\"detached\"}").unwrap_or(0.0),
        read_sample(state, "tether_state_acks_total").unwrap_or(0.0),
        read_sample(state, "tether_state_pushes_pending").unwrap_or(0.0)
    );
    let errors = summary["errors"].as_object().map_or(0, |e| e.len());
    println!(
        "  errors            loadgen {} kinds {}, verify failures {}",
        errors, summary["errors"], summary["verify_failures"]
    );
    println!();
}

/// `--flag N` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
