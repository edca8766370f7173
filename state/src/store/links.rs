//! What a gateway link says to the store, after its HELLO: logins, resumes, heartbeats,
//! re-announcements after a reconnect, closed connections and acknowledged pushes, and what
//! each does to the sessions. A frame the link should not have sent is a [`LinkFault`].

use std::sync::Arc;

use tether_proto::{encode, routes, ErrorCode, Frame, Kind, Routed};

use super::lifecycle::Cause;
use super::{Now, Store};
use crate::config::DuplicateLogin;
use crate::record::Record;
use crate::session::{parse_resume_token, same_secret, Presence, Reserved, Session, SessionRooms};
use crate::token::RoomGrants;

/// What a verified login token lets in.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its `sub`.
    pub device: String,
    /// Its `rooms` claim.
    pub rooms: Option<Arc<RoomGrants>>,
}

/// A broken gateway link: the loop answers STATE_ERROR with this and closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFault {
    pub code: ErrorCode,
    pub id: u64,
    pub reason: String,
}

impl LinkFault {
    fn bad(id: u64, reason: impl Into<String>) -> LinkFault {
        LinkFault {
            code: ErrorCode::BadFrame,
            id,
            reason: reason.into(),
        }
    }
}

impl Store {
    /// A link introduced itself as `name`: returns its gateway index, with HELLO_OK queued.
    pub fn hello(&mut self, name: &str) -> u16 {
        let gw = self.intern_gateway(name);
        let body = self.hello_ok_body();
        let gateway = &mut self.gateways[gw as usize];
        gateway.linked = true;
        gateway.epoch = gateway.epoch.wrapping_add(1);
        gateway.out.clear();
        encode::frame(&mut gateway.out, Kind::HelloOk, 0, body.as_bytes());
        gw
    }

    /// The link of gateway `gw` closed. Its sessions stay online until their heartbeat
    /// deadline, or until the gateway reconnects and re-announces them.
    pub fn link_down(&mut self, gw: u16) {
        if let Some(gateway) = self.gateways.get_mut(gw as usize) {
            gateway.linked = false;
            gateway.out = Vec::new();
        }
    }

    /// One frame from gateway `gw` (after its HELLO).
    pub fn on_frame(&mut self, gw: u16, frame: &Frame<'_>, now: Now) -> Result<(), LinkFault> {
        let id = frame.id;
        let routed = || Routed::parse(frame.body).map_err(|e| LinkFault::bad(id, e.to_string()));
        match frame.kind {
            Kind::StateLogin => {
                let body = routed()?;
                self.login(gw, id, body.route, body.payload, now);
            }
            Kind::StateResume => {
                let body = routed()?;
                self.resume(gw, id, body.route, body.payload, now);
            }
            Kind::Heartbeat => {
                let list = routes(frame.body).map_err(|e| LinkFault::bad(id, e.to_string()))?;
                for route in list {
                    self.heartbeat(gw, route, now, false);
                }
            }
            Kind::Announce => {
                let list = routes(frame.body).map_err(|e| LinkFault::bad(id, e.to_string()))?;
                for route in list {
                    self.heartbeat(gw, route, now, true);
                }
            }
            Kind::AnnounceEnd => self.announce_end(gw, now),
            Kind::Closed => {
                let body = routed()?;
                match self.find_route(gw, body.route) {
                    Some(slot) => self.detach(slot, now, Cause::Closed),
                    None => self.metrics.unknown_route.inc(),
                }
            }
            Kind::StateAck => {
                let body = routed()?;
                self.ack(gw, body.route, id, now);
            }
            Kind::Undelivered => {
                let body = routed()?;
                self.undelivered(gw, body.route, now);
            }
            Kind::StateJoin => {
                let body = routed()?;
                let join = tether_proto::room::Join::parse(body.payload)
                    .map_err(|e| LinkFault::bad(id, e.to_string()))?;
                self.client_join(gw, id, body.route, join, now);
            }
            Kind::StateLeave => {
                let body = routed()?;
                let room = tether_proto::room::leave(body.payload)
                    .map_err(|e| LinkFault::bad(id, e.to_string()))?;
                self.client_leave(gw, id, body.route, room);
            }
            Kind::StatePublish => {
                let publish = tether_proto::room::Publish::parse(frame.body)
                    .map_err(|e| LinkFault::bad(id, e.to_string()))?;
                self.node_publish(publish.room, publish.payload, now);
            }
            Kind::Hello => return Err(LinkFault::bad(id, "HELLO twice on one link")),
            other => {
                return Err(LinkFault {
                    code: ErrorCode::UnknownKind,
                    id,
                    reason: format!("a gateway does not send {}", other.name()),
                })
            }
        }
        Ok(())
    }

