//! The timer wheel against its promises: never early, at most a tick late, in deadline order,
//! exactly once; O(1) cancel with ids that cannot hit the wrong timer; and a naive model
//! (a sorted map of deadlines) that it must agree with on any sequence of operations.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tether_state::wheel::{TimerId, TimerWheel};

/// When a timer for `deadline_ms` must fire: its deadline rounded up to a tick.
fn fire_ms(deadline_ms: u64, tick_ms: u64) -> u64 {
    deadline_ms.div_ceil(tick_ms) * tick_ms
}

#[test]
fn fires_on_time_across_every_level_boundary() {
    for tick_ms in [1, 10, 7] {
        for start_ms in [0, 12_345, (1u64 << 36) * tick_ms - 3] {
            let mut deadlines = Vec::new();
            for level in 0..=6u32 {
                let span = 64u64.pow(level) * tick_ms;
                for base in [span, 2 * span, 63 * span, 64 * span] {
                    for delta in [-(tick_ms as i64) - 1, -1, 0, 1, tick_ms as i64 + 1] {
                        deadlines.push(start_ms + base.saturating_add_signed(delta));
                    }
                }
            }
            for deadline in deadlines {
                let mut wheel = TimerWheel::new(tick_ms, start_ms);
                wheel.insert(deadline, deadline);
                let due = fire_ms(deadline, tick_ms);
                assert!(due >= deadline && due - deadline < tick_ms);
                let next = wheel.next_deadline().unwrap();
                assert!(next <= due, "next_deadline {next} after due {due}");
                let mut expired = Vec::new();
                if due <= start_ms {
                    wheel.advance(start_ms, &mut expired);
                    assert_eq!(expired, [deadline], "already due");
                    continue;
                }
                // Wake up whenever next_deadline says, as the daemon will, until just before due.
                let mut wakeups = 0;
                while let Some(next) = wheel.next_deadline().filter(|&n| n < due) {
                    wheel.advance(next, &mut expired);
                    assert!(
                        expired.is_empty(),
                        "fired early: deadline {deadline}, now {next}"
                    );
                    wakeups += 1;
                    assert!(wakeups <= 7, "next_deadline makes progress");
                }
                wheel.advance(due - 1, &mut expired);
                assert!(
                    expired.is_empty(),
                    "deadline {deadline} fired at {}",
                    due - 1
                );
                assert_eq!(wheel.next_deadline(), Some(due), "exact once close");
                wheel.advance(due, &mut expired);
                assert_eq!(expired, [deadline], "tick {tick_ms}, start {start_ms}");
                assert!(wheel.is_empty() && wheel.next_deadline().is_none());
            }
        }
    }
}

#[test]
fn stepping_tick_by_tick_fires_exactly_on_the_tick() {
    let tick_ms = 10;
    let mut wheel = TimerWheel::new(tick_ms, 5);
    let deadlines: Vec<u64> = (0..6_000).step_by(7).collect();
    for &d in &deadlines {
        wheel.insert(d, d);
    }
    let mut fired = Vec::new();
    for now in (0..=60_000).step_by(tick_ms as usize) {
        let mut expired = Vec::new();
        wheel.advance(now, &mut expired);
        for &d in &expired {
            assert_eq!(now, fire_ms(d, tick_ms), "deadline {d}");
        }
        fired.extend(expired);
    }
    assert_eq!(fired, deadlines);
}

#[test]
fn cancel_prevents_firing_and_stale_ids_are_harmless() {
    let mut wheel = TimerWheel::new(1, 0);
    let a = wheel.insert(100, "a");
    let b = wheel.insert(100, "b");
    let far = wheel.insert(1 << 40, "far"); // overflow list
    assert_eq!(wheel.cancel(a), Some("a"));
    assert_eq!(wheel.cancel(a), None, "double cancel");
    assert_eq!(wheel.cancel(far), Some("far"));
    assert_eq!(wheel.len(), 1);
    let mut expired = Vec::new();
    wheel.advance(1 << 41, &mut expired);
    assert_eq!(expired, ["b"]);
    assert_eq!(wheel.cancel(b), None, "cancel after firing");
    assert!(wheel.is_empty());

    // An id from another wheel, pointing past this slab's end.
    let mut big = TimerWheel::new(1, 0);
    let ids: Vec<TimerId> = (0..10).map(|i| big.insert(i, ())).collect();
    let mut small: TimerWheel<()> = TimerWheel::new(1, 0);
    assert_eq!(small.cancel(ids[9]), None);
}

