//! The gateway's configuration: TOML keys, their flags and `TETHER_GATEWAY_*` env vars.
//!
//! [`Settings`] is the part a SIGHUP can change without dropping clients (nodes, balancing,
//! health checking, limits); the rest (listeners, threads, admin address) needs a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::help::NoDefault;
use tether_daemon::config::validate::{self, Checks};
use tether_daemon::config::{ConfigError, ConfigErrors, Validate};
use tether_daemon::logging::LogFormat;
use tether_discovery::{EtcdAuth, EtcdAuthEnv, EtcdAuthFlags};
use tether_proto::DEFAULT_MAX_BODY;

use crate::balance::Balance;
use crate::dispatch::{Policy, Retry, MAX_NODE_QUEUE};
use crate::route::MAX_REACTORS;
use crate::transport::{Transport, WsPolicy};
use tether_proto::ws::ServerHandshake;

/// Everything a gateway can be told. Every key has a flag of the same name (`nodes` is
/// `--node`), and a `TETHER_GATEWAY_<KEY>` env var.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client listeners speaking v1 frames over plain TCP.
    pub listen: Vec<SocketAddr>,
    /// Client listeners speaking v1 frames over TLS (needs `tls_cert` and `tls_key`).
    pub listen_tls: Vec<SocketAddr>,
    /// Client listeners speaking WebSocket: v1 frames in binary messages, subprotocol
    /// `tether.v1`.
    pub listen_ws: Vec<SocketAddr>,
    /// Client listeners speaking WebSocket over TLS (needs `tls_cert` and `tls_key`).
    pub listen_wss: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first, for the TLS listeners; re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`; re-read on SIGHUP.
    pub tls_key: Option<PathBuf>,
    /// TLS handshake reads each reactor processes per loop iteration; the rest wait for the
    /// next one, so a storm of handshakes does not stall established clients.
    pub tls_handshakes_per_loop: u32,
    /// Request paths that upgrade to WebSocket; others get 404.
    pub ws_paths: Vec<String>,
    /// Browser origins allowed to open a WebSocket (`https://app.example.com`, or `*` for
    /// any); others get 403. Guards against cross-site WebSocket hijacking.
    pub ws_origins: Vec<String>,
    /// Whether an upgrade with no `Origin` (a client that is not a browser) is allowed.
    pub ws_allow_no_origin: bool,
    pub backlog: u32,
    /// Bind every client listener with SO_REUSEPORT, so that several gateway processes on
    /// this host share its ports and the kernel spreads new connections over them (each
    /// process then needs its own `id` and `admin`).
    pub reuse_port: bool,
    /// Accepting threads per listener.
    pub acceptors: usize,
    /// Event-loop threads; 0 = one per core.
    pub reactors: usize,
    /// Pin reactor n to core n (mod cores).
    pub pin_cores: bool,
    /// Admin HTTP listener (/metrics, /stats, /healthz).
    pub admin: SocketAddr,
    /// Echo nodes, in the order balancing sees them.
    pub nodes: Vec<SocketAddr>,
    pub balance: Balance,
    pub health_interval_ms: u64,
    pub health_timeout_ms: u64,
    /// Failed probes before a node is down.
    pub fall: u32,
    /// Successful probes before a down node is up again.
    pub rise: u32,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Open client connections; the next is answered OVERLOADED and closed.
    pub max_connections: usize,
    /// Largest client frame body; larger is FRAME_TOO_LARGE, decided from the header.
    pub max_body: u32,
    /// A partial frame older than this is TIMEOUT (slowloris).
    pub frame_timeout_ms: u64,
    /// Replies queued for a client that does not read; past it SLOW_CONSUMER.
    pub max_queued_bytes: usize,
    /// A room member with more than this unwritten skips a window (it sees the gap in the
    /// sequence numbers); 0: never skip, a member past `max_queued_bytes` is closed.
    pub room_skip_bytes: usize,
    /// Requests one client may have at the nodes; past it the gateway stops reading it.
    pub max_inflight: u32,
    /// Payload bytes one client may have at the nodes; a request past it is BUSY.
    pub max_inflight_bytes: u64,
    /// A request no node answered within this is REQUEST_TIMEOUT; its entry is freed.
    pub request_timeout_ms: u64,
    /// Which requests a failed or overloaded node's work is re-sent for: `flagged` (DATA
    /// with the resend-safe flag) or `all`.
    pub retry: Retry,
    /// Payload copies kept for re-sends, per reactor; a re-sendable request past it is BUSY.
    pub max_resend_bytes: usize,
    /// With `state`: logins and resumes at the daemon per reactor; past it BUSY with a
    /// retry-after hint.
    pub max_logins_inflight: u32,
    /// DATA frames per second per connection; 0 = no limit.
    pub rate_limit: u32,
    /// Token-bucket burst for `rate_limit`; 0 = one second's worth.
    pub rate_burst: u32,
    /// How long SIGTERM waits for clients to leave after GOAWAY.
    pub drain_timeout_ms: u64,
    /// The state daemon's Unix socket; set, clients must LOGIN through it. None = anonymous
    /// logins and no sessions.
    pub state: Option<PathBuf>,
    /// With `state`: a connection that has not logged in within this is TIMEOUT.
    pub login_timeout_ms: u64,
    /// A client that sends nothing for this long is ERROR TIMEOUT "idle" and closed (it is
    /// checked every quarter of it, so it goes after 1 to 1.25 times this); 0 = never.
    pub idle_timeout_ms: u64,
    /// A reactor waits at least this long between two waits for events, so that what arrives
    /// meanwhile is handled in one wake: with very many idle clients each sending a heartbeat
    /// now and then, one wake answers many instead of one; every frame may wait up to this
    /// long. 0 = wake for every event.
    pub coalesce_ms: u64,
    /// ip-config services to report load to (`http://host:port`); none = no reporting.
    pub ipconfig: Vec<String>,
    /// This gateway's report key (one line): reports are signed with it, as an ipconfig with
    /// `report_keys_file` requires. Read again on SIGHUP. None = unsigned reports, which only
    /// an ipconfig on loopback without `report_keys_file` accepts.
    pub ipconfig_key_file: Option<PathBuf>,
    /// This gateway's id in reports; empty = `<hostname>-<port>`.
    pub id: String,
    /// The host:port clients dial, in reports (`addr`, and `transports.tcp` with a plain TCP
    /// listener); empty = the first listener (127.0.0.1 when it listens on every address —
    /// set this on a real host).
    pub advertise: String,
    /// The host:port clients dial for v1 over TLS (`transports.tls`); empty = the first
    /// `listen_tls`, or none. Set, it is listed even without such a listener (a proxy).
    pub advertise_tls: String,
    /// The host:port browsers dial for WebSocket (`transports.ws`); empty = the first
    /// `listen_ws`, or none.
    pub advertise_ws: String,
    /// The host:port browsers dial for WebSocket over TLS (`transports.wss`); empty = the
    /// first `listen_wss`, or none.
    pub advertise_wss: String,
    /// Network capacity reported for scoring, bytes/s (default 10 Gbit/s).
    pub bandwidth_bytes_per_s: u64,
    pub report_interval_ms: u64,
    /// etcd client URLs: register this gateway under `/tether/gateways/{id}` (its report,
    /// refreshed every `report_interval_ms`) and take the echo nodes from `/tether/nodes/`
    /// instead of `nodes`. Empty = the static `nodes` list.
    pub etcd: Vec<String>,
    /// The etcd user to register as (`etcd_user`, `etcd_password_file`).
    #[serde(flatten)]
    pub etcd_auth: EtcdAuth,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8900))],
            listen_tls: Vec::new(),
            listen_ws: Vec::new(),
            listen_wss: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_handshakes_per_loop: 32,
            ws_paths: vec!["/".into(), "/ws".into()],
            ws_origins: Vec::new(),
            ws_allow_no_origin: true,
            backlog: 4096,
            reuse_port: false,
            acceptors: 2,
            reactors: 0,
            pin_cores: true,
            admin: SocketAddr::from(([127, 0, 0, 1], 8901)),
            nodes: (8890..=8893)
                .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
                .collect(),
            balance: Balance::RoundRobin,
            health_interval_ms: 1000,
            health_timeout_ms: 1000,
            fall: 3,
            rise: 2,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            max_connections: 100_000,
            max_body: DEFAULT_MAX_BODY,
            frame_timeout_ms: 10_000,
            max_queued_bytes: 1 << 20,
            room_skip_bytes: 64 << 10,
            max_inflight: 1024,
            max_inflight_bytes: 4 << 20,
            request_timeout_ms: 30_000,
            retry: Retry::Flagged,
            max_resend_bytes: 256 << 20,
            max_logins_inflight: 512,
            rate_limit: 0,
            rate_burst: 0,
            drain_timeout_ms: 10_000,
            state: None,
            login_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            coalesce_ms: 0,
            ipconfig: Vec::new(),
            ipconfig_key_file: None,
            id: String::new(),
            advertise: String::new(),
            advertise_tls: String::new(),
            advertise_ws: String::new(),
            advertise_wss: String::new(),
            bandwidth_bytes_per_s: 1_250_000_000,
            report_interval_ms: 1000,
            etcd: Vec::new(),
            etcd_auth: EtcdAuth::default(),
            log_format: LogFormat::Text,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut c = Checks::new();
        c.need(
            self.listeners().next().is_some(),
            "listen",
            "at least one listener (listen, listen_tls, listen_ws or listen_wss)",
        );
        self.validate_transports(&mut c);
        c.need(self.acceptors >= 1, "acceptors", "at least 1");
        c.need(self.acceptors <= 64, "acceptors", "at most 64");
        c.need(
            self.reactors <= MAX_REACTORS,
            "reactors",
            format!("at most {MAX_REACTORS} (the route key holds 8 bits of reactor)"),
        );
        c.need(!self.nodes.is_empty(), "nodes", "at least one node");
        let mut unique = self.nodes.clone();
        unique.sort();
        unique.dedup();
        c.need(
            unique.len() == self.nodes.len(),
            "nodes",
            "a node is listed twice",
        );
        c.need(
            self.health_interval_ms >= 10,
            "health_interval_ms",
            "at least 10",
        );
        c.need(
            self.health_timeout_ms >= 10,
            "health_timeout_ms",
            "at least 10",
        );
        c.need(self.fall >= 1, "fall", "at least 1");
        c.need(self.rise >= 1, "rise", "at least 1");
        c.need(self.reconnect_min_ms >= 1, "reconnect_min_ms", "at least 1");
        c.need(
            self.reconnect_max_ms >= self.reconnect_min_ms,
            "reconnect_max_ms",
            "at least reconnect_min_ms",
        );
        c.need(self.max_connections >= 1, "max_connections", "at least 1");
        c.need(self.frame_timeout_ms >= 1, "frame_timeout_ms", "at least 1");
        c.need(
            self.max_queued_bytes >= 65_536,
            "max_queued_bytes",
            "at least 65536",
        );
        c.need(
            self.room_skip_bytes <= self.max_queued_bytes,
            "room_skip_bytes",
            "at most max_queued_bytes (0: never skip)",
        );
        c.need(self.max_inflight >= 1, "max_inflight", "at least 1");
        c.need(
            self.max_inflight_bytes >= u64::from(self.max_body),
            "max_inflight_bytes",
            "at least max_body (one request of the largest size must fit)",
        );
        c.need(
            (100..=3_600_000).contains(&self.request_timeout_ms),
            "request_timeout_ms",
            "between 100 and 3600000",
        );
        c.need(
            self.max_resend_bytes >= self.max_body as usize,
            "max_resend_bytes",
            "at least max_body",
        );
        c.need(
            self.max_logins_inflight >= 1,
            "max_logins_inflight",
            "at least 1",
        );
        c.need(
            (100..=3_600_000).contains(&self.login_timeout_ms),
            "login_timeout_ms",
            "between 100 and 3600000",
        );
        c.need(
            self.idle_timeout_ms == 0 || self.idle_timeout_ms >= 1000,
            "idle_timeout_ms",
            "0 (never) or at least 1000",
        );
        c.need(self.coalesce_ms <= 50, "coalesce_ms", "between 0 and 50");
        if let Some(path) = &self.state {
            c.check("state", validate::socket_path(path));
        }
        for url in &self.ipconfig {
            c.need(
                crate::reporter::Endpoint::parse(url).is_ok(),
                "ipconfig",
                format!("{url:?} is not http://host:port[/prefix]"),
            );
        }
        if let Some(path) = &self.ipconfig_key_file {
            c.check("ipconfig_key_file", crate::reporter::load_key(path));
        }
        // What ipconfig accepts in a report (empty: the gateway derives one).
        if !self.id.is_empty() {
            c.check("id", validate::member_id(&self.id));
        }
        c.need(
            !self.reuse_port || !self.id.is_empty(),
            "id",
            "set, and unique per process, with reuse_port (processes sharing a port would all \
             derive the same <hostname>-<port>)",
        );
        for (key, value) in [
            ("advertise", &self.advertise),
            ("advertise_tls", &self.advertise_tls),
            ("advertise_ws", &self.advertise_ws),
            ("advertise_wss", &self.advertise_wss),
        ] {
            if !value.is_empty() {
                c.check(key, validate::dial_addr(value));
            }
        }
        c.need(
            self.bandwidth_bytes_per_s >= 1,
            "bandwidth_bytes_per_s",
            "at least 1",
        );
        c.need(
            self.report_interval_ms >= 100,
            "report_interval_ms",
            "at least 100",
        );
        c.etcd("etcd", &self.etcd);
        self.etcd_auth.check(&mut c, &self.etcd);
        c.into_errors()
    }
}

