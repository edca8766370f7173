//! IP hash: the same client IP goes to the same node, on every reactor and across restarts,
//! by rendezvous (highest-random-weight) hashing of [`client_key`](super::client_key).
//!
//! For each up node the balancer computes `weight = hash(node identity, client key)` and picks
//! the node with the highest weight. A node's identity is its address (IP bytes + port, with
//! IPv4 and IPv4-mapped IPv6 spelled the same), never its index, so reordering the config
//! changes nothing, and the hash is hand-written and pinned by tests, so it is the same in
//! every process and with every Rust version.
//!
//! Why rendezvous hashing rather than the alternatives:
//!
//! - A client's weights for the other nodes do not depend on whether some node is present, so
//!   when a node is marked down or removed, exactly the clients whose highest weight was on
//!   that node move (each to its second-highest node), and no other client moves. When the
//!   node comes back, exactly those clients return.
//! - Maglev hashing builds a lookup table from per-node permutations; rebuilding it without a
//!   node also reshuffles a few percent of the slots that belonged to other nodes, so some
//!   healthy clients would move. Its O(1) lookup is not worth that for tens of nodes.
//! - Jump consistent hash maps keys to bucket numbers `0..n`: it only supports adding or
//!   removing the last bucket, not an arbitrary node going down, and it keys on positions
//!   rather than on node identities.
//! - A hash ring with virtual nodes also moves only the lost node's keys, but needs hundreds of
//!   points per node for an even spread and a sorted structure to keep in sync with health.
//!
//! The cost is O(nodes) per pick (one multiply-xorshift mix per node), which is nothing for the
//! tens of echo nodes a gateway talks to. Node hashes are cached and checked against the
//! addresses on every pick, so a forgotten [`Balancer::nodes_changed`] costs time, not
//! correctness.

use std::net::SocketAddr;

use super::{hash_words, ip_words, mix64, Balancer, Candidate};

/// Domain separation for node identities (client keys use another seed).
const NODE_SEED: u64 = 0x7465_7468_6572_4e31; // "tetherN1"

/// Rendezvous hashing of the client key over the up nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpHash {
    /// `(address, node_hash(address))` for the node list last seen, in its order.
    cache: Vec<(SocketAddr, u64)>,
}

impl IpHash {
    /// An ip-hash balancer. It takes no seed: the mapping must not depend on the reactor.
    pub(crate) fn new() -> IpHash {
        IpHash::default()
    }

    /// Makes `cache` describe `nodes`, recomputing only if an address differs.
    fn sync(&mut self, nodes: &[Candidate]) {
        let fresh = self.cache.len() == nodes.len()
            && self.cache.iter().zip(nodes).all(|((a, _), n)| *a == n.addr);
        if !fresh {
            self.cache.clear();
            self.cache
                .extend(nodes.iter().map(|n| (n.addr, node_hash(n.addr))));
        }
    }
}

/// A node's stable identity hash: its IP (16-byte form, IPv4 as IPv4-mapped) and port.
/// IPv6 flow info and scope id are not part of the identity.
pub(crate) fn node_hash(addr: SocketAddr) -> u64 {
    let [hi, lo] = ip_words(addr.ip());
    hash_words(NODE_SEED, &[hi, lo, u64::from(addr.port())])
}

/// The rendezvous weight of a node (by its identity hash) for a client key.
pub(crate) fn weight(node: u64, client_key: u64) -> u64 {
    mix64(mix64(node ^ client_key).wrapping_add(node))
}

