//! Gateway metrics: per-reactor counters, and their rendering for the admin listener.
//!
//! Nothing is shared on the data path. Each reactor owns one [`Metrics`] (behind an `Arc`) and is
//! its only writer, so a counter is a plain `AtomicU64` bumped with a relaxed load and store — no
//! locked read-modify-write. The admin thread reads every reactor's `Metrics` and sums them only
//! when scraped: [`render_prometheus`] for `GET /metrics` (Prometheus text format 0.0.4) and
//! [`render_stats`] for `GET /stats` (JSON). Both are pure functions of the counters.
//!
//! A reader may see one counter a few increments ahead of another (relaxed loads of different
//! atomics); every value is exact once the writer is quiet, and derived values (open connections)
//! saturate instead of wrapping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::{json, Map, Value};
use tether_proto::ErrorCode;

/// Every metric name starts with this.
pub const PREFIX: &str = "tether_gateway_";

/// A counter with one writer (its reactor) and any number of readers.
///
/// `inc` and `add` are a relaxed load and store: cheap, and correct only while a single thread
/// writes. A counter written by several threads must use [`Counter::inc_shared`] /
/// [`Counter::add_shared`].
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Single writer only.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping). Single writer only.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one with an atomic read-modify-write; see [`Counter::add_shared`].
    #[inline]
    pub fn inc_shared(&self) {
        self.add_shared(1);
    }

    /// Adds `n` with an atomic read-modify-write, for a counter that several threads write
    /// (e.g. [`GatewayInfo::rejected_at_accept`], bumped by every acceptor thread).
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// What passed between clients and the state daemon. Used as the `event` label of
/// `tether_gateway_session_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// LOGIN_OK relayed to a client (login or resume).
    LoginOk,
    /// LOGIN_FAIL relayed to a client as ERROR.
    LoginFailed,
    /// LOGIN or RESUME answered UNAVAILABLE: no link to the state daemon.
    Unavailable,
    /// KICK from the daemon closed a client.
    Kicked,
    /// STATE_PUSH delivered to a client as PUSH.
    Push,
    /// A client's ACK passed on to the daemon.
    Ack,
    /// CLOSED sent for a logged-in connection that closed.
    Closed,
}

impl SessionEvent {
    pub const ALL: [SessionEvent; 7] = [
        SessionEvent::LoginOk,
        SessionEvent::LoginFailed,
        SessionEvent::Unavailable,
        SessionEvent::Kicked,
        SessionEvent::Push,
        SessionEvent::Ack,
        SessionEvent::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SessionEvent::LoginOk => "login_ok",
            SessionEvent::LoginFailed => "login_failed",
            SessionEvent::Unavailable => "unavailable",
            SessionEvent::Kicked => "kicked",
            SessionEvent::Push => "push",
            SessionEvent::Ack => "ack",
            SessionEvent::Closed => "closed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a client connection closed. Used as the `reason` label of
/// `tether_gateway_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its side (read returned 0).
    PeerClosed,
    /// A socket error: reset, broken pipe, …
    Reset,
    /// ERROR BAD_FRAME sent, then closed.
    BadFrame,
    /// ERROR FRAME_TOO_LARGE sent, then closed.
    FrameTooLarge,
    /// ERROR UNKNOWN_KIND sent, then closed.
    UnknownKind,
    /// Login, partial-frame or heartbeat timeout.
    Timeout,
    /// Nothing received for `idle_timeout_ms` (ERROR TIMEOUT "idle" sent, then closed).
    Idle,
    /// The client did not read its replies fast enough.
    SlowConsumer,
    /// The gateway was over its connection limit.
    Overloaded,
    /// The gateway drained or stopped.
    Shutdown,
    /// The state daemon kicked the session.
    Kicked,
    /// A request arrived before LOGIN.
    NotLoggedIn,
    /// LOGIN or RESUME was refused.
    AuthFailed,
}

impl CloseReason {
    /// Every reason; a reason's position here is its index in [`Metrics::closed`].
    pub const ALL: [CloseReason; 13] = [
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::BadFrame,
        CloseReason::FrameTooLarge,
        CloseReason::UnknownKind,
        CloseReason::Timeout,
        CloseReason::Idle,
        CloseReason::SlowConsumer,
        CloseReason::Overloaded,
        CloseReason::Shutdown,
        CloseReason::Kicked,
        CloseReason::NotLoggedIn,
        CloseReason::AuthFailed,
    ];

