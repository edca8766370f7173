//! Gateway metrics: per-reactor counters, and their rendering for the admin listener.
//!
//! Nothing is shared on the data path. Each reactor owns one [`Metrics`] (behind an `Arc`) and is
//! its only writer, so a counter is a plain `AtomicU64` bumped with a relaxed load and store — no
//! locked read-modify-write. The admin thread reads every reactor's `Metrics` and sums them only
//! when scraped: [`render_prometheus`] for `GET /metrics` (Prometheus text format 0.0.4) and
//! [`render_stats`] for `GET /stats` (JSON). Both are pure functions of the counters.
//!
//! Every family the reactors count is declared once, in page order, in the
//! [`tether_daemon::metric_set!`] below: its field, name, help, labels and `/stats` key. The
//! label values are the [`label_set!`](tether_daemon::label_set) enums ([`CloseReason`],
//! [`SessionEvent`], [`BackendDrop`], [`Refusal`], and the transports' [`TlsHandshake`],
//! [`WsUpgrade`], [`WsClose`]) and the wire's [`ErrorCode`]s
//! ([`ErrorCodes`]). The render functions add what no reactor counts: build info, the
//! acceptors' refusals ([`GatewayInfo`]), the node table, reactors, limits, draining, uptime.
//!
//! A reader may see one counter a few increments ahead of another (relaxed loads of different
//! atomics); every value is exact once the writer is quiet, and derived values (open connections)
//! saturate instead of wrapping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::{json, Map, Value};
pub use tether_daemon::metrics::{Counter, Gauge, Histogram, HistogramSnapshot};
use tether_daemon::metrics::{Derived, Family, FamilySnapshot, LabelSet};
use tether_proto::ErrorCode;

/// Every metric name starts with this.
pub const PREFIX: &str = "tether_gateway_";

tether_daemon::label_set! {
    /// What passed between clients and the state daemon. Used as the `event` label of
    /// `tether_gateway_session_events_total`.
    pub enum SessionEvent: "event" {
        /// LOGIN_OK relayed to a client (login or resume).
        LoginOk = "login_ok",
        /// LOGIN_FAIL relayed to a client as ERROR.
        LoginFailed = "login_failed",
        /// LOGIN or RESUME answered UNAVAILABLE: no link to the state daemon.
        Unavailable = "unavailable",
        /// KICK from the daemon closed a client.
        Kicked = "kicked",
        /// STATE_PUSH delivered to a client as PUSH.
        Push = "push",
        /// A client's ACK passed on to the daemon.
        Ack = "ack",
        /// CLOSED sent for a logged-in connection that closed.
        Closed = "closed",
        /// LOGIN or RESUME refused BUSY: `max_logins_inflight` were at the daemon.
        Busy = "busy",
        /// STATE_PUSH for a connection not logged in: returned to the daemon as UNDELIVERED.
        Undelivered = "undelivered",
    }
}

tether_daemon::label_set! {
    /// Why a client connection closed. Used as the `reason` label of
    /// `tether_gateway_connections_closed_total`.
    pub enum CloseReason: "reason" {
        /// The client closed its side (read returned 0).
        PeerClosed = "peer_closed",
        /// A socket error: reset, broken pipe, …
        Reset = "reset",
        /// ERROR BAD_FRAME sent, then closed.
        BadFrame = "bad_frame",
        /// ERROR FRAME_TOO_LARGE sent, then closed.
        FrameTooLarge = "frame_too_large",
        /// ERROR UNKNOWN_KIND sent, then closed.
        UnknownKind = "unknown_kind",
        /// Login, partial-frame or heartbeat timeout.
        Timeout = "timeout",
        /// Nothing received for `idle_timeout_ms` (ERROR TIMEOUT "idle" sent, then closed).
        Idle = "idle",
        /// The client did not read its replies fast enough.
        SlowConsumer = "slow_consumer",
        /// The gateway was over its connection limit.
        Overloaded = "overloaded",
        /// The gateway drained or stopped.
        Shutdown = "shutdown",
        /// The state daemon kicked the session.
        Kicked = "kicked",
        /// A request arrived before LOGIN.
        NotLoggedIn = "not_logged_in",
        /// LOGIN or RESUME was refused.
        AuthFailed = "auth_failed",
        /// A TLS record or handshake failed (the alert, if any, sent), then closed.
        TlsError = "tls_error",
        /// A WebSocket upgrade was refused (the HTTP status sent), then closed.
        WsRefused = "websocket_refused",
        /// A WebSocket frame broke RFC 6455 or a limit (a close frame with its code sent).
        WsError = "websocket_error",
    }
}

tether_daemon::label_set! {
    /// How a TLS handshake ended. Used as the `result` label of
    /// `tether_gateway_tls_handshakes_total`.
    pub enum TlsHandshake: "result" {
        /// A full handshake (certificate, key exchange).
        Full = "full",
        /// A resumed session (ticket or session id): no certificate signature.
        Resumed = "resumed",
        /// The handshake failed (bad ClientHello, no common version or cipher, …).
        Failed = "failed",
    }
}

