//! tether-gateway with real echo nodes: forwarding, failover, limits, reload, drain.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_e2e::{
    echo_node, eventually, free_addr, gateway, http_get, loadgen, node_requests, stats, Client,
    Proc,
};
use tether_proto::{encode, ErrorBody, Kind};

fn cluster(n: usize) -> (Vec<Proc>, Vec<SocketAddr>) {
    (0..n).map(|_| echo_node(&["--reactors", "1"])).unzip()
}

fn metric(admin: SocketAddr, line_start: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// 5,000 clients pipelining DATA through the gateway: every payload checked (loadgen salts
/// payloads per connection, so a misrouted reply fails too), and acceptors keep reactors
/// within ±5% of each other.
#[test]
fn five_thousand_pipelining_clients_get_their_own_replies() {
    let (_nodes, addrs) = cluster(4);
    let (_gw, listen, admin) = gateway(&addrs, &[]);
    let target = listen.to_string();
    let (ok, s) = loadgen(&[
        "--target",
        &target,
        "--conns",
        "5000",
        "--pipeline",
        "4",
        "--payload",
        "64",
        "--duration",
        "3",
        "--connect-rate",
        "20000",
    ]);
    assert!(ok, "{s:#}");
    assert_eq!(s["conns"]["established"], 5000, "{s:#}");
    assert_eq!(s["conns"]["dropped"], 0, "{s:#}");
    assert_eq!(s["verify_failures"], 0, "{s:#}");
    assert!(s["frames"]["received"].as_u64().unwrap() >= 50_000, "{s:#}");

    let st = stats(admin);
    let accepted: Vec<f64> = st["reactors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["accepted"].as_f64().unwrap())
        .collect();
    let mean = accepted.iter().sum::<f64>() / accepted.len() as f64;
    for a in &accepted {
        assert!(
            (a - mean).abs() <= mean * 0.05,
            "unbalanced reactors: {accepted:?}"
        );
    }
    assert_eq!(st["backend_dropped"]["stale_route"], 0, "{st:#}");
    assert_eq!(st["backend_dropped"]["unknown_route"], 0, "{st:#}");
}

/// SIGKILL one of four nodes under load: its in-flight requests are re-sent, nothing is lost.
#[test]
fn killing_a_node_under_load_loses_no_request() {
    let (mut nodes, addrs) = cluster(4);
    let (_gw, listen, admin) = gateway(
        &addrs,
        &["--health-interval-ms", "200", "--health-timeout-ms", "500"],
    );
    let target = listen.to_string();
    let victim = nodes.remove(2);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        victim.signal(libc::SIGKILL);
        victim
    });
    let (ok, s) = loadgen(&[
        "--target",
        &target,
        "--conns",
        "200",
        "--pipeline",
        "8",
        "--duration",
        "4",
    ]);
    let _victim = killer.join().unwrap();
    assert!(ok, "{s:#}");
    assert_eq!(s["verify_failures"], 0, "{s:#}");
    assert_eq!(s["conns"]["dropped"], 0, "{s:#}");
    assert_eq!(
        s["errors"].as_object().unwrap().len(),
        0,
        "no error of any kind: {s:#}"
    );
    assert_eq!(s["frames"]["sent"], s["frames"]["received"], "{s:#}");
    assert!(metric(admin, "tether_gateway_backend_retries_total") > 0.0);
    let st = stats(admin);
    let dead = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == addrs[2].to_string())
        .unwrap();
    assert_eq!(dead["up"], false, "{st:#}");
}

