//! The daemon's state and every change to it, sans-IO: sessions indexed by device, session id
//! and (gateway, route); their heartbeat, resume and retransmit timers on one wheel; the
//! journal records each change produces; and the frames each gateway should receive.
//!
//! The event loop (`server.rs`) feeds it frames, HTTP commands and the clock, then writes out
//! [`Store::records`] to the journal *before* it sends the frames of [`Store::drain_out`]:
//! nothing is acknowledged to anyone before it is in the journal.
//!
//! Time comes in as [`Now`]: a monotonic clock for timers and a wall clock for what is
//! journaled (login time, when a session was detached, push expiry), so that both survive a
//! restart and a wall-clock step never fires a timer early.

use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;
use slab::Slab;
use tether_proto::{encode, routes, ErrorCode, Frame, Kind, Routed};

use crate::config::{Config, DuplicateLogin};
use crate::metrics::Metrics;
use crate::record::{Record, RecordError};
use crate::session::{parse_resume_token, same_secret, Presence, Push, Pushes, Session};
use crate::token;
use crate::wheel::{backoff_ms, TimerWheel};

/// The timer wheel's resolution.
const TICK_MS: u64 = 10;
/// Longest gateway id.
pub const MAX_GATEWAY_ID: usize = 128;

/// Ids a millisecond the clock floor of [`Store::finish_replay`] allows for.
pub const IDS_PER_MS: u64 = 1024;

/// The clocks, read once per loop iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (timers).
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch (what is journaled and shown).
    pub unix_ms: u64,
}

impl Now {
    /// Converts a journaled wall-clock time to the monotonic clock.
    fn mono_of(self, unix_ms: u64) -> u64 {
        if unix_ms >= self.unix_ms {
            self.mono_ms.saturating_add(unix_ms - self.unix_ms)
        } else {
            self.mono_ms.saturating_sub(self.unix_ms - unix_ms)
        }
    }

    /// Converts a monotonic time to the wall clock.
    fn unix_of(self, mono_ms: u64) -> u64 {
        if mono_ms >= self.mono_ms {
            self.unix_ms.saturating_add(mono_ms - self.mono_ms)
        } else {
            self.unix_ms.saturating_sub(self.mono_ms - mono_ms)
        }
    }
}

/// The rules sessions live by, from the configuration (and changed by a reload).
#[derive(Debug, Clone)]
pub struct Rules {
    pub secret: Vec<u8>,
    pub leeway_s: u64,
    pub heartbeat_s: u64,
    pub resume_window_s: u64,
    pub duplicate_login: DuplicateLogin,
    pub max_sessions: usize,
    pub max_pending: usize,
    pub max_payload: usize,
    pub push_ttl_s: u64,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub retry_max: u32,
}

impl Rules {
    pub fn new(config: &Config, secret: Vec<u8>) -> Rules {
        Rules {
            secret,
            leeway_s: config.jwt_leeway_s,
            heartbeat_s: config.heartbeat_s,
            resume_window_s: config.resume_window_s,
            duplicate_login: config.duplicate_login,
            max_sessions: config.max_sessions,
            max_pending: config.max_pending,
            max_payload: config.max_payload,
            push_ttl_s: config.push_ttl_s,
            retry_base_ms: config.push_retry_base_ms,
            retry_cap_ms: config.push_retry_cap_ms,
            retry_max: config.push_retry_max,
        }
    }

    fn heartbeat_deadline_ms(&self) -> u64 {
        3 * self.heartbeat_s * 1000
    }

    fn resume_window_ms(&self) -> u64 {
        self.resume_window_s * 1000
    }

    /// Delay after send number `sends` (1-based) before the next, or `None` when it was the last.
    fn retry_after(&self, sends: u32) -> Option<u64> {
        backoff_ms(
            sends.saturating_sub(1),
            self.retry_base_ms,
            self.retry_cap_ms,
            self.retry_max.saturating_sub(1),
        )
    }
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
}

