//! What the fleet (`crate::fleet`) asks of the store once the engine has decided: a login
//! let through or refused, a session taken over from another host with its durable pushes, a
//! push delivered with the id the engine gave it, a session dropped because another host
//! holds its device now. Each change is journaled like its local counterpart.

use tether_proto::ErrorCode;

use super::{Now, PushStatus, Store, Verified};
use crate::record::Record;
use crate::session::{parse_resume_token, same_secret, Presence, Reserved};

/// A local session as the fleet binds it in the router table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    pub session: u64,
    pub device: String,
    pub gateway: String,
    pub resume_token: String,
    pub online: bool,
}

impl Store {
    /// A login the engine let through: its token named `device` (verified before the engine
    /// was asked), and the router table already names the session `reserved`. Whether the
    /// session opened (it may still be refused here: the daemon full, the device logged in
    /// here under `refuse`).
    pub fn login_claimed(
        &mut self,
        gw: u16,
        id: u64,
        route: u64,
        verified: Verified,
        reserved: Reserved,
        now: Now,
    ) -> bool {
        self.login_verified(gw, id, route, verified, Some(reserved), now)
            .is_some()
    }

    /// A session id and secret for a login (for the fleet, one the engine is yet to claim:
    /// see [`Store::login_claimed`]); `None`, with LOGIN_FAIL queued, when none is left.
    pub fn reserve_login(&mut self, gw: u16, id: u64, route: u64) -> Option<Reserved> {
        let reserved = self.reserve_session();
        if reserved.is_none() {
            self.fail(
                gw,
                id,
                route,
                ErrorCode::Internal,
                "no session id or randomness left",
            );
        }
        reserved
    }

    /// A login or resume the fleet refused: LOGIN_FAIL with `code`.
    pub fn refuse_login(&mut self, gw: u16, id: u64, route: u64, code: ErrorCode, reason: &str) {
        match code {
            ErrorCode::AuthFailed => self.metrics.logins_auth_failed.inc(),
            _ => self.metrics.logins_overloaded.inc(),
        }
        self.fail(gw, id, route, code, reason);
    }

    /// A resume whose token no session of the fleet holds.
    pub fn refuse_resume(&mut self, gw: u16, id: u64, route: u64, code: ErrorCode, reason: &str) {
        self.metrics.resumes_failed.inc();
        self.fail(gw, id, route, code, reason);
    }

    /// Whether this daemon can resume `token` itself (a session it holds, in its window).
    pub fn resumable_here(&self, token: &[u8], now: Now) -> bool {
        parse_resume_token(token).is_some_and(|(session, secret)| {
            self.find_id(session).is_some_and(|slot| {
                let s = &self.sessions[slot];
                let in_window = match s.presence {
                    Presence::Online => true,
                    Presence::Detached { since_ms } => {
                        now.mono_ms < since_ms.saturating_add(self.rules.resume_window_ms())
                    }
                };
                same_secret(&s.secret, &secret) && in_window
            })
        })
    }

    /// A session taken over from another host (a RESUME of a token this host did not hold):
    /// a new session of `device` here, answered like a resume, with `pushes` (durable in the
    /// engine) queued and sent. Its new resume token is in the answer.
    pub fn adopt(
        &mut self,
        gw: u16,
        id: u64,
        route: u64,
        device: String,
        pushes: &[(u64, u64, Vec<u8>)],
        now: Now,
    ) {
        if self
            .open_session(gw, id, route, device.clone(), None, None, now)
            .is_some()
        {
            self.metrics.resumes_ok.inc();
            self.carry_over(&device, pushes, now);
        }
    }

    /// Durable pushes of `device` from the engine (a login or takeover that moved it from
    /// another host): queued for its session here unless already queued.
    pub fn carry_over(&mut self, device: &str, pushes: &[(u64, u64, Vec<u8>)], now: Now) {
        for (msg, expires_unix_ms, payload) in pushes {
            self.deliver(device, *msg, payload, *expires_unix_ms, now);
        }
    }

    /// A push the engine stored as `msg`, for this host's session of `device`: queued,
    /// journaled and sent like a local push. `None` when this host holds no session of the
    /// device (the push stays durable in the engine for wherever it resumes).
    pub fn deliver(
        &mut self,
        device: &str,
        msg: u64,
        payload: &[u8],
        expires_unix_ms: u64,
        now: Now,
    ) -> Option<PushStatus> {
        let slot = self.find_device(device)?;
        if expires_unix_ms <= now.unix_ms {
            return Some(PushStatus::Queued);
        }
        let s = &self.sessions[slot];
        if s.pushes
            .as_ref()
            .is_some_and(|p| p.queue.iter().any(|q| q.msg == msg))
        {
            return Some(if self.reachable(slot) {
                PushStatus::Delivered
            } else {
                PushStatus::Queued
            });
        }
        self.next_msg = self.next_msg.max(msg.saturating_add(1));
        Some(self.queue_push(slot, msg, payload, expires_unix_ms, now))
    }

    /// Another host holds `device` now: this host's session of it (`session`, or any when
    /// `None`) is KICKED if online and removed, its pushes dropped here (they are durable in
    /// the engine). Whether there was one.
    pub fn drop_session(&mut self, device: &str, session: Option<u64>, reason: &str) -> bool {
        let Some(slot) = self.find_device(device) else {
            return false;
        };
        let s = &self.sessions[slot];
        if session.is_some_and(|id| id != s.id) {
            return false;
        }
        let id = s.id;
        self.kick_if_online(slot, reason);
        self.log(Record::Remove { session: id });
        self.remove(slot, false);
        true
    }

    /// The session `session`, as the router table names it.
    pub fn local_session(&self, session: u64) -> Option<LocalSession> {
        let s = &self.sessions[self.find_id(session)?];
        Some(LocalSession {
            session: s.id,
            device: s.device.to_string(),
            gateway: self.gateways[s.gateway as usize].name.to_string(),
            resume_token: s.resume_token(),
            online: s.is_online(),
        })
    }

    /// Every local session's id.
    pub fn session_ids(&self) -> Vec<u64> {
        self.sessions.iter().map(|(_, s)| s.id).collect()
    }

    /// A gateway's id by its index.
    pub fn gateway_name(&self, gw: u16) -> &str {
        self.gateways.get(gw as usize).map_or("", |g| &g.name)
    }
}
