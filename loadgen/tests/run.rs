//! End-to-end runs against tiny in-test servers (std threads, blocking sockets): a correct
//! echo, one that corrupts a single byte, one that answers OVERLOADED and closes, a port
//! with nothing listening, fake session gateways (LOGIN, RESUME, PING, PUSH, GOAWAY) and a
//! fake `/ip_list`. Both the library (`run`) and the binary are driven.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tether_loadgen::{Config, Mode};
use tether_proto::{encode, Decoder, ErrorCode, Kind};

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Echo,
    /// Echo, but flip one byte of exactly one DATA reply on the whole server.
    CorruptOnce,
    /// Answer the first DATA with ERROR OVERLOADED, then close.
    Overloaded,
}

/// Starts a server on 127.0.0.1:0 that lives until the test process exits.
fn server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
    let addr = listener.local_addr().expect("local addr");
    let corrupted = Arc::new(AtomicBool::new(false));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let corrupted = Arc::clone(&corrupted);
            thread::spawn(move || serve(stream, behaviour, &corrupted));
        }
    });
    addr
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, corrupted: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let decoder = Decoder::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut close = false;
        let drained = tether_proto::drain_frames(&decoder, &mut buf, |frame| {
            match (frame.kind, behaviour) {
                (Kind::Data, Behaviour::Overloaded) => {
                    encode::error(&mut out, frame.id, ErrorCode::Overloaded, "queue full");
                    close = true;
                    return false;
                }
                (Kind::Data, _) => {
                    let start = out.len();
                    encode::frame(&mut out, Kind::Data, frame.id, frame.body);
                    if behaviour == Behaviour::CorruptOnce
                        && !frame.body.is_empty()
                        && !corrupted.swap(true, Ordering::Relaxed)
                    {
                        let last = out.len() - 1;
                        out[last] ^= 0x20;
                        assert!(last > start);
                    }
                }
                (Kind::Ping, _) => encode::frame(&mut out, Kind::Pong, frame.id, &[]),
                _ => {}
            }
            true
        });
        if drained.is_err() {
            return;
        }
        if stream.write_all(&out).is_err() {
            return;
        }
        out.clear();
        if close {
            return;
        }
    }
}

