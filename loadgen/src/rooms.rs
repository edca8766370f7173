//! Room messages as one client sees them, sans-IO: the stamp a room payload carries (send
//! time and publish counter), and per connection and room the last sequence number seen, so
//! that a jump is a gap and a number seen again a duplicate. The same accounting serves a
//! Tether connection (ROOM frames, `seq` from the daemon) and a peer's subscriber (NATS,
//! nchan: one message per frame, `seq` = the publish counter in the payload).
//!
//! **Payload format** (`--publish-size` bytes, at least [`STAMP_LEN`]): 16 lowercase hex
//! digits of the publisher's Unix time in µs when it sent the message, 16 of its publish
//! counter (1, 2, …), then `.` up to the size. ASCII, so a peer that carries messages as
//! WebSocket text (nchan) carries them unchanged. Latency = receive time − that stamp, both
//! read from the system clock.

use std::time::Instant;

use crate::stats::{Stats, Window};

/// Bytes of stamp and counter at the front of a room payload.
pub(crate) const STAMP_LEN: usize = 32;

/// A room payload of `size` bytes (at least [`STAMP_LEN`]) stamped with `now_us` and
/// `counter`.
pub(crate) fn stamped(now_us: u64, counter: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("{now_us:016x}{counter:016x}").into_bytes();
    payload.resize(size.max(STAMP_LEN), b'.');
    payload
}

/// The (send time in µs, publish counter) a room payload starts with, if it has them.
pub(crate) fn stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let head = payload.get(..STAMP_LEN)?;
    let hex = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).ok()?;
        u64::from_str_radix(text, 16).ok()
    };
    Some((hex(head.get(..16)?)?, hex(head.get(16..)?)?))
}

/// The name of room `i` of a run: `prefix` + `i`.
pub(crate) fn room_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// The `per_conn` rooms connection `global` joins, of `rooms`: consecutive from
/// `global % rooms`, so members spread evenly over the rooms.
pub(crate) fn rooms_of(global: usize, rooms: usize, per_conn: usize) -> Vec<usize> {
    if rooms == 0 {
        return Vec::new();
    }
    (0..per_conn.min(rooms))
        .map(|k| (global + k) % rooms)
        .collect()
}

/// What a received sequence number is to its connection and room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New; `missing` numbers between the last one seen and this one never came.
    First { missing: u64 },
    /// Not above the last one seen: numbers never go back, so it came before.
    Duplicate,
}

/// One room as one connection follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Track {
    room: Box<str>,
    /// The last sequence number seen; `None` until the first message.
    last: Option<u64>,
    /// The room's latest number when the JOIN was answered: the first message counts a
    /// gap only past it. (A window still open at the JOIN may bring numbers up to it: they
    /// are new to this connection, not duplicates.)
    floor: u64,
}

/// The rooms one connection follows (a handful: a linear scan beats a map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomLog {
    tracks: Vec<Track>,
}

impl RoomLog {
    pub(crate) fn new() -> RoomLog {
        RoomLog::default()
    }

    /// Joined `room` whose latest number was `seq` then.
    pub(crate) fn joined(&mut self, room: &str, seq: u64) {
        match self.tracks.iter_mut().find(|t| &*t.room == room) {
            Some(track) => track.floor = track.floor.max(seq),
            None => self.tracks.push(Track {
                room: room.into(),
                last: None,
                floor: seq,
            }),
        }
    }

    /// The last number seen of `room` (0: none): a re-JOIN asks for what came after it.
    pub(crate) fn last(&self, room: &str) -> u64 {
        self.tracks
            .iter()
            .find(|t| &*t.room == room)
            .and_then(|t| t.last)
            .unwrap_or(0)
    }

