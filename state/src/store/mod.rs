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
//!
//! One file per concept, each an `impl Store` block over the type defined here:
//!
//! - `links.rs`: what a gateway link sends (HELLO, LOGIN, RESUME, HEARTBEAT, ANNOUNCE, CLOSED,
//!   ACK) and what each does to the sessions;
//! - `fleet.rs`: what the fleet engine decided (logins, takeovers, pushes from other hosts);
//! - `push.rs`: what the HTTP API asks: queue a push, view or end a session;
//! - `rooms.rs`: room membership, publishing, and the windows that leave on their deadline;
//! - `lifecycle.rs`: a session going from online to detached to removed, on its timer;
//! - `delivery.rs`: a session's push queue: sending, retransmitting, expiring;
//! - `timers.rs`: the timing wheel, and which timer of which session fired;
//! - `records.rs`: the journal records a loop iteration produced;
//! - `replay.rs`: the state rebuilt from those records at startup;
//! - `snapshot.rs`: the whole state as records, for compaction;
//! - `output.rs`: the frames each gateway receives, and the gauges;
//! - `indexes.rs`: the slab of sessions and its three hash tables;
//! - `gateways.rs`: the table of gateway ids;
//! - `now.rs`, `rules.rs`: the clocks and the rules, as the loop passes them in;
//! - `entropy.rs`: the secrets of resume tokens.

mod delivery;
mod entropy;
mod fleet;
mod gateways;
mod indexes;
mod lifecycle;
mod links;
mod now;
mod output;
mod push;
mod records;
mod replay;
mod rooms;
mod rules;
mod snapshot;
mod timers;

use std::fmt;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use slab::Slab;

use crate::metrics::Metrics;
use crate::room::Room;
use crate::session::Session;
use crate::wheel::TimerWheel;

use entropy::Entropy;
use gateways::Gateway;
use records::RecordBuf;

pub use crate::session::Reserved;
pub use fleet::LocalSession;
pub use links::{LinkFault, Verified};
pub use now::Now;
pub use push::{EndedSession, PushRefused, PushStatus, SessionView, ENDED_BY_OPERATOR};
pub use rooms::{Membership, Published, RoomRefused, RoomView};
pub use rules::Rules;

/// The timer wheel's resolution.
const TICK_MS: u64 = 10;
/// Longest gateway id.
pub(crate) const MAX_GATEWAY_ID: usize = 128;

/// Ids a millisecond the clock floor of [`Store::finish_replay`] allows for.
pub(crate) const IDS_PER_MS: u64 = 1024;

/// Every session, gateway and timer of the daemon. See the [module documentation](self).
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
    /// Payload bytes of `pending`, bounded by `max_pending_bytes`.
    pending_bytes: u64,
    rooms: Slab<Room>,
    room_index: FxHashMap<Box<str>, u32>,
    /// The broadcast to every session, numbered and merged as a room.
    broadcast: Room,
    /// Open windows by deadline (monotonic ms): (deadline, room, window id). `merge_ms` is
    /// one for all rooms, so deadlines come in order.
    windows: std::collections::VecDeque<(u64, u32, u64)>,
    next_window: u64,
    /// The links a window goes to (kept for its capacity).
    room_links: Vec<u16>,
    next_room_sweep_ms: u64,
}

/// Counts only: a store holds every session of the daemon.
impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("sessions", &self.sessions.len())
            .field("online", &self.online)
            .field("gateways", &self.gateways.len())
            .field("timers", &self.wheel.len())
            .field("pending", &self.pending)
            .field("pending_bytes", &self.pending_bytes)
            .finish_non_exhaustive()
    }
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
            pending_bytes: 0,
            rooms: Slab::new(),
            room_index: FxHashMap::default(),
            broadcast: Room::new("", false, now.unix_ms),
            windows: std::collections::VecDeque::new(),
            next_window: 0,
            room_links: Vec::new(),
            next_room_sweep_ms: now.mono_ms,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// New rules from a reload. They apply to what happens from now on: running timers keep
    /// their deadlines.
    pub(crate) fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The HELLO_OK body.
    pub(crate) fn hello_ok_body(&self) -> String {
        format!(
            r#"{{"heartbeat_s":{},"resume_window_s":{},"max_pending":{}}}"#,
            self.rules.heartbeat_s, self.rules.resume_window_s, self.rules.max_pending
        )
    }
}
