//! A hierarchical timing wheel: the state daemon's heartbeat deadlines, resume-window expiries
//! and push retransmits, hundreds of thousands to a million of them, with O(1) insert, O(1)
//! cancel and expiry work proportional to what actually expires.
//!
//! It is sans-IO: the daemon passes its clock in (milliseconds, monotonic) to
//! [`TimerWheel::advance`], sleeps until [`TimerWheel::next_deadline`], and gets back the
//! values of the timers that expired, in deadline order.
//!
//! ```
//! use tether_state::wheel::TimerWheel;
//!
//! let mut wheel = TimerWheel::new(10, 0); // 10 ms ticks, clock at 0
//! let kick = wheel.insert(30_000, "kick session 7"); // 3 × a 10 s heartbeat interval
//! wheel.insert(50, "retransmit push 9");
//! wheel.cancel(kick); // a heartbeat arrived: the deadline moves
//! let mut expired = Vec::new();
//! wheel.advance(60, &mut expired);
//! assert_eq!(expired, ["retransmit push 9"]);
//! ```
//!
//! # Time
//!
//! Time is counted in ticks of `tick_ms`. A deadline is rounded *up* to a tick, the clock
//! *down*: a timer fires on the first `advance` whose `now_ms` has reached its deadline's tick
//! — never before its deadline, and at most one tick after it when `advance` is called at
//! least once a tick. Deadlines already in the past fire on the next `advance`. (The one
//! exception is a deadline in the last tick below `u64::MAX` ms, whose tick the clock can
//! never reach: it never fires, 584 million years from the epoch.)
//!
//! # Layout
//!
//! Six levels of 64 slots; a slot at level `L` spans 64^L ticks, so the wheel covers 2^36
//! ticks (795 days at 1 ms ticks). A timer goes to the level of the highest bit in which its
//! deadline differs from the current tick, into the slot its deadline's bits at that level
//! name (the Linux kernel's and tokio's scheme). When time enters a slot of level `L ≥ 1`, the
//! slot is emptied and its timers go down to finer levels ("cascading"); each timer cascades at
//! most five times over its whole life. Timers beyond the wheel's span wait in an overflow list
//! that is re-examined only when time enters the 2^36-tick rotation of its earliest timer.
//! Timers already due wait in a pending list until the next `advance`.
//!
//! Every level keeps a 64-bit occupancy mask, so finding the next non-empty slot is a
//! `trailing_zeros`, never a scan of empty slots: a jump of hours costs the work of the timers
//! it fires or cascades, not of the ticks it skips.
//!
//! # Memory
//!
//! Timers live in one slab (`Vec`) of entries threaded on intrusive doubly-linked lists by
//! `u32` index — no pointers, no per-timer allocation — and freed entries are reused. For
//! `T = u64` an entry is **40 bytes** (`Option<u64>` 16, deadline 8, two links 8, generation
//! 4, list number 2, padding 2), plus the slack of the `Vec`'s growth; the lists' heads are a
//! fixed 3 KiB. For a `T` with a niche (a `Box`, a `NonZero*`), `Option<T>` costs nothing.
//!
//! # Ids
//!
//! A [`TimerId`] carries its entry's index and a generation bumped every time the entry is
//! freed, so cancelling a timer that already fired or was cancelled returns `None` and never
//! touches a newer timer that reuses the entry (until the same entry has been reused 2^32
//! times while the stale id is still held).

use std::fmt;

/// Bits of a tick number each level resolves.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
const LEVELS: usize = 6;
/// Ticks the wheel spans: 2^36.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;

/// List numbers: `0..LEVELS * SLOTS` are the slots, then these.
const PENDING: u16 = (LEVELS * SLOTS) as u16;
const OVERFLOW: u16 = PENDING + 1;
const LIST_COUNT: usize = OVERFLOW as usize + 1;
/// Not on any list: the entry is free.
const FREE: u16 = u16::MAX;

const NIL: u32 = u32::MAX;

