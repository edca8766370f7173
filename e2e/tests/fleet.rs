//! A fleet of real hosts, deployed as an operator would: network namespaces with their own
//! addresses, each running a state daemon in fleet mode, an echo node and a gateway, over a
//! real Redis 7 Cluster (three primaries with a replica each) and a real etcd (authentication
//! on, one etcd user per member). Every gateway and echo node registers in etcd and every
//! gateway takes its nodes from there; no test writes a member list. Push from any host,
//! resume on any host, duplicate logins across hosts, a client that finds its gateways
//! through ipconfig (from etcd) and moves to the next one when its host dies, and the failure
//! modes of `doc/fleet.md`: a host killed with pushes pending, a host cut off from Redis, a
//! Redis primary killed, Redis restarted empty. Rooms across hosts: numbered once, sent only
//! to the hosts with a member, and kept by a session that resumes on another host.
//!
//! Skipped, with the reason printed, when not root or without `ip` / `redis-server` /
//! `etcd` (`cargo xtask test` installs them).

use std::time::{Duration, Instant};

use tether_e2e::fleet::{
    in_ns, Etcd, Host, Ipconfig, Network, RedisCluster, ETCD_GATEWAYS, ETCD_NODES, ETCD_TTL,
};
use tether_e2e::Client;
use tether_proto::Kind;

/// A running fleet. Fields drop in order: the hosts first, the network last.
struct Fleet {
    hosts: Vec<Host>,
    etcd: Etcd,
    redis: RedisCluster,
    network: Network,
}

/// A fleet of `hosts` hosts (a, b, …) on a fresh network, Redis cluster and etcd, every
/// host registered in etcd and every gateway with every host's node; or `None` when this
/// machine cannot run it.
fn fleet(hosts: usize, extra: &[&str]) -> Option<Fleet> {
    if let Some(reason) = Network::skip_reason() {
        eprintln!("SKIPPED: the multi-host fleet tests need {reason}");
        return None;
    }
    let network = Network::create(hosts);
    let redis = RedisCluster::start(&network.core);
    let etcd = Etcd::start(&network.core);
    let seeds = redis.seeds();
    let started: Vec<Host> = network
        .hosts
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let id = ((b'a' + i as u8) as char).to_string();
            Host::start(ns, &id, &seeds, &etcd, extra)
        })
        .collect();
    etcd.wait_registered(&started, Duration::from_secs(20));
    Some(Fleet {
        hosts: started,
        etcd,
        redis,
        network,
    })
}

/// The next PUSH on `client` (PINGs and other frames are not expected here).
fn next_push(client: &mut Client) -> (u64, Vec<u8>) {
    let r = client
        .recv_timeout(Duration::from_secs(5))
        .expect("a PUSH within 5 s");
    assert_eq!(r.kind, Kind::Push, "{r:?}");
    (r.id, r.body.to_vec())
}

fn push_ok(host: &Host, device: &str, payload: &[u8], status: &str) -> u64 {
    let (code, v) = host.push(device, payload);
    assert_eq!(code, 200, "push to {device} through {}: {v}", host.id);
    assert_eq!(
        v["status"], status,
        "push to {device} through {}: {v}",
        host.id
    );
    v["msg_id"].as_u64().expect("msg_id")
}

/// `client` gets ERROR 12 KICKED, its reason containing `why`, and is closed.
fn expect_kicked(client: &mut Client, why: &str) {
    let kicked = client
        .recv_timeout(Duration::from_secs(5))
        .expect("KICKED within 5 s");
    assert_eq!(
        (kicked.kind, kicked.error_code()),
        (Kind::Error, Some(12)),
        "{kicked:?}"
    );
    let reason = String::from_utf8_lossy(&kicked.body);
    assert!(reason.contains(why), "{reason:?}");
    client.expect_closed();
}

fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_push_through_any_host_reaches_the_device_and_a_second_login_elsewhere_kicks_the_first() {
    let Some(fleet) = fleet(2, &[]) else {
        return;
    };
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let (mut on_a, _) = a.login("dev-1");

    // Through B to the device on A: delivered, with the id the device sees.
    let msg = push_ok(b, "dev-1", b"from b", "delivered");
    assert_eq!(next_push(&mut on_a), (msg, b"from b".to_vec()));
    on_a.send_frame(Kind::Ack, msg, b"");
    // Through A as well; ids grow per device across hosts.
    let second = push_ok(a, "dev-1", b"from a", "delivered");
    assert!(second > msg, "{second} after {msg}");
    assert_eq!(next_push(&mut on_a), (second, b"from a".to_vec()));
    on_a.send_frame(Kind::Ack, second, b"");

    // Offline only when no host has a session.
    let (code, v) = b.push("nobody", b"x");
    assert_eq!((code, v["status"].as_str()), (200, Some("offline")), "{v}");
    assert!(v["msg_id"].is_null(), "{v}");

    // The same device logging in on B: A's client is KICKED, B's is the session.
    let (mut on_b, _) = b.login("dev-1");
    expect_kicked(&mut on_a, "logged in on another host");
    let third = push_ok(a, "dev-1", b"to b", "delivered");
    assert!(third > second);
    // At least once: an ACK still on its way to the engine when B took the session over
    // leaves its push to be sent again, under the id the client has already seen (and drops).
    let new = loop {
        let (id, body) = next_push(&mut on_b);
        if id > second {
            break (id, body);
        }
        assert!(
            id == msg || id == second,
            "only a push already seen comes again: {id}"
        );
    };
    assert_eq!(new, (third, b"to b".to_vec()));
}

#[test]
fn a_refused_duplicate_login_is_decided_across_hosts() {
    let Some(fleet) = fleet(2, &["--duplicate-login", "refuse"]) else {
        return;
    };
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let (_on_a, _) = a.login("dev-r");
    let mut second = b.connect();
    second.send_frame(Kind::Login, 1, tether_e2e::state::token("dev-r").as_bytes());
    let r = second.expect();
    assert_eq!((r.kind, r.error_code()), (Kind::Error, Some(5)), "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("on host a"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn the_sessions_api_of_any_host_shows_and_ends_a_session_another_host_holds() {
    let Some(fleet) = fleet(2, &[]) else {
        return;
    };
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let (mut on_a, ok) = a.login("dev-s");
    let token = ok["resume_token"]
        .as_str()
        .expect("resume_token")
        .to_string();
    let session = ok["session"].as_str().expect("session").to_string();
    // One push delivered and not acknowledged: it is pending in the router table.
    let msg = push_ok(b, "dev-s", b"unacked", "delivered");
    assert_eq!(next_push(&mut on_a), (msg, b"unacked".to_vec()));

    // The holding host shows it whole, naming itself.
    let (code, here) = a.session("GET", "dev-s");
    assert_eq!((code, here["host"].as_str()), (200, Some("a")), "{here}");
    assert!(
        here["route"].is_u64() && here["login_unix_ms"].is_u64(),
        "{here}"
    );
    // Another host shows it from the router table.
    let (code, there) = b.session("GET", "dev-s");
    assert_eq!(code, 200, "{there}");
    assert_eq!(there["host"], "a", "{there}");
    assert_eq!(there["session"], session.as_str(), "{there}");
    assert_eq!(there["gateway"], here["gateway"], "{there}");
    assert_eq!(there["state"], "online", "{there}");
    assert_eq!(there["pending"], 1, "{there}");
    assert!(
        there.get("route").is_none(),
        "only the holding host knows: {there}"
    );
    let (code, _) = b.session("GET", "nobody");
    assert_eq!(code, 404);

    // Ended through B: A's client is KICKED for it, and the session is gone everywhere.
    let (code, ended) = b.session("DELETE", "dev-s");
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended["host"], "a", "{ended}");
    assert_eq!(ended["session"], session.as_str(), "{ended}");
    assert_eq!(ended["was_online"], true, "{ended}");
    assert_eq!(ended["dropped_pushes"], 1, "{ended}");
    expect_kicked(&mut on_a, "ended by the operator");
    eventually(Duration::from_secs(5), "A drops the session", || {
        a.session("GET", "dev-s").0 == 404
    });
    assert_eq!(b.session("GET", "dev-s").0, 404);
    assert_eq!(b.session("DELETE", "dev-s").0, 404);
    let (code, v) = b.push("dev-s", b"late");
    assert_eq!((code, v["status"].as_str()), (200, Some("offline")), "{v}");
    let mut again = b.connect();
    again.send_frame(Kind::Resume, 3, token.as_bytes());
    let r = again.expect();
    assert_eq!((r.kind, r.error_code()), (Kind::Error, Some(5)), "{r:?}");
}

