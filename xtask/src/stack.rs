//! The whole Tether stack on loopback as separate processes, for `cargo xtask demo` (under
//! load), `cargo xtask demo --page` (for a browser) and the js step's browser test.
//!
//! [`Stack::start`] starts tether-ipconfig, tether-state (socket, journal and push API token
//! files in the work directory, the push API behind a bearer token made for the run, metrics
//! on their own listener), the echo nodes and two gateways (`gw-a`, `gw-b`) that log clients
//! in through the state daemon and report to ipconfig, each report signed with the gateway's
//! own key (fresh random keys every run). With a [`Web`] page origin the gateways also
//! listen for WebSocket clients from that origin (`listen_ws`, `ws_origins`), ipconfig
//! lets it read `/ip_list` (`cors_origins`), and the echo nodes publish every request to the
//! page's room (`publish_room`). It returns once both gateways are linked to the
//! state daemon and listed by ipconfig. [`Stack::stop_all`] stops everything with SIGTERM,
//! gateways first (they drain), and says how each process exited.
//!
//! [`Ports`] are either the fixed ones the README lists or, for tests that may run beside a
//! demo or another test, ports nobody listens on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http_client::{http, metric};

/// The demo's JWT key, shared by tether-state, the load generator and the page server.
pub(crate) const JWT_SECRET: &str = "tether-demo-secret";
/// The gateways' ids, in start order.
pub(crate) const GATEWAY_IDS: [&str; 2] = ["gw-a", "gw-b"];

pub(crate) fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One gateway's ports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayPorts {
    pub id: &'static str,
    /// v1 over TCP.
    pub tcp: u16,
    /// WebSocket (with a [`Web`] origin only).
    pub ws: u16,
    pub admin: u16,
}

/// Every port the stack listens on, and the demo page's.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    /// The page server's (`demo --page`, with a [`Web`] origin only).
    pub page: u16,
    pub ipconfig: u16,
    pub state_http: u16,
    pub state_metrics: u16,
    pub nodes: Vec<u16>,
    pub gateways: [GatewayPorts; 2],
}

impl Ports {
    /// The ports the README lists: ipconfig 6789, state 8902 (metrics 8903), nodes
    /// 8890–8893, gateways 8900/8910 (WebSocket 8920/8930, admin 8901/8911); the page on
    /// `page`.
    pub(crate) fn fixed(page: u16) -> Ports {
        Ports {
            page,
            ipconfig: 6789,
            state_http: 8902,
            state_metrics: 8903,
            nodes: vec![8890, 8891, 8892, 8893],
            gateways: [
                GatewayPorts {
                    id: GATEWAY_IDS[0],
                    tcp: 8900,
                    ws: 8920,
                    admin: 8901,
                },
                GatewayPorts {
                    id: GATEWAY_IDS[1],
                    tcp: 8910,
                    ws: 8930,
                    admin: 8911,
                },
            ],
        }
    }

    /// Ports nobody listens on now, with `nodes` echo nodes. Taken below the kernel's
    /// ephemeral range, where no client socket draws its source port, from a start that
    /// depends on the process id (so two runs side by side start apart).
    pub(crate) fn free(nodes: usize) -> Result<Ports> {
        let mut picker = FreePorts::new();
        let mut gateway = |id| -> Result<GatewayPorts> {
            Ok(GatewayPorts {
                id,
                tcp: picker.take()?,
                ws: picker.take()?,
                admin: picker.take()?,
            })
        };
        let gateways = [gateway(GATEWAY_IDS[0])?, gateway(GATEWAY_IDS[1])?];
        Ok(Ports {
            page: picker.take()?,
            ipconfig: picker.take()?,
            state_http: picker.take()?,
            state_metrics: picker.take()?,
            nodes: (0..nodes).map(|_| picker.take()).collect::<Result<_>>()?,
            gateways,
        })
    }

    /// Every port, for the "already in use" check.
    pub(crate) fn all(&self, web: bool) -> Vec<u16> {
        let mut all = vec![self.ipconfig, self.state_http, self.state_metrics];
        all.extend(&self.nodes);
        for g in &self.gateways {
            all.extend([g.tcp, g.admin]);
            if web {
                all.push(g.ws);
            }
        }
        if web {
            all.push(self.page);
        }
        all
    }

    pub(crate) fn ipconfig_url(&self) -> String {
        format!("http://{}", localhost(self.ipconfig))
    }
}

