//! An independent check of the WebSocket codec: this crate's server handshake and framing,
//! over a real loopback `TcpStream`, against Python's `websockets` library as the client.
//!
//! Skipped, with a notice, when `python3` or its `websockets` package (`pip install
//! websockets`) is not there.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tether_proto::ws::{self, encode, Assembler, Config, Event, Handshake, ServerHandshake};
use tether_proto::{encode as v1, Decoder, Kind};

/// The client. Each mode exits 0 and prints `ok` when every check passed.
const CLIENT: &str = r#"
import struct, sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

port, mode = int(sys.argv[1]), sys.argv[2]
uri = f"ws://127.0.0.1:{port}/ws"
common = dict(proxy=None, open_timeout=10, close_timeout=10, ping_interval=None)

def v1(kind, id, body=b""):
    return struct.pack(">IBBQ", 10 + len(body), kind, 0, id) + body

if mode == "echo":
    with connect(uri, subprotocols=["tether.v1"], **common) as ws:
        assert ws.subprotocol == "tether.v1", ws.subprotocol
        one = v1(5, 1, b"hello")
        ws.send(one)
        assert ws.recv(timeout=10) == one
        two = v1(5, 2, b"a") + v1(3, 3)
        ws.send(two)
        assert ws.recv(timeout=10) == two
        ws.send([two[:5], two[5:9], two[9:]])  # one message in three fragments
        assert ws.recv(timeout=10) == two
        big = v1(5, 4, bytes(range(256)) * 256)  # a 64 KiB body: 64-bit length
        ws.send(big)
        assert ws.recv(timeout=10) == big
        assert ws.ping(b"tether").wait(10), "no pong"
        ws.close(1000, "done")
    assert ws.close_code == 1000, ws.close_code
elif mode == "text":
    with connect(uri, subprotocols=["tether.v1"], **common) as ws:
        ws.send("text is not for Tether")
        try:
            ws.recv(timeout=10)
            raise AssertionError("no close")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1003, e
elif mode == "no-protocol":
    try:
        connect(uri, **common)
        raise AssertionError("accepted")
    except InvalidStatus as e:
        assert e.response.status_code == 400, e
elif mode == "bad-origin":
    try:
        connect(uri, subprotocols=["tether.v1"], origin="https://evil.example", **common)
        raise AssertionError("accepted")
    except InvalidStatus as e:
        assert e.response.status_code == 403, e
print("ok")
"#;

fn python_has_websockets() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets.sync.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Serves one connection: the handshake, then every binary message echoed (after checking
/// it holds whole v1 frames), pings answered, the closing handshake. Returns what happened.
fn serve_one(listener: TcpListener) -> Vec<String> {
    let mut log = Vec::new();
    let (mut stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let handshake = ServerHandshake::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut data = loop {
        let n = stream.read(&mut buf).expect("read head");
        if n == 0 {
            log.push("eof in handshake".to_string());
            return log;
        }
        head.extend_from_slice(&buf[..n]);
        match handshake.read(&head) {
            Handshake::Incomplete => continue,
            Handshake::Accepted(accepted) => {
                stream.write_all(&accepted.response()).expect("write 101");
                break head[accepted.head_len..].to_vec();
            }
            Handshake::Refused(refusal) => {
                stream
                    .write_all(&refusal.response())
                    .expect("write refusal");
                log.push(format!("refused {}", refusal.status.code()));
                finish(stream);
                return log;
            }
        }
    };
    let config = Config::server();
    let decoder = Decoder::default();
    let mut state = Assembler::new();
    let mut partial = Vec::new();
    loop {
        let mut out = Vec::new();
        let mut peer_close = None;
        let result = ws::feed(&config, &mut state, &mut partial, &mut data, |event| {
            match event {
                Event::Binary(message) => {
                    let mut frames = 0;
                    ws::v1_frames(&decoder, message, |_| {
                        frames += 1;
                        true
                    })
                    .expect("whole v1 frames");
                    log.push(format!("binary {} bytes, {frames} frames", message.len()));
                    encode::binary(&mut out, message, None);
                }
                Event::Ping(payload) => {
                    log.push(format!("ping {}", String::from_utf8_lossy(payload)));
                    encode::pong(&mut out, payload, None);
                }
                Event::Pong(_) => log.push("pong".into()),
                Event::Text(_) => log.push("text".into()),
                Event::Close(close) => {
                    log.push(format!(
                        "close {:?} {}",
                        close.code.map(|c| c.0),
                        close.reason
                    ));
                    peer_close = Some(close.code);
                }
            }
            true
        });
        if let Err(e) = &result {
            log.push(format!("error {}", e.close_code().0));
            state.close(&mut out, Some(e.close_code()), &e.to_string(), None);
        }
        if let Some(code) = peer_close {
            state.close(&mut out, code, "", None);
        }
        stream.write_all(&out).expect("write");
        if result.is_err() || state.close_received() {
            break;
        }
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            log.push("eof".into());
            break;
        }
        data = buf[..n].to_vec();
    }
    finish(stream);
    log
}

/// The server closes the TCP connection first (RFC 6455 §7.1.1), then reads until the
/// client's end closes too, so no unread byte turns the close into a reset.
fn finish(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// Runs the Python client in `mode` against one served connection.
fn run(mode: &str) -> Vec<String> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || serve_one(listener));
    let mut child = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("python client in mode {mode} timed out");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.success() && stdout.trim() == "ok",
        "mode {mode}: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    server.join().expect("server thread")
}

#[test]
fn python_websockets_client_against_our_server() {
    if !python_has_websockets() {
        println!("skipped: python3 with the `websockets` package is not available");
        return;
    }
    let body = 64 * 1024;
    assert_eq!(
        run("echo"),
        vec![
            "binary 19 bytes, 1 frames".to_string(),
            "binary 29 bytes, 2 frames".into(),
            "binary 29 bytes, 2 frames".into(),
            format!("binary {} bytes, 1 frames", 14 + body),
            "ping tether".into(),
            "close Some(1000) done".into(),
        ]
    );
    assert_eq!(run("text"), vec!["error 1003".to_string()]);
    assert_eq!(run("no-protocol"), vec!["refused 400".to_string()]);
    assert_eq!(run("bad-origin"), vec!["refused 403".to_string()]);
}

#[test]
fn v1_frames_in_a_message_round_trip_through_our_encoders() {
    // The gateway's send path without a socket: a binary header, then v1 frames after it.
    let mut v1_bytes = Vec::new();
    v1::frame(&mut v1_bytes, Kind::Data, 9, b"reply");
    v1::frame(&mut v1_bytes, Kind::Pong, 10, b"");
    let mut out = Vec::new();
    encode::binary_header(&mut out, v1_bytes.len(), None);
    out.extend_from_slice(&v1_bytes);
    let mut state = Assembler::new();
    let mut ids = Vec::new();
    ws::feed(
        &Config::client(),
        &mut state,
        &mut Vec::new(),
        &mut out,
        |event| {
            if let Event::Binary(message) = event {
                ws::v1_frames(&Decoder::default(), message, |f| {
                    ids.push(f.id);
                    true
                })
                .expect("v1 frames");
            }
            true
        },
    )
    .expect("feed");
    assert_eq!(ids, vec![9, 10]);
}