    /// The `reason` label value (snake_case).
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Reset => "reset",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::UnknownKind => "unknown_kind",
            CloseReason::Timeout => "timeout",
            CloseReason::Idle => "idle",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Overloaded => "overloaded",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Kicked => "kicked",
            CloseReason::NotLoggedIn => "not_logged_in",
            CloseReason::AuthFailed => "auth_failed",
        }
    }

    /// The reason for closing after sending ERROR `code`, or `None` for the codes that answer
    /// one request and leave the connection open (NO_BACKEND, RATE_LIMITED, UNAVAILABLE,
    /// INTERNAL).
    pub fn from_error(code: ErrorCode) -> Option<CloseReason> {
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
            | ErrorCode::Internal => None,
        }
    }

    /// Position in [`CloseReason::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a frame from a node was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendDrop {
    /// Undecodable body (e.g. shorter than the route key).
    Malformed,
    /// The route key names no reactor/slot this gateway knows.
    UnknownRoute,
    /// The route key's connection has closed (its slot generation moved on).
    StaleRoute,
    /// A kind a node must not send.
    UnexpectedKind,
}

impl BackendDrop {
    /// Every reason; a reason's position here is its index in [`Metrics::backend_dropped`].
    pub const ALL: [BackendDrop; 4] = [
        BackendDrop::Malformed,
        BackendDrop::UnknownRoute,
        BackendDrop::StaleRoute,
        BackendDrop::UnexpectedKind,
    ];

    /// The `reason` label value (snake_case).
    pub fn label(self) -> &'static str {
        match self {
            BackendDrop::Malformed => "malformed",
            BackendDrop::UnknownRoute => "unknown_route",
            BackendDrop::StaleRoute => "stale_route",
            BackendDrop::UnexpectedKind => "unexpected_kind",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// [`LATENCY_BUCKETS_S`] in microseconds, which is what the data path records.
const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Number of histogram slots: one per finite bucket plus the `+Inf` overflow.
const HISTOGRAM_SLOTS: usize = LATENCY_BUCKETS_US.len() + 1;

/// A latency histogram with fixed, explicit buckets (upper bounds in [`LATENCY_BUCKETS_S`]),
/// single writer. Slots hold per-bucket (not cumulative) counts; the count is their sum, so a
/// scrape's `_count` always equals its `+Inf` bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    slots: [Counter; HISTOGRAM_SLOTS],
    sum_us: Counter,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one observation of `us` microseconds. Single writer only.
    #[inline]
    pub fn record_us(&self, us: u64) {
        // First bucket whose upper bound is >= us (Prometheus `le`); len() means +Inf.
        let slot = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.slots[slot].inc();
        self.sum_us.add(us);
    }

    /// A copy of the current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            slots: std::array::from_fn(|i| self.slots[i].get()),
            sum_us: self.sum_us.get(),
        }
    }
}

/// The counts of a [`Histogram`] at one moment, or summed over several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket (non-cumulative) counts; the last slot is the `+Inf` overflow.
    pub slots: [u64; HISTOGRAM_SLOTS],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, &n| a.wrapping_add(n))
    }

    /// Cumulative counts, one per bucket of [`LATENCY_BUCKETS_S`] then `+Inf`.
    pub fn cumulative(&self) -> [u64; HISTOGRAM_SLOTS] {
        let mut acc = 0u64;
        self.slots.map(|n| {
            acc = acc.wrapping_add(n);
            acc
        })
    }

    /// Estimated `q` quantile (0 < q ≤ 1) in microseconds: the upper bound of the bucket holding
    /// it. `None` when there are no observations, or when the quantile lies in the `+Inf`
    /// bucket (above the largest bound).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Rank of the observation wanted, 1-based: ceil(q * count), at least 1.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let cumulative = self.cumulative();
        let slot = cumulative.iter().position(|&c| c >= rank)?;
        LATENCY_BUCKETS_US.get(slot).copied()
    }

    fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_us = self.sum_us.wrapping_add(other.sum_us);
    }
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