impl Config {
    /// Every client listener with what it speaks, plain TCP first.
    pub(crate) fn listeners(&self) -> impl Iterator<Item = (SocketAddr, Transport)> + '_ {
        self.listen
            .iter()
            .map(|&a| (a, Transport::Tcp))
            .chain(self.listen_tls.iter().map(|&a| (a, Transport::Tls)))
            .chain(self.listen_ws.iter().map(|&a| (a, Transport::Ws)))
            .chain(self.listen_wss.iter().map(|&a| (a, Transport::Wss)))
    }

    /// Whether a listener speaks TLS (so the certificate must load).
    pub(crate) fn uses_tls(&self) -> bool {
        self.listeners().any(|(_, t)| t.uses_tls())
    }

    fn validate_transports(&self, c: &mut Checks) {
        let mut all: Vec<SocketAddr> = self.listeners().map(|(a, _)| a).collect();
        all.sort();
        let before = all.len();
        all.dedup();
        c.need(
            all.len() == before,
            "listen",
            "an address is listed twice (across listen, listen_tls, listen_ws, listen_wss)",
        );
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                c.check("tls_cert", crate::transport::check_certs(cert, key))
            }
            (None, None) => c.need(
                !self.uses_tls(),
                "tls_cert",
                "listen_tls and listen_wss need tls_cert and tls_key",
            ),
            (Some(_), None) => c.need(false, "tls_key", "tls_cert needs tls_key"),
            (None, Some(_)) => c.need(false, "tls_cert", "tls_key needs tls_cert"),
        }
        c.need(
            (1..=100_000).contains(&self.tls_handshakes_per_loop),
            "tls_handshakes_per_loop",
            "between 1 and 100000",
        );
        c.need(!self.ws_paths.is_empty(), "ws_paths", "at least one path");
        for path in &self.ws_paths {
            c.need(
                path.starts_with('/') && !path.contains(['?', ' ']),
                "ws_paths",
                format!("{path:?} is not an absolute path without a query"),
            );
        }
        for origin in &self.ws_origins {
            c.check("ws_origins", validate::web_origin(origin));
        }
    }

    /// The WebSocket upgrade policy these keys describe.
    fn ws_policy(&self) -> WsPolicy {
        let handshake = ServerHandshake {
            paths: self.ws_paths.clone(),
            origins: self.ws_origins.clone(),
            allow_no_origin: self.ws_allow_no_origin,
            ..ServerHandshake::default()
        };
        WsPolicy::new(handshake, self.max_body)
    }

    /// `reactors` with 0 resolved to the number of cores.
    pub fn reactor_count(&self) -> usize {
        if self.reactors > 0 {
            self.reactors
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_REACTORS))
        }
    }

    /// The part of the config a reload may change.
    pub fn settings(&self) -> Settings {
        Settings {
            nodes: self.nodes.clone(),
            balance: self.balance,
            health_interval: Duration::from_millis(self.health_interval_ms),
            health_timeout: Duration::from_millis(self.health_timeout_ms),
            fall: self.fall,
            rise: self.rise,
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            max_body: self.max_body,
            frame_timeout_ms: u32::try_from(self.frame_timeout_ms).unwrap_or(u32::MAX / 2),
            max_queued_bytes: self.max_queued_bytes,
            room_skip_bytes: self.room_skip_bytes,
            max_inflight: self.max_inflight,
            dispatch: Policy {
                retry: self.retry,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                max_client_bytes: self.max_inflight_bytes,
                max_copied_bytes: self.max_resend_bytes,
                max_node_queue: MAX_NODE_QUEUE,
            },
            max_logins_inflight: self.max_logins_inflight,
            rate_limit: self.rate_limit,
            login_timeout_ms: u32::try_from(self.login_timeout_ms).unwrap_or(u32::MAX / 2),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            coalesce: Duration::from_millis(self.coalesce_ms),
            ws: self.ws_policy(),
            tls_handshakes_per_loop: self.tls_handshakes_per_loop,
            rate_burst: if self.rate_burst == 0 {
                self.rate_limit.max(1)
            } else {
                self.rate_burst
            },
        }
    }

    /// Keys that differ from `other` and need a restart to take effect.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != other.listen {
            changed.push("listen");
        }
        if self.listen_tls != other.listen_tls {
            changed.push("listen_tls");
        }
        if self.listen_ws != other.listen_ws {
            changed.push("listen_ws");
        }
        if self.listen_wss != other.listen_wss {
            changed.push("listen_wss");
        }
        if self.backlog != other.backlog {
            changed.push("backlog");
        }
        if self.reuse_port != other.reuse_port {
            changed.push("reuse_port");
        }
        if self.acceptors != other.acceptors {
            changed.push("acceptors");
        }
        if self.reactors != other.reactors {
            changed.push("reactors");
        }
        if self.pin_cores != other.pin_cores {
            changed.push("pin_cores");
        }
        if self.admin != other.admin {
            changed.push("admin");
        }
        if self.log_format != other.log_format {
            changed.push("log_format");
        }
        if self.state != other.state {
            changed.push("state");
        }
        if self.etcd != other.etcd || self.etcd_auth != other.etcd_auth {
            changed.push("etcd/etcd_user/etcd_password_file");
        }
        if self.ipconfig != other.ipconfig
            || self.ipconfig_key_file != other.ipconfig_key_file
            || self.id != other.id
            || self.advertise != other.advertise
            || self.advertise_tls != other.advertise_tls
            || self.advertise_ws != other.advertise_ws
            || self.advertise_wss != other.advertise_wss
            || self.bandwidth_bytes_per_s != other.bandwidth_bytes_per_s
            || self.report_interval_ms != other.report_interval_ms
        {
            changed.push(
                "ipconfig/ipconfig_key_file/id/advertise*/bandwidth_bytes_per_s/report_interval_ms",
            );
        }
        changed
    }
}

