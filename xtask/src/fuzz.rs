//! The fuzz step of `cargo xtask test`: builds every cargo-fuzz target in `fuzz/` and runs
//! each for a bounded time, on the stable toolchain.
//!
//! cargo-fuzz builds with rustc flags that only nightly accepts (`-Zsanitizer=address`, the
//! sanitizer-coverage options); `RUSTC_BOOTSTRAP=1` makes the stable compiler accept them, so
//! no nightly toolchain is needed. cargo-fuzz itself is installed with `cargo install` when
//! `cargo fuzz` is missing. `fuzz/` is its own workspace: it builds into `fuzz/` under the
//! target directory (`$CARGO_TARGET_DIR/fuzz`, else `target/fuzz`). The inputs libFuzzer
//! finds go to a scratch corpus there, next to the build, which it reads back on the next
//! run; the committed seeds in `fuzz/corpus/<target>/` are only read. A crash, a timeout, a
//! leak or running out of memory fails the step, with the input in
//! `fuzz/artifacts/<target>/` (see fuzz/README.md to replay it).

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run, target_dir};

/// System packages the step needs besides cargo: libfuzzer-sys compiles libFuzzer (C++).
pub(crate) const PACKAGES: &[(&str, &str)] = &[("c++", "g++")];

/// Seconds each target runs unless `--fuzz-seconds` says otherwise.
pub(crate) const DEFAULT_SECONDS: u64 = 25;

/// The cargo-fuzz installed when `cargo fuzz` is missing (pinned: its flags are used here).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// One input taking longer than this is a failure (libFuzzer's `-timeout`).
const INPUT_TIMEOUT_S: u64 = 10;

pub(crate) fn run_all(seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("fuzz");
    let build_dir = target_dir().join("fuzz");
    let cargo_fuzz = || {
        let mut cmd = cargo();
        cmd.current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &build_dir)
            .arg("fuzz");
        cmd
    };

    let started = Instant::now();
    run(cargo_fuzz().arg("build"))?;
    let mut times = vec![format!("build {} s", started.elapsed().as_secs())];

    for target in targets(cargo_fuzz())? {
        let scratch = build_dir.join("corpus").join(&target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let seeds = fuzz_dir.join("corpus").join(&target);
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let started = Instant::now();
        run(cargo_fuzz()
            .args(["run", &target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_S}")))
        .with_context(|| {
            format!("fuzz target {target} failed: its input is in fuzz/artifacts/{target}/")
        })?;
        times.push(format!("{target} {} s", started.elapsed().as_secs()));
    }
    eprintln!("xtask: fuzz step done: {}", times.join(", "));
    Ok(())
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let started = Instant::now();
    // Not into our target directory: cargo install builds in a temporary one of its own.
    run(cargo()
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .env_remove("CARGO_TARGET_DIR"))?;
    eprintln!(
        "xtask: cargo-fuzz installed in {} s",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Every target `cargo fuzz list` names.
fn targets(mut cargo_fuzz: Command) -> Result<Vec<String>> {
    let output = cargo_fuzz
        .arg("list")
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo fuzz list")?;
    if !output.status.success() {
        bail!("cargo fuzz list failed: {}", output.status);
    }
    let list = String::from_utf8(output.stdout).context("cargo fuzz list: not UTF-8")?;
    let targets: Vec<String> = list.split_whitespace().map(str::to_owned).collect();
    if targets.is_empty() {
        bail!("cargo fuzz list names no target in fuzz/");
    }
    Ok(targets)
}
