//! Pushes as one client sees them, sans-IO: which message ids it has had (delivery is at
//! least once, so a message may come again) and whether new ones come in order, and the
//! send time a push payload carries for latency.
//!
//! **Payload format** (what a push driver must send for latency to be measured): the first
//! 8 bytes are a u64, big-endian: the sender's Unix time in microseconds when it POSTed the
//! push; the rest is arbitrary. Push latency = receive time − that stamp, both read from
//! the system clock (so sender and load generator should share a host or a synced clock).
//! A payload shorter than 8 bytes is counted as unstamped and not measured.

use std::collections::VecDeque;

/// Bytes of send time at the front of a push payload.
pub(crate) const STAMP_LEN: usize = 8;
/// Message ids one connection remembers for duplicate detection; an id older than all of
/// them counts as a duplicate.
pub(crate) const REMEMBERED: usize = 1024;

/// The send time (µs since the Unix epoch) a payload starts with, if it is long enough.
pub(crate) fn stamp(payload: &[u8]) -> Option<u64> {
    payload
        .first_chunk::<STAMP_LEN>()
        .map(|bytes| u64::from_be_bytes(*bytes))
}

/// A payload stamped with `now_us` (µs since the Unix epoch), followed by `rest`.
pub(crate) fn stamped(now_us: u64, rest: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(STAMP_LEN + rest.len());
    payload.extend_from_slice(&now_us.to_be_bytes());
    payload.extend_from_slice(rest);
    payload
}

/// What a received message id is to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never seen before; `in_order` when it is above every id seen before it.
    First { in_order: bool },
    /// Seen before (or older than every id remembered): a redelivery.
    Duplicate,
}

/// The message ids one connection (one device, across reconnects) has received.
#[derive(Debug, Default)]
pub(crate) struct PushLog {
    /// The newest [`REMEMBERED`] ids, ascending.
    seen: VecDeque<u64>,
}

impl PushLog {
    pub(crate) fn new() -> PushLog {
        PushLog::default()
    }

    /// Records message `id`.
    pub(crate) fn record(&mut self, id: u64) -> Seen {
        match self.seen.binary_search(&id) {
            Ok(_) => Seen::Duplicate,
            Err(0) if self.seen.len() >= REMEMBERED => Seen::Duplicate,
            Err(at) => {
                let in_order = at == self.seen.len();
                self.seen.insert(at, id);
                if self.seen.len() > REMEMBERED {
                    self.seen.pop_front();
                }
                Seen::First { in_order }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_payloads_have_none() {
        let payload = stamped(1_763_712_000_123_456, b"hello");
        assert_eq!(payload.len(), 13);
        assert_eq!(stamp(&payload), Some(1_763_712_000_123_456));
        assert_eq!(stamp(&payload[..8]), Some(1_763_712_000_123_456));
        assert_eq!(stamp(&payload[..7]), None);
        assert_eq!(stamp(b""), None);
    }

    #[test]
    fn redeliveries_are_duplicates_and_late_firsts_are_out_of_order() {
        let mut log = PushLog::new();
        assert_eq!(log.record(10), Seen::First { in_order: true });
        assert_eq!(log.record(12), Seen::First { in_order: true });
        assert_eq!(log.record(12), Seen::Duplicate);
        assert_eq!(log.record(10), Seen::Duplicate);
        assert_eq!(log.record(11), Seen::First { in_order: false });
        assert_eq!(log.record(11), Seen::Duplicate);
        assert_eq!(log.record(13), Seen::First { in_order: true });
    }

    #[test]
    fn memory_is_bounded_and_ancient_ids_count_as_duplicates() {
        let mut log = PushLog::new();
        for id in 1..=(REMEMBERED as u64 + 10) {
            assert_eq!(log.record(id), Seen::First { in_order: true });
        }
        assert_eq!(log.seen.len(), REMEMBERED);
        assert_eq!(log.record(1), Seen::Duplicate);
        assert_eq!(log.record(REMEMBERED as u64 + 10), Seen::Duplicate);
    }
}
