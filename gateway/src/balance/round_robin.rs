//! Round robin: each up node in turn, in config order, skipping the ones that are down.
//!
//! The order is the order of the node list the reactor passes in (config order), never a hash
//! map's order, so every reactor cycles the same way. While the set of up nodes does not change,
//! every up node gets exactly one request per cycle. The `seed` only sets where the first cycle
//! starts, so reactors that start together do not all send their first request to node 0.

use super::{Balancer, Candidate};

/// Cycles over the up nodes.
#[derive(Debug, Clone)]
pub(crate) struct RoundRobin {
    /// Where the search for the next up node starts (taken modulo the list length).
    next: usize,
}

impl RoundRobin {
    /// A round robin whose first pick starts at position `seed` (modulo the node count).
    pub(crate) fn new(seed: u64) -> RoundRobin {
        // Truncation on 32-bit targets is fine: only the value modulo the node count matters.
        RoundRobin {
            next: seed as usize,
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&mut self, nodes: &[Candidate], _client_key: u64) -> Option<usize> {
        let len = nodes.len();
        if len == 0 {
            return None;
        }
        let start = self.next % len;
        for step in 0..len {
            let mut i = start + step;
            if i >= len {
                i -= len;
            }
            if nodes.get(i).is_some_and(|n| n.up) {
                self.next = i + 1;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::nodes;

    #[test]
    fn cycles_in_config_order() {
        let list = nodes(3);
        let mut rr = RoundRobin::new(0);
        let picks: Vec<_> = (0..7).map(|_| rr.pick(&list, 0)).collect();
        let want = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(picks, want);
    }

    #[test]
    fn seed_only_moves_the_start() {
        let list = nodes(4);
        let mut rr = RoundRobin::new(6);
        let picks: Vec<_> = (0..5).map(|_| rr.pick(&list, 0)).collect();
        assert_eq!(picks, [2, 3, 0, 1, 2].map(Some));
        let mut rr = RoundRobin::new(u64::MAX);
        for _ in 0..10 {
            assert!(rr.pick(&list, 0).is_some_and(|i| i < 4));
        }
    }

    #[test]
    fn skips_down_nodes_and_stays_even() {
        let mut list = nodes(4);
        list[1].up = false;
        let mut rr = RoundRobin::new(0);
        let mut counts = [0u32; 4];
        for _ in 0..300 {
            if let Some(i) = rr.pick(&list, 0) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [100, 0, 100, 100]);
    }

    #[test]
    fn none_when_all_down_or_empty() {
        let mut list = nodes(3);
        for n in &mut list {
            n.up = false;
        }
        let mut rr = RoundRobin::new(0);
        assert_eq!(rr.pick(&list, 0), None);
        assert_eq!(rr.pick(&[], 0), None);
    }

    #[test]
    fn survives_the_list_shrinking() {
        let mut rr = RoundRobin::new(0);
        let long = nodes(5);
        for _ in 0..4 {
            rr.pick(&long, 0);
        }
        let short = nodes(2);
        rr.nodes_changed(&short);
        for _ in 0..10 {
            assert!(rr.pick(&short, 0).is_some_and(|i| i < 2));
        }
    }
}