#[test]
fn a_host_killed_with_pushes_pending_loses_none_and_its_device_resumes_on_another() {
    let Some(mut fleet) = fleet(2, &[]) else {
        return;
    };
    let hosts = &mut fleet.hosts;
    let (mut on_a, ok) = hosts[0].login("dev-2");
    let token = ok["resume_token"]
        .as_str()
        .expect("resume_token")
        .to_string();
    // Three pushes accepted (through both hosts), seen by the client, never acknowledged.
    let mut ids = Vec::new();
    for (i, host) in [0usize, 1, 0].into_iter().enumerate() {
        let payload = format!("p{i}");
        let id = push_ok(&hosts[host], "dev-2", payload.as_bytes(), "delivered");
        assert_eq!(next_push(&mut on_a), (id, payload.into_bytes()));
        ids.push(id);
    }
    // A push while the device is between hosts: accepted, kept.
    hosts[0].kill();
    drop(on_a);
    let queued = push_ok(&hosts[1], "dev-2", b"while moving", "delivered");
    ids.push(queued);

    let started = Instant::now();
    let b = &hosts[1];
    let mut on_b = b.connect();
    on_b.send_frame(Kind::Resume, 9, token.as_bytes());
    let r = on_b.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 9), "{r:?}");
    let mut got: Vec<u64> = Vec::new();
    while got.len() < ids.len() {
        let (id, _) = next_push(&mut on_b);
        if !got.contains(&id) {
            got.push(id);
        }
    }
    got.sort_unstable();
    assert_eq!(got, ids, "every accepted push, redelivered on B");
    eprintln!("resumed on B and redelivered in {:?}", started.elapsed());
    for id in &ids {
        on_b.send_frame(Kind::Ack, *id, b"");
    }
    let next = push_ok(b, "dev-2", b"after", "delivered");
    assert!(
        next > *ids.iter().max().expect("ids"),
        "ids grow across hosts"
    );
    assert_eq!(b.metric("tether_state_fleet_takeovers_total"), Some(1.0));
}

/// Sends DATA `id` on `client` and checks the echo (from an echo node the gateway found in
/// etcd); a push of `seen` coming again meanwhile (at least once) is skipped.
fn round_trip(client: &mut Client, id: u64, seen: &[u64]) {
    let payload = format!("fleet-{id}");
    client.send_frame(Kind::Data, id, payload.as_bytes());
    let mut r = client.expect();
    while r.kind == Kind::Push && seen.contains(&r.id) {
        r = client.expect();
    }
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Data, id, payload.as_bytes()),
        "{r:?}"
    );
}

