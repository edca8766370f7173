//! Command-line flags (each also a `TETHER_LOADGEN_*` env var) and their validation into a
//! [`Config`] that [`crate::run`] can trust.
//!
//! [`Args`] is what clap parses; [`Args::into_config`] resolves the targets and URLs, reads
//! the JWT key (a secret, or a private key file), applies the defaults that depend on the machine (`--threads`) and judges
//! every flag once, in one pass, reporting every problem at once. The JWT key is never
//! printed.

use crate::link::{LinkSpec, Transport};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tether_daemon::secret::Secret;
use tether_state::token::{Alg, Signer};
use thiserror::Error;

use crate::http::Url;
use crate::session::Login;

/// The longest `--device-prefix`: device ids must stay within the 128 bytes a token's `sub`
/// may hold, index included.
const MAX_DEVICE_PREFIX: usize = 100;

/// The largest body a v1 length field can describe (`u32::MAX` minus kind, flags and id).
const MAX_WIRE_BODY: u32 = u32::MAX - tether_proto::MIN_LEN;

/// The flags, as typed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tether-loadgen",
    version,
    about = "Closed- and open-loop load generator for Tether: logs in, heartbeats, echoes DATA, \
             acknowledges pushes, follows GOAWAY (HdrHistogram latencies)"
)]
pub struct Args {
    /// Where to connect, ADDR[,ADDR…]; connections are spread round-robin over the targets
    /// and fall back to the next one.
    #[arg(
        long,
        env = "TETHER_LOADGEN_TARGET",
        value_delimiter = ',',
        required_unless_present_any = ["ipconfig", "peer_addr"],
        conflicts_with = "ipconfig"
    )]
    pub target: Vec<String>,

    /// Find gateways through tether-ipconfig instead: each connection GETs URL/ip_list and
    /// dials the first gateway listed, falling back to the next (http://HOST:PORT).
    #[arg(long, env = "TETHER_LOADGEN_IPCONFIG", value_name = "URL")]
    pub ipconfig: Option<String>,

    /// Log every connection in with an HS256 JWT signed with this key (sub = its device id,
    /// exp = now + 1 day). Prefer --jwt-secret-file or the env var: flags show in `ps`.
    #[arg(
        long,
        env = "TETHER_LOADGEN_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file"
    )]
    pub jwt_secret: Option<Secret>,

    /// Read the JWT key from this file (a trailing newline is ignored).
    #[arg(long, env = "TETHER_LOADGEN_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The tokens' algorithm: HS256 (--jwt-secret), ES256 or RS256 (--jwt-key-file).
    #[arg(long, env = "TETHER_LOADGEN_JWT_ALG", default_value = "HS256")]
    pub jwt_alg: String,

    /// ES256/RS256: the private key, a PKCS#8 PEM file (`openssl genpkey` writes one).
    #[arg(long, env = "TETHER_LOADGEN_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,

    /// Put this `kid` in every token's header (the key's id in the daemon's JWK set).
    #[arg(long, env = "TETHER_LOADGEN_JWT_KID")]
    pub jwt_kid: Option<String>,

    /// Put this `aud` claim in every token.
    #[arg(long, env = "TETHER_LOADGEN_JWT_AUD")]
    pub jwt_aud: Option<String>,

    /// Put this `iss` claim in every token.
    #[arg(long, env = "TETHER_LOADGEN_JWT_ISS")]
    pub jwt_iss: Option<String>,

    /// Without a JWT key: send an anonymous LOGIN first (echo nodes and gateways without a
    /// state daemon answer it). Without either, connections send DATA straight away.
    #[arg(long, env = "TETHER_LOADGEN_LOGIN")]
    pub login: bool,

    /// Mark every DATA frame safe to re-send (header flag 0x01), so a gateway may send it to
    /// another node when its node fails; `--resend-safe false` sends them unflagged.
    #[arg(
        long,
        env = "TETHER_LOADGEN_RESEND_SAFE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub resend_safe: bool,

    /// Device ids are PREFIX-N, N = --device-offset + connection index.
    #[arg(long, env = "TETHER_LOADGEN_DEVICE_PREFIX", default_value = "loadgen")]
    pub device_prefix: String,

    /// Added to the connection index in device ids, so several loadgen processes can log in
    /// to one state daemon without taking each other's devices.
    #[arg(long, env = "TETHER_LOADGEN_DEVICE_OFFSET", default_value_t = 0)]
    pub device_offset: u64,

    /// Seconds between PINGs on a ready connection [default: LOGIN_OK's heartbeat_s, else
    /// 30; no PINGs without a login unless given].
    #[arg(long, env = "TETHER_LOADGEN_HEARTBEAT", allow_negative_numbers = true)]
    pub heartbeat: Option<f64>,

    /// Seconds a connection told GOAWAY may take to get back to a gateway (resumed) before
    /// it counts as dropped.
    #[arg(
        long,
        env = "TETHER_LOADGEN_RECONNECT_TIMEOUT",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub reconnect_timeout: f64,

    /// With --resume-on-loss: a connection lost waits a random 0 to this many seconds (by a
    /// hash of its index) before getting back, as well-behaved clients spread a reconnect
    /// storm when a gateway dies; 0 = at once.
    #[arg(
        long,
        env = "TETHER_LOADGEN_RECONNECT_SPREAD",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub reconnect_spread: f64,

    /// A ready connection lost without a GOAWAY (its gateway or its whole host died) gets
    /// back like one told GOAWAY: to another gateway (the next --target, or /ip_list), with
    /// a RESUME, within --reconnect-timeout; without it such a connection counts as dropped.
    #[arg(long, env = "TETHER_LOADGEN_RESUME_ON_LOSS")]
    pub resume_on_loss: bool,

    /// POST this many pushes per second in total to random devices of this run, through
    /// --push-url, while the load runs (payloads stamped for push latency).
    #[arg(long, env = "TETHER_LOADGEN_PUSH_RATE", allow_negative_numbers = true)]
    pub push_rate: Option<f64>,

    /// tether-state's push API, for --push-rate.
    #[arg(
        long,
        env = "TETHER_LOADGEN_PUSH_URL",
        default_value = "http://127.0.0.1:8902",
        value_name = "URL"
    )]
    pub push_url: String,

    /// A file holding the push API's bearer token (a trailing newline is ignored), sent as
    /// `Authorization: Bearer` with every push; needs the token's `push` scope.
    #[arg(long, env = "TETHER_LOADGEN_PUSH_TOKEN_FILE", value_name = "PATH")]
    pub push_token_file: Option<PathBuf>,

    /// Connections to open and keep for the whole run.
    #[arg(long, env = "TETHER_LOADGEN_CONNS", default_value_t = 100)]
    pub conns: usize,

    /// DATA payload size in bytes.
    #[arg(long, env = "TETHER_LOADGEN_PAYLOAD", default_value_t = 64)]
    pub payload: usize,

    /// Seconds of load, counted from the moment every connection is up (fractions allowed).
    #[arg(
        long,
        env = "TETHER_LOADGEN_DURATION",
        conflicts_with = "hold",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub duration: f64,

    /// Seconds at the start of --duration whose frames and latencies are not recorded.
    #[arg(
        long,
        env = "TETHER_LOADGEN_WARMUP",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub warmup: f64,

    /// Seconds after the end that replies still in flight are waited for; what is still
    /// in flight then counts as `requests.unanswered`. Set it above the server's request
    /// timeout to hear every request's fate.
    #[arg(
        long,
        env = "TETHER_LOADGEN_DRAIN",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub drain: f64,

    /// Closed loop: DATA frames kept outstanding per connection [default: 1].
    #[arg(
        long,
        env = "TETHER_LOADGEN_PIPELINE",
        conflicts_with_all = ["rate", "hold"]
    )]
    pub pipeline: Option<usize>,

    /// Hold the connections this many seconds once every one is up (instead of
    /// --duration): no DATA unless --rate is given (then only the --echo-fraction subset
    /// sends it), heartbeats only; at the end every connection must answer a PING within
    /// --connect-timeout, or it counts as dropped (`check_unanswered`).
    #[arg(long, env = "TETHER_LOADGEN_HOLD", allow_negative_numbers = true)]
    pub hold: Option<f64>,

    /// `--hold`: the check PINGs at the end are sent at this many per second across the run
    /// (in connection order, as `--connect-rate` dials), each with `--connect-timeout` for
    /// its PONG; 0 = all at once (a million at once measures the kernel's backlog drops, not
    /// the stack).
    #[arg(long, env = "TETHER_LOADGEN_CHECK_RATE", default_value_t = 0)]
    pub check_rate: u32,

    /// The share of connections that send DATA (evenly spread over the connection
    /// indices); the others only log in and heartbeat. 0 < F ≤ 1.
    #[arg(
        long,
        env = "TETHER_LOADGEN_ECHO_FRACTION",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub echo_fraction: f64,

    /// Worker processes: the connections are dealt over K copies of this program, each
    /// under its own open-files limit, and their counts and histograms merged into one
    /// summary (percentiles exact, not averaged).
    #[arg(long, env = "TETHER_LOADGEN_PROCS", default_value_t = 1)]
    pub procs: usize,

    /// Internal: run as worker process J of K (connections whose index ≡ J mod K), report
    /// on stdout as JSON lines.
    #[arg(long, hide = true, value_name = "J/K")]
    pub worker_of: Option<String>,

    /// Open loop: DATA frames per second per connection, on a fixed timetable.
    #[arg(long, env = "TETHER_LOADGEN_RATE", allow_negative_numbers = true)]
    pub rate: Option<f64>,

    /// Worker threads, each with its own mio poll [default: available cores].
    #[arg(long, env = "TETHER_LOADGEN_THREADS")]
    pub threads: Option<usize>,

    /// Local addresses to bind before connecting (IP_BIND_ADDRESS_NO_PORT, so each
    /// (source, target) pair has the whole ephemeral port range), IP[,IP…] or ranges
    /// FIRST-LAST (e.g. 127.0.0.2-127.0.0.60), rotated per connection.
    #[arg(
        long,
        visible_alias = "source-ips",
        env = "TETHER_LOADGEN_SOURCE",
        value_delimiter = ','
    )]
    pub source: Vec<String>,

    /// Seconds each step of setting a connection up may take: an /ip_list answer, a TCP
    /// connect (then the next gateway is tried), a LOGIN_OK.
    #[arg(
        long,
        env = "TETHER_LOADGEN_CONNECT_TIMEOUT",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub connect_timeout: f64,

    /// New connections per second across all threads; 0 means as fast as possible.
    #[arg(long, env = "TETHER_LOADGEN_CONNECT_RATE", default_value_t = 0)]
    pub connect_rate: u32,

    /// Milliseconds each worker waits at least between two polls, so that what arrives
    /// meanwhile is read in one wake: holding very many idle connections, each PONG then
    /// costs no wake of its own. Replies are read up to this late (and their latencies say
    /// so); 0 = wake for every event.
    #[arg(long, env = "TETHER_LOADGEN_COALESCE_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    pub coalesce_ms: u64,

    /// Largest body accepted from the server.
    #[arg(long, env = "TETHER_LOADGEN_MAX_BODY", default_value_t = tether_proto::DEFAULT_MAX_BODY)]
    pub max_body: u32,

    /// Write the summary as JSON to this file.
    #[arg(long, env = "TETHER_LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// No progress line on stderr.
    #[arg(long, env = "TETHER_LOADGEN_QUIET")]
    pub quiet: bool,

    /// Speak TLS to the targets (a gateway's `listen_tls`): needs --tls-ca.
    #[arg(long, env = "TETHER_LOADGEN_TLS", conflicts_with_all = ["ws", "wss"])]
    pub tls: bool,

    /// Speak WebSocket to the targets (a gateway's `listen_ws`): v1 frames in binary
    /// messages, subprotocol tether.v1.
    #[arg(long, env = "TETHER_LOADGEN_WS", conflicts_with = "wss")]
    pub ws: bool,

    /// Speak WebSocket over TLS (a gateway's `listen_wss`): needs --tls-ca.
    #[arg(long, env = "TETHER_LOADGEN_WSS")]
    pub wss: bool,

    /// PEM certificates to trust for --tls and --wss (a test CA, or the gateway's own
    /// self-signed certificate).
    #[arg(long, env = "TETHER_LOADGEN_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// The server name for SNI and the certificate check (--tls, --wss), and the `Host` of
    /// the WebSocket upgrade.
    #[arg(
        long,
        env = "TETHER_LOADGEN_TLS_SERVER_NAME",
        default_value = "localhost"
    )]
    pub tls_server_name: String,

    /// The path of the WebSocket upgrade (--ws, --wss).
    #[arg(long, env = "TETHER_LOADGEN_WS_PATH", default_value = "/ws")]
    pub ws_path: String,

    /// Rooms of the run, named --room-prefix + 0..N-1: each connection JOINs
    /// --rooms-per-conn of them after LOGIN_OK (its JWT carries `"rooms": ["PREFIX*"]`),
    /// and --publish-rate publishes to them; ROOM frames are counted (gaps, duplicates,
    /// publish → client latency).
    #[arg(long, env = "TETHER_LOADGEN_ROOMS")]
    pub rooms: Option<usize>,

    /// The rooms' names start with this.
    #[arg(long, env = "TETHER_LOADGEN_ROOM_PREFIX", default_value = "room-")]
    pub room_prefix: String,

    /// Rooms each connection joins (consecutive from its index modulo --rooms, so members
    /// spread evenly); 0: none (with --broadcast).
    #[arg(long, env = "TETHER_LOADGEN_ROOMS_PER_CONN", default_value_t = 1)]
    pub rooms_per_conn: usize,

    /// Publishes per second in total, round-robin over the rooms, through the state
    /// daemon's `POST /v1/rooms/{room}/publish` at --push-url (with --push-token-file's
    /// token), or to --peer; payloads stamped with the send time and a publish counter.
    #[arg(
        long,
        env = "TETHER_LOADGEN_PUBLISH_RATE",
        allow_negative_numbers = true
    )]
    pub publish_rate: Option<f64>,

    /// Bytes of each published payload (at least 32: the stamp).
    #[arg(long, env = "TETHER_LOADGEN_PUBLISH_SIZE", default_value_t = 32)]
    pub publish_size: usize,

    /// Seconds after the start of the load before the first publish (the load settled: a
    /// broadcast to a million held connections, measured alone).
    #[arg(
        long,
        env = "TETHER_LOADGEN_PUBLISH_AFTER",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub publish_after: f64,

    /// Publish with `POST /v1/broadcast` (every logged-in connection, no JOIN) instead.
    #[arg(long, env = "TETHER_LOADGEN_BROADCAST")]
    pub broadcast: bool,

    /// Measure a peer instead of Tether: `nats` (nats-server: each connection SUBscribes to
    /// the room's subject, publishes are PUBs) or `nchan` (nginx + nchan: each connection is
    /// a WebSocket subscriber of `/sub?id=ROOM`, publishes are `POST /pub?id=ROOM`), at
    /// --peer-addr. Each connection follows one room.
    #[arg(long, env = "TETHER_LOADGEN_PEER", requires = "peer_addr")]
    pub peer: Option<String>,

    /// The peer's address (HOST:PORT) for subscribers and publisher alike.
    #[arg(long, env = "TETHER_LOADGEN_PEER_ADDR", requires = "peer")]
    pub peer_addr: Option<String>,
}