/// A session as `GET /v1/sessions/{device}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub session: String,
    pub device_id: String,
    pub gateway: String,
    pub route: u64,
    pub state: &'static str,
    pub login_unix_ms: u64,
    pub last_heartbeat_unix_ms: u64,
    /// When a detached session stops being resumable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_until_unix_ms: Option<u64>,
    pub pending: usize,
}

struct Gateway {
    name: Box<str>,
    linked: bool,
    /// Bumped by each HELLO; sessions of an older epoch must be re-announced.
    epoch: u32,
    /// Frames for this gateway, not yet handed to its link.
    out: Vec<u8>,
}

/// Encoded journal records of the current loop iteration.
#[derive(Default)]
struct RecordBuf {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Timer values: the session's slab slot and which of its two timers.
const LIFECYCLE: u64 = 0;
const PUSHES: u64 = 1;

/// Why a session is detached (for counters).
#[derive(Debug, Clone, Copy)]
enum Cause {
    Closed,
    Vanished,
    Timeout,
}

pub struct Store {
    rules: Rules,
    sessions: Slab<Session>,
    by_device: HashTable<u32>,
    by_id: HashTable<u32>,
    /// Online sessions only, by (gateway, route).
    by_route: HashTable<u32>,
    gateways: Vec<Gateway>,
    gateway_index: FxHashMap<Box<str>, u16>,
    wheel: TimerWheel<u64>,
    fired: Vec<u64>,
    next_session: u64,
    next_msg: u64,
    records: RecordBuf,
    random: Entropy,
    metrics: Arc<Metrics>,
    online: u64,
    pending: u64,
}

impl Store {
    pub fn new(rules: Rules, metrics: Arc<Metrics>, now: Now) -> Store {
        Store {
            rules,
            sessions: Slab::new(),
            by_device: HashTable::new(),
            by_id: HashTable::new(),
            by_route: HashTable::new(),
            gateways: Vec::new(),
            gateway_index: FxHashMap::default(),
            wheel: TimerWheel::new(TICK_MS, now.mono_ms),
            fired: Vec::new(),
            next_session: 1,
            next_msg: 1,
            records: RecordBuf::default(),
            random: Entropy::default(),
            metrics,
            online: 0,
            pending: 0,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// New rules from a reload. They apply to what happens from now on: running timers keep
    /// their deadlines.
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The HELLO_OK body.
    pub fn hello_ok_body(&self) -> String {
        format!(
            r#"{{"heartbeat_s":{},"resume_window_s":{},"max_pending":{}}}"#,
            self.rules.heartbeat_s, self.rules.resume_window_s, self.rules.max_pending
        )
    }

    // ---------------------------------------------------------------- gateway links

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

    fn login(&mut self, gw: u16, id: u64, route: u64, token: &[u8], now: Now) {
        let claims = std::str::from_utf8(token)
            .map_err(|_| token::TokenError::Malformed)
            .and_then(|t| {
                token::verify(
                    t,
                    &self.rules.secret,
                    now.unix_ms / 1000,
                    self.rules.leeway_s,
                )
            });
        let claims = match claims {
            Ok(claims) => claims,
            Err(e) => {
                self.metrics.logins_auth_failed.inc();
                return self.fail(gw, id, route, ErrorCode::AuthFailed, &e.to_string());
            }
        };
        let existing = self.find_device(&claims.sub);
        if existing.is_some() && self.rules.duplicate_login == DuplicateLogin::Refuse {
            self.metrics.logins_auth_failed.inc();
            return self.fail(
                gw,
                id,
                route,
                ErrorCode::AuthFailed,
                "device already logged in",
            );
        }
        if existing.is_none() && self.sessions.len() >= self.rules.max_sessions {
            self.metrics.logins_overloaded.inc();
            return self.fail(gw, id, route, ErrorCode::Overloaded, "too many sessions");
        }
        let Some(secret) = self.random.secret() else {
            return self.fail(gw, id, route, ErrorCode::Internal, "no randomness");
        };
        if let Some(old) = self.find_route(gw, route) {
            self.detach(old, now, Cause::Closed);
        }
        let mut pushes = None;
        let mut replaces = 0;
        if let Some(old) = existing {
            self.kick_if_online(old, "the device logged in again");
            replaces = self.sessions[old].id;
            pushes = self.remove(old, false);
        }
        let session = self.next_session;
        self.next_session += 1;
        self.log(Record::Login {
            session,
            replaces,
            gateway: gw,
            route,
            login_unix_ms: now.unix_ms,
            secret,
            device: &claims.sub,
        });
        let slot = self.insert(Session {
            id: session,
            device: claims.sub.into_boxed_str(),
            secret,
            gateway: gw,
            route,
            presence: Presence::Online,
            epoch: self.gateways[gw as usize].epoch,
            login_unix_ms: now.unix_ms,
            last_heartbeat_ms: now.mono_ms,
            timer: None,
            pushes,
        });
        self.metrics.logins_ok.inc();
        self.arm_lifecycle(slot);
        self.answer_ok(slot, id);
        self.resend_all(slot, now);
    }

    fn resume(&mut self, gw: u16, id: u64, route: u64, token: &[u8], now: Now) {
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
        self.resend_all(slot, now);
    }

    /// HEARTBEAT (or ANNOUNCE, which also re-sends pushes that may have been lost while the
    /// link was down).
    fn heartbeat(&mut self, gw: u16, route: u64, now: Now, announced: bool) {
        let Some(slot) = self.find_route(gw, route) else {
            self.metrics.unknown_route.inc();
            return;
        };
        self.metrics.heartbeats.inc();
        let epoch = self.gateways[gw as usize].epoch;
        let s = &mut self.sessions[slot];
        s.last_heartbeat_ms = now.mono_ms;
        s.epoch = epoch;
        if announced {
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
        pushes.queue.remove(at);
        self.pending -= 1;
        self.metrics.acks.inc();
        self.log(Record::Ack { session, msg });
        self.tidy_pushes(slot, now);
    }

    // ---------------------------------------------------------------- push API

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
        let msg = self.next_msg;
        self.next_msg += 1;
        let ttl_ms = ttl_s.unwrap_or(self.rules.push_ttl_s).saturating_mul(1000);
        let expires_unix_ms = now.unix_ms.saturating_add(ttl_ms);
        let session = self.sessions[slot].id;
        self.log(Record::Push {
            session,
            msg,
            expires_unix_ms,
            payload,
        });
        self.pending += 1;
        let deliver = self.reachable(slot);
        let s = &mut self.sessions[slot];
        let pushes = s.pushes.get_or_insert_with(Box::default);
        pushes.queue.push_back(Push {
            msg,
            payload: payload.into(),
            expires_unix_ms,
            sends: 0,
            next_send_ms: now.mono_ms,
        });
        let status = if deliver {
            let index = pushes.queue.len() - 1;
            self.send_push(slot, index, now);
            self.metrics.pushes_delivered.inc();
            PushStatus::Delivered
        } else {
            self.metrics.pushes_queued.inc();
            PushStatus::Queued
        };
        self.arm_pushes(slot, now);
        Ok((Some(msg), status))
    }

    /// `GET /v1/sessions/{device}`.
    pub fn view(&self, device: &str, now: Now) -> Option<SessionView> {
        let s = &self.sessions[self.find_device(device)?];
        let (state, resume_until_unix_ms) = match s.presence {
            Presence::Online => ("online", None),
            Presence::Detached { since_ms } => (
                "detached",
                Some(now.unix_of(since_ms + self.rules.resume_window_ms())),
            ),
        };
        Some(SessionView {
            session: format!("{:016x}", s.id),
            device_id: s.device.to_string(),
            gateway: self.gateways[s.gateway as usize].name.to_string(),
            route: s.route,
            state,
            login_unix_ms: s.login_unix_ms,
            // Converted from the monotonic clock, which can round a millisecond below the
            // login's wall-clock time; a heartbeat never precedes the login.
            last_heartbeat_unix_ms: now.unix_of(s.last_heartbeat_ms).max(s.login_unix_ms),
            resume_until_unix_ms,
            pending: s.pending(),
        })
    }

    // ---------------------------------------------------------------- timers

    /// Fires every timer due by `now`.
    pub fn advance(&mut self, now: Now) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(now.mono_ms, &mut fired);
        for value in fired.drain(..) {
            let slot = (value >> 1) as usize;
            if !self.sessions.contains(slot) {
                continue;
            }
            if value & 1 == LIFECYCLE {
                self.sessions[slot].timer = None;
                self.lifecycle_due(slot, now);
            } else {
                if let Some(p) = self.sessions[slot].pushes.as_mut() {
                    p.timer = None;
                }
                self.pushes_due(slot, now);
            }
        }
        self.fired = fired;
    }

    /// When the loop must wake next for a timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    fn lifecycle_due(&mut self, slot: usize, now: Now) {
        match self.sessions[slot].presence {
            Presence::Online => {
                let deadline =
                    self.sessions[slot].last_heartbeat_ms + self.rules.heartbeat_deadline_ms();
                if now.mono_ms >= deadline {
                    let s = &self.sessions[slot];
                    let (gw, route) = (s.gateway, s.route);
                    self.kick(gw, route, ErrorCode::Timeout, "no heartbeat");
                    self.detach(slot, now, Cause::Timeout);
                } else {
                    self.arm_lifecycle(slot);
                }
            }
            Presence::Detached { since_ms } => {
                if now.mono_ms >= since_ms + self.rules.resume_window_ms() {
                    self.metrics.sessions_expired.inc();
                    let session = self.sessions[slot].id;
                    self.log(Record::Remove { session });
                    self.remove(slot, true);
                } else {
                    self.arm_lifecycle(slot);
                }
            }
        }
    }

