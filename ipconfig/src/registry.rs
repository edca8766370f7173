//! The gateways that report, by id: their windows, stale eviction, and the ranking the list
//! is built from (sans-IO: every call takes the time, in monotonic milliseconds).
//!
//! A gateway is
//! - **live** when its last report is younger than `stale_after` and says neither draining
//!   nor full: only live gateways are ranked and listed;
//! - **draining** when its last report says so (it keeps its window, and is listed again
//!   if a later report says it no longer drains);
//! - **full** when its last report has `connections ≥ max_connections`: new clients would be
//!   refused, so it is not listed either;
//! - **stale** once `stale_after` has passed since its last report: it is dropped.
//!
//! A report with a new `addr` for a known id starts a fresh window (it is another listener);
//! its `transports` (where clients dial each transport) replace the last ones as they are.
//! Past `max_gateways` ids, a report from an unknown id is refused after stale gateways have
//! been dropped, so one flood of made-up ids cannot push real gateways out.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::report::{Report, Transports};
use crate::score::Score;
use crate::window::{Sample, Window};

/// Why a report could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error(
        "already tracking {max} gateways (max_gateways); reports from new gateways are refused until some go stale"
    )]
    Full { max: usize },
}

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The id was not tracked before.
    pub new: bool,
    /// Stale gateways dropped to make room.
    pub evicted: usize,
}

/// One tracked gateway.
#[derive(Debug, Clone)]
struct Gateway {
    id: Arc<str>,
    addr: Arc<str>,
    transports: Arc<Transports>,
    window: Window,
    last_seen_ms: u64,
    draining: bool,
    full: bool,
}

/// A live gateway with its score, as ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub id: Arc<str>,
    pub addr: Arc<str>,
    pub transports: Arc<Transports>,
    pub score: Score,
}

/// Live gateways best first, and how many gateways are in each state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    /// Live gateways, best first; equal scores ordered by id (the list shuffles them).
    pub ranked: Vec<Ranked>,
    /// Tracked gateways reporting `draining`.
    pub draining: usize,
    /// Tracked, not draining, at or over their connection limit.
    pub full: usize,
    /// Dropped as stale while ranking.
    pub evicted: usize,
    /// When (monotonic ms) the next tracked gateway goes stale, if any is tracked.
    pub next_expiry_ms: Option<u64>,
}

impl Ranking {
    /// Live gateways.
    pub fn live(&self) -> usize {
        self.ranked.len()
    }

    /// Sorts `ranked` best first (ties by id, for a deterministic base order).
    pub fn sort(&mut self) {
        self.ranked
            .sort_unstable_by(|a, b| a.score.rank_cmp(&b.score).then_with(|| a.id.cmp(&b.id)));
    }
}

/// Gateways by id.
#[derive(Debug, Clone)]
pub struct Registry {
    gateways: HashMap<Arc<str>, Gateway>,
    window: usize,
    stale_after_ms: u64,
    max_gateways: usize,
}

impl Registry {
    /// An empty registry: windows of `window` samples, dropped after `stale_after_ms`
    /// without a report, at most `max_gateways` ids.
    pub fn new(window: usize, stale_after_ms: u64, max_gateways: usize) -> Registry {
        Registry {
            gateways: HashMap::new(),
            window: window.max(1),
            stale_after_ms,
            max_gateways,
        }
    }

    /// Gateways tracked (live, draining, full, or stale but not yet dropped).
    pub fn len(&self) -> usize {
        self.gateways.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// Records a report received at `now_ms`.
    pub fn record(&mut self, report: Report, now_ms: u64) -> Result<Recorded, RecordError> {
        let sample = Sample::from_report(&report);
        let full = report.connections >= report.max_connections;
        if let Some(g) = self.gateways.get_mut(report.id.as_str()) {
            if *g.addr != *report.addr {
                g.addr = Arc::from(report.addr.as_str());
                g.window.clear();
            }
            if *g.transports != report.transports {
                g.transports = Arc::new(report.transports);
            }
            g.window.push(sample);
            g.last_seen_ms = g.last_seen_ms.max(now_ms);
            g.draining = report.draining;
            g.full = full;
            return Ok(Recorded {
                new: false,
                evicted: 0,
            });
        }
        let mut evicted = 0;
        if self.gateways.len() >= self.max_gateways {
            evicted = self.evict_stale(now_ms);
            if self.gateways.len() >= self.max_gateways {
                return Err(RecordError::Full {
                    max: self.max_gateways,
                });
            }
        }
        let mut window = Window::new(self.window);
        window.push(sample);
        let id: Arc<str> = Arc::from(report.id.as_str());
        self.gateways.insert(
            id.clone(),
            Gateway {
                id,
                addr: Arc::from(report.addr.as_str()),
                transports: Arc::new(report.transports),
                window,
                last_seen_ms: now_ms,
                draining: report.draining,
                full,
            },
        );
        Ok(Recorded { new: true, evicted })
    }

    /// Forgets gateway `id` at once (it left: its etcd registration was deleted). Returns
    /// whether it was tracked.
    pub fn remove(&mut self, id: &str) -> bool {
        self.gateways.remove(id).is_some()
    }

    /// Ids of every tracked gateway.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.gateways.keys().map(|id| &**id)
    }

