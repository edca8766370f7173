//! Fleet discovery on a real etcd (Debian's etcd-server; `cargo xtask test` installs it):
//! gateways and echo nodes register under leases, ipconfig replicas and gateways watch.
//!
//! - one member: two ipconfig replicas list the same gateways; a node that joins takes
//!   traffic and one that leaves takes none, while a client stays connected throughout; a
//!   draining gateway is delisted at once (the ipconfigs' staleness is set to a minute, so
//!   only the lease revocation can explain it);
//! - three members, one SIGKILLed: registrations carry on past a whole TTL and new members
//!   still register;
//! - etcd lost and restarted empty: everything is registered again within two TTLs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_e2e::{
    echo_node, eventually, gateway, gateway_nodes, ipconfig, listed, node_requests, Client,
    Cluster, Proc,
};
use tether_proto::Kind;

/// Lease TTL of a registration (tether_discovery::LEASE_TTL).
const TTL: Duration = Duration::from_secs(10);
const NODES: &str = "/tether/nodes/";
const GATEWAYS: &str = "/tether/gateways/";

/// An echo node registered in etcd as `id`.
fn node(etcd: &Cluster, id: &str) -> (Proc, SocketAddr) {
    echo_node(&["--etcd", &etcd.endpoints(), "--id", id, "--reactors", "1"])
}

/// A gateway registered in etcd as `id`, taking its nodes from etcd. Its static `--node` list
/// names a port nobody listens on: with `--etcd` it must be ignored.
fn etcd_gateway(etcd: &Cluster, id: &str) -> (Proc, SocketAddr, SocketAddr) {
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    gateway(
        &[nobody],
        &[
            "--etcd",
            &etcd.endpoints(),
            "--id",
            id,
            "--health-interval-ms",
            "100",
            "--report-interval-ms",
            "200",
        ],
    )
}

/// Sends DATA `id` and checks the echo.
fn round_trip(client: &mut Client, id: u64) {
    let payload = format!("etcd-{id}");
    client.send_frame(Kind::Data, id, payload.as_bytes());
    let reply = client.expect();
    assert_eq!(
        (reply.kind, reply.id, reply.body.as_slice()),
        (Kind::Data, id, payload.as_bytes()),
        "reply to {id}"
    );
}

