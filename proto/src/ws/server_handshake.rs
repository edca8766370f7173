//! The server side of the opening handshake (RFC 6455 §4.2): the bytes received so far in,
//! "incomplete", "accepted" (with the exact `101 Switching Protocols` response) or "refused"
//! (with an HTTP error response) out.
//!
//! It is stateless: the caller keeps the bytes that have arrived (in a pooled buffer, while
//! the handshake is pending) and calls [`ServerHandshake::read`] again after each read. The
//! head's size cap is checked on every call, so a client that never ends its head is refused
//! with 431 as soon as it has sent [`ServerHandshake::max_head`] bytes.

use std::io::Write;

use httparse::{Header, Request, EMPTY_HEADER};

use super::accept_key::{accept_key, is_valid_key, ACCEPT_LEN};
use super::http_head::{has_token, list_items, single};
use super::refusal::{Refusal, Status};

/// The subprotocol of Tether v1 frames in binary messages.
pub(super) const SUBPROTOCOL: &str = "tether.v1";
/// The default cap on an upgrade request's head (request line and fields).
pub(super) const DEFAULT_MAX_HEAD: usize = 8192;
/// The most header fields a head may have; more is refused with 431.
pub(super) const MAX_FIELDS: usize = 64;

/// What a server accepts. Built once (from the daemon's config) and shared by every
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHandshake {
    /// Request paths that upgrade (the request-target before any `?`); others get 404.
    pub paths: Vec<String>,
    /// Origins a browser may connect from, compared whole and case-insensitively (for
    /// example `https://app.example.com`); `*` allows any. Others get 403.
    pub origins: Vec<String>,
    /// Whether a request without `Origin` (a client that is not a browser) is allowed.
    pub allow_no_origin: bool,
    /// The subprotocol selected when the client offers it.
    pub protocol: String,
    /// Whether a client that does not offer `protocol` is refused (400) rather than
    /// accepted with no subprotocol.
    pub require_protocol: bool,
    /// The largest request head; a bigger one is refused with 431.
    pub max_head: usize,
}

impl Default for ServerHandshake {
    /// Paths `/` and `/ws`, no browser origin, clients without `Origin` allowed, `tether.v1`
    /// required, an 8 KiB head.
    fn default() -> Self {
        ServerHandshake {
            paths: vec!["/".into(), "/ws".into()],
            origins: Vec::new(),
            allow_no_origin: true,
            protocol: SUBPROTOCOL.into(),
            require_protocol: true,
            max_head: DEFAULT_MAX_HEAD,
        }
    }
}

/// Whether a browser's `Origin` (the header's bytes) is on the allow-list `origins`: an
/// entry equal to it, compared whole and case-insensitively, or `*`. The gateway's
/// WebSocket upgrades and ipconfig's CORS answers judge origins with this one rule.
pub fn origin_allowed(origins: &[String], origin: &[u8]) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin))
}

/// Where a handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake<'a> {
    /// The head has not ended yet: read more and call again with every byte so far.
    Incomplete,
    Accepted(Accepted<'a>),
    /// Send [`Refusal::write_response`], then close the socket.
    Refused(Refusal),
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// Bytes of the input the head used; any bytes after them are the client's first
    /// WebSocket bytes.
    pub head_len: usize,
    accept: [u8; ACCEPT_LEN],
    /// The subprotocol selected, `None` when the client offered none that the server speaks
    /// (only when it is not required).
    pub protocol: Option<&'a str>,
}

impl Accepted<'_> {
    /// Appends the `101 Switching Protocols` response.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        out.extend_from_slice(&self.accept);
        out.extend_from_slice(b"\r\n");
        if let Some(protocol) = self.protocol {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "Sec-WebSocket-Protocol: {protocol}\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The response as a new buffer.
    pub fn response(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_response(&mut out);
        out
    }
}

