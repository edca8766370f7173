//! The reactor's side of sessions (`--state`): a connection must LOGIN (or RESUME) through
//! the state daemon before anything else; PINGs are answered here and reported to the daemon
//! in HEARTBEAT batches; the daemon's KICKs close clients and its PUSHes reach them; their
//! ACKs and closes go back. While the link is down, logged-in clients carry on and new logins
//! are answered UNAVAILABLE; when it comes back, the reactor re-announces its logged-in routes.

use std::ops::ControlFlow;
use std::time::Instant;

use mio::Interest;
use tether_daemon::nonblocking::{read_frames, ReadEnd};
use tether_proto::{ErrorCode, Frame, Kind};

use super::{Reactor, STATE};
use crate::client::{Login, Marks};
use crate::login_gate;
use crate::metrics::{CloseReason, SessionEvent};
use crate::route::Route;
use crate::state_link::{self, Phase, StateEvent};

impl Reactor {
    /// Frames of a client while a state daemon is configured. Returns `true` when the frame
    /// was handled here; `false` sends it down the ordinary path (PING, DATA of a logged-in
    /// client).
    pub(super) fn gate(&mut self, slot: usize, frame: &Frame<'_>) -> bool {
        let Some(client) = self.clients.get_mut(slot) else {
            return true;
        };
        client.marks.set(Marks::ALIVE, true);
        let login = client.login;
        match frame.kind {
            Kind::Login | Kind::Resume => {
                self.start_login(slot, frame);
                true
            }
            Kind::Ack if login == Login::In => {
                let route = self.route_of(slot);
                if let Some(link) = self.state.as_mut().filter(|l| l.is_up()) {
                    link.routed(Kind::StateAck, frame.id, route, &[]);
                    self.metrics.session(SessionEvent::Ack);
                }
                true
            }
            Kind::Join | Kind::Leave if login == Login::In => {
                self.relay_room(slot, frame);
                true
            }
            _ if login == Login::In => false,
            Kind::Data | Kind::Ping | Kind::Ack | Kind::Join | Kind::Leave => {
                self.client_error(slot, frame.id, ErrorCode::NotLoggedIn, "log in first");
                true
            }
            // Everything else gets UNKNOWN_KIND on the ordinary path.
            _ => false,
        }
    }

    /// LOGIN or RESUME: to the daemon, or UNAVAILABLE (the connection stays) without it,
    /// or BUSY with a retry-after hint when `max_logins_inflight` are at the daemon.
    fn start_login(&mut self, slot: usize, frame: &Frame<'_>) {
        let route = self.route_of(slot);
        if self
            .clients
            .get(slot)
            .is_some_and(|c| c.login == Login::Pending)
        {
            // Its first one is still at the daemon: that answer decides.
            return self.client_error(
                slot,
                frame.id,
                ErrorCode::Busy,
                "a login of this connection is in flight",
            );
        }
        if self.state.as_ref().is_some_and(|l| l.is_up()) {
            if let Err(hint_ms) = self.login_gate.enter(self.now) {
                self.metrics.session(SessionEvent::Busy);
                return self.client_error(
                    slot,
                    frame.id,
                    ErrorCode::Busy,
                    &login_gate::busy_reason(hint_ms),
                );
            }
        }
        let Some(link) = self.state.as_mut().filter(|l| l.is_up()) else {
            self.metrics.session(SessionEvent::Unavailable);
            return self.client_error(
                slot,
                frame.id,
                ErrorCode::Unavailable,
                "the state daemon is unavailable; retry",
            );
        };
        let kind = if frame.kind == Kind::Login {
            Kind::StateLogin
        } else {
            Kind::StateResume
        };
        link.routed(kind, frame.id, route, frame.body);
        if let Some(client) = self.clients.get_mut(slot) {
            // A second LOGIN on a logged-in connection replaces its session at the daemon
            // (whose rooms come again with its MEMBERSHIP).
            client.login = Login::Pending;
        }
        self.room_members.remove_client(slot as u32);
    }

