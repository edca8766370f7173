//! The JavaScript step of `cargo xtask test`: the browser client in `clients/js/` is
//! type-checked from its JSDoc (`tsc --checkJs`, no emitted code), its unit tests run under
//! Node's own test runner (`node --test`), and then it is tried in a real browser against
//! the real stack.
//!
//! The browser test: the same [`PageDemo`] `cargo xtask demo --page` runs (the stack with
//! WebSocket listeners, CORS for the page, and the page server), on free ports, files under
//! `target/js-browser/`; then `node --test test/browser.test.mjs` drives headless Chromium
//! (Debian's, `/usr/bin/chromium`) through playwright-core: it opens the push console, logs
//! in, echoes, pushes, drains the gateway the page is on and checks the page resumes on the
//! other; then two pages (two devices) in the demo's room each say a line and see both, one
//! goes offline and, back, gets what it missed as a replay. It learns the page's URL, the
//! gateways' pids, the push API and the room from a JSON file named by `TETHER_PAGE_DEMO`.
//! Every process must then stop cleanly.
//!
//! Node.js, npm and Chromium come from Debian when missing; TypeScript and playwright-core
//! (the driver only: it never downloads a browser) from the npm registry, by name, into
//! `clients/js/node_modules` (ignored by git), without a lock file.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::page::PageDemo;
use crate::stack::Ports;
use crate::{cargo, root, run, target_dir};

/// System packages the step needs.
pub(crate) const PACKAGES: &[(&str, &str)] =
    &[("node", "nodejs"), ("npm", "npm"), (CHROMIUM, "chromium")];

/// The browser the browser test drives.
const CHROMIUM: &str = "/usr/bin/chromium";

/// npm packages the step installs: (directory in node_modules, name and major version).
const NPM_PACKAGES: &[(&str, &str)] = &[
    ("typescript", "typescript@5"),
    ("playwright-core", "playwright-core@1"),
];

pub(crate) fn run_all() -> Result<()> {
    let started = Instant::now();
    let dir = root().join("clients").join("js");
    let modules = dir.join("node_modules");
    // All at once: npm prunes what a later `install --no-save` does not name.
    if NPM_PACKAGES
        .iter()
        .any(|(name, _)| !modules.join(name).join("package.json").is_file())
    {
        run(std::process::Command::new("npm")
            .current_dir(&dir)
            .args([
                "install",
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
            ])
            .args(NPM_PACKAGES.iter().map(|(_, spec)| spec)))?;
    }
    run(std::process::Command::new("npx").current_dir(&dir).args([
        "--no-install",
        "tsc",
        "-p",
        ".",
    ]))?;
    run(std::process::Command::new("node")
        .current_dir(&dir)
        .args(["--test", "test/client.test.mjs"]))?;
    browser_test()?;
    eprintln!("xtask: js step done in {} s", started.elapsed().as_secs());
    Ok(())
}

/// The push console in headless Chromium against the real stack (see the module docs).
fn browser_test() -> Result<()> {
    // As `cargo xtask test` and `demo` build (a no-op after them).
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let work = target_dir().join("js-browser");
    let started = Instant::now();
    let demo = PageDemo::start(&root(), &work, Ports::free(2)?)?;
    let ports = &demo.stack.ports;
    let pids = demo.stack.gateway_pids();
    let description = json!({
        "page": demo.url(),
        "chromium": CHROMIUM,
        "push_api": format!("http://127.0.0.1:{}", ports.state_http),
        "push_token_file": demo.stack.files.push_token,
        "room": crate::page::ROOM,
        "gateways": ports.gateways.iter().zip(&pids).map(|(g, pid)| json!({
            "id": g.id,
            "pid": pid,
            "ws": format!("ws://127.0.0.1:{}/ws", g.ws),
        })).collect::<Vec<_>>(),
    });
    let description_file = work.join("page-demo.json");
    std::fs::write(&description_file, description.to_string())
        .context("cannot write the page demo's description")?;
    eprintln!(
        "xtask: page demo on {} (stack up in {} ms); driving Chromium",
        demo.page_addr(),
        started.elapsed().as_millis()
    );
    let tested = run(std::process::Command::new("node")
        .current_dir(root().join("clients").join("js"))
        .env("TETHER_PAGE_DEMO", &description_file)
        .args(["--test", "test/browser.test.mjs"]));
    let failures = demo.stop();
    tested?;
    if !failures.is_empty() {
        bail!("after the browser test: {}", failures.join("; "));
    }
    eprintln!(
        "xtask: browser test done in {} s (stack start to stop)",
        started.elapsed().as_secs()
    );
    Ok(())
}