impl ServerHandshake {
    /// Reads the upgrade request at the front of `input` (every byte received so far).
    pub fn read(&self, input: &[u8]) -> Handshake<'_> {
        let window = &input[..input.len().min(self.max_head)];
        let mut fields = [EMPTY_HEADER; MAX_FIELDS];
        let mut request = Request::new(&mut fields);
        let head_len = match request.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() >= self.max_head => {
                return refuse(Status::HeaderFieldsTooLarge, "request head too large");
            }
            Ok(httparse::Status::Partial) => return Handshake::Incomplete,
            Err(httparse::Error::TooManyHeaders) => {
                return refuse(Status::HeaderFieldsTooLarge, "too many header fields");
            }
            Err(_) => return refuse(Status::BadRequest, "malformed HTTP request"),
        };
        match self.check(&request) {
            Ok(accepted) => Handshake::Accepted(Accepted {
                head_len,
                ..accepted
            }),
            Err(refusal) => Handshake::Refused(refusal),
        }
    }

    /// Checks a whole request head, in the order a client most needs to hear about.
    fn check(&self, request: &Request<'_, '_>) -> Result<Accepted<'_>, Refusal> {
        let fields: &[Header<'_>] = request.headers;
        if request.method != Some("GET") {
            return Err(Refusal::new(Status::MethodNotAllowed, "only GET upgrades"));
        }
        if request.version != Some(1) {
            return Err(Refusal::new(Status::BadRequest, "HTTP/1.1 required"));
        }
        let target = request.path.unwrap_or("");
        let path = target.split('?').next().unwrap_or(target);
        if !self.paths.iter().any(|p| p == path) {
            return Err(Refusal::new(Status::NotFound, "no WebSocket at this path"));
        }
        match single(fields, "host") {
            Ok(Some(host)) if !host.is_empty() => {}
            _ => return Err(Refusal::new(Status::BadRequest, "one Host field required")),
        }
        if !has_token(fields, "upgrade", "websocket") {
            return Err(Refusal::new(
                Status::UpgradeRequired,
                "WebSocket upgrade required",
            ));
        }
        if !has_token(fields, "connection", "upgrade") {
            return Err(Refusal::new(
                Status::BadRequest,
                "Connection must include upgrade",
            ));
        }
        if single(fields, "sec-websocket-version") != Ok(Some(b"13")) {
            return Err(Refusal::new(
                Status::UpgradeRequired,
                "WebSocket version 13 required",
            ));
        }
        let key = match single(fields, "sec-websocket-key") {
            Ok(Some(key)) if is_valid_key(key) => key,
            _ => {
                return Err(Refusal::new(
                    Status::BadRequest,
                    "Sec-WebSocket-Key must be base64 of 16 bytes",
                ))
            }
        };
        self.check_origin(fields)?;
        let offered =
            list_items(fields, "sec-websocket-protocol").any(|p| p == self.protocol.as_bytes());
        if !offered && self.require_protocol {
            return Err(Refusal::new(
                Status::BadRequest,
                "required subprotocol not offered",
            ));
        }
        Ok(Accepted {
            head_len: 0,
            accept: accept_key(key),
            protocol: offered.then_some(self.protocol.as_str()),
        })
    }

    fn check_origin(&self, fields: &[Header<'_>]) -> Result<(), Refusal> {
        match single(fields, "origin") {
            Ok(None) if self.allow_no_origin => Ok(()),
            Ok(None) => Err(Refusal::new(Status::Forbidden, "Origin required")),
            Ok(Some(origin)) => {
                if origin_allowed(&self.origins, origin) {
                    Ok(())
                } else {
                    Err(Refusal::new(Status::Forbidden, "Origin not allowed"))
                }
            }
            Err(_) => Err(Refusal::new(Status::BadRequest, "Origin repeated")),
        }
    }
}