    pub(super) fn route_of(&self, slot: usize) -> u64 {
        let generation = self.clients.get(slot).map_or(0, |c| c.generation);
        Route::new(self.index, generation, slot).map_or(0, Route::pack)
    }

    /// A login answer for `route` came back: one fewer at the daemon; the client, if it is
    /// still there.
    fn answered_login(&mut self, route: u64) -> Option<usize> {
        self.login_gate.answered(self.now);
        self.client_of(route)
    }

    /// The client a route from the daemon names, if it is still the same connection.
    fn client_of(&self, route: u64) -> Option<usize> {
        let r = Route::unpack(route);
        let slot = r.slot as usize;
        (usize::from(r.reactor) == self.index
            && self
                .clients
                .get(slot)
                .is_some_and(|c| c.generation == r.generation))
        .then_some(slot)
    }

    /// A logged-in client closed: the daemon detaches its session (it can be resumed).
    pub(super) fn send_closed(&mut self, slot: usize, generation: u32, reason: CloseReason) {
        let Some(route) = Route::new(self.index, generation, slot).map(Route::pack) else {
            return;
        };
        if let Some(link) = self.state.as_mut().filter(|l| l.is_up()) {
            link.routed(Kind::Closed, 0, route, reason.label().as_bytes());
            self.metrics.session(SessionEvent::Closed);
        }
    }

    /// Readiness on the state link.
    pub(super) fn state_event(&mut self, readable: bool, writable: bool) {
        if writable {
            self.flush_state();
        }
        if readable {
            self.read_state();
        }
    }

    /// Reads everything the daemon has sent, acting on each frame, until the socket would
    /// block; a bad frame, EOF or a failed read take the link down.
    fn read_state(&mut self) {
        let Some(link) = self.state.as_mut() else {
            return;
        };
        let mut partial = std::mem::take(&mut link.partial);
        let mut scratch = std::mem::take(&mut self.scratch);
        let decoder = tether_proto::Decoder::new(state_link::MAX_BODY);
        let reading = read_frames(
            self,
            |r| r.state.as_mut().and_then(|l| l.stream.as_mut()),
            &mut scratch,
            &mut partial,
            &decoder,
            true,
            |r, frame| {
                match state_link::parse(&frame) {
                    Ok(event) => r.on_state_event(event),
                    Err(e) => return ControlFlow::Break(Some(e)),
                }
                if r.state.as_ref().is_none_or(|l| l.stream.is_none()) {
                    return ControlFlow::Break(None); // the event took the link down
                }
                ControlFlow::Continue(())
            },
        );
        self.scratch = scratch;
        match reading.end {
            ReadEnd::Stopped(None) => {}
            ReadEnd::Stopped(Some(e)) => {
                self.state_down(&format!("bad frame from the state daemon: {e}"))
            }
            ReadEnd::Malformed(e) => {
                self.state_down(&format!("bad frame from the state daemon: {e}"))
            }
            ReadEnd::Failed(e) => self.state_down(&format!("read failed: {e}")),
            ReadEnd::Eof => self.state_down("the state daemon closed the link"),
            ReadEnd::Drained | ReadEnd::Withheld => {
                if let Some(link) = self.state.as_mut() {
                    link.partial = partial;
                }
            }
        }
    }