tether_daemon::label_set! {
    /// What became of a WebSocket upgrade request. Used as the `result` label of
    /// `tether_gateway_websocket_upgrades_total`: `accepted`, or the HTTP status refused with.
    pub enum WsUpgrade: "result" {
        /// 101 Switching Protocols.
        Accepted = "accepted",
        /// 400: malformed, a field missing or wrong, the `tether.v1` subprotocol not offered.
        BadRequest = "400",
        /// 403: an `Origin` not on `ws_origins`.
        Forbidden = "403",
        /// 404: a path not in `ws_paths`.
        NotFound = "404",
        /// 405: not GET.
        MethodNotAllowed = "405",
        /// 426: not a WebSocket upgrade, or not version 13.
        UpgradeRequired = "426",
        /// 431: the request head passed 8 KiB.
        TooLarge = "431",
    }
}

impl WsUpgrade {
    pub(crate) fn from_status(status: tether_proto::ws::Status) -> WsUpgrade {
        use tether_proto::ws::Status;
        match status {
            Status::BadRequest => WsUpgrade::BadRequest,
            Status::Forbidden => WsUpgrade::Forbidden,
            Status::NotFound => WsUpgrade::NotFound,
            Status::MethodNotAllowed => WsUpgrade::MethodNotAllowed,
            Status::UpgradeRequired => WsUpgrade::UpgradeRequired,
            Status::HeaderFieldsTooLarge => WsUpgrade::TooLarge,
        }
    }
}

tether_daemon::label_set! {
    /// The code of a WebSocket close frame the gateway sent. Used as the `code` label of
    /// `tether_gateway_websocket_closes_total`.
    pub enum WsClose: "code" {
        /// Normal: the client's close echoed.
        Normal = "1000",
        /// Going away: the gateway drains.
        GoingAway = "1001",
        /// Protocol error: a frame broke RFC 6455.
        ProtocolError = "1002",
        /// Unsupported data: a text message.
        UnsupportedData = "1003",
        /// Invalid payload: a close reason that is not UTF-8.
        InvalidPayload = "1007",
        /// Policy violation: after a v1 ERROR that closes.
        PolicyViolation = "1008",
        /// Message too big: past `max_body` (from the frame header).
        MessageTooBig = "1009",
        /// Try again later: OVERLOADED.
        TryAgainLater = "1013",
        /// Any other code (a client's own code echoed).
        Other = "other",
    }
}

impl WsClose {
    pub(crate) fn from_code(code: tether_proto::ws::CloseCode) -> WsClose {
        match code.0 {
            1000 => WsClose::Normal,
            1001 => WsClose::GoingAway,
            1002 => WsClose::ProtocolError,
            1003 => WsClose::UnsupportedData,
            1007 => WsClose::InvalidPayload,
            1008 => WsClose::PolicyViolation,
            1009 => WsClose::MessageTooBig,
            1013 => WsClose::TryAgainLater,
            _ => WsClose::Other,
        }
    }
}

impl CloseReason {
    /// The reason for closing after sending ERROR `code`, or `None` for the codes that answer
    /// one request and leave the connection open (NO_BACKEND, RATE_LIMITED, UNAVAILABLE,
    /// INTERNAL, BUSY, REQUEST_TIMEOUT, FORBIDDEN).
    pub(crate) fn from_error(code: ErrorCode) -> Option<CloseReason> {
        match code {
            ErrorCode::BadFrame => Some(CloseReason::BadFrame),
            ErrorCode::FrameTooLarge => Some(CloseReason::FrameTooLarge),
            ErrorCode::UnknownKind => Some(CloseReason::UnknownKind),
            ErrorCode::NotLoggedIn => Some(CloseReason::NotLoggedIn),
            ErrorCode::AuthFailed => Some(CloseReason::AuthFailed),
            ErrorCode::Overloaded => Some(CloseReason::Overloaded),
            ErrorCode::SlowConsumer => Some(CloseReason::SlowConsumer),
            ErrorCode::Timeout => Some(CloseReason::Timeout),
            ErrorCode::Kicked => Some(CloseReason::Kicked),
            ErrorCode::NoBackend
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::Internal
            | ErrorCode::Busy
            | ErrorCode::RequestTimeout
            | ErrorCode::Forbidden => None,
        }
    }
}

tether_daemon::label_set! {
    /// What passed for rooms. Used as the `event` label of `tether_gateway_room_events_total`.
    pub enum RoomEvent: "event" {
        /// A client's JOIN or LEAVE relayed to the daemon.
        Relayed = "relayed",
        /// A JOIN refused by the daemon, relayed as ERROR.
        Refused = "refused",
        /// A JOIN or LEAVE answered UNAVAILABLE: no link to the state daemon.
        Unavailable = "unavailable",
        /// A window (ROOM_MESSAGE) received from the daemon.
        Window = "window",
        /// A ROOM frame written to a member's output.
        Delivered = "delivered",
        /// A window a member skipped: more than `room_skip_bytes` of it were unwritten.
        Skipped = "skipped",
        /// A node's NODE_PUBLISH relayed to the daemon.
        NodePublish = "node_publish",
        /// A node's NODE_PUBLISH dropped: no state daemon, its link down, or a bad body.
        NodePublishDropped = "node_publish_dropped",
    }
}

tether_daemon::label_set! {
    /// Why a frame from a node was dropped. Used as the `reason` label of
    /// `tether_gateway_backend_dropped_frames_total`.
    pub enum BackendDrop: "reason" {
        /// Undecodable body (e.g. shorter than the route key).
        Malformed = "malformed",
        /// The route key names no reactor/slot this gateway knows.
        UnknownRoute = "unknown_route",
        /// The route key's connection has closed (its slot generation moved on).
        StaleRoute = "stale_route",
        /// A kind a node must not send.
        UnexpectedKind = "unexpected_kind",
    }
}

