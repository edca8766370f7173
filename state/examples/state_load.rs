//! A load client for `tether-state`: it plays gateways on the daemon's Unix socket, for
//! `bench/state.sh`. Not a test: a measurement to read.
//!
//! ```text
//! cargo build --release -p tether-state --example state_load
//! export TETHER_STATE_JWT_SECRET=…   # the daemon's secret (or --secret, which shows in ps)
//! target/release/examples/state_load mix  --socket S --conns 50 [--depth 16 --duration 10 --warmup 2]
//! target/release/examples/state_load fill --socket S --conns 4 --sessions 1000000
//! target/release/examples/state_load churn --socket S --conns 8 --sessions 20000 --rooms 1000 \
//!     [--depth 64 --duration 10 --warmup 2 --server-pid PID]
//! # ES256 or RS256 tokens instead, from a PKCS#8 PEM private key whose public key (kid K) is
//! # in the daemon's --jwt-keys-file:
//! target/release/examples/state_load fill --socket S --conns 4 --sessions 200000 \
//!     --alg ES256 --key-file es256.pem --kid K [--server-pid PID]
//! ```
//!
//! The event loop is single-threaded (mio, every link non-blocking), like redis-benchmark's,
//! so that one client core drives either server the same way.
//!
//! **mix** — every connection is its own gateway (HELLO with its own gateway id, then an empty
//! announcement) and sends batches of `--depth` commands in one write, the next batch only
//! once the previous one is fully answered, like `redis-benchmark -P`. A batch is
//!
//! ```text
//! L × CLOSED (the connection's oldest sessions) · (depth − 2L) × HEARTBEAT (one route each,
//! round robin over the live sessions) · L × STATE_LOGIN (new routes)
//! ```
//!
//! with L = `--logins-per-batch` (default 2: 16 = 2 + 12 + 2, so each session sees one LOGIN,
//! six HEARTBEATs and one CLOSED). Only LOGINs are answered, in order, so the last LOGIN_OK of
//! a batch says that the daemon has processed the whole batch. Each connection starts with
//! `--pool` sessions logged in (before timing) and keeps that many live. Devices come from a
//! ring of `--devices` tokens per connection, all signed before the timed part (the daemon's
//! verification is part of the work; the client's signing is not); a device logs in again
//! long after its previous session was CLOSED, as a reconnecting device does. Commands that
//! complete inside the `--duration` window after `--warmup` are counted. One JSON line on
//! stdout: commands/s, logins/s, batch latency, the client's own CPU use and, with
//! `--server-pid`, the daemon's and every core's over the measured window, failures.
//!
//! **fill** — signs one token per session first (not timed), then logs in `--sessions`
//! distinct devices over `--conns` links, up to `--depth` LOGINs outstanding per link, and
//! prints one JSON line once every LOGIN is answered: logins/s, and with `--server-pid` the
//! daemon's CPU µs per login; `verify_us` is what this process measured one
//! `Verifier::verify` of these tokens to cost (the daemon's check, on the client's core).
//! With `--relogin` every device then logs in again with the same token (a reconnect storm
//! after the resume window: the daemon's verified-token cache answers ES256/RS256 ones),
//! timed on its own. Then it keeps the links open (no heartbeats: run the daemon with a large
//! `--heartbeat-s`) for `--hold` seconds (default: until killed), so that the daemon's memory
//! can be read with every session in place.
//!
//! **churn** — room membership churn. Logs in `--sessions` devices over `--conns` links (as
//! fill does; each token's `rooms` claim is `["churn-*"]`), puts each session in its base room
//! (one of `--rooms` rooms `churn-<k>`, so every room keeps members all along) and in one more,
//! untimed. Then each link keeps `--depth` commands outstanding: STATE_LEAVE of a session's
//! extra room and STATE_JOIN of its next one, in turn, so every command is a real change (the
//! daemon journals it and sends a MEMBERSHIP, which is counted and otherwise ignored). Each
//! STATE_ROOM_OK must carry its command's id and route and say `"member":true` for a JOIN,
//! `false` for a LEAVE; ROOM_FAILs are counted as failures. One JSON line on stdout:
//! joins+leaves answered per second over the measured window and, with `--server-pid`, the
//! daemon's CPU µs per join/leave and its share of one core over the same window.
//!
//! Exit status 1 on a failure that makes the numbers meaningless: a STATE_ERROR, a link the
//! daemon closed, a reply that does not match, a stall. LOGIN_FAILs and KICKs are counted and
//! reported; the caller decides.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use tether_proto::{encode, feed, Decoder, Frame, Kind, NodeErrorBody, Routed};
use tether_state::token::{Alg, KeySet, Policy, Signer, Verifier};

/// The state link's largest body (doc/protocol.md).
const MAX_BODY: u32 = 1 << 20;

#[derive(Parser)]
#[command(about = "Load client for tether-state (bench/state.sh)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// LOGIN/HEARTBEAT/CLOSED batches on N links for a fixed time; prints commands/s.
    Mix(MixArgs),
    /// Logs in M sessions as fast as it can, then holds the links open.
    Fill(FillArgs),
    /// Logs in M sessions, then STATE_JOIN / STATE_LEAVE for a fixed time; prints joins+leaves/s.
    Churn(ChurnArgs),
}

#[derive(Args)]
struct Link {
    /// The daemon's Unix socket.
    #[arg(long)]
    socket: PathBuf,
    /// The daemon's JWT secret (HS256).
    #[arg(long, env = "TETHER_STATE_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Token algorithm: HS256 (--secret), ES256 or RS256 (--key-file).
    #[arg(long, default_value = "HS256")]
    alg: String,
    /// ES256/RS256: the PKCS#8 PEM private key tokens are signed with.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The `kid` tokens name (the key's id in the daemon's JWK set).
    #[arg(long)]
    kid: Option<String>,
    /// Links (each one gateway).
    #[arg(long)]
    conns: usize,
}

