//! Load reports to ipconfig. Before: `POST /v1/report` checked nothing, so one report of a
//! made-up gateway, or of a real gateway's id with a new address, put the attacker's
//! address in `/ip_list`, and `draining: true` delisted any gateway. Now ipconfig has
//! `report_keys_file` (gw-1 and gw-2 each with a key) and each probe is tried as it was:
//!
//! | probe | answer |
//! |---|---|
//! | a made-up gateway at another address, unsigned | 401 `unsigned` |
//! | gw-1's id with a new address, unsigned | 401 `unsigned` |
//! | `draining: true` for gw-1 from a stranger, unsigned / signed with a key of its own | 401 `unsigned` / `bad_signature` |
//! | gw-1's real report, captured on the wire, sent again | 401 `replayed` |
//! | that captured report with `draining: true` put in | 401 `bad_signature` |
//! | gw-2's key, signing as gw-1 / signing as gw-2 a body for gw-1 | 401 `bad_signature` / 403 `forbidden` |
//!
//! and after all of them `/ip_list` still lists gw-1 alone, at its own address, live: the
//! real gateway, signing with its key, is listed. Also: `check` and start-up refuse a
//! public `listen` with no `report_keys_file`; keys rotate on both sides by SIGHUP with no
//! report refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tether_e2e::{
    binary, eventually, gateway, http_get, http_post_with, http_raw, ipconfig, metric, Proc,
};
use tether_proto::report_auth::{sign, verifies, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::Scratch;

const KEY_1: &str = "6b1f0c3e9a8d47e2b5c4a3f2e1d0c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a2918";
const KEY_1_NEXT: &str = "0aa1bb2cc3dd4ee5ff60718293a4b5c6d7e8f9011223344556677889900aabbc";
const KEY_2: &str = "2e7d1c4b9a0f8e3d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a49382716051";
/// A key ipconfig has never heard of.
const STRANGER_KEY: &str = "5555555555555555555555555555555555555555555555555555555555555555";
/// Where the attacker would like clients to go.
const ATTACKER_ADDR: &str = "127.66.66.66:8900";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A report body as a gateway sends it.
fn report(id: &str, addr: &str, draining: bool) -> Vec<u8> {
    json!({
        "id": id, "addr": addr, "connections": 0, "max_connections": 100000,
        "bytes_in_per_s": 0, "bytes_out_per_s": 0, "bandwidth_bytes_per_s": 1.0e12,
        "cpu": 0.0, "draining": draining
    })
    .to_string()
    .into_bytes()
}

/// `POST /v1/report` with `headers`; (status, JSON answer).
fn post(ipc: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let (status, text) = http_post_with(ipc, "/v1/report", headers, body);
    let answer = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    eprintln!("  -> {status} {text}");
    (status, answer)
}

/// `body` signed now with `key` as gateway `id`.
fn post_signed(ipc: SocketAddr, key: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let ts = unix_ms().to_string();
    let signature = sign(key.as_bytes(), id, ts.parse().unwrap(), body);
    post(
        ipc,
        &[
            (ID_HEADER, id),
            (TIMESTAMP_HEADER, &ts),
            (SIGNATURE_HEADER, &signature),
        ],
        body,
    )
}

fn rejected(ipc: SocketAddr, reason: &str) -> f64 {
    metric(
        ipc,
        &format!("tether_ipconfig_reports_rejected_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

fn accepted(ipc: SocketAddr) -> f64 {
    metric(ipc, "tether_ipconfig_reports_accepted_total").unwrap_or(-1.0)
}

/// `/ip_list` as (id, addr) pairs.
fn list(ipc: SocketAddr) -> Vec<(String, String)> {
    let (status, body) = http_get(ipc, "/ip_list");
    if status != 200 {
        return Vec::new();
    }
    let list: Value = serde_json::from_str(&body).expect("ip_list is JSON");
    list["gateways"]
        .as_array()
        .expect("gateways")
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().into(),
                g["addr"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// A listener standing in for an ipconfig (or an eavesdropper on the path to one): it
/// answers 200 to every report and hands over each request as it came, byte for byte.
struct Sniffer {
    addr: SocketAddr,
    requests: mpsc::Receiver<Vec<u8>>,
}

impl Sniffer {
    fn start() -> Sniffer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sniffer");
        let addr = listener.local_addr().expect("sniffer address");
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let request = read_request(&mut stream);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if tx.send(request).is_err() {
                    return;
                }
            }
        });
        Sniffer { addr, requests }
    }

    fn next(&self) -> Vec<u8> {
        self.requests
            .recv_timeout(Duration::from_secs(10))
            .expect("a report reached the sniffer")
    }
}

/// One HTTP/1.1 request with a Content-Length body.
fn read_request(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&request, b"\r\n\r\n") {
            let length: usize = header_of(&request, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return request;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return request,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_of(request: &[u8], name: &str) -> Option<String> {
    let head = &request[..find(request, b"\r\n\r\n")?];
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn body_of(request: &[u8]) -> Vec<u8> {
    let end = find(request, b"\r\n\r\n").expect("a whole request");
    request[end + 4..].to_vec()
}

/// A gateway reporting every 200 ms to `urls` as `id`, signing with `key_file`.
fn signed_gateway(urls: &str, id: &str, key_file: &std::path::Path) -> (Proc, SocketAddr) {
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let key_file = key_file.to_str().expect("UTF-8 path");
    let (proc, listen, _admin) = gateway(
        &[nobody],
        &[
            "--ipconfig",
            urls,
            "--ipconfig-key-file",
            key_file,
            "--id",
            id,
            "--report-interval-ms",
            "200",
        ],
    );
    (proc, listen)
}

#[test]
fn every_report_probe_is_refused_and_the_real_gateway_stays_listed() {
    let dir = Scratch::new("reports");
    let keys = dir.write(
        "report-keys",
        &format!("# id key\ngw-1 {KEY_1}\ngw-2 {KEY_2}\n"),
    );
    let gw1_key = dir.write("gw-1.key", &format!("{KEY_1}\n"));
    let keys_arg = keys.to_str().unwrap();
    let (_ipc, ipc) = ipconfig(&["--report-keys-file", keys_arg, "--stale-after-ms", "10000"]);
    // The real gw-1 reports to ipconfig, and (the same bytes) past an eavesdropper.
    let sniffer = Sniffer::start();
    let urls = format!("http://{ipc},http://{}", sniffer.addr);
    let (_gw1, gw1_addr) = signed_gateway(&urls, "gw-1", &gw1_key);
    let real = vec![("gw-1".to_string(), gw1_addr.to_string())];
    eventually(Duration::from_secs(10), "gw-1 listed", || list(ipc) == real);
    let captured = sniffer.next();
    assert_eq!(header_of(&captured, ID_HEADER).as_deref(), Some("gw-1"));

    eprintln!("made-up gateway at another address, unsigned:");
    let (status, answer) = post(ipc, &[], &report("evil-1", ATTACKER_ADDR, false));
    assert_eq!((status, answer["reason"].as_str()), (401, Some("unsigned")));
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .starts_with("reports must be signed"));

    eprintln!("gw-1's id with a new address, unsigned:");
    let (status, answer) = post(ipc, &[], &report("gw-1", ATTACKER_ADDR, false));
    assert_eq!((status, answer["reason"].as_str()), (401, Some("unsigned")));

    eprintln!("draining: true for gw-1 from a stranger, unsigned:");
    let (status, answer) = post(ipc, &[], &report("gw-1", &gw1_addr.to_string(), true));
    assert_eq!((status, answer["reason"].as_str()), (401, Some("unsigned")));

    eprintln!("draining: true for gw-1 from a stranger, signed with a key of its own:");
    let drain = report("gw-1", &gw1_addr.to_string(), true);
    let (status, answer) = post_signed(ipc, STRANGER_KEY, "gw-1", &drain);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (401, Some("bad_signature"))
    );
    assert_eq!(
        answer["error"],
        "the signature does not verify for this gateway id"
    );

    eprintln!("gw-1's real report, captured on the wire, sent again:");
    let (status, text) = http_raw(ipc, &captured);
    eprintln!("  -> {status} {text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!((status, answer["reason"].as_str()), (401, Some("replayed")));

    eprintln!("the captured report with draining: true put in:");
    let tampered = String::from_utf8(body_of(&captured))
        .unwrap()
        .replace("\"draining\":false", "\"draining\":true")
        .into_bytes();
    assert_ne!(tampered, body_of(&captured), "the body had draining false");
    let headers: Vec<(&str, String)> = [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]
        .iter()
        .map(|&h| (h, header_of(&captured, h).unwrap()))
        .collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(h, v)| (*h, v.as_str())).collect();
    let (status, answer) = post(ipc, &headers, &tampered);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (401, Some("bad_signature"))
    );

    eprintln!("gw-2's key, signing as gw-1 (a new address for gw-1):");
    let hijack = report("gw-1", ATTACKER_ADDR, false);
    let (status, answer) = post_signed(ipc, KEY_2, "gw-1", &hijack);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (401, Some("bad_signature"))
    );

    eprintln!("gw-2's key, signing as gw-2 a body that says gw-1:");
    let (status, answer) = post_signed(ipc, KEY_2, "gw-2", &hijack);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        answer["error"],
        r#"a report signed for gateway "gw-2" cannot speak for gateway "gw-1""#
    );

    // Two more of gw-1's own reports accepted (each wakes a rebuild): the list is what they
    // and nothing else made it.
    let before = accepted(ipc);
    eventually(Duration::from_secs(5), "two more reports from gw-1", || {
        accepted(ipc) >= before + 2.0
    });
    assert_eq!(
        list(ipc),
        real,
        "only the real gw-1, at its own address, live"
    );
    for (reason, count) in [
        ("unsigned", 3.0),
        ("bad_signature", 3.0),
        ("replayed", 1.0),
        ("forbidden", 1.0),
        ("unknown_id", 0.0),
        ("expired", 0.0),
    ] {
        assert_eq!(rejected(ipc, reason), count, "{reason}");
    }
}