tether_daemon::label_set! {
    /// Why an acceptor refused a connection. Used as the `reason` label of
    /// `tether_gateway_connections_rejected_total`; counted in [`GatewayInfo`].
    pub enum Refusal: "reason" {
        /// Past `max_connections`: the client got ERROR OVERLOADED.
        Overloaded = "overloaded",
        /// The process was out of file descriptors: closed unanswered.
        OutOfDescriptors = "out_of_descriptors",
    }
}

/// The `code` label of `tether_gateway_errors_total`: every [`ErrorCode`] by its wire name,
/// in code order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorCodes {}

impl LabelSet for ErrorCodes {
    type Label = ErrorCode;
    const NAME: &'static str = "code";
    const ALL: &'static [ErrorCode] = &ErrorCode::ALL;
    type Array<T> = [T; ErrorCode::ALL.len()];

    fn array<T>(f: impl FnMut(usize) -> T) -> [T; ErrorCode::ALL.len()] {
        std::array::from_fn(f)
    }

    /// `ErrorCode::ALL` lists the codes in order from 1, so a code's index is its value − 1.
    #[inline]
    fn index(code: ErrorCode) -> usize {
        usize::from(code.as_u16()) - 1
    }

    fn label(code: ErrorCode) -> &'static str {
        code.name()
    }
}

tether_daemon::buckets! {
    /// Upper bounds of the request-latency buckets, in microseconds (what the data path
    /// records): 50 µs … 5 s, printed in seconds; `+Inf` is implicit.
    pub enum LatencyUs: Micros = [
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000,
    ];
}

/// What the admin endpoints report about one node, as seen by one reactor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// The node's address as configured, e.g. `127.0.0.1:8890`.
    pub addr: String,
    /// Health checks pass: the reactor routes requests to it.
    pub up: bool,
    /// The reactor's backend connection to it is established.
    pub connected: bool,
    /// Requests sent to it and not yet answered.
    pub outstanding: u64,
    /// REQUEST frames this reactor has sent it (retries included), as a running total.
    pub requests: u64,
}