#[test]
fn a_client_finds_gateways_through_ipconfig_and_resumes_on_the_next_when_its_host_dies() {
    let Some(mut fleet) = fleet(2, &[]) else {
        return;
    };
    let ipconfig = Ipconfig::start(&fleet.network.core, &fleet.etcd);
    // The client is on a machine of its own: it knows ipconfig's address only.
    let here = fleet.network.client.clone();

    // ipconfig lists both hosts' gateways, from etcd alone (it refuses HTTP reports), each
    // at the address its gateway advertised there: its host's bridge address.
    eventually(
        Duration::from_secs(10),
        "ipconfig lists gw-a and gw-b",
        || ipconfig.listed(&here) == ["gw-a", "gw-b"],
    );
    let list = ipconfig.gateways(&here);
    for host in &fleet.hosts {
        assert!(
            list.contains(&(host.gateway_id(), host.advertise)),
            "{} at {} in {list:?}",
            host.gateway_id(),
            host.advertise
        );
    }

    // The device takes host a's gateway from the list and logs in there.
    let (_, on_a) = list
        .iter()
        .find(|(id, _)| id == "gw-a")
        .cloned()
        .expect("gw-a listed");
    let (mut client, ok) = in_ns(&here, move || {
        tether_e2e::state::gateway_login(on_a, "dev-e")
    });
    let token = ok["resume_token"]
        .as_str()
        .expect("resume_token")
        .to_string();
    round_trip(&mut client, 1, &[]);
    // Pushes accepted through both hosts, seen by the client, never acknowledged.
    let mut ids = Vec::new();
    for (i, host) in [0usize, 1, 0].into_iter().enumerate() {
        let payload = format!("e{i}");
        let id = push_ok(&fleet.hosts[host], "dev-e", payload.as_bytes(), "delivered");
        assert_eq!(next_push(&mut client), (id, payload.into_bytes()));
        ids.push(id);
    }

    // Host a dies whole: nothing of it says goodbye to etcd.
    fleet.hosts[0].kill();
    let killed = Instant::now();
    drop(client);
    let b = &fleet.hosts[1];
    let moving = push_ok(b, "dev-e", b"while moving", "delivered");
    ids.push(moving);

    // Its gateway and node leave etcd when their leases expire, within a TTL. ipconfig stops
    // listing its gateway by then (the DELETE), or before (its records stopped: stale after
    // 3 s); b's gateway forgets a's node (the DELETE too).
    let (mut delisted, mut gone) = (None, None);
    while delisted.is_none() || gone.is_none() {
        assert!(
            killed.elapsed() < ETCD_TTL + Duration::from_secs(5),
            "host a still in etcd ({:?}, {:?}) or listed ({:?})",
            fleet.etcd.ids(ETCD_GATEWAYS),
            fleet.etcd.ids(ETCD_NODES),
            ipconfig.listed(&here)
        );
        if delisted.is_none() && ipconfig.listed(&here) == ["gw-b"] {
            delisted = Some(killed.elapsed());
        }
        if gone.is_none()
            && fleet.etcd.ids(ETCD_GATEWAYS) == ["gw-b"]
            && fleet.etcd.ids(ETCD_NODES) == ["node-b"]
        {
            gone = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (delisted, gone) = (delisted.expect("delisted"), gone.expect("gone"));
    eprintln!(
        "after host a's SIGKILL: delisted by ipconfig in {delisted:?}, out of etcd in {gone:?} \
         (lease TTL {ETCD_TTL:?})"
    );
    // Within the TTL, and the time etcd takes to notice (it checks leases every 500 ms) and
    // this test to look (two etcdctl calls).
    assert!(gone < ETCD_TTL + Duration::from_secs(2), "{gone:?}");
    assert_eq!(ipconfig.listed(&here), ["gw-b"]);
    eventually(Duration::from_secs(5), "gw-b has node-b only", || {
        b.nodes() == [b.node_addr.to_string()]
    });

    // The client asks ipconfig again and RESUMEs on the gateway it lists, with its token:
    // every push accepted before the kill comes again, and the one sent meanwhile.
    let (next, addr) = ipconfig
        .gateways(&here)
        .first()
        .cloned()
        .expect("a gateway listed");
    assert_eq!((next.as_str(), addr), ("gw-b", b.advertise));
    let started = Instant::now();
    let mut client = in_ns(&here, move || Client::connect(addr));
    client.send_frame(Kind::Resume, 9, token.as_bytes());
    let r = client.expect();
    assert_eq!((r.kind, r.id), (Kind::LoginOk, 9), "{r:?}");
    let mut got: Vec<u64> = Vec::new();
    while got.len() < ids.len() {
        let (id, _) = next_push(&mut client);
        if !got.contains(&id) {
            got.push(id);
        }
    }
    got.sort_unstable();
    assert_eq!(got, ids, "every accepted push, redelivered through gw-b");
    eprintln!("resumed on gw-b and redelivered in {:?}", started.elapsed());
    for id in &ids {
        client.send_frame(Kind::Ack, *id, b"");
    }
    // And the session works on there: DATA to b's node, a new push.
    round_trip(&mut client, 2, &ids);
    let after = push_ok(b, "dev-e", b"after", "delivered");
    let (id, body) = loop {
        let (id, body) = next_push(&mut client);
        if !ids.contains(&id) {
            break (id, body);
        }
    };
    assert_eq!((id, body), (after, b"after".to_vec()));
    assert_eq!(b.metric("tether_state_fleet_takeovers_total"), Some(1.0));
}

#[test]
fn failure_modes_host_cut_off_primary_killed_redis_restarted_empty() {
    let Some(fleet) = fleet(2, &["--resume-window-s", "6"]) else {
        return;
    };
    let Fleet {
        hosts, mut redis, ..
    } = fleet;
    let (a, b) = (&hosts[0], &hosts[1]);

    // A host cut off from Redis: new logins UNAVAILABLE (11, the connection stays), pushes
    // 503; its sessions stay; once back, everything works again.
    let (mut on_a, _) = a.login("dev-3");
    a.ns.link(false);
    let mut newcomer = a.connect();
    newcomer.send_frame(
        Kind::Login,
        1,
        tether_e2e::state::token("dev-new").as_bytes(),
    );
    // The engine gives up on the first operation after the link went down once its
    // timeouts and retries have passed (about 5.1 s here), so the client waits longer than
    // `expect`'s 5 s.
    let r = newcomer
        .recv_timeout(Duration::from_secs(15))
        .expect("UNAVAILABLE within 15 s");
    assert_eq!((r.kind, r.error_code()), (Kind::Error, Some(11)), "{r:?}");
    let (code, v) = a.push("dev-3", b"cut off");
    assert_eq!(code, 503, "{v}");
    a.ns.link(true);
    eventually(Duration::from_secs(10), "logins on A again", || {
        newcomer.send_frame(
            Kind::Login,
            2,
            tether_e2e::state::token("dev-new").as_bytes(),
        );
        newcomer.expect().kind == Kind::LoginOk
    });
    let id = push_ok(b, "dev-3", b"back", "delivered");
    assert_eq!(next_push(&mut on_a), (id, b"back".to_vec()));
    on_a.send_frame(Kind::Ack, id, b"");

    // The primary holding dev-3's slot killed: its replica is promoted, a push accepted
    // before survives it, and the fleet works on.
    let unacked = push_ok(b, "dev-3", b"before failover", "delivered");
    assert_eq!(next_push(&mut on_a).0, unacked);
    let primary = redis.primary_of("{t:dev-3}:r");
    // Replication is asynchronous and Tether issues no WAIT (doc/fleet.md): what survives a
    // failover is what reached the replica, so the test waits until the replica has
    // acknowledged the primary's offset of now before the kill.
    let replication = |field: &str| -> Option<u64> {
        let info = redis.cli(primary, &["info", "replication"]);
        info.lines().find_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            if key != field {
                return None;
            }
            // `slave0:ip=…,port=…,state=online,offset=N,lag=…`: what it acknowledged.
            let value = value
                .split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .unwrap_or(value);
            value.parse().ok()
        })
    };
    let offset = replication("master_repl_offset").expect("master_repl_offset");
    eventually(Duration::from_secs(10), "the replica has the push", || {
        replication("slave0").is_some_and(|acked| acked >= offset)
    });
    redis.kill(primary);
    let started = Instant::now();
    eventually(Duration::from_secs(20), "a push after the failover", || {
        b.push("dev-3", b"after failover").0 == 200
    });
    eprintln!(
        "pushes accepted again {:?} after the primary's SIGKILL",
        started.elapsed()
    );
    let pending = redis.cli(
        (primary + 1) % 6,
        &["-c", "hget", "{t:dev-3}:p", &unacked.to_string()],
    );
    assert!(
        pending.contains("before failover"),
        "the unacknowledged push survived the failover: {pending:?}"
    );

    // Redis restarted empty: every node wiped and the cluster made again. The hosts write
    // their routes again within a refresh period, and pushes reach their devices.
    for i in 0..6 {
        redis.kill(i);
    }
    let mut fresh = RedisCluster::start(&redis.ns);
    std::mem::swap(&mut redis, &mut fresh);
    drop(fresh);
    eventually(
        Duration::from_secs(15),
        "dev-3 reachable after Redis restarted empty",
        || {
            let (code, v) = b.push("dev-3", b"after restart");
            code == 200 && v["status"] == "delivered"
        },
    );
    while let Some(r) = on_a.recv_timeout(Duration::from_secs(2)) {
        if r.kind == Kind::Push && &r.body[..] == b"after restart" {
            return;
        }
    }
    panic!("the push after Redis restarted empty did not reach dev-3 on A");
}

