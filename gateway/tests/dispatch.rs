//! The dispatcher without sockets: every fault of the data path that routing decides, as a
//! sequence of events and the actions that must come out.
//!
//! Each test names the fault it pins down. Nodes are plain addresses; clients are route keys
//! with a balancing key; time is an `Instant` the test moves by hand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_gateway::dispatch::{
    Action, Cause, Dispatcher, Policy, Refused, Request, Retry, Sent, Unmatched, FLAG_RESEND_SAFE,
};
use tether_gateway::Balance;
use tether_proto::ErrorCode;

const SAFE: u8 = FLAG_RESEND_SAFE;

fn policy() -> Policy {
    Policy {
        retry: Retry::Flagged,
        request_timeout: Duration::from_secs(10),
        max_client_bytes: 1 << 20,
        max_copied_bytes: 64 << 20,
        max_node_queue: 16 << 20,
    }
}

fn addrs(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 8890 + i)))
        .collect()
}

/// A dispatcher over `n` up nodes.
fn dispatcher(n: u16, balance: Balance, policy: Policy) -> Dispatcher {
    let mut d = Dispatcher::new(policy, balance, 7);
    let mut out = Vec::new();
    d.set_nodes(&addrs(n), &vec![true; n as usize], &[], &all_live, &mut out);
    assert!(out.is_empty());
    d
}

/// Every client is alive; its balancing key is its route.
fn all_live(route: u64) -> Option<u64> {
    Some(route)
}

fn req(route: u64, client_id: u64, flags: u8, payload: &[u8], now: Instant) -> Request<'_> {
    Request {
        route,
        client_id,
        client_key: route,
        flags,
        client_bytes: 0,
        payload,
        now,
    }
}

fn fails(out: &[Action]) -> Vec<(u64, u64, ErrorCode)> {
    out.iter()
        .filter_map(|a| match *a {
            Action::Fail {
                route,
                client_id,
                code,
                ..
            } => Some((route, client_id, code)),
            Action::Resend { .. } => None,
        })
        .collect()
}

fn resends(out: &[Action]) -> Vec<(usize, u64)> {
    out.iter()
        .filter_map(|a| match *a {
            Action::Resend { node, id, .. } => Some((node, id)),
            Action::Fail { .. } => None,
        })
        .collect()
}

#[test]
fn a_black_hole_node_frees_every_request_at_its_deadline() {
    // Fault: a node that answers pings but never requests grew the gateway without bound and
    // its clients never heard anything.
    let t0 = Instant::now();
    let mut d = dispatcher(1, Balance::RoundRobin, policy());
    let payload = vec![7u8; 1000];
    for i in 0..3000u64 {
        let flags = if i % 2 == 0 { SAFE } else { 0 };
        d.forward(&req(i, 100 + i, flags, &payload, t0)).unwrap();
    }
    assert_eq!(d.inflight(), 3000);
    assert_eq!(
        d.copied_bytes(),
        1500 * 1000,
        "only flagged requests are copied"
    );
    assert_eq!(d.nodes()[0].outstanding, 3000);

    let mut out = Vec::new();
    d.expire(t0 + Duration::from_secs(9), &mut out);
    assert!(out.is_empty(), "nothing is due before the deadline");
    d.expire(t0 + Duration::from_secs(11), &mut out);
    let mut answered = fails(&out);
    answered.sort_by_key(|&(route, client_id, _)| (route, client_id));
    assert_eq!(answered.len(), 3000);
    for (i, (route, client_id, code)) in answered.into_iter().enumerate() {
        assert_eq!((route, client_id), (i as u64, 100 + i as u64));
        assert_eq!(code, ErrorCode::RequestTimeout);
        assert!(!code.closes_connection());
    }
    assert_eq!(d.inflight(), 0);
    assert_eq!(d.copied_bytes(), 0);
    assert_eq!(d.nodes()[0].outstanding, 0);

    // And what the burst grew is given back once quiet: the table's room at once, the
    // pooled copies once a whole period went by without them.
    let first = d.trim();
    assert!(
        first >= 3000 * 72,
        "the in-flight table's room is freed: {first} bytes"
    );
    let second = d.trim();
    assert!(
        second >= 1500 * 1000,
        "copies unused for a period are freed: {second} bytes"
    );
    assert_eq!(d.trim(), 0, "nothing is left to free");
}

#[test]
fn a_late_reply_after_the_deadline_matches_nothing() {
    let t0 = Instant::now();
    let mut d = dispatcher(1, Balance::RoundRobin, policy());
    let sent = d.forward(&req(5, 1, 0, b"x", t0)).unwrap();
    let mut out = Vec::new();
    d.expire(t0 + Duration::from_secs(11), &mut out);
    assert_eq!(fails(&out), vec![(5, 1, ErrorCode::RequestTimeout)]);
    assert_eq!(d.complete(sent.node, sent.id, 5), Err(Unmatched));
}