tether_daemon::metric_set! {
    /// One reactor's metrics. The reactor is the only writer; the admin thread reads.
    ///
    /// Aligned to 128 bytes (two cache lines, the adjacent-line prefetch unit) so that two
    /// reactors' counters never share a line, nor share one with the `Arc` reference counts.
    #[derive(Debug)]
    #[repr(align(128))]
    pub struct Metrics;

    /// The counters of one [`Metrics`] at one moment, or summed over several reactors.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Snapshot, derived by Metrics::fill_derived;

    families {
        /// Nothing stored: a snapshot works it out ([`Metrics::open`]); summed over reactors.
        open: Derived<Gauge>
            => "connections_open", "Client connections currently open.", json "open";
        /// Connections handed to this reactor.
        pub accepted: Counter
            => "connections_accepted_total", "Client connections handed to a reactor.",
               json "accepted";
        /// Connections closed, by [`CloseReason`]; write with [`Metrics::close`], read with
        /// [`Metrics::closed`].
        pub closed: Family<CloseReason>
            => "connections_closed_total", "Client connections closed, by reason.",
               json "closed";
        /// Counted by the acceptors, in [`GatewayInfo`]; [`render_prometheus`] fills it in.
        rejected: Derived<Family<Refusal>>
            => "connections_rejected_total", "Client connections refused at accept, by reason.";
        /// Frames received from clients.
        pub frames_in: Counter
            => "frames_received_total", "Frames received from clients.", json "frames_in";
        /// Frames sent to clients.
        pub frames_out: Counter
            => "frames_sent_total", "Frames sent to clients.", json "frames_out";
        /// Bytes received from clients.
        pub bytes_in: Counter
            => "received_bytes_total", "Bytes received from clients.", json "bytes_in";
        /// Bytes sent to clients.
        pub bytes_out: Counter
            => "sent_bytes_total", "Bytes sent to clients.", json "bytes_out";
        /// 1 while this reactor's link to the state daemon is up (0 without `--state`).
        pub state_link_up: Gauge
            => "state_links_up",
               "Reactors whose link to the state daemon is up (one link per reactor).";
        /// By [`SessionEvent`]; write with [`Metrics::session`].
        pub sessions: Family<SessionEvent>
            => "session_events_total",
               "Logins, kicks, pushes and acks passed between clients and the state daemon.";
        /// By [`RoomEvent`]; write with [`Metrics::room`].
        pub rooms: Family<RoomEvent>
            => "room_events_total",
               "Joins, windows, deliveries and skips of rooms.";
        /// REQUEST frames sent to nodes (retries included).
        pub backend_requests: Counter
            => "backend_requests_total", "REQUEST frames sent to nodes, retries included.",
               json "backend_requests";
        /// RESPONSE/NODE_ERROR frames matched to a client.
        pub backend_responses: Counter
            => "backend_responses_total",
               "RESPONSE and NODE_ERROR frames from nodes matched to a client.",
               json "backend_responses";
        /// Requests re-sent after their node failed.
        pub retries: Counter
            => "backend_retries_total",
               "Requests re-sent to another node after their node failed.", json "retries";
        /// ERROR frames sent to clients, by code; write with [`Metrics::error`].
        pub errors: Family<ErrorCodes>
            => "errors_total", "ERROR frames sent to clients, by code.", json "errors";
        /// Frames from nodes dropped, by [`BackendDrop`]; write with [`Metrics::drop_backend`].
        pub backend_dropped: Family<BackendDrop>
            => "backend_dropped_frames_total", "Frames from nodes dropped, by reason.",
               json "backend_dropped";
        /// TLS handshakes, by [`TlsHandshake`]; write with [`Metrics::tls`].
        pub tls_handshakes: Family<TlsHandshake>
            => "tls_handshakes_total", "TLS handshakes on client listeners, by result.",
               json "tls_handshakes";
        /// Handshake reads put off to the next loop iteration (`tls_handshakes_per_loop`).
        pub tls_deferred: Counter
            => "tls_handshakes_deferred_total",
               "TLS handshake reads deferred to the next loop iteration by the per-loop cap.",
               json "tls_deferred";
        /// WebSocket upgrades, by [`WsUpgrade`]; write with [`Metrics::ws_upgrade`].
        pub ws_upgrades: Family<WsUpgrade>
            => "websocket_upgrades_total",
               "WebSocket upgrade requests, accepted or refused with an HTTP status.",
               json "ws_upgrades";
        /// WebSocket close frames sent, by [`WsClose`]; write with [`Metrics::ws_close`].
        pub ws_closes: Family<WsClose>
            => "websocket_closes_total", "WebSocket close frames sent to clients, by code.",
               json "ws_closes";
        /// Client DATA in → reply out: request latency through the gateway.
        pub latency: Histogram<LatencyUs>
            => "request_duration_seconds",
               "Request latency through the gateway: client DATA in to reply out.",
               json "requests";
    }

    unexported {
        /// Timer ticks run (one per 50 ms): the systemd watchdog pings only while every
        /// reactor's count moves.
        pub ticks: Counter,
        /// Replaced by the reactor on health changes only (rare), never per frame.
        nodes: Mutex<Vec<NodeStatus>>,
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts `n` room events.
    #[inline]
    pub fn room(&self, event: RoomEvent, n: u64) {
        self.rooms.add(event, n);
    }

    /// Counts one session event.
    #[inline]
    pub fn session(&self, event: SessionEvent) {
        self.sessions.inc(event);
    }

    /// Counts one connection closed for `reason`.
    #[inline]
    pub fn close(&self, reason: CloseReason) {
        self.closed.inc(reason);
    }

    /// Counts one TLS handshake that ended as `result`.
    #[inline]
    pub fn tls(&self, result: TlsHandshake) {
        self.tls_handshakes.inc(result);
    }

    /// Counts one WebSocket upgrade request.
    #[inline]
    pub fn ws_upgrade(&self, result: WsUpgrade) {
        self.ws_upgrades.inc(result);
    }

    /// Counts one WebSocket close frame sent.
    #[inline]
    pub fn ws_close(&self, code: tether_proto::ws::CloseCode) {
        self.ws_closes.inc(WsClose::from_code(code));
    }

    /// Connections closed for `reason` so far.
    #[cfg(test)]
    pub(crate) fn closed(&self, reason: CloseReason) -> u64 {
        self.closed.value(reason)
    }

    /// Counts one ERROR frame with `code` sent to a client.
    #[inline]
    pub fn error(&self, code: ErrorCode) {
        self.errors.inc(code);
    }

    /// ERROR frames with `code` sent so far.
    #[cfg(test)]
    pub(crate) fn errors_sent(&self, code: ErrorCode) -> u64 {
        self.errors.value(code)
    }

    /// Counts one frame from a node dropped for `why`.
    #[inline]
    pub fn drop_backend(&self, why: BackendDrop) {
        self.backend_dropped.inc(why);
    }

    /// Frames from nodes dropped for `why` so far.
    #[cfg(test)]
    pub(crate) fn backend_dropped(&self, why: BackendDrop) -> u64 {
        self.backend_dropped.value(why)
    }

    /// Replaces this reactor's view of the nodes. Call on health changes only, never per frame.
    pub fn set_nodes(&self, nodes: Vec<NodeStatus>) {
        *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = nodes;
    }

    /// A copy of this reactor's view of the nodes.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections open on this reactor: accepted − closed, saturating at 0.
    pub fn open(&self) -> u64 {
        // Closed first: the writer counts a connection's accept before its close, so reading
        // closed before accepted keeps the difference from going negative on a quiet writer.
        let closed = self.closed.total();
        self.accepted.get().saturating_sub(closed)
    }

    /// The snapshot's [`Derived`] entry a reactor can work out: its open connections.
    fn fill_derived(&self, snapshot: &mut Snapshot) {
        snapshot.open = self.open();
    }
}

impl Snapshot {
    /// The sum of every reactor's counters.
    pub fn sum(reactors: &[Arc<Metrics>]) -> Snapshot {
        reactors.iter().map(|m| m.snapshot()).sum()
    }
}

/// Process-wide facts the admin endpoints also report.
#[derive(Debug)]
pub struct GatewayInfo {
    /// Crate version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// Client listen addresses.
    pub listen: Vec<String>,
    /// Number of reactor threads.
    pub reactors: usize,
    /// When the gateway started; uptime is measured from here.
    pub started: Instant,
    /// Set once draining starts (SIGTERM): /healthz answers 503.
    pub draining: AtomicBool,
    /// Current connection limit (may change on SIGHUP).
    pub max_connections: AtomicU64,
    /// Connections refused with OVERLOADED at accept (past `max_connections`). Acceptor
    /// threads are several writers: bump with [`Counter::inc_shared`], not `inc`.
    pub rejected_at_accept: Counter,
    /// Connections taken off the listen queue and closed at once because the process was out
    /// of file descriptors (EMFILE/ENFILE). Bumped like `rejected_at_accept`.
    pub shed_out_of_descriptors: Counter,
}

impl GatewayInfo {
    /// Info with `draining` false and no rejections, started now.
    pub fn new(
        version: &'static str,
        listen: Vec<String>,
        reactors: usize,
        max_connections: u64,
    ) -> GatewayInfo {
        GatewayInfo {
            version,
            listen,
            reactors,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            max_connections: AtomicU64::new(max_connections),
            rejected_at_accept: Counter::default(),
            shed_out_of_descriptors: Counter::default(),
        }
    }

    /// The acceptors' refusals, by [`Refusal`].
    pub fn refusals(&self) -> FamilySnapshot<Refusal> {
        FamilySnapshot::from_fn(|why| match why {
            Refusal::Overloaded => self.rejected_at_accept.get(),
            Refusal::OutOfDescriptors => self.shed_out_of_descriptors.get(),
        })
    }
}

/// One node as seen by all reactors together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSummary {
    pub addr: String,
    /// Reactors that see it up.
    pub up_reactors: usize,
    /// Reactors connected to it.
    pub connected_reactors: usize,
    /// Outstanding requests, summed over reactors.
    pub outstanding: u64,
    /// REQUEST frames sent to it, summed over reactors.
    pub requests: u64,
    /// Up on every reactor (a reactor that does not list the node does not see it up).
    pub up: bool,
}