/// A handle to cancel a timer. Stale handles are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// One timer, or a free entry (`value` is `None`, `next` links the free list).
struct Entry<T> {
    value: Option<T>,
    /// Deadline in ticks.
    when: u64,
    prev: u32,
    next: u32,
    generation: u32,
    list: u16,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// What happens next in the wheel, and at which tick.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The timers of a level-0 slot are due.
    Fire(u16),
    /// Time enters a slot of a coarser level: its timers move down.
    Cascade(u16),
    /// Time enters the rotation of the earliest overflow timer.
    Overflow,
}

/// A hierarchical timing wheel holding values of type `T`. See the [module documentation](self).
pub struct TimerWheel<T> {
    tick_ms: u64,
    /// Current tick: every timer due at or before it has been handed out or is pending.
    elapsed: u64,
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
    lists: Box<[List; LIST_COUNT]>,
    /// Bit `s` of `occupied[L]`: slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    /// A lower bound of the earliest deadline on the pending list.
    pending_min: u64,
    /// A lower bound of the earliest deadline on the overflow list.
    overflow_min: u64,
    /// Reused by `fire_pending` to sort.
    scratch: Vec<(u64, u32)>,
}

impl<T> TimerWheel<T> {
    /// A wheel of `tick_ms`-millisecond ticks (0 is taken as 1) whose clock reads `now_ms`.
    pub fn new(tick_ms: u64, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        TimerWheel {
            tick_ms,
            elapsed: now_ms / tick_ms,
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            lists: Box::new([EMPTY; LIST_COUNT]),
            occupied: [0; LEVELS],
            pending_min: u64::MAX,
            overflow_min: u64::MAX,
            scratch: Vec::new(),
        }
    }

    /// Schedules `value` for `deadline_ms` (on the clock `advance` is given). O(1).
    ///
    /// # Panics
    ///
    /// If more than 2^32 − 1 timers are alive at once (160 GiB of entries).
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let when = deadline_ms / self.tick_ms + u64::from(deadline_ms % self.tick_ms != 0);
        let index = self.allocate(value, when);
        self.place(index);
        self.len += 1;
        TimerId {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Cancels a timer and returns its value. O(1). `None` if the timer already fired, was
    /// already cancelled, or the id is not from this wheel.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.index as usize)?;
        if entry.generation != id.generation || entry.list == FREE {
            return None;
        }
        self.unlink(id.index);
        self.len -= 1;
        self.release(id.index)
    }

    /// Moves the clock to `now_ms` and appends to `expired` the value of every timer that is
    /// due, in deadline order (by tick; timers of the same tick in the order they were
    /// inserted). A `now_ms` earlier than a previous one moves nothing back.
    pub fn advance(&mut self, now_ms: u64, expired: &mut Vec<T>) {
        let target = now_ms / self.tick_ms;
        self.fire_pending(expired);
        while let Some((tick, event)) = self.next_event() {
            if tick > target {
                break;
            }
            debug_assert!(tick > self.elapsed, "events lie ahead of the clock");
            self.elapsed = tick;
            match event {
                Event::Fire(list) => self.fire_list(list, expired),
                Event::Cascade(list) => {
                    self.cascade(list);
                    self.fire_pending(expired);
                }
                Event::Overflow => {
                    self.cascade(OVERFLOW);
                    self.fire_pending(expired);
                }
            }
        }
        // Nothing is due up to `target`, so every timer keeps its place relative to it.
        self.elapsed = self.elapsed.max(target);
    }

