//! Support for end-to-end tests: finding the built binaries, running them as child
//! processes on free loopback ports, and a small blocking frame client.
//!
//! The binaries are the ones `cargo build --release --workspace` (or the debug profile the
//! tests themselves were built with) left next to the test executable; `cargo xtask test`
//! builds them before it runs the tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tether_proto::{Decoder, ErrorBody, Kind};
mod etcd;
pub mod fleet;
mod notify;
pub mod state;
pub mod transports;

pub use etcd::{gateway_nodes, Cluster};
pub use notify::NotifySocket;

/// The path of a workspace binary built in the same profile as this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --release --workspace, \
         or run the tests through `cargo xtask test`)",
        path.display()
    );
    path
}

/// A loopback address with a port nobody listens on right now.
///
/// Not port 0: the kernel would pick from its ephemeral range, where the client sockets of
/// tests running alongside (thousands in a load test) draw their source ports, and one of them
/// could take the port between this check and the daemon's bind. Ports below that range are
/// only bound by daemons; each is handed out once per test process, from a start that depends
/// on the process id.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&low| low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + start.wrapping_add(n) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral_low}")
}

/// Waits until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed when the test drops it.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `name` (a workspace binary) with `args`; stderr is inherited so failures show
    /// in the test output.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        spawn_with_env(name, args, &[])
    }

    /// Starts `command` quietly (no stdin, no stdout, `RUST_LOG=warn`), named `name`.
    fn start(mut command: Command, name: &str) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Runs `command` through `sh -c` (for a `ulimit` before an `exec`).
    pub fn spawn_shell(command: &str) -> Proc {
        let mut sh = Command::new("sh");
        sh.args(["-c", command]);
        Proc::start(sh, command)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo node on a free loopback port, started with `extra` flags.
pub fn echo_node(extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let listen = addr.to_string();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("tether-echo-node", &args);
    wait_for_port(addr, Duration::from_secs(10));
    (proc, addr)
}

/// One frame read back, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub id: u64,
    pub body: Vec<u8>,
}

impl Reply {
    /// The error code of an ERROR reply.
    pub fn error_code(&self) -> Option<u16> {
        (self.kind == Kind::Error)
            .then(|| ErrorBody::parse(&self.body).ok().map(|b| b.code))
            .flatten()
    }
}

/// A blocking framed client with a read timeout.
#[derive(Debug)]
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(u32::MAX - 10),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Encodes and sends one frame.
    pub fn send_frame(&mut self, kind: Kind, id: u64, body: &[u8]) {
        let mut out = Vec::new();
        tether_proto::encode::frame(&mut out, kind, id, body);
        self.send(&out);
    }

    /// The next frame, or `None` at EOF. Panics on timeout.
    pub fn recv(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self.take_frame() {
                return Some(reply);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "EOF inside a frame");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading a reply: {e} ({:?})", e.kind()),
            }
        }
    }

    /// The next frame within `timeout`, or `None` on timeout, EOF or reset.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Reply> {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let reply = loop {
            if let Some(reply) = self.take_frame() {
                break Some(reply);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        reply
    }

    /// A complete frame from the front of the buffer, if one is there.
    fn take_frame(&mut self) -> Option<Reply> {
        let (frame, used) = self.decoder.decode(&self.buf).expect("server frame")?;
        let reply = Reply {
            kind: frame.kind,
            id: frame.id,
            body: frame.body.to_vec(),
        };
        self.buf.drain(..used);
        Some(reply)
    }

    /// The next frame, which must exist.
    pub fn expect(&mut self) -> Reply {
        self.recv().expect("a reply, not EOF")
    }

    /// Asserts the server closed the connection.
    pub fn expect_closed(&mut self) {
        if let Some(extra) = self.recv() {
            panic!("expected close, got {extra:?}");
        }
    }
}

/// A gateway on free loopback ports in front of `nodes`, started with `extra` flags.
/// Returns the process, the client address and the admin address.
pub fn gateway(nodes: &[SocketAddr], extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let listen = free_addr();
    let admin = free_addr();
    let (listen_s, admin_s) = (listen.to_string(), admin.to_string());
    let node_list = nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "--listen",
        listen_s.as_str(),
        "--admin",
        admin_s.as_str(),
        "--node",
        node_list.as_str(),
        "--reactors",
        "2",
        "--pin-cores",
        "false",
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("tether-gateway", &args);
    wait_for_port(admin, Duration::from_secs(10));
    wait_for_port(listen, Duration::from_secs(10));
    (proc, listen, admin)
}

