//! Rooms in the store: which sessions are in which room (journaled with the session), who may
//! join by itself, publishing, the windows that leave on their deadline, and what each gateway
//! link is told (MEMBERSHIP for a route, ROOM_MESSAGE for a window, STATE_ROOM_OK / ROOM_FAIL
//! for a client's JOIN or LEAVE).
//!
//! A room's online members are counted per gateway link as sessions come and go
//! ([`Store::rooms_link_up`] and [`Store::rooms_link_down`], called where the route index
//! changes), so a window goes once to each link with a member and to no other.

use serde::Serialize;
use tether_proto::room::Join;
use tether_proto::{encode, ErrorCode, Kind};

use super::{Now, Store};
use crate::record::Record;
use crate::room::{Room, Window};

/// The broadcast's place in the window queue (it is not in the rooms' slab).
const BROADCAST: u32 = u32::MAX;
/// How often rooms nobody keeps are looked for and dropped.
const SWEEP_MS: u64 = 10_000;

/// Why a room command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRefused {
    /// The device has no session here.
    NoSession,
    /// Not a room name (1–128 bytes, no control characters).
    BadName,
    /// The token's `rooms` claim does not name the room (a client's own JOIN).
    NotGranted,
    /// The session is in `max_rooms_per_session` rooms.
    SessionFull { max: usize },
    /// The daemon holds `max_rooms` rooms.
    DaemonFull { max: usize },
    /// In a fleet: the engine could not number or publish the message.
    Unavailable,
}

impl RoomRefused {
    pub(crate) fn reason(&self) -> String {
        match self {
            RoomRefused::NoSession => "no session for this device".into(),
            RoomRefused::BadName => {
                "a room name is 1-128 bytes of UTF-8 without control characters".into()
            }
            RoomRefused::NotGranted => {
                "the login token's rooms claim does not name this room".into()
            }
            RoomRefused::SessionFull { max } => {
                format!("the session is in max_rooms_per_session ({max}) rooms")
            }
            RoomRefused::DaemonFull { max } => format!("the daemon holds max_rooms ({max}) rooms"),
            RoomRefused::Unavailable => {
                "the fleet's engine cannot be reached from this host; nothing was published, retry"
                    .into()
            }
        }
    }
}

/// A session's membership after a join or leave (the API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub room: String,
    pub device_id: String,
    pub member: bool,
    /// The room's latest sequence number.
    pub seq: u64,
}

/// A message published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// `None` for the broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub seq: u64,
    /// Alone: the gateway links it goes to when its window leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<usize>,
    /// In a fleet: the hosts with a member that received it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<usize>,
}

/// `GET /v1/rooms/{room}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    pub room: String,
    pub seq: u64,
    pub members: u32,
    pub online: u32,
    pub links: usize,
    pub history: usize,
}

impl Store {
    /// The room's index, created when it does not exist yet.
    fn room_index_of(&mut self, name: &str, now: Now) -> Result<u32, RoomRefused> {
        if !tether_proto::room::valid_name(name) {
            return Err(RoomRefused::BadName);
        }
        if let Some(&idx) = self.room_index.get(name) {
            return Ok(idx);
        }
        if self.rooms.len() >= self.rules.max_rooms {
            return Err(RoomRefused::DaemonFull {
                max: self.rules.max_rooms,
            });
        }
        let conflate = self.rules.conflates(name);
        // In a fleet the engine numbers messages: nothing seen here yet.
        let seq = match self.room_interest {
            Some(_) => 0,
            None => now.unix_ms.saturating_mul(super::IDS_PER_MS),
        };
        let idx = self.rooms.insert(Room::new(name, conflate, seq)) as u32;
        self.room_index.insert(name.into(), idx);
        Ok(idx)
    }

    /// Drops a room nobody keeps any more.
    fn drop_if_idle(&mut self, idx: u32) {
        if self.rooms.get(idx as usize).is_some_and(Room::is_idle) {
            let room = self.rooms.remove(idx as usize);
            self.room_index.remove(&room.name);
        }
    }