#[test]
fn reused_entry_is_not_cancelled_by_the_old_id() {
    let mut wheel = TimerWheel::new(1, 0);
    let old = wheel.insert(50, "old");
    assert_eq!(wheel.cancel(old), Some("old"));
    let new = wheel.insert(60, "new"); // takes the freed entry
    assert_ne!(old, new);
    assert_eq!(wheel.cancel(old), None);
    assert_eq!(wheel.len(), 1);
    let mut expired = Vec::new();
    wheel.advance(60, &mut expired);
    assert_eq!(expired, ["new"]);

    // Same after firing: the old id of a fired timer cannot cancel its successor.
    let fired = wheel.insert(70, "fired");
    wheel.advance(70, &mut expired);
    let successor = wheel.insert(80, "successor");
    assert_eq!(wheel.cancel(fired), None);
    assert_eq!(wheel.cancel(successor), Some("successor"));
}

#[test]
fn past_deadlines_fire_on_the_next_advance() {
    let mut wheel = TimerWheel::new(10, 10_000);
    wheel.insert(9_000, 2);
    wheel.insert(10_000, 3);
    wheel.insert(0, 1);
    assert_eq!(
        wheel.next_deadline(),
        Some(0),
        "the earliest pending deadline"
    );
    let mut expired = Vec::new();
    wheel.advance(5_000, &mut expired); // even with a clock that went backwards
    assert_eq!(expired, [1, 2, 3], "in deadline order");
}

#[test]
fn huge_jumps_fire_everything_once_in_order() {
    let hour = 3_600_000u64;
    let mut wheel = TimerWheel::new(10, 0);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut deadlines: Vec<u64> = (0..20_000).map(|_| rng.next() % (10 * hour)).collect();
    deadlines.extend([1 << 37, (1 << 37) + 5, u64::MAX - 100, u64::MAX - 1_000]); // overflow list
    for &d in &deadlines {
        wheel.insert(d, d);
    }
    let mut fired = Vec::new();
    wheel.advance(3 * hour, &mut fired);
    let first = fired.len();
    wheel.advance(3 * hour, &mut fired);
    assert_eq!(fired.len(), first, "nothing fires twice");
    wheel.advance(10 * hour, &mut fired);
    wheel.advance(u64::MAX, &mut fired);
    assert!(wheel.is_empty());
    deadlines.sort_by_key(|&d| d.div_ceil(10));
    let ticks = |v: &[u64]| v.iter().map(|&d| d.div_ceil(10)).collect::<Vec<_>>();
    assert_eq!(
        ticks(&fired),
        ticks(&deadlines),
        "every deadline once, in tick order"
    );
}

#[test]
fn a_million_timers() {
    let mut wheel = TimerWheel::new(10, 0);
    let mut rng = Rng(42);
    let ids: Vec<TimerId> = (0..1_000_000u64)
        .map(|i| wheel.insert(rng.next() % 3_600_000, i))
        .collect();
    assert_eq!(wheel.len(), 1_000_000);
    let mut cancelled = 0;
    for id in ids.iter().step_by(2) {
        cancelled += usize::from(wheel.cancel(*id).is_some());
    }
    assert_eq!(cancelled, 500_000);
    let mut fired = Vec::with_capacity(500_000);
    for now in (0..=3_600_000).step_by(1_000) {
        wheel.advance(now, &mut fired);
    }
    assert_eq!(fired.len(), 500_000);
    assert!(fired.iter().all(|i| i % 2 == 1));
    assert!(wheel.is_empty());
    assert!(ids.iter().all(|&id| wheel.cancel(id).is_none()));
}

/// xorshift64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The naive model: a sorted map from (deadline tick, insertion number) to the value.
struct Model {
    tick_ms: u64,
    elapsed: u64,
    live: BTreeMap<(u64, u64), u64>,
}

