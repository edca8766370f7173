//! The JavaScript step of `cargo xtask test`: the browser client in `clients/js/` is
//! type-checked from its JSDoc (`tsc --checkJs`, no emitted code) and its unit tests run
//! under Node's own test runner (`node --test`).
//!
//! Node.js and npm come from Debian when missing; TypeScript from the npm registry, by name,
//! into `clients/js/node_modules` (ignored by git) without a lock file.

use std::time::Instant;

use anyhow::Result;

use crate::{root, run};

/// System packages the step needs.
pub(crate) const PACKAGES: &[(&str, &str)] = &[("node", "nodejs"), ("npm", "npm")];

/// npm packages the step installs, by name and major version.
const NPM_PACKAGES: &[&str] = &["typescript@5"];

pub(crate) fn run_all() -> Result<()> {
    let started = Instant::now();
    let dir = root().join("clients").join("js");
    if !dir.join("node_modules").join("typescript").is_dir() {
        run(std::process::Command::new("npm")
            .current_dir(&dir)
            .args([
                "install",
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
            ])
            .args(NPM_PACKAGES))?;
    }
    run(std::process::Command::new("npx").current_dir(&dir).args([
        "--no-install",
        "tsc",
        "-p",
        ".",
    ]))?;
    run(std::process::Command::new("node")
        .current_dir(&dir)
        .args(["--test", "test/"]))?;
    eprintln!("xtask: js step done in {} s", started.elapsed().as_secs());
    Ok(())
}
