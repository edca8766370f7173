//! A worker's per-connection timers in one min-heap: the deadline of whatever a connection
//! is waiting for (an `/ip_list` answer, a connect, a LOGIN_OK, the end of a backoff, the
//! replies still due after a GOAWAY) and its next heartbeat. Sans-IO.
//!
//! Cancelling is lazy: a connection remembers the instant it currently waits for under each
//! [`Alarm`], and an entry that no longer matches it is simply dropped when it comes due.
//! O(log n) per timer, a few bytes each; one worker holds at most two live entries per
//! connection plus stale ones that have not come due yet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Which of a connection's timers an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Alarm {
    /// The deadline of the connection's current phase.
    Phase,
    /// Its next PING.
    Ping,
}

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize, Alarm)>>,
}

impl Deadlines {
    pub(crate) fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Fires `alarm` for connection `k` at `at`.
    pub(crate) fn set(&mut self, at: Instant, k: usize, alarm: Alarm) {
        self.heap.push(Reverse((at, k, alarm)));
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
    use std::time::Duration;

    #[test]
    fn entries_come_due_in_time_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::new();
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
}