    fn on_state_event(&mut self, event: StateEvent<'_>) {
        match event {
            StateEvent::Up { heartbeat_s } => {
                let now = self.now;
                if let Some(link) = self.state.as_mut() {
                    link.up(heartbeat_s, now);
                    tracing::info!(reactor = self.index, link = %link.name, heartbeat_s, "state link up");
                }
                self.metrics.state_link_up.add(1);
                // The daemon sends MEMBERSHIP again for every announced connection in a room.
                self.room_members.clear();
                self.announce();
            }
            StateEvent::LoginOk { id, route, body } => match self.answered_login(route) {
                Some(slot) => {
                    if let Some(client) = self.clients.get_mut(slot) {
                        client.login = Login::In;
                        client.marks.set(Marks::ALIVE, true);
                    }
                    self.metrics.session(SessionEvent::LoginOk);
                    self.reply(slot, Kind::LoginOk, id, body);
                }
                None => {
                    // The client left before its login completed: detach what was made.
                    if let Some(link) = self.state.as_mut() {
                        link.routed(Kind::Closed, 0, route, b"closed before login completed");
                    }
                }
            },
            StateEvent::LoginFail {
                id,
                route,
                code,
                reason,
            } => {
                if let Some(slot) = self.answered_login(route) {
                    if let Some(client) = self.clients.get_mut(slot) {
                        client.login = Login::Awaiting;
                    }
                    let code = ErrorCode::from_u16(code).unwrap_or(ErrorCode::AuthFailed);
                    self.metrics.session(SessionEvent::LoginFailed);
                    self.client_error(slot, id, code, reason);
                }
            }
            StateEvent::Kick {
                route,
                code,
                reason,
            } => {
                let live = self
                    .client_of(route)
                    .filter(|&slot| self.clients[slot].closing.is_none());
                if let Some(slot) = live {
                    if let Some(client) = self.clients.get_mut(slot) {
                        client.login = Login::Kicked;
                    }
                    let code = ErrorCode::from_u16(code)
                        .filter(|c| c.closes_connection())
                        .unwrap_or(ErrorCode::Kicked);
                    self.metrics.session(SessionEvent::Kicked);
                    self.client_error(slot, 0, code, reason);
                }
            }
            StateEvent::Push {
                msg,
                route,
                payload,
            } => {
                let logged_in = self
                    .client_of(route)
                    .filter(|&slot| self.clients[slot].login == Login::In);
                match logged_in {
                    Some(slot) => {
                        self.metrics.session(SessionEvent::Push);
                        self.reply(slot, Kind::Push, msg, payload);
                    }
                    None => {
                        // Gone, or not logged in (any more): the daemon keeps it queued.
                        self.metrics.session(SessionEvent::Undelivered);
                        if let Some(link) = self.state.as_mut() {
                            link.routed(Kind::Undelivered, msg, route, &[]);
                        }
                    }
                }
            }
            StateEvent::RoomOk { id, route, body } => self.room_answer(id, route, Ok(body)),
            StateEvent::RoomFail {
                id,
                route,
                code,
                reason,
            } => self.room_answer(id, route, Err((code, reason))),
            StateEvent::Membership { route, names } => self.set_membership(route, names),
            StateEvent::RoomMessage { id, route, body } => self.deliver_room(id, route, body),
            StateEvent::Refused { code, reason } => {
                // A refused HELLO (5: a live link holds this gateway id, or this process may
                // not use the socket) is the operator's to fix: warn at every retry.
                let why = format!("the state daemon refused the link ({code}: {reason})");
                if let Some(link) = self.state.as_mut() {
                    link.complained = false;
                }
                self.state_down(&why);
            }
        }
    }

