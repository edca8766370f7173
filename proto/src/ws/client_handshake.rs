//! The client side of the opening handshake (RFC 6455 §4.1), for the load generator and
//! tests: write the upgrade request, then check the server's response.

use std::io::Write;

use httparse::{Response, EMPTY_HEADER};
use thiserror::Error;

use super::accept_key::{accept_key, encode_key, ACCEPT_LEN};
use super::http_head::{has_token, present, single};
use super::server_handshake::{DEFAULT_MAX_HEAD, MAX_FIELDS};

/// What to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHandshake<'a> {
    /// The `Host` field: host, and `:port` unless it is the scheme's default.
    pub host: &'a str,
    /// The request-target, starting with `/`.
    pub path: &'a str,
    /// The `Origin` a browser would send; `None` for a client that is not a browser.
    pub origin: Option<&'a str>,
    /// The subprotocol to offer (and require in the response).
    pub protocol: Option<&'a str>,
}

/// A field of [`ClientHandshake`] that cannot go in a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{field} is empty or holds a control character or space")]
pub struct InvalidField {
    pub field: &'static str,
}

/// Why a server's response does not complete the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResponseError {
    #[error("malformed HTTP response")]
    Malformed,
    #[error("response head larger than {DEFAULT_MAX_HEAD} bytes")]
    TooLarge,
    #[error("status {code} instead of 101")]
    Status { code: u16 },
    #[error("no `Upgrade: websocket`")]
    NoUpgrade,
    #[error("`Connection` does not include upgrade")]
    NoConnectionUpgrade,
    #[error("Sec-WebSocket-Accept does not answer the key")]
    BadAccept,
    #[error("subprotocol differs from the one offered")]
    ProtocolMismatch,
    #[error("an extension was selected, but none was offered")]
    UnexpectedExtension,
}

/// What the response must carry: a `Copy` value of 28 bytes plus the subprotocol borrowed
/// from the [`ClientHandshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedResponse<'a> {
    accept: [u8; ACCEPT_LEN],
    protocol: Option<&'a str>,
}

impl<'a> ClientHandshake<'a> {
    /// Appends the upgrade request with `nonce` — 16 random bytes, new for each connection —
    /// as its key, and returns what the response is checked against.
    pub fn write_request(
        &self,
        nonce: &[u8; 16],
        out: &mut Vec<u8>,
    ) -> Result<ExpectedResponse<'a>, InvalidField> {
        let checks = [
            ("host", Some(self.host)),
            ("path", Some(self.path)),
            ("origin", self.origin),
            ("protocol", self.protocol),
        ];
        for (field, value) in checks {
            if value.is_some_and(|v| v.is_empty() || v.bytes().any(|b| b <= b' ' || b == 0x7f)) {
                return Err(InvalidField { field });
            }
        }
        let key = encode_key(nonce);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: ",
            self.path, self.host
        );
        out.extend_from_slice(&key);
        out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
        if let Some(origin) = self.origin {
            let _ = write!(out, "Origin: {origin}\r\n");
        }
        if let Some(protocol) = self.protocol {
            let _ = write!(out, "Sec-WebSocket-Protocol: {protocol}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(ExpectedResponse {
            accept: accept_key(&key),
            protocol: self.protocol,
        })
    }
}

