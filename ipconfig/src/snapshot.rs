//! The `/ip_list` answer, pre-serialized, and the per-request shuffle of tied gateways.
//!
//! A [`Snapshot`] is built from a [`Ranking`](crate::registry::Ranking) after reports arrive
//! (at most every `rebuild_interval`). It holds the JSON bytes of every entry that can appear
//! in an answer, grouped into **tie groups** (consecutive entries whose dynamic and static
//! scores are equal after rounding). The groups kept are those that cover the first `top_n`
//! places; the last one is kept whole even when it reaches past `top_n`, so that every member
//! of a tie straddling the cut has the same chance to be listed.
//!
//! A request never serializes anything: [`Snapshot::render`] copies a prefix, then the
//! entries group by group in an order dealt by a [`Dealer`], then a suffix — a few memcpys.
//!
//! Dealing a group of `m` tied entries when `k` places are left: the first place goes to entry
//! `turn mod m`, where `turn` counts the thread's requests from a random start, and the other
//! `k − 1` places are a uniformly random draw of the rest (a partial Fisher–Yates over the
//! virtual array `0..m` that remembers only the swapped positions, so it costs O(k) even for
//! a group of thousands). Every tied gateway is thus first equally often — exactly, per
//! thread, not just on average — which is what keeps a burst of new clients from piling onto
//! one gateway between two reports; the rest of the order is random.
//!
//! [`SnapshotCell`] publishes snapshots: the rebuild swaps an `Arc` under a mutex and bumps a
//! generation number; a request reads the generation (one atomic load) and uses the `Arc` its
//! thread cached, taking the mutex only to clone the new `Arc` once per rebuild. No lock is
//! ever held while a request is served.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::registry::Ranked;
use crate::report::Transports;
use crate::rng::WyRand;

const PREFIX: &[u8] = b"{\"gateways\":[";

/// One entry of the list as JSON: `{"id","addr","transports":{…},"score":{"dynamic","static"}}`
/// (`transports` lists only what the gateway offers: `{}` from a gateway that does not say).
#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    addr: &'a str,
    transports: &'a Transports,
    score: EntryScore,
}

#[derive(Serialize)]
struct EntryScore {
    dynamic: f64,
    #[serde(rename = "static")]
    static_: f64,
}

/// The pre-serialized list at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    generated_at_ms: u64,
    top_n: usize,
    /// Every kept entry's JSON, back to back, in rank order.
    json: Vec<u8>,
    /// `json[spans[i]]` is entry i.
    spans: Vec<Range<usize>>,
    /// Tie groups, as ranges of entry indices, best first.
    groups: Vec<Range<usize>>,
    /// `],"generated_at_ms":…}`
    suffix: Vec<u8>,
    /// The 503 body.
    unavailable: Vec<u8>,
    /// Entries an answer lists: min(top_n, live gateways).
    listed: usize,
    /// The longest `listed` entries' lengths summed: with prefix, suffix and commas, an upper
    /// bound of a body's length.
    body_capacity: usize,
}

impl Snapshot {
    /// A snapshot listing nothing (before the first report).
    pub fn empty(generated_at_ms: u64) -> Snapshot {
        Snapshot::build(&[], 1, generated_at_ms)
    }

    /// Builds the snapshot of `ranked` (best first, as [`Ranking::sort`](crate::registry::Ranking::sort)
    /// leaves it) for answers of at most `top_n` entries.
    pub fn build(ranked: &[Ranked], top_n: usize, generated_at_ms: u64) -> Snapshot {
        let top_n = top_n.max(1);
        let mut json = Vec::new();
        let mut spans = Vec::new();
        let mut groups: Vec<Range<usize>> = Vec::new();
        for (i, r) in ranked.iter().enumerate() {
            let starts_group = i == 0 || ranked[i - 1].score != r.score;
            if starts_group {
                if i >= top_n {
                    break;
                }
                groups.push(i..i);
            }
            let start = json.len();
            let entry = Entry {
                id: &r.id,
                addr: &r.addr,
                transports: &r.transports,
                score: EntryScore {
                    dynamic: r.score.dynamic(),
                    static_: r.score.static_(),
                },
            };
            // Writing plain strings and finite numbers into a Vec cannot fail.
            if serde_json::to_writer(&mut json, &entry).is_err() {
                json.truncate(start);
                json.extend_from_slice(b"null");
            }
            spans.push(start..json.len());
            if let Some(g) = groups.last_mut() {
                g.end = i + 1;
            }
        }
        let listed = spans.len().min(top_n);
        let mut lengths: Vec<usize> = spans.iter().map(|s| s.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        let longest: usize = lengths.iter().take(listed).sum();
        let suffix = format!("],\"generated_at_ms\":{generated_at_ms}}}").into_bytes();
        let unavailable = serde_json::json!({
            "error": "no gateway is available: none has reported recently, or all are draining or full",
            "generated_at_ms": generated_at_ms,
        })
        .to_string()
        .into_bytes();
        Snapshot {
            generated_at_ms,
            top_n,
            body_capacity: PREFIX.len() + longest + listed + suffix.len(),
            json,
            spans,
            groups,
            suffix,
            unavailable,
            listed,
        }
    }

    /// When it was built, ms since the Unix epoch.
    pub fn generated_at_ms(&self) -> u64 {
        self.generated_at_ms
    }

    /// Entries an answer lists (0: answers are 503).
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// The sizes of the tie groups kept, best first.
    pub fn group_sizes(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.len()).collect()
    }