    /// After HELLO_OK: every logged-in route, so the daemon keeps exactly these online.
    fn announce(&mut self) {
        let index = self.index;
        let routes: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.login == Login::In)
            .filter_map(|(slot, c)| Route::new(index, c.generation, slot).map(Route::pack))
            .collect();
        if let Some(link) = self.state.as_mut() {
            link.routes(Kind::Announce, &routes);
            link.frame(Kind::AnnounceEnd);
            tracing::info!(
                reactor = index,
                routes = routes.len(),
                "announced logged-in connections"
            );
        }
    }

    /// The link failed: clients waiting for a login answer get UNAVAILABLE (and may retry);
    /// logged-in clients carry on; reconnect with backoff.
    fn state_down(&mut self, why: &str) {
        let now = self.now;
        self.login_gate.reset();
        let Some(link) = self.state.as_mut() else {
            return;
        };
        let was_up = link.is_up();
        if let Some(mut stream) = link.down(now) {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if was_up {
            self.metrics.state_link_up.add(u64::MAX); // −1, wrapping
        }
        if was_up || !link.complained {
            link.complained = true;
            tracing::warn!(reactor = self.index, link = %link.name, reason = why, "state link down; retrying with backoff");
        } else {
            tracing::debug!(reactor = self.index, reason = why, "state link still down");
        }
        let pending: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.login == Login::Pending)
            .map(|(slot, _)| slot)
            .collect();
        for slot in pending {
            if let Some(client) = self.clients.get_mut(slot) {
                client.login = Login::Awaiting;
            }
            self.metrics.session(SessionEvent::Unavailable);
            self.client_error(
                slot,
                0,
                ErrorCode::Unavailable,
                "the state daemon went away; retry",
            );
        }
    }

    /// Writes what is queued for the daemon; WRITABLE interest only while some is left.
    pub(super) fn flush_state(&mut self) {
        let Some(link) = self.state.as_mut() else {
            return;
        };
        if link.stream.is_none() {
            return;
        }
        match link.flush() {
            Ok(done) => {
                if done == link.writable {
                    let interest = if done {
                        Interest::READABLE
                    } else {
                        Interest::READABLE | Interest::WRITABLE
                    };
                    link.writable = !done;
                    if let Some(stream) = link.stream.as_mut() {
                        let _ = self.poll.registry().reregister(stream, STATE, interest);
                    }
                }
            }
            Err(e) => self.state_down(&format!("write failed: {e}")),
        }
    }

    /// On every reactor tick: reconnect when due, send the heartbeat batch when due, and time
    /// out connections that did not log in.
    pub(super) fn tick_state(&mut self) {
        let now = self.now;
        let Some(link) = self.state.as_mut() else {
            return;
        };
        match link.phase {
            Phase::Down { retry_at } if now >= retry_at => match link.connect() {
                Ok(stream) => {
                    if let Err(e) = self.poll.registry().register(
                        stream,
                        STATE,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.state_down(&format!("register failed: {e}"));
                    } else if let Some(link) = self.state.as_mut() {
                        link.writable = true;
                    }
                }
                Err(e) => self.state_down(&format!("connect failed: {e}")),
            },
            Phase::Up if now.duration_since(link.last_heartbeat) >= link.heartbeat / 2 => {
                self.send_heartbeats(now);
            }
            _ => {}
        }
        self.expire_logins();
    }

    /// HEARTBEAT for every logged-in client that sent anything since the last batch.
    fn send_heartbeats(&mut self, now: Instant) {
        let index = self.index;
        let mut routes = Vec::new();
        for (slot, client) in self.clients.iter_mut() {
            if client.login == Login::In && client.marks.has(Marks::ALIVE) {
                client.marks.set(Marks::ALIVE, false);
                if let Some(route) = Route::new(index, client.generation, slot) {
                    routes.push(route.pack());
                }
            }
        }
        if let Some(link) = self.state.as_mut() {
            link.last_heartbeat = now;
            link.routes(Kind::Heartbeat, &routes);
        }
    }

    /// TIMEOUT for connections still not logged in at their deadline.
    fn expire_logins(&mut self) {
        let now_ms = self.now_ms();
        while let Some(&(slot, generation, deadline)) = self.logins.front() {
            // Deadlines are pushed in order; compare on the wrapping clock.
            if (now_ms.wrapping_sub(deadline) as i32) < 0 {
                break;
            }
            self.logins.pop_front();
            let waiting = self.clients.get(slot).is_some_and(|c| {
                c.generation == generation && matches!(c.login, Login::Awaiting | Login::Pending)
            });
            if waiting {
                self.client_error(slot, 0, ErrorCode::Timeout, "no login in time");
            }
        }
    }
}