impl ExpectedResponse<'_> {
    /// Reads the response at the front of `input` (every byte received so far): `Ok(None)`
    /// until its head ends, then the bytes the head used (what follows is the server's first
    /// WebSocket bytes).
    pub fn read(&self, input: &[u8]) -> Result<Option<usize>, ResponseError> {
        let window = &input[..input.len().min(DEFAULT_MAX_HEAD)];
        let mut fields = [EMPTY_HEADER; MAX_FIELDS];
        let mut response = Response::new(&mut fields);
        let head_len = match response.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() >= DEFAULT_MAX_HEAD => {
                return Err(ResponseError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
            Err(_) => return Err(ResponseError::Malformed),
        };
        let fields = response.headers;
        match response.code {
            Some(101) => {}
            code => {
                return Err(ResponseError::Status {
                    code: code.unwrap_or(0),
                })
            }
        }
        if !has_token(fields, "upgrade", "websocket") {
            return Err(ResponseError::NoUpgrade);
        }
        if !has_token(fields, "connection", "upgrade") {
            return Err(ResponseError::NoConnectionUpgrade);
        }
        if single(fields, "sec-websocket-accept") != Ok(Some(&self.accept[..])) {
            return Err(ResponseError::BadAccept);
        }
        let protocol = single(fields, "sec-websocket-protocol")
            .map_err(|_| ResponseError::ProtocolMismatch)?;
        if protocol != self.protocol.map(str::as_bytes) {
            return Err(ResponseError::ProtocolMismatch);
        }
        if present(fields, "sec-websocket-extensions") {
            return Err(ResponseError::UnexpectedExtension);
        }
        Ok(Some(head_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::server_handshake::{Handshake, ServerHandshake};

    const NONCE: &[u8; 16] = b"the sample nonce";

    fn client() -> ClientHandshake<'static> {
        ClientHandshake {
            host: "server.example.com",
            path: "/ws",
            origin: None,
            protocol: Some("tether.v1"),
        }
    }

    #[test]
    fn the_request_is_exact() {
        let mut out = Vec::new();
        client().write_request(NONCE, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /ws HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tether.v1\r\n\r\n"
        );
    }

    #[test]
    fn our_server_accepts_our_client_and_our_client_checks_it() {
        let server = ServerHandshake {
            origins: vec!["https://app.example".into()],
            ..ServerHandshake::default()
        };
        let handshake = ClientHandshake {
            origin: Some("https://app.example"),
            ..client()
        };
        let mut request = Vec::new();
        let expected = handshake.write_request(&[7; 16], &mut request).unwrap();
        let Handshake::Accepted(accepted) = server.read(&request) else {
            panic!("refused");
        };
        assert_eq!(accepted.head_len, request.len());
        let mut response = accepted.response();
        let head = response.len();
        response.extend_from_slice(&[0x82, 0x00]);
        for cut in 0..head {
            assert_eq!(expected.read(&response[..cut]), Ok(None));
        }
        assert_eq!(expected.read(&response), Ok(Some(head)));
    }

    #[test]
    fn wrong_responses_are_refused() {
        let mut request = Vec::new();
        let expected = client().write_request(NONCE, &mut request).unwrap();
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                    Sec-WebSocket-Protocol: tether.v1\r\n\r\n";
        assert_eq!(expected.read(good.as_bytes()), Ok(Some(good.len())));
        // (what to replace in the good response, with what, the error).
        let cases = [
            (
                "101 Switching Protocols",
                "403 Forbidden",
                ResponseError::Status { code: 403 },
            ),
            ("Upgrade: websocket\r\n", "", ResponseError::NoUpgrade),
            (
                "Connection: Upgrade",
                "Connection: close",
                ResponseError::NoConnectionUpgrade,
            ),
            ("xOo=", "xOA=", ResponseError::BadAccept),
            ("tether.v1", "chat", ResponseError::ProtocolMismatch),
            (
                "Sec-WebSocket-Protocol: tether.v1\r\n",
                "",
                ResponseError::ProtocolMismatch,
            ),
            (
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                ResponseError::UnexpectedExtension,
            ),
            ("HTTP/1.1 101", "HTTP/1.1 1O1", ResponseError::Malformed),
        ];
        for (from, to, error) in cases {
            let response = good.replacen(from, to, 1);
            assert_eq!(expected.read(response.as_bytes()), Err(error), "{response}");
        }
        assert_eq!(
            expected.read(&vec![b'a'; DEFAULT_MAX_HEAD]),
            Err(ResponseError::Malformed)
        );
        let mut endless = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        endless.resize(DEFAULT_MAX_HEAD, b'a');
        assert_eq!(expected.read(&endless), Err(ResponseError::TooLarge));
    }

    #[test]
    fn fields_that_would_break_the_head_are_refused() {
        let mut out = Vec::new();
        let bad = ClientHandshake {
            host: "a\r\nX: y",
            ..client()
        };
        assert_eq!(
            bad.write_request(NONCE, &mut out),
            Err(InvalidField { field: "host" })
        );
        let bad = ClientHandshake {
            path: "",
            ..client()
        };
        assert_eq!(
            bad.write_request(NONCE, &mut out),
            Err(InvalidField { field: "path" })
        );
        assert!(out.is_empty());
    }
}