/// A node that comes back is up again within rise × interval and takes traffic.
#[test]
fn a_restarted_node_takes_traffic_again() {
    let (mut nodes, addrs) = cluster(2);
    let (_gw, listen, admin) = gateway(
        &addrs,
        &[
            "--health-interval-ms",
            "200",
            "--health-timeout-ms",
            "500",
            "--rise",
            "2",
            "--reconnect-max-ms",
            "200",
        ],
    );
    let back = addrs[1];
    nodes[1].signal(libc::SIGKILL);
    let _ = nodes[1].wait_timeout(Duration::from_secs(2));
    eventually(Duration::from_secs(3), "node down on every reactor", || {
        stats(admin)["nodes"][1]["up_reactors"] == 0
    });

    let restarted = Proc::spawn("tether-echo-node", &["--listen", &back.to_string()]);
    tether_e2e::wait_for_port(back, Duration::from_secs(5));
    let started = Instant::now();
    eventually(Duration::from_secs(5), "node up on every reactor", || {
        stats(admin)["nodes"][1]["up"] == true
    });
    // reconnect (≤ 200 ms) + rise (2) × interval (200 ms) + a tick, with slack for a loaded
    // machine: still well short of what a missed reconnect or probe would cost.
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let before = node_requests(admin, back);
    let (ok, s) = loadgen(&[
        "--target",
        &listen.to_string(),
        "--conns",
        "20",
        "--pipeline",
        "2",
        "--duration",
        "1",
    ]);
    assert!(ok, "{s:#}");
    assert!(
        node_requests(admin, back) > before,
        "the restarted node takes requests"
    );
    drop(restarted);
}

/// No healthy node: NO_BACKEND for that request at once, and the connection stays.
#[test]
fn no_healthy_node_answers_no_backend_at_once() {
    let nowhere = [free_addr(), free_addr()];
    let (_gw, listen, _admin) = gateway(&nowhere, &["--health-timeout-ms", "100"]);
    let mut c = Client::connect(listen);
    // A round trip first: the gateway accepts only once its start-up is over, which is not
    // what is timed here.
    c.send_frame(Kind::Ping, 4, b"");
    assert_eq!(c.expect().kind, Kind::Pong);
    let started = Instant::now();
    c.send_frame(Kind::Data, 5, b"anyone?");
    let r = c.expect();
    assert_eq!((r.kind, r.id, r.error_code()), (Kind::Error, 5, Some(7)));
    assert!(started.elapsed() < Duration::from_millis(500));
    c.send_frame(Kind::Ping, 6, b"");
    assert_eq!(
        c.expect().kind,
        Kind::Pong,
        "NO_BACKEND keeps the connection"
    );
}

#[test]
fn max_connections_is_overloaded_at_accept() {
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, admin) = gateway(&addrs, &["--max-connections", "2"]);
    // The start-up probe (wait_for_port) was a connection too. The kernel completes it before
    // the acceptor takes it, so wait until the gateway has both accepted it and seen it close.
    eventually(
        Duration::from_secs(3),
        "the probe accepted and closed",
        || {
            metric(admin, "tether_gateway_connections_accepted_total") >= 1.0
                && metric(admin, "tether_gateway_connections_open ") == 0.0
        },
    );
    let mut held = Vec::new();
    for id in 0..2 {
        let mut c = Client::connect(listen);
        c.send_frame(Kind::Ping, id, b"");
        assert_eq!(c.expect().kind, Kind::Pong);
        held.push(c);
    }
    let mut third = Client::connect(listen);
    let r = third.expect();
    assert_eq!(r.error_code(), Some(6), "{r:?}");
    third.expect_closed();
    assert_eq!(
        metric(
            admin,
            "tether_gateway_connections_rejected_total{reason=\"overloaded\"}"
        ),
        1.0
    );
    // The held clients are untouched.
    held[0].send_frame(Kind::Data, 9, b"still fine");
    assert_eq!(held[0].expect().body, b"still fine");
}