    /// Records number `seq` of `room`. The first number of a room never joined (the
    /// broadcast) opens its count without a gap.
    pub(crate) fn record(&mut self, room: &str, seq: u64) -> Seen {
        let Some(track) = self.tracks.iter_mut().find(|t| &*t.room == room) else {
            self.tracks.push(Track {
                room: room.into(),
                last: Some(seq),
                floor: 0,
            });
            return Seen::First { missing: 0 };
        };
        let missing = match track.last {
            None => seq.saturating_sub(track.floor.saturating_add(1)),
            Some(last) if seq <= last => return Seen::Duplicate,
            // A later JOIN's answer raised the floor: what it covers is not missing.
            Some(last) => seq - last.max(track.floor).min(seq - 1) - 1,
        };
        track.last = Some(seq);
        Seen::First { missing }
    }
}

/// Room messages counted by a worker (and the publisher's side, merged in at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomCounts {
    /// ROOM frames (a peer: messages) received.
    pub frames: u64,
    /// Of them, flagged REPLAY (history answering a JOIN's `after`).
    pub replayed_frames: u64,
    /// Of them, flagged CONFLATED.
    pub conflated_frames: u64,
    /// Messages received, duplicates included.
    pub deliveries: u64,
    /// Of them, received inside the measured window (deliveries/s).
    pub deliveries_in_window: u64,
    /// Jumps in a connection's sequence of a room.
    pub gaps: u64,
    /// Numbers those jumps skipped: messages never received.
    pub missing: u64,
    /// Messages whose number the connection had seen before.
    pub duplicates: u64,
    /// New messages without a readable stamp (not in the latency).
    pub unstamped: u64,
    /// JOINs answered ROOM_OK.
    pub joins_ok: u64,
    /// JOINs answered ERROR (FORBIDDEN, UNAVAILABLE): by name in `errors`.
    pub joins_refused: u64,
    /// Publishes sent by the publisher.
    pub published: u64,
    /// Of them, refused or failed: by cause in `errors` as `publish_<cause>`.
    pub publish_failed: u64,
}

impl RoomCounts {
    pub(crate) fn add(&mut self, o: &RoomCounts) {
        self.frames += o.frames;
        self.replayed_frames += o.replayed_frames;
        self.conflated_frames += o.conflated_frames;
        self.deliveries += o.deliveries;
        self.deliveries_in_window += o.deliveries_in_window;
        self.gaps += o.gaps;
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.unstamped += o.unstamped;
        self.joins_ok += o.joins_ok;
        self.joins_refused += o.joins_refused;
        self.published += o.published;
        self.publish_failed += o.publish_failed;
    }
}

/// When and where a message arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'w> {
    pub at: Instant,
    /// The system clock at `at`, µs since the Unix epoch.
    pub now_us: u64,
    pub window: &'w Window,
}

/// Counts one message of `room` numbered `seq` with `payload`, arrived as `arrival` says.
pub(crate) fn on_message(
    log: &mut RoomLog,
    stats: &mut Stats,
    room: &str,
    seq: u64,
    payload: &[u8],
    arrival: &Arrival<'_>,
) {
    let counts = &mut stats.rooms;
    counts.deliveries += 1;
    if arrival.window.contains(arrival.at) {
        counts.deliveries_in_window += 1;
    }
    match log.record(room, seq) {
        Seen::Duplicate => counts.duplicates += 1,
        Seen::First { missing } => {
            if missing > 0 {
                counts.gaps += 1;
                counts.missing += missing;
            }
            match stamp(payload) {
                Some((sent_us, _)) if arrival.window.measures(arrival.at) => {
                    let us = arrival.now_us.saturating_sub(sent_us);
                    stats.room_latency.saturating_record(us.max(1));
                }
                Some(_) => {}
                None => counts.unstamped += 1,
            }
        }
    }
}

