//! Support for the tether-state tests: the daemon on a fresh Unix socket, push API port,
//! metrics port and journal directory ([`StateDaemon`]), a blocking gateway-side link over
//! the socket ([`StateLink`]), login tokens, push API token files ([`write_api_tokens`]),
//! and the push/session HTTP calls.
//!
//! Every read has a timeout and every wait a deadline, so a broken daemon fails a test
//! instead of hanging it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use tether_proto::{encode, Decoder, Kind, NodeErrorBody, Routed};

use crate::{free_addr, http_get, http_request, HttpAnswer, Proc};

/// The JWT secret every [`StateDaemon`] is started with.
pub const SECRET: &str = "e2e-state-secret";

/// How long a daemon gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The default wait for one frame.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A valid token for device `sub`, signed with [`SECRET`], expiring in an hour.
pub fn token(sub: &str) -> String {
    tether_state::token::sign(SECRET.as_bytes(), sub, now_s() + 3600)
}

/// A client of the gateway at `addr` logged in as `device` (LOGIN with [`token`], LOGIN_OK
/// checked); returns it and the LOGIN_OK JSON.
pub fn gateway_login(addr: SocketAddr, device: &str) -> (crate::Client, Value) {
    let mut c = crate::Client::connect(addr);
    c.send_frame(Kind::Login, 1, token(device).as_bytes());
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 1), "{device}: {r:?}");
    (
        c,
        serde_json::from_slice(&r.body).expect("LOGIN_OK is JSON"),
    )
}

/// A token with arbitrary claims, signed with [`SECRET`].
pub fn token_with(claims: &Value) -> String {
    tether_state::token::sign_claims(SECRET.as_bytes(), claims)
}

/// Writes a push API token file at `path`: one `NAME SHA256 SCOPES` line per
/// `(name, token, scopes)`.
pub fn write_api_tokens(path: &Path, tokens: &[(&str, &str, &str)]) {
    let text: String = tokens
        .iter()
        .map(|(name, token, scopes)| {
            let hash = tether_state::api_tokens::hash_hex(token.as_bytes());
            format!("{name} {hash} {scopes}\n")
        })
        .collect();
    std::fs::write(path, text).expect("write the API token file");
}