/// Each bad input gets its ERROR then close; the gateway serves everyone else meanwhile.
#[test]
fn bad_client_input_gets_the_right_error_then_close() {
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, admin) = gateway(&addrs, &["--max-body", "1000"]);
    let mut bystander = Client::connect(listen);
    let mut unknown = vec![0, 0, 0, 10, 0x7f, 0];
    unknown.extend_from_slice(&31u64.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, u16, u64)> = vec![
        ("len below 10", 3u32.to_be_bytes().to_vec(), 1, 0),
        (
            "body over max_body, header only",
            (10u32 + 1001).to_be_bytes().to_vec(),
            2,
            0,
        ),
        ("unknown kind", unknown, 3, 31),
        (
            "a kind clients may not send",
            {
                let mut v = Vec::new();
                encode::routed(&mut v, Kind::Response, 32, 1, b"x");
                v
            },
            3,
            32,
        ),
    ];
    for (name, bytes, code, id) in cases {
        let mut c = Client::connect(listen);
        c.send(&bytes);
        let r = c.expect();
        let body = ErrorBody::parse(&r.body).unwrap();
        assert_eq!(
            (r.kind, body.code, r.id),
            (Kind::Error, code, id),
            "{name}: {}",
            body.reason
        );
        c.expect_closed();
        bystander.send_frame(Kind::Data, u64::from(code), name.as_bytes());
        assert_eq!(bystander.expect().body, name.as_bytes());
    }
    assert_eq!(
        metric(
            admin,
            "tether_gateway_connections_closed_total{reason=\"bad_frame\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            admin,
            "tether_gateway_connections_closed_total{reason=\"unknown_kind\"}"
        ),
        2.0
    );
}

/// A partial frame stalled past frame_timeout is TIMEOUT (slowloris).
#[test]
fn a_stalled_partial_frame_times_out() {
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, _admin) = gateway(&addrs, &["--frame-timeout-ms", "300"]);
    let mut c = Client::connect(listen);
    // A round trip first, so the connection is adopted by a reactor before the clock starts.
    c.send_frame(Kind::Ping, 0, b"");
    assert_eq!(c.expect().kind, Kind::Pong);
    let mut frame = Vec::new();
    encode::frame(&mut frame, Kind::Data, 1, b"never finished");
    let started = Instant::now();
    c.send(&frame[..10]);
    std::thread::sleep(Duration::from_millis(150));
    c.send(&frame[10..12]); // a trickle does not reset the clock
    let r = c.expect();
    assert_eq!(r.error_code(), Some(10), "{r:?}");
    c.expect_closed();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
}