/// Hands out free loopback ports (see [`Ports::free`]), each once.
struct FreePorts {
    low: u32,
    span: u32,
    next: u32,
    taken: Vec<u16>,
}

impl FreePorts {
    const LOWEST: u32 = 10_000;

    fn new() -> FreePorts {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|&low| low > Self::LOWEST + 1_000)
            .unwrap_or(32_768);
        FreePorts {
            low: Self::LOWEST,
            span: ephemeral_low - Self::LOWEST,
            next: std::process::id().wrapping_mul(7_919),
            taken: Vec::new(),
        }
    }

    fn take(&mut self) -> Result<u16> {
        for _ in 0..self.span {
            self.next = self.next.wrapping_add(1);
            let port = (self.low + self.next % self.span) as u16;
            if !self.taken.contains(&port) && TcpListener::bind(localhost(port)).is_ok() {
                self.taken.push(port);
                return Ok(port);
            }
        }
        bail!("no free loopback port below {}", self.low + self.span)
    }
}

/// A browser page's origin (`http://127.0.0.1:8080`): the gateways accept WebSockets from
/// it and ipconfig lets it read `/ip_list`; and its room, where the echo nodes publish every
/// request.
#[derive(Debug, Clone)]
pub(crate) struct Web {
    pub origins: Vec<String>,
    pub publish_room: String,
}

/// The files the stack keeps in its work directory.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    /// The state daemon's socket.
    pub socket: PathBuf,
    /// The push API's bearer token (mode 0600).
    pub push_token: PathBuf,
}

/// The running stack's processes, stopped in reverse start order.
pub(crate) struct Stack {
    pub ports: Ports,
    pub files: Files,
    daemons: Vec<Daemon>,
}

impl Stack {
    /// Starts everything from the binaries in `bin`, with its files in `work` (emptied
    /// first), and waits until both gateways are linked to the state daemon and listed.
    pub(crate) fn start(bin: &Path, work: &Path, ports: Ports, web: Option<&Web>) -> Result<Stack> {
        for port in ports.all(web.is_some()) {
            let addr = localhost(port);
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                bail!("{addr} is already in use: stop whatever listens there first");
            }
        }
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let report_keys_file = report_keys(work)?;
        let (push_token, api_tokens) = push_api_token(work)?;
        let files = Files {
            socket: work.join("state.sock"),
            push_token,
        };
        let mut stack = Stack {
            ports,
            files,
            daemons: Vec::new(),
        };
        let ports = stack.ports.clone();
        let origins = web.map(|w| w.origins.join(","));

        let ipconfig = localhost(ports.ipconfig);
        let mut command = Command::new(bin.join("tether-ipconfig"));
        command
            .args([
                "--listen",
                &ipconfig.to_string(),
                "--stale-after-ms",
                "2000",
            ])
            .arg("--report-keys-file")
            .arg(&report_keys_file);
        if let Some(origins) = &origins {
            command.args(["--cors-origins", origins]);
        }
        stack.spawn("ipconfig", &mut command, ipconfig)?;

        let state_http = localhost(ports.state_http);
        let state_metrics = localhost(ports.state_metrics);
        stack.spawn(
            "state",
            Command::new(bin.join("tether-state"))
                .arg("--socket")
                .arg(&stack.files.socket)
                .arg("--journal")
                .arg(work.join("journal"))
                .args(["--http", &state_http.to_string()])
                .args(["--metrics", &state_metrics.to_string()])
                .arg("--api-tokens-file")
                .arg(&api_tokens)
                .args(["--heartbeat-s", "10"])
                .env("TETHER_STATE_JWT_SECRET", JWT_SECRET),
            state_http,
        )?;
        crate::wait_for_port(state_metrics, Duration::from_secs(10))
            .context("the state daemon's metrics listener did not start")?;