/// Runs `tether-e2e-peer` as `uid`, primary group `gid` and supplementary `groups` (this
/// process must be root): it connects to `socket` and sends HELLO `gateway`. Returns its one
/// line of JSON (see `src/bin/peer.rs`).
pub fn hello_as(socket: &Path, gateway: &str, uid: u32, gid: u32, groups: &[u32]) -> Value {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // A copy beside the socket: the build directory need not be reachable by `uid`.
    let exe = socket.with_file_name("tether-e2e-peer");
    std::fs::copy(crate::binary("tether-e2e-peer"), &exe).expect("copy tether-e2e-peer");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut command = std::process::Command::new(&exe);
    command.arg(socket).arg(gateway);
    // SAFETY: between fork and exec only the three id syscalls run (no allocation, no lock).
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // ETXTBSY while a thread of this process forked holding the copy open for writing.
    let mut tries = 0;
    let out = loop {
        match command.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            other => break other.expect("run tether-e2e-peer as another uid"),
        }
    };
    assert!(out.status.success(), "tether-e2e-peer: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tether-e2e-peer printed no JSON ({e}): {out:?}"))
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tether-e2e-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A tether-state process on its own socket, HTTP ports and journal directory.
#[derive(Debug)]
pub struct StateDaemon {
    proc: Option<Proc>,
    /// The Unix socket gateways connect to.
    pub socket: PathBuf,
    /// The push API listener (a new port after [`StateDaemon::restart`]).
    pub http: SocketAddr,
    /// The metrics listener (a new port after [`StateDaemon::restart`]).
    pub metrics: SocketAddr,
    /// The bearer token the push and session helpers send, for a daemon started with
    /// `--api-tokens-file`.
    pub api_token: Option<String>,
    /// The journal directory.
    pub journal: PathBuf,
    /// The directory holding the socket and the journal.
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl StateDaemon {
    /// Starts a daemon with `extra` flags on a fresh socket, port and journal, and waits until
    /// both the socket and the HTTP port accept.
    pub fn start(extra: &[&str]) -> StateDaemon {
        let dir = temp_dir("state");
        let mut daemon = StateDaemon {
            proc: None,
            socket: dir.join("state.sock"),
            http: free_addr(),
            metrics: free_addr(),
            api_token: None,
            journal: dir.join("journal"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        daemon.launch();
        daemon
    }

    /// The command-line flags for a daemon on `socket`, `http`, `metrics` and `journal`,
    /// with `--jwt-secret` [`SECRET`] unless `extra` names a JWT secret itself.
    pub fn args(
        socket: &Path,
        http: SocketAddr,
        metrics: SocketAddr,
        journal: &Path,
        extra: &[String],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--http".into(),
            http.to_string(),
            "--metrics".into(),
            metrics.to_string(),
            "--journal".into(),
            journal.display().to_string(),
        ];
        if !extra.iter().any(|a| a.starts_with("--jwt-secret")) {
            args.extend(["--jwt-secret".into(), SECRET.into()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// Starts a tether-state with these flags without waiting for anything.
    pub fn spawn_raw(args: &[String]) -> Proc {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::spawn_with_env("tether-state", &args, &[])
    }

    fn launch(&mut self) {
        assert!(self.proc.is_none(), "the daemon is still running");
        let args = StateDaemon::args(
            &self.socket,
            self.http,
            self.metrics,
            &self.journal,
            &self.extra,
        );
        let mut proc = StateDaemon::spawn_raw(&args);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("tether-state exited at start-up: {status} (args {args:?})");
            }
            let socket_up = UnixStream::connect(&self.socket).is_ok();
            let tcp_up = |addr| {
                std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
            };
            if socket_up && tcp_up(&self.http) && tcp_up(&self.metrics) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tether-state did not listen on {}, {} and {} within {START_TIMEOUT:?}",
                self.socket.display(),
                self.http,
                self.metrics
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(proc);
    }

    /// The running process.
    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("the daemon is not running")
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill(&mut self) {
        let mut proc = self.proc.take().expect("the daemon is not running");
        proc.signal(libc::SIGKILL);
        proc.wait_timeout(Duration::from_secs(5))
            .expect("tether-state survived SIGKILL");
    }

    /// SIGTERMs the daemon and returns its exit status (it must exit within 10 s).
    pub fn stop(&mut self) -> ExitStatus {
        let mut proc = self.proc.take().expect("the daemon is not running");
        proc.signal(libc::SIGTERM);
        proc.wait_timeout(Duration::from_secs(10))
            .expect("tether-state did not exit within 10 s of SIGTERM")
    }

    /// Starts the daemon again (after [`StateDaemon::kill`] or [`StateDaemon::stop`]) on the
    /// same socket path, journal and flags, with new HTTP ports, and waits until it listens.
    pub fn restart(&mut self) {
        self.http = free_addr();
        self.metrics = free_addr();
        self.launch();
    }

    /// SIGHUP: the daemon re-reads its configuration and its API token file.
    pub fn reload(&mut self) {
        self.proc().signal(libc::SIGHUP);
    }

    /// A request to the push API with `token` as its bearer token (none when `None`).
    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> HttpAnswer {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        http_request(self.http, method, path, &headers, body)
    }

    /// `DELETE /v1/sessions/{device}` with [`StateDaemon::api_token`]: the status and JSON.
    pub fn end_session(&self, device: &str) -> (u16, Value) {
        let path = format!("/v1/sessions/{device}");
        let answer = self.api("DELETE", &path, self.api_token.as_deref(), b"");
        (answer.status, answer.json())
    }

    /// A new link: connected, HELLO'd as `gateway` (HELLO_OK checked) and with an empty
    /// announcement (ANNOUNCE_END), as a freshly started gateway would.
    pub fn link(&self, gateway: &str) -> StateLink {
        let mut link = StateLink::connect(&self.socket);
        link.hello(gateway);
        link.announce_end();
        link
    }

    /// `POST /v1/push`; returns the status and the JSON answer (`Null` when not JSON).
    pub fn push(&self, device: &str, payload: &[u8], ttl_s: Option<u64>) -> (u16, Value) {
        let mut body = serde_json::json!({
            "device_id": device,
            "payload": STANDARD.encode(payload),
        });
        if let Some(ttl) = ttl_s {
            body["ttl_s"] = Value::from(ttl);
        }
        self.post_push(body.to_string().as_bytes())
    }

    /// `POST /v1/push` with a raw body (and [`StateDaemon::api_token`]).
    pub fn post_push(&self, body: &[u8]) -> (u16, Value) {
        let answer = self.api("POST", "/v1/push", self.api_token.as_deref(), body);
        (answer.status, answer.json())
    }

    /// A push that must be answered 200 with `status`; returns its msg_id (when it has one).
    pub fn push_expect(&self, device: &str, payload: &[u8], status: &str) -> Option<u64> {
        let (code, v) = self.push(device, payload, None);
        assert_eq!(code, 200, "push to {device}: {v}");
        assert_eq!(v["status"], status, "push to {device}: {v}");
        if status == "offline" {
            assert!(v["msg_id"].is_null(), "an offline push has no msg_id: {v}");
            None
        } else {
            Some(
                v["msg_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("msg_id is not an integer: {v}")),
            )
        }
    }

    /// `GET /v1/sessions/{device}`: the session's JSON, or `None` on 404 (whose body must be
    /// a JSON error).
    pub fn session(&self, device: &str) -> Option<Value> {
        let path = format!("/v1/sessions/{device}");
        let answer = self.api("GET", &path, self.api_token.as_deref(), b"");
        let (status, body) = (answer.status, answer.body);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("session answer is not JSON ({e}): {status} {body:?}"));
        match status {
            200 => Some(v),
            404 => {
                assert!(v["error"].is_string(), "404 without an error: {body}");
                None
            }
            other => panic!("GET /v1/sessions/{device}: {other} {body}"),
        }
    }

    /// The session of `device`, which must exist.
    pub fn session_of(&self, device: &str) -> Value {
        self.session(device)
            .unwrap_or_else(|| panic!("no session for {device}"))
    }

    /// The `/metrics` text, from the metrics listener.
    pub fn metrics(&self) -> String {
        let (status, text) = http_get(self.metrics, "/metrics");
        assert_eq!(status, 200, "{text}");
        text
    }

    /// The value of one series (name with its labels exactly as written) in `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        tether_daemon::prometheus::read_sample(&self.metrics(), series)
    }
}

impl Drop for StateDaemon {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(libc::SIGKILL);
            let _ = proc.wait_timeout(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one read from a link gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Frame(crate::Reply),
    /// The daemon closed the link (EOF or reset).
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// A STATE_LOGIN_OK, checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOk {
    pub session: String,
    pub resume_token: String,
    pub heartbeat_s: u64,
}

/// A gateway's link to the daemon over its Unix socket.
#[derive(Debug)]
pub struct StateLink {
    pub stream: UnixStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl StateLink {
    /// Connects (retrying for up to 5 s while the socket is not there yet).
    pub fn connect(socket: &Path) -> StateLink {
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to {}: {e}",
                        socket.display()
                    );
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream
            .set_read_timeout(Some(RECV_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(RECV_TIMEOUT))
            .expect("write timeout");
        StateLink {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(u32::MAX - 10),
        }
    }

    /// Sends HELLO with `gateway_id`; asserts HELLO_OK (id 0, the three JSON integers) and
    /// returns its JSON.
    pub fn hello(&mut self, gateway_id: &str) -> Value {
        self.send_frame(Kind::Hello, 0, gateway_id.as_bytes());
        let reply = self.expect(Kind::HelloOk);
        assert_eq!(reply.id, 0, "HELLO_OK id");
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "HELLO_OK body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&reply.body)
            )
        });
        for key in ["heartbeat_s", "resume_window_s", "max_pending"] {
            assert!(v[key].is_u64(), "HELLO_OK {key} is not an integer: {v}");
        }
        v
    }

    /// Writes raw bytes; panics on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("write to the state link");
    }

    /// Writes raw bytes; the error when the link is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Encodes and sends one frame.
    pub fn send_frame(&mut self, kind: Kind, id: u64, body: &[u8]) {
        let mut out = Vec::new();
        encode::frame(&mut out, kind, id, body);
        self.send(&out);
    }

    /// Sends a frame whose body is `route` + `rest`.
    pub(crate) fn send_routed(&mut self, kind: Kind, id: u64, route: u64, rest: &[u8]) {
        let mut out = Vec::new();
        encode::routed(&mut out, kind, id, route, rest);
        self.send(&out);
    }

    /// STATE_LOGIN (no wait).
    pub fn send_login(&mut self, route: u64, id: u64, token: &str) {
        self.send_routed(Kind::StateLogin, id, route, token.as_bytes());
    }

    /// STATE_LOGIN and its answer (the next frame).
    pub fn login(&mut self, route: u64, id: u64, token: &str) -> crate::Reply {
        self.send_login(route, id, token);
        self.recv()
    }

    /// STATE_LOGIN that must succeed: the answer checked with [`check_login_ok`].
    pub fn login_ok(&mut self, route: u64, id: u64, device: &str) -> LoginOk {
        let reply = self.login(route, id, &token(device));
        check_login_ok(&reply, id, route)
    }

    /// STATE_RESUME (no wait).
    pub(crate) fn send_resume(&mut self, route: u64, id: u64, resume_token: &str) {
        self.send_routed(Kind::StateResume, id, route, resume_token.as_bytes());
    }

    /// STATE_RESUME and its answer (the next frame).
    pub fn resume(&mut self, route: u64, id: u64, resume_token: &str) -> crate::Reply {
        self.send_resume(route, id, resume_token);
        self.recv()
    }

    /// HEARTBEAT for `routes`.
    pub fn heartbeat(&mut self, routes: &[u64]) {
        let mut out = Vec::new();
        encode::routes(&mut out, Kind::Heartbeat, routes);
        self.send(&out);
    }

    /// ANNOUNCE of `routes`.
    pub fn announce(&mut self, routes: &[u64]) {
        let mut out = Vec::new();
        encode::routes(&mut out, Kind::Announce, routes);
        self.send(&out);
    }

    /// ANNOUNCE_END.
    pub fn announce_end(&mut self) {
        self.send_frame(Kind::AnnounceEnd, 0, &[]);
    }

    /// CLOSED for `route`.
    pub fn closed(&mut self, route: u64, reason: &str) {
        self.send_routed(Kind::Closed, 0, route, reason.as_bytes());
    }

    /// STATE_ACK of message `msg_id` on `route`.
    pub fn ack(&mut self, route: u64, msg_id: u64) {
        self.send_routed(Kind::StateAck, msg_id, route, &[]);
    }

    /// The next frame, EOF, or a timeout after `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.take_frame() {
                return Event::Frame(reply);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Event::Timeout;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "EOF inside a frame: {} bytes",
                        self.buf.len()
                    );
                    return Event::Closed;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Event::Closed
                }
                Err(e) => panic!("reading the state link: {e}"),
            }
        }
    }

    /// The next frame within `timeout`, or `None` on timeout or EOF.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<crate::Reply> {
        match self.next_event(timeout) {
            Event::Frame(reply) => Some(reply),
            Event::Closed | Event::Timeout => None,
        }
    }

    /// The next frame, which must come within 5 s.
    pub fn recv(&mut self) -> crate::Reply {
        match self.next_event(RECV_TIMEOUT) {
            Event::Frame(reply) => reply,
            other => panic!("expected a frame from tether-state, got {other:?}"),
        }
    }

    /// The next frame, which must be of `kind`.
    pub fn expect(&mut self, kind: Kind) -> crate::Reply {
        let reply = self.recv();
        assert_eq!(reply.kind, kind, "unexpected frame: {}", describe(&reply));
        reply
    }

    /// The next frame within `timeout` that `skip` does not reject; `None` on timeout or EOF.
    pub fn recv_skipping(
        &mut self,
        timeout: Duration,
        mut skip: impl FnMut(&crate::Reply) -> bool,
    ) -> Option<crate::Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Event::Frame(reply) if skip(&reply) => continue,
                Event::Frame(reply) => return Some(reply),
                Event::Closed | Event::Timeout => return None,
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.next_event(quiet) {
            Event::Timeout => {}
            Event::Frame(reply) => panic!("expected silence, got {}", describe(&reply)),
            Event::Closed => panic!("expected silence, the link was closed"),
        }
    }

    /// Asserts the daemon closes the link within 5 s, with nothing sent before.
    pub fn expect_closed(&mut self) {
        match self.next_event(RECV_TIMEOUT) {
            Event::Closed => {}
            Event::Frame(reply) => panic!("expected close, got {}", describe(&reply)),
            Event::Timeout => panic!("the link is still open after {RECV_TIMEOUT:?}"),
        }
    }

    /// Asserts the next frame is STATE_ERROR with `code` and `id`, and the link then closes.
    /// Returns the reason.
    pub fn expect_state_error(&mut self, code: u16, id: u64) -> String {
        let reply = self.expect(Kind::StateError);
        let body = tether_proto::ErrorBody::parse(&reply.body)
            .unwrap_or_else(|e| panic!("STATE_ERROR body: {e}"));
        assert_eq!(
            (body.code, reply.id),
            (code, id),
            "STATE_ERROR code and id ({})",
            body.reason
        );
        let reason = body.reason.to_string();
        self.expect_closed();
        reason
    }

    /// A complete frame from the front of the buffer, if one is there.
    fn take_frame(&mut self) -> Option<crate::Reply> {
        let (frame, used) = self
            .decoder
            .decode(&self.buf)
            .unwrap_or_else(|e| panic!("tether-state sent a bad frame: {e}"))?;
        let reply = crate::Reply {
            kind: frame.kind,
            id: frame.id,
            body: frame.body.to_vec(),
        };
        self.buf.drain(..used);
        Some(reply)
    }
}