/// Counts one message from a peer, whose publish counter is its sequence number; a
/// payload without a stamp is a delivery, unstamped, not numbered.
pub(crate) fn on_peer_message(
    log: &mut RoomLog,
    stats: &mut Stats,
    room: &str,
    payload: &[u8],
    arrival: &Arrival<'_>,
) {
    match stamp(payload) {
        Some((_, counter)) => on_message(log, stats, room, counter, payload, arrival),
        None => {
            stats.rooms.deliveries += 1;
            if arrival.window.contains(arrival.at) {
                stats.rooms.deliveries_in_window += 1;
            }
            stats.rooms.unstamped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_round_trip_padded_to_the_size() {
        let p = stamped(1_763_712_000_123_456, 42, 40);
        assert_eq!(p.len(), 40);
        assert!(p.is_ascii());
        assert_eq!(stamp(&p), Some((1_763_712_000_123_456, 42)));
        assert_eq!(
            stamped(1, 2, 8).len(),
            STAMP_LEN,
            "never shorter than the stamp"
        );
        assert_eq!(stamp(&p[..31]), None);
        assert_eq!(stamp(b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(stamp(&[0xff; 40]), None);
    }

    #[test]
    fn connections_spread_over_the_rooms() {
        assert_eq!(rooms_of(0, 4, 2), vec![0, 1]);
        assert_eq!(rooms_of(3, 4, 2), vec![3, 0]);
        assert_eq!(rooms_of(5, 2, 9), vec![1, 0], "at most every room once");
        assert!(rooms_of(5, 0, 1).is_empty());
        assert_eq!(room_name("room-", 7), "room-7");
    }

    #[test]
    fn jumps_are_gaps_and_repeats_duplicates() {
        let mut log = RoomLog::new();
        log.joined("a", 10);
        assert_eq!(log.record("a", 11), Seen::First { missing: 0 });
        assert_eq!(log.record("a", 14), Seen::First { missing: 2 });
        assert_eq!(log.record("a", 14), Seen::Duplicate);
        assert_eq!(log.record("a", 12), Seen::Duplicate);
        assert_eq!(log.last("a"), 14);
        // Joined again with an older latest number: nothing goes back.
        log.joined("a", 3);
        assert_eq!(log.record("a", 15), Seen::First { missing: 0 });
        // A room never joined opens at its first number.
        assert_eq!(log.record("", 900), Seen::First { missing: 0 });
        assert_eq!(log.record("", 902), Seen::First { missing: 1 });
        // A message before the JOIN's answer: the answer does not lower the count.
        log.record("b", 5);
        log.joined("b", 4);
        assert_eq!(log.record("b", 6), Seen::First { missing: 0 });
        // The window open at the JOIN brings numbers up to the room's latest: new, no gap.
        log.joined("c", 20);
        assert_eq!(log.last("c"), 0);
        assert_eq!(log.record("c", 19), Seen::First { missing: 0 });
        assert_eq!(log.record("c", 20), Seen::First { missing: 0 });
        assert_eq!(log.record("c", 20), Seen::Duplicate);
        // The first message past the floor with a hole before it is a gap.
        log.joined("d", 7);
        assert_eq!(log.record("d", 10), Seen::First { missing: 2 });
    }

    #[test]
    fn messages_are_counted_and_timed_in_the_window() {
        let t0 = Instant::now();
        let window = Window {
            measure_start: t0 + Duration::from_secs(1),
            end: t0 + Duration::from_secs(3),
        };
        let mut stats = Stats::new().unwrap();
        let mut log = RoomLog::new();
        log.joined("r", 0);
        let at = |s: u64, now_us: u64| Arrival {
            at: t0 + Duration::from_secs(s),
            now_us,
            window: &window,
        };
        let p = |sent: u64, n: u64| stamped(sent, n, 32);
        on_message(&mut log, &mut stats, "r", 1, &p(100, 1), &at(0, 200));
        on_message(&mut log, &mut stats, "r", 2, &p(100, 2), &at(2, 600));
        on_message(&mut log, &mut stats, "r", 2, &p(100, 2), &at(2, 700));
        on_message(&mut log, &mut stats, "r", 5, b"short", &at(2, 800));
        on_message(&mut log, &mut stats, "r", 6, &p(100, 6), &at(4, 900));
        let c = stats.rooms;
        assert_eq!((c.deliveries, c.deliveries_in_window), (5, 3));
        assert_eq!((c.duplicates, c.gaps, c.missing, c.unstamped), (1, 1, 2, 1));
        // Timed: seq 2 (500 µs) and seq 6 (after the window, still measured: 800 µs).
        assert_eq!(stats.room_latency.len(), 2);
        assert_eq!(stats.room_latency.min(), 500);
    }
}