    /// Retransmits what is due and drops what expired.
    fn pushes_due(&mut self, slot: usize, now: Now) {
        self.expire_pushes(slot, now);
        if self.reachable(slot) {
            let due: Vec<usize> = match &self.sessions[slot].pushes {
                Some(p) => (0..p.queue.len())
                    .filter(|&i| {
                        let push = &p.queue[i];
                        push.sends > 0
                            && push.sends < self.rules.retry_max
                            && push.next_send_ms <= now.mono_ms
                    })
                    .collect(),
                None => Vec::new(),
            };
            for index in due {
                self.metrics.push_retransmits.inc();
                self.send_push(slot, index, now);
            }
        }
        self.tidy_pushes(slot, now);
    }

    fn expire_pushes(&mut self, slot: usize, now: Now) {
        let s = &mut self.sessions[slot];
        let session = s.id;
        let Some(pushes) = s.pushes.as_mut() else {
            return;
        };
        let before = pushes.queue.len();
        let mut gone = Vec::new();
        pushes.queue.retain(|p| {
            let keep = p.expires_unix_ms > now.unix_ms;
            if !keep {
                gone.push(p.msg);
            }
            keep
        });
        let dropped = (before - pushes.queue.len()) as u64;
        self.pending -= dropped;
        self.metrics.pushes_expired.add(dropped);
        for msg in gone {
            self.log(Record::Ack { session, msg });
        }
    }