#[derive(Args)]
struct MixArgs {
    #[command(flatten)]
    link: Link,
    /// Commands per batch (pipeline depth).
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// LOGINs (and CLOSEDs) per batch; the rest are HEARTBEATs.
    #[arg(long, default_value_t = 2)]
    logins_per_batch: usize,
    /// Live sessions per link.
    #[arg(long, default_value_t = 64)]
    pool: usize,
    /// Devices (pre-signed tokens) per link, used round robin.
    #[arg(long, default_value_t = 4096)]
    devices: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The daemon's pid: its CPU use over the measured window goes into the report.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct FillArgs {
    #[command(flatten)]
    link: Link,
    /// Sessions to log in, in all.
    #[arg(long)]
    sessions: u64,
    /// LOGINs outstanding per link.
    #[arg(long, default_value_t = 256)]
    depth: usize,
    /// Seconds to keep the links open once filled (default: until killed).
    #[arg(long)]
    hold: Option<f64>,
    /// The daemon's pid: its CPU use per login goes into the report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Then log every device in again with the same token (a reconnect storm after the
    /// resume window), timed on its own ("relogin" in the report).
    #[arg(long)]
    relogin: bool,
}

#[derive(Args)]
struct ChurnArgs {
    #[command(flatten)]
    link: Link,
    /// Sessions (devices) logged in before timing, spread over the links.
    #[arg(long, default_value_t = 20_000)]
    sessions: u64,
    /// Rooms the sessions join and leave: churn-0 … churn-(N−1); at least 3, at most
    /// --sessions (every room keeps a member).
    #[arg(long, default_value_t = 1_000)]
    rooms: u64,
    /// Commands outstanding per link (LOGINs before timing, JOINs and LEAVEs after).
    #[arg(long, default_value_t = 64)]
    depth: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The daemon's pid: its CPU use over the measured window goes into the report.
    #[arg(long)]
    server_pid: Option<u32>,
}

impl Link {
    /// The signer `--alg`, `--secret` or `--key-file`, and `--kid` describe.
    fn signer(&self) -> Result<Signer> {
        let alg = Alg::from_name(&self.alg)
            .ok_or(format!("--alg {:?}: not HS256, ES256 or RS256", self.alg))?;
        let signer = match (alg, &self.secret, &self.key_file) {
            (Alg::Hs256, Some(secret), None) => Signer::hs256(secret.as_bytes()),
            (Alg::Hs256, ..) => return Err("HS256 takes --secret (and no --key-file)".into()),
            (alg, _, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Signer::from_pem(alg, &pem).map_err(|e| format!("{}: {e}", path.display()))?
            }
            (alg, _, None) => return Err(format!("{alg} takes --key-file")),
        };
        Ok(match &self.kid {
            Some(kid) => signer.with_kid(kid),
            None => signer,
        })
    }
}

/// Mean CPU µs of one `Verifier::verify` over (up to 20,000 of) `tokens`, with the key that
/// checks `signer`'s tokens: the daemon's cost per login for the signature and claims.
fn verify_us(signer: &Signer, secret: Option<&str>, tokens: &[String]) -> Result<f64> {
    let keys = match (signer.alg(), secret) {
        (Alg::Hs256, Some(secret)) if signer.public_jwk().get("kid").is_none() => {
            KeySet::hs256(secret.as_bytes())
        }
        _ => KeySet::from_jwks(
            serde_json::json!({ "keys": [signer.public_jwk()] })
                .to_string()
                .as_bytes(),
        )
        .map_err(|e| format!("the signer's JWK: {e}"))?,
    };
    let policy = Policy {
        leeway_s: 30,
        max_lifetime_s: 86_400,
        ..Policy::default()
    };
    let verifier = Verifier::new(keys, policy);
    let sample = &tokens[..tokens.len().min(20_000)];
    let now = now_s();
    // CPU time, not wall time: a busy machine slows the loop down but does not bill it.
    let start = cpu_seconds();
    for t in sample {
        verifier
            .verify(t.as_bytes(), now)
            .map_err(|e| format!("a token does not verify: {e}"))?;
    }
    Ok((cpu_seconds() - start) * 1e6 / sample.len().max(1) as f64)
}

fn main() -> ExitCode {
    let result = match Cli::parse().mode {
        Mode::Mix(args) => mix(&args),
        Mode::Fill(args) => fill(&args),
        Mode::Churn(args) => churn(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state_load: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU seconds of process `pid` (all its threads) so far, from /proc.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// (busy, total) jiffies of every CPU, from /proc/stat's `cpuN` lines.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal
            let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
            (busy, busy + at(3) + at(4))
        })
        .collect()
}

// ---- one link ---------------------------------------------------------------------------