/// How DATA frames are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed loop: keep this many DATA frames outstanding per connection.
    Pipeline(usize),
    /// Open loop: this many DATA frames per second per connection, latency measured from
    /// each frame's scheduled send time.
    Rate(f64),
    /// `--hold` without `--rate`: no DATA at all, heartbeats only.
    Hold,
}

impl Mode {
    /// `"pipeline"` or `"rate"`, as in the JSON summary.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Pipeline(_) => "pipeline",
            Mode::Rate(_) => "rate",
            Mode::Hold => "hold",
        }
    }
}

/// `--push-rate`, where to POST, and the bearer token to POST with.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// Pushes per second, all devices together.
    pub rate: f64,
    pub url: Url,
    /// From `--push-token-file`; never printed.
    pub token: Option<Secret>,
}

/// The rooms of a run (`--rooms`, `--broadcast`, `--peer`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomsConfig {
    pub count: usize,
    pub prefix: String,
    /// Rooms each connection JOINs (a peer's subscriber: follows the first).
    pub per_conn: usize,
    pub publish: Option<PublishConfig>,
}

/// `--publish-rate` and where to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// Publishes per second, all rooms together.
    pub rate: f64,
    /// Bytes per payload.
    pub size: usize,
    /// `--publish-after`: the first publish this long after the start.
    pub after: Duration,
    /// `--broadcast`: `POST /v1/broadcast`.
    pub broadcast: bool,
    /// The state daemon's HTTP API (`--push-url`); unused with a peer.
    pub url: Url,
    /// `--push-token-file`; never printed.
    pub token: Option<Secret>,
}

