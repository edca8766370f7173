//! `cargo xtask`: the two commands a fresh machine needs.
//!
//! - `cargo xtask demo`: builds in release and runs the whole stack on loopback under load
//!   (ipconfig, state, four echo nodes, two gateways, tether-loadgen logging in through
//!   /ip_list, pushes through the push API), prints one summary table, stops everything and
//!   exits non-zero if anything failed (see `demo.rs`; the stack itself: `stack.rs`).
//! - `cargo xtask demo --page [--port N]`: the same stack with WebSocket listeners, kept
//!   running for a browser, and the push console page served on 127.0.0.1:N (8080) until
//!   Ctrl-C (see `page.rs`, `page_server.rs`).
//! - `cargo xtask demo --hosts 2`: a fleet of two hosts over a loopback Redis Cluster, pushes
//!   through host b to devices on host a (see `fleet_demo.rs`).
//! - `cargo xtask test`: installs the system packages and tools the tests need when they are
//!   missing, builds every binary and runs every test, then runs every fuzz target for a
//!   bounded time (`fuzz.rs`), every bench script in its smoke mode (`bench_smoke.rs`), and
//!   the browser client's type check, unit tests and browser test (`js.rs`).

mod bench_smoke;
mod demo;
mod fleet_demo;
mod fuzz;
mod http_client;
mod js;
mod page;
mod page_server;
mod stack;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask demo [loadgen flags…]   run the cluster under load
       cargo xtask demo --page [--port N]  keep the cluster running for a browser, the
                                           push console on http://127.0.0.1:N/ (8080)
       cargo xtask demo --hosts 2          a fleet of two hosts over a Redis Cluster on
                                           loopback; pushes through b to devices on a
       cargo xtask test [STEP FLAGS] [cargo test args…]
                                           install, build and run every test, then the fuzz,
                                           bench smoke and js steps
step flags: --only-fuzz          only the fuzz step
            --only-smoke         only the bench smoke step
            --only-js            only the js step (clients/js: type check, unit tests, the
                                 browser test in headless Chromium against the stack)
            --fuzz-seconds N     how long each fuzz target runs (default 25)";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("demo") => {
            let args: Vec<String> = args.collect();
            if args.first().is_some_and(|a| a == "--page") {
                page::run(&root(), cargo, &args[1..])
            } else if args.first().is_some_and(|a| a == "--hosts") {
                fleet_demo::demo(&root(), &args[1..])
            } else {
                demo::demo(&root(), cargo, &args)
            }
        }
        Some("test") => test(&args.collect::<Vec<_>>()),
        _ => {
            eprintln!("{USAGE}");
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

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root), else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    // `cargo run` gave xtask the variables of its own package (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, …). ring's build script tracks some of them, so passing them on
    // would rebuild ring and everything above it each time `cargo xtask …` and a build it
    // runs alternate.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if per_package {
            cmd.env_remove(&*name);
        }
    }
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
/// `systemd-analyze` verifies the units in deploy/systemd (e2e/tests/systemd.rs); openssl,
/// pip and npm serve the transport tests (e2e/tests/transports.rs, see [`ensure_test_tools`]).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("python3", "python3"),
    ("openssl", "openssl"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("pip3", "python3-pip"),
    ("systemd-analyze", "systemd"),
    ("etcd", "etcd-server"),
    // etcdctl: the etcd authentication tests set users and roles up with it.
    ("etcdctl", "etcd-client"),
    // e2e security/tokens: keys made with `openssl genpkey`, deploy/jwks-from-pem.sh.
    ("openssl", "openssl"),
    // e2e fleet: a Redis 7 Cluster (redis-server, redis-cli) and hosts in network namespaces.
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("ip", "iproute2"),
];

/// Which parts of `cargo xtask test` run, from its leading flags; the rest goes to cargo test.
struct TestPlan {
    tests: bool,
    fuzz: bool,
    smoke: bool,
    js: bool,
    fuzz_seconds: u64,
    cargo_test_args: Vec<String>,
}

impl TestPlan {
    fn parse(args: &[String]) -> Result<TestPlan> {
        let mut plan = TestPlan {
            tests: true,
            fuzz: true,
            smoke: true,
            js: true,
            fuzz_seconds: fuzz::DEFAULT_SECONDS,
            cargo_test_args: Vec::new(),
        };
        let mut args = args.iter();
        let mut only = Vec::new();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--only-fuzz" | "--only-smoke" | "--only-js" => only.push(arg.as_str()),
                "--fuzz-seconds" => {
                    let value = args.next().context("--fuzz-seconds needs a number")?;
                    plan.fuzz_seconds = value
                        .parse()
                        .with_context(|| format!("--fuzz-seconds {value}: not a number"))?;
                }
                _ => {
                    plan.cargo_test_args.push(arg.clone());
                    plan.cargo_test_args.extend(args.cloned());
                    break;
                }
            }
        }
        match only.as_slice() {
            [] => {}
            [step] => {
                plan.tests = false;
                plan.fuzz = *step == "--only-fuzz";
                plan.smoke = *step == "--only-smoke";
                plan.js = *step == "--only-js";
            }
            _ => bail!("{} exclude each other\n{USAGE}", only.join(" and ")),
        }
        if !plan.tests && !plan.cargo_test_args.is_empty() {
            bail!(
                "cargo test arguments {:?} with {}",
                plan.cargo_test_args,
                only.join(" ")
            );
        }
        Ok(plan)
    }
}

