//! Rooms on one host, with real tether-state, tether-gateway and echo node processes: clients
//! JOIN what their token grants and are refused what it does not; the push API joins a device;
//! a publish reaches every member once, merged with the others of its window, numbered; a
//! member that left gets nothing more; a JOIN with `after` replays what was missed; the
//! broadcast reaches every logged-in connection; membership survives a RESUME on another
//! gateway; a node publishes with NODE_PUBLISH.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tether_e2e::state::{now_s, token_with, StateDaemon};
use tether_e2e::{echo_node, eventually, wait_for_state_links, Client, Reply};
use tether_proto::room::{Batch, Join};
use tether_proto::Kind;

fn gateway(
    state: &StateDaemon,
    id: &str,
) -> (tether_e2e::Proc, tether_e2e::Proc, SocketAddr, SocketAddr) {
    let (node, node_addr) = echo_node(&["--reactors", "1"]);
    let (gw, listen, admin) = tether_e2e::gateway_with_state(
        &[node_addr],
        &state.socket,
        id,
        &["--reconnect-min-ms", "50", "--reconnect-max-ms", "200"],
    );
    wait_for_state_links(admin, 2, Duration::from_secs(10));
    (node, gw, listen, admin)
}

/// A client logged in as `device` with a token granting `rooms`; returns it and LOGIN_OK.
fn login(addr: SocketAddr, device: &str, rooms: Value) -> (Client, Value) {
    let mut c = Client::connect(addr);
    let token = token_with(&json!({"sub": device, "exp": now_s() + 600, "rooms": rooms}));
    c.send_frame(Kind::Login, 1, token.as_bytes());
    let r = c.expect();
    assert_eq!(r.kind, Kind::LoginOk, "{device}: {r:?}");
    (
        c,
        serde_json::from_slice(&r.body).expect("LOGIN_OK is JSON"),
    )
}

fn join(c: &mut Client, id: u64, room: &str, after: u64) -> Reply {
    let mut body = Vec::new();
    Join { after, room }.write(&mut body);
    c.send_frame(Kind::Join, id, &body);
    c.expect()
}

fn room_ok(r: &Reply, id: u64) -> Value {
    assert_eq!((r.kind, r.id), (Kind::RoomOk, id), "{r:?}");
    serde_json::from_slice(&r.body).expect("ROOM_OK is JSON")
}

fn publish(state: &StateDaemon, room: Option<&str>, payload: &[u8]) -> Value {
    use base64::Engine;
    let path = match room {
        Some(room) => format!("/v1/rooms/{room}/publish"),
        None => "/v1/broadcast".to_string(),
    };
    let body = json!({"payload": base64::engine::general_purpose::STANDARD.encode(payload)});
    let answer = state.api("POST", &path, None, body.to_string().as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.json());
    answer.json()
}

/// The messages of the ROOM frames `c` receives until it has `n`: (room, seq, payload).
fn messages(c: &mut Client, n: usize) -> Vec<(String, u64, Vec<u8>, u8)> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = c.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|| {
            let seqs: Vec<u64> = got
                .iter()
                .map(|m: &(String, u64, Vec<u8>, u8)| m.1)
                .collect();
            panic!(
                "only {} of {n} room messages came: seqs {seqs:?}",
                got.len()
            )
        });
        assert_eq!(r.kind, Kind::Room, "{r:?}");
        let batch = Batch::parse(&r.body).expect("a ROOM body");
        let mut last = 0;
        for e in batch.entries() {
            got.push((
                batch.room.to_string(),
                e.seq,
                e.payload.to_vec(),
                batch.flags,
            ));
            last = e.seq;
        }
        assert_eq!(r.id, last, "a ROOM frame's id is its last seq");
    }
    got
}

fn nothing_more(c: &mut Client) {
    if let Some(r) = c.recv_timeout(Duration::from_millis(300)) {
        panic!("expected nothing, got {r:?}");
    }
}