    /// When to call [`advance`](Self::advance) next, in milliseconds; `None` when no timer is
    /// scheduled. Never later than the earliest timer's firing time (its deadline rounded up
    /// to a tick) — so sleeping until then never oversleeps — and exact when that timer is
    /// within 64 ticks. When the earliest timer sits in a coarser level this is the start of
    /// its slot, earlier than its deadline: the `advance` then moves it down, and the next
    /// call is tighter. Already-due timers give a time at or before the current clock.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.lists[PENDING as usize].head != NIL {
            return Some(self.pending_min.saturating_mul(self.tick_ms));
        }
        self.next_event()
            .map(|(tick, _)| tick.saturating_mul(self.tick_ms))
    }

    /// Timers scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// The earliest scheduled event and its tick: the first occupied slot ahead of the clock
    /// on the finest level that has one. Every timer on a finer level is due before any timer
    /// on a coarser one, and every wheel timer before any overflow timer.
    fn next_event(&self) -> Option<(u64, Event)> {
        for level in 0..LEVELS {
            let shift = SLOT_BITS * level as u32;
            let current = (self.elapsed >> shift) & SLOT_MASK;
            // Slots at or behind the current one are empty: their timers went down a level
            // when time entered them, and later deadlines there belong to a coarser level.
            let ahead = match current {
                SLOT_MASK => 0,
                _ => self.occupied[level] & (u64::MAX << (current + 1)),
            };
            if ahead != 0 {
                let slot = u64::from(ahead.trailing_zeros());
                let span = shift + SLOT_BITS;
                let tick = (self.elapsed >> span << span) | (slot << shift);
                let list = (level * SLOTS + slot as usize) as u16;
                let event = if level == 0 {
                    Event::Fire(list)
                } else {
                    Event::Cascade(list)
                };
                return Some((tick, event));
            }
        }
        if self.lists[OVERFLOW as usize].head != NIL {
            let rotation_start = self.overflow_min >> WHEEL_BITS << WHEEL_BITS;
            return Some((rotation_start, Event::Overflow));
        }
        None
    }

    /// Puts a detached entry on the list its deadline calls for, relative to the clock.
    fn place(&mut self, index: u32) {
        let when = self.entries[index as usize].when;
        let list = if when <= self.elapsed {
            self.pending_min = self.pending_min.min(when);
            PENDING
        } else {
            // The highest bit in which `when` differs from the clock picks the level.
            let highest = 63 - ((self.elapsed ^ when) | SLOT_MASK).leading_zeros();
            let level = (highest / SLOT_BITS) as usize;
            if level >= LEVELS {
                self.overflow_min = self.overflow_min.min(when);
                OVERFLOW
            } else {
                let slot = (when >> (SLOT_BITS * level as u32)) & SLOT_MASK;
                self.occupied[level] |= 1 << slot;
                (level * SLOTS + slot as usize) as u16
            }
        };
        self.push_back(list, index);
    }

    /// Hands out every timer of a level-0 slot.
    fn fire_list(&mut self, list: u16, expired: &mut Vec<T>) {
        let mut index = self.take_list(list);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.len -= 1;
            expired.extend(self.release(index));
            index = next;
        }
    }

    /// Hands out the pending timers, earliest deadline first (ties in insertion order).
    fn fire_pending(&mut self, expired: &mut Vec<T>) {
        let mut index = self.take_list(PENDING);
        if index == NIL {
            return;
        }
        let mut due = std::mem::take(&mut self.scratch);
        while index != NIL {
            let entry = &self.entries[index as usize];
            due.push((entry.when, index));
            index = entry.next;
        }
        due.sort_by_key(|&(when, _)| when); // stable: ties keep insertion order
        for &(_, index) in &due {
            self.len -= 1;
            expired.extend(self.release(index));
        }
        due.clear();
        self.scratch = due;
    }

    /// Re-places every timer of `list` relative to the clock, keeping their order.
    fn cascade(&mut self, list: u16) {
        let mut index = self.take_list(list);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.place(index);
            index = next;
        }
    }

    /// Detaches a whole list and returns its first entry; the entries keep their `next` links.
    fn take_list(&mut self, list: u16) -> u32 {
        let head = std::mem::replace(&mut self.lists[list as usize], EMPTY).head;
        self.list_emptied(list);
        head
    }

    /// Keeps the occupancy masks and lower bounds in step with an emptied list.
    fn list_emptied(&mut self, list: u16) {
        match list {
            PENDING => self.pending_min = u64::MAX,
            OVERFLOW => self.overflow_min = u64::MAX,
            slot => {
                let (level, slot) = (slot as usize / SLOTS, slot as usize % SLOTS);
                self.occupied[level] &= !(1 << slot);
            }
        }
    }

    fn push_back(&mut self, list: u16, index: u32) {
        let tail = self.lists[list as usize].tail;
        let entry = &mut self.entries[index as usize];
        entry.list = list;
        entry.prev = tail;
        entry.next = NIL;
        match tail {
            NIL => self.lists[list as usize].head = index,
            tail => self.entries[tail as usize].next = index,
        }
        self.lists[list as usize].tail = index;
    }

    fn unlink(&mut self, index: u32) {
        let Entry {
            prev, next, list, ..
        } = self.entries[index as usize];
        match prev {
            NIL => self.lists[list as usize].head = next,
            prev => self.entries[prev as usize].next = next,
        }
        match next {
            NIL => self.lists[list as usize].tail = prev,
            next => self.entries[next as usize].prev = prev,
        }
        if self.lists[list as usize].head == NIL {
            self.list_emptied(list);
        }
    }

    /// Takes an entry from the free list (or grows the slab) for a new timer.
    fn allocate(&mut self, value: T, when: u64) -> u32 {
        if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.value = Some(value);
            entry.when = when;
            return index;
        }
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != NIL)
            .expect("more than 2^32 - 1 timers alive at once");
        self.entries.push(Entry {
            value: Some(value),
            when,
            prev: NIL,
            next: NIL,
            generation: 0,
            list: FREE,
        });
        index
    }

    /// Frees a detached entry, invalidating its ids, and returns its value.
    fn release(&mut self, index: u32) -> Option<T> {
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.list = FREE;
        entry.prev = NIL;
        entry.next = self.free_head;
        self.free_head = index;
        entry.value.take()
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("elapsed_ticks", &self.elapsed)
            .field("len", &self.len)
            .field("slab_entries", &self.entries.len())
            .finish()
    }
}

