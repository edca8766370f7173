//! Least outstanding, by the power of two choices: pick two distinct up nodes at random and
//! send to the one with fewer requests in flight.
//!
//! Comparing two random nodes avoids the herd effect of always choosing the global minimum
//! (every reactor piling onto the same idle node until its count catches up) while still
//! steering load away from slow or overloaded nodes; the expected maximum load drops from
//! `log n / log log n` to `log log n` (Mitzenmacher, "The Power of Two Choices"). The counts
//! are the reactor's own (`Candidate::outstanding`), so nothing is shared between reactors.

use super::rng::Rng;
use super::{up_count, Balancer, Candidate};

/// Power of two choices on `Candidate::outstanding`.
#[derive(Debug, Clone)]
pub(crate) struct LeastOutstanding {
    rng: Rng,
}

impl LeastOutstanding {
    /// A least-outstanding balancer whose random draws are fixed by `seed`.
    pub(crate) fn new(seed: u64) -> LeastOutstanding {
        LeastOutstanding {
            rng: Rng::new(seed),
        }
    }
}

impl Balancer for LeastOutstanding {
    fn pick(&mut self, nodes: &[Candidate], _client_key: u64) -> Option<usize> {
        let up = up_count(nodes);
        if up == 0 {
            return None;
        }
        // Two distinct positions among the up nodes (the second drawn from the rest).
        let a = self.rng.below(up);
        let b = if up == 1 {
            a
        } else {
            let b = self.rng.below(up - 1);
            if b >= a {
                b + 1
            } else {
                b
            }
        };
        let mut first = None;
        let mut second = None;
        for (pos, (i, node)) in nodes.iter().enumerate().filter(|(_, n)| n.up).enumerate() {
            if pos == a {
                first = Some((i, node.outstanding));
            }
            if pos == b {
                second = Some((i, node.outstanding));
            }
        }
        match (first, second) {
            // On a tie `a` wins; `a` is uniform over the up nodes, so ties stay fair.
            (Some((i, load_a)), Some((j, load_b))) => Some(if load_b < load_a { j } else { i }),
            (Some((i, _)), None) | (None, Some((i, _))) => Some(i),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{assert_even, nodes};

    fn counts(b: &mut LeastOutstanding, list: &[Candidate], picks: u32) -> Vec<u32> {
        let mut counts = vec![0u32; list.len()];
        for _ in 0..picks {
            if let Some(i) = b.pick(list, 0) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn spreads_evenly_when_loads_are_equal() {
        let list = nodes(4);
        let c = counts(&mut LeastOutstanding::new(5), &list, 10_000);
        assert_even(&c, 10_000, 0.10);
    }

    #[test]
    fn prefers_the_idle_node() {
        let mut list = nodes(2);
        list[0].outstanding = 100;
        list[1].outstanding = 0;
        let c = counts(&mut LeastOutstanding::new(11), &list, 1_000);
        assert!(c[1] >= 700, "idle node got {} of 1000", c[1]);
        // With two up nodes both are always compared, so the idle one always wins.
        assert_eq!(c[1], 1_000);
    }

    #[test]
    fn prefers_the_idle_node_among_four() {
        let mut list = nodes(4);
        for n in &mut list {
            n.outstanding = 100;
        }
        list[2].outstanding = 0;
        let c = counts(&mut LeastOutstanding::new(12), &list, 10_000);
        // The idle node wins whenever it is one of the two drawn: 1/2 of picks, versus 1/6
        // for each loaded node.
        assert!(c[2] >= 4_500, "idle node got {} of 10000", c[2]);
    }

    #[test]
    fn never_picks_a_down_node() {
        let mut list = nodes(4);
        list[1].up = false;
        list[1].outstanding = 0;
        for (i, n) in list.iter_mut().enumerate() {
            if i != 1 {
                n.outstanding = 50;
            }
        }
        let c = counts(&mut LeastOutstanding::new(13), &list, 10_000);
        assert_eq!(c[1], 0);
        assert_even(&[c[0], c[2], c[3]], 10_000, 0.10);
    }

    #[test]
    fn single_up_node_is_always_chosen() {
        let mut list = nodes(3);
        list[0].up = false;
        list[2].up = false;
        list[1].outstanding = u32::MAX;
        let mut b = LeastOutstanding::new(0);
        for _ in 0..100 {
            assert_eq!(b.pick(&list, 0), Some(1));
        }
    }

    #[test]
    fn none_when_all_down_or_empty() {
        let mut list = nodes(4);
        for n in &mut list {
            n.up = false;
        }
        let mut b = LeastOutstanding::new(0);
        assert_eq!(b.pick(&list, 0), None);
        assert_eq!(b.pick(&[], 0), None);
    }
}
