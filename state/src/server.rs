//! The daemon's single event loop: the Unix listener, every gateway link, the HTTP
//! commands, the timers and the journal, on one thread (mio).
//!
//! Who may link: a connecting process whose credentials `allow_uids` / `allow_gids` do not
//! allow is refused at accept (STATE_ERROR 5, close). A HELLO naming a gateway id that a live
//! link holds is refused the same way; a gateway id whose old link has closed — even if its
//! EOF is still waiting in this iteration's events, as after a SIGKILL and an immediate
//! restart — is taken by the new link at once.
//!
//! One iteration: wait for readiness or the next timer; read and apply what arrived; fire
//! due timers; append this iteration's records to the journal and `tick` it; only then write
//! the frames and HTTP answers that acknowledge those records. So a SIGKILL never loses
//! anything a gateway or an HTTP client was told about (see `doc/state.md`). Compaction takes
//! the loop only for encoding the state into memory and switching journals; the snapshot is
//! written on the journal's compaction thread, and `tick` says when it is done.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tether_daemon::nonblocking::{read_frames, ReadEnd};
use tether_proto::{encode, Decoder, ErrorCode, Frame, Kind};

use crate::fleet::Fleet;
use crate::http::{Answer, Command};
use crate::journal::{Compacted, ImageWriter, Journal};
use crate::link::{Link, MAX_BODY, MAX_OUT, READ_CHUNK};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::socket::{peer_credentials, peer_gone};
use crate::store::{LinkFault, Now, Store, MAX_GATEWAY_ID};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LINK: usize = 2;
/// Gateway links held at once; more are closed at accept.
const MAX_LINKS: usize = 4096;
/// Longest sleep: `everysec` needs a tick at least once a second.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// What the signal thread asks of the loop.
pub(crate) const RUN: u8 = 0;
pub(crate) const STOP: u8 = 1;
pub(crate) const RELOAD: u8 = 2;