    /// Puts session `slot` in `name`: `(room, newly)`. Journaled unless replaying.
    pub(super) fn enter_room(
        &mut self,
        slot: usize,
        name: &str,
        now: Now,
        journal: bool,
    ) -> Result<(u32, bool), RoomRefused> {
        let idx = self.room_index_of(name, now)?;
        let s = &self.sessions[slot];
        if s.room_list().contains(&idx) {
            return Ok((idx, false));
        }
        if s.room_list().len() >= self.rules.max_rooms_per_session {
            self.drop_if_idle(idx);
            return Err(RoomRefused::SessionFull {
                max: self.rules.max_rooms_per_session,
            });
        }
        let (online, gw, session) = (s.is_online(), s.gateway, s.id);
        self.sessions[slot].rooms_mut().list.push(idx);
        self.count_member(idx, true, online.then_some(gw));
        if journal {
            self.log(Record::Join {
                session,
                room: name,
            });
        }
        Ok((idx, true))
    }

    /// Takes session `slot` out of `name`: whether it was in it. Journaled unless replaying.
    pub(super) fn exit_room(&mut self, slot: usize, name: &str, journal: bool) -> bool {
        let Some(&idx) = self.room_index.get(name) else {
            return false;
        };
        let s = &self.sessions[slot];
        let Some(at) = s.room_list().iter().position(|&r| r == idx) else {
            return false;
        };
        let (online, gw, session) = (s.is_online(), s.gateway, s.id);
        let s = &mut self.sessions[slot];
        s.rooms_mut().list.swap_remove(at);
        s.tidy_rooms();
        self.count_member(idx, false, online.then_some(gw));
        if journal {
            self.log(Record::Leave {
                session,
                room: name,
            });
            self.metrics.room_leaves.inc();
        }
        self.drop_if_idle(idx);
        true
    }

    /// One member more (`joined`) or fewer in room `idx`, online on `gw` when given; in a
    /// fleet, the room's first member or its last tells the bus to listen or stop.
    fn count_member(&mut self, idx: u32, joined: bool, gw: Option<u16>) {
        let Some(room) = self.rooms.get_mut(idx as usize) else {
            return;
        };
        if joined {
            room.members += 1;
        } else {
            room.members = room.members.saturating_sub(1);
        }
        match gw {
            Some(gw) if joined => room.link_up(gw),
            Some(gw) => room.link_down(gw),
            None => {}
        }
        let edge = if joined { 1 } else { 0 };
        if room.members == edge {
            if let Some(interest) = self.room_interest.as_mut() {
                interest.push((room.name.to_string(), joined));
            }
        }
    }

    /// The application's join (`POST /v1/rooms/{room}/members`).
    pub fn join_device(
        &mut self,
        device: &str,
        room: &str,
        now: Now,
    ) -> Result<Membership, RoomRefused> {
        let slot = self.find_device(device).ok_or(RoomRefused::NoSession)?;
        let (idx, newly) = self.enter_room(slot, room, now, true)?;
        if newly {
            self.metrics.room_joins_api.inc();
            self.send_membership(slot);
        }
        Ok(self.membership_of(slot, idx, room, true))
    }

    /// The application's leave (`DELETE /v1/rooms/{room}/members`).
    pub fn leave_device(&mut self, device: &str, room: &str) -> Result<Membership, RoomRefused> {
        if !tether_proto::room::valid_name(room) {
            return Err(RoomRefused::BadName);
        }
        let slot = self.find_device(device).ok_or(RoomRefused::NoSession)?;
        if self.exit_room(slot, room, true) {
            self.send_membership(slot);
        }
        Ok(Membership {
            room: room.to_string(),
            device_id: device.to_string(),
            member: false,
            seq: self.room_seq(room),
        })
    }

    fn membership_of(&self, slot: usize, idx: u32, room: &str, member: bool) -> Membership {
        Membership {
            room: room.to_string(),
            device_id: self.sessions[slot].device.to_string(),
            member,
            seq: self.rooms.get(idx as usize).map_or(0, |r| r.seq),
        }
    }

    fn room_seq(&self, room: &str) -> u64 {
        self.room_index
            .get(room)
            .and_then(|&i| self.rooms.get(i as usize))
            .map_or(0, |r| r.seq)
    }