fn json_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "tether-loadgen-{}-{}-{name}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs the binary and returns its output and the JSON summary it wrote (if any).
fn loadgen(args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let path = json_path("run");
    let output = Command::new(env!("CARGO_BIN_EXE_tether-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&path)
        .arg("--quiet")
        .env("RUST_LOG", "warn")
        .output()
        .expect("spawn tether-loadgen");
    let json = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let _ = std::fs::remove_file(&path);
    (output, json)
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn closed_loop_against_an_echo_server_passes() {
    let addr = server(Behaviour::Echo).to_string();
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--conns",
        "50",
        "--duration",
        "1",
        "--pipeline",
        "4",
        "--threads",
        "2",
        "--payload",
        "100",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let json = json.expect("JSON summary written");
    assert_eq!(json["mode"], "pipeline");
    assert_eq!(json["pipeline"], 4);
    assert_eq!(json["conns"]["established"], 50);
    assert_eq!(json["conns"]["failed"], 0);
    assert_eq!(json["conns"]["dropped"], 0);
    assert_eq!(json["verify_failures"], 0);
    let received = json["frames"]["received"].as_u64().unwrap();
    assert!(received > 1000, "{json}");
    assert_eq!(json["frames"]["sent"].as_u64(), Some(received), "{json}");
    assert!(json["throughput_per_s"].as_f64().unwrap() > 1000.0);
    assert!(json["latency_us"]["p50"].as_u64().unwrap() >= 1);
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("PASS"), "{stdout}");
}

#[test]
fn open_loop_offers_the_scheduled_load() {
    let addr = server(Behaviour::Echo);
    let mut config = Config::new(vec![addr]);
    config.conns = 20;
    config.mode = Mode::Rate(200.0);
    config.duration = Duration::from_millis(1000);
    config.warmup = Duration::from_millis(200);
    config.threads = 2;
    config.quiet = true;
    let summary = tether_loadgen::run(config).expect("run");
    // 20 conns × 200/s × 0.8 s measured = 3200 frames on the timetable.
    let sent = summary.frames.sent;
    assert!((3150..=3250).contains(&sent), "sent {sent}: {summary:#?}");
    assert_eq!(summary.frames.received, sent, "{summary:#?}");
    assert_eq!(summary.verify_failures, 0);
    assert_eq!(summary.mode, "rate");
    assert_eq!(summary.rate, Some(200.0));
    assert!(summary.passed(), "{summary}");
    // Replies inside the 0.8 s window: about the offered 4000/s, give or take scheduling.
    assert!(
        (summary.throughput_per_s - 4000.0).abs() < 400.0,
        "{summary}"
    );
}

#[test]
fn a_corrupted_byte_fails_the_run() {
    let addr = server(Behaviour::CorruptOnce).to_string();
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--conns",
        "50",
        "--duration",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let json = json.expect("JSON summary written");
    assert_eq!(json["verify_failures"], 1, "{json}");
    assert_eq!(json["conns"]["established"], 50);
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL"));
}

#[test]
fn overloaded_errors_are_counted_by_name() {
    let addr = server(Behaviour::Overloaded).to_string();
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--conns",
        "5",
        "--duration",
        "0.3",
        "--threads",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let json = json.expect("JSON summary written");
    // A closing ERROR is the drop's cause, counted once: not also as the EOF or reset
    // that follows it. The request it answered is not "unanswered".
    assert_eq!(json["errors"]["OVERLOADED"], 5, "{json}");
    for after in ["eof", "reset", "unanswered"] {
        assert!(json["errors"].get(after).is_none(), "{json}");
    }
    assert_eq!(json["conns"]["dropped"], 5);
    assert_eq!(json["verify_failures"], 0);
}

#[test]
fn nothing_listening_counts_failed_connections() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--conns",
        "3",
        "--duration",
        "0.2",
        "--connect-rate",
        "100",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let json = json.expect("JSON summary written");
    assert_eq!(json["conns"]["failed"], 3);
    assert_eq!(json["conns"]["established"], 0);
    assert_eq!(json["errors"]["connect_refused"], 3, "{json}");
    assert!(json["latency_us"]["p50"].is_null());
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--target", "127.0.0.1:1", "--conns", "0"][..],
        &[
            "--target",
            "127.0.0.1:1",
            "--payload",
            "100",
            "--max-body",
            "10",
        ][..],
        &["--target", "127.0.0.1:1", "--rate", "0"][..],
        &["--target", "127.0.0.1:1", "--rate", "5", "--pipeline", "2"][..],
        &["--target", "127.0.0.1:1", "--pipeline", "0"][..],
        &["--target", "not an address"][..],
        &["--conns", "5"][..],
        &[
            "--target",
            "127.0.0.1:1",
            "--ipconfig",
            "http://127.0.0.1:2",
        ][..],
        &["--ipconfig", "https://127.0.0.1:2"][..],
        &["--target", "127.0.0.1:1", "--push-rate", "0"][..],
        &["--target", "127.0.0.1:1", "--heartbeat", "0"][..],
        &[
            "--target",
            "127.0.0.1:1",
            "--jwt-secret-file",
            "/nonexistent/key",
        ][..],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tether-loadgen"))
            .args(args)
            .output()
            .expect("spawn tether-loadgen");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(!output.stderr.is_empty());
    }
}

/// How a fake session gateway behaves.
#[derive(Clone, Copy, Default)]
struct Gateway {
    /// Send GOAWAY this long after accepting each connection (and keep serving it).
    goaway_after: Option<Duration>,
    /// Answer the first LOGIN of each connection with ERROR UNAVAILABLE (connection stays).
    unavailable_first: bool,
    /// Answer LOGIN with ERROR AUTH_FAILED and close.
    refuse: bool,
}