/// Which peer `--peer` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Nats,
    Nchan,
}

impl PeerKind {
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Nats => "nats",
            PeerKind::Nchan => "nchan",
        }
    }
}

/// `--peer` at `--peer-addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    pub kind: PeerKind,
    pub addr: SocketAddr,
}

/// This process is worker `index` of `count` (`--procs`): it runs the connections whose
/// global index ≡ `index` (mod `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `J/K`.
    pub fn parse(text: &str) -> Option<Shard> {
        let (j, k) = text.split_once('/')?;
        let (index, count) = (j.trim().parse().ok()?, k.trim().parse().ok()?);
        (count >= 1 && index < count).then_some(Shard { index, count })
    }

    /// Whether global connection `i` belongs to this worker process.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// Whether global connection `i` is one of the `fraction` that send DATA: spread evenly,
/// `floor((i + 1) f) > floor(i f)`, so any run of 1/f indices holds one.
pub(crate) fn echoes(i: usize, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

/// `--source` values: addresses or inclusive ranges `FIRST-LAST` of one family.
pub(crate) fn parse_sources(specs: &[String]) -> Result<Vec<IpAddr>, (String, String)> {
    /// More than any sane run needs; guards against a typo expanding to millions.
    const MAX: u128 = 65_536;
    let mut out = Vec::new();
    for spec in specs {
        let spec = spec.trim();
        let bad = |reason: &str| (spec.to_string(), reason.to_string());
        match spec.split_once('-') {
            None => out.push(
                spec.parse::<IpAddr>()
                    .map_err(|_| bad("not an IP address"))?,
            ),
            Some((a, b)) => {
                let a: IpAddr = a.trim().parse().map_err(|_| bad("not FIRST-LAST"))?;
                let b: IpAddr = b.trim().parse().map_err(|_| bad("not FIRST-LAST"))?;
                let (lo, hi) = match (a, b) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        (u128::from(u32::from(a)), u128::from(u32::from(b)))
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
                    _ => return Err(bad("FIRST and LAST are of different families")),
                };
                if hi < lo {
                    return Err(bad("LAST is below FIRST"));
                }
                if hi - lo >= MAX {
                    return Err(bad("more than 65,536 addresses"));
                }
                for n in lo..=hi {
                    out.push(match a {
                        IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(n as u32)),
                        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(n)),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A validated run description. Build one with [`Args::into_config`], which judges every
/// flag, or with [`Config::new`] (tests: a config built by hand is trusted as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--target`s; empty with `--ipconfig`.
    pub targets: Vec<SocketAddr>,
    pub ipconfig: Option<Url>,
    pub login: Login,
    /// `--resend-safe`: DATA frames carry the resend-safe flag.
    pub resend_safe: bool,
    pub device_prefix: String,
    pub device_offset: u64,
    /// `--heartbeat`; `None`: the server's interval (when logged in).
    pub heartbeat: Option<Duration>,
    pub reconnect_timeout: Duration,
    /// `--reconnect-spread`: a lost connection waits up to this before getting back.
    pub reconnect_spread: Duration,
    /// `--resume-on-loss`.
    pub resume_on_loss: bool,
    pub push: Option<PushConfig>,
    pub conns: usize,
    pub payload: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// `--drain`: how long after the end replies in flight are waited for.
    pub drain: Duration,
    pub mode: Mode,
    pub threads: usize,
    pub sources: Vec<IpAddr>,
    pub connect_timeout: Duration,
    /// New connections per second across all threads; 0 = unlimited.
    pub connect_rate: u32,
    /// `--coalesce-ms`: the least time between two polls of a worker.
    pub coalesce: Duration,
    pub max_body: u32,
    pub json: Option<PathBuf>,
    pub quiet: bool,
    /// `--hold`: `duration` is the hold; every connection is checked with a PING at the end.
    pub hold: bool,
    /// `--check-rate`: check PINGs per second across the run; 0 = all at once.
    pub check_rate: u32,
    /// `--echo-fraction`: the share of connections that send DATA.
    pub echo_fraction: f64,
    /// `--procs`: worker processes (1 = this one does the work).
    pub procs: usize,
    /// Set in a worker process started by `--procs`.
    pub shard: Option<Shard>,
    /// `--tls`, `--ws`, `--wss` or plain TCP.
    pub transport: Transport,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-server-name`.
    pub server_name: String,
    /// `--ws-path`.
    pub ws_path: String,
    /// `--rooms` and the rest; `None` without rooms.
    pub rooms: Option<RoomsConfig>,
    /// `--peer`: subscribers and publisher speak to a peer instead of Tether.
    pub peer: Option<PeerConfig>,
    /// Extra claims of minted tokens (the `rooms` claim).
    pub claims: crate::session::TokenClaims,
}

/// One thing wrong with the flags.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("--target or --ipconfig is required")]
    NoTarget,
    #[error("--{flag} {url:?}: {reason}")]
    BadUrl {
        flag: &'static str,
        url: String,
        reason: String,
    },
    #[error("--{flag} {path:?}: {reason}")]
    SecretFile {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the JWT key is empty")]
    EmptySecret,
    #[error("--jwt-alg {0:?}: not HS256, ES256 or RS256")]
    BadAlg(String),
    #[error("--jwt-alg {0} signs with --jwt-key-file (a PKCS#8 PEM private key), not a secret")]
    KeyFileNeeded(Alg),
    #[error("--jwt-key-file is for --jwt-alg ES256 or RS256; HS256 takes --jwt-secret")]
    KeyFileWithHs256,
    #[error("--jwt-key-file {path:?}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("--jwt-kid, --jwt-aud and --jwt-iss need a JWT key and must not be empty")]
    StampWithoutKey,
    #[error("--device-prefix must be 1 to {MAX_DEVICE_PREFIX} bytes")]
    BadDevicePrefix,
    #[error("--push-rate must be a finite number above 0, got {0}")]
    BadPushRate(f64),
    #[error("--target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("--conns must be at least 1")]
    NoConns,
    #[error("--payload {payload} exceeds --max-body {max_body}")]
    PayloadTooLarge { payload: usize, max_body: u32 },
    #[error("--max-body {0} exceeds what a v1 length field can carry ({MAX_WIRE_BODY})")]
    MaxBodyTooLarge(u32),
    #[error("--{flag} must be a finite number of seconds {bound}, got {value}")]
    BadSeconds {
        flag: &'static str,
        bound: &'static str,
        value: f64,
    },
    #[error("--warmup ({warmup} s) must be shorter than --duration ({duration} s)")]
    WarmupTooLong { warmup: f64, duration: f64 },
    #[error("--pipeline must be at least 1")]
    NoPipeline,
    #[error("--rate must be a finite number above 0, got {0}")]
    BadRate(f64),
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error("--json {0:?}: its directory does not exist")]
    JsonDir(PathBuf),
    #[error("--source {spec:?}: {reason}")]
    BadSource { spec: String, reason: String },
    #[error("--echo-fraction must be above 0 and at most 1, got {0}")]
    BadEchoFraction(f64),
    #[error("--procs must be at least 1")]
    NoProcs,
    #[error("--worker-of {0:?}: not J/K with J < K")]
    BadShard(String),
    #[error("{0}")]
    Transport(String),
    #[error("--rooms must be at least 1")]
    NoRooms,
    #[error("--room-prefix must be 1 to 100 bytes of printable text without `*`")]
    BadRoomPrefix,
    #[error("--publish-rate must be a finite number above 0, got {0}")]
    BadPublishRate(f64),
    #[error("--publish-size must be 32 (the stamp) to 65,536 bytes, got {0}")]
    BadPublishSize(usize),
    #[error("--peer {0:?}: not nats or nchan")]
    BadPeer(String),
    #[error("--peer-addr {addr:?}: {reason}")]
    BadPeerAddr { addr: String, reason: String },
    #[error("--broadcast is Tether's; a peer publishes to its rooms")]
    BroadcastToPeer,
}

/// Every problem found in the flags, reported together.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{}", list(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Args {
    /// Converts and checks every flag in one pass, each once; all problems are returned
    /// together, in the order of the flags.
    pub fn into_config(self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();

        if self.target.is_empty() && self.ipconfig.is_none() && self.peer_addr.is_none() {
            errors.push(ConfigError::NoTarget);
        }
        let mut targets = Vec::new();
        for target in &self.target {
            match resolve(target) {
                Ok(addr) => targets.push(addr),
                Err(reason) => errors.push(ConfigError::BadTarget {
                    target: target.clone(),
                    reason,
                }),
            }
        }
        let ipconfig = self
            .ipconfig
            .as_deref()
            .and_then(|u| url("ipconfig", u, &mut errors));

        let login = match self.signer(&mut errors) {
            Some(signer) => Login::Jwt(Arc::new(signer)),
            None if self.login => Login::Anonymous,
            None => Login::None,
        };
        if self.device_prefix.is_empty() || self.device_prefix.len() > MAX_DEVICE_PREFIX {
            errors.push(ConfigError::BadDevicePrefix);
        }

        // Each seconds flag: None when it is not a number of seconds in its range.
        let mut seconds = |flag, value: f64, positive: bool| {
            let bound = if positive { "above 0" } else { "of 0 or more" };
            let ok = value.is_finite() && (value > 0.0 || (!positive && value == 0.0));
            match Duration::try_from_secs_f64(value) {
                Ok(d) if ok => Some(d),
                _ => {
                    errors.push(ConfigError::BadSeconds { flag, bound, value });
                    None
                }
            }
        };
        let heartbeat = match self.heartbeat {
            Some(h) => seconds("heartbeat", h, true).map(Some),
            None => Some(None),
        };
        let reconnect_timeout = seconds("reconnect-timeout", self.reconnect_timeout, true);
        let reconnect_spread = seconds("reconnect-spread", self.reconnect_spread, false);
        let publish_after = seconds("publish-after", self.publish_after, false);
        let duration = match self.hold {
            Some(hold) => seconds("hold", hold, true),
            None => seconds("duration", self.duration, true),
        };
        let warmup = seconds("warmup", self.warmup, false);
        let drain = seconds("drain", self.drain, false);
        let connect_timeout = seconds("connect-timeout", self.connect_timeout, true);

        let push = match self.push_rate {
            Some(rate) => {
                if !(rate.is_finite() && rate > 0.0) {
                    errors.push(ConfigError::BadPushRate(rate));
                }
                let token = self
                    .push_token_file
                    .as_deref()
                    .and_then(|path| token_file(path, &mut errors));
                url("push-url", &self.push_url, &mut errors).map(|url| PushConfig {
                    rate,
                    url,
                    token,
                })
            }
            None => None,
        };

        if self.conns == 0 {
            errors.push(ConfigError::NoConns);
        }
        if self.max_body > MAX_WIRE_BODY {
            errors.push(ConfigError::MaxBodyTooLarge(self.max_body));
        }
        if self.payload > self.max_body as usize {
            errors.push(ConfigError::PayloadTooLarge {
                payload: self.payload,
                max_body: self.max_body,
            });
        }
        if let (Some(warmup), Some(duration)) = (warmup, duration) {
            if warmup >= duration {
                errors.push(ConfigError::WarmupTooLong {
                    warmup: warmup.as_secs_f64(),
                    duration: duration.as_secs_f64(),
                });
            }
        }
        let mode = match (self.pipeline, self.rate, self.hold) {
            (_, Some(rate), _) => Mode::Rate(rate),
            (_, None, Some(_)) => Mode::Hold,
            (pipeline, None, None) => Mode::Pipeline(pipeline.unwrap_or(1)),
        };
        match mode {
            Mode::Pipeline(0) => errors.push(ConfigError::NoPipeline),
            Mode::Rate(rate) if !(rate.is_finite() && rate > 0.0) => {
                errors.push(ConfigError::BadRate(rate))
            }
            _ => {}
        }
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        });
        if threads == 0 {
            errors.push(ConfigError::NoThreads);
        }
        let sources = match parse_sources(&self.source) {
            Ok(sources) => sources,
            Err((spec, reason)) => {
                errors.push(ConfigError::BadSource { spec, reason });
                Vec::new()
            }
        };
        if !(self.echo_fraction > 0.0 && self.echo_fraction <= 1.0) {
            errors.push(ConfigError::BadEchoFraction(self.echo_fraction));
        }
        if self.procs == 0 {
            errors.push(ConfigError::NoProcs);
        }
        let transport = match (self.tls, self.ws, self.wss) {
            (true, _, _) => Transport::Tls,
            (_, true, _) => Transport::Ws,
            (_, _, true) => Transport::Wss,
            _ => Transport::Tcp,
        };
        // Loads the CA and checks the name now, so a worker cannot fail to.
        if let Err(e) = LinkSpec::new(
            transport,
            self.tls_ca.as_deref(),
            &self.tls_server_name,
            &self.ws_path,
        ) {
            errors.push(ConfigError::Transport(e));
        }
        let shard = match self.worker_of.as_deref() {
            Some(text) => match Shard::parse(text) {
                Some(shard) => Some(shard),
                None => {
                    errors.push(ConfigError::BadShard(text.to_string()));
                    None
                }
            },
            None => None,
        };
        if let Some(path) = &self.json {
            // Found out now rather than after the whole run.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                errors.push(ConfigError::JsonDir(path.clone()));
            }
        }

        let peer = match (self.peer.as_deref(), self.peer_addr.as_deref()) {
            (Some(kind), Some(addr)) => {
                let kind = match kind {
                    "nats" => Some(PeerKind::Nats),
                    "nchan" => Some(PeerKind::Nchan),
                    other => {
                        errors.push(ConfigError::BadPeer(other.to_string()));
                        None
                    }
                };
                let addr = match resolve(addr) {
                    Ok(a) => Some(a),
                    Err(reason) => {
                        errors.push(ConfigError::BadPeerAddr {
                            addr: addr.to_string(),
                            reason,
                        });
                        None
                    }
                };
                kind.zip(addr).map(|(kind, addr)| PeerConfig { kind, addr })
            }
            _ => None,
        };
        if let Some(peer) = peer {
            // The subscribers connect to the peer.
            targets = vec![peer.addr];
            if self.broadcast {
                errors.push(ConfigError::BroadcastToPeer);
            }
        }
        let wants_rooms = self.rooms.is_some()
            || self.publish_rate.is_some()
            || self.broadcast
            || self.peer.is_some();
        let rooms = if wants_rooms {
            let count = self.rooms.unwrap_or(1);
            if count == 0 {
                errors.push(ConfigError::NoRooms);
            }
            let prefix_ok = !self.room_prefix.is_empty()
                && self.room_prefix.len() <= 100
                && !self.room_prefix.contains('*')
                && !self.room_prefix.chars().any(char::is_control);
            if !prefix_ok {
                errors.push(ConfigError::BadRoomPrefix);
            }
            let publish = match self.publish_rate {
                Some(rate) => {
                    if !(rate.is_finite() && rate > 0.0) {
                        errors.push(ConfigError::BadPublishRate(rate));
                    }
                    if !(crate::rooms::STAMP_LEN..=65_536).contains(&self.publish_size) {
                        errors.push(ConfigError::BadPublishSize(self.publish_size));
                    }
                    let token = self
                        .push_token_file
                        .as_deref()
                        .and_then(|path| token_file(path, &mut errors));
                    url("push-url", &self.push_url, &mut errors).map(|url| PublishConfig {
                        rate,
                        size: self.publish_size,
                        after: publish_after.unwrap_or_default(),
                        broadcast: self.broadcast,
                        url,
                        token,
                    })
                }
                None => None,
            };
            Some(RoomsConfig {
                count,
                prefix: self.room_prefix.clone(),
                per_conn: if self.broadcast && self.rooms.is_none() {
                    0
                } else {
                    self.rooms_per_conn
                },
                publish,
            })
        } else {
            None
        };
        let claims = crate::session::TokenClaims {
            aud: self.jwt_aud.clone(),
            iss: self.jwt_iss.clone(),
            rooms: rooms
                .as_ref()
                .filter(|r| r.per_conn > 0 && peer.is_none())
                .map(|r| vec![format!("{}*", r.prefix)]),
        };

        let (
            Some(heartbeat),
            Some(reconnect_timeout),
            Some(duration),
            Some(warmup),
            Some(connect_timeout),
            Some(drain),
        ) = (
            heartbeat,
            reconnect_timeout,
            duration,
            warmup,
            connect_timeout,
            drain,
        )
        else {
            return Err(ConfigErrors(errors));
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            targets,
            ipconfig,
            login,
            resend_safe: self.resend_safe,
            device_prefix: self.device_prefix,
            device_offset: self.device_offset,
            heartbeat,
            reconnect_timeout,
            reconnect_spread: reconnect_spread.unwrap_or_default(),
            resume_on_loss: self.resume_on_loss,
            push,
            conns: self.conns,
            payload: self.payload,
            duration,
            warmup,
            drain,
            mode,
            threads,
            sources,
            connect_timeout,
            connect_rate: self.connect_rate,
            coalesce: Duration::from_millis(self.coalesce_ms),
            max_body: self.max_body,
            json: self.json,
            quiet: self.quiet,
            hold: self.hold.is_some(),
            check_rate: self.check_rate,
            echo_fraction: self.echo_fraction,
            procs: self.procs,
            shard,
            transport,
            tls_ca: self.tls_ca,
            server_name: self.tls_server_name,
            ws_path: self.ws_path,
            rooms,
            peer,
            claims,
        })
    }

    /// The token signer: `--jwt-alg` with its key (`--jwt-secret`/`--jwt-secret-file` for
    /// HS256, `--jwt-key-file` for ES256/RS256) and the `--jwt-kid/aud/iss` stamps; None
    /// without a key, or when anything is wrong (then errors).
    fn signer(&self, errors: &mut Vec<ConfigError>) -> Option<Signer> {
        let before = errors.len();
        let alg = Alg::from_name(&self.jwt_alg);
        if alg.is_none() {
            errors.push(ConfigError::BadAlg(self.jwt_alg.clone()));
        }
        let signer = match (alg, &self.jwt_key_file) {
            (None, _) => None,
            (Some(Alg::Hs256), Some(_)) => {
                errors.push(ConfigError::KeyFileWithHs256);
                None
            }
            (Some(Alg::Hs256), None) => match self.secret(errors) {
                Some(key) if key.is_empty() => {
                    errors.push(ConfigError::EmptySecret);
                    None
                }
                key => key.map(|key| Signer::hs256(key.expose())),
            },
            (Some(alg), path) => {
                let has_secret = self.jwt_secret.is_some() || self.jwt_secret_file.is_some();
                let read = |path: &PathBuf| {
                    std::fs::read(path)
                        .map_err(|e| e.to_string())
                        .and_then(|pem| Signer::from_pem(alg, &pem).map_err(|e| e.to_string()))
                };
                match path.as_ref().filter(|_| !has_secret).map(|p| (p, read(p))) {
                    Some((_, Ok(signer))) => Some(signer),
                    Some((path, Err(reason))) => {
                        errors.push(ConfigError::KeyFile {
                            path: path.clone(),
                            reason,
                        });
                        None
                    }
                    None => {
                        errors.push(ConfigError::KeyFileNeeded(alg));
                        None
                    }
                }
            }
        };
        let stamps = [&self.jwt_kid, &self.jwt_aud, &self.jwt_iss];
        let no_key = signer.is_none() && errors.len() == before;
        if stamps
            .iter()
            .any(|s| s.as_deref().is_some_and(|s| s.is_empty() || no_key))
        {
            errors.push(ConfigError::StampWithoutKey);
        }
        let mut signer = signer?;
        if let Some(kid) = &self.jwt_kid {
            signer = signer.with_kid(kid);
        }
        if let Some(aud) = &self.jwt_aud {
            signer = signer.with_audience(aud);
        }
        if let Some(iss) = &self.jwt_iss {
            signer = signer.with_issuer(iss);
        }
        Some(signer)
    }

    /// The HS256 key: `--jwt-secret`, or `--jwt-secret-file`'s contents without a trailing
    /// newline; None without either, or when the file cannot be read (then an error).
    fn secret(&self, errors: &mut Vec<ConfigError>) -> Option<Secret> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(path)) => secret_file("jwt-secret-file", path, errors),
            (None, None) => None,
        }
    }
}

/// `--push-token-file`'s token: None and an error when it cannot be read or is empty.
fn token_file(path: &Path, errors: &mut Vec<ConfigError>) -> Option<Secret> {
    let token = secret_file("push-token-file", path, errors)?;
    if token.is_empty() {
        errors.push(ConfigError::SecretFile {
            flag: "push-token-file",
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
        return None;
    }
    Some(token)
}

/// A secret read from `path` (given with `--flag`), without its trailing newline; None and an
/// error when it cannot be read.
fn secret_file(
    flag: &'static str,
    path: &std::path::Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Secret> {
    match std::fs::read(path) {
        Ok(mut key) => {
            while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                key.pop();
            }
            Some(Secret::new(key))
        }
        Err(e) => {
            errors.push(ConfigError::SecretFile {
                flag,
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
            None
        }
    }
}

impl Config {
    /// The defaults of every flag, for the given targets (useful from tests and xtask).
    pub fn new(targets: Vec<SocketAddr>) -> Config {
        Config {
            targets,
            ipconfig: None,
            login: Login::None,
            resend_safe: true,
            device_prefix: "loadgen".to_string(),
            device_offset: 0,
            heartbeat: None,
            reconnect_timeout: Duration::from_secs(10),
            reconnect_spread: Duration::ZERO,
            resume_on_loss: false,
            push: None,
            conns: 100,
            payload: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            drain: Duration::from_secs(1),
            mode: Mode::Pipeline(1),
            threads: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            connect_rate: 0,
            coalesce: Duration::ZERO,
            max_body: tether_proto::DEFAULT_MAX_BODY,
            json: None,
            quiet: false,
            hold: false,
            check_rate: 0,
            echo_fraction: 1.0,
            procs: 1,
            shard: None,
            transport: Transport::Tcp,
            tls_ca: None,
            server_name: "localhost".to_string(),
            ws_path: "/ws".to_string(),
            rooms: None,
            peer: None,
            claims: crate::session::TokenClaims::default(),
        }
    }

    /// The window whose frames and latencies are recorded: `duration - warmup`.
    pub fn measured(&self) -> Duration {
        self.duration.saturating_sub(self.warmup)
    }
}

/// `--flag URL` parsed, or None and an error.
fn url(flag: &'static str, text: &str, errors: &mut Vec<ConfigError>) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) => Some(url),
        Err(e) => {
            errors.push(ConfigError::BadUrl {
                flag,
                url: text.to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

/// `host:port` or `ip:port` to the first address it resolves to.
fn resolve(target: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match target.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "resolves to no address".to_string()),
        Err(e) => Err(format!("not HOST:PORT or does not resolve ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigErrors> {
        let mut argv = vec!["tether-loadgen"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .expect("clap accepts these flags")
            .into_config()
    }

    #[test]
    fn room_flags_are_judged_together() {
        let c = parse(&[
            "--target",
            "127.0.0.1:1",
            "--jwt-secret",
            "k",
            "--jwt-aud",
            "tether",
            "--rooms",
            "3",
            "--rooms-per-conn",
            "2",
            "--publish-rate",
            "50",
            "--publish-size",
            "64",
            "--hold",
            "2",
        ])
        .unwrap();
        let rooms = c.rooms.unwrap();
        assert_eq!(
            (rooms.count, rooms.per_conn, rooms.prefix.as_str()),
            (3, 2, "room-")
        );
        let publish = rooms.publish.unwrap();
        assert_eq!(
            (publish.rate, publish.size, publish.broadcast),
            (50.0, 64, false)
        );
        assert_eq!(c.claims.rooms, Some(vec!["room-*".to_string()]));
        assert_eq!(c.claims.aud.as_deref(), Some("tether"));
        assert!(c.peer.is_none());

        let c = parse(&[
            "--peer",
            "nats",
            "--peer-addr",
            "127.0.0.1:4222",
            "--publish-rate",
            "1",
        ])
        .unwrap();
        assert_eq!(c.targets, vec!["127.0.0.1:4222".parse().unwrap()]);
        assert_eq!(c.peer.map(|p| p.kind), Some(PeerKind::Nats));
        assert_eq!(c.claims.rooms, None, "a peer mints no tokens");

        let c = parse(&[
            "--target",
            "127.0.0.1:1",
            "--broadcast",
            "--publish-rate",
            "5",
        ])
        .unwrap();
        assert_eq!(
            c.rooms.map(|r| r.per_conn),
            Some(0),
            "a broadcast joins nothing"
        );

        let errors = parse(&[
            "--peer",
            "mqtt",
            "--peer-addr",
            "127.0.0.1:1",
            "--rooms",
            "0",
            "--publish-rate",
            "-1",
            "--publish-size",
            "8",
            "--room-prefix",
            "a*",
        ])
        .unwrap_err()
        .0;
        for e in [
            ConfigError::BadPeer("mqtt".into()),
            ConfigError::NoRooms,
            ConfigError::BadRoomPrefix,
            ConfigError::BadPublishRate(-1.0),
            ConfigError::BadPublishSize(8),
        ] {
            assert!(errors.contains(&e), "{e:?} not in {errors:?}");
        }
    }

    #[test]
    fn defaults_are_a_closed_loop_of_one() {
        let config = parse(&["--target", "127.0.0.1:1"]).unwrap();
        assert_eq!(config.mode, Mode::Pipeline(1));
        assert_eq!(config.conns, 100);
        assert_eq!(config.payload, 64);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.max_body, 65_536);
        assert!(config.threads >= 1);
    }

    #[test]
    fn lists_split_on_commas_and_seconds_take_fractions() {
        let config = parse(&[
            "--target",
            "127.0.0.1:1,127.0.0.2:2",
            "--source",
            "127.0.0.3,127.0.0.4",
            "--duration",
            "1.5",
            "--rate",
            "20",
        ])
        .unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.sources.len(), 2);
        assert_eq!(config.duration, Duration::from_millis(1500));
        assert_eq!(config.mode, Mode::Rate(20.0));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = parse(&[
            "--target",
            "nonsense",
            "--conns",
            "0",
            "--payload",
            "100",
            "--max-body",
            "10",
            "--rate",
            "0",
            "--warmup",
            "20",
        ])
        .unwrap_err()
        .0;
        assert!(matches!(errors[0], ConfigError::BadTarget { .. }));
        assert!(errors.contains(&ConfigError::NoConns));
        assert!(errors.contains(&ConfigError::PayloadTooLarge {
            payload: 100,
            max_body: 10
        }));
        assert!(errors.contains(&ConfigError::BadRate(0.0)));
        assert!(errors
            .iter()
            .any(|e| matches!(e, ConfigError::WarmupTooLong { .. })));
    }

    #[test]
    fn pipeline_and_rate_are_exclusive() {
        let result = Args::try_parse_from([
            "tether-loadgen",
            "--target",
            "127.0.0.1:1",
            "--pipeline",
            "2",
            "--rate",
            "5",
        ]);
        assert!(result.is_err());
        assert_eq!(
            parse(&["--target", "127.0.0.1:1", "--pipeline", "0"])
                .unwrap_err()
                .0,
            vec![ConfigError::NoPipeline]
        );
    }

    #[test]
    fn bad_seconds_are_named() {
        let errors = parse(&["--target", "127.0.0.1:1", "--duration", "-1"])
            .unwrap_err()
            .0;
        assert_eq!(
            errors,
            vec![ConfigError::BadSeconds {
                flag: "duration",
                bound: "above 0",
                value: -1.0
            }]
        );
        assert!(parse(&["--target", "127.0.0.1:1", "--duration", "NaN"]).is_err());
    }

    #[test]
    fn a_json_path_in_a_missing_directory_is_refused_up_front() {
        let errors = parse(&[
            "--target",
            "127.0.0.1:1",
            "--json",
            "/nonexistent/dir/s.json",
        ])
        .unwrap_err()
        .0;
        assert!(matches!(errors[..], [ConfigError::JsonDir(_)]));
        assert!(parse(&["--target", "127.0.0.1:1", "--json", "summary.json"]).is_ok());
    }

    #[test]
    fn ipconfig_replaces_target_and_one_of_them_is_required() {
        let config = parse(&["--ipconfig", "http://127.0.0.1:6789"]).unwrap();
        assert!(config.targets.is_empty());
        let url = config.ipconfig.unwrap();
        assert_eq!(url.addr, "127.0.0.1:6789".parse().unwrap());
        for argv in [
            &["tether-loadgen"][..],
            &[
                "tether-loadgen",
                "--target",
                "127.0.0.1:1",
                "--ipconfig",
                "http://127.0.0.1:2",
            ],
        ] {
            assert!(Args::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let errors = parse(&["--ipconfig", "ftp://x"]).unwrap_err().0;
        assert!(
            matches!(
                &errors[..],
                [ConfigError::BadUrl {
                    flag: "ipconfig",
                    ..
                }]
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn login_modes_devices_and_heartbeat() {
        let config = parse(&["--target", "127.0.0.1:1"]).unwrap();
        assert_eq!(config.login, Login::None);
        assert_eq!(
            (config.device_prefix.as_str(), config.device_offset),
            ("loadgen", 0)
        );
        assert_eq!(config.heartbeat, None);
        assert_eq!(config.reconnect_timeout, Duration::from_secs(10));
        let config = parse(&["--target", "127.0.0.1:1", "--login", "--heartbeat", "2.5"]).unwrap();
        assert_eq!(config.login, Login::Anonymous);
        assert_eq!(config.heartbeat, Some(Duration::from_millis(2500)));
        let config = parse(&[
            "--target",
            "127.0.0.1:1",
            "--jwt-secret",
            "k",
            "--device-prefix",
            "demo",
            "--device-offset",
            "1000",
        ])
        .unwrap();
        assert_eq!(config.login, Login::Jwt(Arc::new(Signer::hs256(b"k"))));
        assert_eq!(
            (config.device_prefix.as_str(), config.device_offset),
            ("demo", 1000)
        );
        let errors = parse(&["--target", "127.0.0.1:1", "--device-prefix", ""])
            .unwrap_err()
            .0;
        assert_eq!(errors, vec![ConfigError::BadDevicePrefix]);
    }

    #[test]
    fn the_key_file_loses_its_trailing_newline_and_must_hold_a_key() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("tether-loadgen-key-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let file = path.to_str().unwrap();
        let config = parse(&["--target", "127.0.0.1:1", "--jwt-secret-file", file]).unwrap();
        assert_eq!(config.login, Login::Jwt(Arc::new(Signer::hs256(b"s3cret"))));
        std::fs::write(&path, "\n").unwrap();
        let errors = parse(&["--target", "127.0.0.1:1", "--jwt-secret-file", file])
            .unwrap_err()
            .0;
        assert_eq!(errors, vec![ConfigError::EmptySecret]);
        let _ = std::fs::remove_file(&path);
        assert!(format!("{config:?}").contains("redacted"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn es256_and_rs256_sign_with_a_key_file_and_stamp_kid_aud_iss() {
        let dir = std::env::temp_dir().join(format!("tether-loadgen-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("es256.pem");
        let key = tether_state::token::generate_es256_pem().unwrap();
        std::fs::write(&pem, &key).unwrap();
        let signer = Signer::es256_from_pem(key.as_bytes()).unwrap();
        let file = pem.to_str().unwrap();
        let t = ["--target", "127.0.0.1:1"];
        let config = parse(
            &[
                &t[..],
                &[
                    "--jwt-alg",
                    "ES256",
                    "--jwt-key-file",
                    file,
                    "--jwt-kid",
                    "k1",
                    "--jwt-aud",
                    "tether",
                    "--jwt-iss",
                    "id",
                ],
            ]
            .concat(),
        )
        .unwrap();
        let expected = signer
            .with_kid("k1")
            .with_audience("tether")
            .with_issuer("id");
        assert_eq!(config.login, Login::Jwt(Arc::new(expected)));
        let errors = |args: &[&str]| parse(&[&t[..], args].concat()).unwrap_err().0;
        assert_eq!(
            errors(&["--jwt-alg", "es256", "--jwt-secret", "k"]),
            vec![ConfigError::BadAlg("es256".into())]
        );
        assert_eq!(
            errors(&["--jwt-alg", "ES256"]),
            vec![ConfigError::KeyFileNeeded(Alg::Es256)]
        );
        assert_eq!(
            errors(&[
                "--jwt-alg",
                "RS256",
                "--jwt-secret",
                "k",
                "--jwt-key-file",
                file
            ]),
            vec![ConfigError::KeyFileNeeded(Alg::Rs256)]
        );
        assert_eq!(
            errors(&["--jwt-key-file", file, "--jwt-secret", "k"]),
            vec![ConfigError::KeyFileWithHs256]
        );
        // An EC key is not an RSA key, and a missing file is named.
        let wrong = errors(&["--jwt-alg", "RS256", "--jwt-key-file", file]);
        assert!(
            matches!(&wrong[..], [ConfigError::KeyFile { reason, .. }] if reason.contains("RS256")),
            "{wrong:?}"
        );
        let missing = dir.join("missing.pem");
        let gone = errors(&[
            "--jwt-alg",
            "ES256",
            "--jwt-key-file",
            missing.to_str().unwrap(),
        ]);
        assert!(
            matches!(&gone[..], [ConfigError::KeyFile { path, .. }] if *path == missing),
            "{gone:?}"
        );
        assert_eq!(
            errors(&["--jwt-kid", "k1"]),
            vec![ConfigError::StampWithoutKey]
        );
        assert_eq!(
            errors(&["--jwt-secret", "k", "--jwt-aud", ""]),
            vec![ConfigError::StampWithoutKey]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn push_rate_needs_a_rate_above_zero_and_a_url() {
        let config = parse(&["--target", "127.0.0.1:1", "--push-rate", "200"]).unwrap();
        let push = config.push.unwrap();
        assert_eq!(push.rate, 200.0);
        assert_eq!(push.url.addr, "127.0.0.1:8902".parse().unwrap());
        assert_eq!(push.token, None);
        let path = std::env::temp_dir().join(format!("loadgen-push-token-{}", std::process::id()));
        std::fs::write(&path, "t0ken\n").unwrap();
        let with_token_file = [
            "--target",
            "127.0.0.1:1",
            "--push-rate",
            "1",
            "--push-token-file",
            path.to_str().unwrap(),
        ];
        let push = parse(&with_token_file).unwrap().push.unwrap();
        assert_eq!(
            push.token.as_ref().map(Secret::expose),
            Some(b"t0ken".as_slice())
        );
        assert!(!format!("{push:?}").contains("t0ken"));
        std::fs::write(&path, "\n").unwrap();
        let errors = parse(&with_token_file).unwrap_err().0;
        assert_eq!(
            errors,
            vec![ConfigError::SecretFile {
                flag: "push-token-file",
                path: path.clone(),
                reason: "the file is empty".into()
            }]
        );
        let _ = std::fs::remove_file(&path);
        let errors = parse(&[
            "--target",
            "127.0.0.1:1",
            "--push-rate",
            "-1",
            "--push-url",
            "nonsense",
        ])
        .unwrap_err()
        .0;
        assert!(
            errors.contains(&ConfigError::BadPushRate(-1.0)),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| matches!(
                e,
                ConfigError::BadUrl {
                    flag: "push-url",
                    ..
                }
            )),
            "{errors:?}"
        );
    }

    #[test]
    fn source_ranges_expand_and_bad_ones_are_named() {
        let config = parse(&[
            "--target",
            "127.0.0.1:1",
            "--source-ips",
            "127.0.0.2-127.0.0.4,127.0.0.9",
        ])
        .unwrap();
        let got: Vec<String> = config.sources.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]);
        let config = parse(&[
            "--target",
            "127.0.0.1:1",
            "--source",
            "127.0.0.255-127.0.1.1",
        ])
        .unwrap();
        assert_eq!(config.sources.len(), 3, "ranges cross octets");
        for bad in [
            "127.0.0.5-127.0.0.2",
            "x",
            "127.0.0.1-::1",
            "10.0.0.0-10.2.0.0",
        ] {
            let errors = parse(&["--target", "127.0.0.1:1", "--source", bad])
                .unwrap_err()
                .0;
            assert!(
                matches!(&errors[..], [ConfigError::BadSource { .. }]),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn hold_replaces_duration_and_sends_no_data_unless_a_rate_is_given() {
        let config = parse(&["--target", "127.0.0.1:1", "--hold", "60"]).unwrap();
        assert!(config.hold);
        assert_eq!(config.mode, Mode::Hold);
        assert_eq!(config.duration, Duration::from_secs(60));
        let config = parse(&[
            "--target",
            "127.0.0.1:1",
            "--hold",
            "5",
            "--rate",
            "10",
            "--echo-fraction",
            "0.01",
            "--procs",
            "2",
        ])
        .unwrap();
        assert_eq!(
            (config.mode, config.echo_fraction, config.procs),
            (Mode::Rate(10.0), 0.01, 2)
        );
        for argv in [
            &[
                "tether-loadgen",
                "--target",
                "127.0.0.1:1",
                "--hold",
                "5",
                "--duration",
                "3",
            ][..],
            &[
                "tether-loadgen",
                "--target",
                "127.0.0.1:1",
                "--hold",
                "5",
                "--pipeline",
                "3",
            ],
        ] {
            assert!(Args::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let errors = parse(&[
            "--target",
            "127.0.0.1:1",
            "--echo-fraction",
            "0",
            "--procs",
            "0",
        ])
        .unwrap_err()
        .0;
        assert_eq!(
            errors,
            vec![ConfigError::BadEchoFraction(0.0), ConfigError::NoProcs]
        );
        let errors = parse(&["--target", "127.0.0.1:1", "--worker-of", "2/2"])
            .unwrap_err()
            .0;
        assert_eq!(errors, vec![ConfigError::BadShard("2/2".into())]);
        let shard = parse(&["--target", "127.0.0.1:1", "--worker-of", "1/2"])
            .unwrap()
            .shard
            .unwrap();
        assert!(shard.owns(3) && !shard.owns(4));
    }
}
