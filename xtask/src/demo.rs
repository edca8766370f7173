//! `cargo xtask demo`: the whole stack on loopback, under load, in one command.
//!
//! Starts, as separate processes: tether-ipconfig (127.0.0.1:6789), tether-state (socket,
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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tether_daemon::prometheus::read_sample;

const NODE_PORTS: [u16; 4] = [8890, 8891, 8892, 8893];
/// (id, client port, admin port) of each gateway.
const GATEWAYS: [(&str, u16, u16); 2] = [("gw-a", 8900, 8901), ("gw-b", 8910, 8911)];
const IPCONFIG_PORT: u16 = 6789;
const STATE_HTTP_PORT: u16 = 8902;
const STATE_METRICS_PORT: u16 = 8903;
/// The demo's JWT key, shared by tether-state and the load generator.
const SECRET: &str = "tether-demo-secret";
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

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(crate) fn demo(root: &Path, cargo: impl Fn() -> Command, extra: &[String]) -> Result<()> {
    crate::run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let bin = root.join("target/release");
    let work = root.join("target/demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).context("cannot create target/demo")?;

    let mut ports: Vec<u16> = NODE_PORTS.to_vec();
    ports.extend(GATEWAYS.iter().flat_map(|g| [g.1, g.2]));
    ports.extend([IPCONFIG_PORT, STATE_HTTP_PORT, STATE_METRICS_PORT]);
    for port in ports {
        let addr = localhost(port);
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            bail!("{addr} is already in use: stop whatever listens there first");
        }
    }

    // Report keys: one per gateway, and ipconfig's list of who holds which.
    let mut report_keys = String::from("# gateway id, key: written by cargo xtask demo\n");
    for (id, _, _) in GATEWAYS {
        let key = random_key().context("cannot read /dev/urandom")?;
        report_keys.push_str(&format!("{id} {key}\n"));
        std::fs::write(work.join(format!("{id}.key")), format!("{key}\n"))
            .context("cannot write a gateway's report key")?;
    }
    let report_keys_file = work.join("report-keys");
    std::fs::write(&report_keys_file, report_keys).context("cannot write report-keys")?;

    let mut stack = Stack::default();
    let ipconfig_url = format!("http://{}", localhost(IPCONFIG_PORT));
    stack.start(
        "ipconfig",
        Command::new(bin.join("tether-ipconfig"))
            .args([
                "--listen",
                &localhost(IPCONFIG_PORT).to_string(),
                "--stale-after-ms",
                "2000",
            ])
            .arg("--report-keys-file")
            .arg(&report_keys_file),
        localhost(IPCONFIG_PORT),
    )?;
    let socket = work.join("state.sock");
    let state_http = localhost(STATE_HTTP_PORT);
    let state_metrics = localhost(STATE_METRICS_PORT);
    let (push_token, api_tokens) = push_api_token(&work)?;
    stack.start(
        "state",
        Command::new(bin.join("tether-state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--journal")
            .arg(work.join("journal"))
            .args(["--http", &state_http.to_string()])
            .args(["--metrics", &state_metrics.to_string()])
            .arg("--api-tokens-file")
            .arg(&api_tokens)
            .args(["--heartbeat-s", "10"])
            .env("TETHER_STATE_JWT_SECRET", SECRET),
        state_http,
    )?;
    crate::wait_for_port(state_metrics, Duration::from_secs(10))
        .context("the state daemon's metrics listener did not start")?;
    let mut node_list = Vec::new();
    for port in NODE_PORTS {
        let addr = localhost(port);
        node_list.push(addr.to_string());
        stack.start(
            &format!("node {addr}"),
            Command::new(bin.join("tether-echo-node")).args([
                "--listen",
                &addr.to_string(),
                "--reactors",
                "1",
            ]),
            addr,
        )?;
    }
    for (id, port, admin) in GATEWAYS {
        let listen = localhost(port).to_string();
        stack.start(
            id,
            Command::new(bin.join("tether-gateway"))
                .args(["--id", id, "--listen", &listen, "--advertise", &listen])
                .args(["--admin", &localhost(admin).to_string()])
                .args(["--node", &node_list.join(",")])
                .arg("--state")
                .arg(&socket)
                .args(["--ipconfig", &ipconfig_url, "--report-interval-ms", "500"])
                .arg("--ipconfig-key-file")
                .arg(work.join(format!("{id}.key"))),
            localhost(port),
        )?;
    }
    wait_until(
        Duration::from_secs(10),
        "both gateways linked to state and listed by ipconfig",
        || {
            let linked = GATEWAYS.iter().all(|g| {
                metric(localhost(g.2), "tether_gateway_state_links_up").is_some_and(|n| n >= 1.0)
            });
            let listed = http(localhost(IPCONFIG_PORT), "GET", "/ip_list", None)
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .and_then(|v| v["gateways"].as_array().map(Vec::len))
                .is_some_and(|n| n == GATEWAYS.len());
            linked && listed
        },
    )?;
    let baseline: Vec<u64> = stack
        .gateway_pids()
        .iter()
        .map(|&pid| rss_kib(pid))
        .collect();
    println!(
        "demo: ipconfig {ipconfig_url}, state {} (push API http://{state_http}, token in {}; metrics http://{state_metrics}), nodes {}, gateways {}",
        socket.display(),
        push_token.display(),
        node_list.join(" "),
        GATEWAYS.map(|g| format!("{} 127.0.0.1:{}", g.0, g.1)).join(", ")
    );

    let summary_path = root.join("target/demo-summary.json");
    let mut load = Command::new(bin.join("tether-loadgen"));
    load.args(["--ipconfig", &ipconfig_url])
        .env("TETHER_LOADGEN_JWT_SECRET", SECRET)
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
    let mut peak_open = vec![0u64; GATEWAYS.len()];
    let started = Instant::now();
    let load_status = loop {
        if let Some(status) = loadgen.try_wait()? {
            break status;
        }
        for (i, &pid) in stack.gateway_pids().iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(pid));
            let open = http(localhost(GATEWAYS[i].2), "GET", "/stats", None)
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
    for (i, (id, _, admin)) in GATEWAYS.iter().enumerate() {
        let stats = http(localhost(*admin), "GET", "/stats", None)
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
    let state_metrics = http(state_metrics, "GET", "/metrics", None)
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

    let ipconfig_metrics = http(localhost(IPCONFIG_PORT), "GET", "/metrics", None)
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
    for (name, result) in stack.stop_all() {
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => failures.push(format!("{name} exited with {status}")),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
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

/// A fresh report key: 32 random bytes in hex, as `openssl rand -hex 32` makes one.
fn random_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

/// A fresh push API token for this run: the token itself in `<work>/push-token` (for the load
/// generator, mode 0600) and its SHA-256 with the scopes the demo uses in
/// `<work>/api-tokens` (for the state daemon). Returns both paths.
fn push_api_token(work: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    let token = hex(&random);
    let token_path = work.join("push-token");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .context("cannot write target/demo/push-token")?;
    let tokens_path = work.join("api-tokens");
    let line = format!(
        "# made by cargo xtask demo: NAME SHA256 SCOPES\ndemo {} push,sessions:read\n",
        hex(&Sha256::digest(token.as_bytes()))
    );
    std::fs::write(&tokens_path, line).context("cannot write target/demo/api-tokens")?;
    Ok((token_path, tokens_path))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--flag N` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

/// The stack's processes, stopped in reverse start order.
#[derive(Default)]
struct Stack {
    daemons: Vec<Daemon>,
}

impl Stack {
    /// Starts `command` and waits until something accepts on `listening`.
    fn start(&mut self, name: &str, command: &mut Command, listening: SocketAddr) -> Result<()> {
        // Warnings and errors only: the summary table is the demo's output.
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.daemons.push(Daemon {
            child,
            name: name.to_string(),
        });
        crate::wait_for_port(listening, Duration::from_secs(10))
            .with_context(|| format!("{name} did not start"))
    }

    fn gateway_pids(&self) -> Vec<u32> {
        self.daemons
            .iter()
            .filter(|d| GATEWAYS.iter().any(|g| g.0 == d.name))
            .map(|d| d.child.id())
            .collect()
    }

    /// SIGTERM to each, gateways first (they drain), then the rest.
    fn stop_all(&mut self) -> Vec<(String, Result<ExitStatus>)> {
        let mut results = Vec::new();
        while let Some(daemon) = self.daemons.pop() {
            let name = daemon.name.clone();
            results.push((name, daemon.stop(Duration::from_secs(20))));
        }
        results
    }
}

/// A child process; killed if dropped without a clean stop.
struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    /// SIGTERM, then wait up to `timeout`.
    fn stop(mut self, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("did not exit within {timeout:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http(admin, "GET", "/metrics", None).ok()?;
    read_sample(&text, series)
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

fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