#[test]
fn members_get_each_window_once_numbered_and_leavers_get_nothing() {
    let state = StateDaemon::start(&["--room-merge-ms", "200"]);
    let (_node, _gw, listen, _admin) = gateway(&state, "gw-rooms");
    let (mut a, _) = login(listen, "dev-a", json!(["lobby", "chat/*"]));
    let (mut b, _) = login(listen, "dev-b", json!(["*"]));
    let (mut c, _) = login(listen, "dev-c", json!(["other"]));

    let ok = room_ok(&join(&mut a, 10, "lobby", 0), 10);
    assert_eq!(
        (ok["room"].as_str(), ok["member"].as_bool()),
        (Some("lobby"), Some(true))
    );
    room_ok(&join(&mut b, 11, "lobby", 0), 11);
    // Not granted: FORBIDDEN, and the connection stays.
    let refused = join(&mut c, 12, "lobby", 0);
    assert_eq!(
        (refused.kind, refused.id, refused.error_code()),
        (Kind::Error, 12, Some(16))
    );
    c.send_frame(Kind::Ping, 13, b"");
    assert_eq!(c.expect().kind, Kind::Pong);
    // The application may join it anyway.
    let answer = state.api(
        "POST",
        "/v1/rooms/lobby/members",
        None,
        br#"{"device_id":"dev-c"}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["member"], true);

    // Three publishes within one window: one frame each, three messages in order.
    let first = publish(&state, Some("lobby"), b"one")["seq"]
        .as_u64()
        .expect("seq");
    publish(&state, Some("lobby"), b"two");
    publish(&state, Some("lobby"), b"three");
    for member in [&mut a, &mut b, &mut c] {
        let r = member
            .recv_timeout(Duration::from_secs(5))
            .expect("a window");
        assert_eq!(r.kind, Kind::Room, "{r:?}");
        let batch = Batch::parse(&r.body).expect("ROOM body");
        let got: Vec<(u64, Vec<u8>)> = batch
            .entries()
            .map(|e| (e.seq, e.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (first, b"one".to_vec()),
                (first + 1, b"two".to_vec()),
                (first + 2, b"three".to_vec())
            ]
        );
        assert_eq!((batch.room, r.id), ("lobby", first + 2));
    }
    let view = state.api("GET", "/v1/rooms/lobby", None, b"").json();
    assert_eq!(
        (view["members"].as_u64(), view["online"].as_u64()),
        (Some(3), Some(3)),
        "{view}"
    );

    // b leaves: a and c still get the next one, b nothing.
    b.send_frame(Kind::Leave, 20, b"lobby");
    assert_eq!(room_ok(&b.expect(), 20)["member"], false);
    publish(&state, Some("lobby"), b"four");
    assert_eq!(messages(&mut a, 1)[0].2, b"four");
    assert_eq!(messages(&mut c, 1)[0].2, b"four");
    nothing_more(&mut b);

    // b comes back asking for what it missed since `first + 2`: the replay, flagged.
    let ok = room_ok(&join(&mut b, 21, "lobby", first + 2), 21);
    assert_eq!(ok["seq"].as_u64(), Some(first + 3));
    let replay = messages(&mut b, 1);
    assert_eq!(replay[0].1, first + 3);
    assert_eq!(replay[0].3, tether_proto::room::REPLAY);

    // The broadcast reaches every logged-in connection, in a room or not.
    let (mut d, _) = login(listen, "dev-d", json!([]));
    publish(&state, None, b"everyone");
    for member in [&mut a, &mut b, &mut c, &mut d] {
        let got = messages(member, 1);
        assert_eq!(
            (got[0].0.as_str(), got[0].2.as_slice()),
            ("", &b"everyone"[..])
        );
    }
}

#[test]
fn membership_survives_a_resume_on_another_gateway_and_nodes_publish() {
    let state = StateDaemon::start(&["--room-merge-ms", "0"]);
    let (_node1, _gw1, one, _admin1) = gateway(&state, "gw-r1");
    // The second gateway's node publishes every request to "news".
    let (_node2, node2) = echo_node(&["--reactors", "1", "--publish-room", "news"]);
    let (_gw2, two, admin2) = tether_e2e::gateway_with_state(&[node2], &state.socket, "gw-r2", &[]);
    wait_for_state_links(admin2, 2, Duration::from_secs(10));

    let (mut a, ok) = login(one, "dev-r", json!(["news"]));
    room_ok(&join(&mut a, 5, "news", 0), 5);
    let seq = publish(&state, Some("news"), b"first")["seq"]
        .as_u64()
        .expect("seq");
    assert_eq!(messages(&mut a, 1)[0].1, seq);
    drop(a);

    // RESUME through the other gateway: still in "news" without joining again.
    let mut a = Client::connect(two);
    let resume_token = ok["resume_token"].as_str().expect("resume token");
    let mut resumed = false;
    eventually(Duration::from_secs(5), "the resume", || {
        a.send_frame(Kind::Resume, 6, resume_token.as_bytes());
        let r = a.expect();
        resumed = r.kind == Kind::LoginOk;
        resumed
    });
    publish(&state, Some("news"), b"second");
    assert_eq!(messages(&mut a, 1)[0].2, b"second");

    // A DATA through gw-r2 reaches its node, which publishes it to "news": a gets it twice
    // over, as its reply and as a room message.
    a.send_frame(Kind::Data, 7, b"said");
    let mut data = false;
    let mut room = false;
    while !(data && room) {
        let r = a
            .recv_timeout(Duration::from_secs(5))
            .expect("the reply and the room message");
        match r.kind {
            Kind::Data => data = r.body == b"said",
            Kind::Room => {
                let batch = Batch::parse(&r.body).expect("ROOM body");
                room = batch.entries().any(|e| e.payload == b"said");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_member_that_does_not_read_skips_windows_and_never_slows_the_others() {
    use std::io::Read;
    let state = StateDaemon::start(&["--room-merge-ms", "0"]);
    let (_node, _gw, listen, admin) = gateway(&state, "gw-slow");
    let (mut fast, _) = login(listen, "dev-fast", json!(["live"]));
    room_ok(&join(&mut fast, 2, "live", 0), 2);
    // The slow member: a small receive buffer, and it reads nothing while the room is busy.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&listen.into()).expect("connect");
    let mut slow = Client::from_stream(socket.into());
    let token = token_with(&json!({"sub": "dev-slow", "exp": now_s() + 600, "rooms": ["live"]}));
    slow.send_frame(Kind::Login, 1, token.as_bytes());
    assert_eq!(slow.expect().kind, Kind::LoginOk);
    room_ok(&join(&mut slow, 2, "live", 0), 2);

    // The fast member reads all along.
    const N: usize = 2000;
    let reader = std::thread::spawn(move || messages(&mut fast, N));
    // 10 MB: more than the kernel buffers between them take, so the slow one's output queues.
    let payload = vec![b'x'; 5_000];
    let mut first = 0;
    for i in 0..N {
        let seq = publish(&state, Some("live"), &payload)["seq"].as_u64();
        if i == 0 {
            first = seq.expect("seq");
        }
    }
    // It gets them all, in order, no gap.
    let got = reader.join().expect("the fast reader");
    let seqs: Vec<u64> = got.iter().map(|m| m.1).collect();
    assert_eq!(seqs, (first..first + N as u64).collect::<Vec<_>>());
    let skipped = tether_e2e::metric(admin, "tether_gateway_room_events_total{event=\"skipped\"}");
    assert!(skipped.is_some_and(|n| n >= 1.0), "skipped: {skipped:?}");
    // The slow one skipped windows: it reads what it was sent and sees the gap.
    let mut seen = Vec::new();
    slow.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(n) = slow.stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let decoder = tether_proto::Decoder::new(1 << 20);
    let mut at = 0;
    while let Ok(Some((frame, used))) = decoder.decode(&buf[at..]) {
        at += used;
        if frame.kind == Kind::Room {
            let batch = Batch::parse(frame.body).expect("ROOM body");
            seen.extend(batch.entries().map(|e| e.seq));
        }
    }
    assert!(!seen.is_empty(), "the slow member got its first windows");
    assert!(seen.len() < N, "and skipped some: {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
}