#[test]
fn a_shorter_timeout_on_reload_applies_to_requests_in_flight() {
    let t0 = Instant::now();
    let mut d = dispatcher(1, Balance::RoundRobin, policy());
    d.forward(&req(5, 1, 0, b"x", t0)).unwrap();
    d.set_policy(Policy {
        request_timeout: Duration::from_secs(1),
        ..policy()
    });
    let mut out = Vec::new();
    d.expire(t0 + Duration::from_millis(1500), &mut out);
    assert_eq!(fails(&out), vec![(5, 1, ErrorCode::RequestTimeout)]);
}

#[test]
fn overloaded_is_never_resent_to_the_node_that_refused_it() {
    // Fault: the re-send after NODE_ERROR OVERLOADED could pick the overloaded node itself,
    // and then failed with NO_BACKEND "no other healthy node" (38 of 40 under ip-hash).
    for balance in [
        Balance::RoundRobin,
        Balance::Random,
        Balance::LeastOutstanding,
        Balance::IpHash,
    ] {
        let t0 = Instant::now();
        let mut d = dispatcher(2, balance, policy());
        let mut resent_to_other = 0;
        for client in 0..40u64 {
            let sent = d.forward(&req(client, 1, SAFE, b"p", t0)).unwrap();
            let mut out = Vec::new();
            d.overloaded(sent.node, sent.id, client, &all_live, &mut out)
                .unwrap();
            assert_eq!(
                resends(&out),
                vec![(1 - sent.node, sent.id)],
                "{balance:?}: client {client} re-sent elsewhere"
            );
            assert_eq!(d.payload(sent.id), b"p");
            resent_to_other += 1;
            // The other node answers it.
            let done = d.complete(1 - sent.node, sent.id, client).unwrap();
            assert_eq!((done.route, done.client_id), (client, 1));
        }
        assert_eq!(resent_to_other, 40);
        assert_eq!(d.inflight(), 0);
        assert_eq!(d.copied_bytes(), 0);
    }
}

#[test]
fn overloaded_with_nowhere_else_is_busy_not_no_backend() {
    let t0 = Instant::now();
    let mut d = dispatcher(1, Balance::IpHash, policy());
    let sent = d.forward(&req(9, 4, SAFE, b"p", t0)).unwrap();
    let mut out = Vec::new();
    d.overloaded(sent.node, sent.id, 9, &all_live, &mut out)
        .unwrap();
    assert_eq!(fails(&out), vec![(9, 4, ErrorCode::Busy)]);
    // Not flagged: no copy to re-send, so BUSY too, even with another node up.
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let sent = d.forward(&req(9, 5, 0, b"p", t0)).unwrap();
    let mut out = Vec::new();
    d.overloaded(sent.node, sent.id, 9, &all_live, &mut out)
        .unwrap();
    assert_eq!(fails(&out), vec![(9, 5, ErrorCode::Busy)]);
    assert_eq!(d.inflight(), 0);
}

#[test]
fn a_late_reply_from_the_node_a_request_left_completes_nothing() {
    // Fault: in-flight entries keyed by (route, client id): after health moved a node's
    // requests, its still-open link could deliver a late reply that completed a new request
    // of the same client that had reused the id.
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let first = d.forward(&req(3, 42, SAFE, b"old", t0)).unwrap();
    let mut out = Vec::new();
    d.set_up(first.node, false, &all_live, &mut out);
    let other = 1 - first.node;
    assert_eq!(resends(&out), vec![(other, first.id)]);
    // The re-sent request is answered by the other node: the client has its reply, and
    // reuses id 42 for a new request.
    d.complete(other, first.id, 3).unwrap();
    let second = d.forward(&req(3, 42, SAFE, b"new", t0)).unwrap();
    assert_ne!(second.id, first.id, "the gateway's ids are never reused");
    // The node that went down answers the first request late, on its open link.
    assert_eq!(d.complete(first.node, first.id, 3), Err(Unmatched));
    // Even a reply that names the new request's id, from a node it is not at, is refused.
    let wrong = if second.node == 0 { 1 } else { 0 };
    assert_eq!(d.complete(wrong, second.id, 3), Err(Unmatched));
    // A reply that names another route for the id is refused.
    assert_eq!(d.complete(second.node, second.id, 4), Err(Unmatched));
    let done = d.complete(second.node, second.id, 3).unwrap();
    assert_eq!(done.client_id, 42);
    assert_eq!(d.inflight(), 0);
}

