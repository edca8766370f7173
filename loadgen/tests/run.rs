//! End-to-end runs against tiny in-test servers (std threads, blocking sockets): a correct
//! echo, one that corrupts a single byte, one that answers OVERLOADED and closes, and a
//! port with nothing listening. Both the library (`run`) and the binary are driven.

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
    assert_eq!(json["errors"]["OVERLOADED"], 5, "{json}");
    // The server closes after its ERROR; whether our next DATA races its FIN decides
    // between a clean end and a reset.
    let closed =
        json["errors"]["eof"].as_u64().unwrap_or(0) + json["errors"]["reset"].as_u64().unwrap_or(0);
    assert_eq!(closed, 5, "{json}");
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