/// One reactor's metrics. The reactor is the only writer; the admin thread reads.
///
/// Aligned to 128 bytes (two cache lines, the adjacent-line prefetch unit) so that two reactors'
/// counters never share a line, nor share one with the `Arc` reference counts.
#[derive(Debug)]
#[repr(align(128))]
pub struct Metrics {
    /// Connections handed to this reactor.
    pub accepted: Counter,
    /// Connections closed, by [`CloseReason`] (index = position in [`CloseReason::ALL`]);
    /// write with [`Metrics::close`], read with [`Metrics::closed`].
    pub closed: [Counter; CloseReason::ALL.len()],
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Frames sent to clients.
    pub frames_out: Counter,
    /// Bytes received from clients.
    pub bytes_in: Counter,
    /// Bytes sent to clients.
    pub bytes_out: Counter,
    /// REQUEST frames sent to nodes (retries included).
    pub backend_requests: Counter,
    /// RESPONSE/NODE_ERROR frames matched to a client.
    pub backend_responses: Counter,
    /// Requests re-sent after their node failed.
    pub retries: Counter,
    /// ERROR frames sent to clients, index = code (1..=13; 0 unused); write with
    /// [`Metrics::error`].
    pub errors: [Counter; 14],
    /// Frames from nodes dropped, by [`BackendDrop`]; write with [`Metrics::drop_backend`].
    pub backend_dropped: [Counter; 4],
    /// Client DATA in → reply out: request latency through the gateway.
    pub latency: Histogram,
    /// Indexed like [`SessionEvent::ALL`]; write with [`Metrics::session`].
    pub sessions: [Counter; 7],
    /// 1 while this reactor's link to the state daemon is up (0 without `--state`).
    pub state_link_up: Counter,
    /// Timer ticks run (one per 50 ms): the systemd watchdog pings only while every
    /// reactor's count moves. Not exported.
    pub ticks: Counter,
    /// Replaced by the reactor on health changes only (rare), never per frame.
    nodes: Mutex<Vec<NodeStatus>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            accepted: Counter::default(),
            closed: Default::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            backend_requests: Counter::default(),
            backend_responses: Counter::default(),
            retries: Counter::default(),
            errors: Default::default(),
            backend_dropped: Default::default(),
            latency: Histogram::new(),
            sessions: Default::default(),
            state_link_up: Counter::default(),
            ticks: Counter::default(),
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// Counts one session event.
    #[inline]
    pub fn session(&self, event: SessionEvent) {
        self.sessions[event.index()].inc();
    }

    /// Counts one connection closed for `reason`.
    #[inline]
    pub fn close(&self, reason: CloseReason) {
        self.closed[reason.index()].inc();
    }

    /// Connections closed for `reason` so far.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()].get()
    }

    /// Counts one ERROR frame with `code` sent to a client.
    #[inline]
    pub fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(usize::from(code.as_u16())) {
            c.inc();
        }
    }

    /// ERROR frames with `code` sent so far.
    pub fn errors_sent(&self, code: ErrorCode) -> u64 {
        self.errors
            .get(usize::from(code.as_u16()))
            .map_or(0, Counter::get)
    }

    /// Counts one frame from a node dropped for `why`.
    #[inline]
    pub fn drop_backend(&self, why: BackendDrop) {
        self.backend_dropped[why.index()].inc();
    }

    /// Frames from nodes dropped for `why` so far.
    pub fn backend_dropped(&self, why: BackendDrop) -> u64 {
        self.backend_dropped[why.index()].get()
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
        let closed = self.closed_total();
        self.accepted.get().saturating_sub(closed)
    }

    fn closed_total(&self) -> u64 {
        self.closed
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(c.get()))
    }

    /// A copy of every counter (not the nodes).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            open: self.open(),
            accepted: self.accepted.get(),
            closed: std::array::from_fn(|i| self.closed[i].get()),
            frames_in: self.frames_in.get(),
            frames_out: self.frames_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            backend_requests: self.backend_requests.get(),
            backend_responses: self.backend_responses.get(),
            retries: self.retries.get(),
            errors: std::array::from_fn(|i| self.errors[i].get()),
            backend_dropped: std::array::from_fn(|i| self.backend_dropped[i].get()),
            latency: self.latency.snapshot(),
            sessions: std::array::from_fn(|i| self.sessions[i].get()),
            state_links_up: self.state_link_up.get(),
        }
    }
}

