//! One reactor: a single-threaded mio loop that owns its client connections, its links to
//! every node, its buffers and its counters. Nothing on this path is shared with other
//! reactors.
//!
//! One iteration: wait for readiness (or the next 50 ms tick); read clients and turn their
//! DATA into REQUESTs appended to the chosen node's output; read nodes and turn RESPONSEs
//! into DATA appended to the owning client's output; on a tick, probe nodes, reconnect, and
//! time out stalled frames; then write every node and client touched, once each — so the
//! frames for one node from one iteration leave in one `write`.

mod sessions;

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tether_daemon::nonblocking::{read_frames, ReadEnd};
use tether_proto::{encode, ErrorCode, Frame, Kind, NodeErrorBody, Routed};

use crate::backend::{Backend, InFlight, Link, MAX_BACKEND_QUEUE};
use crate::balance::{self, Balancer, Candidate};
use crate::buffer_pool::{BufferPool, IoPool};
use crate::client::{Client, Login};
use crate::config::Settings;
use crate::health::{HealthPolicy, Transition};
use crate::metrics::{BackendDrop, CloseReason, Metrics, NodeStatus};
use crate::rate_limit::TokenBucket;
use crate::route::{next_generation, Route};
use crate::state_link::StateLink;

/// The token of the reactor's waker.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the link to the state daemon.
const STATE: Token = Token(usize::MAX - 1);
/// Node links use tokens from here up; client slots stay below.
const BACKEND_BASE: usize = 1 << 40;
/// How often timers are looked at.
const TICK: Duration = Duration::from_millis(50);
const SCRATCH: usize = 64 * 1024;
/// A client that cannot take its closing ERROR within this is dropped anyway.
const CLOSE_LINGER_MS: u32 = 1000;
/// Idle sweeps run every `idle_timeout / IDLE_SWEEPS`; a client silent through one more
/// than that many is idle, so it goes after 1 to 1.25 times `idle_timeout`.
const IDLE_SWEEPS: u8 = 4;
/// The body of the GOAWAY every client gets when the gateway drains.
const GOAWAY_BODY: &[u8] = br#"{"reason":"gateway shutting down"}"#;

/// What the gateway asks of a running reactor.
#[derive(Debug)]
pub enum Command {
    /// New nodes, balancing, health policy or limits (SIGHUP).
    Reload(Arc<Settings>),
    /// Send GOAWAY to every client and exit once they are gone or at `deadline`.
    Drain { deadline: Instant },
}

/// What a reactor is built from.
pub struct Setup {
    pub index: usize,
    pub poll: Poll,
    pub incoming: Receiver<(TcpStream, u64)>,
    pub commands: Receiver<Command>,
    /// Open connections, incremented by acceptors at hand-off, decremented here at close.
    pub open: Arc<AtomicUsize>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// Slab capacity reserved up front (virtual memory; touched only as used).
    pub capacity: usize,
    /// The state daemon's socket and this reactor's name on it (`<gateway id>/<index>`).
    pub state: Option<(PathBuf, String)>,
}

