//! One room, sans-IO: its sequence numbers, the window of messages being merged, its bounded
//! history, and how many of its members are online on each gateway link.
//!
//! A message published to a room gets the next sequence number and goes into the open window
//! (a ROOM body being built, `tether_proto::room`), opening one if none is; the store sends the
//! window to every link with members when it closes (`merge_ms` after it opened, or at
//! `merge_max` messages or [`MAX_WINDOW_BYTES`]) and the room starts the next. A conflating
//! room keeps only the latest message of a window. Every message is also kept in the history
//! (the last `history` messages, none older than `history_s`), from which a member that missed
//! some asks for them again (JOIN `after`).
//!
//! A room's numbers start at the daemon's wall clock in ms × 1,024 when the room is created
//! in memory (at its first member or message, or again after a restart), and grow by one per
//! message: they never go back unless one room averaged more than 1,024 messages a
//! millisecond over its life, and none of them needs a journal record.

use std::collections::VecDeque;

use tether_proto::room::{BatchWriter, CONFLATED, ENTRY_OVERHEAD, REPLAY};

/// A window closes at this many bytes of messages whatever `merge_max` says.
pub(crate) const MAX_WINDOW_BYTES: usize = 256 * 1024;
/// Largest ROOM body of a replay (a replay longer than this leaves in several frames).
const MAX_REPLAY_BYTES: usize = 512 * 1024;
/// A window buffer grown past this is given back when the window leaves.
const KEEP_WINDOW_CAPACITY: usize = 64 * 1024;

/// How rooms merge and remember, from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomPolicy {
    pub merge_ms: u64,
    pub merge_max: usize,
    pub history: usize,
    pub history_ms: u64,
}

/// What a publish did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// It opened a window: it closes at `merge_ms` from now.
    Opened,
    /// It joined the open window.
    Joined,
    /// The window is full (or merging is off): send it now.
    Full,
}

struct Kept {
    seq: u64,
    unix_ms: u64,
    payload: Box<[u8]>,
}

pub(crate) struct Room {
    /// "" for the broadcast.
    pub name: Box<str>,
    /// The last number given.
    pub seq: u64,
    /// Sessions in it, online or not.
    pub members: u32,
    /// Online members per gateway link: (gateway index, count), counts above 0 only.
    links: Vec<(u16, u32)>,
    pub conflate: bool,
    /// The open window's ROOM body; empty when no window is open.
    window: Vec<u8>,
    writer: BatchWriter,
    /// Bumped each time a window opens, so a deadline of a window that already left is
    /// recognised as stale.
    pub window_id: u64,
    history: VecDeque<Kept>,
}

impl Room {
    pub(crate) fn new(name: &str, conflate: bool, now_unix_ms: u64) -> Room {
        Room {
            name: name.into(),
            seq: now_unix_ms.saturating_mul(1024),
            members: 0,
            links: Vec::new(),
            conflate,
            window: Vec::new(),
            writer: BatchWriter::default(),
            window_id: 0,
            history: VecDeque::new(),
        }
    }

    /// Publishes `payload`: its number, and what became of the window.
    pub(crate) fn publish(
        &mut self,
        payload: &[u8],
        now_unix_ms: u64,
        policy: &RoomPolicy,
    ) -> (u64, Window) {
        self.seq += 1;
        let seq = self.seq;
        let opened = self.window.is_empty();
        if opened {
            self.window_id += 1;
            self.writer = BatchWriter::start(&mut self.window, 0, &self.name);
        } else if self.conflate {
            // Only the latest message of the window stays.
            self.window.clear();
            self.writer = BatchWriter::start(&mut self.window, CONFLATED, &self.name);
        }
        self.writer.push(&mut self.window, seq, payload);
        self.remember(seq, payload, now_unix_ms, policy);
        let full = policy.merge_ms == 0
            || self.writer.entries() >= policy.merge_max.max(1)
            || self.window.len() >= MAX_WINDOW_BYTES;
        let window = if full {
            Window::Full
        } else if opened {
            Window::Opened
        } else {
            Window::Joined
        };
        (seq, window)
    }

    /// The open window's ROOM body and its last number, handed to `send`; the room then has
    /// no open window.
    pub(crate) fn take_window(&mut self, send: impl FnOnce(u64, &[u8])) {
        if self.window.is_empty() {
            return;
        }
        send(self.writer.last_seq(), &self.window);
        self.window.clear();
        if self.window.capacity() > KEEP_WINDOW_CAPACITY {
            self.window = Vec::new();
        }
    }

    /// Bytes of the open window's ROOM body (0: none open).
    pub(crate) fn window_len(&self) -> usize {
        self.window.len()
    }

    pub(crate) fn has_window(&self) -> bool {
        !self.window.is_empty()
    }

    fn remember(&mut self, seq: u64, payload: &[u8], now_unix_ms: u64, policy: &RoomPolicy) {
        if policy.history == 0 {
            return;
        }
        self.history.push_back(Kept {
            seq,
            unix_ms: now_unix_ms,
            payload: payload.into(),
        });
        while self.history.len() > policy.history {
            self.history.pop_front();
        }
        self.forget(now_unix_ms, policy);
    }

    /// Drops history older than `history_s`.
    pub(crate) fn forget(&mut self, now_unix_ms: u64, policy: &RoomPolicy) {
        while self
            .history
            .front()
            .is_some_and(|k| now_unix_ms.saturating_sub(k.unix_ms) > policy.history_ms)
        {
            self.history.pop_front();
        }
    }

    /// Whether nothing keeps this room: no member, no open window, no history.
    pub(crate) fn is_idle(&self) -> bool {
        self.members == 0 && self.window.is_empty() && self.history.is_empty()
    }

