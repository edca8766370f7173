//! The timing wheel under every session: which timer of which session a fired value names,
//! and handing each to its handler (`lifecycle.rs`, `delivery.rs`).

use super::{Now, Store};

/// Timer values: the session's slab slot and which of its two timers.
pub(super) const LIFECYCLE: u64 = 0;
pub(super) const PUSHES: u64 = 1;

impl Store {
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
        self.flush_rooms(now);
    }

    /// When the loop must wake next for a timer.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.wheel.next_deadline(), self.next_window_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
