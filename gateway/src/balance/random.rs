//! Random: a uniformly random up node for every request.
//!
//! Needs no shared state and no coordination between reactors; with many requests the spread
//! is even. Randomness comes from a splitmix64 generator seeded by the reactor, so a run can be
//! replayed exactly.

use super::rng::Rng;
use super::{nth_up, up_count, Balancer, Candidate};

/// Picks uniformly among the up nodes.
#[derive(Debug, Clone)]
pub(crate) struct Random {
    rng: Rng,
}

impl Random {
    /// A random balancer whose choices are fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Random {
        Random {
            rng: Rng::new(seed),
        }
    }
}

impl Balancer for Random {
    fn pick(&mut self, nodes: &[Candidate], _client_key: u64) -> Option<usize> {
        let up = up_count(nodes);
        if up == 0 {
            return None;
        }
        nth_up(nodes, self.rng.below(up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{assert_even, nodes};

    #[test]
    fn spreads_evenly_over_four_nodes() {
        let list = nodes(4);
        let mut b = Random::new(42);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            if let Some(i) = b.pick(&list, 0) {
                counts[i] += 1;
            }
        }
        assert_even(&counts, 10_000, 0.10);
    }

    #[test]
    fn never_picks_a_down_node() {
        let mut list = nodes(4);
        list[0].up = false;
        list[3].up = false;
        let mut b = Random::new(1);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            if let Some(i) = b.pick(&list, 0) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts[0] + counts[3], 0);
        assert_even(&counts[1..3], 10_000, 0.10);
    }

    #[test]
    fn none_when_all_down_or_empty() {
        let mut list = nodes(4);
        for n in &mut list {
            n.up = false;
        }
        let mut b = Random::new(3);
        assert_eq!(b.pick(&list, 0), None);
        assert_eq!(b.pick(&[], 0), None);
    }

    #[test]
    fn same_seed_same_choices() {
        let list = nodes(5);
        let mut a = Random::new(9);
        let mut b = Random::new(9);
        for _ in 0..100 {
            assert_eq!(a.pick(&list, 0), b.pick(&list, 0));
        }
    }
}