/// Opens a link as gateway `gateway_id`: HELLO, HELLO_OK, an empty ANNOUNCE + ANNOUNCE_END
/// (a fresh gateway has no connections), then switches to non-blocking for the event loop.
fn open_link(socket: &PathBuf, gateway_id: &str) -> Result<UnixStream> {
    let mut stream =
        StdUnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let mut out = Vec::new();
    encode::frame(&mut out, Kind::Hello, 0, gateway_id.as_bytes());
    stream.write_all(&out).map_err(|e| format!("HELLO: {e}"))?;
    let mut buf = Vec::new();
    let decoder = Decoder::new(MAX_BODY);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("waiting for HELLO_OK: {e}"))?;
        if n == 0 {
            return Err("the daemon closed the link after HELLO".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match decoder.decode(&buf) {
            Ok(None) => continue,
            Ok(Some((frame, _))) if frame.kind == Kind::HelloOk => break,
            Ok(Some((frame, _))) => return Err(format!("HELLO answered by {}", describe(&frame))),
            Err(e) => return Err(format!("HELLO answered by bytes that do not decode: {e}")),
        }
    }
    out.clear();
    encode::routes(&mut out, Kind::Announce, &[]);
    encode::frame(&mut out, Kind::AnnounceEnd, 0, &[]);
    stream
        .write_all(&out)
        .map_err(|e| format!("ANNOUNCE_END: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    Ok(UnixStream::from_std(stream))
}

fn describe(frame: &Frame<'_>) -> String {
    match frame.kind {
        Kind::StateError => {
            let code = frame
                .body
                .get(..2)
                .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(frame.body.get(2..).unwrap_or_default());
            format!("STATE_ERROR {code} \"{reason}\"")
        }
        kind => format!(
            "{} (id {}, {} body bytes)",
            kind.name(),
            frame.id,
            frame.body.len()
        ),
    }
}

/// What the daemon said to one link, as far as the load cares.
#[derive(Default)]
struct Replies {
    /// LOGIN request ids sent and not answered yet, oldest first.
    expected: VecDeque<u64>,
    login_ok: u64,
    login_fail: u64,
    /// LOGIN_FAIL codes seen (code, count), for the report.
    fail_codes: Vec<(u16, u64)>,
    kicks: u64,
    /// churn: STATE_JOIN / STATE_LEAVE commands sent and not answered yet, oldest first.
    room_expected: VecDeque<RoomCommand>,
    /// STATE_ROOM_OK answers to a JOIN (`"member":true`) and to a LEAVE (`"member":false`).
    joins_ok: u64,
    leaves_ok: u64,
    room_fail: u64,
    /// ROOM_FAIL codes seen (code, count), for the report.
    room_fail_codes: Vec<(u16, u64)>,
    /// MEMBERSHIP frames (counted, otherwise ignored: a gateway's business).
    memberships: u64,
    /// The first fatal problem: a STATE_ERROR, an out-of-order reply, an unexpected kind.
    fatal: Option<String>,
}

impl Replies {
    fn on_frame(&mut self, frame: Frame<'_>) -> bool {
        match frame.kind {
            Kind::StateLoginOk | Kind::LoginFail => {
                let Some(want) = self.expected.pop_front() else {
                    self.fatal = Some(format!("{} with no LOGIN outstanding", describe(&frame)));
                    return false;
                };
                // Our request id is the route, so both must match.
                let route = Routed::parse(frame.body).map(|r| r.route).ok();
                if frame.id != want || route != Some(want) {
                    self.fatal = Some(format!(
                        "expected the answer to LOGIN {want}, got {} for route {route:?}",
                        describe(&frame)
                    ));
                    return false;
                }
                if frame.kind == Kind::StateLoginOk {
                    self.login_ok += 1;
                } else {
                    self.login_fail += 1;
                    let code = NodeErrorBody::parse(frame.body).map_or(0, |b| b.code);
                    match self.fail_codes.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, n)) => *n += 1,
                        None => self.fail_codes.push((code, 1)),
                    }
                }
                true
            }
            Kind::Kick => {
                self.kicks += 1;
                true
            }
            Kind::StateRoomOk | Kind::RoomFail => self.on_room_answer(&frame),
            Kind::Membership => {
                self.memberships += 1;
                true
            }
            _ => {
                self.fatal = Some(format!("unexpected {}", describe(&frame)));
                false
            }
        }
    }

    /// STATE_ROOM_OK or ROOM_FAIL: the answer to the oldest JOIN or LEAVE outstanding, with
    /// its id and the route it was sent for.
    fn on_room_answer(&mut self, frame: &Frame<'_>) -> bool {
        let Some(RoomCommand {
            id: want,
            route: want_route,
            join,
        }) = self.room_expected.pop_front()
        else {
            self.fatal = Some(format!(
                "{} with no JOIN or LEAVE outstanding",
                describe(frame)
            ));
            return false;
        };
        let Ok(Routed { route, payload }) = Routed::parse(frame.body) else {
            self.fatal = Some(format!("{} too short for a route", describe(frame)));
            return false;
        };
        if frame.id != want || route != want_route {
            self.fatal = Some(format!(
                "expected the answer to {} {want}, got {} for route {route}",
                if join { "JOIN" } else { "LEAVE" },
                describe(frame)
            ));
            return false;
        }
        if frame.kind == Kind::RoomFail {
            self.room_fail += 1;
            let code = NodeErrorBody::parse(frame.body).map_or(0, |b| b.code);
            match self.room_fail_codes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => self.room_fail_codes.push((code, 1)),
            }
            return true;
        }
        // `{"room","seq","member"}`: a JOIN must answer member true, a LEAVE member false.
        let member: &[u8] = if join {
            b"\"member\":true"
        } else {
            b"\"member\":false"
        };
        if !payload.windows(member.len()).any(|w| w == member) {
            self.fatal = Some(format!(
                "the STATE_ROOM_OK for {} {want} does not say {}: {}",
                if join { "JOIN" } else { "LEAVE" },
                String::from_utf8_lossy(member),
                String::from_utf8_lossy(payload)
            ));
            return false;
        }
        match join {
            true => self.joins_ok += 1,
            false => self.leaves_ok += 1,
        }
        true
    }
}

