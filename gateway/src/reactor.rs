//! One reactor: a single-threaded mio loop that owns its client connections, its links to
//! every node, its buffers and its counters. Nothing on this path is shared with other
//! reactors.
//!
//! One iteration: wait for readiness (or the next 50 ms tick); read clients and turn their
//! DATA into REQUESTs appended to the chosen node's output; read nodes and turn RESPONSEs
//! into DATA appended to the owning client's output; on a tick, probe nodes, reconnect, and
//! time out stalled frames, requests and logins; then write every node and client touched,
//! once each — so the frames for one node from one iteration leave in one `write`.
//!
//! The loop is this file; each kind of socket has its own: [`clients`] (reading, replying,
//! flushing, closing, their timers), [`layered`] (clients behind TLS or WebSocket: their
//! reads and writes through [`Layers`], the TLS handshake budget), [`nodes`] (links, health,
//! reading replies),
//! [`rooms`] (joins, memberships, and a window written once to each member),
//! [`requests`] (the glue to the sans-IO [`Dispatcher`] that decides where a request goes
//! and what becomes of it), [`sessions`] (the state daemon's link), [`trim`] (memory a burst
//! left, given back once quiet). Handlers return what
//! became of a connection ([`Verdict`]) or a link ([`LinkVerdict`]) and the loop acts on it.

mod clients;
mod layered;
mod nodes;
mod requests;
mod rooms;
mod sessions;
mod trim;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::backend::Backend;
use crate::buffer_pool::IoPool;
use crate::client::Client;
use crate::config::Settings;
use crate::dispatch::{Action, Dispatcher};
use crate::health::HealthPolicy;
use crate::login_gate::LoginGate;
use crate::metrics::{CloseReason, Metrics};
use crate::room_members::RoomMembers;
use crate::state_link::StateLink;
use crate::transport::{Layers, Transport};

/// The token of the reactor's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// The token of the link to the state daemon.
const STATE: Token = Token(usize::MAX - 1);
/// Node links use tokens from here up; client slots stay below.
const BACKEND_BASE: usize = 1 << 40;
/// How often timers are looked at.
const TICK: Duration = Duration::from_millis(50);
const SCRATCH: usize = 64 * 1024;
/// The body of the GOAWAY every client gets when the gateway drains.
const GOAWAY_BODY: &[u8] = br#"{"reason":"gateway shutting down"}"#;

/// What the gateway asks of a running reactor.
#[derive(Debug)]
pub(crate) enum Command {
    /// New nodes, balancing, health policy or limits (SIGHUP).
    Reload(Arc<Settings>),
    /// Send GOAWAY to every client and exit once they are gone or at `deadline`.
    Drain { deadline: Instant },
    /// A new TLS certificate (SIGHUP) for the connections from now on.
    Tls(Arc<rustls::ServerConfig>),
}

/// What a reactor is built from.
pub(crate) struct Setup {
    pub index: usize,
    pub poll: Poll,
    pub incoming: Receiver<(TcpStream, u64, Transport)>,
    pub commands: Receiver<Command>,
    /// The TLS certificate, with a TLS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open connections, incremented by acceptors at hand-off, decremented here at close.
    pub open: Arc<AtomicUsize>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// Slab capacity reserved up front (virtual memory; touched only as used).
    pub capacity: usize,
    /// The state daemon's socket and this reactor's name on it (`<gateway id>/<index>`).
    pub state: Option<(PathBuf, String)>,
}

/// What a handler decided about one client connection.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It stays (it may be closing once its last bytes are written).
    Keep,
    /// Close it now, for this reason.
    Close(CloseReason),
}

/// What a handler decided about one node link.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkVerdict {
    Keep,
    /// The link is lost: reset it, evacuate its requests, reconnect with backoff.
    Lost(String),
}

pub(crate) struct Reactor {
    index: usize,
    poll: Poll,
    incoming: Receiver<(TcpStream, u64, Transport)>,
    commands: Receiver<Command>,
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    settings: Arc<Settings>,
    policy: HealthPolicy,
    decoder: tether_proto::Decoder,
    clients: Slab<Client>,
    /// The TLS and WebSocket layers of the clients that have them.
    layers: Layers,
    backends: Vec<Backend>,
    /// Where requests go and what becomes of them (sans-IO).
    dispatcher: Dispatcher,
    /// What the dispatcher asked for, acted on at once (kept for its capacity).
    actions: Vec<Action>,
    next_backend_token: usize,
    scratch: Vec<u8>,
    io_pool: IoPool,
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
    /// Logins at the daemon, and the refusal beyond `max_logins_inflight`.
    login_gate: LoginGate,
    /// Clients that must log in by a deadline, in accept order: (slot, generation, ms).
    logins: VecDeque<(usize, u32, u32)>,
    /// When the next idle sweep is due (with an idle timeout).
    next_idle_sweep: Instant,
    /// When memory a burst left is next given back.
    next_trim: Instant,
    /// Which connections are in which room (from the daemon's MEMBERSHIP).
    room_members: RoomMembers,
    /// A replay's ROOM frame (kept for its capacity).
    room_frame: Vec<u8>,
    /// This iteration's windows, per room, written to the members at its end.
    room_windows: Vec<rooms::PendingWindows>,
    /// The members a window goes to (kept for its capacity).
    room_slots: Vec<(u32, u32)>,
    /// Members whose socket failed while a window was written, closed after it.
    room_failed: Vec<(usize, CloseReason)>,
}

