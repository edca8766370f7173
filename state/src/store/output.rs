//! What leaves the store besides journal records: the frames queued for each gateway (login
//! answers, kicks) until the loop drains them to the links, and the gauges.

use tether_proto::{encode, ErrorCode, Kind};

use super::Store;

impl Store {
    /// Hands each gateway's queued frames to `send(gateway, frames)`, which takes what it
    /// wants (the buffer is cleared after).
    pub fn drain_out(&mut self, mut send: impl FnMut(u16, &mut Vec<u8>)) {
        for (gw, gateway) in self.gateways.iter_mut().enumerate() {
            if !gateway.out.is_empty() {
                send(gw as u16, &mut gateway.out);
                gateway.out.clear();
            }
        }
    }

    /// Publishes the gauges.
    pub fn publish(&self) {
        let m = &self.metrics;
        m.sessions_online.set(self.online);
        m.sessions_detached
            .set(self.sessions.len() as u64 - self.online);
        m.pushes_pending.set(self.pending);
        m.pushes_pending_bytes.set(self.pending_bytes);
        m.gateways.set(self.gateways.len() as u64);
    }

    pub(super) fn out(&mut self, gw: u16) -> Option<&mut Vec<u8>> {
        self.gateways
            .get_mut(gw as usize)
            .filter(|g| g.linked)
            .map(|g| &mut g.out)
    }

    pub(super) fn fail(&mut self, gw: u16, id: u64, route: u64, code: ErrorCode, reason: &str) {
        if let Some(out) = self.out(gw) {
            encode::routed_error(out, Kind::LoginFail, id, route, code, reason);
        }
    }

    pub(super) fn kick(&mut self, gw: u16, route: u64, code: ErrorCode, reason: &str) {
        match code {
            ErrorCode::Timeout => self.metrics.kicks_timeout.inc(),
            _ => self.metrics.kicks_replaced.inc(),
        }
        self.send_kick(gw, route, code, reason);
    }

    /// KICK, uncounted (the caller counts it under its reason).
    pub(super) fn send_kick(&mut self, gw: u16, route: u64, code: ErrorCode, reason: &str) {
        if let Some(out) = self.out(gw) {
            encode::routed_error(out, Kind::Kick, 0, route, code, reason);
        }
    }

    pub(super) fn kick_if_online(&mut self, slot: usize, reason: &str) {
        let s = &self.sessions[slot];
        if s.is_online() {
            let (gw, route) = (s.gateway, s.route);
            self.kick(gw, route, ErrorCode::Kicked, reason);
        }
    }

    pub(super) fn answer_ok(&mut self, slot: usize, id: u64) {
        let s = &self.sessions[slot];
        let body = format!(
            r#"{{"session":"{:016x}","resume_token":"{}","heartbeat_s":{}}}"#,
            s.id,
            s.resume_token(),
            self.rules.heartbeat_s
        );
        let (gw, route) = (s.gateway, s.route);
        if let Some(out) = self.out(gw) {
            encode::routed(out, Kind::StateLoginOk, id, route, body.as_bytes());
        }
    }
}