    /// Whether a gateway last seen at `last_seen_ms` is stale at `now_ms`.
    fn is_stale(&self, last_seen_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(last_seen_ms) >= self.stale_after_ms
    }

    /// Drops every gateway with no report for `stale_after`; returns how many.
    pub fn evict_stale(&mut self, now_ms: u64) -> usize {
        let before = self.gateways.len();
        let stale_after_ms = self.stale_after_ms;
        self.gateways
            .retain(|_, g| now_ms.saturating_sub(g.last_seen_ms) < stale_after_ms);
        let evicted = before - self.gateways.len();
        if evicted > 0 {
            tracing::info!(
                evicted,
                "dropped gateways with no report for {stale_after_ms} ms"
            );
        }
        evicted
    }

    /// Drops stale gateways and collects the live ones with their scores, unsorted (call
    /// [`Ranking::sort`], outside any lock, to rank them).
    pub fn collect(&mut self, now_ms: u64) -> Ranking {
        let evicted = self.evict_stale(now_ms);
        let mut ranking = Ranking {
            ranked: Vec::with_capacity(self.gateways.len()),
            evicted,
            ..Ranking::default()
        };
        for g in self.gateways.values() {
            let expiry = g.last_seen_ms.saturating_add(self.stale_after_ms);
            ranking.next_expiry_ms = Some(ranking.next_expiry_ms.map_or(expiry, |e| e.min(expiry)));
            debug_assert!(!self.is_stale(g.last_seen_ms, now_ms));
            if g.draining {
                ranking.draining += 1;
            } else if g.full {
                ranking.full += 1;
            } else if let Some(score) = Score::of(&g.window) {
                ranking.ranked.push(Ranked {
                    id: g.id.clone(),
                    addr: g.addr.clone(),
                    transports: g.transports.clone(),
                    score,
                });
            }
        }
        ranking
    }