/// What a reactor works with; replaced whole on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub nodes: Vec<SocketAddr>,
    pub balance: Balance,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_body: u32,
    pub frame_timeout_ms: u32,
    pub max_queued_bytes: usize,
    pub room_skip_bytes: usize,
    pub max_inflight: u32,
    /// Request routing limits: deadlines, re-sends, byte caps.
    pub dispatch: Policy,
    pub max_logins_inflight: u32,
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub login_timeout_ms: u32,
    /// Zero = no idle timeout.
    pub idle_timeout: Duration,
    /// The least time between two polls of a reactor; zero = none.
    pub coalesce: Duration,
    /// The WebSocket upgrade policy and limits.
    pub(crate) ws: WsPolicy,
    pub tls_handshakes_per_loop: u32,
}

/// Keys with no value by default, for `--help`.
pub const NO_DEFAULT: &[NoDefault] = &[
    ("state", "anonymous logins"),
    ("tls_cert", "no TLS listener"),
    ("tls_key", "no TLS listener"),
    ("ipconfig_key_file", "unsigned reports"),
    ("etcd_password_file", ""),
];

/// The environment variables of the etcd credential flags.
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl EtcdAuthEnv for Env {
    const ETCD_USER: &'static str = "TETHER_GATEWAY_ETCD_USER";
    const ETCD_PASSWORD_FILE: &'static str = "TETHER_GATEWAY_ETCD_PASSWORD_FILE";
}