/// A non-blocking link in the event loop: what is left to write, what is half read.
struct Conn {
    stream: UnixStream,
    out: Vec<u8>,
    written: usize,
    partial: Vec<u8>,
    replies: Replies,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            out: Vec::with_capacity(64 * 1024),
            written: 0,
            partial: Vec::new(),
            replies: Replies::default(),
        }
    }

    /// Writes what it can of `out`; `Ok(true)` once all of it is written.
    fn flush(&mut self) -> Result<bool> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err("the daemon closed the link (write returned 0)".into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(true)
    }

    /// Reads until the socket is empty, handing every frame to `replies`.
    fn read(&mut self, decoder: &Decoder, buf: &mut [u8]) -> Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(match self.replies.fatal.take() {
                        Some(f) => f,
                        None => "the daemon closed the link".into(),
                    })
                }
                Ok(n) => {
                    let replies = &mut self.replies;
                    feed(decoder, &mut self.partial, &buf[..n], |f| {
                        replies.on_frame(f)
                    })
                    .map_err(|e| format!("reply does not decode: {e}"))?;
                    if let Some(f) = self.replies.fatal.take() {
                        return Err(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

fn register(poll: &Poll, conns: &mut [Conn]) -> Result<()> {
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut c.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
    }
    Ok(())
}

fn login(out: &mut Vec<u8>, route: u64, token: &str) {
    encode::routed(out, Kind::StateLogin, route, route, token.as_bytes());
}

fn fail_codes_json(conns: &[Conn]) -> serde_json::Value {
    let mut all: Vec<(u16, u64)> = Vec::new();
    for c in conns {
        for &(code, n) in &c.replies.fail_codes {
            match all.iter_mut().find(|(k, _)| *k == code) {
                Some((_, m)) => *m += n,
                None => all.push((code, n)),
            }
        }
    }
    serde_json::Value::Object(
        all.into_iter()
            .map(|(code, n)| (code.to_string(), n.into()))
            .collect(),
    )
}

// ---- mix ----------------------------------------------------------------------------------

/// One link's sessions in the mix.
struct Sessions {
    /// Routes with a live session, oldest first.
    live: VecDeque<u64>,
    next_route: u64,
    heartbeat_cursor: usize,
    tokens: Vec<String>,
    next_token: usize,
    /// When the batch in flight was written, if one is.
    batch_sent: Option<Instant>,
}

impl Sessions {
    fn token(&mut self) -> &str {
        let i = self.next_token;
        self.next_token = (i + 1) % self.tokens.len();
        &self.tokens[i]
    }

    /// Appends one batch to `out`; the LOGIN ids it expects go to `expected`.
    fn batch(&mut self, out: &mut Vec<u8>, expected: &mut VecDeque<u64>, depth: usize, l: usize) {
        for _ in 0..l {
            let route = self.live.pop_front().expect("the pool is never empty");
            encode::routed(out, Kind::Closed, 0, route, b"bench");
        }
        for _ in 0..depth - 2 * l {
            let route = self.live[self.heartbeat_cursor % self.live.len()];
            self.heartbeat_cursor = self.heartbeat_cursor.wrapping_add(1);
            encode::routes(out, Kind::Heartbeat, &[route]);
        }
        for _ in 0..l {
            let route = self.next_route;
            self.next_route += 1;
            let token = self.token().to_owned();
            login(out, route, &token);
            expected.push_back(route);
            self.live.push_back(route);
        }
    }
}

fn mix(args: &MixArgs) -> Result<()> {
    let (depth, l) = (args.depth, args.logins_per_batch);
    if l == 0 || 2 * l > depth {
        return Err("--logins-per-batch must be at least 1 and at most --depth / 2".into());
    }
    if args.pool <= l || args.devices <= args.pool + l {
        return Err(
            "need --pool > --logins-per-batch and --devices > --pool + --logins-per-batch".into(),
        );
    }
    let signer = args.link.signer()?;
    let exp = now_s() + 86_400;
    let pid = std::process::id();

    // Tokens first: signing is the client's cost, not the daemon's.
    let signing = Instant::now();
    let mut sessions = Vec::with_capacity(args.link.conns);
    for c in 0..args.link.conns {
        let tokens = (0..args.devices)
            .map(|d| signer.sign(&format!("mix-{pid}-{c}-{d}"), exp))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("signing: {e}"))?;
        sessions.push(Sessions {
            live: VecDeque::with_capacity(args.pool + l),
            next_route: 1,
            heartbeat_cursor: 0,
            tokens,
            next_token: 0,
            batch_sent: None,
        });
    }
    let signing = signing.elapsed();

    // Links, each with its pool of sessions logged in (not timed).
    let decoder = Decoder::new(MAX_BODY);
    let mut buf = vec![0u8; 256 * 1024];
    let mut conns = Vec::with_capacity(args.link.conns);
    for (c, s) in sessions.iter_mut().enumerate() {
        let mut conn = Conn::new(open_link(&args.link.socket, &format!("mix-{pid}-{c}"))?);
        for _ in 0..args.pool {
            let route = s.next_route;
            s.next_route += 1;
            let token = s.token().to_owned();
            login(&mut conn.out, route, &token);
            conn.replies.expected.push_back(route);
            s.live.push_back(route);
        }
        conns.push(conn);
    }
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    register(&poll, &mut conns)?;
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for c in conns.iter_mut() {
            c.flush()?;
        }
        if conns.iter().all(|c| c.replies.expected.is_empty()) {
            break;
        }
        if Instant::now() > setup_deadline {
            return Err("the pool logins were not all answered within 30 s".into());
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            if ev.is_readable() {
                conns[ev.token().0].read(&decoder, &mut buf)?;
            }
        }
    }
    let pool_fail: u64 = conns.iter().map(|c| c.replies.login_fail).sum();
    if pool_fail > 0 {
        return Err(format!(
            "{pool_fail} of the pool's LOGINs failed (codes {}): is --secret the daemon's --jwt-secret?",
            fail_codes_json(&conns)
        ));
    }
    for c in conns.iter_mut() {
        c.replies = Replies::default();
    }

    // The timed part.
    let start = Instant::now();
    let t0 = start + Duration::from_secs_f64(args.warmup);
    let t1 = t0 + Duration::from_secs_f64(args.duration);
    let (mut batches, mut latencies_us) = (0u64, Vec::<u32>::with_capacity(1 << 20));
    // (when, our CPU seconds, the daemon's) at the first wake-up after t0 and after t1.
    let (mut cpu0, mut cpu1) = (None, None);
    let (mut jiffies0, mut jiffies1) = (Vec::new(), Vec::new());
    for (c, s) in conns.iter_mut().zip(sessions.iter_mut()) {
        let Conn { out, replies, .. } = c;
        s.batch(out, &mut replies.expected, depth, l);
        s.batch_sent = Some(Instant::now());
        c.flush()?;
    }
    let server_cpu = || args.server_pid.and_then(process_cpu_seconds);
    let mut last_progress = Instant::now();
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        if cpu0.is_none() && now >= t0 {
            cpu0 = Some((now, cpu_seconds(), server_cpu()));
            jiffies0 = cpu_jiffies();
        }
        if cpu1.is_none() && now >= t1 {
            cpu1 = Some((now, cpu_seconds(), server_cpu()));
            jiffies1 = cpu_jiffies();
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let (c, s) = (&mut conns[i], &mut sessions[i]);
            if ev.is_writable() && c.written < c.out.len() {
                c.flush()?;
            }
            if !ev.is_readable() {
                continue;
            }
            c.read(&decoder, &mut buf)?;
            if !c.replies.expected.is_empty() {
                continue;
            }
            // The batch is answered: count it, send the next one (until t1).
            let Some(sent) = s.batch_sent.take() else {
                continue;
            };
            let done = Instant::now();
            last_progress = done;
            if done >= t0 && done < t1 {
                batches += 1;
                latencies_us
                    .push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            }
            if done < t1 {
                let Conn { out, replies, .. } = c;
                s.batch(out, &mut replies.expected, depth, l);
                s.batch_sent = Some(Instant::now());
                c.flush()?;
            }
        }
        let in_flight = sessions.iter().filter(|s| s.batch_sent.is_some()).count();
        if Instant::now() >= t1 && in_flight == 0 {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "stalled: no batch answered for 10 s ({in_flight} of {} links waiting)",
                conns.len()
            ));
        }
    }
    // Rates count the batches answered inside [t0, t1); CPU is over the sampled span.
    let measured = args.duration;
    let (a0, c0, s0) = cpu0.unwrap_or((t0, 0.0, None));
    let (a1, c1, s1) = cpu1.unwrap_or_else(|| (Instant::now(), cpu_seconds(), server_cpu()));
    let span = a1.duration_since(a0).as_secs_f64().max(1e-3);
    // Every core's busy share over the span: with the daemon's own use, shows other work.
    let cpu_busy_pct: Vec<f64> = jiffies0
        .iter()
        .zip(&jiffies1)
        .map(|(a, b)| {
            100.0 * b.0.saturating_sub(a.0) as f64 / b.1.saturating_sub(a.1).max(1) as f64
        })
        .collect();
    let server_cpu_pct = match (s0, s1) {
        (Some(a), Some(b)) => serde_json::json!(100.0 * (b - a) / span),
        _ => serde_json::Value::Null,
    };

    latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies_us.is_empty() {
            return 0;
        }
        latencies_us[((latencies_us.len() - 1) as f64 * p).round() as usize]
    };
    let commands = batches * depth as u64;
    let logins = batches * l as u64;
    let report = serde_json::json!({
        "mode": "mix",
        "conns": args.link.conns,
        "depth": depth,
        "batch": {"closed": l, "heartbeat": depth - 2 * l, "login": l},
        "pool_per_conn": args.pool,
        "devices_per_conn": args.devices,
        "warmup_s": args.warmup,
        "duration_s": measured,
        "batches": batches,
        "commands": commands,
        "commands_per_s": commands as f64 / measured,
        "logins_per_s": logins as f64 / measured,
        "heartbeats_per_s": (batches * (depth - 2 * l) as u64) as f64 / measured,
        "closed_per_s": logins as f64 / measured,
        "batch_latency_us": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "client_cpu_pct": 100.0 * (c1 - c0) / span,
        "server_cpu_pct": server_cpu_pct,
        "cpu_busy_pct": cpu_busy_pct,
        "signing_s": signing.as_secs_f64(),
        "login_ok": conns.iter().map(|c| c.replies.login_ok).sum::<u64>(),
        "login_fail": conns.iter().map(|c| c.replies.login_fail).sum::<u64>(),
        "login_fail_codes": fail_codes_json(&conns),
        "kicks": conns.iter().map(|c| c.replies.kicks).sum::<u64>(),
    });
    println!("{report}");
    Ok(())
}