/// The messages of `room` on `client` until one numbered `seq` (earlier ones skipped): its
/// payload.
fn room_message(client: &mut Client, room: &str, seq: u64) -> Vec<u8> {
    loop {
        let r = client
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no message {seq} of {room} within 5 s"));
        assert_eq!(r.kind, Kind::Room, "{r:?}");
        let batch = tether_proto::room::Batch::parse(&r.body).expect("a ROOM body");
        assert_eq!(batch.room, room);
        for e in batch.entries() {
            if e.seq == seq {
                return e.payload.to_vec();
            }
            assert!(e.seq < seq, "{} came before {seq}", e.seq);
        }
    }
}

/// Publishes `payload` to `room` through `host` until the hosts with a member (`hosts` in
/// the answer) are `hosts` — they subscribe to a room's channel as its first member joins —
/// and returns the number of that publish.
fn publish_to(host: &Host, room: &str, payload: &[u8], hosts: u64) -> u64 {
    use base64::Engine;
    let body = serde_json::json!({
        "payload": base64::engine::general_purpose::STANDARD.encode(payload)
    });
    let path = format!("/v1/rooms/{room}/publish");
    let mut seq = 0;
    eventually(
        Duration::from_secs(10),
        "every host with a member listening",
        || {
            let (code, v) = host.api("POST", &path, &body);
            assert_eq!(code, 200, "{v}");
            seq = v["seq"].as_u64().expect("seq");
            v["hosts"].as_u64() == Some(hosts)
        },
    );
    seq
}