/// The delay before retransmission number `attempt` (0 for the first retransmit):
/// `base_ms × 2^attempt`, capped at `cap_ms`; `None` once `attempt` reaches `max_attempts`,
/// when the caller should give up (drop the push, kick the session) instead of retrying for
/// ever. Overflow-safe for every input.
///
/// ```
/// use tether_state::wheel::backoff_ms;
///
/// let delays: Vec<_> = (0..7).map(|a| backoff_ms(a, 500, 4_000, 6)).collect();
/// assert_eq!(delays, [Some(500), Some(1_000), Some(2_000), Some(4_000), Some(4_000), Some(4_000), None]);
/// ```
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, max_attempts: u32) -> Option<u64> {
    if attempt >= max_attempts {
        return None;
    }
    let delay = 1u64
        .checked_shl(attempt)
        .and_then(|factor| base_ms.checked_mul(factor))
        .unwrap_or(u64::MAX);
    Some(delay.min(cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_size_for_u64() {
        // The figure the module documentation promises.
        assert!(std::mem::size_of::<Entry<u64>>() <= 40);
    }

    #[test]
    fn backoff_doubles_caps_and_stops() {
        assert_eq!(backoff_ms(0, 100, 10_000, 10), Some(100));
        assert_eq!(backoff_ms(3, 100, 10_000, 10), Some(800));
        assert_eq!(backoff_ms(7, 100, 10_000, 10), Some(10_000));
        assert_eq!(backoff_ms(9, 100, 10_000, 10), Some(10_000));
        assert_eq!(backoff_ms(10, 100, 10_000, 10), None);
        assert_eq!(backoff_ms(0, 100, 10_000, 0), None);
    }

    #[test]
    fn backoff_never_overflows() {
        for attempt in [63, 64, 65, 1_000, u32::MAX - 1] {
            assert_eq!(backoff_ms(attempt, u64::MAX, 7, u32::MAX), Some(7));
            assert_eq!(backoff_ms(attempt, 3, u64::MAX, u32::MAX), Some(u64::MAX));
        }
        assert_eq!(backoff_ms(62, 3, u64::MAX, u32::MAX), Some(3 << 62));
        assert_eq!(backoff_ms(62, 4, u64::MAX, u32::MAX), Some(u64::MAX));
        assert_eq!(backoff_ms(5, 0, 1_000, 10), Some(0));
    }
}
