//! The demo page's own web server (std only: a thread per connection, one request each):
//! it serves the browser client and its page (push console and room) from `clients/js/`, and
//! stands in for the backend a real app would have — its settings, its account service
//! issuing login tokens, and its server-side use of the push API (whose token a page must
//! never hold).
//! It is not on the gateway's data path: the page's WebSocket goes to the gateways.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | 302 to `/demo/` |
//! | `GET /demo/` | `clients/js/demo/index.html` |
//! | `GET /demo/<file>`, `GET /tether.js` | that file of `clients/js/` (names of letters, digits, `.`, `-`, `_` only) |
//! | `GET /demo/config` | `{"ipconfig": "http://127.0.0.1:6789", "room": "lobby"}`: where the page finds gateways, and the room its echo nodes publish to |
//! | `GET /demo/token?device=ID` | an HS256 JWT for device `ID`, valid for an hour, signed with the demo's JWT key, its `rooms` claim allowing [`ROOMS`] (text) |
//! | `POST /demo/push` `{"device_id","text"}` | forwarded to the state daemon's `POST /v1/push` (`text` as the base64 payload) with the demo's bearer token; answers what the push API answered |
//!
//! Everything else is 404 (405 for a wrong method), as JSON `{"error"}`. [`answer`] decides
//! every answer without sockets; [`PageServer`] is the socket edge.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tether_daemon::secret::Secret;

use crate::http_client::http;

/// Largest request head and body read.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// How long a login token from `/demo/token` is valid.
const TOKEN_LIFETIME_S: u64 = 3600;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The rooms a page's login token lets it join (the `rooms` claim: an entry ending in `*` is
/// a prefix): the echo nodes' room, and any under `demo/`.
pub(crate) const ROOMS: &[&str] = &["lobby", "demo/*"];

/// What the server serves and whom it talks to.
pub(crate) struct Site {
    /// `clients/js/`.
    pub root: PathBuf,
    /// ipconfig's base URL, as the page's browser reaches it.
    pub ipconfig_url: String,
    /// The state daemon's push API.
    pub push_api: SocketAddr,
    /// The push API's bearer token.
    pub push_token: Secret,
    /// The key login tokens are signed with (the state daemon's `jwt_secret`).
    pub jwt_secret: Secret,
    /// The room the echo nodes publish every request to: the page joins it first.
    pub room: String,
}

/// One request, as read from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The request-target: path and query.
    pub target: String,
    pub body: Vec<u8>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// For a redirect.
    pub location: Option<&'static str>,
}

impl Answer {
    fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
            location: None,
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer::json(status, &json!({ "error": message }))
    }

    fn bytes(self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            302 => "Found",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            502 => "Bad Gateway",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some(location) = self.location {
            head.push_str(&format!("Location: {location}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends a push API request body, returning its answer: (status, body).
pub(crate) type Forward<'a> = &'a dyn Fn(&str) -> Result<(u16, String)>;

/// The answer to `request` at Unix time `now_s`, pushes going through `forward`.
pub(crate) fn answer(site: &Site, request: &Request, now_s: u64, forward: Forward<'_>) -> Answer {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let method = request.method.as_str();
    let allowed = if path == "/demo/push" { "POST" } else { "GET" };
    if method != allowed {
        return Answer::error(405, &format!("{path} takes {allowed}"));
    }
    match path {
        "/" => Answer {
            status: 302,
            content_type: "text/plain; charset=utf-8",
            body: b"the push console is at /demo/\n".to_vec(),
            location: Some("/demo/"),
        },
        "/demo/config" => Answer::json(
            200,
            &json!({ "ipconfig": site.ipconfig_url, "room": site.room }),
        ),
        "/demo/token" => token(site, query, now_s),
        "/demo/push" => push(&request.body, forward),
        "/demo/" => file(&site.root.join("demo").join("index.html")),
        "/tether.js" => file(&site.root.join("tether.js")),
        _ => match path.strip_prefix("/demo/") {
            Some(name) if is_plain_name(name) => file(&site.root.join("demo").join(name)),
            _ => Answer::error(404, "no such page"),
        },
    }
}

/// A file name with no directory part and nothing hidden: letters, digits, `.`, `-`, `_`,
/// not starting with a dot.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn file(path: &Path) -> Answer {
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        // Module scripts must be served as JavaScript.
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    match std::fs::read(path) {
        Ok(body) => Answer {
            status: 200,
            content_type,
            body,
            location: None,
        },
        Err(_) => Answer::error(404, "no such page"),
    }
}

/// `/demo/token?device=ID`: what an account service answers a logged-in user.
fn token(site: &Site, query: &str, now_s: u64) -> Answer {
    let device = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "device")
        .and_then(|(_, value)| percent_decode(value));
    let Some(device) = device else {
        return Answer::error(400, "device=ID is required (percent-encoded UTF-8)");
    };
    let ok = (1..=tether_state::token::MAX_SUB_LEN).contains(&device.len())
        && device.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Answer::error(
            400,
            "a device id is 1 to 128 printable ASCII characters, no spaces",
        );
    }
    let claims = json!({ "sub": device, "exp": now_s + TOKEN_LIFETIME_S, "rooms": ROOMS });
    let token = tether_state::token::sign_claims(site.jwt_secret.expose(), &claims);
    Answer {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: token.into_bytes(),
        location: None,
    }
}

/// `POST /demo/push {"device_id","text"}` → the push API's `{"device_id","payload"}`.
fn push(body: &[u8], forward: Forward<'_>) -> Answer {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return Answer::error(400, &format!("not JSON: {e}")),
    };
    let (Some(device), Some(text)) = (request["device_id"].as_str(), request["text"].as_str())
    else {
        return Answer::error(400, "expected {\"device_id\": string, \"text\": string}");
    };
    let upstream = json!({ "device_id": device, "payload": STANDARD.encode(text) }).to_string();
    match forward(&upstream) {
        Ok((status, body)) => Answer {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
            location: None,
        },
        Err(e) => Answer::error(502, &format!("the push API did not answer: {e:#}")),
    }
}

