//! The reactor's side of rooms: a client's JOIN and LEAVE go to the state daemon and its
//! answers come back; MEMBERSHIP says which connections are in which room
//! ([`RoomMembers`](crate::room_members::RoomMembers)); a window (ROOM_MESSAGE) is encoded
//! once as a ROOM frame, and at the end of the loop iteration the iteration's windows of a
//! room are written to each member's socket in one write (queued only behind what already
//! waits for it), skipped by a member too far behind (`room_skip_bytes`); a node's
//! NODE_PUBLISH goes on to the daemon.

use tether_daemon::nonblocking::write_queued;
use tether_proto::{encode, ErrorCode, Frame, Kind};

use super::Reactor;
use crate::client::{Login, Marks};
use crate::metrics::{CloseReason, RoomEvent};
use crate::route::Route;

/// The windows of one room received in this loop iteration, encoded as ROOM frames one after
/// the other.
pub(super) struct PendingWindows {
    room: Box<str>,
    frames: Vec<u8>,
    count: u64,
}

impl Reactor {
    /// A logged-in client's JOIN or LEAVE: to the daemon with the connection's route, or
    /// UNAVAILABLE while the link is down. A body that is not a JOIN or LEAVE is BAD_FRAME.
    pub(super) fn relay_room(&mut self, slot: usize, frame: &Frame<'_>) {
        let valid = match frame.kind {
            Kind::Join => tether_proto::room::Join::parse(frame.body).is_ok(),
            _ => tether_proto::room::leave(frame.body).is_ok(),
        };
        if !valid {
            return self.client_error(
                slot,
                frame.id,
                ErrorCode::BadFrame,
                "a JOIN is u64 after + a room name, a LEAVE a room name (1-128 bytes, no control characters)",
            );
        }
        let route = self.route_of(slot);
        let Some(link) = self.state.as_mut().filter(|l| l.is_up()) else {
            self.metrics.room(RoomEvent::Unavailable, 1);
            return self.client_error(
                slot,
                frame.id,
                ErrorCode::Unavailable,
                "the state daemon is unavailable; retry",
            );
        };
        let kind = if frame.kind == Kind::Join {
            Kind::StateJoin
        } else {
            Kind::StateLeave
        };
        link.routed(kind, frame.id, route, frame.body);
        self.metrics.room(RoomEvent::Relayed, 1);
    }

    /// The daemon's ROOM_OK or ROOM_FAIL for a client's JOIN or LEAVE.
    pub(super) fn room_answer(&mut self, id: u64, route: u64, answer: Result<&[u8], (u16, &str)>) {
        let Some(slot) = self.logged_in(route) else {
            return;
        };
        match answer {
            Ok(body) => self.reply(slot, Kind::RoomOk, id, body),
            Err((code, reason)) => {
                self.metrics.room(RoomEvent::Refused, 1);
                // Only codes that answer one request: a refusal never closes the connection.
                let code = ErrorCode::from_u16(code)
                    .filter(|c| !c.closes_connection())
                    .unwrap_or(ErrorCode::Forbidden);
                self.client_error(slot, id, code, reason);
            }
        }
    }

    /// MEMBERSHIP: the connection at `route` is in exactly these rooms.
    pub(super) fn set_membership(&mut self, route: u64, names: &[u8]) {
        let Some(slot) = self.logged_in(route) else {
            return;
        };
        let generation = self.clients[slot].generation;
        let names = tether_proto::room::names(names).filter_map(Result::ok);
        self.room_members.set(slot as u32, generation, names);
    }

    /// A window for every member here (`route` 0), or a replay for one connection, encoded
    /// once. A replay leaves at once; a window waits for the end of the loop iteration
    /// ([`Reactor::fan_out_rooms`]), so that every window of one room the daemon sent in this
    /// iteration reaches each member in one write: under load, windows queue on the link
    /// and each member's writes grow instead of multiplying.
    pub(super) fn deliver_room(&mut self, id: u64, route: u64, body: &[u8]) {
        self.metrics.room(RoomEvent::Window, 1);
        if route != 0 {
            let mut frame = std::mem::take(&mut self.room_frame);
            frame.clear();
            encode::frame(&mut frame, Kind::Room, id, body);
            if let Some(slot) = self.logged_in(route) {
                if let Err(reason) = self.write_room(slot, &frame) {
                    self.close_client(slot, reason);
                }
                self.metrics.room(RoomEvent::Delivered, 1);
            }
            self.room_frame = frame;
            return;
        }
        // The room's name: the parser on the link checked the body whole.
        let room = tether_proto::room::Batch::parse(body).map_or("", |b| b.room);
        let at = match self.room_windows.iter().position(|w| &*w.room == room) {
            Some(at) => at,
            None => {
                self.room_windows.push(PendingWindows {
                    room: room.into(),
                    frames: Vec::new(),
                    count: 0,
                });
                self.room_windows.len() - 1
            }
        };
        let pending = &mut self.room_windows[at];
        encode::frame(&mut pending.frames, Kind::Room, id, body);
        pending.count += 1;
    }

