//! The bench smoke step of `cargo xtask test`: every `bench/*.sh`, one after the other, in its
//! `--smoke` mode — every peer it starts and every part of its report, at the smallest sizes,
//! in seconds — so that no benchmark rots unrun. Its numbers mean nothing; the step only
//! checks that each script exits 0. A script without a `--smoke` mode fails the step.
//!
//! Scripts that keep their results (`--out DIR`) write them to `bench-smoke/<script>/` under
//! the target directory, emptied first; the others clean up after themselves. Each script
//! builds what it runs, in the same target directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{root, run, target_dir};

/// Where nginx's stream module is on Debian when it is not built in (bench/proxy.sh).
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// What the scripts run, as (command or file that must exist, Debian package).
pub(crate) const PACKAGES: &[(&str, &str)] = &[
    ("python3", "python3"),
    ("curl", "curl"),
    ("taskset", "util-linux"),
    ("wrk", "wrk"),
    ("nginx", "nginx"),
    (NGINX_STREAM_MODULE, "libnginx-mod-stream"),
    ("haproxy", "haproxy"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    ("redis-cli", "redis-tools"),
    // bench/transports.sh: test certificates, `openssl s_time`, and `ss` to count sockets.
    ("openssl", "openssl"),
    ("ss", "iproute2"),
    // bench/rooms.sh: the fan-out peers.
    ("nats-server", "nats-server"),
    (
        "/usr/lib/nginx/modules/ngx_nchan_module.so",
        "libnginx-mod-nchan",
    ),
];

pub(crate) fn run_all() -> Result<()> {
    let started = Instant::now();
    let mut times = Vec::new();
    for script in scripts()? {
        let name = script
            .file_stem()
            .and_then(|stem| stem.to_str())
            .context("a bench script without a UTF-8 name")?
            .to_owned();
        let text = std::fs::read_to_string(&script)
            .with_context(|| format!("cannot read {}", script.display()))?;
        if !text.contains("--smoke") {
            bail!("bench/{name}.sh has no --smoke mode: every bench script needs one");
        }
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("--smoke").current_dir(root());
        if text.contains("--out DIR") {
            let out = target_dir().join("bench-smoke").join(&name);
            match std::fs::remove_dir_all(&out) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot empty {}", out.display()));
                }
                _ => {}
            }
            cmd.arg("--out").arg(out);
        }
        eprintln!("xtask: bench/{name}.sh --smoke");
        let script_started = Instant::now();
        run(&mut cmd).with_context(|| format!("bench/{name}.sh --smoke failed"))?;
        times.push(format!("{name} {} s", script_started.elapsed().as_secs()));
    }
    eprintln!(
        "xtask: bench smoke step done in {} s: {}",
        started.elapsed().as_secs(),
        times.join(", ")
    );
    Ok(())
}

/// `bench/*.sh`, by name.
fn scripts() -> Result<Vec<PathBuf>> {
    let dir = root().join("bench");
    let mut scripts = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "sh") {
            scripts.push(path);
        }
    }
    scripts.sort();
    if scripts.is_empty() {
        bail!("no bench/*.sh to run");
    }
    Ok(scripts)
}