    /// The 503 body: `{"error": …, "generated_at_ms": …}`.
    pub fn unavailable_body(&self) -> &[u8] {
        &self.unavailable
    }

    /// The 200 body, with ties dealt by `dealer`; `None` when no gateway is listed.
    pub fn render(&self, dealer: &mut Dealer) -> Option<Vec<u8>> {
        if self.listed == 0 {
            return None;
        }
        let mut body = Vec::with_capacity(self.body_capacity);
        body.extend_from_slice(PREFIX);
        let mut left = self.top_n;
        dealer.next_turn();
        for group in &self.groups {
            if left == 0 {
                break;
            }
            let m = group.len();
            let k = m.min(left);
            dealer.deal(m, k);
            for &i in &dealer.order {
                if body.len() > PREFIX.len() {
                    body.push(b',');
                }
                if let Some(span) = self.spans.get(group.start + i as usize) {
                    body.extend_from_slice(&self.json[span.clone()]);
                }
            }
            left -= k;
        }
        body.extend_from_slice(&self.suffix);
        Some(body)
    }
}

/// Deals the order of tied entries; one per thread (it is not `Sync`).
#[derive(Debug, Clone)]
pub struct Dealer {
    rng: WyRand,
    turn: u64,
    /// Positions of the virtual array that hold something other than their own index.
    swapped: Vec<(u32, u32)>,
    /// The last deal.
    order: Vec<u32>,
}

impl Dealer {
    /// A dealer whose deals are fixed by `seed` (tests).
    pub fn seeded(seed: u64) -> Dealer {
        let mut rng = WyRand::seeded(seed);
        let turn = rng.next_u64();
        Dealer {
            rng,
            turn,
            swapped: Vec::new(),
            order: Vec::new(),
        }
    }

    /// A dealer seeded from the clock and the thread.
    pub fn from_entropy() -> Dealer {
        Dealer::seeded(WyRand::from_entropy().next_u64())
    }

    /// Moves on to the next request: the next entry of each group comes first.
    pub fn next_turn(&mut self) {
        self.turn = self.turn.wrapping_add(1);
    }

    /// Picks `k` of the positions `0..m` in order (see the module docs) into `self.order`.
    pub fn deal(&mut self, m: usize, k: usize) -> &[u32] {
        self.order.clear();
        self.swapped.clear();
        let m = u32::try_from(m).unwrap_or(u32::MAX);
        let k = u32::try_from(k).unwrap_or(u32::MAX).min(m);
        for i in 0..k {
            let j = if i == 0 {
                (self.turn % u64::from(m)) as u32
            } else {
                i + self.rng.below(m - i)
            };
            let at_j = self.value_at(j);
            let at_i = self.value_at(i);
            // Swap virtual positions i and j; position i is never looked at again.
            self.set(j, at_i);
            self.order.push(at_j);
        }
        &self.order
    }

    fn value_at(&self, position: u32) -> u32 {
        self.swapped
            .iter()
            .find(|(p, _)| *p == position)
            .map_or(position, |&(_, v)| v)
    }

    fn set(&mut self, position: u32, value: u32) {
        match self.swapped.iter_mut().find(|(p, _)| *p == position) {
            Some(slot) => slot.1 = value,
            None => self.swapped.push((position, value)),
        }
    }
}

/// Where the current snapshot is published (see the module docs).
#[derive(Debug)]
pub struct SnapshotCell {
    /// Tells this cell's snapshots apart from another cell's in a thread's cache.
    id: u64,
    generation: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
}

thread_local! {
    /// This thread's last snapshot: (cell id, generation, snapshot).
    static CACHED: RefCell<Option<(u64, u64, Arc<Snapshot>)>> = const { RefCell::new(None) };
}