    /// A client's JOIN (STATE_JOIN): checked against its token's grants, answered
    /// STATE_ROOM_OK (then the history after `after`, if asked) or ROOM_FAIL.
    pub(super) fn client_join(&mut self, gw: u16, id: u64, route: u64, join: Join<'_>, now: Now) {
        let Some(slot) = self.find_route(gw, route) else {
            self.metrics.unknown_route.inc();
            return;
        };
        let granted = self.sessions[slot]
            .grants()
            .is_some_and(|g| g.allows(join.room));
        let entered = if granted {
            self.enter_room(slot, join.room, now, true)
        } else {
            Err(RoomRefused::NotGranted)
        };
        let idx = match entered {
            Ok((idx, newly)) => {
                if newly {
                    self.metrics.room_joins.inc();
                    self.send_membership(slot);
                }
                idx
            }
            Err(refused) => {
                self.metrics.room_refused.inc();
                if let Some(out) = self.out(gw) {
                    let reason = refused.reason();
                    encode::routed_error(
                        out,
                        Kind::RoomFail,
                        id,
                        route,
                        ErrorCode::Forbidden,
                        &reason,
                    );
                }
                return;
            }
        };
        let seq = self.rooms[idx as usize].seq;
        self.answer_room(gw, id, route, join.room, seq, true);
        if join.after > 0 {
            self.replay_room(idx, gw, route, join.after);
        }
    }

    /// A client's LEAVE (STATE_LEAVE): always answered STATE_ROOM_OK, `member` false.
    pub(super) fn client_leave(&mut self, gw: u16, id: u64, route: u64, room: &str) {
        let Some(slot) = self.find_route(gw, route) else {
            self.metrics.unknown_route.inc();
            return;
        };
        if self.exit_room(slot, room, true) {
            self.send_membership(slot);
        }
        let seq = self.room_seq(room);
        self.answer_room(gw, id, route, room, seq, false);
    }

    fn answer_room(&mut self, gw: u16, id: u64, route: u64, room: &str, seq: u64, member: bool) {
        let body = serde_json::json!({ "room": room, "seq": seq, "member": member }).to_string();
        if let Some(out) = self.out(gw) {
            encode::routed(out, Kind::StateRoomOk, id, route, body.as_bytes());
        }
    }

    /// The room's history after `after`, to one connection.
    fn replay_room(&mut self, idx: u32, gw: u16, route: u64, after: u64) {
        let Some(room) = self.rooms.get(idx as usize) else {
            return;
        };
        let Some(gateway) = self.gateways.get_mut(gw as usize).filter(|g| g.linked) else {
            return;
        };
        let mut replayed = 0;
        room.replay(after, |last, body| {
            encode::routed(&mut gateway.out, Kind::RoomMessage, last, route, body);
            replayed += 1;
        });
        self.metrics.room_replayed.add(replayed);
    }

    /// MEMBERSHIP for an online session: every room it is in.
    pub(super) fn send_membership(&mut self, slot: usize) {
        let s = &self.sessions[slot];
        if !s.is_online() {
            return;
        }
        let (gw, route) = (s.gateway, s.route);
        let names: Vec<&str> = s
            .room_list()
            .iter()
            .filter_map(|&i| self.rooms.get(i as usize))
            .map(|r| &*r.name)
            .collect();
        let Some(gateway) = self.gateways.get_mut(gw as usize).filter(|g| g.linked) else {
            return;
        };
        let len = 8 + names.iter().map(|n| 1 + n.len()).sum::<usize>();
        encode::header(&mut gateway.out, Kind::Membership, 0, 0, len);
        gateway.out.extend_from_slice(&route.to_be_bytes());
        for name in names {
            tether_proto::room::put_name(&mut gateway.out, name);
        }
    }

    /// MEMBERSHIP again for a session that has rooms (it came online, or was re-announced).
    pub(super) fn resend_membership(&mut self, slot: usize) {
        if !self.sessions[slot].room_list().is_empty() {
            self.send_membership(slot);
        }
    }

    /// A session's rooms, taken for the session replacing it (the member counts stay).
    pub(super) fn take_rooms(&mut self, slot: usize) -> Vec<u32> {
        self.rooms_link_down(slot);
        let s = &mut self.sessions[slot];
        let list = s.rooms.as_mut().map(|r| std::mem::take(&mut r.list));
        s.tidy_rooms();
        list.unwrap_or_default()
    }

    /// A session came online on its (gateway, route): its rooms count it there.
    pub(super) fn rooms_link_up(&mut self, slot: usize) {
        let s = &self.sessions[slot];
        for &idx in s.room_list() {
            if let Some(room) = self.rooms.get_mut(idx as usize) {
                room.link_up(s.gateway);
            }
        }
    }

    /// A session stopped being online on its (gateway, route).
    pub(super) fn rooms_link_down(&mut self, slot: usize) {
        let s = &self.sessions[slot];
        if !s.is_online() {
            return;
        }
        for &idx in s.room_list() {
            if let Some(room) = self.rooms.get_mut(idx as usize) {
                room.link_down(s.gateway);
            }
        }
    }