#[test]
fn one_client_id_in_flight_twice_is_answered_twice() {
    // Fault: the duplicate-id check was per node, so one id could be in flight on two nodes,
    // and a re-send overwrote the other entry: a reply lost, the count never back to zero.
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let a = d.forward(&req(8, 1, SAFE, b"a", t0)).unwrap();
    let b = d.forward(&req(8, 1, SAFE, b"b", t0)).unwrap();
    assert_ne!(a.node, b.node, "round robin spreads them");
    let mut out = Vec::new();
    // a's node fails: a moves onto b's node, next to b.
    d.evacuate(a.node, Cause::LinkLost, &all_live, &mut out);
    assert_eq!(resends(&out), vec![(b.node, a.id)]);
    assert_eq!(d.nodes()[b.node].outstanding, 2);
    assert_eq!(d.complete(b.node, b.id, 8).unwrap().client_id, 1);
    assert_eq!(d.payload(a.id), b"a");
    assert_eq!(d.complete(b.node, a.id, 8).unwrap().client_id, 1);
    assert_eq!(d.inflight(), 0);
    assert!(d.nodes().iter().all(|n| n.outstanding == 0));
}

#[test]
fn link_lost_resends_what_is_safe_and_fails_the_rest() {
    // Fault: re-sending on node failure applied to every request; nothing let an application
    // mark a request unsafe to run twice.
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let mut on_zero = Vec::new();
    for i in 0..10u64 {
        let flags = if i < 5 { SAFE } else { 0 };
        let sent = d.forward(&req(i, i, flags, b"q", t0)).unwrap();
        if sent.node == 0 {
            on_zero.push((i, flags, sent));
        }
    }
    let mut out = Vec::new();
    d.evacuate(0, Cause::LinkLost, &all_live, &mut out);
    for (i, flags, sent) in &on_zero {
        if *flags == SAFE {
            assert!(resends(&out).contains(&(1, sent.id)), "{i} re-sent");
        } else {
            assert!(
                fails(&out).contains(&(*i, *i, ErrorCode::Unavailable)),
                "{i} failed"
            );
        }
    }
    assert_eq!(out.len(), on_zero.len());
    assert_eq!(d.nodes()[0].outstanding, 0);
}

#[test]
fn retry_all_copies_and_resends_every_request() {
    let t0 = Instant::now();
    let mut d = dispatcher(
        2,
        Balance::RoundRobin,
        Policy {
            retry: Retry::All,
            ..policy()
        },
    );
    let sent = d.forward(&req(1, 1, 0, b"unflagged", t0)).unwrap();
    assert_eq!(d.copied_bytes(), 9);
    let mut out = Vec::new();
    d.evacuate(sent.node, Cause::LinkLost, &all_live, &mut out);
    assert_eq!(resends(&out), vec![(1 - sent.node, sent.id)]);
    assert_eq!(d.payload(sent.id), b"unflagged");
}

#[test]
fn health_down_leaves_unflagged_requests_waiting_for_their_answer() {
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let sent = d.forward(&req(1, 1, 0, b"x", t0)).unwrap();
    let mut out = Vec::new();
    d.set_up(sent.node, false, &all_live, &mut out);
    assert!(out.is_empty(), "nothing to move: it may not run twice");
    // The node, down by health but connected, still answers it.
    assert_eq!(d.complete(sent.node, sent.id, 1).unwrap().client_id, 1);
    // New requests avoid the down node.
    for i in 0..10 {
        let s = d.forward(&req(i, i, 0, b"x", t0)).unwrap();
        assert_eq!(s.node, 1 - sent.node);
    }
}

#[test]
fn a_request_is_resent_once_then_fails() {
    let t0 = Instant::now();
    let mut d = dispatcher(3, Balance::RoundRobin, policy());
    let sent = d.forward(&req(1, 1, SAFE, b"x", t0)).unwrap();
    let mut out = Vec::new();
    d.evacuate(sent.node, Cause::LinkLost, &all_live, &mut out);
    let [(second, id)] = resends(&out)[..] else {
        panic!("one re-send: {out:?}")
    };
    assert_ne!(second, sent.node);
    out.clear();
    d.evacuate(second, Cause::LinkLost, &all_live, &mut out);
    assert_eq!(fails(&out), vec![(1, 1, ErrorCode::Unavailable)]);
    assert_eq!(d.payload(id), b"");
    assert_eq!(d.copied_bytes(), 0);
}