/// Command-line flags; each overrides the file's key and reads `TETHER_GATEWAY_<KEY>`. Their
/// help says no default: `--help` appends the one `Config::default()` has.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct Opts {
    /// TOML config file.
    #[arg(long, env = "TETHER_GATEWAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Client listener; repeat or comma-separate for several.
    #[arg(long, env = "TETHER_GATEWAY_LISTEN", value_delimiter = ',')]
    pub listen: Option<Vec<SocketAddr>>,
    /// TLS client listener; repeat or comma-separate for several.
    #[arg(long, env = "TETHER_GATEWAY_LISTEN_TLS", value_delimiter = ',')]
    pub listen_tls: Option<Vec<SocketAddr>>,
    /// WebSocket client listener; repeat or comma-separate for several.
    #[arg(long, env = "TETHER_GATEWAY_LISTEN_WS", value_delimiter = ',')]
    pub listen_ws: Option<Vec<SocketAddr>>,
    /// WebSocket-over-TLS client listener; repeat or comma-separate for several.
    #[arg(long, env = "TETHER_GATEWAY_LISTEN_WSS", value_delimiter = ',')]
    pub listen_wss: Option<Vec<SocketAddr>>,
    /// PEM certificate chain for the TLS listeners (re-read on SIGHUP).
    #[arg(long, env = "TETHER_GATEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for tls_cert (re-read on SIGHUP).
    #[arg(long, env = "TETHER_GATEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// TLS handshake reads per reactor loop iteration before the rest wait.
    #[arg(long, env = "TETHER_GATEWAY_TLS_HANDSHAKES_PER_LOOP")]
    pub tls_handshakes_per_loop: Option<u32>,
    /// Paths that upgrade to WebSocket, comma-separated.
    #[arg(long, env = "TETHER_GATEWAY_WS_PATHS", value_delimiter = ',')]
    pub ws_paths: Option<Vec<String>>,
    /// Browser origins allowed to open a WebSocket, comma-separated; `*` = any.
    #[arg(long, env = "TETHER_GATEWAY_WS_ORIGINS", value_delimiter = ',')]
    pub ws_origins: Option<Vec<String>>,
    /// Allow WebSocket upgrades without an Origin (non-browser clients).
    #[arg(long, env = "TETHER_GATEWAY_WS_ALLOW_NO_ORIGIN")]
    pub ws_allow_no_origin: Option<bool>,
    /// Listen backlog.
    #[arg(long, env = "TETHER_GATEWAY_BACKLOG")]
    pub backlog: Option<u32>,
    /// Share the client ports with other gateway processes (SO_REUSEPORT).
    #[arg(long, env = "TETHER_GATEWAY_REUSE_PORT")]
    pub reuse_port: Option<bool>,
    /// Accepting threads per listener.
    #[arg(long, env = "TETHER_GATEWAY_ACCEPTORS")]
    pub acceptors: Option<usize>,
    /// Event-loop threads, 0 = one per core.
    #[arg(long, env = "TETHER_GATEWAY_REACTORS")]
    pub reactors: Option<usize>,
    /// Pin reactors to cores.
    #[arg(long, env = "TETHER_GATEWAY_PIN_CORES")]
    pub pin_cores: Option<bool>,
    /// Admin listener for /metrics, /stats, /healthz.
    #[arg(long, env = "TETHER_GATEWAY_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Echo nodes, comma-separated or repeated.
    #[arg(long = "node", env = "TETHER_GATEWAY_NODES", value_delimiter = ',')]
    pub nodes: Option<Vec<SocketAddr>>,
    /// round-robin, random, least-outstanding or ip-hash.
    #[arg(long, env = "TETHER_GATEWAY_BALANCE")]
    pub balance: Option<Balance>,
    /// Health probe interval, ms.
    #[arg(long, env = "TETHER_GATEWAY_HEALTH_INTERVAL_MS")]
    pub health_interval_ms: Option<u64>,
    /// Health probe timeout, ms.
    #[arg(long, env = "TETHER_GATEWAY_HEALTH_TIMEOUT_MS")]
    pub health_timeout_ms: Option<u64>,
    /// Failed probes before a node is down.
    #[arg(long, env = "TETHER_GATEWAY_FALL")]
    pub fall: Option<u32>,
    /// Good probes before a node is up again.
    #[arg(long, env = "TETHER_GATEWAY_RISE")]
    pub rise: Option<u32>,
    /// First reconnect delay, ms.
    #[arg(long, env = "TETHER_GATEWAY_RECONNECT_MIN_MS")]
    pub reconnect_min_ms: Option<u64>,
    /// Largest reconnect delay, ms.
    #[arg(long, env = "TETHER_GATEWAY_RECONNECT_MAX_MS")]
    pub reconnect_max_ms: Option<u64>,
    /// Open client connections before OVERLOADED.
    #[arg(long, env = "TETHER_GATEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest client frame body.
    #[arg(long, env = "TETHER_GATEWAY_MAX_BODY")]
    pub max_body: Option<u32>,
    /// Partial-frame timeout, ms.
    #[arg(long, env = "TETHER_GATEWAY_FRAME_TIMEOUT_MS")]
    pub frame_timeout_ms: Option<u64>,
    /// Unread reply bytes per client before SLOW_CONSUMER.
    #[arg(long, env = "TETHER_GATEWAY_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Unwritten bytes past which a room member skips a window; 0: never skip.
    #[arg(long, env = "TETHER_GATEWAY_ROOM_SKIP_BYTES")]
    pub room_skip_bytes: Option<usize>,
    /// Requests in flight per client before reading pauses.
    #[arg(long, env = "TETHER_GATEWAY_MAX_INFLIGHT")]
    pub max_inflight: Option<u32>,
    /// Payload bytes per client at the nodes before BUSY.
    #[arg(long, env = "TETHER_GATEWAY_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<u64>,
    /// No reply from the nodes within this many ms is REQUEST_TIMEOUT.
    #[arg(long, env = "TETHER_GATEWAY_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Which requests are re-sent when a node fails: flagged or all.
    #[arg(long, env = "TETHER_GATEWAY_RETRY")]
    pub retry: Option<Retry>,
    /// Payload copies kept for re-sends per reactor before BUSY.
    #[arg(long, env = "TETHER_GATEWAY_MAX_RESEND_BYTES")]
    pub max_resend_bytes: Option<usize>,
    /// With --state: logins at the daemon per reactor before BUSY.
    #[arg(long, env = "TETHER_GATEWAY_MAX_LOGINS_INFLIGHT")]
    pub max_logins_inflight: Option<u32>,
    /// DATA frames/s per connection, 0 = off.
    #[arg(long, env = "TETHER_GATEWAY_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Rate-limit burst, 0 = one second's worth.
    #[arg(long, env = "TETHER_GATEWAY_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Drain time after SIGTERM, ms.
    #[arg(long, env = "TETHER_GATEWAY_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// State daemon socket; set, clients must LOGIN.
    #[arg(long, env = "TETHER_GATEWAY_STATE")]
    pub state: Option<PathBuf>,
    /// With --state: no LOGIN within this many ms is TIMEOUT.
    #[arg(long, env = "TETHER_GATEWAY_LOGIN_TIMEOUT_MS")]
    pub login_timeout_ms: Option<u64>,
    /// Nothing received for this many ms is TIMEOUT "idle", 0 = never.
    #[arg(long, env = "TETHER_GATEWAY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// A reactor waits at least this many ms between two polls (fewer wakes, frames wait up
    /// to this long); 0 = wake for every event, at most 50.
    #[arg(long, env = "TETHER_GATEWAY_COALESCE_MS")]
    pub coalesce_ms: Option<u64>,
    /// ip-config service to report to, http://host:port; repeat for several; none = no reports.
    #[arg(long, env = "TETHER_GATEWAY_IPCONFIG", value_delimiter = ',')]
    pub ipconfig: Option<Vec<String>>,
    /// File holding this gateway's report key: reports are signed with it.
    #[arg(long, env = "TETHER_GATEWAY_IPCONFIG_KEY_FILE")]
    pub ipconfig_key_file: Option<PathBuf>,
    /// Gateway id in reports; empty = `<hostname>-<port>`.
    #[arg(
        long,
        env = "TETHER_GATEWAY_ID",
        help = "Gateway id in reports; empty = <hostname>-<port>"
    )]
    pub id: Option<String>,
    /// host:port clients dial, in reports; empty = the first listener.
    #[arg(long, env = "TETHER_GATEWAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// host:port clients dial for TLS, in reports; empty = the first TLS listener.
    #[arg(long, env = "TETHER_GATEWAY_ADVERTISE_TLS")]
    pub advertise_tls: Option<String>,
    /// host:port browsers dial for WebSocket, in reports; empty = the first ws listener.
    #[arg(long, env = "TETHER_GATEWAY_ADVERTISE_WS")]
    pub advertise_ws: Option<String>,
    /// host:port browsers dial for WebSocket over TLS; empty = the first wss listener.
    #[arg(long, env = "TETHER_GATEWAY_ADVERTISE_WSS")]
    pub advertise_wss: Option<String>,
    /// Network capacity for scoring, bytes/s.
    #[arg(long, env = "TETHER_GATEWAY_BANDWIDTH_BYTES_PER_S")]
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Report interval, ms.
    #[arg(long, env = "TETHER_GATEWAY_REPORT_INTERVAL_MS")]
    pub report_interval_ms: Option<u64>,
    /// etcd client URLs, comma-separated: register there and take the nodes from there;
    /// none = the --node list.
    #[arg(long, env = "TETHER_GATEWAY_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd_auth: EtcdAuthFlags<Env>,
    /// Log format: text or json.
    #[arg(long, env = "TETHER_GATEWAY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Opts {
    /// The config these flags, their env vars and the `--config` file describe.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        tether_daemon::config::load(self.config.as_deref(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_on_loopback_with_no_file() {
        let config = Opts::default().load().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.nodes.len(), 4);
        assert_eq!(config.admin.to_string(), "127.0.0.1:8901");
    }

    #[test]
    fn node_flag_sets_the_nodes_key() {
        let opts = Opts {
            nodes: Some(vec!["127.0.0.1:1".parse().unwrap()]),
            balance: Some(Balance::IpHash),
            ..Opts::default()
        };
        let config = opts.load().unwrap();
        assert_eq!(config.nodes, vec!["127.0.0.1:1".parse().unwrap()]);
        assert_eq!(config.balance, Balance::IpHash);
    }

    #[test]
    fn every_semantic_error_is_listed() {
        let opts = Opts {
            nodes: Some(vec![]),
            fall: Some(0),
            reactors: Some(999),
            max_queued_bytes: Some(10),
            ..Opts::default()
        };
        let err = opts.load().unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        // The default room_skip_bytes (64 KiB) is no longer below so small a queue.
        assert_eq!(
            keys,
            vec![
                "reactors",
                "nodes",
                "fall",
                "max_queued_bytes",
                "room_skip_bytes"
            ],
            "{err}"
        );
    }

    #[test]
    fn coalesce_is_at_most_a_tick() {
        let at = |ms| {
            Opts {
                coalesce_ms: Some(ms),
                ..Opts::default()
            }
            .load()
        };
        assert_eq!(
            at(10).map(|c| c.settings().coalesce).ok(),
            Some(Duration::from_millis(10))
        );
        let err = at(51).unwrap_err();
        assert_eq!(err.errors[0].key, "coalesce_ms", "{err}");
    }

    #[test]
    fn reuse_port_needs_an_id_of_its_own() {
        let opts = Opts {
            reuse_port: Some(true),
            ..Opts::default()
        };
        let err = opts.load().unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["id"], "{err}");
        let opts = Opts {
            reuse_port: Some(true),
            id: Some("host7-8911".into()),
            ..Opts::default()
        };
        assert!(opts.load().is_ok_and(|c| c.reuse_port));
    }

    #[test]
    fn an_id_or_address_ipconfig_would_refuse_is_refused() {
        let opts = Opts {
            id: Some("gw 1".into()),
            advertise: Some("0.0.0.0:8900".into()),
            advertise_ws: Some("ws://gw:8920".into()),
            advertise_wss: Some("gw.example:0".into()),
            ..Opts::default()
        };
        let err = opts.load().unwrap_err();
        let got: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "id: only printable ASCII characters, no spaces",
                "advertise: 0.0.0.0 is not an address clients can dial",
                "advertise_ws: must be host:port, without a scheme",
                "advertise_wss: port must be 1-65535",
            ]
        );
        for advertise in ["[::]:8900", "gw.example:0", "gw.example"] {
            let opts = Opts {
                advertise: Some(advertise.into()),
                ..Opts::default()
            };
            assert!(opts.load().is_err(), "{advertise}");
        }
        let opts = Opts {
            id: Some("gw-1".into()),
            advertise: Some("gw-1.example:8900".into()),
            ..Opts::default()
        };
        assert!(opts.load().is_ok());
    }

    #[test]
    fn every_flag_is_a_key_and_its_help_shows_its_default() {
        let problems = tether_daemon::config::help::disagreements::<Opts, Config>(NO_DEFAULT);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn burst_defaults_to_one_second_of_rate() {
        let config = Config {
            rate_limit: 50,
            ..Config::default()
        };
        assert_eq!(config.settings().rate_burst, 50);
    }
}