/// Every node any reactor lists, in order of first appearance (reactor 0's order first).
pub(crate) fn summarize_nodes(reactors: &[Arc<Metrics>]) -> Vec<NodeSummary> {
    let mut out: Vec<NodeSummary> = Vec::new();
    for m in reactors {
        for n in m.nodes() {
            let i = match out.iter().position(|s| s.addr == n.addr) {
                Some(i) => i,
                None => {
                    out.push(NodeSummary {
                        addr: n.addr.clone(),
                        up_reactors: 0,
                        connected_reactors: 0,
                        outstanding: 0,
                        requests: 0,
                        up: false,
                    });
                    out.len() - 1
                }
            };
            let s = &mut out[i];
            s.up_reactors += usize::from(n.up);
            s.connected_reactors += usize::from(n.connected);
            s.outstanding = s.outstanding.wrapping_add(n.outstanding);
            s.requests = s.requests.wrapping_add(n.requests);
        }
    }
    for s in &mut out {
        s.up = s.up_reactors == reactors.len();
    }
    out
}

/// The node families: name, type, help, and each node's value.
type NodeFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NodeSummary) -> u64,
);

const NODE_FAMILIES: [NodeFamily; 4] = [
    (
        "node_up",
        "gauge",
        "1 if every reactor sees the node up (health checks pass), else 0.",
        |n| u64::from(n.up),
    ),
    (
        "node_up_reactors",
        "gauge",
        "Number of reactors that see the node up.",
        |n| n.up_reactors as u64,
    ),
    (
        "node_outstanding",
        "gauge",
        "Requests sent to the node and not yet answered, summed over reactors.",
        |n| n.outstanding,
    ),
    (
        "node_requests_total",
        "counter",
        "REQUEST frames sent to the node, retries included, summed over reactors.",
        |n| n.requests,
    ),
];

/// The Prometheus text exposition (format 0.0.4) of every reactor's metrics summed, plus the
/// process-wide facts in `info`.
pub fn render_prometheus(reactors: &[Arc<Metrics>], info: &GatewayInfo) -> String {
    let mut t = Snapshot::sum(reactors);
    t.rejected = info.refusals();
    let nodes = summarize_nodes(reactors);
    let mut p = tether_daemon::prometheus::Text::new(PREFIX, 8 * 1024);

    p.build_info(info.version);
    t.write_prometheus(&mut p);
    for (name, kind, help, value) in NODE_FAMILIES {
        p.header(name, kind, help);
        for n in &nodes {
            p.sample(name, &[("node", &n.addr)], value(n));
        }
    }
    p.single(
        "reactors",
        "gauge",
        "Number of reactor threads.",
        info.reactors,
    );
    p.single(
        "max_connections",
        "gauge",
        "Configured limit on open client connections.",
        info.max_connections.load(Relaxed),
    );
    p.single(
        "draining",
        "gauge",
        "1 while the gateway is draining, else 0.",
        u8::from(info.draining.load(Relaxed)),
    );
    p.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        info.started.elapsed().as_secs_f64(),
    );
    p.finish()
}

/// A snapshot's entries with a `/stats` key, each with its total.
fn totals_json(s: &Snapshot) -> Map<String, Value> {
    s.totals()
        .into_iter()
        .map(|(key, n)| (key.to_string(), Value::from(n)))
        .collect()
}

