//! What the HTTP API asks of the store: `POST /v1/push` queues a push for a device's session
//! (and sends it when the session is online), `GET /v1/sessions/{device}` shows a session,
//! `DELETE /v1/sessions/{device}` ends it.

use serde::Serialize;
use tether_proto::ErrorCode;

use super::{Now, Store};
use crate::record::Record;
use crate::session::{Presence, Push};

/// What `POST /v1/push` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    /// Sent to the session's gateway.
    Delivered,
    /// Kept for the session, which is detached or whose gateway is not connected.
    Queued,
    /// No session for the device; nothing kept.
    Offline,
}

/// A push that was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRefused {
    /// The session already holds `max_pending` unacknowledged pushes.
    QueueFull { pending: usize },
    /// The payload is over `max_payload`.
    TooLarge { max: usize },
    /// Every message id up to u64::MAX was issued (the journal's counters say so).
    IdsExhausted,
    /// The daemon already holds `max_pending_bytes` of unacknowledged pushes.
    DaemonFull { max_bytes: u64 },
    /// Fleet mode: the engine that makes a push durable fleet-wide cannot be reached.
    FleetUnavailable,
}

/// A session as `GET /v1/sessions/{device}` shows it. In a fleet, `host` names the host
/// that holds it; a host that does not hold it answers from the router table, which has no
/// `route`, login or heartbeat times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub session: String,
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub gateway: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<u64>,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_unix_ms: Option<u64>,
    /// When a detached session stops being resumable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_until_unix_ms: Option<u64>,
    pub pending: usize,
}

/// Why a session ended through `DELETE /v1/sessions/{device}` was KICKED (on the host that
/// held it, also when the DELETE came through another host of the fleet).
pub const ENDED_BY_OPERATOR: &str = "the session was ended by the operator";

/// What `DELETE /v1/sessions/{device}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndedSession {
    pub session: String,
    pub device_id: String,
    /// In a fleet, the host that held the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The session had a connection, which its gateway was told to close (KICK 12 KICKED).
    pub was_online: bool,
    /// Unacknowledged pushes dropped with the session.
    pub dropped_pushes: usize,
}

impl Store {
    /// `POST /v1/push`: queue `payload` for `device`'s session, and send it if it is online.
    pub fn push(
        &mut self,
        device: &str,
        payload: &[u8],
        ttl_s: Option<u64>,
        now: Now,
    ) -> Result<(Option<u64>, PushStatus), PushRefused> {
        if payload.len() > self.rules.max_payload {
            return Err(PushRefused::TooLarge {
                max: self.rules.max_payload,
            });
        }
        let Some(slot) = self.find_device(device) else {
            self.metrics.pushes_offline.inc();
            return Ok((None, PushStatus::Offline));
        };
        let pending = self.sessions[slot].pending();
        if pending >= self.rules.max_pending {
            self.metrics.pushes_full.inc();
            return Err(PushRefused::QueueFull { pending });
        }
        if self.pending_bytes + payload.len() as u64 > self.rules.max_pending_bytes {
            self.metrics.pushes_daemon_full.inc();
            return Err(PushRefused::DaemonFull {
                max_bytes: self.rules.max_pending_bytes,
            });
        }
        let msg = self.next_msg;
        self.next_msg = msg.checked_add(1).ok_or(PushRefused::IdsExhausted)?;
        let ttl_ms = ttl_s.unwrap_or(self.rules.push_ttl_s).saturating_mul(1000);
        let expires_unix_ms = now.unix_ms.saturating_add(ttl_ms);
        let status = self.queue_push(slot, msg, payload, expires_unix_ms, now);
        Ok((Some(msg), status))
    }

    /// Queues push `msg` for the session in `slot` — journaled, in id order (a local push,
    /// the newest, goes last; one from the fleet's engine may go before), sent if the
    /// session is reachable — and says which it was.
    pub(super) fn queue_push(
        &mut self,
        slot: usize,
        msg: u64,
        payload: &[u8],
        expires_unix_ms: u64,
        now: Now,
    ) -> PushStatus {
        let session = self.sessions[slot].id;
        self.log(Record::Push {
            session,
            msg,
            expires_unix_ms,
            payload,
        });
        self.pending += 1;
        self.pending_bytes += payload.len() as u64;
        let deliver = self.reachable(slot);
        let pushes = self.sessions[slot].pushes.get_or_insert_with(Box::default);
        let index = pushes
            .queue
            .iter()
            .rposition(|q| q.msg < msg)
            .map_or(0, |before| before + 1);
        pushes.queue.insert(
            index,
            Push {
                msg,
                payload: payload.into(),
                expires_unix_ms,
                sends: 0,
                next_send_ms: now.mono_ms,
            },
        );
        let status = if deliver {
            self.send_push(slot, index, now);
            self.metrics.pushes_delivered.inc();
            PushStatus::Delivered
        } else {
            self.metrics.pushes_queued.inc();
            PushStatus::Queued
        };
        self.arm_pushes(slot, now);
        status
    }

    /// `GET /v1/sessions/{device}`.
    pub fn view(&self, device: &str, now: Now) -> Option<SessionView> {
        let s = &self.sessions[self.find_device(device)?];
        let (state, resume_until_unix_ms) = match s.presence {
            Presence::Online => ("online", None),
            Presence::Detached { since_ms } => (
                "detached",
                Some(now.unix_of(since_ms.saturating_add(self.rules.resume_window_ms()))),
            ),
        };
        Some(SessionView {
            session: format!("{:016x}", s.id),
            device_id: s.device.to_string(),
            host: None,
            gateway: self.gateways[s.gateway as usize].name.to_string(),
            route: Some(s.route),
            state,
            login_unix_ms: Some(s.login_unix_ms),
            // Converted from the monotonic clock, which can round a millisecond below the
            // login's wall-clock time; a heartbeat never precedes the login.
            last_heartbeat_unix_ms: Some(now.unix_of(s.last_heartbeat_ms).max(s.login_unix_ms)),
            resume_until_unix_ms,
            pending: s.pending(),
        })
    }

    /// `DELETE /v1/sessions/{device}`: the session's connection, if it has one, is KICKed
    /// (12 KICKED, so the client is closed), and the session is removed with its pushes: it
    /// cannot be resumed. The removal is journaled like a resume window's end.
    pub fn end_session(&mut self, device: &str) -> Option<EndedSession> {
        let slot = self.find_device(device)?;
        let s = &self.sessions[slot];
        let ended = EndedSession {
            session: format!("{:016x}", s.id),
            device_id: s.device.to_string(),
            host: None,
            was_online: s.is_online(),
            dropped_pushes: s.pending(),
        };
        let (session, gw, route) = (s.id, s.gateway, s.route);
        if ended.was_online {
            self.metrics.kicks_operator.inc();
            self.send_kick(gw, route, ErrorCode::Kicked, ENDED_BY_OPERATOR);
        }
        self.log(Record::Remove { session });
        self.remove(slot, true);
        Some(ended)
    }
}
