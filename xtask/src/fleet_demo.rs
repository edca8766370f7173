//! `cargo xtask demo --hosts 2`: a fleet of two hosts on one machine — a six-node Redis 7
//! Cluster on loopback and, for each host, a state daemon with `--fleet`, an echo node and a
//! gateway — with 1,000 devices logged in on host a and pushes sent through host b's push
//! API for 20 s. The fleet itself is started by `bench/fleet.sh --demo` (one description of
//! a loopback fleet, shared with the benchmark); this only runs it and fails when it fails.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::run;

/// The hosts the demo can start.
const HOSTS: &str = "2";

pub(crate) fn demo(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some(HOSTS) => {}
        Some(other) => bail!("demo --hosts {other}: only 2 hosts are supported"),
        None => bail!("demo --hosts needs a number (2)"),
    }
    if args.len() > 1 {
        bail!("demo --hosts 2 takes no other flags (got {:?})", &args[1..]);
    }
    let out = crate::target_dir().join("demo-fleet");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new("bash")
        .arg(root.join("bench/fleet.sh"))
        .arg("--demo")
        .arg("--out")
        .arg(&out)
        .current_dir(root))
}