impl Model {
    fn advance(&mut self, now_ms: u64) -> Vec<u64> {
        self.elapsed = self.elapsed.max(now_ms / self.tick_ms);
        let later = self.live.split_off(&(self.elapsed + 1, 0));
        std::mem::replace(&mut self.live, later)
            .into_values()
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A deadline this far from the clock; negative is in the past.
    Insert(i64),
    /// A deadline on (or `delta` ms around) a slot boundary of `level`, `ahead` slots away.
    InsertAligned { level: u32, ahead: u64, delta: i64 },
    /// Cancel the n-th id ever handed out (modulo their number), fired or not.
    Cancel(usize),
    /// Move the clock forward.
    Advance(u64),
    /// Call advance with a clock this far in the past.
    AdvanceBack(u64),
    /// Sleep until next_deadline, as the daemon does.
    AdvanceToNext,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![-300i64..300, -5_000i64..100_000, 0i64..10_000_000, 0i64..(1 << 40)]
            .prop_map(Op::Insert),
        2 => (0u32..=7, 0u64..66, -2i64..=2)
            .prop_map(|(level, ahead, delta)| Op::InsertAligned { level, ahead, delta }),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => prop_oneof![0u64..30, 0u64..5_000, 0u64..5_000_000, 0u64..(1 << 38)].prop_map(Op::Advance),
        1 => (0u64..1_000).prop_map(Op::AdvanceBack),
        2 => Just(Op::AdvanceToNext),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_a_naive_model(
        tick_ms in prop_oneof![Just(1u64), 1u64..20],
        start_ms in prop_oneof![Just(0u64), 0u64..1_000_000, 0u64..(1 << 42)],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut wheel = TimerWheel::new(tick_ms, start_ms);
        let mut model = Model { tick_ms, elapsed: start_ms / tick_ms, live: BTreeMap::new() };
        let mut now = start_ms;
        let mut ids: Vec<(TimerId, (u64, u64))> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(_) | Op::InsertAligned { .. } => {
                    let deadline = match op {
                        Op::InsertAligned { level, ahead, delta } => {
                            let span = 64u64.pow(level) * tick_ms;
                            ((now / span + ahead) * span).saturating_add_signed(delta)
                        }
                        Op::Insert(delta) => now.saturating_add_signed(delta),
                        _ => unreachable!(),
                    };
                    let seq = ids.len() as u64;
                    let key = (deadline.div_ceil(tick_ms), seq);
                    ids.push((wheel.insert(deadline, seq), key));
                    model.live.insert(key, seq);
                }
                Op::Cancel(n) if !ids.is_empty() => {
                    let (id, key) = ids[n % ids.len()];
                    prop_assert_eq!(wheel.cancel(id), model.live.remove(&key));
                }
                Op::Cancel(_) => {}
                Op::Advance(delta) => {
                    now += delta;
                    let mut expired = Vec::new();
                    wheel.advance(now, &mut expired);
                    prop_assert_eq!(expired, model.advance(now), "advance to {}", now);
                }
                Op::AdvanceBack(delta) => {
                    let back = now.saturating_sub(delta);
                    let mut expired = Vec::new();
                    wheel.advance(back, &mut expired);
                    prop_assert_eq!(expired, model.advance(back));
                }
                Op::AdvanceToNext => {
                    if let Some(next) = wheel.next_deadline() {
                        now = now.max(next);
                        let mut expired = Vec::new();
                        wheel.advance(now, &mut expired);
                        prop_assert_eq!(expired, model.advance(now));
                    }
                }
            }
            prop_assert_eq!(wheel.len(), model.live.len());
            let earliest = model.live.keys().next().map(|&(tick, _)| tick.saturating_mul(tick_ms));
            match (wheel.next_deadline(), earliest) {
                (None, None) => {}
                (Some(next), Some(earliest)) => prop_assert!(
                    next <= earliest,
                    "next_deadline {} later than the earliest timer's {}", next, earliest
                ),
                (got, want) => prop_assert!(false, "next_deadline {:?}, model {:?}", got, want),
            }
        }
    }
}