        let nodes: Vec<String> = ports
            .nodes
            .iter()
            .map(|&p| localhost(p).to_string())
            .collect();
        for &port in &ports.nodes {
            let node = localhost(port);
            let mut command = Command::new(bin.join("tether-echo-node"));
            command.args(["--listen", &node.to_string(), "--reactors", "1"]);
            if let Some(web) = web {
                command.args(["--publish-room", &web.publish_room]);
            }
            stack.spawn(&format!("node {node}"), &mut command, node)?;
        }
        for g in ports.gateways {
            let listen = localhost(g.tcp).to_string();
            let mut command = Command::new(bin.join("tether-gateway"));
            command
                .args(["--id", g.id, "--listen", &listen, "--advertise", &listen])
                .args(["--admin", &localhost(g.admin).to_string()])
                .args(["--node", &nodes.join(",")])
                .arg("--state")
                .arg(&stack.files.socket)
                .args([
                    "--ipconfig",
                    &ports.ipconfig_url(),
                    "--report-interval-ms",
                    "500",
                ])
                .arg("--ipconfig-key-file")
                .arg(work.join(format!("{}.key", g.id)));
            if let Some(origins) = &origins {
                command
                    .args(["--listen-ws", &localhost(g.ws).to_string()])
                    .args(["--ws-origins", origins]);
            }
            stack.spawn(g.id, &mut command, localhost(g.tcp))?;
        }
        crate::wait_until(
            Duration::from_secs(10),
            "both gateways linked to state and listed by ipconfig",
            || {
                let linked = ports.gateways.iter().all(|g| {
                    metric(localhost(g.admin), "tether_gateway_state_links_up")
                        .is_some_and(|n| n >= 1.0)
                });
                let listed = http(ipconfig, "GET", "/ip_list", &[], None)
                    .ok()
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|v| v["gateways"].as_array().map(Vec::len))
                    .is_some_and(|n| n == ports.gateways.len());
                linked && listed
            },
        )?;
        Ok(stack)
    }

    /// Starts `command` and waits until something accepts on `listening`.
    fn spawn(&mut self, name: &str, command: &mut Command, listening: SocketAddr) -> Result<()> {
        // Warnings and errors only: the summary (or the page's URL) is the output.
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

    /// The gateways' process ids, in [`GATEWAY_IDS`] order.
    pub(crate) fn gateway_pids(&self) -> Vec<u32> {
        GATEWAY_IDS
            .iter()
            .filter_map(|id| self.daemons.iter().find(|d| d.name == *id))
            .map(|d| d.child.id())
            .collect()
    }

    /// SIGTERM to each, gateways first (they drain), then the rest; how each exited.
    pub(crate) fn stop_all(&mut self) -> Vec<(String, Result<ExitStatus>)> {
        let mut results = Vec::new();
        while let Some(daemon) = self.daemons.pop() {
            let name = daemon.name.clone();
            results.push((name, daemon.stop(Duration::from_secs(20))));
        }
        results
    }
}

/// The failures among [`Stack::stop_all`]'s results: a process that did not exit 0.
pub(crate) fn unclean_exits(results: Vec<(String, Result<ExitStatus>)>) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|(name, result)| match result {
            Ok(status) if status.success() => None,
            Ok(status) => Some(format!("{name} exited with {status}")),
            Err(e) => Some(format!("{name}: {e:#}")),
        })
        .collect()
}

/// Report keys: one per gateway (`<work>/<id>.key`), and ipconfig's list of who holds
/// which (`<work>/report-keys`, returned).
fn report_keys(work: &Path) -> Result<PathBuf> {
    let mut report_keys = String::from("# gateway id, key: written by cargo xtask\n");
    for id in GATEWAY_IDS {
        let key = hex(&random_bytes()?);
        report_keys.push_str(&format!("{id} {key}\n"));
        std::fs::write(work.join(format!("{id}.key")), format!("{key}\n"))
            .context("cannot write a gateway's report key")?;
    }
    let path = work.join("report-keys");
    std::fs::write(&path, report_keys).context("cannot write report-keys")?;
    Ok(path)
}

/// A fresh push API token for this run: the token itself in `<work>/push-token` (mode
/// 0600) and its SHA-256 with the scopes the demo uses in `<work>/api-tokens` (for the state
/// daemon). Returns both paths.
fn push_api_token(work: &Path) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let token = hex(&random_bytes()?);
    let token_path = work.join("push-token");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .context("cannot write the push token")?;
    let tokens_path = work.join("api-tokens");
    let line = format!(
        "# made by cargo xtask: NAME SHA256 SCOPES\ndemo {} push,sessions:read\n",
        tether_state::api_tokens::hash_hex(token.as_bytes())
    );
    std::fs::write(&tokens_path, line).context("cannot write api-tokens")?;
    Ok((token_path, tokens_path))
}

/// 32 random bytes (a key or token, in hex as `openssl rand -hex 32` makes one).
fn random_bytes() -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A child process; killed if dropped without a clean stop.
struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    /// SIGTERM, then wait up to `timeout`.
    fn stop(mut self, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid (a child that exited already is a zombie
        // until waited for, so the pid is still ours).
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