#[test]
fn replicas_agree_nodes_join_and_leave_live_and_a_draining_gateway_goes_at_once() {
    let etcd = Cluster::single();
    let (_n1, a1) = node(&etcd, "n1");
    let (_n2, a2) = node(&etcd, "n2");
    eventually(Duration::from_secs(10), "n1 and n2 registered", || {
        etcd.ids(NODES) == ["n1", "n2"]
    });

    let (_g1, client_addr, admin1) = etcd_gateway(&etcd, "gw-1");
    let (g2, _, _) = etcd_gateway(&etcd, "gw-2");
    let watch = ["--etcd", &etcd.endpoints(), "--stale-after-ms", "60000"];
    let (_i1, ip1) = ipconfig(&watch);
    let (_i2, ip2) = ipconfig(&watch);

    // Both replicas serve the same list: every registered gateway.
    eventually(
        Duration::from_secs(10),
        "both replicas list both gateways",
        || listed(ip1) == ["gw-1", "gw-2"] && listed(ip2) == ["gw-1", "gw-2"],
    );
    assert_eq!(etcd.ids(GATEWAYS), ["gw-1", "gw-2"]);
    let record: serde_json::Value =
        serde_json::from_str(&etcd.list(GATEWAYS).unwrap()[0].1).unwrap();
    for field in [
        "addr",
        "connections",
        "max_connections",
        "bytes_in_per_s",
        "cpu",
        "draining",
    ] {
        assert!(record.get(field).is_some(), "{field} missing from {record}");
    }

    // The gateway forwards to the registered nodes, not to its static list.
    let want = |addrs: &[SocketAddr]| {
        let mut v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        v.sort();
        v
    };
    eventually(Duration::from_secs(10), "gw-1 has n1 and n2", || {
        gateway_nodes(admin1) == want(&[a1, a2])
    });
    let mut client = Client::connect(client_addr);
    let mut next = 0u64;
    let mut burst = |client: &mut Client, n: u64| {
        for _ in 0..n {
            next += 1;
            round_trip(client, next);
        }
    };
    eventually(
        Duration::from_secs(10),
        "n1 and n2 both up and taking requests",
        || {
            burst(&mut client, 10);
            node_requests(admin1, a1) > 0 && node_requests(admin1, a2) > 0
        },
    );

    // A node that joins takes traffic; the client stays connected.
    let (mut n3, a3) = node(&etcd, "n3");
    eventually(Duration::from_secs(10), "gw-1 added n3", || {
        gateway_nodes(admin1) == want(&[a1, a2, a3])
    });
    eventually(Duration::from_secs(10), "n3 up and taking requests", || {
        burst(&mut client, 10);
        node_requests(admin1, a3) > 0
    });

    // A node that leaves (SIGTERM: lease revoked first) takes none.
    n3.signal(libc::SIGTERM);
    assert!(n3
        .wait_timeout(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    eventually(Duration::from_secs(5), "gw-1 removed n3", || {
        gateway_nodes(admin1) == want(&[a1, a2])
    });
    assert_eq!(etcd.ids(NODES), ["n1", "n2"]);
    let (before1, before2) = (node_requests(admin1, a1), node_requests(admin1, a2));
    burst(&mut client, 40);
    assert_eq!(
        node_requests(admin1, a3),
        0,
        "a removed node has no counter"
    );
    // Counters are published by each reactor's tick: wait for them to settle.
    eventually(
        Duration::from_secs(5),
        "every request counted at n1 or n2",
        || node_requests(admin1, a1) + node_requests(admin1, a2) == before1 + before2 + 40,
    );
    assert_eq!(node_requests(admin1, a3), 0);

    // A draining gateway is off both lists at once: its lease is revoked before it drains
    // (staleness is a minute here, so nothing else could delist it this fast).
    let t0 = Instant::now();
    g2.signal(libc::SIGTERM);
    // 8 s: still short of the 10 s lease TTL, let alone the minute of staleness.
    eventually(
        Duration::from_secs(8),
        "gw-2 delisted by both replicas",
        || listed(ip1) == ["gw-1"] && listed(ip2) == ["gw-1"],
    );
    eprintln!(
        "draining gateway delisted by both replicas in {:?}",
        t0.elapsed()
    );
    assert_eq!(etcd.ids(GATEWAYS), ["gw-1"]);
    burst(&mut client, 5);
}

#[test]
fn registration_carries_on_when_one_of_three_members_dies() {
    let mut etcd = Cluster::start(3);
    let (_n1, a1) = node(&etcd, "n1");
    let (_g1, client_addr, admin) = etcd_gateway(&etcd, "gw-1");
    let (_i1, ip) = ipconfig(&["--etcd", &etcd.endpoints()]);
    eventually(Duration::from_secs(10), "registered and listed", || {
        etcd.ids(NODES) == ["n1"] && listed(ip) == ["gw-1"]
    });

    // The first endpoint of every client's list goes.
    etcd.kill(0);
    let killed = Instant::now();

    // A node that starts now still registers, and the gateway still learns of it.
    let (_n2, a2) = node(&etcd, "n2");
    eventually(
        Duration::from_secs(10),
        "n2 registered with a member down",
        || etcd.ids(NODES) == ["n1", "n2"],
    );
    let mut want = vec![a1.to_string(), a2.to_string()];
    want.sort();
    eventually(Duration::from_secs(10), "the gateway added n2", || {
        gateway_nodes(admin) == want
    });

    // Past a whole TTL, every lease is still kept alive: nothing expired.
    while killed.elapsed() < TTL + Duration::from_secs(2) {
        assert_eq!(etcd.ids(NODES), ["n1", "n2"], "at {:?}", killed.elapsed());
        assert_eq!(etcd.ids(GATEWAYS), ["gw-1"]);
        assert_eq!(listed(ip), ["gw-1"]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut client = Client::connect(client_addr);
    for id in 1..=20 {
        round_trip(&mut client, id);
    }
}

#[test]
fn everything_registers_again_within_two_ttls_after_etcd_restarts_empty() {
    let mut etcd = Cluster::single();
    let (_n1, a1) = node(&etcd, "n1");
    let (_g1, client_addr, admin) = etcd_gateway(&etcd, "gw-1");
    let (_i1, ip) = ipconfig(&["--etcd", &etcd.endpoints(), "--stale-after-ms", "60000"]);
    eventually(Duration::from_secs(10), "registered and listed", || {
        etcd.ids(NODES) == ["n1"] && etcd.ids(GATEWAYS) == ["gw-1"] && listed(ip) == ["gw-1"]
    });
    let mut client = Client::connect(client_addr);
    round_trip(&mut client, 1);

    // Total loss: every key and lease gone, a new cluster on the same ports.
    etcd.restart_empty();
    let restarted = Instant::now();
    eventually(2 * TTL, "node and gateway registered again", || {
        etcd.ids(NODES) == ["n1"] && etcd.ids(GATEWAYS) == ["gw-1"]
    });
    let registered = restarted.elapsed();
    eventually(2 * TTL, "ipconfig lists gw-1 again", || {
        listed(ip) == ["gw-1"]
    });
    eventually(2 * TTL, "the gateway has n1 again", || {
        gateway_nodes(admin) == [a1.to_string()]
    });
    eprintln!(
        "after an empty etcd restart: registered again in {registered:?}, listed and routed in {:?}",
        restarted.elapsed()
    );
    assert!(restarted.elapsed() < 2 * TTL);
    // The client that was connected all along is still served.
    eventually(Duration::from_secs(5), "the old client is served", || {
        client.send_frame(Kind::Data, 2, b"after");
        client
            .recv_timeout(Duration::from_secs(1))
            .is_some_and(|r| r.kind == Kind::Data && r.body == b"after")
    });
}
