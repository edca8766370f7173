//! A session's queue of unacknowledged pushes: sending to its gateway, retransmitting with
//! backoff, re-sending everything on a new connection, dropping what expired, and the one
//! timer that wakes the queue.

use tether_proto::{encode, Kind};

use super::timers::PUSHES;
use super::{Now, Store};
use crate::record::Record;

impl Store {
    /// Online on a gateway whose link is up.
    pub(super) fn reachable(&self, slot: usize) -> bool {
        let s = &self.sessions[slot];
        s.is_online() && self.gateways[s.gateway as usize].linked
    }

    pub(super) fn send_push(&mut self, slot: usize, index: usize, now: Now) {
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
    pub(super) fn resend_all(&mut self, slot: usize, now: Now) {
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

    /// Retransmits what is due and drops what expired.
    pub(super) fn pushes_due(&mut self, slot: usize, now: Now) {
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
        let mut bytes = 0;
        pushes.queue.retain(|p| {
            let keep = p.expires_unix_ms > now.unix_ms;
            if !keep {
                gone.push(p.msg);
                bytes += p.payload.len() as u64;
            }
            keep
        });
        let dropped = (before - pushes.queue.len()) as u64;
        self.pending -= dropped;
        self.pending_bytes -= bytes;
        self.metrics.pushes_expired.add(dropped);
        for msg in gone {
            self.log(Record::Ack { session, msg });
        }
    }

    /// Drops an empty queue, or re-arms the queue's timer for its earliest deadline.
    pub(super) fn tidy_pushes(&mut self, slot: usize, now: Now) {
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
    pub(super) fn arm_pushes(&mut self, slot: usize, now: Now) {
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
}