    /// The windows of this iteration, each room's written once to each of its members here
    /// (every logged-in connection for the broadcast); a member with more than
    /// `room_skip_bytes` unwritten skips them.
    pub(super) fn fan_out_rooms(&mut self) {
        if self.room_windows.is_empty() {
            return;
        }
        let mut windows = std::mem::take(&mut self.room_windows);
        for pending in &windows {
            self.fan_out(&pending.room, &pending.frames, pending.count);
        }
        windows.clear();
        self.room_windows = windows;
    }

    fn fan_out(&mut self, room: &str, frames: &[u8], count: u64) {
        let skip_at = self.settings.room_skip_bytes;
        let (mut delivered, mut skipped) = (0, 0);
        let mut failed = std::mem::take(&mut self.room_failed);
        let mut members = std::mem::take(&mut self.room_slots);
        members.clear();
        if room.is_empty() {
            members.extend(
                self.clients
                    .iter()
                    .filter(|(_, c)| c.login == Login::In)
                    .map(|(slot, c)| (slot as u32, c.generation)),
            );
        } else {
            members.extend_from_slice(self.room_members.members(room));
        }
        for &(slot, generation) in &members {
            let slot = slot as usize;
            let Some(client) = self.clients.get(slot) else {
                continue;
            };
            if client.generation != generation
                || client.login != Login::In
                || client.closing.is_some()
            {
                continue;
            }
            if skip_at > 0 && client.pending() + self.layer_pending(slot) > skip_at {
                skipped += count;
                continue;
            }
            delivered += count;
            if let Err(reason) = self.write_room(slot, frames) {
                failed.push((slot, reason));
            }
        }
        for (slot, reason) in failed.drain(..) {
            self.close_client(slot, reason);
        }
        self.room_failed = failed;
        self.metrics.room(RoomEvent::Delivered, delivered);
        self.metrics.room(RoomEvent::Skipped, skipped);
        self.room_slots = members;
    }

    /// One member's copy of its windows: written to its socket at once when nothing else
    /// waits for it (no buffer taken, no second pass), else queued behind what waits. Behind
    /// TLS or WebSocket it goes through the connection's layers, queued.
    fn write_room(&mut self, slot: usize, frame: &[u8]) -> Result<(), CloseReason> {
        let Some(client) = self.clients.get_mut(slot) else {
            return Ok(());
        };
        let mut written = 0;
        if !client.marks.has(Marks::LAYERED) && client.pending() == 0 {
            write_queued(&mut client.stream, frame, &mut written)
                .map_err(|_| CloseReason::Reset)?;
            self.metrics.bytes_out.add(written as u64);
            self.metrics.frames_out.inc();
            if written == frame.len() {
                return Ok(());
            }
        } else {
            self.metrics.frames_out.inc();
        }
        // The rest waits for the socket (the flush registers WRITABLE).
        if let Some(out) = self.client_output(slot) {
            out.extend_from_slice(&frame[written..]);
            self.mark_client(slot);
        }
        Ok(())
    }

    /// The client a route names, if it is the same connection and logged in.
    fn logged_in(&self, route: u64) -> Option<usize> {
        let r = Route::unpack(route);
        let slot = r.slot as usize;
        let client = self.clients.get(slot)?;
        (usize::from(r.reactor) == self.index
            && client.generation == r.generation
            && client.login == Login::In)
            .then_some(slot)
    }

    /// A node's NODE_PUBLISH: to the daemon as STATE_PUBLISH, or dropped (and counted)
    /// without one.
    pub(super) fn node_publish(&mut self, body: &[u8]) {
        let valid = tether_proto::room::Publish::parse(body).is_ok();
        match self.state.as_mut().filter(|l| l.is_up() && valid) {
            Some(link) => {
                link.frame_with_body(Kind::StatePublish, 0, body);
                self.metrics.room(RoomEvent::NodePublish, 1);
            }
            None => self.metrics.room(RoomEvent::NodePublishDropped, 1),
        }
    }
}