// ---- fill ---------------------------------------------------------------------------------

fn fill(args: &FillArgs) -> Result<()> {
    let signer = args.link.signer()?;
    let exp = now_s() + 86_400;
    let pid = std::process::id();
    // Every token first: signing is the client's cost, not the daemon's.
    let signing = Instant::now();
    let tokens = (0..args.sessions)
        .map(|k| signer.sign(&format!("fill-{pid}-{k}"), exp))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("signing: {e}"))?;
    let signing = signing.elapsed();
    let verify_us = verify_us(
        &signer,
        args.link.secret.as_deref(),
        &tokens[..tokens.len().min(20_000)],
    )?;
    let n = args.link.conns.max(1);
    let mut links = Links {
        conns: Vec::with_capacity(n),
        poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
        events: Events::with_capacity(1024),
        decoder: Decoder::new(MAX_BODY),
        buf: vec![0u8; 256 * 1024],
        routes: vec![0; n],
    };
    for c in 0..n {
        links.conns.push(Conn::new(open_link(
            &args.link.socket,
            &format!("fill-{pid}-{c}"),
        )?));
    }
    register(&links.poll, &mut links.conns)?;
    let first = links.pass(&tokens, args.depth, args.server_pid)?;
    // The same tokens once more, each device logging in again over a new route.
    let again = match args.relogin {
        true => Some(links.pass(&tokens, args.depth, args.server_pid)?),
        false => None,
    };
    let conns = &links.conns;
    let report = serde_json::json!({
        "mode": "fill",
        "conns": n,
        "sessions": args.sessions,
        "login_ok": first.ok,
        "login_fail": conns.iter().map(|c| c.replies.login_fail).sum::<u64>(),
        "login_fail_codes": fail_codes_json(conns),
        "kicks": conns.iter().map(|c| c.replies.kicks).sum::<u64>(),
        "seconds": first.seconds,
        "logins_per_s": first.ok as f64 / first.seconds,
        "alg": signer.alg().name(),
        "signing_s": signing.as_secs_f64(),
        "verify_us": verify_us,
        "server_cpu_s": first.server_cpu_s,
        "server_cpu_us_per_login": first.server_cpu_s.map(|s| s * 1e6 / first.ok.max(1) as f64),
        "relogin": again.map(|a| serde_json::json!({
            "login_ok": a.ok,
            "seconds": a.seconds,
            "logins_per_s": a.ok as f64 / a.seconds,
            "server_cpu_us_per_login": a.server_cpu_s.map(|s| s * 1e6 / a.ok.max(1) as f64),
        })),
    });
    println!("{report}");
    io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;

    // Hold the links (and so the sessions) until told to stop; answer nothing, read what comes
    // so the daemon never blocks on us.
    let until = args
        .hold
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    while until.is_none_or(|u| Instant::now() < u) {
        links.wait(Duration::from_millis(200))?;
    }
    Ok(())
}

