//! Rebuilding the state at startup from the journal's records (the snapshot's, then the
//! journals'), without sending or journaling anything, then arming every timer.

use super::gateways::Gateway;
use super::{Now, Store, IDS_PER_MS};
use crate::record::{Record, RecordError};
use crate::session::{Presence, Push, Session};

impl Store {
    /// Rebuilds state from one journal record. Nothing is sent and nothing is journaled;
    /// call [`Store::finish_replay`] after the last one.
    ///
    /// A record that does not parse, names a gateway index no GATEWAY record registered,
    /// logs in a session id already in use, or holds an id that leaves no next one (u64::MAX)
    /// is refused, and changes nothing: every check comes before the first change.
    pub fn replay(&mut self, bytes: &[u8], now: Now) -> Result<(), RecordError> {
        let record = Record::decode(bytes)?;
        let tag = record.tag();
        match record {
            Record::Counters {
                next_session,
                next_msg,
            } => {
                self.next_session = self.next_session.max(next_session);
                self.next_msg = self.next_msg.max(next_msg);
            }
            Record::Gateway { index, name } => {
                while self.gateways.len() <= index as usize {
                    self.gateways.push(Gateway {
                        name: "".into(),
                        linked: false,
                        epoch: 0,
                        out: Vec::new(),
                    });
                }
                self.gateways[index as usize].name = name.into();
                self.gateway_index.insert(name.into(), index);
            }
            Record::Login {
                session,
                replaces,
                gateway,
                route,
                login_unix_ms,
                secret,
                device,
            } => {
                self.known_gateway(tag, gateway)?;
                let next = session
                    .checked_add(1)
                    .ok_or(RecordError::IdOverflow { tag, id: session })?;
                if self.find_id(session).is_some() {
                    return Err(RecordError::SessionInUse { tag, session });
                }
                self.next_session = self.next_session.max(next);
                let mut pushes = None;
                let mut rooms = Vec::new();
                if let Some(old) = self.find_id(replaces).filter(|_| replaces != 0) {
                    rooms = self.take_rooms(old);
                    pushes = self.remove(old, false);
                }
                if let Some(old) = self.find_device(device) {
                    self.remove(old, true);
                }
                if let Some(old) = self.find_route(gateway, route) {
                    self.detach_quietly(old, now);
                }
                self.insert(Session {
                    id: session,
                    device: device.into(),
                    secret,
                    gateway,
                    route,
                    presence: Presence::Online,
                    epoch: 0,
                    login_unix_ms,
                    last_heartbeat_ms: now.mono_ms,
                    timer: None,
                    pushes,
                    rooms: crate::session::SessionRooms::boxed(rooms, None),
                });
            }
            Record::Detach {
                session,
                at_unix_ms,
            } => {
                if let Some(slot) = self.find_id(session) {
                    if self.sessions[slot].is_online() {
                        self.detach_quietly(slot, now);
                    }
                    self.sessions[slot].presence = Presence::Detached {
                        since_ms: now.mono_of(at_unix_ms),
                    };
                }
            }
            Record::Attach {
                session,
                gateway,
                route,
            } => {
                self.known_gateway(tag, gateway)?;
                if let Some(slot) = self.find_id(session) {
                    if let Some(other) = self.find_route(gateway, route) {
                        self.detach_quietly(other, now);
                    }
                    if self.sessions[slot].is_online() {
                        self.unindex_route(slot);
                        self.online -= 1;
                    }
                    let s = &mut self.sessions[slot];
                    s.gateway = gateway;
                    s.route = route;
                    s.presence = Presence::Online;
                    s.last_heartbeat_ms = now.mono_ms;
                    self.online += 1;
                    self.index_route(slot);
                }
            }
            Record::Remove { session } => {
                if let Some(slot) = self.find_id(session) {
                    self.remove(slot, false);
                }
            }
            Record::Push {
                session,
                msg,
                expires_unix_ms,
                payload,
            } => {
                let next = msg
                    .checked_add(1)
                    .ok_or(RecordError::IdOverflow { tag, id: msg })?;
                self.next_msg = self.next_msg.max(next);
                if let Some(slot) = self.find_id(session) {
                    let pushes = self.sessions[slot].pushes.get_or_insert_with(Box::default);
                    pushes.queue.push_back(Push {
                        msg,
                        payload: payload.into(),
                        expires_unix_ms,
                        sends: 0,
                        next_send_ms: now.mono_ms,
                    });
                    self.pending += 1;
                    self.pending_bytes += payload.len() as u64;
                }
            }
            Record::Join { session, room } => {
                if let Some(slot) = self.find_id(session) {
                    // A room refused now (a lower limit since) is left out, not fatal.
                    let _ = self.enter_room(slot, room, now, false);
                }
            }
            Record::Leave { session, room } => {
                if let Some(slot) = self.find_id(session) {
                    self.exit_room(slot, room, false);
                }
            }
            Record::Grants { session, lines } => {
                if let Some(slot) = self.find_id(session) {
                    let grants =
                        crate::token::RoomGrants::from_lines(lines).map(std::sync::Arc::new);
                    let s = &mut self.sessions[slot];
                    s.rooms_mut().grants = grants;
                    s.tidy_rooms();
                }
            }
            Record::Ack { session, msg } => {
                if let Some(slot) = self.find_id(session) {
                    if let Some(p) = self.sessions[slot].pushes.as_mut() {
                        if let Some(at) = p.queue.iter().position(|p| p.msg == msg) {
                            if let Some(push) = p.queue.remove(at) {
                                self.pending_bytes -= push.payload.len() as u64;
                            }
                            self.pending -= 1;
                        }
                        if p.queue.is_empty() {
                            self.sessions[slot].pushes = None;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses a record of `tag` that names a gateway index no GATEWAY record registered.
    fn known_gateway(&self, tag: u8, gateway: u16) -> Result<(), RecordError> {
        match self.gateways.get(gateway as usize) {
            Some(_) => Ok(()),
            None => Err(RecordError::UnknownGateway { tag, gateway }),
        }
    }

    /// Arms every timer after a replay: online sessions get a full heartbeat deadline from
    /// now (their gateway re-announces them meanwhile), detached ones keep their window.
    ///
    /// Session and message ids then start at least at the wall clock × [`IDS_PER_MS`], so
    /// they keep growing across a restart from an older copy of the journal (a restored
    /// backup) or from an empty one: a client dropping ids it has seen never drops a new push.
    /// That holds while fewer than `IDS_PER_MS` ids a millisecond are issued on average, and
    /// keeps ids below 2^53 (exact in JavaScript) until the year 2248.
    pub fn finish_replay(&mut self, now: Now) {
        let floor = now.unix_ms.saturating_mul(IDS_PER_MS);
        self.next_session = self.next_session.max(floor);
        self.next_msg = self.next_msg.max(floor);
        let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.arm_lifecycle(slot);
            self.arm_pushes(slot, now);
        }
    }
}