fn test(args: &[String]) -> Result<()> {
    let plan = TestPlan::parse(args)?;
    let mut packages = Vec::new();
    if plan.tests {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    if plan.fuzz {
        packages.extend_from_slice(fuzz::PACKAGES);
    }
    if plan.smoke {
        packages.extend_from_slice(bench_smoke::PACKAGES);
    }
    if plan.js {
        packages.extend_from_slice(js::PACKAGES);
    }
    ensure_packages(&packages)?;
    if plan.tests {
        ensure_test_tools()?;
        run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
        run(cargo()
            .args(["test", "--release", "--workspace"])
            .args(&plan.cargo_test_args))?;
    }
    if plan.fuzz {
        fuzz::run_all(plan.fuzz_seconds)?;
    }
    if plan.smoke {
        bench_smoke::run_all()?;
    }
    if plan.js {
        js::run_all()?;
    }
    Ok(())
}

/// Debian's maintainer scripts start no service while this exists: installing nginx,
/// HAProxy, Redis or etcd must not leave their system services running (every test and
/// bench starts its own, on its own ports).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs with apt-get (one `update`, one `install`) whichever of `packages` is missing: a
/// (command, package) pair is missing when the command is not on PATH (nor in /usr/sbin or
/// /sbin), a (/absolute/path, package) pair when that file does not exist.
fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = packages
        .iter()
        .filter(|(needed, _)| !present(needed))
        .map(|(_, package)| *package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let made_policy = !Path::new(POLICY_RC_D).exists();
    if made_policy {
        let script =
            format!("printf '#!/bin/sh\\nexit 101\\n' >{POLICY_RC_D} && chmod 755 {POLICY_RC_D}");
        run(&mut privileged("sh", &["-c", &script]))?;
    }
    let installed = apt_install(&missing);
    if made_policy {
        run(&mut privileged("rm", &["-f", POLICY_RC_D]))?;
    }
    installed
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| -> Result<()> {
        let mut all = vec!["DEBIAN_FRONTEND=noninteractive", "apt-get"];
        all.extend_from_slice(args);
        run(&mut privileged("env", &all))
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install)
}

/// The clients nobody in Tether wrote that the transport tests run: Python's `websockets`
/// (pip, by name) and Node's `ws` (npm, by name, into `<target>/node-tools`, where
/// `e2e/src/transports.rs` looks for it). Each is installed only when missing.
fn ensure_test_tools() -> Result<()> {
    let has_websockets = Command::new("python3")
        .args(["-c", "import websockets.sync.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_websockets {
        eprintln!("xtask: pip install websockets");
        let pip = |extra: &[&str]| {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "pip", "install", "-q"])
                .args(extra)
                .arg("websockets");
            run(&mut cmd)
        };
        // A Debian python3 refuses system-wide installs unless told.
        pip(&[]).or_else(|_| pip(&["--break-system-packages"]))?;
    }
    let node_tools = target_dir().join("node-tools");
    if !node_tools.join("node_modules/ws/package.json").exists() {
        eprintln!("xtask: npm install ws into {}", node_tools.display());
        std::fs::create_dir_all(&node_tools)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&node_tools)
            .arg("ws"))?;
    }
    Ok(())
}

/// `program args…` as root: directly when we are root, else through sudo.
fn privileged(program: &str, args: &[&str]) -> Command {
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(program);
        sudo
    };
    cmd.args(args);
    cmd
}

fn present(needed: &str) -> bool {
    if needed.starts_with('/') {
        return Path::new(needed).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(needed).is_file())
}

/// Waits until something accepts on `addr`.
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

/// Polls `check` every 50 ms until it holds, or fails after `timeout`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<TestPlan> {
        TestPlan::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_step_runs_by_default_and_the_rest_goes_to_cargo_test() {
        let p = plan(&["-p", "tether-e2e", "--", "--only-fuzz"]).unwrap();
        assert!(p.tests && p.fuzz && p.smoke && p.js);
        assert_eq!(p.fuzz_seconds, fuzz::DEFAULT_SECONDS);
        assert_eq!(p.cargo_test_args, ["-p", "tether-e2e", "--", "--only-fuzz"]);
    }

    #[test]
    fn step_flags_pick_one_step() {
        let p = plan(&["--fuzz-seconds", "3", "--only-fuzz"]).unwrap();
        assert!(!p.tests && p.fuzz && !p.smoke);
        assert_eq!(p.fuzz_seconds, 3);
        let p = plan(&["--only-smoke"]).unwrap();
        assert!(!p.tests && !p.fuzz && p.smoke && !p.js);
        let p = plan(&["--only-js"]).unwrap();
        assert!(!p.tests && !p.fuzz && !p.smoke && p.js);
        assert!(plan(&["--only-fuzz", "--only-smoke"]).is_err());
        assert!(plan(&["--only-smoke", "-p", "x"]).is_err());
        assert!(plan(&["--fuzz-seconds", "soon"]).is_err());
        assert!(plan(&["--fuzz-seconds"]).is_err());
    }
}