    /// The history after `after`, as ROOM bodies flagged REPLAY, each with its last number.
    pub(crate) fn replay(&self, after: u64, mut send: impl FnMut(u64, &[u8])) {
        let mut body = Vec::new();
        let mut writer: Option<BatchWriter> = None;
        for kept in self.history.iter().filter(|k| k.seq > after) {
            if writer.is_some()
                && body.len() + ENTRY_OVERHEAD + kept.payload.len() > MAX_REPLAY_BYTES
            {
                if let Some(w) = writer.take() {
                    send(w.last_seq(), &body);
                }
                body.clear();
            }
            let w = writer.get_or_insert_with(|| BatchWriter::start(&mut body, REPLAY, &self.name));
            w.push(&mut body, kept.seq, &kept.payload);
        }
        if let Some(w) = writer {
            send(w.last_seq(), &body);
        }
    }

    /// Messages in the history.
    pub(crate) fn kept(&self) -> usize {
        self.history.len()
    }

    /// The gateway links with online members.
    pub(crate) fn links(&self) -> impl Iterator<Item = u16> + '_ {
        self.links.iter().map(|&(gw, _)| gw)
    }

    /// Online members in all.
    pub(crate) fn online(&self) -> u32 {
        self.links.iter().map(|&(_, n)| n).sum()
    }

    /// One more online member on `gw`.
    pub(crate) fn link_up(&mut self, gw: u16) {
        match self.links.iter_mut().find(|(g, _)| *g == gw) {
            Some((_, n)) => *n += 1,
            None => self.links.push((gw, 1)),
        }
    }

    /// One fewer online member on `gw`.
    pub(crate) fn link_down(&mut self, gw: u16) {
        if let Some(at) = self.links.iter().position(|(g, _)| *g == gw) {
            self.links[at].1 -= 1;
            if self.links[at].1 == 0 {
                self.links.swap_remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::room::Batch;

    const POLICY: RoomPolicy = RoomPolicy {
        merge_ms: 100,
        merge_max: 3,
        history: 4,
        history_ms: 60_000,
    };

    fn window(room: &mut Room) -> (u64, Vec<(u64, Vec<u8>)>, u8) {
        let mut got = None;
        room.take_window(|last, body| {
            let batch = Batch::parse(body).unwrap();
            let entries = batch
                .entries()
                .map(|e| (e.seq, e.payload.to_vec()))
                .collect();
            got = Some((last, entries, batch.flags));
        });
        got.unwrap()
    }

    #[test]
    fn messages_of_a_window_leave_together_numbered_in_order() {
        let mut room = Room::new("lobby", false, 1);
        let base = room.seq;
        assert_eq!(base, 1024);
        assert_eq!(room.publish(b"a", 5, &POLICY), (base + 1, Window::Opened));
        assert_eq!(room.publish(b"b", 5, &POLICY), (base + 2, Window::Joined));
        let (last, entries, flags) = window(&mut room);
        assert_eq!(last, base + 2);
        assert_eq!(flags, 0);
        assert_eq!(
            entries,
            [(base + 1, b"a".to_vec()), (base + 2, b"b".to_vec())]
        );
        assert!(!room.has_window());
        // merge_max closes a window at once.
        room.publish(b"c", 5, &POLICY);
        room.publish(b"d", 5, &POLICY);
        assert_eq!(room.publish(b"e", 5, &POLICY).1, Window::Full);
        assert_eq!(window(&mut room).1.len(), 3);
        // merge_ms 0: every message alone.
        let alone = RoomPolicy {
            merge_ms: 0,
            ..POLICY
        };
        assert_eq!(room.publish(b"f", 5, &alone).1, Window::Full);
    }

    #[test]
    fn a_conflating_room_keeps_the_latest_of_a_window() {
        let mut room = Room::new("score", true, 0);
        room.publish(b"1", 5, &POLICY);
        room.publish(b"2", 5, &POLICY);
        let (last, entries, flags) = window(&mut room);
        assert_eq!(entries, [(last, b"2".to_vec())]);
        assert_eq!(flags, CONFLATED);
        // A window of one message is not flagged.
        room.publish(b"3", 5, &POLICY);
        assert_eq!(window(&mut room).2, 0);
    }

    #[test]
    fn history_is_bounded_by_count_and_age_and_replays_after_a_number() {
        let mut room = Room::new("r", false, 0);
        for i in 0..6u8 {
            room.publish(&[i], 1_000, &POLICY);
        }
        assert_eq!(room.kept(), 4);
        let mut replays = Vec::new();
        room.replay(room.seq - 2, |last, body| {
            let batch = Batch::parse(body).unwrap();
            assert_eq!(batch.flags, REPLAY);
            replays.push((
                last,
                batch.entries().map(|e| e.payload[0]).collect::<Vec<_>>(),
            ));
        });
        assert_eq!(replays, [(room.seq, vec![4, 5])]);
        let mut none = 0;
        room.replay(room.seq, |_, _| none += 1);
        assert_eq!(none, 0);
        room.forget(1_000 + POLICY.history_ms + 1, &POLICY);
        assert_eq!(room.kept(), 0);
    }

    #[test]
    fn links_count_online_members() {
        let mut room = Room::new("r", false, 0);
        room.link_up(3);
        room.link_up(3);
        room.link_up(5);
        assert_eq!(room.online(), 3);
        room.link_down(3);
        room.link_down(5);
        assert_eq!(room.links().collect::<Vec<_>>(), [3]);
        room.link_down(9); // not there: nothing
        assert_eq!(room.online(), 1);
    }
}
