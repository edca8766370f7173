//! Gateways report to ipconfig: both show up in /ip_list, and a draining one drops out at
//! once, before its clients are told to reconnect.

use std::time::{Duration, Instant};

use tether_e2e::{
    echo_node, eventually, free_addr, http_get, ipconfig, listed, wait_for_port, Client, Proc,
};
use tether_proto::Kind;

#[test]
fn gateways_report_and_a_draining_one_is_delisted_at_once() {
    let (_node, node) = echo_node(&[]);
    let (_ipc, ipc) = ipconfig(&["--stale-after-ms", "10000"]);
    let url = format!("http://{ipc}");
    let mut gateways = Vec::new();
    for id in ["gw-a", "gw-b"] {
        let (listen, admin) = (free_addr(), free_addr());
        let gw = Proc::spawn(
            "tether-gateway",
            &[
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
                "--node",
                &node.to_string(),
                "--reactors",
                "1",
                "--pin-cores",
                "false",
                "--ipconfig",
                &url,
                "--id",
                id,
                "--report-interval-ms",
                "200",
                "--drain-timeout-ms",
                "3000",
            ],
        );
        wait_for_port(listen, Duration::from_secs(10));
        gateways.push((gw, listen));
    }
    eventually(Duration::from_secs(5), "both gateways listed", || {
        listed(ipc) == ["gw-a", "gw-b"]
    });
    let (_, body) = http_get(ipc, "/ip_list");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    for g in list["gateways"].as_array().unwrap() {
        let addr = g["addr"].as_str().unwrap();
        assert!(
            gateways.iter().any(|(_, l)| l.to_string() == addr),
            "{addr} is what clients dial"
        );
    }

    // A client on gw-a keeps it draining (not exited) while we look at the list.
    let (gw_a, listen_a) = &gateways[0];
    let mut client = Client::connect(*listen_a);
    client.send_frame(Kind::Ping, 1, b"");
    assert_eq!(client.expect().kind, Kind::Pong);
    let started = Instant::now();
    gw_a.signal(libc::SIGTERM);
    assert_eq!(client.expect().kind, Kind::GoAway);
    // Delisted within ipconfig's rebuild interval of the draining report, which was sent
    // before GOAWAY — well before the 10 s staleness timeout could have done it.
    eventually(Duration::from_secs(5), "gw-a delisted", || {
        listed(ipc) == ["gw-b"]
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