    pub(super) fn login(&mut self, gw: u16, id: u64, route: u64, token: &[u8], now: Now) {
        let Some(verified) = self.verify_login(gw, id, route, token, now) else {
            return;
        };
        self.login_verified(gw, id, route, verified, None, now);
    }

    /// A login whose token named `verified.device`: refused when the device is logged in and
    /// the rule is `refuse`, else a new session (as `reserved` when given). The new session's
    /// slot.
    pub(super) fn login_verified(
        &mut self,
        gw: u16,
        id: u64,
        route: u64,
        verified: Verified,
        reserved: Option<Reserved>,
        now: Now,
    ) -> Option<usize> {
        let Verified { device, rooms } = verified;
        let existing = self.find_device(&device);
        if existing.is_some() && self.rules.duplicate_login == DuplicateLogin::Refuse {
            self.metrics.logins_auth_failed.inc();
            self.fail(
                gw,
                id,
                route,
                ErrorCode::AuthFailed,
                "device already logged in",
            );
            return None;
        }
        let slot = self.open_session(gw, id, route, device, rooms, reserved, now)?;
        self.metrics.logins_ok.inc();
        Some(slot)
    }

    /// A new session id and secret, taken now; `None` when ids or randomness ran out.
    pub(crate) fn reserve_session(&mut self) -> Option<Reserved> {
        let session = self.next_session;
        let next_session = session.checked_add(1)?;
        let secret = self.random.secret()?;
        self.next_session = next_session;
        Some(Reserved { session, secret })
    }

    /// Checks a login token: what it lets in, or `None` with LOGIN_FAIL queued.
    pub(crate) fn verify_login(
        &mut self,
        gw: u16,
        id: u64,
        route: u64,
        token: &[u8],
        now: Now,
    ) -> Option<Verified> {
        let rules = &mut self.rules;
        let claims = rules
            .verifier
            .verify_with(&mut rules.token_cache, token, now.unix_ms / 1000);
        match claims {
            Ok(claims) => Some(Verified {
                device: claims.sub,
                rooms: claims.rooms,
            }),
            Err(e) => {
                self.metrics.logins_auth_failed.inc();
                self.fail(gw, id, route, ErrorCode::AuthFailed, &e.to_string());
                None
            }
        }
    }