/// A readable one-line account of a frame, for assertion messages.
pub fn describe(reply: &crate::Reply) -> String {
    let tail = match reply.kind {
        Kind::LoginFail | Kind::Kick => NodeErrorBody::parse(&reply.body)
            .map(|b| format!("route {:#x} code {} {:?}", b.route, b.code, b.reason))
            .unwrap_or_else(|e| format!("bad body: {e}")),
        Kind::StateError => tether_proto::ErrorBody::parse(&reply.body)
            .map(|b| format!("code {} {:?}", b.code, b.reason))
            .unwrap_or_else(|e| format!("bad body: {e}")),
        Kind::StateLoginOk | Kind::StatePush => Routed::parse(&reply.body)
            .map(|r| {
                format!(
                    "route {:#x} {:?}",
                    r.route,
                    String::from_utf8_lossy(r.payload)
                )
            })
            .unwrap_or_else(|e| format!("bad body: {e}")),
        _ => format!("{:?}", String::from_utf8_lossy(&reply.body)),
    };
    format!("{} id {} {}", reply.kind.name(), reply.id, tail)
}

/// The route at the head of a routed body (0 when the body is too short).
pub fn route_of(reply: &crate::Reply) -> u64 {
    Routed::parse(&reply.body).map(|r| r.route).unwrap_or(0)
}

