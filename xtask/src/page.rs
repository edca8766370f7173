//! `cargo xtask demo --page [--port N]`: the stack of `cargo xtask demo`, kept running for a
//! browser, and the demo page (push console and live room) served beside it.
//!
//! [`PageDemo::start`] starts the [`Stack`] with WebSocket listeners on both gateways
//! accepting the page's origin (`ws_origins`), ipconfig letting it read `/ip_list`
//! (`cors_origins`), echo nodes publishing every request to [`ROOM`] (`publish_room`: what
//! a page says there reaches every page in the room), and the [`PageServer`] on
//! `127.0.0.1:N` (the origin is both `http://127.0.0.1:N` and `http://localhost:N`). [`run`] prints the URL to open and waits
//! for Ctrl-C or SIGTERM, then stops the page server and the stack (gateways first).
//!
//! The js step's browser test starts the same [`PageDemo`] on free ports (`js.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tether_daemon::secret::Secret;

use crate::page_server::{PageServer, Site};
use crate::stack::{localhost, unclean_exits, Ports, Stack, Web, JWT_SECRET};

/// The page's port unless `--port` says otherwise.
const DEFAULT_PORT: u16 = 8080;
/// The room the echo nodes publish to and the page joins first (one of the token's rooms).
pub(crate) const ROOM: &str = "lobby";

/// The stack and the page server, running.
pub(crate) struct PageDemo {
    pub stack: Stack,
    server: PageServer,
}

impl PageDemo {
    /// Starts the stack on `ports` (files in `work`) and the page server on `ports.page`.
    pub(crate) fn start(root: &Path, work: &Path, ports: Ports) -> Result<PageDemo> {
        let page_port = ports.page;
        let page = localhost(page_port);
        let web = Web {
            origins: vec![
                format!("http://127.0.0.1:{page_port}"),
                format!("http://localhost:{page_port}"),
            ],
            publish_room: ROOM.to_string(),
        };
        let stack = Stack::start(
            &crate::target_dir().join("release"),
            work,
            ports,
            Some(&web),
        )?;
        let push_token = std::fs::read_to_string(&stack.files.push_token)
            .context("cannot read the push token")?;
        let site = Site {
            root: root.join("clients/js"),
            ipconfig_url: stack.ports.ipconfig_url(),
            push_api: localhost(stack.ports.state_http),
            push_token: Secret::new(push_token.trim().as_bytes().to_vec()),
            jwt_secret: Secret::new(JWT_SECRET.as_bytes().to_vec()),
            room: ROOM.to_string(),
        };
        let server = PageServer::start(page, site)?;
        Ok(PageDemo { stack, server })
    }

    /// The page's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.server.local_addr())
    }

    pub(crate) fn page_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the page server, then the stack; the processes that did not exit cleanly.
    pub(crate) fn stop(mut self) -> Vec<String> {
        self.server.stop();
        unclean_exits(self.stack.stop_all())
    }
}

/// `demo --page [--port N]`.
pub(crate) fn run(root: &Path, cargo: impl Fn() -> Command, args: &[String]) -> Result<()> {
    let port = match args {
        [] => DEFAULT_PORT,
        [flag, value] if flag == "--port" => value
            .parse()
            .with_context(|| format!("--port {value}: not a port"))?,
        _ => bail!("usage: cargo xtask demo --page [--port N]"),
    };
    // The same build as every other command's, so that none rebuilds for another's features.
    crate::run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let demo = PageDemo::start(root, &root.join("target/demo-page"), Ports::fixed(port))?;
    let ports = &demo.stack.ports;
    println!(
        "demo: ipconfig {} (CORS for the page), state push API http://{} (token in {}), gateways {}",
        ports.ipconfig_url(),
        localhost(ports.state_http),
        demo.stack.files.push_token.display(),
        ports
            .gateways
            .map(|g| format!("{} ws://127.0.0.1:{}/ws", g.id, g.ws))
            .join(", ")
    );
    println!();
    println!(
        "  Open {} in a browser: Connect logs a device in over WebSocket,",
        demo.url()
    );
    println!("  Send echoes through the gateway's nodes, Push sends through the push API;");
    println!("  the page joins room {ROOM:?}, and what Say sends is published there by the nodes.");
    println!(
        "  Stop a gateway (kill -TERM <pid>: {:?}) and the page resumes on the other.",
        demo.stack.gateway_pids()
    );
    println!("  Ctrl-C stops everything.");
    println!();
    tether_daemon::signals::wait_for_stop().context("cannot wait for signals")?;
    println!("demo: stopping");
    let failures = demo.stop();
    if failures.is_empty() {
        println!("demo: every process stopped cleanly");
        Ok(())
    } else {
        bail!("demo: {}", failures.join("; "))
    }
}
