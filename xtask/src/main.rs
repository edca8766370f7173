//! `cargo xtask`: the two commands a fresh machine needs.
//!
//! - `cargo xtask demo`: builds in release, starts the echo-node cluster (four nodes on
//!   127.0.0.1:8890–8893) and a gateway (127.0.0.1:8900, admin 8901) as separate processes,
//!   drives the gateway with tether-loadgen, prints the load summary and the gateway's own
//!   view, stops everything and exits non-zero if anything failed.
//! - `cargo xtask test`: installs the system packages the tests need when they are missing,
//!   builds every binary and runs every test.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("demo") => demo(&args.collect::<Vec<_>>()),
        Some("test") => test(&args.collect::<Vec<_>>()),
        _ => {
            eprintln!(
                "usage: cargo xtask demo [loadgen flags…]   run the cluster under load\n       \
                 cargo xtask test [cargo test args…]   install, build and run every test"
            );
            std::process::exit(2);
        }
    }
}

/// The repository root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cargo xtask test

/// System packages the tests need, as (command that must exist, Debian package).
const TEST_PACKAGES: &[(&str, &str)] = &[("python3", "python3")];

fn test(extra: &[String]) -> Result<()> {
    ensure_packages(TEST_PACKAGES)?;
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    run(cargo()
        .args(["test", "--release", "--workspace"])
        .args(extra))?;
    Ok(())
}

/// Installs with apt-get whichever of `packages` has no command on PATH.
fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // SAFETY: geteuid has no preconditions.
    let sudo: &[&str] = if unsafe { libc::geteuid() } == 0 {
        &[]
    } else {
        &["sudo"]
    };
    let apt = |args: &[&str]| -> Result<()> {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        run(Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    apt(&install)
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

// ---------------------------------------------------------------------------------------
// cargo xtask demo

const NODE_PORTS: [u16; 4] = [8890, 8891, 8892, 8893];
const GATEWAY: ([u8; 4], u16) = ([127, 0, 0, 1], 8900);
const GATEWAY_ADMIN: ([u8; 4], u16) = ([127, 0, 0, 1], 8901);

/// loadgen flags used unless the caller gives its own.
const DEMO_LOAD: &[&str] = &[
    "--conns",
    "1000",
    "--payload",
    "64",
    "--pipeline",
    "8",
    "--duration",
    "10",
    "--warmup",
    "2",
];

fn demo(extra: &[String]) -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "tether-echo-node",
        "-p",
        "tether-gateway",
        "-p",
        "tether-loadgen",
    ]))?;
    let bin = root().join("target/release");

    let gateway_addr = SocketAddr::from(GATEWAY);
    let admin_addr = SocketAddr::from(GATEWAY_ADMIN);
    let mut node_addrs: Vec<SocketAddr> = NODE_PORTS
        .iter()
        .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    node_addrs.push(gateway_addr);
    node_addrs.push(admin_addr);
    for addr in &node_addrs {
        if TcpStream::connect_timeout(addr, Duration::from_millis(100)).is_ok() {
            bail!("{addr} is already in use: stop whatever listens there first");
        }
    }
    node_addrs.truncate(NODE_PORTS.len());

    let mut nodes = Vec::new();
    for &addr in &node_addrs {
        let child = Command::new(bin.join("tether-echo-node"))
            .args(["--listen", &addr.to_string(), "--reactors", "1"])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start tether-echo-node")?;
        nodes.push(Daemon { child, addr });
    }
    for node in &nodes {
        wait_for_port(node.addr, Duration::from_secs(10))?;
    }
    let node_list: Vec<String> = node_addrs.iter().map(|a| a.to_string()).collect();
    let gateway = Daemon {
        child: Command::new(bin.join("tether-gateway"))
            .args(["--listen", &gateway_addr.to_string()])
            .args(["--admin", &admin_addr.to_string()])
            .args(["--node", &node_list.join(",")])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start tether-gateway")?,
        addr: gateway_addr,
    };
    wait_for_port(gateway_addr, Duration::from_secs(10))?;
    println!(
        "demo: echo nodes on {}; gateway on {gateway_addr} (admin {admin_addr}); running tether-loadgen through the gateway",
        node_list.join(", ")
    );

    let summary = root().join("target/demo-summary.json");
    let mut load = Command::new(bin.join("tether-loadgen"));
    load.arg("--target").arg(gateway_addr.to_string());
    if extra.is_empty() {
        load.args(DEMO_LOAD);
    } else {
        load.args(extra);
    }
    load.arg("--json").arg(&summary);
    let load_status = load.status().context("cannot run tether-loadgen")?;

    let mut failures = Vec::new();
    match gateway_view(admin_addr, gateway.child.id()) {
        Ok(view) => println!("{view}"),
        Err(e) => failures.push(format!("gateway stats: {e:#}")),
    }
    let mut daemons = vec![gateway];
    daemons.extend(nodes);
    for daemon in daemons {
        let addr = daemon.addr;
        match daemon.stop(Duration::from_secs(15)) {
            Ok(status) if status.success() => {}
            Ok(status) => failures.push(format!("{addr} exited with {status}")),
            Err(e) => failures.push(format!("{addr}: {e:#}")),
        }
    }
    if !load_status.success() {
        failures.push(format!(
            "tether-loadgen reported failures ({load_status}); see {}",
            summary.display()
        ));
    }
    if failures.is_empty() {
        println!(
            "demo: ok — every process stopped cleanly; summary in {}",
            summary.display()
        );
        Ok(())
    } else {
        bail!("demo failed:\n  {}", failures.join("\n  "))
    }
}

/// The gateway's own account of the run, from its /stats and /proc.
fn gateway_view(admin: SocketAddr, pid: u32) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /stats HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("no HTTP body")?;
    let stats: serde_json::Value = serde_json::from_str(body).context("/stats is not JSON")?;
    let totals = &stats["totals"];
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let nodes: Vec<String> = stats["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    format!(
                        "{} {} ({} requests)",
                        n["addr"].as_str().unwrap_or("?"),
                        if n["up"] == true { "up" } else { "DOWN" },
                        n["requests"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(format!(
        "tether-gateway: {} reactors, RSS {} MiB\n  connections  accepted {}  open {}\n  frames       in {}  out {}\n  backend      requests {}  responses {}  retries {}\n  errors sent  {}\n  latency µs   p50 {}  p99 {}  (gateway-side, bucket upper bounds)\n  nodes        {}",
        stats["reactors"].as_array().map_or(0, |r| r.len()),
        rss_kib / 1024,
        totals["accepted"],
        totals["open"],
        totals["frames_in"],
        totals["frames_out"],
        totals["backend_requests"],
        totals["backend_responses"],
        totals["retries"],
        totals["errors"],
        stats["latency_us"]["p50"],
        stats["latency_us"]["p99"],
        nodes.join(", "),
    ))
}

fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing accepts on {addr} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A daemon child process; killed if dropped without a clean stop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
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