/// The same numbers as [`render_prometheus`], as JSON for humans and scripts (`GET /stats`).
///
/// `reactors[i]` and `totals` hold every family with a `/stats` key (a family's total over
/// its labels, the latency histogram's count as `requests`); the labelled ones are also given
/// by label at the top level (`closed`, `errors`, `backend_dropped`).
///
/// Latency quantiles are estimated from the histogram: the upper bound (µs) of the bucket that
/// holds the quantile; `null` when nothing was recorded or when the quantile is above the
/// largest bound.
pub fn render_stats(reactors: &[Arc<Metrics>], info: &GatewayInfo) -> Value {
    let per_reactor: Vec<Snapshot> = reactors.iter().map(|m| m.snapshot()).collect();
    let t: Snapshot = per_reactor.iter().cloned().sum();

    let reactors_json: Vec<Value> = per_reactor
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let mut reactor = totals_json(s);
            reactor.insert("index".into(), Value::from(index));
            Value::Object(reactor)
        })
        .collect();
    let mut totals = totals_json(&t);
    totals.insert(
        "rejected_at_accept".into(),
        Value::from(info.rejected_at_accept.get()),
    );
    totals.insert(
        "shed_out_of_descriptors".into(),
        Value::from(info.shed_out_of_descriptors.get()),
    );
    let nodes: Vec<Value> = summarize_nodes(reactors)
        .into_iter()
        .map(|n| {
            json!({
                "addr": n.addr,
                "up": n.up,
                "up_reactors": n.up_reactors,
                "connected_reactors": n.connected_reactors,
                "outstanding": n.outstanding,
                "requests": n.requests,
            })
        })
        .collect();

    let lat = &t.latency;
    let mut page = json!({
        "version": info.version,
        "listen": info.listen,
        "uptime_s": info.started.elapsed().as_secs_f64(),
        "draining": info.draining.load(Relaxed),
        "max_connections": info.max_connections.load(Relaxed),
        "reactors": reactors_json,
        "totals": totals,
        "nodes": nodes,
        "latency_us": {
            "count": lat.count(),
            "mean": if lat.count() == 0 { Value::Null } else { Value::from(lat.sum() / lat.count()) },
            "p50": lat.quantile(0.50),
            "p90": lat.quantile(0.90),
            "p99": lat.quantile(0.99),
            "p999": lat.quantile(0.999),
        },
    });
    for (key, by_label) in t.by_label() {
        let by_label: Map<String, Value> = by_label
            .into_iter()
            .map(|(label, n)| (label.to_string(), Value::from(n)))
            .collect();
        page[key] = Value::Object(by_label);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_daemon::metrics::{Buckets, Metric};

    fn info() -> GatewayInfo {
        GatewayInfo::new("0.1.0", vec!["0.0.0.0:8900".into()], 2, 1000)
    }

    fn node(addr: &str, up: bool, outstanding: u64) -> NodeStatus {
        NodeStatus {
            addr: addr.into(),
            up,
            connected: up,
            outstanding,
            requests: 0,
        }
    }

    /// Two reactors with known counts.
    fn two() -> Vec<Arc<Metrics>> {
        let a = Arc::new(Metrics::new());
        let b = Arc::new(Metrics::new());
        a.accepted.add(5);
        b.accepted.add(3);
        a.close(CloseReason::PeerClosed);
        b.close(CloseReason::PeerClosed);
        b.close(CloseReason::BadFrame);
        a.frames_in.add(10);
        b.frames_in.add(7);
        a.bytes_out.add(1000);
        b.bytes_out.add(24);
        a.error(ErrorCode::NoBackend);
        b.error(ErrorCode::NoBackend);
        b.error(ErrorCode::BadFrame);
        a.drop_backend(BackendDrop::StaleRoute);
        a.latency.record_us(40); // 0.00005 bucket
        a.latency.record_us(50); // 0.00005 bucket (le is inclusive)
        b.latency.record_us(51); // 0.0001 bucket
        b.latency.record_us(3_000); // 0.005 bucket
        b.latency.record_us(9_000_000); // +Inf
        a.set_nodes(vec![
            node("127.0.0.1:8890", true, 2),
            node("127.0.0.1:8891", true, 0),
        ]);
        b.set_nodes(vec![
            node("127.0.0.1:8890", true, 1),
            node("127.0.0.1:8891", false, 0),
        ]);
        vec![a, b]
    }

    /// `name{labels} value` → value, for the one sample with exactly this name and labels.
    fn value(text: &str, series: &str) -> f64 {
        tether_daemon::prometheus::read_sample(text, series)
            .unwrap_or_else(|| panic!("{series} is not exactly one sample in\n{text}"))
    }

    #[test]
    fn metrics_is_cache_line_isolated() {
        assert_eq!(std::mem::align_of::<Metrics>(), 128);
        assert_eq!(std::mem::size_of::<Metrics>() % 128, 0);
    }

    #[test]
    fn bucket_bounds_agree() {
        assert_eq!(LatencyUs::SLOTS, LatencyUs::BOUNDS.len() + 1);
        for (i, &us) in LatencyUs::BOUNDS.iter().enumerate() {
            let s: f64 = LatencyUs::le(i).parse().unwrap();
            assert_eq!((s * 1e6).round() as u64, us);
        }
        assert!(LatencyUs::BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn close_reasons_and_errors() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, d) in BackendDrop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        // Exactly the codes that close map to a reason, and the labels match the code names.
        for code in ErrorCode::ALL {
            let reason = CloseReason::from_error(code);
            assert_eq!(reason.is_some(), code.closes_connection(), "{code:?}");
            if let Some(r) = reason {
                assert_eq!(r.label(), code.name().to_ascii_lowercase());
            }
        }
        let m = Metrics::new();
        m.accepted.add(2);
        m.close(CloseReason::Kicked);
        m.close(CloseReason::Kicked);
        m.close(CloseReason::Kicked); // more closes than accepts: open saturates
        assert_eq!(m.closed(CloseReason::Kicked), 3);
        assert_eq!(m.open(), 0);
        m.error(ErrorCode::Internal);
        assert_eq!(m.errors_sent(ErrorCode::Internal), 1);
        assert_eq!(m.errors.get(ErrorCode::Internal).get(), 1);
        // A code's slot is its place in ErrorCode::ALL.
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(ErrorCodes::index(code), i, "{code:?}");
        }
        m.drop_backend(BackendDrop::Malformed);
        assert_eq!(m.backend_dropped(BackendDrop::Malformed), 1);
    }

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::<LatencyUs>::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..90 {
            h.record_us(80); // 100 µs bucket
        }
        for _ in 0..9 {
            h.record_us(700); // 1 ms bucket
        }
        h.record_us(6_000_000); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.quantile(0.5), Some(100));
        assert_eq!(s.quantile(0.9), Some(100));
        assert_eq!(s.quantile(0.99), Some(1_000));
        assert_eq!(s.quantile(0.999), None);
        assert_eq!(s.sum(), 90 * 80 + 9 * 700 + 6_000_000);
        h.record_us(0);
        assert_eq!(h.snapshot().counts()[0], 1);
    }

    #[test]
    fn prometheus_sums_over_reactors() {
        let r = two();
        let info = info();
        info.rejected_at_accept.add_shared(4);
        info.shed_out_of_descriptors.add_shared(3);
        let text = render_prometheus(&r, &info);
        assert_eq!(
            value(&text, "tether_gateway_connections_accepted_total"),
            8.0
        );
        assert_eq!(value(&text, "tether_gateway_connections_open"), 5.0);
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_connections_closed_total{reason="peer_closed"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_connections_closed_total{reason="bad_frame"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_connections_rejected_total{reason="overloaded"}"#
            ),
            4.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_connections_rejected_total{reason="out_of_descriptors"}"#
            ),
            3.0
        );
        assert_eq!(value(&text, "tether_gateway_frames_received_total"), 17.0);
        assert_eq!(value(&text, "tether_gateway_sent_bytes_total"), 1024.0);
        assert_eq!(
            value(&text, r#"tether_gateway_errors_total{code="NO_BACKEND"}"#),
            2.0
        );
        assert_eq!(
            value(&text, r#"tether_gateway_errors_total{code="BAD_FRAME"}"#),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_backend_dropped_frames_total{reason="stale_route"}"#
            ),
            1.0
        );
        assert_eq!(value(&text, "tether_gateway_reactors"), 2.0);
        assert_eq!(value(&text, "tether_gateway_max_connections"), 1000.0);
        assert_eq!(value(&text, "tether_gateway_draining"), 0.0);
        assert!(value(&text, "tether_gateway_uptime_seconds") >= 0.0);
    }

    #[test]
    fn prometheus_every_reason_and_code_present() {
        let r = vec![Arc::new(Metrics::new())];
        let text = render_prometheus(&r, &info());
        for reason in CloseReason::ALL {
            let series = format!(
                "tether_gateway_connections_closed_total{{reason=\"{}\"}}",
                reason.label()
            );
            assert_eq!(value(&text, &series), 0.0);
        }
        for code in ErrorCode::ALL {
            let series = format!("tether_gateway_errors_total{{code=\"{}\"}}", code.name());
            assert_eq!(value(&text, &series), 0.0);
        }
        for d in BackendDrop::ALL {
            let series = format!(
                "tether_gateway_backend_dropped_frames_total{{reason=\"{}\"}}",
                d.label()
            );
            assert_eq!(value(&text, &series), 0.0);
        }
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_request_duration_seconds_bucket{le="+Inf"}"#
            ),
            0.0
        );
        assert_eq!(
            value(&text, "tether_gateway_request_duration_seconds_count"),
            0.0
        );
    }

    #[test]
    fn prometheus_histogram_is_cumulative() {
        let text = render_prometheus(&two(), &info());
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with("tether_gateway_request_duration_seconds_bucket{"))
            .map(|l| {
                let (series, v) = l.rsplit_once(' ').unwrap();
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches("\"}")
                    .to_string();
                (le, v.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), LatencyUs::BOUNDS.len() + 1);
        for ((le, _), bound) in buckets.iter().zip(LatencyUs::BOUNDS) {
            assert_eq!(le.parse::<f64>().unwrap(), *bound as f64 / 1e6);
        }
        assert_eq!(buckets.last().unwrap().0, "+Inf");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(buckets[0].1, 2.0); // 40 and 50 µs
        assert_eq!(buckets[1].1, 3.0); // + 51 µs
        assert_eq!(buckets[6].1, 4.0); // + 3 ms in le=0.005
        assert_eq!(buckets[15].1, 4.0); // le=5
        assert_eq!(buckets[16].1, 5.0); // +Inf
        assert_eq!(
            value(&text, "tether_gateway_request_duration_seconds_count"),
            5.0
        );
        let sum = value(&text, "tether_gateway_request_duration_seconds_sum");
        assert!((sum - 9.003141).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn prometheus_node_up_needs_every_reactor() {
        let text = render_prometheus(&two(), &info());
        assert_eq!(
            value(&text, r#"tether_gateway_node_up{node="127.0.0.1:8890"}"#),
            1.0
        );
        assert_eq!(
            value(&text, r#"tether_gateway_node_up{node="127.0.0.1:8891"}"#),
            0.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_node_up_reactors{node="127.0.0.1:8890"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_node_up_reactors{node="127.0.0.1:8891"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"tether_gateway_node_outstanding{node="127.0.0.1:8890"}"#
            ),
            3.0
        );

        // A node only one of two reactors lists is not up everywhere.
        let r = two();
        r[0].set_nodes(vec![node("10.0.0.9:1", true, 0)]);
        let text = render_prometheus(&r, &info());
        assert_eq!(
            value(&text, r#"tether_gateway_node_up{node="10.0.0.9:1"}"#),
            0.0
        );
    }

    /// Every non-comment line is `name{labels} value` or `name value`, every family has HELP
    /// and TYPE before its samples, and names are prefixed.
    #[test]
    fn prometheus_text_format() {
        let r = two();
        r[1].set_nodes(vec![node("weird\"host\\\n:1", true, 0)]);
        let text = render_prometheus(&r, &info());
        assert!(text.ends_with('\n'));
        let mut typed: Vec<String> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!helped.iter().any(|n| n == name), "HELP twice: {name}");
                helped.push(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap().to_string();
                let kind = it.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                assert!(helped.last() == Some(&name), "TYPE without HELP: {line}");
                typed.push(name);
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (series, v) = line.rsplit_once(' ').expect(line);
            assert!(v.parse::<f64>().is_ok() || v == "+Inf", "{line}");
            let name = match series.find('{') {
                Some(i) => {
                    let labels = &series[i..];
                    assert!(labels.ends_with('}'), "{line}");
                    assert!(labels.len() >= 2);
                    for pair in split_labels(&labels[1..labels.len() - 1]) {
                        let (k, val) = pair.split_once('=').expect(line);
                        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                        assert!(val.starts_with('"') && val.ends_with('"') && val.len() >= 2);
                    }
                    &series[..i]
                }
                None => series,
            };
            assert!(name.starts_with(PREFIX), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let family = typed.last().expect("sample before any TYPE");
            assert!(
                name == family
                    || name
                        .strip_prefix(family.as_str())
                        .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) }),
                "{name} under {family}"
            );
        }
        assert!(text.contains(r#"node="weird\"host\\\n:1""#));
    }

    /// Splits `a="x",b="y"` on commas outside quotes (honouring backslash escapes).
    fn split_labels(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        assert!(!quoted);
        out.push(&s[start..]);
        out
    }

    #[test]
    fn stats_json() {
        let r = two();
        let info = info();
        info.draining.store(true, Relaxed);
        let v = render_stats(&r, &info);
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(v["draining"], true);
        assert!(v["uptime_s"].as_f64().unwrap() >= 0.0);
        assert_eq!(v["reactors"].as_array().unwrap().len(), 2);
        assert_eq!(v["reactors"][0]["index"], 0);
        assert_eq!(v["reactors"][0]["open"], 4);
        assert_eq!(v["reactors"][0]["accepted"], 5);
        assert_eq!(v["reactors"][1]["open"], 1);
        assert_eq!(v["reactors"][1]["accepted"], 3);
        assert_eq!(v["totals"]["open"], 5);
        assert_eq!(v["totals"]["accepted"], 8);
        assert_eq!(v["totals"]["closed"], 3);
        assert_eq!(v["totals"]["frames_in"], 17);
        assert_eq!(v["totals"]["bytes_out"], 1024);
        assert_eq!(v["totals"]["errors"], 3);
        assert_eq!(v["closed"]["peer_closed"], 2);
        assert_eq!(
            v["closed"].as_object().unwrap().len(),
            CloseReason::ALL.len()
        );
        assert_eq!(v["closed"]["idle"], 0);
        assert_eq!(v["errors"]["NO_BACKEND"], 2);
        assert_eq!(v["errors"]["KICKED"], 0);
        assert_eq!(v["errors"].as_object().unwrap().len(), ErrorCode::ALL.len());
        assert_eq!(v["backend_dropped"]["stale_route"], 1);
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["addr"], "127.0.0.1:8890");
        assert_eq!(nodes[0]["up"], true);
        assert_eq!(nodes[0]["up_reactors"], 2);
        assert_eq!(nodes[0]["connected_reactors"], 2);
        assert_eq!(nodes[0]["outstanding"], 3);
        assert_eq!(nodes[1]["up"], false);
        assert_eq!(nodes[1]["up_reactors"], 1);
        // 5 observations: 50, 50, 100, 5000 µs buckets and one above 5 s.
        assert_eq!(v["latency_us"]["count"], 5);
        assert_eq!(v["latency_us"]["p50"], 100);
        assert_eq!(v["latency_us"]["p90"], Value::Null);
        let empty = render_stats(&[Arc::new(Metrics::new())], &info);
        assert_eq!(empty["latency_us"]["p50"], Value::Null);
        assert_eq!(empty["nodes"].as_array().unwrap().len(), 0);
    }
}
