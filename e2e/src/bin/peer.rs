//! `tether-e2e-peer SOCKET GATEWAY_ID`: a stand-in for a process on the state socket, for the
//! security tests, which run it as another uid. It connects to `SOCKET`, sends HELLO with
//! `GATEWAY_ID`, and prints what came back as one line of JSON:
//! `{"connected":false,"error":"…"}` when it could not connect, else `{"connected":true,
//! "kind":"HELLO_OK"}`, `{"connected":true,"kind":"STATE_ERROR","code":5,"reason":"…"}`, or
//! `{"connected":true,"kind":null}` when the daemon closed the link without a frame.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tether_proto::{encode, Decoder, ErrorBody, Kind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, gateway] = &args[..] else {
        eprintln!("usage: tether-e2e-peer SOCKET GATEWAY_ID");
        return ExitCode::from(2);
    };
    let answer = match UnixStream::connect(socket) {
        Err(e) => json!({ "connected": false, "error": e.to_string() }),
        Ok(stream) => hello(stream, gateway),
    };
    println!("{answer}");
    ExitCode::SUCCESS
}

/// HELLO, then the first frame back (or none: closed, or nothing within 5 s).
fn hello(mut stream: UnixStream, gateway: &str) -> serde_json::Value {
    let mut out = Vec::new();
    encode::frame(&mut out, Kind::Hello, 0, gateway.as_bytes());
    // The daemon may have refused and closed before reading: a failed write is not an answer.
    let _ = stream.write_all(&out);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let decoder = Decoder::new(1 << 20);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((frame, _))) = decoder.decode(&buf) {
            let mut answer = json!({ "connected": true, "kind": frame.kind.name() });
            if frame.kind == Kind::StateError {
                if let Ok(body) = ErrorBody::parse(frame.body) {
                    answer["code"] = body.code.into();
                    answer["reason"] = body.reason.into();
                }
            }
            return answer;
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return json!({ "connected": true, "kind": null }),
        }
    }
}
