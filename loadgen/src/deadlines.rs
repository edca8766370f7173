//! A worker's per-connection timers in one min-heap: the deadline of whatever a connection
//! is waiting for (an `/ip_list` answer, a connect, a LOGIN_OK, the end of a backoff, the
//! replies still due after a GOAWAY) and its next heartbeat. Sans-IO.
//!
//! Cancelling is lazy: a connection remembers the instant it currently waits for under each
//! [`Alarm`], and an entry that no longer matches it is simply dropped when it comes due.
//! O(log n) per timer, a few bytes each; one worker holds at most two live entries per
//! connection plus stale ones that have not come due yet.
//!
//! Heartbeats are coarse: a PING's instant is rounded up to a [`HEARTBEAT_GRAIN`] grid, so
//! one wake of the worker sends every PING due in that grain. A worker holding 9,000
//! connections at one PING per 30 s wakes 20 times a second for them, not 300 (each wake
//! costs a context switch and a poll, which at a million connections on two cores is what
//! ran out: doc/c1m.md).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The grid heartbeats fire on.
pub(crate) const HEARTBEAT_GRAIN: Duration = Duration::from_millis(50);

/// Which of a connection's timers an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Alarm {
    /// The deadline of the connection's current phase.
    Phase,
    /// Its next PING.
    Ping,
}

#[derive(Debug)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize, Alarm)>>,
    /// Where the heartbeat grid starts.
    origin: Instant,
}

impl Deadlines {
    /// Timers whose heartbeat grid starts at `origin`.
    pub(crate) fn new(origin: Instant) -> Deadlines {
        Deadlines {
            heap: BinaryHeap::new(),
            origin,
        }
    }

    /// Fires `alarm` for connection `k` at `at`.
    pub(crate) fn set(&mut self, at: Instant, k: usize, alarm: Alarm) {
        self.heap.push(Reverse((at, k, alarm)));
    }

    /// Fires a PING for connection `k` at `at` rounded up to the heartbeat grid, and returns
    /// that instant (the one the connection waits for).
    pub(crate) fn set_ping(&mut self, at: Instant, k: usize) -> Instant {
        let grain = HEARTBEAT_GRAIN.as_nanos();
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let up = (grain - since % grain) % grain;
        let at = at + Duration::from_nanos(up as u64);
        self.set(at, k, Alarm::Ping);
        at
    }

    /// The earliest entry's instant (possibly a stale one).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, Alarm)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_time_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::new(t0);
        d.set(ms(30), 1, Alarm::Ping);
        d.set(ms(10), 2, Alarm::Phase);
        d.set(ms(20), 3, Alarm::Phase);
        assert_eq!(d.next(), Some(ms(10)));
        assert_eq!(d.pop_due(ms(5)), None);
        assert_eq!(d.pop_due(ms(25)), Some((ms(10), 2, Alarm::Phase)));
        assert_eq!(d.pop_due(ms(25)), Some((ms(20), 3, Alarm::Phase)));
        assert_eq!(d.pop_due(ms(25)), None);
        assert_eq!(d.len(), 1);
        assert_eq!(d.pop_due(ms(30)), Some((ms(30), 1, Alarm::Ping)));
        assert!(d.is_empty() && d.next().is_none());
    }

    #[test]
    fn pings_due_in_one_grain_fire_together_never_early() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::new(t0);
        assert_eq!(d.set_ping(ms(30_001), 1), ms(30_050));
        assert_eq!(d.set_ping(ms(30_049), 2), ms(30_050));
        assert_eq!(d.set_ping(ms(30_050), 3), ms(30_050), "on the grid already");
        assert_eq!(d.set_ping(ms(30_051), 4), ms(30_100));
        assert_eq!(d.pop_due(ms(30_049)), None);
        let due: Vec<usize> = std::iter::from_fn(|| d.pop_due(ms(30_050)).map(|e| e.1)).collect();
        assert_eq!(due.len(), 3);
        assert_eq!(d.next(), Some(ms(30_100)));
    }
}