/// fill's links and what one pass of logins needs.
struct Links {
    conns: Vec<Conn>,
    poll: Poll,
    events: Events,
    decoder: Decoder,
    buf: Vec<u8>,
    /// The last route used on each link.
    routes: Vec<u64>,
}

/// One pass of fill: every token logged in once.
struct Pass {
    ok: u64,
    seconds: f64,
    server_cpu_s: Option<f64>,
}

impl Links {
    /// Logs every token in, up to `depth` LOGINs outstanding per link: token k on link
    /// k % n, each LOGIN on a new route of its link.
    fn pass(&mut self, tokens: &[String], depth: usize, server_pid: Option<u32>) -> Result<Pass> {
        let n = self.conns.len();
        let total = tokens.len() as u64;
        let answered_now = |conns: &[Conn]| -> u64 {
            conns
                .iter()
                .map(|c| c.replies.login_ok + c.replies.login_fail)
                .sum()
        };
        let (ok0, answered0) = (
            self.conns.iter().map(|c| c.replies.login_ok).sum::<u64>(),
            answered_now(&self.conns),
        );
        let mut next_on_link = vec![0u64; n];
        let server_cpu = || server_pid.and_then(process_cpu_seconds);
        let cpu0 = server_cpu();
        let start = Instant::now();
        let mut last_progress = start;
        let mut answered = 0u64;
        loop {
            for (c, conn) in self.conns.iter_mut().enumerate() {
                while conn.replies.expected.len() < depth.max(1) {
                    let k = next_on_link[c] * n as u64 + c as u64;
                    if k >= total {
                        break;
                    }
                    next_on_link[c] += 1;
                    self.routes[c] += 1;
                    login(&mut conn.out, self.routes[c], &tokens[k as usize]);
                    conn.replies.expected.push_back(self.routes[c]);
                }
                if conn.written < conn.out.len() {
                    conn.flush()?;
                }
            }
            let now_answered = answered_now(&self.conns) - answered0;
            if now_answered != answered {
                answered = now_answered;
                last_progress = Instant::now();
            }
            if answered >= total {
                break;
            }
            if last_progress.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "stalled: {answered} of {total} LOGINs answered, none for 10 s"
                ));
            }
            self.wait(Duration::from_millis(50))?;
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(Pass {
            ok: self.conns.iter().map(|c| c.replies.login_ok).sum::<u64>() - ok0,
            seconds,
            server_cpu_s: cpu0.zip(server_cpu()).map(|(a, b)| b - a),
        })
    }

    /// One poll: flushes what became writable, reads what came.
    fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.poll
            .poll(&mut self.events, Some(timeout))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in self.events.iter() {
            let conn = &mut self.conns[ev.token().0];
            if ev.is_writable() && conn.written < conn.out.len() {
                conn.flush()?;
            }
            if ev.is_readable() {
                conn.read(&self.decoder, &mut self.buf)?;
            }
        }
        Ok(())
    }
}

// ---- churn --------------------------------------------------------------------------------

/// A STATE_JOIN or STATE_LEAVE sent, for matching its answer.
struct RoomCommand {
    id: u64,
    route: u64,
    join: bool,
}

/// The room called `churn-<k>`.
fn churn_room(k: u64) -> String {
    format!("churn-{k}")
}

/// One link's part of the churn, sans-IO: which commands come next. The link's sessions are
/// its routes 1..=sessions, local session i being session `i × links + link` of the run
/// (fill's order); each is a member of its base room (its run index mod `rooms`) all along,
/// and of one more room that changes: a LEAVE of a session's extra room is followed by a
/// JOIN of the next one, so every JOIN enters and every LEAVE exits (each is journaled and
/// followed by a MEMBERSHIP), and no room is ever left empty.
struct Churn {
    link: u64,
    links: u64,
    sessions: u64,
    rooms: u64,
    /// Extra memberships held, oldest first: (route, room).
    held: VecDeque<(u64, u64)>,
    /// Extra JOINs made so far.
    joins: u64,
    /// Setup commands made so far: `sessions` base JOINs, then one extra JOIN per session.
    setup: u64,
    next_id: u64,
    leave_next: bool,
}