    /// A removed session's rooms lose their member.
    pub(super) fn rooms_removed(&mut self, rooms: &[u32]) {
        for &idx in rooms {
            self.count_member(idx, false, None);
            self.metrics.room_leaves.inc();
            self.drop_if_idle(idx);
        }
    }

    /// Publishes `payload` to `room` (`POST /v1/rooms/{room}/publish`, a node's NODE_PUBLISH).
    pub fn publish_room(
        &mut self,
        room: &str,
        payload: &[u8],
        now: Now,
    ) -> Result<Published, RoomRefused> {
        let idx = self.room_index_of(room, now)?;
        self.metrics.room_publishes.inc();
        let (seq, links) = self.publish_to(idx, None, payload, now);
        Ok(Published {
            room: Some(room.to_string()),
            seq,
            links: Some(links),
            hosts: None,
        })
    }

    /// Publishes `payload` to every logged-in connection (`POST /v1/broadcast`).
    pub fn broadcast(&mut self, payload: &[u8], now: Now) -> Published {
        self.metrics.room_broadcasts.inc();
        let (seq, links) = self.publish_to(BROADCAST, None, payload, now);
        Published {
            room: None,
            seq,
            links: Some(links),
            hosts: None,
        }
    }

    /// `payload` into the window of room `idx`, as number `seq` when the fleet gave one (else
    /// the room's next): its number, and the links the window goes to.
    fn publish_to(&mut self, idx: u32, seq: Option<u64>, payload: &[u8], now: Now) -> (u64, usize) {
        let policy = self.rules.rooms;
        // A window that this message would take past what a link frame carries leaves first.
        let overflows = self.room_mut(idx).is_some_and(|r| {
            r.has_window() && r.window_len() + payload.len() > crate::room::MAX_WINDOW_BYTES
        });
        if overflows {
            self.send_window(idx);
        }
        let Some(room) = self.room_mut(idx) else {
            return (0, 0);
        };
        let (seq, window) = match seq {
            Some(seq) => (seq, room.add(seq, payload, now.unix_ms, &policy)),
            None => room.publish(payload, now.unix_ms, &policy),
        };
        let links = match idx {
            BROADCAST => self.gateways.iter().filter(|g| g.linked).count(),
            _ => self.rooms[idx as usize].links().count(),
        };
        match window {
            Window::Full => self.send_window(idx),
            Window::Opened => {
                self.next_window += 1;
                let id = self.next_window;
                if let Some(room) = self.room_mut(idx) {
                    room.window_id = id;
                }
                self.windows
                    .push_back((now.mono_ms.saturating_add(policy.merge_ms), idx, id));
            }
            Window::Joined => {}
        }
        (seq, links)
    }

    fn room_mut(&mut self, idx: u32) -> Option<&mut Room> {
        match idx {
            BROADCAST => Some(&mut self.broadcast),
            _ => self.rooms.get_mut(idx as usize),
        }
    }