impl SnapshotCell {
    pub fn new(snapshot: Snapshot) -> SnapshotCell {
        static IDS: AtomicU64 = AtomicU64::new(0);
        SnapshotCell {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(snapshot)),
        }
    }

    /// Publishes `snapshot`; requests already running finish with the one they hold.
    pub fn publish(&self, snapshot: Snapshot) {
        let new = Arc::new(snapshot);
        let old = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, new)
        };
        self.generation.fetch_add(1, Ordering::Release);
        drop(old);
    }

    /// The current snapshot (an `Arc` clone under the mutex).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on the current snapshot through this thread's cache: one atomic load when
    /// nothing was published since this thread last looked.
    pub fn with<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let snapshot = CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            match &*cached {
                Some((id, g, s)) if *id == self.id && *g == generation => s.clone(),
                _ => {
                    let s = self.load();
                    *cached = Some((self.id, generation, s.clone()));
                    s
                }
            }
        });
        f(&snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Score;
    use serde_json::Value;

    fn ranked(entries: &[(&str, i64, i64)]) -> Vec<Ranked> {
        entries
            .iter()
            .map(|&(id, d, s)| Ranked {
                id: Arc::from(id),
                addr: Arc::from(format!("{id}.example:8900").as_str()),
                transports: Arc::new(Transports {
                    tcp: Some(format!("{id}.example:8900")),
                    ws: Some(format!("{id}.example:8920")),
                    ..Transports::default()
                }),
                score: Score::from_centi(d, s),
            })
            .collect()
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_body_is_the_documented_json() {
        let snap = Snapshot::build(&ranked(&[("a", 113, 250), ("b", 100, 7)]), 5, 1234);
        let body = snap.render(&mut Dealer::seeded(1)).unwrap();
        assert!(body.len() <= snap.body_capacity);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "gateways": [
                    {"id": "a", "addr": "a.example:8900",
                     "transports": {"tcp": "a.example:8900", "ws": "a.example:8920"},
                     "score": {"dynamic": 1.13, "static": 2.5}},
                    {"id": "b", "addr": "b.example:8900",
                     "transports": {"tcp": "b.example:8900", "ws": "b.example:8920"},
                     "score": {"dynamic": 1.0, "static": 0.07}},
                ],
                "generated_at_ms": 1234
            })
        );
        assert_eq!(snap.generated_at_ms(), 1234);
        assert_eq!(snap.listed(), 2);
    }

    #[test]
    fn nothing_listed_renders_none_and_a_503_body() {
        let snap = Snapshot::empty(99);
        assert_eq!(snap.listed(), 0);
        assert!(snap.render(&mut Dealer::seeded(1)).is_none());
        let v: Value = serde_json::from_slice(snap.unavailable_body()).unwrap();
        assert!(v["error"].as_str().unwrap().contains("no gateway"));
        assert_eq!(v["generated_at_ms"], 99);
    }

    /// Table: scores (in rank order), top_n → kept group sizes and entries listed.
    #[test]
    fn groups_cover_top_n_and_the_last_is_whole() {
        /// (scores, top_n, group sizes kept, entries listed)
        type Case<'a> = (&'a [(i64, i64)], usize, &'a [usize], usize);
        let cases: &[Case] = &[
            (&[(5, 5), (4, 4), (3, 3)], 5, &[1, 1, 1], 3),
            (&[(5, 5), (5, 5), (5, 5)], 5, &[3], 3),
            (&[(5, 5), (5, 5), (5, 5), (1, 1)], 2, &[3], 2),
            (&[(9, 0), (5, 5), (5, 5), (5, 5), (1, 1)], 2, &[1, 3], 2),
            (&[(9, 0), (5, 5), (5, 5), (5, 5), (1, 1)], 4, &[1, 3], 4),
            (&[(9, 0), (5, 5), (5, 5), (5, 5), (1, 1)], 5, &[1, 3, 1], 5),
            // Same dynamic, different static: not a tie.
            (&[(5, 6), (5, 5)], 1, &[1], 1),
            (&[(1, 1); 7], 5, &[7], 5),
        ];
        for (i, (scores, top_n, groups, listed)) in cases.iter().enumerate() {
            let names: Vec<String> = (0..scores.len()).map(|n| format!("g{n}")).collect();
            let entries: Vec<(&str, i64, i64)> = scores
                .iter()
                .zip(&names)
                .map(|(&(d, s), n)| (n.as_str(), d, s))
                .collect();
            let snap = Snapshot::build(&ranked(&entries), *top_n, 0);
            assert_eq!(snap.group_sizes(), *groups, "case {i}");
            assert_eq!(snap.listed(), *listed, "case {i}");
            let body = snap.render(&mut Dealer::seeded(i as u64)).unwrap();
            assert_eq!(ids(&body).len(), *listed, "case {i}");
        }
    }

    #[test]
    fn ties_move_but_never_cross_a_better_score() {
        let snap = Snapshot::build(
            &ranked(&[
                ("top", 9, 9),
                ("t1", 5, 5),
                ("t2", 5, 5),
                ("t3", 5, 5),
                ("low", 1, 1),
            ]),
            5,
            0,
        );
        let mut dealer = Dealer::seeded(3);
        let mut seen_first_tie = std::collections::HashSet::new();
        for _ in 0..100 {
            let order = ids(&snap.render(&mut dealer).unwrap());
            assert_eq!(order[0], "top");
            assert_eq!(order[4], "low");
            let mut middle = order[1..4].to_vec();
            seen_first_tie.insert(middle[0].clone());
            middle.sort();
            assert_eq!(middle, ["t1", "t2", "t3"]);
        }
        assert_eq!(seen_first_tie.len(), 3);
    }

    /// 10,000 answers over three equal gateways: each is first a third of the time, within
    /// ±5% (in fact within one, per dealer), and second and third places are spread too.
    #[test]
    fn three_equal_gateways_share_first_place() {
        let snap = Snapshot::build(&ranked(&[("a", 5, 5), ("b", 5, 5), ("c", 5, 5)]), 5, 0);
        let mut dealer = Dealer::seeded(42);
        let mut first = std::collections::HashMap::<String, u32>::new();
        let mut second = std::collections::HashMap::<String, u32>::new();
        for _ in 0..10_000 {
            let order = ids(&snap.render(&mut dealer).unwrap());
            *first.entry(order[0].clone()).or_default() += 1;
            *second.entry(order[1].clone()).or_default() += 1;
        }
        for id in ["a", "b", "c"] {
            let f = first[id];
            assert!((3333..=3334).contains(&f), "{first:?}");
            assert!((3_166..=3_500).contains(&second[id]), "{second:?}");
        }
    }

    /// A straddling group: 10 tied gateways, 5 places. Every gateway is listed about half
    /// the time, and every deal has five distinct entries.
    #[test]
    fn a_group_larger_than_top_n_is_sampled_fairly() {
        let names: Vec<String> = (0..10).map(|n| format!("g{n}")).collect();
        let entries: Vec<(&str, i64, i64)> = names.iter().map(|n| (n.as_str(), 1, 1)).collect();
        let snap = Snapshot::build(&ranked(&entries), 5, 0);
        let mut dealer = Dealer::seeded(5);
        let mut listed = std::collections::HashMap::<String, u32>::new();
        for _ in 0..10_000 {
            let order = ids(&snap.render(&mut dealer).unwrap());
            let mut unique = order.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 5, "{order:?}");
            for id in order {
                *listed.entry(id).or_default() += 1;
            }
        }
        assert_eq!(listed.len(), 10);
        for (id, n) in &listed {
            assert!((4_700..=5_300).contains(n), "{id}: {n}");
        }
    }

    proptest::proptest! {
        /// Any deal is k distinct positions below m, and the first is turn mod m.
        #[test]
        fn deals_are_partial_permutations(m in 1usize..300, k in 0usize..40, seed in proptest::num::u64::ANY) {
            let mut dealer = Dealer::seeded(seed);
            let turn = dealer.turn;
            let order = dealer.deal(m, k).to_vec();
            proptest::prop_assert_eq!(order.len(), k.min(m));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            proptest::prop_assert_eq!(sorted.len(), order.len());
            proptest::prop_assert!(order.iter().all(|&x| (x as usize) < m));
            if let Some(&f) = order.first() {
                proptest::prop_assert_eq!(u64::from(f), turn % m as u64);
            }
        }
    }

    #[test]
    fn the_cell_serves_the_latest_snapshot_per_thread() {
        let cell = SnapshotCell::new(Snapshot::empty(1));
        assert_eq!(cell.with(|s| s.generated_at_ms()), 1);
        cell.publish(Snapshot::empty(2));
        assert_eq!(cell.with(|s| s.generated_at_ms()), 2);
        let other = SnapshotCell::new(Snapshot::empty(3));
        assert_eq!(other.with(|s| s.generated_at_ms()), 3);
        assert_eq!(cell.with(|s| s.generated_at_ms()), 2);
        std::thread::scope(|scope| {
            scope.spawn(|| assert_eq!(cell.with(|s| s.generated_at_ms()), 2));
        });
        assert_eq!(cell.load().generated_at_ms(), 2);
    }
}