    /// Drops an empty queue, or re-arms the queue's timer for its earliest deadline.
    fn tidy_pushes(&mut self, slot: usize, now: Now) {
        let s = &mut self.sessions[slot];
        if s.pushes.as_ref().is_some_and(|p| p.queue.is_empty()) {
            if let Some(timer) = s.pushes.take().and_then(|p| p.timer) {
                self.wheel.cancel(timer);
            }
            return;
        }
        self.arm_pushes(slot, now);
    }

    /// (Re)arms the queue's timer at its earliest retransmit (when reachable) or expiry.
    fn arm_pushes(&mut self, slot: usize, now: Now) {
        let reachable = self.reachable(slot);
        let retry_max = self.rules.retry_max;
        let s = &mut self.sessions[slot];
        let Some(pushes) = s.pushes.as_mut() else {
            return;
        };
        let next = pushes
            .queue
            .iter()
            .map(|p| {
                let expiry = now.mono_of(p.expires_unix_ms);
                if reachable && p.sends > 0 && p.sends < retry_max {
                    p.next_send_ms.min(expiry)
                } else {
                    expiry
                }
            })
            .min();
        if let Some(timer) = pushes.timer.take() {
            self.wheel.cancel(timer);
        }
        if let Some(at) = next {
            pushes.timer = Some(self.wheel.insert(at, (slot as u64) << 1 | PUSHES));
        }
    }