impl Reactor {
    pub(crate) fn new(setup: Setup) -> Reactor {
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
            layers: Layers::new(settings.ws.clone(), settings.tls_handshakes_per_loop),
            backends: Vec::new(),
            dispatcher: Dispatcher::new(settings.dispatch, settings.balance, seed(setup.index)),
            actions: Vec::new(),
            next_backend_token: BACKEND_BASE,
            scratch: vec![0; SCRATCH],
            // At most 1,024 × 2 × 16 KiB kept after a burst.
            io_pool: IoPool::new(1024, 16 * 1024),
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
            login_gate: LoginGate::new(settings.max_logins_inflight),
            logins: VecDeque::new(),
            next_idle_sweep: now,
            next_trim: now + trim::TRIM_INTERVAL,
            room_members: RoomMembers::default(),
            room_frame: Vec::new(),
            room_windows: Vec::new(),
            room_slots: Vec::new(),
            room_failed: Vec::new(),
        };
        if let Some(tls) = setup.tls {
            reactor.layers.set_tls(tls);
        }
        reactor.apply(settings);
        reactor
    }

    /// Runs until drained (or the poll fails).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now();
        loop {
            let timeout = if self.layers.has_deferred() {
                Duration::ZERO // deferred TLS handshakes are read at once
            } else {
                if !events.is_empty() {
                    self.coalesce();
                }
                next_tick.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(reactor = self.index, error = %e, "poll failed; reactor stops");
                    break;
                }
            }
            self.now = Instant::now();
            self.read_deferred();
            let mut woken = false;
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                match event.token() {
                    WAKER => woken = true,
                    STATE => self.state_event(readable, event.is_writable()),
                    Token(t) if t >= BACKEND_BASE => {
                        let writable = event.is_writable() || event.is_error();
                        self.backend_event(Token(t), readable, writable);
                    }
                    Token(slot) => {
                        if event.is_writable() {
                            self.mark_client(slot);
                        }
                        if readable {
                            let until_eagain = event.is_read_closed() || event.is_error();
                            if let Verdict::Close(reason) = self.read_client(slot, until_eagain) {
                                self.close_client(slot, reason);
                            }
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
            self.fan_out_rooms();
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
        // Whoever is left: one last nonblocking write of what is queued for them and of their
        // closing handshake (a WebSocket close 1001, TLS close_notify), then closed.
        let slots: Vec<usize> = self.clients.iter().map(|(slot, _)| slot).collect();
        for &slot in &slots {
            self.close_when_flushed(slot, CloseReason::Shutdown);
        }
        self.flush_clients();
        for slot in slots {
            self.close_client(slot, CloseReason::Shutdown);
        }
        self.flush_state(); // their CLOSEDs, best effort
        self.publish_nodes();
    }

    /// With `coalesce_ms`, after a wake that found events: sleeps out what is left of it
    /// since that wake, so that what arrives meanwhile is read in one wake. A reactor kept
    /// busy for longer than that never sleeps; a quiet one blocks in the poll as always.
    fn coalesce(&self) {
        if self.settings.coalesce.is_zero() {
            return; // the default: no clock read on the way to the poll
        }
        let rest = self
            .settings
            .coalesce
            .saturating_sub(Instant::now().saturating_duration_since(self.now));
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
    }

    fn now_ms(&self) -> u32 {
        // Never 0, so 0 can mean "not set".
        (self.now.duration_since(self.clock).as_millis() as u32).max(1)
    }

    /// Everything timed, every 50 ms.
    fn tick(&mut self) {
        self.metrics.ticks.inc();
        self.tick_nodes();
        self.expire_requests();
        self.check_watched();
        if !self.settings.idle_timeout.is_zero() && self.now >= self.next_idle_sweep {
            self.next_idle_sweep = self.now + self.settings.idle_timeout / clients::IDLE_SWEEPS;
            self.sweep_idle();
        }
        if self.state.is_some() {
            self.tick_state();
        }
        if self.now >= self.next_trim {
            self.next_trim = self.now + trim::TRIM_INTERVAL;
            self.trim();
        }
        self.publish_nodes();
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Reload(settings) => self.apply(settings),
                Command::Tls(config) => self.layers.set_tls(config),
                Command::Drain { deadline } => {
                    self.draining = Some(deadline);
                    let slots: Vec<usize> = self.clients.iter().map(|(slot, _)| slot).collect();
                    for slot in slots {
                        self.reply(slot, tether_proto::Kind::GoAway, 0, GOAWAY_BODY);
                    }
                }
            }
        }
    }

    /// Takes new settings: nodes added get a link, nodes removed lose theirs (their
    /// in-flight requests leave as from a lost link), and the rest keep their links.
    fn apply(&mut self, settings: Arc<Settings>) {
        self.policy = policy_of(&settings);
        self.decoder = tether_proto::Decoder::new(settings.max_body);
        if settings.idle_timeout != self.settings.idle_timeout {
            self.next_idle_sweep = self.now + settings.idle_timeout / clients::IDLE_SWEEPS;
        }
        if let Some(link) = self.state.as_mut() {
            link.set_backoff(settings.reconnect_min, settings.reconnect_max);
        }
        self.login_gate.set_limit(settings.max_logins_inflight);
        self.layers
            .set_policy(&settings.ws, settings.tls_handshakes_per_loop);
        self.dispatcher.set_policy(settings.dispatch);
        self.dispatcher.set_balance(settings.balance);
        self.settings = settings.clone();
        self.set_nodes(&settings.nodes);
        self.publish_nodes();
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
