//! An nchan WebSocket subscriber, sans-IO: the upgrade request for `/sub?id=ROOM`, then
//! every message (text or binary) handed over whole as the raw payload the publisher POSTed
//! to `/pub?id=ROOM` — not v1 frames, unlike the Tether transport in [`crate::link`].
//! Built on `tether_proto::ws`'s client side; pings are answered, a close ends the stream.

use tether_proto::ws::{self, encode as wse, Assembler, ClientHandshake, Event, ExpectedResponse};

/// What one subscriber needs between reads.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// Until the 101 is in: what to check it against.
    expected: Option<ExpectedResponse<'static>>,
    state: Assembler,
    /// The response head so far, then a cut frame or an open message.
    partial: Vec<u8>,
    mask: u64,
}

/// Why the stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The upgrade was refused or malformed.
    Refused,
    /// A frame broke the protocol.
    Protocol,
    /// The server closed.
    Closed,
}

/// Receiver limits: a subscriber takes text (nchan's default) and binary alike.
fn config() -> ws::Config {
    ws::Config {
        text: ws::TextPolicy::Deliver,
        ..ws::Config::client()
    }
}

impl Subscriber {
    /// Appends the upgrade request for `path` on `host` to `out`; `nonce` seeds the key.
    /// `host` and `path` live as long as the run (leaked once per worker).
    pub(crate) fn start(
        host: &'static str,
        path: &'static str,
        nonce: u64,
        out: &mut Vec<u8>,
    ) -> Option<Subscriber> {
        let mut mask = nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&next(&mut mask).to_le_bytes());
        key[8..].copy_from_slice(&next(&mut mask).to_le_bytes());
        let expected = ClientHandshake {
            host,
            path,
            origin: None,
            protocol: None,
        }
        .write_request(&key, out)
        .ok()?;
        Some(Subscriber {
            expected: Some(expected),
            state: Assembler::new(),
            partial: Vec::new(),
            mask,
        })
    }

    /// Whether the upgrade has been answered.
    pub(crate) fn ready(&self) -> bool {
        self.expected.is_none()
    }

    /// Takes bytes read from the socket (changed in place): each whole message's payload
    /// goes to `on_message`, answers owed to the server (pongs, the close) to `out`.
    pub(crate) fn receive(
        &mut self,
        data: &mut [u8],
        out: &mut Vec<u8>,
        mut on_message: impl FnMut(&[u8]),
    ) -> Result<(), End> {
        let mut rest;
        let bytes: &mut [u8] = match self.expected {
            Some(expected) => {
                self.partial.extend_from_slice(data);
                let head = match expected.read(&self.partial) {
                    Ok(Some(head)) => head,
                    Ok(None) => return Ok(()),
                    Err(_) => return Err(End::Refused),
                };
                self.expected = None;
                rest = self.partial.split_off(head);
                self.partial.clear();
                &mut rest[..]
            }
            None => data,
        };
        let mut closed = None;
        let mut mask = self.mask;
        let fed = ws::feed(
            &config(),
            &mut self.state,
            &mut self.partial,
            bytes,
            |event| {
                match event {
                    Event::Binary(message) => on_message(message),
                    Event::Text(text) => on_message(text.as_bytes()),
                    Event::Ping(payload) => {
                        let key = (next(&mut mask) as u32).to_le_bytes();
                        wse::pong(out, payload, Some(key));
                    }
                    Event::Pong(_) => {}
                    Event::Close(close) => closed = Some(close.code),
                }
                closed.is_none()
            },
        );
        self.mask = mask;
        if fed.is_err() {
            return Err(End::Protocol);
        }
        if let Some(code) = closed {
            let key = (next(&mut self.mask) as u32).to_le_bytes();
            self.state.close(out, code, "", Some(key));
            return Err(End::Closed);
        }
        Ok(())
    }
}

/// xorshift64: masking keys need no secrecy from the load generator itself.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::ws::{Handshake, ServerHandshake};

    /// The server's side of the upgrade, answered by tether_proto's server handshake.
    fn upgraded() -> (Subscriber, Vec<u8>) {
        let mut request = Vec::new();
        let sub = Subscriber::start("127.0.0.1", "/sub?id=room-0", 7, &mut request).unwrap();
        let text = String::from_utf8(request.clone()).unwrap();
        assert!(
            text.starts_with("GET /sub?id=room-0 HTTP/1.1\r\n"),
            "{text}"
        );
        let server = ServerHandshake {
            paths: vec!["/sub".into()],
            require_protocol: false,
            ..ServerHandshake::default()
        };
        let Handshake::Accepted(accepted) = server.read(&request) else {
            panic!("refused: {text}");
        };
        (sub, accepted.response())
    }

    #[test]
    fn messages_after_the_upgrade_are_handed_over_whole() {
        let (mut sub, mut wire) = upgraded();
        wse::frame(&mut wire, true, ws::Opcode::Text, b"0123abcd", None);
        wse::binary(&mut wire, b"\x00\x01", None);
        wse::ping(&mut wire, b"p", None);
        let mut got = Vec::new();
        let mut out = Vec::new();
        // Byte by byte: the upgrade and every frame survive any chunking.
        for b in wire.clone() {
            let mut one = [b];
            sub.receive(&mut one, &mut out, |m| got.push(m.to_vec()))
                .unwrap();
        }
        assert!(sub.ready());
        assert_eq!(got, vec![b"0123abcd".to_vec(), b"\x00\x01".to_vec()]);
        assert!(!out.is_empty(), "the ping was answered");
    }
}
