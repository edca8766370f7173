//! A session's life: online until its heartbeat deadline or its connection closes, then
//! detached and resumable until its resume window ends, then removed. One timer per session
//! carries whichever deadline applies.

use tether_proto::ErrorCode;

use super::timers::LIFECYCLE;
use super::{Now, Store};
use crate::record::Record;
use crate::session::Presence;

/// Why a session is detached (for counters).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cause {
    Closed,
    Vanished,
    Timeout,
}

impl Store {
    pub(super) fn lifecycle_due(&mut self, slot: usize, now: Now) {
        match self.sessions[slot].presence {
            Presence::Online => {
                let deadline = self.sessions[slot]
                    .last_heartbeat_ms
                    .saturating_add(self.rules.heartbeat_deadline_ms());
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
                if now.mono_ms >= since_ms.saturating_add(self.rules.resume_window_ms()) {
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

    pub(super) fn arm_lifecycle(&mut self, slot: usize) {
        let s = &mut self.sessions[slot];
        if let Some(timer) = s.timer.take() {
            self.wheel.cancel(timer);
        }
        let at = match s.presence {
            Presence::Online => s
                .last_heartbeat_ms
                .saturating_add(self.rules.heartbeat_deadline_ms()),
            Presence::Detached { since_ms } => {
                since_ms.saturating_add(self.rules.resume_window_ms())
            }
        };
        s.timer = Some(self.wheel.insert(at, (slot as u64) << 1 | LIFECYCLE));
    }

    pub(super) fn detach(&mut self, slot: usize, now: Now, cause: Cause) {
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
    pub(super) fn detach_quietly(&mut self, slot: usize, now: Now) {
        if self.sessions[slot].is_online() {
            self.unindex_route(slot);
            self.online -= 1;
        }
        self.sessions[slot].presence = Presence::Detached {
            since_ms: now.mono_ms,
        };
    }
}
