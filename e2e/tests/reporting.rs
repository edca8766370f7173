//! Gateways report to ipconfig: both show up in /ip_list, and a draining one drops out at
//! once, before its clients are told to reconnect; each entry lists where clients dial each
//! transport the gateway offers; a gateway whose id or advertised address ipconfig would
//! refuse does not pass `check`.

use std::process::Command;
use std::time::{Duration, Instant};

use tether_e2e::{
    binary, echo_node, eventually, free_addr, http_get, http_post, ipconfig, listed, wait_for_port,
    Client, Proc,
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

/// A report of an idle gateway with this `id` and `addr`.
#[test]
fn the_list_says_where_to_dial_each_transport() {
    let (_node, node) = echo_node(&[]);
    let (_ipc, ipc) = ipconfig(&["--stale-after-ms", "10000"]);
    let url = format!("http://{ipc}");
    let (tcp, ws, admin) = (free_addr(), free_addr(), free_addr());
    let common = |id: &'static str, admin: std::net::SocketAddr| {
        vec![
            "--id".to_string(),
            id.into(),
            "--admin".into(),
            admin.to_string(),
            "--node".into(),
            node.to_string(),
            "--reactors".into(),
            "1".into(),
            "--pin-cores".into(),
            "false".into(),
            "--ipconfig".into(),
            url.clone(),
            "--report-interval-ms".into(),
            "200".into(),
        ]
    };
    // Addresses derived from the listeners.
    let mut derived = common("derived", admin);
    derived.extend(["--listen".into(), tcp.to_string()]);
    derived.extend(["--listen-ws".into(), ws.to_string()]);
    let derived: Vec<&str> = derived.iter().map(String::as_str).collect();
    let _derived = Proc::spawn("tether-gateway", &derived);
    // Only WebSocket (no `listen`: a file can say so), told what a proxy in front offers
    // (wss on 443) and its public name.
    let (ws_only, admin_b) = (free_addr(), free_addr());
    let file = std::env::temp_dir().join(format!("reporting-ws-only-{}.toml", std::process::id()));
    std::fs::write(&file, format!("listen = []\nlisten_ws = [\"{ws_only}\"]\n")).unwrap();
    let mut told = common("told", admin_b);
    told.extend(["--config".into(), file.display().to_string()]);
    told.extend(["--advertise".into(), "gw-b.example:8920".into()]);
    told.extend(["--advertise-ws".into(), "gw-b.example:8920".into()]);
    told.extend(["--advertise-wss".into(), "gw-b.example:443".into()]);
    let told: Vec<&str> = told.iter().map(String::as_str).collect();
    let _told = Proc::spawn("tether-gateway", &told);
    eventually(Duration::from_secs(10), "both gateways listed", || {
        listed(ipc) == ["derived", "told"]
    });
    let (_, body) = http_get(ipc, "/ip_list");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = |id: &str| {
        list["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {list}"))
    };
    assert_eq!(entry("derived")["addr"], tcp.to_string());
    assert_eq!(
        entry("derived")["transports"],
        serde_json::json!({"tcp": tcp.to_string(), "ws": ws.to_string()})
    );
    assert_eq!(entry("told")["addr"], "gw-b.example:8920");
    assert_eq!(
        entry("told")["transports"],
        serde_json::json!({"ws": "gw-b.example:8920", "wss": "gw-b.example:443"}),
        "no plain TCP listener: no tcp entry, though `advertise` is set"
    );
    let _ = std::fs::remove_file(&file);
}

fn report(id: &str, addr: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id, "addr": addr, "connections": 0, "max_connections": 100,
        "bytes_in_per_s": 0, "bytes_out_per_s": 0, "bandwidth_bytes_per_s": 1e9,
        "cpu": 1.0, "draining": false,
    })
    .to_string()
    .into_bytes()
}

/// ipconfig's answer to a report with this `id` and `addr`: (status, the problem with the
/// field named, without the field's name).
fn refusal(ipc: std::net::SocketAddr, field: &str, id: &str, addr: &str) -> (u16, String) {
    let (status, body) = http_post(ipc, "/v1/report", &report(id, addr));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(answer["field"], field, "{body}");
    let error = answer["error"].as_str().unwrap_or_default();
    let problem = error.strip_prefix(&format!("{field}: ")).unwrap_or(error);
    (status, problem.to_string())
}

#[test]
fn check_refuses_an_id_or_advertise_that_ipconfig_would_refuse_with_its_words() {
    let (_ipc, ipc) = ipconfig(&[]);
    let (status, bad_addr) = refusal(ipc, "addr", "gw-1", "0.0.0.0:8900");
    assert_eq!(status, 400, "{bad_addr}");
    let (status, bad_id) = refusal(ipc, "id", "gw 1", "127.0.0.1:8900");
    assert_eq!(status, 400, "{bad_id}");

    let check = |args: &[&str]| {
        let out = Command::new(binary("tether-gateway"))
            .arg("check")
            .args(args)
            .env_remove("TETHER_GATEWAY_ID")
            .env_remove("TETHER_GATEWAY_ADVERTISE")
            .output()
            .expect("run tether-gateway check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check(&["--advertise", "0.0.0.0:8900"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("  - advertise: {bad_addr}\n")),
        "ipconfig says {bad_addr:?}; check says {stderr}"
    );
    let (code, stderr) = check(&["--id", "gw 1", "--advertise", "[::]:8900"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    assert!(
        stderr.contains(&format!("  - id: {bad_id}\n")),
        "ipconfig says {bad_id:?}; check says {stderr}"
    );
    assert!(
        stderr.contains("  - advertise: :: is not an address clients can dial\n"),
        "{stderr}"
    );

    // What check passes, ipconfig accepts.
    let (code, stderr) = check(&["--id", "gw-1", "--advertise", "gw-1.example:8900"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (status, body) = http_post(ipc, "/v1/report", &report("gw-1", "gw-1.example:8900"));
    assert_eq!(status, 200, "{body}");
}
