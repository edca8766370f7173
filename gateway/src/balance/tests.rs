//! Tests shared by every balancer: the `Balance` names, `client_key` stability, and the
//! helpers the per-algorithm tests use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

/// `n` up, idle nodes at 127.0.0.1:8890, :8891, … in that order.
pub(crate) fn nodes(n: u16) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8890 + i),
            up: true,
            outstanding: 0,
        })
        .collect()
}

/// Asserts that the non-zero `counts` (which sum to `total`) are each within `tolerance`
/// (a fraction, e.g. 0.10) of an equal share.
pub(crate) fn assert_even(counts: &[u32], total: u32, tolerance: f64) {
    let share = f64::from(total) / counts.len() as f64;
    for (i, &c) in counts.iter().enumerate() {
        let off = (f64::from(c) - share).abs() / share;
        assert!(
            off <= tolerance,
            "node {i} got {c}, expected {share} ± {:.0}% (counts {counts:?})",
            tolerance * 100.0
        );
    }
}

#[test]
fn balance_names_round_trip() {
    for (kind, name) in [
        (Balance::RoundRobin, "round-robin"),
        (Balance::Random, "random"),
        (Balance::LeastOutstanding, "least-outstanding"),
        (Balance::IpHash, "ip-hash"),
    ] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<Balance>(), Ok(kind));
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Balance>(&json).unwrap(), kind);
    }
    assert_eq!(Balance::default(), Balance::RoundRobin);
}

#[test]
fn unknown_balance_lists_the_valid_names() {
    let err = "least-connections".parse::<Balance>().unwrap_err();
    assert!(err.contains("least-connections"), "{err}");
    for name in ["round-robin", "random", "least-outstanding", "ip-hash"] {
        assert!(err.contains(name), "{err}");
    }
    assert!("RoundRobin".parse::<Balance>().is_err());
    assert!("".parse::<Balance>().is_err());
}

#[test]
fn every_kind_picks_only_up_nodes() {
    let mut list = nodes(4);
    list[0].up = false;
    list[2].up = false;
    for kind in Balance::ALL {
        let mut b = new(kind, 17);
        for k in 0..1_000u64 {
            let i = b.pick(&list, mix64(k));
            assert!(matches!(i, Some(1 | 3)), "{kind} picked {i:?}");
        }
        let all_down: Vec<_> = list
            .iter()
            .cloned()
            .map(|mut n| {
                n.up = false;
                n
            })
            .collect();
        b.nodes_changed(&all_down);
        assert_eq!(b.pick(&all_down, 5), None, "{kind}");
        b.nodes_changed(&[]);
        assert_eq!(b.pick(&[], 5), None, "{kind}");
    }
}

#[test]
fn client_key_ipv4_equals_ipv4_mapped_ipv6() {
    let v4: IpAddr = "10.0.0.1".parse().unwrap();
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(client_key(v4), client_key(mapped));
    assert_ne!(client_key(v4), client_key("10.0.0.2".parse().unwrap()));
}

#[test]
fn client_key_ipv6_works() {
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::2".parse().unwrap();
    let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
    assert_eq!(client_key(a), client_key(a));
    assert_ne!(client_key(a), client_key(b));
    assert_ne!(client_key(a), client_key(c));
    // Not confused with the IPv4 address sharing its low bits, nor with the IPv4-compatible form.
    assert_ne!(
        client_key(IpAddr::V6(Ipv6Addr::from(1u128))),
        client_key(IpAddr::V4(Ipv4Addr::from(1u32)))
    );
}

#[test]
fn client_key_is_pinned() {
    // These values must never change: every gateway in a fleet, and every restart, must send
    // a client to the same node. A failing assertion here means the hash changed.
    assert_eq!(client_key("10.0.0.1".parse().unwrap()), PINNED_10_0_0_1);
    assert_eq!(
        client_key("2001:db8::1".parse().unwrap()),
        PINNED_2001_DB8_1
    );
}

const PINNED_10_0_0_1: u64 = 0xd3e9_12e4_f8f5_0cc3;
const PINNED_2001_DB8_1: u64 = 0xac5d_f5fa_a01b_8dd0;

#[test]
fn client_key_has_no_collisions_on_a_dense_range() {
    let mut keys: Vec<u64> = (0..65_536u32)
        .map(|i| client_key(IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 | i))))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 65_536);
}

proptest! {
    #[test]
    fn prop_client_key_v4_and_mapped_agree(ip in any::<u32>()) {
        let v4 = Ipv4Addr::from(ip);
        prop_assert_eq!(client_key(IpAddr::V4(v4)), client_key(IpAddr::V6(v4.to_ipv6_mapped())));
    }

    #[test]
    fn prop_any_balancer_any_input_never_panics_and_picks_up_nodes(
        kind in prop::sample::select(Balance::ALL.to_vec()),
        seed in any::<u64>(),
        spec in proptest::collection::vec((any::<u128>(), any::<u16>(), any::<bool>(), any::<u32>()), 0..16),
        keys in proptest::collection::vec(any::<u64>(), 1..32),
    ) {
        let list: Vec<Candidate> = spec
            .into_iter()
            .map(|(ip, port, up, outstanding)| Candidate {
                addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port),
                up,
                outstanding,
            })
            .collect();
        let any_up = list.iter().any(|n| n.up);
        let mut b = new(kind, seed);
        b.nodes_changed(&list);
        for k in keys {
            match b.pick(&list, k) {
                Some(i) => prop_assert!(list.get(i).is_some_and(|n| n.up)),
                None => prop_assert!(!any_up),
            }
        }
    }
}