impl Churn {
    fn new(link: u64, links: u64, sessions: u64, rooms: u64) -> Churn {
        Churn {
            link,
            links,
            sessions,
            rooms,
            held: VecDeque::with_capacity(sessions as usize + 1),
            joins: 0,
            setup: 0,
            next_id: 1,
            leave_next: true,
        }
    }

    /// The next setup command (untimed); `false` once every session is in its base room and
    /// holds one extra room.
    fn next_setup(&mut self, out: &mut Vec<u8>, expected: &mut VecDeque<RoomCommand>) -> bool {
        if self.setup >= 2 * self.sessions {
            return false;
        }
        if self.setup < self.sessions {
            let i = self.setup;
            let room = (i * self.links + self.link) % self.rooms;
            self.command(out, expected, Kind::StateJoin, i + 1, room);
        } else {
            self.join(out, expected);
        }
        self.setup += 1;
        true
    }

    /// The next timed command: LEAVE and JOIN in turn.
    fn next(&mut self, out: &mut Vec<u8>, expected: &mut VecDeque<RoomCommand>) {
        let leave = self.leave_next;
        self.leave_next = !leave;
        match leave.then(|| self.held.pop_front()).flatten() {
            Some((route, room)) => self.command(out, expected, Kind::StateLeave, route, room),
            None => self.join(out, expected),
        }
    }

    /// A JOIN of local session `joins mod sessions` into a room that is neither its base
    /// room nor one it holds: the one after its base room by 1 + (joins / sessions) mod
    /// (rooms − 1), so a pair comes back only after (rooms − 1) × sessions JOINs.
    fn join(&mut self, out: &mut Vec<u8>, expected: &mut VecDeque<RoomCommand>) {
        let i = self.joins % self.sessions;
        let turn = (self.joins / self.sessions) % (self.rooms - 1);
        let base = (i * self.links + self.link) % self.rooms;
        let room = (base + 1 + turn) % self.rooms;
        self.joins += 1;
        self.held.push_back((i + 1, room));
        self.command(out, expected, Kind::StateJoin, i + 1, room);
    }

    fn command(
        &mut self,
        out: &mut Vec<u8>,
        expected: &mut VecDeque<RoomCommand>,
        kind: Kind,
        route: u64,
        room: u64,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let name = churn_room(room);
        let mut body = Vec::with_capacity(8 + name.len());
        if kind == Kind::StateJoin {
            tether_proto::room::Join {
                after: 0,
                room: &name,
            }
            .write(&mut body);
        } else {
            body.extend_from_slice(name.as_bytes());
        }
        encode::routed(out, kind, id, route, &body);
        expected.push_back(RoomCommand {
            id,
            route,
            join: kind == Kind::StateJoin,
        });
    }
}