#[test]
fn a_room_spans_hosts_numbered_once_and_a_host_without_members_gets_nothing() {
    let Some(fleet) = fleet(3, &["--room-merge-ms", "0"]) else {
        return;
    };
    let (a, b, c) = (&fleet.hosts[0], &fleet.hosts[1], &fleet.hosts[2]);
    let (mut on_a, ok_a) = a.login("dev-1");
    let (mut on_b, _) = b.login("dev-2");
    for (host, device) in [(a, "dev-1"), (b, "dev-2")] {
        let (code, v) = host.api(
            "POST",
            "/v1/rooms/lobby/members",
            &serde_json::json!({ "device_id": device }),
        );
        assert_eq!((code, v["member"].as_bool()), (200, Some(true)), "{v}");
    }

    // Published through C, which has no member: numbered once, both members get it.
    let seq = publish_to(c, "lobby", b"hello", 2);
    assert_eq!(room_message(&mut on_a, "lobby", seq), b"hello");
    assert_eq!(room_message(&mut on_b, "lobby", seq), b"hello");
    // C receives nothing of the room: no bus message, no window.
    let before = c.metric("tether_state_fleet_bus_messages_total");
    let next = publish_to(a, "lobby", b"again", 2);
    assert!(next > seq, "{next} after {seq}");
    assert_eq!(room_message(&mut on_b, "lobby", next), b"again");
    assert_eq!(room_message(&mut on_a, "lobby", next), b"again");
    assert_eq!(c.metric("tether_state_fleet_bus_messages_total"), before);
    assert_eq!(c.metric("tether_state_room_windows_total"), Some(0.0));

    // dev-1 resumes on B: still in the room there, without joining again.
    drop(on_a);
    let token = ok_a["resume_token"]
        .as_str()
        .expect("resume token")
        .to_string();
    let mut moved = b.connect();
    eventually(Duration::from_secs(10), "the resume on B", || {
        moved.send_frame(Kind::Resume, 7, token.as_bytes());
        let r = moved.expect();
        r.kind == Kind::LoginOk
    });
    // A has no member left: only B listens now.
    let last = publish_to(c, "lobby", b"after the move", 1);
    assert_eq!(room_message(&mut moved, "lobby", last), b"after the move");
    assert_eq!(room_message(&mut on_b, "lobby", last), b"after the move");
    let (code, view) = b.api("GET", "/v1/rooms/lobby", &serde_json::Value::Null);
    assert_eq!((code, view["members"].as_u64()), (200, Some(2)), "{view}");
}