#[test]
fn a_public_listener_needs_report_keys() {
    let dir = Scratch::new("public");
    let keys = dir.write("report-keys", &format!("gw-1 {KEY_1}\n"));
    let run = |args: &[&str]| {
        let out = Command::new(binary("tether-ipconfig"))
            .args(args)
            .env_remove("TETHER_IPCONFIG_REPORT_KEYS_FILE")
            .env_remove("TETHER_IPCONFIG_LISTEN")
            .output()
            .expect("run tether-ipconfig");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `check`, and starting for real, refuse it (start exits before binding anything).
    for args in [
        &["check", "--listen", "0.0.0.0:0"][..],
        &["--listen", "0.0.0.0:0"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("listen: 0.0.0.0:0 is not a loopback address: set report_keys_file"),
            "{stderr}"
        );
    }
    let keys = keys.to_str().unwrap();
    let (code, stderr) = run(&["check", "--listen", "0.0.0.0:0", "--report-keys-file", keys]);
    assert_eq!(code, Some(0), "{stderr}");
    // The default is loopback, and needs nothing.
    let (code, stderr) = run(&["check"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The documented rotation: ipconfig takes the new key beside the old (SIGHUP), the gateway
/// switches to it (SIGHUP), ipconfig drops the old one (SIGHUP). No report is refused on
/// the way, and the old key signs nothing afterwards.
#[test]
fn keys_rotate_by_sighup_with_no_report_refused() {
    let dir = Scratch::new("rotate");
    let keys = dir.write("report-keys", &format!("gw-1 {KEY_1}\n"));
    let gw1_key = dir.write("gw-1.key", &format!("{KEY_1}\n"));
    let (ipc_proc, ipc) = ipconfig(&["--report-keys-file", keys.to_str().unwrap()]);
    let sniffer = Sniffer::start();
    let urls = format!("http://{ipc},http://{}", sniffer.addr);
    let (gw1, gw1_addr) = signed_gateway(&urls, "gw-1", &gw1_key);
    eventually(Duration::from_secs(10), "gw-1 listed", || {
        list(ipc) == [("gw-1".to_string(), gw1_addr.to_string())]
    });

    // 1. Both keys at ipconfig. A probe id with only the new key says when it is loaded.
    dir.write(
        "report-keys",
        &format!("gw-1 {KEY_1}\ngw-1 {KEY_1_NEXT}\nprobe {KEY_1_NEXT}\n"),
    );
    ipc_proc.signal(libc::SIGHUP);
    let probe = report("probe", "127.0.0.1:1", true);
    eventually(
        Duration::from_secs(5),
        "ipconfig loaded the new key",
        || post_signed(ipc, KEY_1_NEXT, "probe", &probe).0 == 200,
    );

    // 2. The gateway signs with the new key: seen on the wire.
    dir.write("gw-1.key", &format!("{KEY_1_NEXT}\n"));
    gw1.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(5),
        "gw-1 signs with the new key",
        || {
            let request = sniffer.next();
            let ts: u64 = header_of(&request, TIMESTAMP_HEADER)
                .unwrap()
                .parse()
                .unwrap();
            let signature = header_of(&request, SIGNATURE_HEADER).unwrap();
            verifies(
                KEY_1_NEXT.as_bytes(),
                "gw-1",
                ts,
                &body_of(&request),
                &signature,
            )
        },
    );

    // 3. The old key goes (and the probe id, which says when this file is loaded).
    dir.write("report-keys", &format!("gw-1 {KEY_1_NEXT}\n"));
    ipc_proc.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(5),
        "ipconfig dropped the old key",
        || post_signed(ipc, KEY_1_NEXT, "probe", &probe).0 == 401,
    );
    let before = accepted(ipc);
    eventually(
        Duration::from_secs(5),
        "gw-1's reports still accepted",
        || accepted(ipc) >= before + 2.0,
    );
    assert_eq!(list(ipc), [("gw-1".to_string(), gw1_addr.to_string())]);
    // Not one of gw-1's reports was refused on the way.
    for reason in [
        "bad_signature",
        "replayed",
        "unsigned",
        "expired",
        "forbidden",
    ] {
        assert_eq!(rejected(ipc, reason), 0.0, "{reason}");
    }
    // The old key signs nothing now.
    let old = report("gw-1", ATTACKER_ADDR, false);
    let (status, answer) = post_signed(ipc, KEY_1, "gw-1", &old);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (401, Some("bad_signature"))
    );
}