/// A fake gateway with sessions: LOGIN gets session `s<n>` and resume token `s<n>.r`,
/// RESUME gets back the session its token names; PING→PONG; DATA echoed. Right after a
/// LOGIN it pushes message 1 twice (a redelivery), stamped with the current time.
fn gateway(behaviour: Gateway) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake gateway");
    let addr = listener.local_addr().expect("local addr");
    let sessions = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sessions = Arc::clone(&sessions);
            thread::spawn(move || serve_sessions(stream, behaviour, &sessions));
        }
    });
    addr
}

fn serve_sessions(mut stream: TcpStream, behaviour: Gateway, sessions: &AtomicUsize) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let accepted = std::time::Instant::now();
    let decoder = Decoder::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut said_goaway = false;
    let mut logins = 0;
    loop {
        if let Some(after) = behaviour.goaway_after {
            if !said_goaway && accepted.elapsed() >= after {
                said_goaway = true;
                encode::frame(&mut out, Kind::GoAway, 0, br#"{"reason":"test"}"#);
            }
        }
        let mut close = false;
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        let drained = tether_proto::drain_frames(&decoder, &mut buf, |frame| {
            match frame.kind {
                Kind::Login if behaviour.refuse => {
                    encode::error(&mut out, frame.id, ErrorCode::AuthFailed, "bad token");
                    close = true;
                    return false;
                }
                Kind::Login if behaviour.unavailable_first && logins == 0 => {
                    logins += 1;
                    encode::error(&mut out, frame.id, ErrorCode::Unavailable, "retry");
                }
                Kind::Login => {
                    logins += 1;
                    let n = sessions.fetch_add(1, Ordering::Relaxed);
                    let body =
                        format!(r#"{{"session":"s{n}","resume_token":"s{n}.r","heartbeat_s":1}}"#);
                    encode::frame(&mut out, Kind::LoginOk, frame.id, body.as_bytes());
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros() as u64;
                    let mut payload = now_us.to_be_bytes().to_vec();
                    payload.extend_from_slice(b"push");
                    encode::frame(&mut out, Kind::Push, 1, &payload);
                    encode::frame(&mut out, Kind::Push, 1, &payload);
                }
                Kind::Resume => {
                    let token = String::from_utf8_lossy(frame.body).to_string();
                    let session = token.split('.').next().unwrap_or_default().to_string();
                    let body = format!(
                        r#"{{"session":"{session}","resume_token":"{token}","heartbeat_s":1}}"#
                    );
                    encode::frame(&mut out, Kind::LoginOk, frame.id, body.as_bytes());
                }
                Kind::Data => encode::frame(&mut out, Kind::Data, frame.id, frame.body),
                Kind::Ping => encode::frame(&mut out, Kind::Pong, frame.id, &[]),
                _ => {}
            }
            true
        });
        if drained.is_err() {
            return;
        }
        if stream.write_all(&out).is_err() {
            return;
        }
        out.clear();
        if close {
            return;
        }
    }
}

/// A fake ipconfig answering every `GET /ip_list` with `status` and `body`.
fn ipconfig(status: &'static str, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake ipconfig");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                assert!(head.starts_with(b"GET /ip_list HTTP/1.1\r\n"));
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn sessions_heartbeats_pushes_and_goaway_with_resume() {
    let leaving = gateway(Gateway {
        goaway_after: Some(Duration::from_millis(400)),
        ..Gateway::default()
    });
    let staying = gateway(Gateway::default());
    let targets = format!("{leaving},{staying}");
    let (output, json) = loadgen(&[
        "--target",
        &targets,
        "--jwt-secret",
        "k",
        "--conns",
        "10",
        "--duration",
        "1.5",
        "--threads",
        "2",
        "--heartbeat",
        "0.2",
        "--rate",
        "50",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let s = json.expect("JSON summary written");
    assert_eq!(s["login"], "jwt", "{s}");
    assert_eq!(s["conns"]["logged_in"], 10, "{s}");
    assert_eq!(s["logins"]["ok"], 10, "{s}");
    // The five that started on the gateway going away came back to the other one.
    assert_eq!(s["reconnects"]["goaways"], 5, "{s}");
    assert_eq!(s["reconnects"]["ok"], 5, "{s}");
    assert_eq!(s["resumes"]["ok"], 5, "{s}");
    assert_eq!(s["resumes"]["new_session"], 0, "{s}");
    assert_eq!(s["conns"]["dropped"], 0, "{s}");
    // Every login got message 1 twice: once new, once a redelivery; both ACKed.
    let push = &s["push"];
    assert_eq!(
        (push["received"].as_u64(), push["unique"].as_u64()),
        (Some(20), Some(10)),
        "{s}"
    );
    assert_eq!(
        (push["duplicates"].as_u64(), push["acked"].as_u64()),
        (Some(10), Some(20)),
        "{s}"
    );
    assert!(
        push["latency_us"]["p50"].is_null(),
        "pushed before the load started: {s}"
    );
    // Heartbeats every 0.2 s for ~1.5 s, answered.
    let pings = s["heartbeats"]["sent"].as_u64().unwrap();
    assert!(pings >= 40, "{s}");
    assert!(
        s["heartbeats"]["pongs"].as_u64().unwrap() + 10 >= pings,
        "{s}"
    );
    assert_eq!(s["errors"], serde_json::json!({}), "{s}");
}

#[test]
fn a_login_answered_unavailable_is_retried() {
    let addr = gateway(Gateway {
        unavailable_first: true,
        ..Gateway::default()
    })
    .to_string();
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--login",
        "--conns",
        "4",
        "--duration",
        "0.3",
        "--threads",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let s = json.expect("JSON summary written");
    assert_eq!(s["login"], "anonymous");
    assert_eq!(s["errors"]["UNAVAILABLE"], 4, "{s}");
    assert_eq!(
        (s["conns"]["logged_in"].as_u64(), s["logins"]["ok"].as_u64()),
        (Some(4), Some(4))
    );
}

#[test]
fn a_refused_login_fails_the_connection_by_its_code() {
    let addr = gateway(Gateway {
        refuse: true,
        ..Gateway::default()
    })
    .to_string();
    let (output, json) = loadgen(&[
        "--target",
        &addr,
        "--jwt-secret",
        "k",
        "--conns",
        "3",
        "--duration",
        "0.2",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let s = json.expect("JSON summary written");
    assert_eq!(s["conns"]["established"], 3, "{s}");
    assert_eq!(s["conns"]["logged_in"], 0, "{s}");
    assert_eq!(s["conns"]["failed"], 3, "{s}");
    assert_eq!(s["logins"]["failed"], 3, "{s}");
    assert_eq!(s["errors"], serde_json::json!({"AUTH_FAILED": 3}), "{s}");
}

#[test]
fn ip_list_gateways_are_tried_in_order_past_a_dead_one() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let live = server(Behaviour::Echo);
    let url = ipconfig(
        "200 OK",
        format!(
            r#"{{"gateways":[{{"id":"dead","addr":"{dead}","score":{{}}}},{{"id":"live","addr":"{live}"}}],"generated_at_ms":1}}"#
        ),
    );
    let (output, json) = loadgen(&["--ipconfig", &url, "--conns", "5", "--duration", "0.3"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let s = json.expect("JSON summary written");
    assert_eq!(s["conns"]["established"], 5, "{s}");
    // Each connection's first try failed and was counted; the fallback carried it.
    assert_eq!(
        s["errors"],
        serde_json::json!({"connect_refused": 5}),
        "{s}"
    );
    assert!(s["frames"]["received"].as_u64().unwrap() > 0);
}

#[test]
fn an_ip_list_without_gateways_fails_connections_by_cause() {
    let url = ipconfig(
        "503 Service Unavailable",
        r#"{"error":"no gateway is available","generated_at_ms":1}"#.to_string(),
    );
    let (output, json) = loadgen(&["--ipconfig", &url, "--conns", "3", "--duration", "0.2"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let s = json.expect("JSON summary written");
    assert_eq!(s["conns"]["failed"], 3, "{s}");
    assert_eq!(
        s["errors"],
        serde_json::json!({"ip_list_unavailable": 3}),
        "{s}"
    );
}