    /// The room's open window, to every link with a member (the broadcast: every link).
    fn send_window(&mut self, idx: u32) {
        let mut links = std::mem::take(&mut self.room_links);
        links.clear();
        match idx {
            BROADCAST => links.extend(
                self.gateways
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.linked)
                    .map(|(i, _)| i as u16),
            ),
            _ => {
                if let Some(room) = self.rooms.get(idx as usize) {
                    links.extend(room.links());
                }
            }
        }
        let gateways = &mut self.gateways;
        let mut sent = 0;
        let room = match idx {
            BROADCAST => Some(&mut self.broadcast),
            _ => self.rooms.get_mut(idx as usize),
        };
        if let Some(room) = room {
            room.take_window(|last, body| {
                for &gw in &links {
                    if let Some(g) = gateways.get_mut(gw as usize).filter(|g| g.linked) {
                        encode::routed(&mut g.out, Kind::RoomMessage, last, 0, body);
                        sent += 1;
                    }
                }
            });
        }
        self.metrics.room_windows.add(sent);
        self.room_links = links;
    }

    /// Sends every window whose time has come, and now and then drops rooms nobody keeps.
    pub(super) fn flush_rooms(&mut self, now: Now) {
        while let Some(&(at, idx, id)) = self.windows.front() {
            if at > now.mono_ms {
                break;
            }
            self.windows.pop_front();
            if self.room_mut(idx).is_some_and(|r| r.window_id == id) {
                self.send_window(idx);
            }
        }
        if now.mono_ms >= self.next_room_sweep_ms {
            self.next_room_sweep_ms = now.mono_ms + SWEEP_MS;
            let policy = self.rules.rooms;
            let mut idle = Vec::new();
            for (idx, room) in self.rooms.iter_mut() {
                room.forget(now.unix_ms, &policy);
                if room.is_idle() {
                    idle.push(idx as u32);
                }
            }
            self.broadcast.forget(now.unix_ms, &policy);
            for idx in idle {
                self.drop_if_idle(idx);
            }
        }
        self.metrics.rooms.set(self.rooms.len() as u64);
    }

    /// When the next window is due.
    pub(super) fn next_window_deadline(&self) -> Option<u64> {
        self.windows.front().map(|&(at, _, _)| at)
    }

    /// A room as `GET /v1/rooms/{room}` shows it; `None` when the daemon holds no such room.
    pub fn room_view(&self, room: &str) -> Option<RoomView> {
        let r = self.rooms.get(*self.room_index.get(room)? as usize)?;
        Some(RoomView {
            room: room.to_string(),
            seq: r.seq,
            members: r.members,
            online: r.online(),
            links: r.links().count(),
            history: r.kept(),
        })
    }

    /// From now on, rooms that get their first member here or lose their last are kept for
    /// [`Store::take_room_interest`] (the fleet listens to the rooms this host has members
    /// in); the rooms with members now.
    pub(crate) fn track_room_interest(&mut self) -> Vec<String> {
        self.room_interest = Some(Vec::new());
        self.rooms
            .iter()
            .filter(|(_, r)| r.members > 0)
            .map(|(_, r)| r.name.to_string())
            .collect()
    }

    /// Rooms that got their first member (`true`) or lost their last since the last call.
    pub(crate) fn take_room_interest(&mut self) -> Vec<(String, bool)> {
        self.room_interest
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Message `seq` of `room` ("" for the broadcast), numbered by the fleet: into the room's
    /// window here (a room with no member here is not held: nothing to do).
    pub(crate) fn room_arrived(&mut self, room: &str, seq: u64, payload: &[u8], now: Now) {
        let idx = if room.is_empty() {
            BROADCAST
        } else {
            match self.room_index.get(room) {
                Some(&idx) => idx,
                None => return,
            }
        };
        self.publish_to(idx, Some(seq), payload, now);
    }

    /// A session's rooms and grants as the fleet engine keeps them, with its device.
    pub(crate) fn rooms_value(&self, session: u64) -> Option<(String, String)> {
        let s = &self.sessions[self.find_id(session)?];
        let rooms: Vec<&str> = s
            .room_list()
            .iter()
            .filter_map(|&i| self.rooms.get(i as usize))
            .map(|r| &*r.name)
            .collect();
        let grants = s.grants().map(|g| g.to_lines());
        Some((
            s.device.to_string(),
            crate::fleet::rooms_value(&rooms, grants.as_deref()),
        ))
    }

    /// The rooms and grants `device` had on another host (a login or takeover brought it
    /// here): its session here joins them, journaled.
    pub(crate) fn adopt_rooms(&mut self, device: &str, value: &str, now: Now) {
        let Some(slot) = self.find_device(device) else {
            return;
        };
        let (rooms, grants) = crate::fleet::parse_rooms(value);
        if let Some(grants) = grants.and_then(crate::token::RoomGrants::from_lines) {
            let lines = grants.to_lines();
            let session = self.sessions[slot].id;
            self.sessions[slot].rooms_mut().grants = Some(std::sync::Arc::new(grants));
            self.log(Record::Grants {
                session,
                lines: &lines,
            });
        }
        let mut joined = false;
        for room in rooms {
            joined |= self
                .enter_room(slot, room, now, true)
                .is_ok_and(|(_, new)| new);
        }
        if joined {
            self.send_membership(slot);
        }
    }

    /// A node's NODE_PUBLISH, relayed by a gateway (refusals are counted, not answered).
    pub(super) fn node_publish(&mut self, room: &str, payload: &[u8], now: Now) {
        if let Err(refused) = self.publish_room(room, payload, now) {
            self.metrics.room_refused.inc();
            tracing::debug!(room, reason = %refused.reason(), "a node's publish was refused");
        }
    }
}