fn churn(args: &ChurnArgs) -> Result<()> {
    let n = args.link.conns.max(1) as u64;
    if args.rooms < 3 || args.rooms > args.sessions || args.sessions < n {
        return Err("need 3 <= --rooms <= --sessions and --sessions >= --conns".into());
    }
    let signer = args.link.signer()?;
    let exp = now_s() + 86_400;
    let pid = std::process::id();
    // Tokens first (not timed): each names the churn rooms in its `rooms` claim.
    let signing = Instant::now();
    let tokens = (0..args.sessions)
        .map(|k| {
            signer.sign_claims(&serde_json::json!({
                "sub": format!("churn-{pid}-{k}"),
                "exp": exp,
                "rooms": ["churn-*"],
            }))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("signing: {e}"))?;
    let signing = signing.elapsed();
    let mut links = Links {
        conns: Vec::with_capacity(n as usize),
        poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
        events: Events::with_capacity(1024),
        decoder: Decoder::new(MAX_BODY),
        buf: vec![0u8; 256 * 1024],
        routes: vec![0; n as usize],
    };
    for c in 0..n {
        links.conns.push(Conn::new(open_link(
            &args.link.socket,
            &format!("churn-{pid}-{c}"),
        )?));
    }
    register(&links.poll, &mut links.conns)?;
    let logins = links.pass(&tokens, args.depth, args.server_pid)?;
    if logins.ok != args.sessions {
        return Err(format!(
            "{} of {} LOGINs failed (codes {}): is --secret the daemon's --jwt-secret?",
            args.sessions - logins.ok,
            args.sessions,
            fail_codes_json(&links.conns)
        ));
    }
    // Session k is on link k mod n with route k / n + 1 (fill's order).
    let mut churns: Vec<Churn> = (0..n)
        .map(|c| Churn::new(c, n, links.routes[c as usize], args.rooms))
        .collect();
    let depth = args.depth.max(1);

    // Setup (not timed): every session in its base room and one extra room.
    let mut last_progress = Instant::now();
    let mut answered = 0;
    loop {
        let mut more = false;
        for (conn, ch) in links.conns.iter_mut().zip(churns.iter_mut()) {
            let Conn { out, replies, .. } = conn;
            while replies.room_expected.len() < depth
                && ch.next_setup(out, &mut replies.room_expected)
            {}
            more |= !replies.room_expected.is_empty();
            if conn.written < conn.out.len() {
                conn.flush()?;
            }
        }
        if !more {
            break;
        }
        let now_answered = room_answers(&links.conns);
        if now_answered != answered {
            answered = now_answered;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "stalled in the setup JOINs: {answered} answered, none for 10 s"
            ));
        }
        links.wait(Duration::from_millis(50))?;
    }
    let setup_fail: u64 = links.conns.iter().map(|c| c.replies.room_fail).sum();
    if setup_fail > 0 {
        return Err(format!(
            "{setup_fail} of the setup JOINs failed (codes {})",
            room_fail_codes_json(&links.conns)
        ));
    }

    // The timed part: each link keeps `depth` commands outstanding until t1, then drains.
    let start = Instant::now();
    let t0 = start + Duration::from_secs_f64(args.warmup);
    let t1 = t0 + Duration::from_secs_f64(args.duration);
    let server_cpu = || args.server_pid.and_then(process_cpu_seconds);
    // (when, our CPU seconds, the daemon's, answers so far) at the first wake-up after t0 and
    // after t1: the rate and the CPU per command are both over that span.
    let (mut cpu0, mut cpu1) = (None, None);
    let (mut jiffies0, mut jiffies1) = (Vec::new(), Vec::new());
    let joins0: u64 = links.conns.iter().map(|c| c.replies.joins_ok).sum();
    let leaves0: u64 = links.conns.iter().map(|c| c.replies.leaves_ok).sum();
    let mut last_progress = Instant::now();
    let mut answered = room_answers(&links.conns);
    loop {
        let now = Instant::now();
        if cpu0.is_none() && now >= t0 {
            cpu0 = Some((now, cpu_seconds(), server_cpu(), room_counts(&links.conns)));
            jiffies0 = cpu_jiffies();
        }
        if cpu1.is_none() && now >= t1 {
            cpu1 = Some((now, cpu_seconds(), server_cpu(), room_counts(&links.conns)));
            jiffies1 = cpu_jiffies();
        }
        let mut in_flight = 0;
        for (conn, ch) in links.conns.iter_mut().zip(churns.iter_mut()) {
            let Conn { out, replies, .. } = conn;
            if cpu1.is_none() {
                while replies.room_expected.len() < depth {
                    ch.next(out, &mut replies.room_expected);
                }
            }
            in_flight += replies.room_expected.len();
            if conn.written < conn.out.len() {
                conn.flush()?;
            }
        }
        if cpu1.is_some() && in_flight == 0 {
            break;
        }
        let now_answered = room_answers(&links.conns);
        if now_answered != answered {
            answered = now_answered;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "stalled: no JOIN or LEAVE answered for 10 s ({in_flight} outstanding)"
            ));
        }
        links.wait(Duration::from_millis(50))?;
    }
    let (a0, c0, s0, n0) = cpu0.ok_or("no sample at the window's start")?;
    let (a1, c1, s1, n1) = cpu1.ok_or("no sample at the window's end")?;
    let span = a1.duration_since(a0).as_secs_f64().max(1e-3);
    let (joins, leaves, fails) = (n1.0 - n0.0, n1.1 - n0.1, n1.2 - n0.2);
    let ops = joins + leaves;
    let cpu_busy_pct: Vec<f64> = jiffies0
        .iter()
        .zip(&jiffies1)
        .map(|(a, b)| {
            100.0 * b.0.saturating_sub(a.0) as f64 / b.1.saturating_sub(a.1).max(1) as f64
        })
        .collect();
    let server_s = s0.zip(s1).map(|(a, b)| b - a);
    let conns = &links.conns;
    let report = serde_json::json!({
        "mode": "churn",
        "conns": n,
        "depth": depth,
        "sessions": args.sessions,
        "rooms": args.rooms,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "span_s": span,
        "joins": joins,
        "leaves": leaves,
        "ops": ops,
        "ops_per_s": ops as f64 / span,
        "joins_per_s": joins as f64 / span,
        "leaves_per_s": leaves as f64 / span,
        "server_cpu_us_per_op": server_s.map(|s| s * 1e6 / ops.max(1) as f64),
        "server_cpu_pct": server_s.map(|s| 100.0 * s / span),
        "client_cpu_pct": 100.0 * (c1 - c0) / span,
        "cpu_busy_pct": cpu_busy_pct,
        "room_fail": fails,
        "room_fail_codes": room_fail_codes_json(conns),
        "joins_total": conns.iter().map(|c| c.replies.joins_ok).sum::<u64>() - joins0,
        "leaves_total": conns.iter().map(|c| c.replies.leaves_ok).sum::<u64>() - leaves0,
        "memberships": conns.iter().map(|c| c.replies.memberships).sum::<u64>(),
        "kicks": conns.iter().map(|c| c.replies.kicks).sum::<u64>(),
        "login_fail": conns.iter().map(|c| c.replies.login_fail).sum::<u64>(),
        "logins_per_s": logins.ok as f64 / logins.seconds,
        "signing_s": signing.as_secs_f64(),
    });
    println!("{report}");
    Ok(())
}

/// JOINs and LEAVEs answered on every link so far (either way).
fn room_answers(conns: &[Conn]) -> u64 {
    let (j, l, f) = room_counts(conns);
    j + l + f
}

/// (JOINs answered STATE_ROOM_OK, LEAVEs answered STATE_ROOM_OK, ROOM_FAILs) on every link.
fn room_counts(conns: &[Conn]) -> (u64, u64, u64) {
    conns.iter().fold((0, 0, 0), |(j, l, f), c| {
        (
            j + c.replies.joins_ok,
            l + c.replies.leaves_ok,
            f + c.replies.room_fail,
        )
    })
}

fn room_fail_codes_json(conns: &[Conn]) -> serde_json::Value {
    let mut all: Vec<(u16, u64)> = Vec::new();
    for c in conns {
        for &(code, n) in &c.replies.room_fail_codes {
            match all.iter_mut().find(|(k, _)| *k == code) {
                Some((_, m)) => *m += n,
                None => all.push((code, n)),
            }
        }
    }
    serde_json::Value::Object(
        all.into_iter()
            .map(|(code, n)| (code.to_string(), n.into()))
            .collect(),
    )
}