fn refuse(status: Status, reason: &'static str) -> Handshake<'static> {
    Handshake::Refused(Refusal::new(status, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.2's example request, with Tether's subprotocol.
    fn request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: chat, tether.v1\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn refused(server: &ServerHandshake, input: &str) -> (u16, &'static str) {
        match server.read(input.as_bytes()) {
            Handshake::Refused(r) => (r.status.code(), r.reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn accepts_the_rfc_example_with_the_exact_response() {
        let server = ServerHandshake::default();
        let mut input = request("").into_bytes();
        let head = input.len();
        input.extend_from_slice(&[0x82, 0x80]); // the first frame's bytes follow the head
        let Handshake::Accepted(accepted) = server.read(&input) else {
            panic!("refused");
        };
        assert_eq!(accepted.head_len, head);
        assert_eq!(accepted.protocol, Some("tether.v1"));
        assert_eq!(
            String::from_utf8(accepted.response()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: tether.v1\r\n\r\n"
        );
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let server = ServerHandshake::default();
        let input = request("");
        for cut in 0..input.len() {
            assert_eq!(
                server.read(&input.as_bytes()[..cut]),
                Handshake::Incomplete,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn tokens_are_case_insensitive_and_lists_are_read() {
        let server = ServerHandshake::default();
        let input = request("")
            .replace("Upgrade: websocket", "UPGRADE: WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE");
        assert!(matches!(
            server.read(input.as_bytes()),
            Handshake::Accepted(_)
        ));
    }

    #[test]
    fn each_check_refuses_with_its_status() {
        let server = ServerHandshake::default();
        let ok = request("");
        // (what to replace in the good request, with what, the status).
        let cases = [
            ("GET", "POST", 405),
            ("HTTP/1.1", "HTTP/1.0", 400),
            ("/ws", "/other", 404),
            ("Host: server.example.com\r\n", "", 400),
            ("Host: server.example.com", "Host: a\r\nHost: b", 400),
            ("Upgrade: websocket\r\n", "", 426),
            ("Connection: Upgrade", "Connection: keep-alive", 400),
            ("Version: 13", "Version: 8", 426),
            ("Sec-WebSocket-Version: 13\r\n", "", 426),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 400),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 400),
            ("chat, tether.v1", "chat", 400),
            ("Sec-WebSocket-Protocol: chat, tether.v1\r\n", "", 400),
            ("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n", 403),
            ("Host: server.example.com", "Host", 400),
        ];
        for (from, to, status) in cases {
            let input = ok.replacen(from, to, 1);
            assert_eq!(refused(&server, &input).0, status, "{input}");
        }
        let tls = "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03";
        assert_eq!(refused(&server, tls).0, 400);
        let upgrade = Refusal::new(Status::UpgradeRequired, "").response();
        assert!(String::from_utf8_lossy(&upgrade).contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn origins_follow_the_policy() {
        let mut server = ServerHandshake {
            origins: vec!["https://app.example".into()],
            ..ServerHandshake::default()
        };
        let from = |origin: &str| request(&format!("Origin: {origin}\r\n"));
        assert!(matches!(
            server.read(from("HTTPS://APP.example").as_bytes()),
            Handshake::Accepted(_)
        ));
        assert_eq!(refused(&server, &from("https://app.example.evil")).0, 403);
        server.allow_no_origin = false;
        assert_eq!(refused(&server, &request("")), (403, "Origin required"));
        server.origins = vec!["*".into()];
        assert!(matches!(
            server.read(from("null").as_bytes()),
            Handshake::Accepted(_)
        ));
    }

    #[test]
    fn the_protocol_may_be_optional() {
        let server = ServerHandshake {
            require_protocol: false,
            ..ServerHandshake::default()
        };
        let input = request("").replace("chat, tether.v1", "chat");
        let Handshake::Accepted(accepted) = server.read(input.as_bytes()) else {
            panic!("refused");
        };
        assert_eq!(accepted.protocol, None);
        assert!(!String::from_utf8(accepted.response())
            .unwrap()
            .contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn the_head_cap_is_decided_as_bytes_arrive() {
        let server = ServerHandshake {
            max_head: 256,
            ..ServerHandshake::default()
        };
        // A head that never ends: incomplete below the cap, refused at it.
        let mut endless = b"GET /ws HTTP/1.1\r\nX-Padding: ".to_vec();
        endless.resize(255, b'a');
        assert_eq!(server.read(&endless), Handshake::Incomplete);
        endless.push(b'a');
        assert_eq!(
            server.read(&endless),
            Handshake::Refused(Refusal::new(
                Status::HeaderFieldsTooLarge,
                "request head too large"
            ))
        );
        // A whole head over the cap is refused too; one under it with bytes after is not.
        let big = request(&format!("X-Padding: {}\r\n", "a".repeat(300)));
        assert_eq!(refused(&server, &big).0, 431);
        let fits = request("");
        let mut more = fits.clone().into_bytes();
        more.extend_from_slice(&[0u8; 400]);
        assert!(matches!(server.read(&more), Handshake::Accepted(a) if a.head_len == fits.len()));
        // Too many fields.
        let many: String = (0..MAX_FIELDS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let server = ServerHandshake {
            max_head: 1 << 20,
            ..ServerHandshake::default()
        };
        assert_eq!(refused(&server, &request(&many)).0, 431);
    }

    #[test]
    fn a_query_does_not_change_the_path() {
        let server = ServerHandshake::default();
        let input = request("").replace("GET /ws ", "GET /ws?token=abc ");
        assert!(matches!(
            server.read(input.as_bytes()),
            Handshake::Accepted(_)
        ));
    }
}