/// [`gateway`] logging clients in through the state daemon on `socket` as gateway `id`;
/// returns once both reactors' state links are up.
pub fn gateway_with_state(
    nodes: &[SocketAddr],
    socket: &std::path::Path,
    id: &str,
    extra: &[&str],
) -> (Proc, SocketAddr, SocketAddr) {
    let socket = socket.to_str().expect("UTF-8 socket path");
    let mut args = vec!["--state", socket, "--id", id];
    args.extend_from_slice(extra);
    let (proc, listen, admin) = gateway(nodes, &args);
    wait_for_state_links(admin, 2, Duration::from_secs(10));
    (proc, listen, admin)
}

/// `GET path` on an HTTP/1.1 server; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(addr, get_request(addr, path).as_bytes())
}

/// A `GET path` request that closes the connection after the answer.
fn get_request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// The gateway's `/stats` as JSON.
pub fn stats(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("stats is JSON")
}

/// Requests sent to `node` so far, from `/stats`.
pub fn node_requests(admin: SocketAddr, node: SocketAddr) -> u64 {
    stats(admin)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["addr"] == node.to_string())
        .and_then(|n| n["requests"].as_u64())
        .unwrap_or(0)
}

/// The value of `series` (name and labels exactly as exposed) on `addr`'s `/metrics`, when
/// the server answers and exactly one sample has it. `None` while nothing listens on `addr`
/// yet, so a poll can begin before the admin listener is up.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = try_http_raw(addr, get_request(addr, "/metrics").as_bytes()).ok()?;
    tether_daemon::prometheus::read_sample(&text, series)
}

/// Waits until `reactors` reactors of the gateway whose admin listener is `admin` have their
/// link to the state daemon up.
pub fn wait_for_state_links(admin: SocketAddr, reactors: usize, timeout: Duration) {
    eventually(timeout, "state links up", || {
        metric(admin, "tether_gateway_state_links_up") == Some(reactors as f64)
    });
}

/// Waits until `check` holds, polling every 20 ms, or panics after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs tether-loadgen with `args` (plus `--quiet --json`); returns (exit ok, summary).
pub fn loadgen(args: &[&str]) -> (bool, serde_json::Value) {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json = std::env::temp_dir().join(format!("tether-e2e-{}-{n}.json", std::process::id()));
    let out = Command::new(binary("tether-loadgen"))
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("run tether-loadgen");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    (
        out.status.success(),
        serde_json::from_str(&text).expect("summary is JSON"),
    )
}

/// Sends `request` (raw bytes: a whole HTTP/1.1 request, ideally with `Connection: close`)
/// on a fresh connection and returns (status, body) of the answer, read to EOF.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    try_http_raw(addr, request).unwrap_or_else(|e| panic!("HTTP to {addr}: {e}"))
}

/// [`http_raw`], with a failure to connect or send as an error instead of a panic: for polls
/// that may start before the server listens.
pub(crate) fn try_http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    exchange(addr, request).map(|answer| (answer.status, answer.body))
}

/// An HTTP/1.1 answer, read to EOF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `method path` with `headers` and `body` on a fresh connection that closes after the
/// answer.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    exchange(addr, &request).unwrap_or_else(|e| panic!("HTTP to {addr}: {e}"))
}

/// Sends `request` on a fresh connection and reads the answer to EOF.
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<HttpAnswer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((response.clone(), String::new()));
    Ok(HttpAnswer { status, head, body })
}

/// `POST path` with a JSON `body` on an HTTP/1.1 server; returns (status, body).
pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    http_post_with(addr, path, &[], body)
}

/// [`http_post`] with extra `headers`.
pub fn http_post_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(addr, &request)
}

/// Starts `name` (a workspace binary) with `args` and the extra environment `env`.
pub fn spawn_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new(binary(name));
    command.args(args).envs(env.iter().copied());
    Proc::start(command, name)
}

/// A tether-ipconfig on a free loopback port, started with `extra` flags.
pub fn ipconfig(extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let listen = addr.to_string();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("tether-ipconfig", &args);
    wait_for_port(addr, Duration::from_secs(10));
    (proc, addr)
}

/// The gateway ids an ipconfig's `/ip_list` lists now, sorted (empty on a 503).
pub fn listed(ipconfig: SocketAddr) -> Vec<String> {
    let (status, body) = http_get(ipconfig, "/ip_list");
    if status != 200 {
        return Vec::new();
    }
    let list: serde_json::Value = serde_json::from_str(&body).expect("ip_list is JSON");
    let mut ids: Vec<String> = list["gateways"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}