/// The counters of one [`Metrics`] at one moment, or summed over several reactors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Open connections (sum of the per-reactor saturating values).
    pub open: u64,
    pub accepted: u64,
    /// Indexed like [`CloseReason::ALL`].
    pub closed: [u64; CloseReason::ALL.len()],
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backend_requests: u64,
    pub backend_responses: u64,
    pub retries: u64,
    /// Indexed by error code (0 unused).
    pub errors: [u64; 14],
    /// Indexed like [`BackendDrop::ALL`].
    pub backend_dropped: [u64; 4],
    pub latency: HistogramSnapshot,
    /// Indexed like [`SessionEvent::ALL`].
    pub sessions: [u64; 7],
    /// Reactors whose state link is up.
    pub state_links_up: u64,
}

impl Snapshot {
    /// The sum of every reactor's counters.
    pub fn sum(reactors: &[Arc<Metrics>]) -> Snapshot {
        let mut total = Snapshot::default();
        for m in reactors {
            total.merge(&m.snapshot());
        }
        total
    }

    /// Connections closed, all reasons.
    pub fn closed_total(&self) -> u64 {
        sum(&self.closed)
    }

    /// ERROR frames sent, all codes.
    pub fn errors_total(&self) -> u64 {
        sum(&self.errors)
    }

    /// Frames from nodes dropped, all reasons.
    pub fn backend_dropped_total(&self) -> u64 {
        sum(&self.backend_dropped)
    }

    fn merge(&mut self, o: &Snapshot) {
        fn add_all(a: &mut [u64], b: &[u64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.wrapping_add(*y);
            }
        }
        self.open = self.open.wrapping_add(o.open);
        self.accepted = self.accepted.wrapping_add(o.accepted);
        add_all(&mut self.closed, &o.closed);
        self.frames_in = self.frames_in.wrapping_add(o.frames_in);
        self.frames_out = self.frames_out.wrapping_add(o.frames_out);
        self.bytes_in = self.bytes_in.wrapping_add(o.bytes_in);
        self.bytes_out = self.bytes_out.wrapping_add(o.bytes_out);
        self.backend_requests = self.backend_requests.wrapping_add(o.backend_requests);
        self.backend_responses = self.backend_responses.wrapping_add(o.backend_responses);
        self.retries = self.retries.wrapping_add(o.retries);
        add_all(&mut self.errors, &o.errors);
        add_all(&mut self.backend_dropped, &o.backend_dropped);
        self.latency.merge(&o.latency);
        add_all(&mut self.sessions, &o.sessions);
        self.state_links_up = self.state_links_up.wrapping_add(o.state_links_up);
    }
}

fn sum(values: &[u64]) -> u64 {
    values.iter().fold(0u64, |a, &n| a.wrapping_add(n))
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
}