    /// [`Registry::collect`] then [`Ranking::sort`].
    pub fn rank(&mut self, now_ms: u64) -> Ranking {
        let mut ranking = self.collect(now_ms);
        ranking.sort();
        ranking
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::GIB;

    /// A report with `spare_gib` GiB/s and `spare_conns` connections to spare.
    fn report(id: &str, spare_gib: f64, spare_conns: u64) -> Report {
        Report {
            id: id.into(),
            addr: format!("{id}.example:8900"),
            connections: 1000 - spare_conns,
            max_connections: 1000,
            bytes_in_per_s: 0.0,
            bytes_out_per_s: 0.0,
            bandwidth_bytes_per_s: spare_gib * GIB,
            cpu: 0.0,
            draining: false,
            transports: Transports::default(),
        }
    }

    fn ids(r: &Ranking) -> Vec<&str> {
        r.ranked.iter().map(|g| &*g.id).collect()
    }

    #[test]
    fn ranks_by_dynamic_then_static_with_ties_by_id() {
        let mut reg = Registry::new(5, 3000, 100);
        for (id, gib, conns) in [
            ("c", 1.0, 10),
            ("a", 2.0, 1),
            ("b", 1.0, 20),
            ("e", 1.0, 10),
            ("d", 1.0, 10),
        ] {
            reg.record(report(id, gib, conns), 0).unwrap();
        }
        let r = reg.rank(1);
        assert_eq!(ids(&r), ["a", "b", "c", "d", "e"]);
        assert_eq!(r.live(), 5);
        assert_eq!(r.next_expiry_ms, Some(3000));
    }

    #[test]
    fn scores_average_only_the_samples_present() {
        let mut reg = Registry::new(5, 3000, 100);
        // "old" has five samples of 1 GiB/s; "new" one sample of 2 GiB/s. Dividing by 5
        // always (plato) would rank new at 0.4 below old; the real mean is 2.
        for t in 0..5 {
            reg.record(report("old", 1.0, 1), t).unwrap();
        }
        reg.record(report("new", 2.0, 1), 4).unwrap();
        let r = reg.rank(5);
        assert_eq!(ids(&r), ["new", "old"]);
        assert_eq!(r.ranked[0].score.dynamic(), 2.0);
        assert_eq!(r.ranked[1].score.dynamic(), 1.0);
    }

    /// Table: (report times of "a", now, listed?) with stale_after = 3000 ms.
    #[test]
    fn stale_gateways_are_dropped() {
        let cases: &[(&[u64], u64, bool)] = &[
            (&[0], 0, true),
            (&[0], 2999, true),
            (&[0], 3000, false),
            (&[0, 1000, 2000], 4999, true),
            (&[0, 1000, 2000], 5000, false),
        ];
        for (times, now, listed) in cases {
            let mut reg = Registry::new(5, 3000, 100);
            for &t in *times {
                reg.record(report("a", 1.0, 1), t).unwrap();
            }
            let r = reg.rank(*now);
            assert_eq!(r.live() == 1, *listed, "{times:?} at {now}");
            assert_eq!(r.evicted, usize::from(!listed));
            assert_eq!(reg.len(), usize::from(*listed));
        }
    }

    #[test]
    fn draining_and_full_gateways_are_tracked_not_listed() {
        let mut reg = Registry::new(5, 3000, 100);
        reg.record(report("a", 1.0, 1), 0).unwrap();
        reg.record(
            Report {
                draining: true,
                ..report("b", 9.0, 9)
            },
            0,
        )
        .unwrap();
        reg.record(
            Report {
                connections: 1200,
                ..report("c", 9.0, 9)
            },
            0,
        )
        .unwrap();
        let r = reg.rank(1);
        assert_eq!(ids(&r), ["a"]);
        assert_eq!((r.draining, r.full, reg.len()), (1, 1, 3));
        // b stops draining: listed again, with its window intact.
        reg.record(report("b", 9.0, 9), 2).unwrap();
        assert_eq!(ids(&reg.rank(3)), ["b", "a"]);
    }

    #[test]
    fn a_new_addr_starts_a_new_window() {
        let mut reg = Registry::new(5, 3000, 100);
        reg.record(report("a", 1.0, 1), 0).unwrap();
        reg.record(
            Report {
                addr: "elsewhere:1".into(),
                ..report("a", 3.0, 1)
            },
            1,
        )
        .unwrap();
        let r = reg.rank(2);
        assert_eq!(&*r.ranked[0].addr, "elsewhere:1");
        assert_eq!(r.ranked[0].score.dynamic(), 3.0);
    }

    #[test]
    fn the_latest_transports_are_ranked_with_the_window_kept() {
        let mut reg = Registry::new(5, 3000, 100);
        let ws = |addr: &str| Transports {
            ws: Some(addr.into()),
            ..Transports::default()
        };
        reg.record(
            Report {
                transports: ws("a.example:8920"),
                ..report("a", 1.0, 1)
            },
            0,
        )
        .unwrap();
        reg.record(
            Report {
                transports: ws("a.example:9920"),
                ..report("a", 3.0, 1)
            },
            1,
        )
        .unwrap();
        let r = reg.rank(2);
        assert_eq!(r.ranked[0].transports.ws.as_deref(), Some("a.example:9920"));
        assert_eq!(
            r.ranked[0].score.dynamic(),
            2.0,
            "same addr: the window goes on"
        );
    }

    #[test]
    fn max_gateways_refuses_new_ids_until_some_go_stale() {
        let mut reg = Registry::new(5, 3000, 2);
        assert!(reg.record(report("a", 1.0, 1), 0).unwrap().new);
        assert!(reg.record(report("b", 1.0, 1), 1000).unwrap().new);
        assert_eq!(
            reg.record(report("c", 1.0, 1), 2000),
            Err(RecordError::Full { max: 2 })
        );
        // Known ids still report.
        assert!(!reg.record(report("a", 1.0, 1), 2000).unwrap().new);
        // At 4000 b (last seen 1000) is stale: c takes its place.
        assert_eq!(
            reg.record(report("c", 1.0, 1), 4000),
            Ok(Recorded {
                new: true,
                evicted: 1
            })
        );
        assert_eq!(ids(&reg.rank(4000)), ["a", "c"]);
    }
}