    /// A new session of `device` at (`gw`, `route`), answered LOGIN_OK; an existing session
    /// of the device is replaced (KICKED if online) and its pushes move over. `None` with
    /// LOGIN_FAIL queued when the daemon is full. The session's id and secret are `reserved`
    /// when given (the fleet wrote them to the router table first), else new ones.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_session(
        &mut self,
        gw: u16,
        id: u64,
        route: u64,
        device: String,
        grants: Option<Arc<RoomGrants>>,
        reserved: Option<Reserved>,
        now: Now,
    ) -> Option<usize> {
        let existing = self.find_device(&device);
        if existing.is_none() && self.sessions.len() >= self.rules.max_sessions {
            self.metrics.logins_overloaded.inc();
            self.fail(gw, id, route, ErrorCode::Overloaded, "too many sessions");
            return None;
        }
        let Reserved { session, secret } =
            reserved.or_else(|| self.reserve_login(gw, id, route))?;
        if let Some(old) = self.find_route(gw, route) {
            self.detach(old, now, Cause::Closed);
        }
        let mut pushes = None;
        let mut rooms = Vec::new();
        let mut replaces = 0;
        if let Some(old) = existing {
            self.kick_if_online(old, "the device logged in again");
            replaces = self.sessions[old].id;
            rooms = self.take_rooms(old);
            pushes = self.remove(old, false);
        }
        self.log(Record::Login {
            session,
            replaces,
            gateway: gw,
            route,
            login_unix_ms: now.unix_ms,
            secret,
            device: &device,
        });
        if let Some(grants) = &grants {
            self.log(Record::Grants {
                session,
                lines: &grants.to_lines(),
            });
        }
        let slot = self.insert(Session {
            id: session,
            device: device.into_boxed_str(),
            secret,
            gateway: gw,
            route,
            presence: Presence::Online,
            epoch: self.gateways[gw as usize].epoch,
            login_unix_ms: now.unix_ms,
            last_heartbeat_ms: now.mono_ms,
            timer: None,
            pushes,
            rooms: SessionRooms::boxed(rooms, grants),
        });
        self.arm_lifecycle(slot);
        self.answer_ok(slot, id);
        self.resend_membership(slot);
        self.resend_all(slot, now);
        Some(slot)
    }

    pub(super) fn resume(&mut self, gw: u16, id: u64, route: u64, token: &[u8], now: Now) {
        let found = parse_resume_token(token).and_then(|(session, secret)| {
            let slot = self.find_id(session)?;
            let s = &self.sessions[slot];
            let resumable = match s.presence {
                Presence::Online => true,
                Presence::Detached { since_ms } => {
                    now.mono_ms < since_ms.saturating_add(self.rules.resume_window_ms())
                }
            };
            (same_secret(&s.secret, &secret) && resumable).then_some(slot)
        });
        let Some(slot) = found else {
            self.metrics.resumes_failed.inc();
            return self.fail(
                gw,
                id,
                route,
                ErrorCode::AuthFailed,
                "unknown or expired resume token",
            );
        };
        if let Some(other) = self.find_route(gw, route) {
            if other != slot {
                self.detach(other, now, Cause::Closed);
            }
        }
        let s = &self.sessions[slot];
        if s.is_online() && (s.gateway, s.route) != (gw, route) {
            self.kick_if_online(slot, "the session was resumed elsewhere");
        }
        if self.sessions[slot].is_online() {
            self.unindex_route(slot);
            self.online -= 1;
        }
        let epoch = self.gateways[gw as usize].epoch;
        let s = &mut self.sessions[slot];
        s.gateway = gw;
        s.route = route;
        s.presence = Presence::Online;
        s.epoch = epoch;
        s.last_heartbeat_ms = now.mono_ms;
        let session = s.id;
        self.online += 1;
        self.index_route(slot);
        self.log(Record::Attach {
            session,
            gateway: gw,
            route,
        });
        self.metrics.resumes_ok.inc();
        self.arm_lifecycle(slot);
        self.answer_ok(slot, id);
        self.resend_membership(slot);
        self.resend_all(slot, now);
    }

    /// HEARTBEAT (or ANNOUNCE, which also re-sends pushes that may have been lost while the
    /// link was down).
    ///
    /// A route with no online session here is a zombie: the gateway holds a connection it
    /// believes logged in, whose session the daemon detached (its heartbeats stopped while
    /// the link was down) or removed. It is KICKed with TIMEOUT, so the client reconnects
    /// and resumes (or logs in, once the window has passed) instead of carrying on without
    /// a session.
    fn heartbeat(&mut self, gw: u16, route: u64, now: Now, announced: bool) {
        let Some(slot) = self.find_route(gw, route) else {
            self.metrics.unknown_route.inc();
            self.metrics.zombie_kicks.inc();
            if let Some(out) = self.out(gw) {
                encode::routed_error(
                    out,
                    Kind::Kick,
                    0,
                    route,
                    ErrorCode::Timeout,
                    "no session: it was detached while the gateway's link was down",
                );
            }
            return;
        };
        self.metrics.heartbeats.inc();
        let epoch = self.gateways[gw as usize].epoch;
        let s = &mut self.sessions[slot];
        s.last_heartbeat_ms = now.mono_ms;
        s.epoch = epoch;
        if announced {
            self.resend_membership(slot);
            self.resend_all(slot, now);
        }
    }

    /// ANNOUNCE_END: online sessions of `gw` neither announced nor attached on this link
    /// have vanished.
    fn announce_end(&mut self, gw: u16, now: Now) {
        let epoch = self.gateways[gw as usize].epoch;
        let vanished: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.gateway == gw && s.is_online() && s.epoch != epoch)
            .map(|(slot, _)| slot)
            .collect();
        for slot in vanished {
            self.detach(slot, now, Cause::Vanished);
        }
    }

    /// UNDELIVERED: the gateway had no logged-in connection for a push to `route`. If the
    /// daemon still thinks one is online there, it is not: detached as vanished. The push
    /// stays queued for the session's next connection either way.
    fn undelivered(&mut self, gw: u16, route: u64, now: Now) {
        self.metrics.pushes_undelivered.inc();
        if let Some(slot) = self.find_route(gw, route) {
            self.detach(slot, now, Cause::Vanished);
        }
    }

    fn ack(&mut self, gw: u16, route: u64, msg: u64, now: Now) {
        let Some(slot) = self.find_route(gw, route) else {
            self.metrics.unknown_route.inc();
            return;
        };
        let s = &mut self.sessions[slot];
        let session = s.id;
        let Some(pushes) = s.pushes.as_mut() else {
            return;
        };
        let Some(at) = pushes.queue.iter().position(|p| p.msg == msg) else {
            return;
        };
        if let Some(push) = pushes.queue.remove(at) {
            self.pending_bytes -= push.payload.len() as u64;
        }
        self.pending -= 1;
        self.metrics.acks.inc();
        self.log(Record::Ack { session, msg });
        self.tidy_pushes(slot, now);
    }
}