    fn arm_lifecycle(&mut self, slot: usize) {
        let s = &mut self.sessions[slot];
        if let Some(timer) = s.timer.take() {
            self.wheel.cancel(timer);
        }
        let at = match s.presence {
            Presence::Online => s.last_heartbeat_ms + self.rules.heartbeat_deadline_ms(),
            Presence::Detached { since_ms } => since_ms + self.rules.resume_window_ms(),
        };
        s.timer = Some(self.wheel.insert(at, (slot as u64) << 1 | LIFECYCLE));
    }

    // ---------------------------------------------------------------- journal

    /// The records this iteration produced, oldest first; [`Store::clear_records`] after
    /// they are appended.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.records.ends.iter().map(move |&end| {
            let record = &self.records.bytes[start..end];
            start = end;
            record
        })
    }

    pub fn clear_records(&mut self) {
        self.records.bytes.clear();
        self.records.ends.clear();
    }

    fn log(&mut self, record: Record<'_>) {
        record.encode(&mut self.records.bytes);
        self.records.ends.push(self.records.bytes.len());
    }

    /// Rebuilds state from one journal record. Nothing is sent and nothing is journaled;
    /// call [`Store::finish_replay`] after the last one.
    pub fn replay(&mut self, bytes: &[u8], now: Now) -> Result<(), RecordError> {
        match Record::decode(bytes)? {
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
                self.next_session = self.next_session.max(session + 1);
                let mut pushes = None;
                if let Some(old) = self.find_id(replaces).filter(|_| replaces != 0) {
                    pushes = self.remove(old, false);
                }
                if let Some(old) = self.find_device(device) {
                    self.remove(old, true);
                }
                if let Some(old) = self.find_route(gateway, route) {
                    self.detach_quietly(old, now);
                }
                if self.gateways.len() <= gateway as usize {
                    return Err(RecordError::TooShort { tag: 3, len: 0 });
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
                self.next_msg = self.next_msg.max(msg + 1);
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
                }
            }
            Record::Ack { session, msg } => {
                if let Some(slot) = self.find_id(session) {
                    if let Some(p) = self.sessions[slot].pushes.as_mut() {
                        if let Some(at) = p.queue.iter().position(|p| p.msg == msg) {
                            p.queue.remove(at);
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

    /// The whole state as records, each handed to `emit` in the order a replay needs them
    /// (for [`crate::journal::Journal::start_compaction_with`], which encodes them in place).
    pub fn snapshot(&self, now: Now, mut emit: impl FnMut(&Record<'_>)) {
        emit(&Record::Counters {
            next_session: self.next_session,
            next_msg: self.next_msg,
        });
        for (i, g) in self.gateways.iter().enumerate() {
            emit(&Record::Gateway {
                index: i as u16,
                name: &g.name,
            });
        }
        for (_, s) in self.sessions.iter() {
            emit(&Record::Login {
                session: s.id,
                replaces: 0,
                gateway: s.gateway,
                route: s.route,
                login_unix_ms: s.login_unix_ms,
                secret: s.secret,
                device: &s.device,
            });
            if let Presence::Detached { since_ms } = s.presence {
                emit(&Record::Detach {
                    session: s.id,
                    at_unix_ms: now.unix_of(since_ms),
                });
            }
            for p in s.pushes.iter().flat_map(|p| p.queue.iter()) {
                emit(&Record::Push {
                    session: s.id,
                    msg: p.msg,
                    expires_unix_ms: p.expires_unix_ms,
                    payload: &p.payload,
                });
            }
        }
    }

    // ---------------------------------------------------------------- output

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
        m.gateways.set(self.gateways.len() as u64);
    }

    // ---------------------------------------------------------------- internals

    fn out(&mut self, gw: u16) -> Option<&mut Vec<u8>> {
        self.gateways
            .get_mut(gw as usize)
            .filter(|g| g.linked)
            .map(|g| &mut g.out)
    }

    fn fail(&mut self, gw: u16, id: u64, route: u64, code: ErrorCode, reason: &str) {
        if let Some(out) = self.out(gw) {
            encode::routed_error(out, Kind::LoginFail, id, route, code, reason);
        }
    }

    fn kick(&mut self, gw: u16, route: u64, code: ErrorCode, reason: &str) {
        match code {
            ErrorCode::Timeout => self.metrics.kicks_timeout.inc(),
            _ => self.metrics.kicks_replaced.inc(),
        }
        if let Some(out) = self.out(gw) {
            encode::routed_error(out, Kind::Kick, 0, route, code, reason);
        }
    }

    fn kick_if_online(&mut self, slot: usize, reason: &str) {
        let s = &self.sessions[slot];
        if s.is_online() {
            let (gw, route) = (s.gateway, s.route);
            self.kick(gw, route, ErrorCode::Kicked, reason);
        }
    }

    fn answer_ok(&mut self, slot: usize, id: u64) {
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

    /// Online on a gateway whose link is up.
    fn reachable(&self, slot: usize) -> bool {
        let s = &self.sessions[slot];
        s.is_online() && self.gateways[s.gateway as usize].linked
    }

    fn send_push(&mut self, slot: usize, index: usize, now: Now) {
        let s = &mut self.sessions[slot];
        let (gw, route) = (s.gateway, s.route);
        let Some(push) = s.pushes.as_mut().and_then(|p| p.queue.get_mut(index)) else {
            return;
        };
        push.sends += 1;
        push.next_send_ms = match self.rules.retry_after(push.sends) {
            Some(delay) => now.mono_ms + delay,
            None => u64::MAX,
        };
        let Some(gateway) = self.gateways.get_mut(gw as usize).filter(|g| g.linked) else {
            return;
        };
        encode::routed(
            &mut gateway.out,
            Kind::StatePush,
            push.msg,
            route,
            &push.payload,
        );
        self.metrics.push_sends.inc();
    }

    /// Sends every unacknowledged push again, oldest first, with a fresh retry budget: the
    /// session has a new connection (login takeover, resume, re-announce).
    fn resend_all(&mut self, slot: usize, now: Now) {
        self.expire_pushes(slot, now);
        if !self.reachable(slot) {
            return self.tidy_pushes(slot, now);
        }
        let count = self.sessions[slot].pending();
        for index in 0..count {
            if let Some(p) = self.sessions[slot].pushes.as_mut() {
                p.queue[index].sends = 0;
            }
            self.send_push(slot, index, now);
        }
        self.tidy_pushes(slot, now);
    }

    fn detach(&mut self, slot: usize, now: Now, cause: Cause) {
        if !self.sessions[slot].is_online() {
            return;
        }
        match cause {
            Cause::Closed => self.metrics.closed.inc(),
            Cause::Vanished => self.metrics.vanished.inc(),
            Cause::Timeout => {}
        }
        let session = self.sessions[slot].id;
        self.log(Record::Detach {
            session,
            at_unix_ms: now.unix_ms,
        });
        self.detach_quietly(slot, now);
        self.arm_lifecycle(slot);
        self.arm_pushes(slot, now);
    }

    /// Detaches without journaling or timers (replay, and the first half of `detach`).
    fn detach_quietly(&mut self, slot: usize, now: Now) {
        if self.sessions[slot].is_online() {
            self.unindex_route(slot);
            self.online -= 1;
        }
        self.sessions[slot].presence = Presence::Detached {
            since_ms: now.mono_ms,
        };
    }

    fn insert(&mut self, session: Session) -> usize {
        let online = session.is_online();
        let slot = self.sessions.insert(session);
        let sessions = &self.sessions;
        let s = &sessions[slot];
        self.by_device
            .insert_unique(device_hash(&s.device), slot as u32, |&i| {
                device_hash(&sessions[i as usize].device)
            });
        self.by_id.insert_unique(id_hash(s.id), slot as u32, |&i| {
            id_hash(sessions[i as usize].id)
        });
        self.pending += s.pending() as u64;
        if online {
            self.online += 1;
            self.index_route(slot);
        }
        slot
    }

    /// Removes a session and its timers; returns its pushes, or drops them (counted as
    /// expired) when `drop_pushes`.
    fn remove(&mut self, slot: usize, drop_pushes: bool) -> Option<Box<Pushes>> {
        if self.sessions[slot].is_online() {
            self.unindex_route(slot);
            self.online -= 1;
        }
        let s = self.sessions.remove(slot);
        if let Ok(entry) = self
            .by_device
            .find_entry(device_hash(&s.device), |&i| i as usize == slot)
        {
            entry.remove();
        }
        if let Ok(entry) = self
            .by_id
            .find_entry(id_hash(s.id), |&i| i as usize == slot)
        {
            entry.remove();
        }
        if let Some(timer) = s.timer {
            self.wheel.cancel(timer);
        }
        let mut pushes = s.pushes;
        if let Some(p) = pushes.as_mut() {
            if let Some(timer) = p.timer.take() {
                self.wheel.cancel(timer);
            }
            self.pending -= p.queue.len() as u64;
            if drop_pushes {
                self.metrics.pushes_expired.add(p.queue.len() as u64);
                return None;
            }
        }
        pushes
    }

    fn index_route(&mut self, slot: usize) {
        let sessions = &self.sessions;
        let s = &sessions[slot];
        self.by_route
            .insert_unique(route_hash(s.gateway, s.route), slot as u32, |&i| {
                let s = &sessions[i as usize];
                route_hash(s.gateway, s.route)
            });
    }

    fn unindex_route(&mut self, slot: usize) {
        let s = &self.sessions[slot];
        if let Ok(entry) = self
            .by_route
            .find_entry(route_hash(s.gateway, s.route), |&i| i as usize == slot)
        {
            entry.remove();
        }
    }

    fn find_device(&self, device: &str) -> Option<usize> {
        self.by_device
            .find(device_hash(device), |&i| {
                &*self.sessions[i as usize].device == device
            })
            .map(|&i| i as usize)
    }

    fn find_id(&self, id: u64) -> Option<usize> {
        self.by_id
            .find(id_hash(id), |&i| self.sessions[i as usize].id == id)
            .map(|&i| i as usize)
    }

    fn find_route(&self, gw: u16, route: u64) -> Option<usize> {
        self.by_route
            .find(route_hash(gw, route), |&i| {
                let s = &self.sessions[i as usize];
                s.gateway == gw && s.route == route
            })
            .map(|&i| i as usize)
    }

    fn intern_gateway(&mut self, name: &str) -> u16 {
        if let Some(&gw) = self.gateway_index.get(name) {
            return gw;
        }
        let gw = self.gateways.len() as u16;
        self.gateways.push(Gateway {
            name: name.into(),
            linked: false,
            epoch: 0,
            out: Vec::new(),
        });
        self.gateway_index.insert(name.into(), gw);
        self.log(Record::Gateway { index: gw, name });
        gw
    }

    /// Whether one more gateway id fits (indices are u16).
    pub fn can_add_gateway(&self, name: &str) -> bool {
        self.gateway_index.contains_key(name) || self.gateways.len() < u16::MAX as usize
    }
}

fn device_hash(device: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    device.hash(&mut h);
    h.finish()
}

fn id_hash(id: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

fn route_hash(gw: u16, route: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    (gw, route).hash(&mut h);
    h.finish()
}

/// Secrets for resume tokens, from the kernel's CSPRNG in batches.
struct Entropy {
    buf: [u8; 1024],
    used: usize,
}

impl Default for Entropy {
    fn default() -> Self {
        Entropy {
            buf: [0; 1024],
            used: 1024,
        }
    }
}

impl Entropy {
    fn secret(&mut self) -> Option<[u8; 16]> {
        if self.used + 16 > self.buf.len() {
            let mut filled = 0;
            while filled < self.buf.len() {
                let rest = &mut self.buf[filled..];
                // SAFETY: the pointer and length describe `rest`, a live, writable buffer.
                let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return None;
                }
                filled += n as usize;
            }
            self.used = 0;
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&self.buf[self.used..self.used + 16]);
        self.used += 16;
        Some(secret)
    }
}