/// A reply travelling back to a client.
enum Reply<'a> {
    Data(&'a [u8]),
    Error(ErrorCode, &'a str),
}

pub struct Reactor {
    index: usize,
    poll: Poll,
    incoming: Receiver<(TcpStream, u64)>,
    commands: Receiver<Command>,
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    settings: Arc<Settings>,
    policy: HealthPolicy,
    decoder: tether_proto::Decoder,
    clients: Slab<Client>,
    backends: Vec<Backend>,
    candidates: Vec<Candidate>,
    balancer: Box<dyn Balancer>,
    next_backend_token: usize,
    scratch: Vec<u8>,
    io_pool: IoPool,
    payloads: BufferPool,
    dirty_clients: Vec<usize>,
    dirty_backends: Vec<usize>,
    /// Clients with a partial frame or a pending close, checked on ticks: (slot, generation).
    watch: Vec<(usize, u32)>,
    /// Paused clients whose in-flight count fell: read them again this iteration.
    resume: Vec<usize>,
    generation: u32,
    clock: Instant,
    now: Instant,
    draining: Option<Instant>,
    /// The link to the state daemon, with `--state`.
    state: Option<StateLink>,
    /// Clients that must log in by a deadline, in accept order: (slot, generation, ms).
    logins: VecDeque<(usize, u32, u32)>,
    /// When the next idle sweep is due (with an idle timeout).
    next_idle_sweep: Instant,
}

impl Reactor {
    pub fn new(setup: Setup) -> Reactor {
        let now = Instant::now();
        let settings = setup.settings;
        let mut reactor = Reactor {
            index: setup.index,
            poll: setup.poll,
            incoming: setup.incoming,
            commands: setup.commands,
            open: setup.open,
            metrics: setup.metrics,
            policy: policy_of(&settings),
            decoder: tether_proto::Decoder::new(settings.max_body),
            clients: Slab::with_capacity(setup.capacity),
            backends: Vec::new(),
            candidates: Vec::new(),
            balancer: balance::new(settings.balance, seed(setup.index)),
            next_backend_token: BACKEND_BASE,
            scratch: vec![0; SCRATCH],
            // At most 1,024 × 2 × 16 KiB and 4,096 × 4 KiB kept after a burst.
            io_pool: IoPool::new(1024, 16 * 1024),
            payloads: BufferPool::new(4096, 4 * 1024),
            dirty_clients: Vec::new(),
            dirty_backends: Vec::new(),
            watch: Vec::new(),
            resume: Vec::new(),
            generation: 0,
            clock: now,
            now,
            draining: None,
            settings: settings.clone(),
            state: setup.state.map(|(path, name)| {
                StateLink::new(
                    path,
                    name,
                    settings.reconnect_min,
                    settings.reconnect_max,
                    now,
                )
            }),
            logins: VecDeque::new(),
            next_idle_sweep: now,
        };
        reactor.apply(settings);
        reactor
    }

    /// Runs until drained (or the poll fails).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(reactor = self.index, error = %e, "poll failed; reactor stops");
                    break;
                }
            }
            self.now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    STATE => self.state_event(
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                    ),
                    Token(t) if t >= BACKEND_BASE => self.backend_event(
                        Token(t),
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable() || event.is_error(),
                    ),
                    Token(slot) => {
                        if event.is_writable() {
                            self.mark_client(slot);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let until_eagain = event.is_read_closed() || event.is_error();
                            self.read_client(slot, until_eagain);
                        }
                    }
                }
            }
            if woken {
                self.adopt();
                self.take_commands();
            }
            if self.now >= next_tick {
                self.tick();
                next_tick = self.now + TICK;
            }
            self.resume_paused();
            self.flush_backends();
            self.flush_state();
            self.flush_clients();
            if let Some(deadline) = self.draining {
                if self.clients.is_empty() || self.now >= deadline {
                    break;
                }
            }
        }
        let slots: Vec<usize> = self.clients.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_client(slot, CloseReason::Shutdown);
        }
        self.flush_state(); // their CLOSEDs, best effort
        self.publish_nodes();
    }

    fn now_ms(&self) -> u32 {
        // Never 0, so 0 can mean "not set".
        (self.now.duration_since(self.clock).as_millis() as u32).max(1)
    }

    // -----------------------------------------------------------------------------------
    // Clients

    fn adopt(&mut self) {
        let now_ms = self.now_ms();
        while let Ok((mut stream, key)) = self.incoming.try_recv() {
            let bucket = TokenBucket::full(self.settings.rate_burst, self.now_ms());
            let entry = self.clients.vacant_entry();
            let slot = entry.key();
            if slot >= BACKEND_BASE
                || self
                    .poll
                    .registry()
                    .register(&mut stream, Token(slot), Interest::READABLE)
                    .is_err()
            {
                self.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            self.generation = next_generation(self.generation);
            let login = if self.state.is_some() {
                let deadline = now_ms.wrapping_add(self.settings.login_timeout_ms);
                self.logins.push_back((slot, self.generation, deadline));
                Login::Awaiting
            } else {
                Login::Anonymous
            };
            entry.insert(Client::new(stream, self.generation, key, bucket, login));
            self.metrics.accepted.inc();
            if self.draining.is_some() {
                self.reply(slot, Kind::GoAway, 0, GOAWAY_BODY);
            }
        }
    }

    /// Reads everything the client has sent, handling each complete frame (complete frames
    /// in place, only a frame split across reads buffered: see [`read_frames`], which also
    /// states the short-read rule `until_eagain` is for). Reading stops once the client is
    /// closing, and pauses at `max_inflight` until replies come back. An incomplete tail is
    /// kept in a pooled buffer only while a frame is split.
    fn read_client(&mut self, slot: usize, until_eagain: bool) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        let mut partial = match client.io.as_mut() {
            Some(io) => std::mem::take(&mut io.partial),
            None => Vec::new(),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let decoder = self.decoder;
        let max_inflight = self.settings.max_inflight;
        let mut completed = false;
        let reading = read_frames(
            self,
            |r| {
                let client = r.clients.get_mut(slot)?;
                if client.closing.is_some() {
                    return None;
                }
                if client.inflight >= max_inflight {
                    client.paused = true;
                    return None;
                }
                Some(&mut client.stream)
            },
            &mut scratch,
            &mut partial,
            &decoder,
            until_eagain,
            |r, frame| {
                completed = true;
                r.metrics.frames_in.inc();
                r.on_client_frame(slot, frame);
                match r.clients.get(slot) {
                    Some(client) if client.closing.is_none() => ControlFlow::Continue(()),
                    _ => ControlFlow::Break(()),
                }
            },
        );
        self.scratch = scratch;
        if reading.bytes > 0 {
            if let Some(client) = self.clients.get_mut(slot) {
                client.quiet = 0;
            }
            self.metrics.bytes_in.add(reading.bytes as u64);
        }
        if let ReadEnd::Malformed(e) = &reading.end {
            self.client_error(slot, e.offending_id(), e.code(), &e.to_string());
        }
        self.keep_partial(slot, partial, completed);
        match reading.end {
            ReadEnd::Eof => self.close_client(slot, CloseReason::PeerClosed),
            ReadEnd::Failed(_) => self.close_client(slot, CloseReason::Reset),
            _ => {}
        }
    }

    /// After a read: keeps an incomplete tail in a pooled buffer (watched, so a stalled one
    /// times out), or gives the buffers back once nothing is pending.
    fn keep_partial(&mut self, slot: usize, partial: Vec<u8>, completed: bool) {
        let now_ms = self.now_ms();
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.closing.is_some() {
            return;
        }
        if partial.is_empty() {
            client.since_ms = 0;
            if let Some(io) = client.io.as_mut() {
                io.partial = partial; // keep the buffer's capacity with the pooled box
            }
            self.release_io(slot);
            return;
        }
        if client.since_ms == 0 || completed {
            client.since_ms = now_ms;
        }
        let io = client.io.get_or_insert_with(|| self.io_pool.take());
        io.partial = partial;
        if !client.watched {
            client.watched = true;
            self.watch.push((slot, client.generation));
        }
    }

    fn on_client_frame(&mut self, slot: usize, frame: Frame<'_>) {
        if self.state.is_some() && self.gate(slot, &frame) {
            return;
        }
        if self.settings.rate_limit > 0 {
            let now_ms = self.now_ms();
            let (rate, burst) = (self.settings.rate_limit, self.settings.rate_burst);
            if let Some(client) = self.clients.get_mut(slot) {
                if !client.bucket.allow(now_ms, rate, burst) {
                    self.client_error(slot, frame.id, ErrorCode::RateLimited, "rate limit");
                    return;
                }
            }
        }
        match frame.kind {
            Kind::Data => self.forward(slot, frame.id, frame.body),
            Kind::Ping => self.reply(slot, Kind::Pong, frame.id, &[]),
            Kind::Login => {
                // Without a state daemon every connection is anonymous.
                let body = format!(
                    r#"{{"session":"anon-{}-{}","resume_token":"","heartbeat_s":30}}"#,
                    self.index, slot
                );
                self.reply(slot, Kind::LoginOk, frame.id, body.as_bytes());
            }
            Kind::Ack => {}
            Kind::Resume => self.client_error(
                slot,
                frame.id,
                ErrorCode::Unavailable,
                "this gateway has no state daemon",
            ),
            other => {
                let reason = format!("a gateway does not accept {} from clients", other.name());
                self.client_error(slot, frame.id, ErrorCode::UnknownKind, &reason);
            }
        }
    }

    /// DATA → REQUEST to the node the balancer picks.
    fn forward(&mut self, slot: usize, id: u64, payload: &[u8]) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        let Some(route) = Route::new(self.index, client.generation, slot) else {
            return;
        };
        let Some(node) = self.balancer.pick(&self.candidates, client.key) else {
            self.client_error(slot, id, ErrorCode::NoBackend, "no healthy node");
            return;
        };
        let key = (route.pack(), id);
        if self.backends[node].inflight.contains_key(&key) {
            self.client_error(
                slot,
                id,
                ErrorCode::Internal,
                "request id already in flight",
            );
            return;
        }
        let mut copy = self.payloads.take();
        copy.extend_from_slice(payload);
        let request = InFlight {
            since: self.now,
            payload: copy,
            retried: false,
        };
        self.send_request(node, key, request);
        if let Some(client) = self.clients.get_mut(slot) {
            client.inflight += 1;
        }
    }

    /// Queues a REQUEST on `node` and records it in flight.
    fn send_request(&mut self, node: usize, key: (u64, u64), request: InFlight) {
        let backend = &mut self.backends[node];
        encode::routed(
            &mut backend.out,
            Kind::Request,
            key.1,
            key.0,
            &request.payload,
        );
        backend.inflight.insert(key, request);
        backend.requests += 1;
        self.candidates[node].outstanding += 1;
        self.metrics.backend_requests.inc();
        self.mark_backend(node);
    }

    /// Appends a frame to the client's output.
    fn reply(&mut self, slot: usize, kind: Kind, id: u64, body: &[u8]) {
        if let Some(out) = self.client_out(slot) {
            encode::frame(out, kind, id, body);
            self.metrics.frames_out.inc();
            self.mark_client(slot);
        }
    }

    /// Sends ERROR; for codes that close, reads nothing more and closes once written.
    fn client_error(&mut self, slot: usize, id: u64, code: ErrorCode, reason: &str) {
        let now_ms = self.now_ms();
        let Some(out) = self.client_out(slot) else {
            return;
        };
        encode::error(out, id, code, reason);
        self.metrics.frames_out.inc();
        self.metrics.error(code);
        if code.closes_connection() {
            if let Some(client) = self.clients.get_mut(slot) {
                client.closing = CloseReason::from_error(code).or(Some(CloseReason::Reset));
                client.since_ms = now_ms;
                if let Some(io) = client.io.as_mut() {
                    io.partial.clear();
                }
                if !client.watched {
                    client.watched = true;
                    self.watch.push((slot, client.generation));
                }
            }
        }
        self.mark_client(slot);
    }

    fn client_out(&mut self, slot: usize) -> Option<&mut Vec<u8>> {
        let client = self.clients.get_mut(slot)?;
        if client.io.is_none() {
            client.io = Some(self.io_pool.take());
        }
        client.io.as_mut().map(|io| &mut io.out)
    }

    fn mark_client(&mut self, slot: usize) {
        if let Some(client) = self.clients.get_mut(slot) {
            if !client.dirty {
                client.dirty = true;
                self.dirty_clients.push(slot);
            }
        }
    }

    /// Gives an idle client's buffers back to the pool.
    fn release_io(&mut self, slot: usize) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.io.as_ref().is_some_and(|io| io.is_idle()) {
            if let Some(io) = client.io.take() {
                self.io_pool.give(io);
            }
        }
    }

    fn flush_clients(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_clients);
        for &slot in &dirty {
            self.flush_client(slot);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty_clients.is_empty() {
            self.dirty_clients = dirty;
        }
    }

    fn flush_client(&mut self, slot: usize) {
        let max_queued = self.settings.max_queued_bytes;
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        client.dirty = false;
        match client.flush() {
            Ok(n) => self.metrics.bytes_out.add(n as u64),
            Err(_) => {
                self.close_client(slot, CloseReason::Reset);
                return;
            }
        }
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        let pending = client.pending();
        if pending > max_queued && client.closing.is_none() {
            // It does not read: drop what is queued, say why once, close.
            if let Some(io) = client.io.as_mut() {
                io.out.clear();
                io.written = 0;
                encode::error(&mut io.out, 0, ErrorCode::SlowConsumer, "replies not read");
            }
            let _ = client.flush();
            self.metrics.error(ErrorCode::SlowConsumer);
            self.close_client(slot, CloseReason::SlowConsumer);
            return;
        }
        if pending == 0 {
            if let Some(reason) = client.closing {
                self.close_client(slot, reason);
                return;
            }
        }
        let want = pending > 0;
        if want != client.writable {
            client.writable = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut client.stream, Token(slot), interest)
                .is_err()
            {
                self.close_client(slot, CloseReason::Reset);
                return;
            }
        }
        self.release_io(slot);
    }

    fn close_client(&mut self, slot: usize, reason: CloseReason) {
        if let Some(mut client) = self.clients.try_remove(slot) {
            if client.login == Login::In {
                self.send_closed(slot, client.generation, reason);
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
            if let Some(io) = client.io.take() {
                self.io_pool.give(io);
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.close(reason);
        }
    }

    fn resume_paused(&mut self) {
        while let Some(slot) = self.resume.pop() {
            let resumable = self.clients.get_mut(slot).is_some_and(|c| {
                let go = c.paused && c.closing.is_none();
                c.paused = false;
                go
            });
            if resumable {
                // Reading stopped part-way: no edge will announce what is queued.
                self.read_client(slot, true);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Nodes

    fn backend_index(&self, token: Token) -> Option<usize> {
        self.backends.iter().position(|b| b.token == token)
    }

    fn backend_event(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(node) = self.backend_index(token) else {
            return;
        };
        if matches!(self.backends[node].link, Link::Connecting { .. }) {
            if writable || readable {
                self.finish_connect(node);
            }
            return;
        }
        if writable {
            self.mark_backend(node);
        }
        if readable {
            self.read_backend(node);
        }
    }

    fn connect(&mut self, node: usize) {
        let addr = self.backends[node].addr;
        let token = self.backends[node].token;
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                if self
                    .poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    self.link_failed(node, "cannot register");
                    return;
                }
                self.backends[node].writable = true;
                self.backends[node].link = Link::Connecting {
                    stream,
                    since: self.now,
                };
            }
            Err(e) => {
                let reason = e.to_string();
                self.link_failed(node, &reason);
            }
        }
    }

    fn finish_connect(&mut self, node: usize) {
        let backend = &mut self.backends[node];
        let Link::Connecting { stream, .. } = &mut backend.link else {
            return;
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                let reason = e.to_string();
                self.link_failed(node, &reason);
                return;
            }
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(e) => {
                let reason = e.to_string();
                self.link_failed(node, &reason);
                return;
            }
        }
        let Link::Connecting { stream, .. } =
            std::mem::replace(&mut backend.link, Link::Idle { retry_at: self.now })
        else {
            return;
        };
        backend.link = Link::Connected { stream };
        backend.backoff = self.settings.reconnect_min;
        tracing::info!(reactor = self.index, node = %backend.addr, "node link connected");
        let transition = backend.health.on_connected(self.now);
        self.on_transition(node, transition);
        self.mark_backend(node);
    }

    /// The link broke (or never came up): node down, requests re-sent, reconnect later.
    fn link_failed(&mut self, node: usize, reason: &str) {
        let backend = &mut self.backends[node];
        let retry_at = self.now + backend.backoff;
        let was_connected = backend.is_connected();
        if let Some(mut stream) = backend.reset(retry_at) {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        backend.backoff = (backend.backoff * 2).min(self.settings.reconnect_max);
        if was_connected {
            tracing::warn!(reactor = self.index, node = %backend.addr, reason, "node link lost");
        } else {
            tracing::debug!(reactor = self.index, node = %backend.addr, reason, "node connect failed");
        }
        let transition = backend.health.on_disconnected();
        self.on_transition(node, transition);
        // Whatever was in flight there will not be answered on this link.
        self.evacuate(node);
    }

    fn on_transition(&mut self, node: usize, transition: Transition) {
        match transition {
            Transition::None => return,
            Transition::Up => {
                tracing::info!(reactor = self.index, node = %self.backends[node].addr, "node up");
                self.candidates[node].up = true;
            }
            Transition::Down => {
                tracing::warn!(reactor = self.index, node = %self.backends[node].addr, "node down");
                self.candidates[node].up = false;
                self.evacuate(node);
            }
        }
        self.publish_nodes();
    }

    /// Re-sends every request in flight on `node` once to another healthy node; a request
    /// already re-sent once, or with nowhere to go, is answered with an error.
    fn evacuate(&mut self, node: usize) {
        if self.backends[node].inflight.is_empty() {
            return;
        }
        let requests: Vec<_> = self.backends[node].inflight.drain().collect();
        self.candidates[node].outstanding = 0;
        for (key, request) in requests {
            self.resend(node, key, request);
        }
    }

    /// Sends a request that `from` could not answer to another node, once.
    fn resend(&mut self, from: usize, key: (u64, u64), mut request: InFlight) {
        let route = Route::unpack(key.0);
        let client_key = self
            .clients
            .get(route.slot as usize)
            .filter(|c| c.generation == route.generation)
            .map(|c| c.key);
        let Some(client_key) = client_key else {
            // Its client is gone: nobody to answer.
            self.payloads.give(request.payload);
            return;
        };
        let target = if request.retried {
            None
        } else {
            self.balancer
                .pick(&self.candidates, client_key)
                .filter(|&n| n != from)
        };
        match target {
            Some(to) => {
                request.retried = true;
                self.metrics.retries.inc();
                self.send_request(to, key, request);
            }
            None => {
                let (code, reason) = if request.retried {
                    (ErrorCode::Unavailable, "request failed on two nodes")
                } else {
                    (ErrorCode::NoBackend, "no other healthy node")
                };
                let since = request.since;
                self.payloads.give(request.payload);
                self.deliver(key, Reply::Error(code, reason), since);
            }
        }
    }

    /// Reads everything the node has sent, handling each complete frame, until the socket
    /// would block (no short-read shortcut on node links) or the link fails.
    fn read_backend(&mut self, node: usize) {
        let token = self.backends[node].token;
        let mut partial = std::mem::take(&mut self.backends[node].partial);
        let mut scratch = std::mem::take(&mut self.scratch);
        // Node replies carry a route before the client's payload.
        let decoder = tether_proto::Decoder::new(self.settings.max_body.saturating_add(8 + 64));
        let reading = read_frames(
            self,
            |r| r.backends[node].connected(),
            &mut scratch,
            &mut partial,
            &decoder,
            true,
            |r, frame| {
                r.on_backend_frame(node, frame);
                if r.backends[node].is_connected() {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        );
        self.scratch = scratch;
        match reading.end {
            ReadEnd::Eof => self.link_failed(node, "node closed the link"),
            ReadEnd::Failed(e) => self.link_failed(node, &e.to_string()),
            ReadEnd::Malformed(e) => {
                self.metrics.drop_backend(BackendDrop::Malformed);
                self.link_failed(node, &format!("bad frame from node: {e}"));
            }
            ReadEnd::Drained | ReadEnd::Withheld | ReadEnd::Stopped(()) => {
                // Keep the tail only if this is still the same, live link.
                if let Some(b) = self.backends.get_mut(node).filter(|b| b.token == token) {
                    if b.is_connected() {
                        b.partial = partial;
                    }
                }
            }
        }
    }

    fn on_backend_frame(&mut self, node: usize, frame: Frame<'_>) {
        match frame.kind {
            Kind::Response => match Routed::parse(frame.body) {
                Ok(routed) => {
                    self.complete(node, (routed.route, frame.id), Reply::Data(routed.payload))
                }
                Err(_) => self.metrics.drop_backend(BackendDrop::Malformed),
            },
            Kind::NodeError => match NodeErrorBody::parse(frame.body) {
                Ok(err) => {
                    let key = (err.route, frame.id);
                    let overloaded = err.code == ErrorCode::Overloaded.as_u16();
                    if overloaded {
                        // Not processed there: worth one try elsewhere.
                        match self.backends[node].inflight.remove(&key) {
                            Some(request) => {
                                self.candidates[node].outstanding =
                                    self.candidates[node].outstanding.saturating_sub(1);
                                self.resend(node, key, request);
                            }
                            None => self.metrics.drop_backend(BackendDrop::UnknownRoute),
                        }
                    } else {
                        let reason = format!("node error {}: {}", err.code, err.reason);
                        self.complete(node, key, Reply::Error(ErrorCode::Unavailable, &reason));
                    }
                }
                Err(_) => self.metrics.drop_backend(BackendDrop::Malformed),
            },
            Kind::NodePong => {
                let transition = self.backends[node].health.on_pong(frame.id, &self.policy);
                self.on_transition(node, transition);
            }
            _ => self.metrics.drop_backend(BackendDrop::UnexpectedKind),
        }
    }

    /// A node answered a request: forget it there, deliver it to its client.
    fn complete(&mut self, node: usize, key: (u64, u64), reply: Reply<'_>) {
        let Some(request) = self.backends[node].inflight.remove(&key) else {
            // Already re-sent elsewhere, or never ours.
            self.metrics.drop_backend(BackendDrop::UnknownRoute);
            return;
        };
        self.candidates[node].outstanding = self.candidates[node].outstanding.saturating_sub(1);
        self.metrics.backend_responses.inc();
        let since = request.since;
        self.payloads.give(request.payload);
        self.deliver(key, reply, since);
    }

    /// Hands a reply to the connection its route names, if that connection still exists.
    fn deliver(&mut self, key: (u64, u64), reply: Reply<'_>, since: Instant) {
        let route = Route::unpack(key.0);
        if usize::from(route.reactor) != self.index {
            self.metrics.drop_backend(BackendDrop::UnknownRoute);
            return;
        }
        let slot = route.slot as usize;
        let max_inflight = self.settings.max_inflight;
        let Some(client) = self
            .clients
            .get_mut(slot)
            .filter(|c| c.generation == route.generation)
        else {
            self.metrics.drop_backend(BackendDrop::StaleRoute);
            return;
        };
        client.inflight = client.inflight.saturating_sub(1);
        if client.paused && client.inflight <= max_inflight / 2 {
            self.resume.push(slot);
        }
        match reply {
            Reply::Data(payload) => {
                self.reply(slot, Kind::Data, key.1, payload);
                let us = self.now.saturating_duration_since(since).as_micros();
                self.metrics.latency.record_us(us as u64);
            }
            Reply::Error(code, reason) => self.client_error(slot, key.1, code, reason),
        }
    }

    fn mark_backend(&mut self, node: usize) {
        if !self.backends[node].dirty {
            self.backends[node].dirty = true;
            self.dirty_backends.push(node);
        }
    }

    fn flush_backends(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_backends);
        for &node in &dirty {
            if node < self.backends.len() {
                self.flush_backend(node);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty_backends.is_empty() {
            self.dirty_backends = dirty;
        }
    }

    fn flush_backend(&mut self, node: usize) {
        let backend = &mut self.backends[node];
        backend.dirty = false;
        if !backend.is_connected() {
            return;
        }
        if let Err(e) = backend.flush() {
            let reason = e.to_string();
            self.link_failed(node, &reason);
            return;
        }
        let backend = &mut self.backends[node];
        if backend.pending() > MAX_BACKEND_QUEUE {
            self.link_failed(node, "node does not read its requests");
            return;
        }
        let want = backend.pending() > 0;
        if want != backend.writable {
            backend.writable = want;
            let token = backend.token;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let failed = match backend.stream() {
                Some(stream) => self
                    .poll
                    .registry()
                    .reregister(stream, token, interest)
                    .is_err(),
                None => false,
            };
            if failed {
                self.link_failed(node, "cannot reregister");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Timers, commands, reload

    fn tick(&mut self) {
        self.metrics.ticks.inc();
        for node in 0..self.backends.len() {
            match self.backends[node].link {
                Link::Idle { retry_at } if self.now >= retry_at => self.connect(node),
                Link::Connecting { since, .. }
                    if self.now.duration_since(since) >= self.policy.timeout =>
                {
                    self.link_failed(node, "connect timed out");
                }
                Link::Connected { .. } => {
                    let (transition, probe) =
                        self.backends[node].health.poll(self.now, &self.policy);
                    self.on_transition(node, transition);
                    if let Some(id) = probe {
                        encode::frame(&mut self.backends[node].out, Kind::NodePing, id, &[]);
                        self.mark_backend(node);
                    }
                }
                _ => {}
            }
        }
        self.check_watched();
        if !self.settings.idle_timeout.is_zero() && self.now >= self.next_idle_sweep {
            self.next_idle_sweep = self.now + self.settings.idle_timeout / u32::from(IDLE_SWEEPS);
            self.sweep_idle();
        }
        if self.state.is_some() {
            self.tick_state();
        }
        self.publish_nodes();
    }

    /// Counts one more sweep of silence for every client and closes those silent for longer
    /// than the idle timeout with ERROR TIMEOUT. A client waiting for replies from the nodes
    /// is not idle. O(clients), a few times per `idle_timeout`.
    fn sweep_idle(&mut self) {
        let mut idle = Vec::new();
        for (slot, client) in self.clients.iter_mut() {
            if client.closing.is_some() {
                continue;
            }
            if client.inflight > 0 {
                client.quiet = 0;
                continue;
            }
            client.quiet = client.quiet.saturating_add(1);
            if client.quiet > IDLE_SWEEPS {
                idle.push(slot);
            }
        }
        for slot in idle {
            self.client_error(slot, 0, ErrorCode::Timeout, "idle");
            if let Some(client) = self.clients.get_mut(slot) {
                client.closing = Some(CloseReason::Idle);
            }
        }
    }

    /// Times out stalled partial frames (slowloris) and closes clients that would not take
    /// their closing error.
    fn check_watched(&mut self) {
        let now_ms = self.now_ms();
        let frame_timeout = self.settings.frame_timeout_ms;
        let mut watch = std::mem::take(&mut self.watch);
        watch.retain(|&(slot, generation)| {
            let Some(client) = self
                .clients
                .get_mut(slot)
                .filter(|c| c.generation == generation)
            else {
                return false;
            };
            let age = now_ms.wrapping_sub(client.since_ms);
            if let Some(reason) = client.closing {
                if age >= CLOSE_LINGER_MS {
                    self.close_client(slot, reason);
                    return false;
                }
                return true;
            }
            if !client.has_partial() {
                client.watched = false;
                client.since_ms = 0;
                return false;
            }
            if age >= frame_timeout {
                self.client_error(slot, 0, ErrorCode::Timeout, "partial frame stalled");
            }
            true
        });
        watch.append(&mut self.watch);
        self.watch = watch;
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Reload(settings) => self.apply(settings),
                Command::Drain { deadline } => {
                    self.draining = Some(deadline);
                    let slots: Vec<usize> = self.clients.iter().map(|(slot, _)| slot).collect();
                    for slot in slots {
                        self.reply(slot, Kind::GoAway, 0, GOAWAY_BODY);
                    }
                }
            }
        }
    }

    /// Takes new settings: nodes added get a link, nodes removed lose theirs (their
    /// in-flight requests re-sent elsewhere), and the rest keep their links untouched.
    fn apply(&mut self, settings: Arc<Settings>) {
        // Indices change below: write what is queued first.
        self.flush_backends();
        let mut old: Vec<Backend> = std::mem::take(&mut self.backends);
        let mut kept = Vec::with_capacity(settings.nodes.len());
        for &addr in &settings.nodes {
            match old.iter().position(|b| b.addr == addr) {
                Some(i) => kept.push(old.swap_remove(i)),
                None => {
                    let token = Token(self.next_backend_token);
                    self.next_backend_token += 1;
                    kept.push(Backend::new(addr, token, self.now, settings.reconnect_min));
                }
            }
        }
        self.backends = kept;
        self.candidates = self
            .backends
            .iter()
            .map(|b| Candidate {
                addr: b.addr,
                up: b.health.is_up(),
                outstanding: b.inflight.len() as u32,
            })
            .collect();
        if settings.balance != self.settings.balance {
            self.balancer = balance::new(settings.balance, seed(self.index));
        }
        self.balancer.nodes_changed(&self.candidates);
        self.policy = policy_of(&settings);
        self.decoder = tether_proto::Decoder::new(settings.max_body);
        if settings.idle_timeout != self.settings.idle_timeout {
            self.next_idle_sweep = self.now + settings.idle_timeout / u32::from(IDLE_SWEEPS);
        }
        if let Some(link) = self.state.as_mut() {
            link.set_backoff(settings.reconnect_min, settings.reconnect_max);
        }
        self.settings = settings;
        // Nodes no longer configured: their requests go elsewhere, their links close.
        for mut removed in old {
            if let Some(mut stream) = removed.reset(self.now) {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            tracing::info!(reactor = self.index, node = %removed.addr, "node removed");
            for (key, request) in removed.inflight.drain() {
                self.resend(usize::MAX, key, request);
            }
        }
        self.publish_nodes();
    }

    fn publish_nodes(&self) {
        let nodes = self
            .backends
            .iter()
            .zip(&self.candidates)
            .map(|(b, c)| NodeStatus {
                addr: b.addr.to_string(),
                up: c.up,
                connected: b.is_connected(),
                outstanding: u64::from(c.outstanding),
                requests: b.requests,
            })
            .collect();
        self.metrics.set_nodes(nodes);
    }
}

fn policy_of(settings: &Settings) -> HealthPolicy {
    HealthPolicy {
        interval: settings.health_interval,
        timeout: settings.health_timeout,
        fall: settings.fall,
        rise: settings.rise,
    }
}

/// A different random seed per reactor and per process.
fn seed(index: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ ((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id())
}