/// `%XX` and `+` decoded; None when that is not UTF-8 or an escape is cut.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The running server; [`PageServer::stop`] (or dropping it) stops it.
pub(crate) struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    /// Listens on `listen` and serves `site` until stopped.
    pub(crate) fn start(listen: SocketAddr, site: Site) -> Result<PageServer> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let site = Arc::new(site);
        let open = Arc::new(AtomicUsize::new(0));
        let thread = thread::Builder::new()
            .name("page-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        open.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    let (site, done) = (site.clone(), open.clone());
                    let spawned =
                        thread::Builder::new()
                            .name("page-request".into())
                            .spawn(move || {
                                serve(&site, stream);
                                done.fetch_sub(1, Ordering::AcqRel);
                            });
                    if spawned.is_err() {
                        open.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })
            .context("cannot start the page server's thread")?;
        Ok(PageServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Reads one request from `stream`, answers it and closes.
fn serve(site: &Site, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let answer = match read_request(&mut stream) {
        Ok(request) => {
            let forward = |body: &str| {
                let bearer = format!(
                    "Bearer {}",
                    String::from_utf8_lossy(site.push_token.expose())
                );
                http(
                    site.push_api,
                    "POST",
                    "/v1/push",
                    &[("Authorization", &bearer)],
                    Some(body),
                )
            };
            let now_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            answer(site, &request, now_s, &forward)
        }
        Err(refusal) => refusal,
    };
    let _ = stream.write_all(&answer.bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// The request on `stream`, or the answer that refuses it.
fn read_request(stream: &mut TcpStream) -> Result<Request, Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Answer::error(400, "request head too large"));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(Answer::error(400, "incomplete request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err(Answer::error(400, "not an HTTP request"));
    };
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>());
    let length = match length {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(Ok(_)) => return Err(Answer::error(413, "request body too large")),
        Some(Err(_)) => return Err(Answer::error(400, "bad Content-Length")),
    };
    let mut body = buf.split_off(head_end + 4);
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(Answer::error(400, "incomplete body")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn site() -> Site {
        Site {
            root: Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js"),
            ipconfig_url: "http://127.0.0.1:6789".into(),
            push_api: SocketAddr::from(([127, 0, 0, 1], 1)),
            push_token: Secret::new(b"push-token".to_vec()),
            jwt_secret: Secret::new(b"jwt-key".to_vec()),
            room: "lobby".into(),
        }
    }

    fn get(target: &str) -> Answer {
        let request = Request {
            method: "GET".into(),
            target: target.into(),
            body: Vec::new(),
        };
        answer(&site(), &request, 1_700_000_000, &|_| {
            unreachable!("no push")
        })
    }

    #[test]
    fn the_page_and_its_scripts_are_served_and_nothing_else() {
        let root = get("/");
        assert_eq!((root.status, root.location), (302, Some("/demo/")));
        let page = get("/demo/");
        assert_eq!(page.status, 200);
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(String::from_utf8_lossy(&page.body).contains("Tether push console"));
        for script in ["/demo/demo.js", "/tether.js"] {
            let a = get(script);
            assert_eq!(a.status, 200, "{script}");
            assert_eq!(a.content_type, "text/javascript; charset=utf-8");
            assert!(String::from_utf8_lossy(&a.body).starts_with("// @ts-check"));
        }
        for hidden in [
            "/demo/../package.json",
            "/demo/..%2Fpackage.json",
            "/demo/.hidden",
            "/demo/missing.js",
            "/test/client.test.mjs",
            "/node_modules/typescript/package.json",
            "/package.json",
        ] {
            assert_eq!(get(hidden).status, 404, "{hidden}");
        }
        let post = Request {
            method: "POST".into(),
            target: "/demo/".into(),
            body: Vec::new(),
        };
        assert_eq!(answer(&site(), &post, 0, &|_| unreachable!()).status, 405);
    }

    #[test]
    fn config_names_ipconfig() {
        let a = get("/demo/config");
        assert_eq!(a.status, 200);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            v,
            json!({"ipconfig": "http://127.0.0.1:6789", "room": "lobby"})
        );
    }

    #[test]
    fn tokens_are_the_state_daemons_hs256_for_the_device_and_its_rooms() {
        let a = get("/demo/token?device=browser%2D1");
        assert_eq!(a.status, 200);
        let token = String::from_utf8(a.body).unwrap();
        let want = tether_state::token::sign_claims(
            b"jwt-key",
            &json!({"sub": "browser-1", "exp": 1_700_003_600, "rooms": ["lobby", "demo/*"]}),
        );
        assert_eq!(token, want);
        // The claims as the daemon reads them: the device, an hour, the page's rooms.
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "browser-1");
        assert_eq!(claims["exp"], 1_700_003_600);
        assert_eq!(claims["rooms"], json!(["lobby", "demo/*"]));
        for bad in [
            "/demo/token",
            "/demo/token?device=",
            "/demo/token?device=a+b",
            "/demo/token?device=%ff",
            "/demo/token?device=%4",
        ] {
            let a = get(bad);
            assert_eq!(a.status, 400, "{bad}");
            assert!(serde_json::from_slice::<Value>(&a.body).unwrap()["error"].is_string());
        }
        let long = format!("/demo/token?device={}", "x".repeat(129));
        assert_eq!(get(&long).status, 400);
    }

    #[test]
    fn pushes_are_forwarded_as_the_push_api_wants_and_its_answer_returned() {
        let sent = RefCell::new(Vec::new());
        let forward = |body: &str| {
            sent.borrow_mut().push(body.to_string());
            Ok((200, r#"{"id":7,"status":"delivered"}"#.to_string()))
        };
        let push = |body: &str| {
            let request = Request {
                method: "POST".into(),
                target: "/demo/push".into(),
                body: body.as_bytes().to_vec(),
            };
            answer(&site(), &request, 0, &forward)
        };
        let a = push(r#"{"device_id":"browser-1","text":"hi there"}"#);
        assert_eq!(
            (a.status, a.body.as_slice()),
            (200, br#"{"id":7,"status":"delivered"}"#.as_slice())
        );
        let upstream: Value = serde_json::from_str(&sent.borrow()[0]).unwrap();
        assert_eq!(
            upstream,
            json!({"device_id": "browser-1", "payload": "aGkgdGhlcmU="})
        );
        for bad in [
            "not json",
            r#"{"device_id":"x"}"#,
            r#"{"device_id":1,"text":"t"}"#,
        ] {
            assert_eq!(push(bad).status, 400, "{bad}");
        }
        assert_eq!(sent.borrow().len(), 1, "nothing bad was forwarded");
        let down = |_: &str| -> Result<(u16, String)> { anyhow::bail!("connection refused") };
        let request = Request {
            method: "POST".into(),
            target: "/demo/push".into(),
            body: br#"{"device_id":"d","text":"t"}"#.to_vec(),
        };
        assert_eq!(answer(&site(), &request, 0, &down).status, 502);
    }

    #[test]
    fn the_server_answers_over_a_socket() {
        let server = PageServer::start("127.0.0.1:0".parse().unwrap(), site()).unwrap();
        let (status, body) = http(server.local_addr(), "GET", "/demo/config", &[], None).unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("127.0.0.1:6789"), "{body}");
        let (status, _) = http(server.local_addr(), "GET", "/nope", &[], None).unwrap();
        assert_eq!(status, 404);
        server.stop();
    }
}