/// The two clocks, from one starting point.
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Now {
        Now {
            // Offset by a day so that "a deadline in the past" never underflows near 0.
            mono_ms: self.start.elapsed().as_millis() as u64 + 86_400_000,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What SIGHUP may change in the loop.
pub(crate) struct Reloadable<'a> {
    pub store: &'a mut Store,
    pub journal: &'a mut Journal,
    pub peers: &'a mut Peers,
}

pub(crate) struct Server {
    pub poll: Poll,
    pub listener: UnixListener,
    pub waker: Arc<Waker>,
    pub commands: crossbeam_channel::Receiver<Command>,
    pub store: Store,
    pub journal: Journal,
    pub compact_bytes: u64,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Set by the signal thread: [`STOP`] or [`RELOAD`].
    pub signal: Arc<AtomicU8>,
    /// Who may connect to the socket.
    pub peers: Peers,
    /// Journal size past which the next compaction starts: `compact_bytes`, or more after a
    /// compaction that could not even start (so that it is not retried every iteration).
    compact_at: u64,
    links: Slab<Link>,
    /// Gateway index → the link (token) currently speaking for it.
    gateway_links: Vec<Option<usize>>,
    decoder: Decoder,
    /// What every link's reads go into (complete frames are applied from here).
    scratch: Vec<u8>,
    answers: Vec<Answer>,
    dirty: Vec<usize>,
    /// Loop iterations so far; see [`Server::loops`].
    loops: Arc<AtomicU64>,
    /// The fleet, when this host is one of many (`fleet`).
    fleet: Option<Fleet>,
    fleet_answers: Vec<Answer>,
}

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        poll: Poll,
        mut listener: UnixListener,
        waker: Arc<Waker>,
        commands: crossbeam_channel::Receiver<Command>,
        store: Store,
        journal: Journal,
        compact_bytes: u64,
        metrics: Arc<Metrics>,
        clock: Clock,
        signal: Arc<AtomicU8>,
        peers: Peers,
    ) -> io::Result<Server> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            waker,
            commands,
            store,
            journal,
            compact_bytes,
            metrics,
            clock,
            signal,
            peers,
            compact_at: compact_bytes,
            links: Slab::new(),
            gateway_links: Vec::new(),
            decoder: Decoder::new(MAX_BODY),
            scratch: vec![0; READ_CHUNK],
            answers: Vec::new(),
            dirty: Vec::new(),
            loops: Arc::new(AtomicU64::new(0)),
            fleet: None,
            fleet_answers: Vec::new(),
        })
    }

    /// Joins the fleet: logins, foreign resumes and pushes go through its engine.
    pub(crate) fn with_fleet(mut self, fleet: Option<Fleet>) -> Server {
        self.fleet = fleet;
        self
    }

    /// The loop's iteration count, bumped once per iteration: the systemd watchdog checks
    /// that it moves (after a wake-up through the waker, so an idle loop moves too).
    pub(crate) fn loops(&self) -> Arc<AtomicU64> {
        self.loops.clone()
    }

    /// Runs until a stop signal; `reload` is called for SIGHUP.
    pub(crate) fn run(&mut self, mut reload: impl FnMut(Reloadable<'_>)) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = self.clock.now();
            let wait = self
                .store
                .next_deadline()
                .map_or(MAX_WAIT, |at| {
                    Duration::from_millis(at.saturating_sub(now.mono_ms))
                })
                .min(MAX_WAIT);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e).context("poll");
                }
            }
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    Token(t) => {
                        let slot = t - FIRST_LINK;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_link(slot, now);
                        }
                        if event.is_writable() && self.links.contains(slot) {
                            self.dirty.push(slot);
                        }
                    }
                }
            }
            self.take_commands(now);
            self.take_fleet(now);
            self.store.advance(now);
            if let Some(fleet) = self.fleet.as_mut() {
                fleet.observe(&self.store);
            }
            self.commit(now)?;
            if let Some(fleet) = self.fleet.as_mut() {
                fleet.tick(now);
            }
            self.send();
            self.loops.fetch_add(1, Ordering::Relaxed);

            match self.signal.swap(RUN, Ordering::Relaxed) {
                STOP => return self.stop(),
                RELOAD => reload(Reloadable {
                    store: &mut self.store,
                    journal: &mut self.journal,
                    peers: &mut self.peers,
                }),
                _ => {}
            }
        }
    }

    fn accept(&mut self) -> anyhow::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.links.len() >= MAX_LINKS {
                        tracing::warn!(
                            max = MAX_LINKS,
                            "too many gateway links; closing a new one"
                        );
                        continue;
                    }
                    let peer = match peer_credentials(&stream) {
                        Ok(peer) => peer,
                        Err(e) => {
                            self.metrics.peers_refused.inc();
                            tracing::warn!(error = %e, "state socket: cannot read a peer's credentials; closing it");
                            continue;
                        }
                    };
                    if !self.peers.allows(&peer) {
                        self.metrics.peers_refused.inc();
                        tracing::warn!(
                            pid = peer.pid,
                            uid = peer.uid,
                            gid = peer.gid,
                            groups = ?peer.groups,
                            allowed = %self.peers,
                            "state socket: refused a peer not in allow_uids / allow_gids"
                        );
                        let fault = LinkFault {
                            code: ErrorCode::AuthFailed,
                            id: 0,
                            reason: format!(
                                "uid {} gid {} may not use this socket (allow_uids, allow_gids)",
                                peer.uid, peer.gid
                            ),
                        };
                        let mut out = Vec::new();
                        state_error(&mut out, &fault);
                        // Best effort: an empty socket buffer takes it whole; then close.
                        let _ = stream.write(&out);
                        continue;
                    }
                    let entry = self.links.vacant_entry();
                    let token = Token(entry.key() + FIRST_LINK);
                    self.poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .context("register a gateway link")?;
                    entry.insert(Link::new(stream, peer));
                    self.metrics.links_open.set(self.links.len() as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and carry on; the backlog waits.
                    tracing::warn!(error = %e, "accept on the state socket failed");
                    return Ok(());
                }
            }
        }
    }

    /// Reads everything the gateway has sent, applying each frame, until the socket would
    /// block; bad input is refused with STATE_ERROR, EOF and failed reads close the link.
    fn read_link(&mut self, slot: usize, now: Now) {
        let Some(link) = self.links.get_mut(slot) else {
            return;
        };
        let mut partial = std::mem::take(&mut link.partial);
        let mut scratch = std::mem::take(&mut self.scratch);
        let decoder = self.decoder;
        let reading = read_frames(
            self,
            |s| s.links.get_mut(slot).map(|l| &mut l.stream),
            &mut scratch,
            &mut partial,
            &decoder,
            true,
            |s, frame| {
                s.metrics.frames_in.inc();
                match s.on_frame(slot, &frame, now) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(fault) => ControlFlow::Break(fault),
                }
            },
        );
        self.scratch = scratch;
        if let Some(link) = self.links.get_mut(slot) {
            link.partial = partial;
        }
        match reading.end {
            ReadEnd::Stopped(fault) => self.refuse(slot, fault),
            ReadEnd::Malformed(e) => self.refuse(
                slot,
                LinkFault {
                    code: e.code(),
                    id: e.offending_id(),
                    reason: e.to_string(),
                },
            ),
            ReadEnd::Failed(e) => {
                if let Some(link) = self.links.get(slot) {
                    tracing::warn!(gateway = %link.name, error = %e, "gateway link read failed");
                }
                self.close(slot);
            }
            ReadEnd::Eof => {
                if let Some(link) = self.links.get(slot) {
                    tracing::info!(gateway = %link.name, "gateway link closed by the gateway");
                }
                self.close(slot);
            }
            ReadEnd::Drained | ReadEnd::Withheld => {}
        }
    }

    fn on_frame(&mut self, slot: usize, frame: &Frame<'_>, now: Now) -> Result<(), LinkFault> {
        let Some(link) = self.links.get_mut(slot) else {
            return Ok(());
        };
        if let Some(gw) = link.gateway {
            if let Some(fleet) = self.fleet.as_mut() {
                if matches!(frame.kind, Kind::StateLogin | Kind::StateResume) {
                    let body = tether_proto::Routed::parse(frame.body).map_err(|e| LinkFault {
                        code: ErrorCode::BadFrame,
                        id: frame.id,
                        reason: e.to_string(),
                    })?;
                    let (id, route, token) = (frame.id, body.route, body.payload);
                    if frame.kind == Kind::StateLogin {
                        fleet.login(&mut self.store, gw, id, route, token, now);
                        return Ok(());
                    }
                    if fleet.resume(&self.store, gw, id, route, token, now) {
                        return Ok(());
                    }
                }
            }
            return self.store.on_frame(gw, frame, now);
        }
        if frame.kind != Kind::Hello {
            return Err(LinkFault {
                code: ErrorCode::BadFrame,
                id: frame.id,
                reason: format!("the first frame must be HELLO, not {}", frame.kind.name()),
            });
        }
        let name = std::str::from_utf8(frame.body)
            .ok()
            .filter(|n| !n.is_empty() && n.len() <= MAX_GATEWAY_ID)
            .filter(|n| !n.chars().any(char::is_control))
            .filter(|n| self.store.can_add_gateway(n))
            .ok_or_else(|| LinkFault {
                code: ErrorCode::BadFrame,
                id: frame.id,
                reason: format!("the gateway id must be 1 to {MAX_GATEWAY_ID} bytes of UTF-8 without control characters"),
            })?
            .to_string();
        let held = self
            .store
            .gateway_of(&name)
            .and_then(|gw| self.gateway_links.get(gw as usize).copied().flatten());
        if let Some(old) = held {
            if self.links.get(old).is_some_and(|l| !peer_gone(&l.stream)) {
                if let Some(link) = self.links.get(slot) {
                    let p = &link.peer;
                    tracing::warn!(gateway = %name, pid = p.pid, uid = p.uid, gid = p.gid, "refused a HELLO: a live link holds this gateway id");
                }
                return Err(LinkFault {
                    code: ErrorCode::AuthFailed,
                    id: frame.id,
                    reason: format!(
                        "gateway id {name:?} is held by a live link; it is free once that link closes"
                    ),
                });
            }
            // Its EOF may still wait in this iteration's events: close it now.
            tracing::info!(gateway = %name, "gateway link closed by the gateway (seen at its new HELLO)");
            self.close(old);
        }
        let gw = self.store.hello(&name);
        let index = gw as usize;
        if self.gateway_links.len() <= index {
            self.gateway_links.resize(index + 1, None);
        }
        self.gateway_links[index] = Some(slot);
        tracing::info!(gateway = %name, "gateway link up");
        if let Some(link) = self.links.get_mut(slot) {
            link.gateway = Some(gw);
            link.name = name;
        }
        Ok(())
    }

    /// Bad input on a link, or a HELLO refused: STATE_ERROR, best effort, then close.
    fn refuse(&mut self, slot: usize, fault: LinkFault) {
        // AUTH_FAILED on a link is only ever a refused HELLO, logged where it was decided.
        let hello_refused = fault.code == ErrorCode::AuthFailed;
        if hello_refused {
            self.metrics.hellos_refused.inc();
        } else {
            self.metrics.link_errors.inc();
        }
        if let Some(link) = self.links.get_mut(slot) {
            if !hello_refused {
                tracing::warn!(gateway = %link.name, code = fault.code.as_u16(), reason = %fault.reason, "closing a gateway link for bad input");
            }
            state_error(&mut link.out, &fault);
            let _ = link.flush();
        }
        self.close(slot);
    }

    fn close(&mut self, slot: usize) {
        let Some(mut link) = self.links.try_remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut link.stream);
        if let Some(gw) = link.gateway {
            if self.gateway_links.get(gw as usize) == Some(&Some(slot)) {
                self.gateway_links[gw as usize] = None;
                self.store.link_down(gw);
                tracing::info!(gateway = %link.name, "gateway link down");
            }
        }
        self.metrics.links_open.set(self.links.len() as u64);
    }

    fn take_commands(&mut self, now: Now) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Push {
                    device,
                    payload,
                    ttl_s,
                    reply,
                } => match self.fleet.as_mut() {
                    Some(fleet) => fleet.push(&self.store, device, payload, ttl_s, reply, now),
                    None => {
                        let result = self.store.push(&device, &payload, ttl_s, now);
                        self.answers.push(Answer::Push(reply, result));
                    }
                },
                // In a fleet, a device this host does not hold is looked up (or ended)
                // wherever it is.
                Command::View { device, reply } => match self.store.view(&device, now) {
                    Some(view) => {
                        let view = match &self.fleet {
                            Some(fleet) => fleet.here(view),
                            None => view,
                        };
                        let _ = reply.send(Some(view));
                    }
                    None => match self.fleet.as_mut() {
                        Some(fleet) => fleet.view(device, reply),
                        None => {
                            let _ = reply.send(None);
                        }
                    },
                },
                Command::End { device, reply } => match self.store.end_session(&device) {
                    Some(ended) => {
                        tracing::info!(device = %ended.device_id, session = %ended.session, was_online = ended.was_online, "session ended through the push API");
                        let ended = match &self.fleet {
                            Some(fleet) => fleet.ended_here(ended),
                            None => ended,
                        };
                        self.answers.push(Answer::End(reply, Some(ended)));
                    }
                    None => match self.fleet.as_mut() {
                        Some(fleet) => fleet.end(device, reply),
                        None => self.answers.push(Answer::End(reply, None)),
                    },
                },
                // Rooms are this host's own, in a fleet too (doc/fleet.md, "Limits").
                Command::Join {
                    device,
                    room,
                    reply,
                } => {
                    let result = self.store.join_device(&device, &room, now);
                    self.answers.push(Answer::Membership(reply, result));
                }
                Command::Leave {
                    device,
                    room,
                    reply,
                } => {
                    let result = self.store.leave_device(&device, &room);
                    self.answers.push(Answer::Membership(reply, result));
                }
                Command::Publish {
                    room,
                    payload,
                    reply,
                } => {
                    let result = match room {
                        Some(room) => self.store.publish_room(&room, &payload, now),
                        None => Ok(self.store.broadcast(&payload, now)),
                    };
                    self.answers.push(Answer::Published(reply, result));
                }
                Command::RoomView { room, reply } => {
                    let _ = reply.send(self.store.room_view(&room));
                }
            }
        }
    }

    /// What the fleet's engine answered and its bus brought, carried out on the store; push
    /// answers leave with this iteration's, after the journal.
    fn take_fleet(&mut self, now: Now) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        fleet.take_events(&mut self.store, now, &mut self.fleet_answers);
        self.answers.append(&mut self.fleet_answers);
    }

    /// Journals this iteration's records; compacts when the journal has grown enough.
    fn commit(&mut self, now: Now) -> anyhow::Result<()> {
        for record in self.store.records() {
            self.journal.append(record).context("journal append")?;
        }
        self.store.clear_records();
        match self.journal.tick(now.mono_ms).context("journal write")? {
            Some(Compacted::Done { compaction, ms }) => {
                self.metrics.compactions.inc();
                tracing::info!(
                    generation = compaction.generation,
                    records = compaction.records,
                    bytes = compaction.bytes,
                    ms,
                    "journal compacted"
                );
            }
            Some(Compacted::Failed { compaction, error }) => {
                self.metrics.compaction_failures.inc();
                tracing::warn!(
                    generation = compaction.generation,
                    error = %error,
                    "journal compaction failed; nothing is lost (the journals since the \
                     previous snapshot are kept), the next one tries again"
                );
            }
            None => {}
        }
        if self.journal.size_bytes() > self.compact_at && !self.journal.is_compacting() {
            self.start_compaction(now)?;
        }
        self.metrics.journal_bytes.set(self.journal.size_bytes());
        self.metrics
            .journal_generation
            .set(self.journal.generation());
        self.store.publish();
        Ok(())
    }

    /// Encodes the state and switches journals here; the snapshot is written in the
    /// background and `tick` reports it.
    fn start_compaction(&mut self, now: Now) -> anyhow::Result<()> {
        let started = Instant::now();
        let store = &self.store;
        let snapshot = |image: &mut ImageWriter| {
            store.snapshot(now, |record| image.record(|out| record.encode(out)));
        };
        match self.journal.start_compaction_with(snapshot) {
            Ok(compaction) => {
                self.compact_at = self.compact_bytes;
                tracing::info!(
                    generation = compaction.generation,
                    records = compaction.records,
                    bytes = compaction.bytes,
                    loop_ms = started.elapsed().as_millis() as u64,
                    "journal compaction started; the snapshot is written in the background"
                );
                Ok(())
            }
            // A failed fdatasync of the journal: it cannot be trusted any more.
            Err(e) if self.journal.is_poisoned() => Err(e).context("journal compaction"),
            Err(error) => {
                self.metrics.compaction_failures.inc();
                self.compact_at = self.journal.size_bytes().saturating_add(self.compact_bytes);
                tracing::warn!(
                    generation = self.journal.generation(),
                    error = %error,
                    retry_past_bytes = self.compact_at,
                    "journal compaction could not start; carrying on in the current journal"
                );
                Ok(())
            }
        }
    }

    /// Writes what the store queued for each gateway, and answers the pushes.
    fn send(&mut self) {
        let (links, gateway_links, dirty) = (&mut self.links, &self.gateway_links, &mut self.dirty);
        self.store.drain_out(|gw, frames| {
            let Some(Some(slot)) = gateway_links.get(gw as usize) else {
                return;
            };
            if let Some(link) = links.get_mut(*slot) {
                if link.out.is_empty() {
                    std::mem::swap(&mut link.out, frames);
                } else {
                    link.out.extend_from_slice(frames);
                }
                dirty.push(*slot);
            }
        });
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for slot in dirty.drain(..) {
            self.flush_link(slot);
        }
        self.dirty = dirty;
        for answer in self.answers.drain(..) {
            answer.send();
        }
    }

    fn flush_link(&mut self, slot: usize) {
        let Some(link) = self.links.get_mut(slot) else {
            return;
        };
        let result = link.flush();
        let token = Token(slot + FIRST_LINK);
        match result {
            Ok(true) if link.wants_write => {
                link.wants_write = false;
                let _ =
                    self.poll
                        .registry()
                        .reregister(&mut link.stream, token, Interest::READABLE);
            }
            Ok(true) => {}
            Ok(false) if link.backlog() > MAX_OUT => {
                tracing::warn!(gateway = %link.name, backlog = link.backlog(), "gateway does not read its link; closing it");
                self.close(slot);
            }
            Ok(false) => {
                if !link.wants_write {
                    link.wants_write = true;
                    let _ = self.poll.registry().reregister(
                        &mut link.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                }
            }
            Err(e) => {
                tracing::warn!(gateway = %link.name, error = %e, "gateway link write failed");
                self.close(slot);
            }
        }
    }

    /// SIGTERM: everything journaled is made durable, links are closed, exit 0.
    fn stop(&mut self) -> anyhow::Result<()> {
        tracing::info!("stopping");
        tether_daemon::notify::stopping();
        let now = self.clock.now();
        self.take_commands(now);
        self.commit(now)?;
        self.send();
        self.journal.flush().context("journal flush")?;
        let slots: Vec<usize> = self.links.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot);
        }
        Ok(())
    }
}

/// Appends a STATE_ERROR carrying `fault`.
fn state_error(out: &mut Vec<u8>, fault: &LinkFault) {
    encode::header(out, Kind::StateError, 0, fault.id, 2 + fault.reason.len());
    out.extend_from_slice(&fault.code.as_u16().to_be_bytes());
    out.extend_from_slice(fault.reason.as_bytes());
}
