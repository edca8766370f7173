//! The DATA frames one connection has sent and not yet had answered: request id and the
//! instant latency is measured from (the send time in closed loop, the scheduled time in
//! open loop).
//!
//! Replies usually come back in order, so the front is checked first; through a proxy that
//! spreads requests over several nodes they may not, so a miss falls back to a linear search
//! of the (short: at most `--pipeline`, or the open-loop backlog) queue.

use std::collections::VecDeque;
use std::time::Instant;

/// In-flight request ids of one connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    entries: VecDeque<(u64, Instant)>,
}

impl Outstanding {
    pub(crate) fn new() -> Outstanding {
        Outstanding::default()
    }

    /// Records that request `id` went out, measured from `since`.
    pub(crate) fn push(&mut self, id: u64, since: Instant) {
        self.entries.push_back((id, since));
    }

    /// Removes request `id` and returns the instant it is measured from, or `None` when `id`
    /// is not in flight on this connection.
    pub(crate) fn take(&mut self, id: u64) -> Option<Instant> {
        match self.entries.front() {
            Some(&(front, since)) if front == id => {
                self.entries.pop_front();
                Some(since)
            }
            _ => {
                let index = self.entries.iter().position(|&(i, _)| i == id)?;
                self.entries.remove(index).map(|(_, since)| since)
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything in flight and says how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn filled(ids: &[u64]) -> (Outstanding, Instant) {
        let t0 = Instant::now();
        let mut out = Outstanding::new();
        for &id in ids {
            out.push(id, t0 + Duration::from_millis(id));
        }
        (out, t0)
    }

    #[test]
    fn in_order_replies_come_off_the_front() {
        let (mut out, t0) = filled(&[1, 2, 3]);
        for id in 1..=3 {
            assert_eq!(out.take(id), Some(t0 + Duration::from_millis(id)));
        }
        assert!(out.is_empty());
    }

    #[test]
    fn out_of_order_replies_are_found_and_keep_the_rest() {
        let (mut out, t0) = filled(&[1, 2, 3, 4]);
        assert_eq!(out.take(3), Some(t0 + Duration::from_millis(3)));
        assert_eq!(out.take(1), Some(t0 + Duration::from_millis(1)));
        assert_eq!(out.len(), 2);
        assert_eq!(out.take(4), Some(t0 + Duration::from_millis(4)));
        assert_eq!(out.take(2), Some(t0 + Duration::from_millis(2)));
        assert!(out.is_empty());
    }

    #[test]
    fn unknown_and_repeated_ids_are_none() {
        let (mut out, _) = filled(&[1, 2]);
        assert_eq!(out.take(9), None);
        assert!(out.take(2).is_some());
        assert_eq!(out.take(2), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out.clear(), 1);
        assert_eq!(out.take(1), None);
    }
}