impl Balancer for IpHash {
    fn pick(&mut self, nodes: &[Candidate], client_key: u64) -> Option<usize> {
        self.sync(nodes);
        let mut best: Option<(u64, u64, usize)> = None;
        for (i, (node, (_, hash))) in nodes.iter().zip(&self.cache).enumerate() {
            if !node.up {
                continue;
            }
            let w = weight(*hash, client_key);
            // Ties (vanishingly rare) go to the higher identity hash, so the winner never
            // depends on the order of the list.
            if best.is_none_or(|(bw, bh, _)| (w, *hash) > (bw, bh)) {
                best = Some((w, *hash, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    fn nodes_changed(&mut self, nodes: &[Candidate]) {
        self.sync(nodes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{assert_even, nodes};
    use crate::balance::{client_key, Balance};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// Key `i` of a test population: the client key of 10.x.y.z.
    fn key(i: u32) -> u64 {
        client_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)))
    }

    /// The address each of `keys` keys is sent to (None when no node is up).
    fn mapping(b: &mut IpHash, list: &[Candidate], keys: u32) -> Vec<Option<SocketAddr>> {
        (0..keys)
            .map(|k| b.pick(list, key(k)).map(|i| list[i].addr))
            .collect()
    }

    #[test]
    fn same_key_same_node_across_instances_and_seeds() {
        let list = nodes(5);
        let mut reference = IpHash::new();
        let want = mapping(&mut reference, &list, 1_000);
        for seed in [0, 1, 42, u64::MAX] {
            let mut b = crate::balance::new(Balance::IpHash, seed);
            let got: Vec<_> = (0..1_000)
                .map(|k| b.pick(&list, key(k)).map(|i| list[i].addr))
                .collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn spreads_evenly_over_four_nodes() {
        let list = nodes(4);
        let mut b = IpHash::new();
        let mut counts = [0u32; 4];
        for k in 0..10_000 {
            if let Some(i) = b.pick(&list, key(k)) {
                counts[i] += 1;
            }
        }
        assert_even(&counts, 10_000, 0.15);
    }

    #[test]
    fn spreads_evenly_for_ipv6_clients() {
        let list = nodes(4);
        let mut b = IpHash::new();
        let mut counts = [0u32; 4];
        for k in 0..10_000u128 {
            let ip = IpAddr::V6((0x2001_0db8_u128 << 96 | k << 16).into());
            if let Some(i) = b.pick(&list, client_key(ip)) {
                counts[i] += 1;
            }
        }
        assert_even(&counts, 10_000, 0.15);
    }

    #[test]
    fn marking_a_node_down_moves_only_its_keys_and_back() {
        let mut list = nodes(4);
        let mut b = IpHash::new();
        let before = mapping(&mut b, &list, 10_000);
        let lost = list[2].addr;
        list[2].up = false;
        let during = mapping(&mut b, &list, 10_000);
        let mut moved = 0;
        for (was, now) in before.iter().zip(&during) {
            if *was == Some(lost) {
                assert_ne!(*now, Some(lost));
                assert!(now.is_some());
                moved += 1;
            } else {
                assert_eq!(was, now, "a key not on node 2 moved");
            }
        }
        assert!(moved > 2_000, "node 2 held only {moved} keys");
        list[2].up = true;
        assert_eq!(mapping(&mut b, &list, 10_000), before);
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let list = nodes(4);
        let mut b = IpHash::new();
        b.nodes_changed(&list);
        let before = mapping(&mut b, &list, 10_000);
        let lost = list[1].addr;
        let shorter: Vec<_> = list.iter().filter(|n| n.addr != lost).cloned().collect();
        b.nodes_changed(&shorter);
        let after = mapping(&mut b, &shorter, 10_000);
        for (was, now) in before.iter().zip(&after) {
            if *was != Some(lost) {
                assert_eq!(was, now, "a key not on the removed node moved");
            }
        }
        // Adding it back (at the end this time) restores the original mapping.
        let mut restored = shorter.clone();
        restored.push(list[1].clone());
        b.nodes_changed(&restored);
        assert_eq!(mapping(&mut b, &restored, 10_000), before);
    }

    #[test]
    fn reordering_moves_no_key() {
        let list = nodes(6);
        let mut b = IpHash::new();
        let before = mapping(&mut b, &list, 5_000);
        let mut reordered = list.clone();
        reordered.reverse();
        reordered.swap(0, 3);
        b.nodes_changed(&reordered);
        assert_eq!(mapping(&mut b, &reordered, 5_000), before);
        // Without the nodes_changed call too.
        let mut fresh = IpHash::new();
        fresh.pick(&list, 0);
        assert_eq!(mapping(&mut fresh, &reordered, 5_000), before);
    }

    #[test]
    fn none_when_all_down_or_empty() {
        let mut list = nodes(3);
        for n in &mut list {
            n.up = false;
        }
        let mut b = IpHash::new();
        assert_eq!(b.pick(&list, key(1)), None);
        assert_eq!(b.pick(&[], key(1)), None);
    }

    #[test]
    fn ipv4_mapped_node_addresses_are_the_same_node() {
        let v4: SocketAddr = "127.0.0.1:8890".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:8890".parse().unwrap();
        assert_eq!(node_hash(v4), node_hash(mapped));
        let other_port: SocketAddr = "127.0.0.1:8891".parse().unwrap();
        assert_ne!(node_hash(v4), node_hash(other_port));
    }

    #[test]
    fn pinned_weights() {
        // Changing the node hash or the weight would move every client: pin both.
        let addr: SocketAddr = "127.0.0.1:8890".parse().unwrap();
        let h = node_hash(addr);
        assert_eq!(h, PINNED_NODE_HASH);
        assert_eq!(weight(h, 0), PINNED_WEIGHT_0);
    }

    const PINNED_NODE_HASH: u64 = 0x05db_7ecd_4f7e_27b5;
    const PINNED_WEIGHT_0: u64 = 0x94d4_5031_1ddb_c298;

    /// Arbitrary node lists: distinct addresses with random health.
    fn arb_nodes() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::btree_set((any::<u32>(), any::<u16>()), 1..12).prop_flat_map(
            |addrs| {
                let len = addrs.len();
                (Just(addrs), proptest::collection::vec(any::<bool>(), len)).prop_map(
                    |(addrs, ups)| {
                        addrs
                            .into_iter()
                            .zip(ups)
                            .map(|((ip, port), up)| Candidate {
                                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
                                up,
                                outstanding: 0,
                            })
                            .collect()
                    },
                )
            },
        )
    }

    proptest! {
        #[test]
        fn prop_losing_a_node_moves_only_its_keys(
            list in arb_nodes(),
            victim in any::<prop::sample::Index>(),
            keys in proptest::collection::vec(any::<u64>(), 1..64),
        ) {
            let mut b = IpHash::new();
            let v = victim.index(list.len());
            let mut down = list.clone();
            down[v].up = false;
            let removed: Vec<_> = list.iter().enumerate().filter(|(i, _)| *i != v).map(|(_, n)| n.clone()).collect();
            for k in keys {
                let before = b.pick(&list, k).map(|i| list[i].addr);
                if let Some(i) = before.and_then(|a| list.iter().position(|n| n.addr == a)) {
                    prop_assert!(list[i].up);
                }
                let when_down = b.pick(&down, k).map(|i| down[i].addr);
                let when_removed = b.pick(&removed, k).map(|i| removed[i].addr);
                prop_assert_eq!(when_down, when_removed);
                if before != Some(list[v].addr) {
                    prop_assert_eq!(before, when_down);
                }
                let mut reversed = list.clone();
                reversed.reverse();
                prop_assert_eq!(b.pick(&reversed, k).map(|i| reversed[i].addr), before);
            }
        }
    }
}