/// One node as seen by all reactors together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
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
pub fn summarize_nodes(reactors: &[Arc<Metrics>]) -> Vec<NodeSummary> {
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

/// Seconds from microseconds, for `_sum` and the like.
fn us_to_s(us: u64) -> f64 {
    us as f64 / 1_000_000.0
}

/// The Prometheus text exposition (format 0.0.4) of every reactor's metrics summed, plus the
/// process-wide facts in `info`.
pub fn render_prometheus(reactors: &[Arc<Metrics>], info: &GatewayInfo) -> String {
    let t = Snapshot::sum(reactors);
    let nodes = summarize_nodes(reactors);
    let mut p = tether_daemon::prometheus::Text::new(PREFIX, 8 * 1024);

    p.build_info(info.version);

    p.single(
        "connections_open",
        "gauge",
        "Client connections currently open.",
        t.open,
    );
    p.single(
        "connections_accepted_total",
        "counter",
        "Client connections handed to a reactor.",
        t.accepted,
    );
    p.header(
        "connections_closed_total",
        "counter",
        "Client connections closed, by reason.",
    );
    for r in CloseReason::ALL {
        p.sample(
            "connections_closed_total",
            &[("reason", r.label())],
            t.closed[r.index()],
        );
    }
    p.header(
        "connections_rejected_total",
        "counter",
        "Client connections refused at accept, by reason.",
    );
    p.sample(
        "connections_rejected_total",
        &[("reason", "overloaded")],
        info.rejected_at_accept.get(),
    );
    p.sample(
        "connections_rejected_total",
        &[("reason", "out_of_descriptors")],
        info.shed_out_of_descriptors.get(),
    );

    p.single(
        "frames_received_total",
        "counter",
        "Frames received from clients.",
        t.frames_in,
    );
    p.single(
        "frames_sent_total",
        "counter",
        "Frames sent to clients.",
        t.frames_out,
    );
    p.single(
        "received_bytes_total",
        "counter",
        "Bytes received from clients.",
        t.bytes_in,
    );
    p.single(
        "sent_bytes_total",
        "counter",
        "Bytes sent to clients.",
        t.bytes_out,
    );

    p.single(
        "state_links_up",
        "gauge",
        "Reactors whose link to the state daemon is up (one link per reactor).",
        t.state_links_up,
    );
    p.header(
        "session_events_total",
        "counter",
        "Logins, kicks, pushes and acks passed between clients and the state daemon.",
    );
    for e in SessionEvent::ALL {
        p.sample(
            "session_events_total",
            &[("event", e.label())],
            t.sessions[e.index()],
        );
    }

    p.single(
        "backend_requests_total",
        "counter",
        "REQUEST frames sent to nodes, retries included.",
        t.backend_requests,
    );
    p.single(
        "backend_responses_total",
        "counter",
        "RESPONSE and NODE_ERROR frames from nodes matched to a client.",
        t.backend_responses,
    );
    p.single(
        "backend_retries_total",
        "counter",
        "Requests re-sent to another node after their node failed.",
        t.retries,
    );

    p.header(
        "errors_total",
        "counter",
        "ERROR frames sent to clients, by code.",
    );
    for code in ErrorCode::ALL {
        let n = t
            .errors
            .get(usize::from(code.as_u16()))
            .copied()
            .unwrap_or(0);
        p.sample("errors_total", &[("code", code.name())], n);
    }

    p.header(
        "backend_dropped_frames_total",
        "counter",
        "Frames from nodes dropped, by reason.",
    );
    for d in BackendDrop::ALL {
        p.sample(
            "backend_dropped_frames_total",
            &[("reason", d.label())],
            t.backend_dropped[d.index()],
        );
    }

    p.header(
        "request_duration_seconds",
        "histogram",
        "Request latency through the gateway: client DATA in to reply out.",
    );
    let cumulative = t.latency.cumulative();
    for (bound, n) in LATENCY_BUCKETS_S.iter().zip(cumulative.iter()) {
        p.sample(
            "request_duration_seconds_bucket",
            &[("le", &bound.to_string())],
            n,
        );
    }
    let count = cumulative[HISTOGRAM_SLOTS - 1];
    p.sample("request_duration_seconds_bucket", &[("le", "+Inf")], count);
    p.sample(
        "request_duration_seconds_sum",
        &[],
        us_to_s(t.latency.sum_us),
    );
    p.sample("request_duration_seconds_count", &[], count);

    p.header(
        "node_up",
        "gauge",
        "1 if every reactor sees the node up (health checks pass), else 0.",
    );
    for n in &nodes {
        p.sample("node_up", &[("node", &n.addr)], u8::from(n.up));
    }
    p.header(
        "node_up_reactors",
        "gauge",
        "Number of reactors that see the node up.",
    );
    for n in &nodes {
        p.sample("node_up_reactors", &[("node", &n.addr)], n.up_reactors);
    }
    p.header(
        "node_outstanding",
        "gauge",
        "Requests sent to the node and not yet answered, summed over reactors.",
    );
    for n in &nodes {
        p.sample("node_outstanding", &[("node", &n.addr)], n.outstanding);
    }
    p.header(
        "node_requests_total",
        "counter",
        "REQUEST frames sent to the node, retries included, summed over reactors.",
    );
    for n in &nodes {
        p.sample("node_requests_total", &[("node", &n.addr)], n.requests);
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

/// The same numbers as [`render_prometheus`], as JSON for humans and scripts (`GET /stats`).
///
/// Latency quantiles are estimated from the histogram: the upper bound (µs) of the bucket that
/// holds the quantile; `null` when nothing was recorded or when the quantile is above the
/// largest bound.
pub fn render_stats(reactors: &[Arc<Metrics>], info: &GatewayInfo) -> Value {
    let per_reactor: Vec<Snapshot> = reactors.iter().map(|m| m.snapshot()).collect();
    let mut t = Snapshot::default();
    for s in &per_reactor {
        t.merge(s);
    }

    let reactors_json: Vec<Value> = per_reactor
        .iter()
        .enumerate()
        .map(|(index, s)| {
            json!({
                "index": index,
                "open": s.open,
                "accepted": s.accepted,
                "closed": s.closed_total(),
                "frames_in": s.frames_in,
                "frames_out": s.frames_out,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "backend_requests": s.backend_requests,
                "backend_responses": s.backend_responses,
                "retries": s.retries,
                "errors": s.errors_total(),
                "backend_dropped": s.backend_dropped_total(),
                "requests": s.latency.count(),
            })
        })
        .collect();

    let closed: Map<String, Value> = CloseReason::ALL
        .iter()
        .map(|r| (r.label().to_string(), Value::from(t.closed[r.index()])))
        .collect();
    let errors: Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|c| {
            let n = t.errors.get(usize::from(c.as_u16())).copied().unwrap_or(0);
            (c.name().to_string(), Value::from(n))
        })
        .collect();
    let dropped: Map<String, Value> = BackendDrop::ALL
        .iter()
        .map(|d| {
            (
                d.label().to_string(),
                Value::from(t.backend_dropped[d.index()]),
            )
        })
        .collect();
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
    json!({
        "version": info.version,
        "listen": info.listen,
        "uptime_s": info.started.elapsed().as_secs_f64(),
        "draining": info.draining.load(Relaxed),
        "max_connections": info.max_connections.load(Relaxed),
        "reactors": reactors_json,
        "totals": {
            "open": t.open,
            "accepted": t.accepted,
            "closed": t.closed_total(),
            "rejected_at_accept": info.rejected_at_accept.get(),
            "shed_out_of_descriptors": info.shed_out_of_descriptors.get(),
            "frames_in": t.frames_in,
            "frames_out": t.frames_out,
            "bytes_in": t.bytes_in,
            "bytes_out": t.bytes_out,
            "backend_requests": t.backend_requests,
            "backend_responses": t.backend_responses,
            "retries": t.retries,
            "errors": t.errors_total(),
            "backend_dropped": t.backend_dropped_total(),
            "requests": lat.count(),
        },
        "closed": closed,
        "errors": errors,
        "backend_dropped": dropped,
        "nodes": nodes,
        "latency_us": {
            "count": lat.count(),
            "mean": if lat.count() == 0 { Value::Null } else { Value::from(lat.sum_us / lat.count()) },
            "p50": lat.quantile_us(0.50),
            "p90": lat.quantile_us(0.90),
            "p99": lat.quantile_us(0.99),
            "p999": lat.quantile_us(0.999),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn counter_single_writer_and_shared() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        c.add_shared(8);
        c.inc_shared();
        assert_eq!(c.get(), 51);
    }

    #[test]
    fn metrics_is_cache_line_isolated() {
        assert_eq!(std::mem::align_of::<Metrics>(), 128);
        assert_eq!(std::mem::size_of::<Metrics>() % 128, 0);
    }

    #[test]
    fn bucket_bounds_agree() {
        assert_eq!(LATENCY_BUCKETS_S.len(), LATENCY_BUCKETS_US.len());
        for (s, us) in LATENCY_BUCKETS_S.iter().zip(LATENCY_BUCKETS_US) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
        assert!(LATENCY_BUCKETS_US.windows(2).all(|w| w[0] < w[1]));
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
        assert_eq!(m.errors[13].get(), 1);
        m.drop_backend(BackendDrop::Malformed);
        assert_eq!(m.backend_dropped(BackendDrop::Malformed), 1);
    }

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().quantile_us(0.5), None);
        for _ in 0..90 {
            h.record_us(80); // 100 µs bucket
        }
        for _ in 0..9 {
            h.record_us(700); // 1 ms bucket
        }
        h.record_us(6_000_000); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.quantile_us(0.5), Some(100));
        assert_eq!(s.quantile_us(0.9), Some(100));
        assert_eq!(s.quantile_us(0.99), Some(1_000));
        assert_eq!(s.quantile_us(0.999), None);
        assert_eq!(s.sum_us, 90 * 80 + 9 * 700 + 6_000_000);
        h.record_us(0);
        assert_eq!(h.snapshot().slots[0], 1);
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
        assert_eq!(buckets.len(), LATENCY_BUCKETS_S.len() + 1);
        for ((le, _), bound) in buckets.iter().zip(LATENCY_BUCKETS_S) {
            assert_eq!(le.parse::<f64>().unwrap(), *bound);
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
        assert_eq!(v["errors"].as_object().unwrap().len(), 13);
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