/// A client that sends nothing for idle_timeout_ms gets TIMEOUT "idle" and is closed; one
/// that keeps sending stays, however long it lives.
#[test]
fn an_idle_client_is_closed_and_a_talking_one_stays() {
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, admin) = gateway(&addrs, &["--idle-timeout-ms", "1000"]);
    let mut talking = Client::connect(listen);
    let mut quiet = Client::connect(listen);
    talking.send_frame(Kind::Ping, 0, b"");
    assert_eq!(talking.expect().kind, Kind::Pong);
    let last_byte = Instant::now();
    quiet.send_frame(Kind::Ping, 0, b"");
    assert_eq!(quiet.expect().kind, Kind::Pong);

    let mut closing = None;
    let mut n = 1;
    while last_byte.elapsed() < Duration::from_secs(4) {
        talking.send_frame(Kind::Data, n, b"still here");
        assert_eq!(
            talking.expect().body,
            b"still here",
            "the talking client is served"
        );
        n += 1;
        if closing.is_none() {
            if let Some(r) = quiet.recv_timeout(Duration::from_millis(150)) {
                closing = Some((r, last_byte.elapsed()));
            }
        } else {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let (r, after) = closing.expect("the quiet client was closed");
    assert_eq!(r.error_code(), Some(10), "{r:?}");
    assert_eq!(ErrorBody::parse(&r.body).unwrap().reason, "idle");
    quiet.expect_closed();
    // Never before the timeout; at most 1.25 times it plus a sweep tick (and a loaded machine).
    assert!(
        after >= Duration::from_millis(1000) && after < Duration::from_millis(3500),
        "closed after {after:?}"
    );
    assert_eq!(
        metric(
            admin,
            "tether_gateway_connections_closed_total{reason=\"idle\"}"
        ),
        1.0
    );
}

/// A client that does not read its replies is cut off once they pass max_queued_bytes.
#[test]
fn a_client_that_does_not_read_is_a_slow_consumer() {
    use std::io::Write;
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, admin) = gateway(&addrs, &["--max-queued-bytes", "65536"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&listen.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut burst = Vec::new();
    for id in 0..64u64 {
        encode::frame(&mut burst, Kind::Data, id, &[7u8; 16_000]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    // Keep sending (never reading) until the gateway gives up on us.
    while Instant::now() < deadline && stream.write_all(&burst).is_ok() {
        if metric(
            admin,
            "tether_gateway_connections_closed_total{reason=\"slow_consumer\"}",
        ) >= 1.0
        {
            break;
        }
    }
    eventually(Duration::from_secs(5), "slow_consumer close", || {
        metric(
            admin,
            "tether_gateway_connections_closed_total{reason=\"slow_consumer\"}",
        ) == 1.0
    });
    assert_eq!(
        metric(admin, "tether_gateway_errors_total{code=\"SLOW_CONSUMER\"}"),
        1.0
    );
}

/// With a rate limit, frames past the burst get RATE_LIMITED and the connection stays.
#[test]
fn the_rate_limit_refuses_frames_past_the_burst() {
    let (_nodes, addrs) = cluster(1);
    let (_gw, listen, _admin) = gateway(&addrs, &["--rate-limit", "5", "--rate-burst", "5"]);
    let mut c = Client::connect(listen);
    let mut burst = Vec::new();
    for id in 0..20u64 {
        encode::frame(&mut burst, Kind::Ping, id, b"");
    }
    c.send(&burst);
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        let r = c.expect();
        match r.kind {
            Kind::Pong => pongs += 1,
            Kind::Error => {
                assert_eq!(r.error_code(), Some(8));
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((pongs, limited), (5, 15));
    std::thread::sleep(Duration::from_millis(450));
    c.send_frame(Kind::Ping, 99, b"");
    assert_eq!(
        c.expect().kind,
        Kind::Pong,
        "tokens refill and the connection stayed"
    );
}

/// ip-hash: a client's requests all go to one node, the same one after a gateway restart.
#[test]
fn ip_hash_keeps_a_client_on_one_node_across_restarts() {
    let (_nodes, addrs) = cluster(4);
    let mut chosen = Vec::new();
    for _restart in 0..2 {
        let (gw, listen, admin) = gateway(&addrs, &["--balance", "ip-hash"]);
        let mut per_source = Vec::new();
        for source in [
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.5",
            "127.0.0.6",
        ] {
            let before: Vec<u64> = addrs.iter().map(|&n| node_requests(admin, n)).collect();
            let (ok, s) = loadgen(&[
                "--target",
                &listen.to_string(),
                "--source",
                source,
                "--conns",
                "4",
                "--pipeline",
                "2",
                "--duration",
                "0.5",
            ]);
            assert!(ok, "{s:#}");
            // /stats node counters are published on each reactor's tick, /metrics is live:
            // wait until every request sent so far shows in /stats.
            eventually(Duration::from_secs(5), "stats caught up", || {
                let published: u64 = addrs.iter().map(|&n| node_requests(admin, n)).sum();
                published as f64 == metric(admin, "tether_gateway_backend_requests_total")
            });
            let after: Vec<u64> = addrs.iter().map(|&n| node_requests(admin, n)).collect();
            let used: Vec<usize> = (0..addrs.len()).filter(|&i| after[i] > before[i]).collect();
            assert_eq!(used.len(), 1, "{source} spread over nodes {used:?}");
            per_source.push(used[0]);
        }
        chosen.push(per_source);
        drop(gw);
    }
    assert_eq!(
        chosen[0], chosen[1],
        "the same node for each client after a restart"
    );
}

/// SIGHUP swaps the node list without dropping a client.
#[test]
fn sighup_changes_nodes_without_dropping_clients() {
    let (_nodes, addrs) = cluster(4);
    let dir = std::env::temp_dir().join(format!("tether-e2e-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let nodes_line = |a: &[SocketAddr]| {
        format!(
            "nodes = [{}]\n",
            a.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    std::fs::write(&file, nodes_line(&addrs[..2])).unwrap();
    let listen = free_addr();
    let admin = free_addr();
    let gw = Proc::spawn(
        "tether-gateway",
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--reactors",
            "2",
            "--pin-cores",
            "false",
        ],
    );
    tether_e2e::wait_for_port(listen, Duration::from_secs(10));
    let mut held = Client::connect(listen);
    held.send_frame(Kind::Data, 1, b"before");
    assert_eq!(held.expect().body, b"before");

    std::fs::write(&file, nodes_line(&addrs[2..])).unwrap();
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(3), "new nodes up", || {
        let st = stats(admin);
        st["nodes"].as_array().unwrap().iter().all(|n| {
            let addr = n["addr"].as_str().unwrap();
            addr != addrs[0].to_string() && addr != addrs[1].to_string() && n["up"] == true
        })
    });
    let old: Vec<u64> = addrs[..2]
        .iter()
        .map(|&n| node_requests(admin, n))
        .collect();
    assert_eq!(old, vec![0, 0], "removed nodes are no longer listed");
    for id in 2..22 {
        held.send_frame(Kind::Data, id, b"after");
        let r = held.expect();
        assert_eq!(
            (r.kind, r.id, r.body.as_slice()),
            (Kind::Data, id, &b"after"[..])
        );
    }
    eventually(
        Duration::from_secs(2),
        "the new nodes took the traffic",
        || {
            addrs[2..]
                .iter()
                .map(|&n| node_requests(admin, n))
                .sum::<u64>()
                >= 20
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM: GOAWAY to every client, in-flight work finishes, exit 0 once clients leave.
#[test]
fn sigterm_drains_with_goaway_and_exits_zero() {
    let (_nodes, addrs) = cluster(1);
    let (mut gw, listen, admin) = gateway(&addrs, &["--drain-timeout-ms", "5000"]);
    let mut c = Client::connect(listen);
    c.send_frame(Kind::Ping, 1, b"");
    assert_eq!(c.expect().kind, Kind::Pong);
    gw.signal(libc::SIGTERM);
    let r = c.expect();
    assert_eq!((r.kind, r.id), (Kind::GoAway, 0));
    let reason: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(reason["reason"].is_string());
    let (status, _) = http_get(admin, "/healthz");
    assert_eq!(status, 503, "draining shows in /healthz");
    // Still served while draining.
    c.send_frame(Kind::Data, 2, b"last words");
    assert_eq!(c.expect().body, b"last words");
    // New connections are no longer accepted.
    assert!(std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(300)).is_err());
    drop(c);
    let status = gw
        .wait_timeout(Duration::from_secs(3))
        .expect("exits once its clients left");
    assert!(status.success(), "{status:?}");
}

/// A client that ignores GOAWAY is closed at drain_timeout; exit is still 0.
#[test]
fn drain_timeout_closes_clients_that_stay() {
    let (_nodes, addrs) = cluster(1);
    let (mut gw, listen, _admin) = gateway(&addrs, &["--drain-timeout-ms", "500"]);
    let mut c = Client::connect(listen);
    c.send_frame(Kind::Ping, 1, b"");
    assert_eq!(c.expect().kind, Kind::Pong);
    let started = Instant::now();
    gw.signal(libc::SIGTERM);
    assert_eq!(c.expect().kind, Kind::GoAway);
    c.expect_closed();
    let status = gw.wait_timeout(Duration::from_secs(3)).expect("exits");
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

/// Replies for unknown routes and malformed node frames are dropped and counted.
#[test]
fn bad_node_frames_are_dropped_and_counted() {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    // One thread per link: every reactor has its own.
    std::thread::spawn(move || {
        for s in fake.incoming().flatten() {
            std::thread::spawn(move || fake_node(s));
        }
    });
    let (_gw, listen, admin) = gateway(&[fake_addr], &[]);
    let mut c = Client::connect(listen);
    c.send_frame(Kind::Data, 1, b"hello");
    eventually(Duration::from_secs(3), "drops counted", || {
        metric(
            admin,
            "tether_gateway_backend_dropped_frames_total{reason=\"unknown_route\"}",
        ) == 1.0
            && metric(
                admin,
                "tether_gateway_backend_dropped_frames_total{reason=\"malformed\"}",
            ) == 1.0
    });
    c.send_frame(Kind::Ping, 2, b"");
    assert_eq!(c.expect().kind, Kind::Pong, "the client is unaffected");
}

/// A node that answers health probes but garbles every reply.
fn fake_node(mut s: std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 65536];
    let mut pending = Vec::new();
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Ok(Some((frame, used))) = tether_proto::Decoder::default().decode(&pending) {
            let mut out = Vec::new();
            match frame.kind {
                Kind::NodePing => encode::frame(&mut out, Kind::NodePong, frame.id, b""),
                Kind::Request => {
                    let routed = tether_proto::Routed::parse(frame.body).unwrap();
                    // A reply for a route nobody has, then one too short to hold a route.
                    encode::routed(
                        &mut out,
                        Kind::Response,
                        frame.id,
                        routed.route ^ 0xFFFF,
                        b"x",
                    );
                    encode::frame(&mut out, Kind::Response, frame.id, b"short");
                }
                _ => {}
            }
            let _ = s.write_all(&out);
            pending.drain(..used);
        }
    }
}

/// Out of descriptors (EMFILE): the acceptor sheds new connections with its reserve
/// descriptor instead of spinning, clients already in keep working, and accepting resumes
/// when descriptors free up. The hard limit is lowered for the gateway alone.
#[test]
fn running_out_of_descriptors_sheds_without_spinning() {
    let (_nodes, addrs) = cluster(1);
    let (listen, admin) = (free_addr(), free_addr());
    let cmd = format!(
        "ulimit -n 64 && exec {} --listen {listen} --admin {admin} --node {} --reactors 2 --pin-cores false",
        tether_e2e::binary("tether-gateway").display(),
        addrs[0]
    );
    let gw = Proc::spawn_shell(&cmd);
    tether_e2e::wait_for_port(listen, Duration::from_secs(10));

    // Fill the table: connect until the gateway stops answering PINGs on new connections.
    // The first one waits for the acceptors, which start only after the gateway's start-up.
    let mut first = Client::connect(listen);
    first.send_frame(Kind::Ping, 0, b"");
    assert_eq!(
        first.expect().kind,
        Kind::Pong,
        "the first client is served"
    );
    let mut held = vec![first];
    for id in 1..80u64 {
        let Ok(stream) = std::net::TcpStream::connect(listen) else {
            break;
        };
        let mut c = Client::from_stream(stream);
        c.send_frame(Kind::Ping, id, b"");
        match c.recv_timeout(Duration::from_secs(2)) {
            Some(r) if r.kind == Kind::Pong => held.push(c),
            _ => break, // shed: closed without an answer
        }
    }
    assert!(held.len() >= 10 && held.len() < 64, "held {}", held.len());

    // While shedding, the acceptor does not spin: a second of pressure costs little CPU.
    let cpu_before = cpu_seconds(gw.child.id());
    let pressure: Vec<_> = (0..20)
        .filter_map(|_| std::net::TcpStream::connect(listen).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let burned = cpu_seconds(gw.child.id()) - cpu_before;
    assert!(
        burned < 0.5,
        "gateway used {burned:.2} s of CPU in 1 s while out of descriptors"
    );
    drop(pressure);

    // Connections already in are unaffected.
    for (i, c) in held.iter_mut().enumerate().take(5) {
        c.send_frame(Kind::Data, 1000 + i as u64, b"still served");
        assert_eq!(c.expect().body, b"still served");
    }
    // Freeing descriptors lets new clients in again.
    held.truncate(held.len() - 5);
    eventually(Duration::from_secs(10), "accepting again", || {
        let Ok(stream) = std::net::TcpStream::connect(listen) else {
            return false;
        };
        let mut c = Client::from_stream(stream);
        c.send_frame(Kind::Ping, 7, b"");
        matches!(c.recv_timeout(Duration::from_secs(1)), Some(r) if r.kind == Kind::Pong)
    });
    // The admin listener shares the descriptor table, so it is asked only now.
    let shed = metric(
        admin,
        "tether_gateway_connections_rejected_total{reason=\"out_of_descriptors\"}",
    );
    assert!(shed >= 1.0, "shed {shed}");
    let refused = metric(
        admin,
        "tether_gateway_connections_rejected_total{reason=\"overloaded\"}",
    );
    assert_eq!(refused, 0.0, "nothing was past max_connections");
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Two gateway processes on one port with `reuse_port`: the kernel spreads clients over both;
/// when one drains, its listener leaves the port's group at once and every new client is
/// served by the other; a process without `reuse_port` cannot bind the port at all.
#[test]
fn processes_share_a_port_with_reuse_port_and_one_drains_alone() {
    let (_nodes, addrs) = cluster(1);
    let listen = free_addr().to_string();
    let node = addrs[0].to_string();
    let start = |id: &str, reuse: &str| -> (Proc, SocketAddr) {
        let admin = free_addr();
        let admin_s = admin.to_string();
        let args = [
            "--listen",
            &listen,
            "--admin",
            &admin_s,
            "--node",
            &node,
            "--reactors",
            "1",
            "--pin-cores",
            "false",
            "--id",
            id,
            "--reuse-port",
            reuse,
            "--drain-timeout-ms",
            "5000",
        ];
        (Proc::spawn("tether-gateway", &args), admin)
    };
    let open = |admin: SocketAddr| metric(admin, "tether_gateway_connections_open");
    let (mut a, admin_a) = start("gw-a", "true");
    tether_e2e::wait_for_port(admin_a, Duration::from_secs(10));
    let (_b, admin_b) = start("gw-b", "true");
    tether_e2e::wait_for_port(admin_b, Duration::from_secs(10));
    let addr: SocketAddr = listen.parse().unwrap();

    let mut first: Vec<Client> = (0..64).map(|_| Client::connect(addr)).collect();
    for c in &mut first {
        c.send_frame(Kind::Ping, 1, b"");
        assert_eq!(c.expect().kind, Kind::Pong);
    }
    let (on_a, on_b) = (open(admin_a), open(admin_b));
    assert_eq!(on_a + on_b, 64.0);
    assert!(
        on_a >= 1.0 && on_b >= 1.0,
        "both processes took clients: {on_a} and {on_b}"
    );

    let (mut c, _) = start("gw-c", "false");
    let status = c
        .wait_timeout(Duration::from_secs(10))
        .expect("a process without reuse_port exits");
    assert!(
        !status.success(),
        "it cannot bind a shared port: {status:?}"
    );

    a.signal(libc::SIGTERM);
    // gw-a's clients hear GOAWAY once its listener is out of the group: all of them in one
    // iteration of its reactor, so once one has it the others have it too.
    let started = Instant::now();
    let mut heard = vec![false; first.len()];
    while !heard.iter().any(|&h| h) {
        assert!(started.elapsed() < Duration::from_secs(10), "no GOAWAY");
        for (c, h) in first.iter_mut().zip(heard.iter_mut()) {
            *h = c
                .recv_timeout(Duration::from_millis(20))
                .is_some_and(|r| r.kind == Kind::GoAway);
            if *h {
                break;
            }
        }
    }
    for (c, h) in first.iter_mut().zip(heard.iter_mut()) {
        if !*h {
            *h = c
                .recv_timeout(Duration::from_millis(200))
                .is_some_and(|r| r.kind == Kind::GoAway);
        }
    }
    let goaway = heard.iter().filter(|&&h| h).count() as u32;
    assert_eq!(f64::from(goaway), on_a);
    let mut second: Vec<Client> = (0..32).map(|_| Client::connect(addr)).collect();
    for c in &mut second {
        c.send_frame(Kind::Ping, 1, b"");
        assert_eq!(c.expect().kind, Kind::Pong);
    }
    assert_eq!(open(admin_b), on_b + 32.0, "every new client went to gw-b");
    drop(first);
    let status = a
        .wait_timeout(Duration::from_secs(10))
        .expect("gw-a exits once its clients left");
    assert!(status.success(), "{status:?}");
}