/// Checks a STATE_LOGIN_OK for `id` and `route` and the shape of its JSON (session: 16
/// lowercase hex digits; resume token: the session, a dot, 32 hex digits; heartbeat_s).
pub fn check_login_ok(reply: &crate::Reply, id: u64, route: u64) -> LoginOk {
    assert_eq!(
        reply.kind,
        Kind::StateLoginOk,
        "expected STATE_LOGIN_OK, got {}",
        describe(reply)
    );
    assert_eq!(reply.id, id, "STATE_LOGIN_OK id");
    let body = Routed::parse(&reply.body).expect("STATE_LOGIN_OK body starts with a route");
    assert_eq!(body.route, route, "STATE_LOGIN_OK route");
    let v: Value = serde_json::from_slice(body.payload).unwrap_or_else(|e| {
        panic!(
            "STATE_LOGIN_OK JSON ({e}): {:?}",
            String::from_utf8_lossy(body.payload)
        )
    });
    let session = v["session"].as_str().expect("session string").to_string();
    assert!(is_hex(&session, 16), "session id {session:?}");
    let resume_token = v["resume_token"]
        .as_str()
        .expect("resume_token string")
        .to_string();
    let (prefix, secret) = resume_token
        .split_once('.')
        .unwrap_or_else(|| panic!("resume token without a dot: {resume_token:?}"));
    assert_eq!(prefix, session, "resume token starts with the session id");
    assert!(
        secret.len() == 32 && secret.chars().all(|c| c.is_ascii_hexdigit()),
        "resume token secret {secret:?}"
    );
    let heartbeat_s = v["heartbeat_s"].as_u64().expect("heartbeat_s integer");
    LoginOk {
        session,
        resume_token,
        heartbeat_s,
    }
}

/// Checks a LOGIN_FAIL or KICK: its kind, id, route and code.
pub fn check_routed_error(reply: &crate::Reply, kind: Kind, id: u64, route: u64, code: u16) {
    assert_eq!(
        reply.kind,
        kind,
        "expected {}, got {}",
        kind.name(),
        describe(reply)
    );
    let body =
        NodeErrorBody::parse(&reply.body).unwrap_or_else(|e| panic!("{} body: {e}", kind.name()));
    assert_eq!(
        (reply.id, body.route, body.code),
        (id, route, code),
        "{} (id, route, code); reason {:?}",
        kind.name(),
        body.reason
    );
}

/// Checks a STATE_PUSH: message id, route and payload.
pub fn check_push(reply: &crate::Reply, msg_id: u64, route: u64, payload: &[u8]) {
    assert_eq!(
        reply.kind,
        Kind::StatePush,
        "expected STATE_PUSH, got {}",
        describe(reply)
    );
    let body = Routed::parse(&reply.body).expect("STATE_PUSH body starts with a route");
    assert_eq!(
        (reply.id, body.route, body.payload),
        (msg_id, route, payload),
        "STATE_PUSH (msg id, route, payload)"
    );
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}
