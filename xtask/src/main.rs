//! `cargo xtask`: the two commands a fresh machine needs.
//!
//! - `cargo xtask demo`: builds in release and runs the whole stack on loopback under load
//!   (ipconfig, state, four echo nodes, two gateways, tether-loadgen logging in through
//!   /ip_list, pushes through the push API), prints one summary table, stops everything and
//!   exits non-zero if anything failed (see `demo.rs`).
//! - `cargo xtask test`: installs the system packages the tests need when they are missing,
//!   builds every binary and runs every test.

mod demo;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("demo") => demo::demo(&root(), cargo, &args.collect::<Vec<_>>()),
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
/// `systemd-analyze` verifies the units in deploy/systemd (e2e/tests/systemd.rs).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("python3", "python3"),
    ("systemd-analyze", "systemd"),
    ("etcd", "etcd-server"),
];

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