#[test]
fn requests_of_closed_connections_are_dropped_on_evacuation() {
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let sent = d.forward(&req(1, 1, SAFE, b"x", t0)).unwrap();
    let mut out = Vec::new();
    d.evacuate(sent.node, Cause::LinkLost, &|_| None, &mut out);
    assert!(out.is_empty());
    assert_eq!((d.inflight(), d.copied_bytes()), (0, 0));
}

#[test]
fn no_node_up_is_no_backend_at_once() {
    let t0 = Instant::now();
    let mut d = dispatcher(2, Balance::RoundRobin, policy());
    let mut out = Vec::new();
    d.set_up(0, false, &all_live, &mut out);
    d.set_up(1, false, &all_live, &mut out);
    assert_eq!(
        d.forward(&req(1, 1, 0, b"x", t0)),
        Err(Refused {
            code: ErrorCode::NoBackend,
            reason: "no healthy node"
        })
    );
}

#[test]
fn a_client_past_its_share_is_busy_and_the_link_is_never_reset() {
    // Fault: the node link's queue was shared and reset for everyone once one client pushed
    // it past 64 MiB. Now a client is bounded by its own share, and a full queue only stops
    // new requests to that node.
    let t0 = Instant::now();
    let mut d = dispatcher(
        2,
        Balance::RoundRobin,
        Policy {
            max_client_bytes: 4096,
            ..policy()
        },
    );
    let payload = [0u8; 1024];
    let mut held = 0u64;
    for i in 0..4 {
        let r = Request {
            client_bytes: held,
            ..req(1, i, 0, &payload, t0)
        };
        d.forward(&r).unwrap();
        held += 1024;
    }
    let r = Request {
        client_bytes: held,
        ..req(1, 5, 0, &payload, t0)
    };
    assert_eq!(d.forward(&r).map_err(|e| e.code), Err(ErrorCode::Busy));
    // Another client is unaffected.
    d.forward(&req(2, 1, 0, &payload, t0)).unwrap();

    // A node whose queue is full takes nothing new; the other one does.
    d.set_queued(0, 17 << 20);
    for i in 0..10 {
        assert_eq!(d.forward(&req(3, i, 0, b"x", t0)).unwrap().node, 1);
    }
    d.set_queued(1, 17 << 20);
    assert_eq!(
        d.forward(&req(3, 99, 0, b"x", t0)).map_err(|e| e.code),
        Err(ErrorCode::Busy),
        "nodes are up: BUSY, not NO_BACKEND"
    );
    d.set_queued(0, 0);
    assert_eq!(d.forward(&req(3, 100, 0, b"x", t0)).unwrap().node, 0);
}

#[test]
fn the_reactor_cap_on_copies_refuses_flagged_requests_only() {
    let t0 = Instant::now();
    let mut d = dispatcher(
        1,
        Balance::RoundRobin,
        Policy {
            max_copied_bytes: 2048,
            ..policy()
        },
    );
    let payload = [0u8; 1024];
    d.forward(&req(1, 1, SAFE, &payload, t0)).unwrap();
    d.forward(&req(2, 1, SAFE, &payload, t0)).unwrap();
    assert_eq!(
        d.forward(&req(3, 1, SAFE, &payload, t0))
            .map_err(|e| e.code),
        Err(ErrorCode::Busy)
    );
    d.forward(&req(3, 2, 0, &payload, t0)).unwrap();
    assert_eq!(d.copied_bytes(), 2048);
}

#[test]
fn a_reload_renumbers_nodes_and_moves_the_requests_of_removed_ones() {
    let t0 = Instant::now();
    let mut d = dispatcher(3, Balance::RoundRobin, policy());
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    for i in 0..9u64 {
        sent.insert(i, d.forward(&req(i, i, SAFE, b"r", t0)).unwrap());
    }
    // Old order 8890, 8891, 8892 → new order 8892, 8890 (8891 removed).
    let all = addrs(3);
    let new = [all[2], all[0]];
    let moved = [Some(1), None, Some(0)];
    let mut out = Vec::new();
    d.set_nodes(&new, &[true, true], &moved, &all_live, &mut out);
    let from_removed: Vec<u64> = sent
        .iter()
        .filter(|(_, s)| s.node == 1)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(resends(&out).len(), from_removed.len());
    for (node, _) in resends(&out) {
        assert!(node < 2, "new indices");
    }
    // Requests of nodes that stay complete under their new index.
    for (i, s) in &sent {
        if s.node == 1 {
            continue;
        }
        let new_index = moved[s.node].unwrap();
        assert_eq!(d.complete(new_index, s.id, *i).unwrap().client_id, *i);
    }
    let total: u32 = d.nodes().iter().map(|n| n.outstanding).sum();
    assert_eq!(total as usize, from_removed.len());
    assert_eq!(d.inflight(), from_removed.len());
}
