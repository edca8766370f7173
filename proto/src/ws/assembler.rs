//! The message assembly state machine (RFC 6455 §5.4–§5.5, §7): a few bytes per connection.
//!
//! It knows whether a message is open (and of which type), how many of its bytes the caller
//! holds, and where the closing handshake stands. It holds no bytes: the fragments of an open
//! message are joined by the caller, in a pooled buffer (see [`crate::ws::feed()`], which drives
//! this machine over a read buffer). Its rules:
//!
//! - A data frame (text or binary) starts a message; FIN ends it. A continuation frame with
//!   no open message, or a new data frame while one is open, fails with 1002.
//! - Control frames (ping, pong, close) may come between the fragments of a message.
//! - A message may not grow past [`Config::max_message`] (1009), decided from each
//!   fragment's header.
//! - Text is refused at its first header (1003) or, when delivered, checked as UTF-8
//!   fragment by fragment (1007).
//! - A close payload is empty or a valid code plus a UTF-8 reason (1002, 1007 otherwise).
//! - After this side sends a close, data, pings and pongs are no longer reported (the peer's
//!   close is awaited); after the peer's close, nothing more is read.

use super::close_code::CloseCode;
use super::config::{Config, TextPolicy};
use super::event::{Close, Event};
use super::frame_decode::FrameHead;
use super::frame_encode;
use super::opcode::Opcode;
use super::protocol_error::ProtocolError;
use super::utf8;

/// The type of the open message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Open {
    #[default]
    None,
    Binary,
    Text,
}

/// One connection's receive state. `Copy`, 8 bytes; the initial state is `default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assembler {
    /// Payload bytes of the open message the caller holds, joined, at the front of its buffer.
    held: u32,
    open: Open,
    close_sent: bool,
    close_received: bool,
}

/// A whole message's type, once its last fragment is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complete {
    Binary,
    Text,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Payload bytes of the open message, joined at the front of the caller's buffer (0 when
    /// no message is open).
    pub fn held(&self) -> usize {
        self.held as usize
    }

    /// Whether a fragmented message is open.
    pub fn in_message(&self) -> bool {
        self.open != Open::None
    }

    /// Whether this side has sent its close frame.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the peer's close frame has arrived: nothing after it is read.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Checks a frame's header against the message state, before its payload arrives.
    pub fn admit(&self, config: &Config, head: &FrameHead) -> Result<(), ProtocolError> {
        let max = config.max_message;
        let too_big = |len: u64| {
            if len > u64::from(max) {
                Err(ProtocolError::MessageTooBig { len, max })
            } else {
                Ok(())
            }
        };
        match head.opcode {
            Opcode::Continuation if self.open == Open::None => {
                Err(ProtocolError::ContinuationWithoutStart)
            }
            Opcode::Continuation => too_big(self.held as u64 + head.payload_len as u64),
            Opcode::Text | Opcode::Binary if self.open != Open::None => {
                Err(ProtocolError::DataWhileFragmented {
                    opcode: head.opcode,
                })
            }
            Opcode::Text if config.text == TextPolicy::Refuse => Err(ProtocolError::TextRefused),
            Opcode::Text | Opcode::Binary => too_big(head.payload_len as u64),
            Opcode::Close | Opcode::Ping | Opcode::Pong => Ok(()),
        }
    }

    /// Takes an admitted data frame whose payload the caller has placed at the end of the
    /// open message: `joined` is the whole message so far, `joined[from..]` this frame's
    /// payload. Returns the message's type once `head.fin` completes it; until then the
    /// caller keeps `joined` (and [`Assembler::held`] says its length).
    pub fn data(
        &mut self,
        head: &FrameHead,
        joined: &[u8],
        from: usize,
    ) -> Result<Option<Complete>, ProtocolError> {
        let open = match (self.open, head.opcode) {
            (Open::None, Opcode::Binary) => Open::Binary,
            (Open::None, Opcode::Text) => Open::Text,
            (Open::None, _) => return Err(ProtocolError::ContinuationWithoutStart),
            (open, Opcode::Continuation) => open,
            (_, opcode) => return Err(ProtocolError::DataWhileFragmented { opcode }),
        };
        if open == Open::Text && !utf8::continues_valid(joined, from, head.fin) {
            return Err(ProtocolError::InvalidUtf8);
        }
        if head.fin {
            self.open = Open::None;
            self.held = 0;
            return Ok(Some(match open {
                Open::Text => Complete::Text,
                _ => Complete::Binary,
            }));
        }
        self.open = open;
        // Admitted frames keep a message within `max_message`, a u32.
        self.held = u32::try_from(joined.len()).unwrap_or(u32::MAX);
        Ok(None)
    }

    /// Takes a whole control frame and says what the caller must do with it. A close frame
    /// marks the peer's close as received.
    pub fn control<'a>(
        &mut self,
        head: &FrameHead,
        payload: &'a [u8],
    ) -> Result<Event<'a>, ProtocolError> {
        match head.opcode {
            Opcode::Ping => Ok(Event::Ping(payload)),
            Opcode::Pong => Ok(Event::Pong(payload)),
            Opcode::Close => {
                let close = parse_close(payload)?;
                self.close_received = true;
                Ok(Event::Close(close))
            }
            opcode => Err(ProtocolError::DataWhileFragmented { opcode }),
        }
    }

    /// Appends this side's close frame (see [`frame_encode::close`]) unless one was sent
    /// already, and records it. Returns whether it wrote one. Used to answer the peer's close
    /// (echoing its code), to fail the connection with a [`ProtocolError::close_code`], or to
    /// start the closing handshake (1000, or 1001 when going away).
    pub fn close(
        &mut self,
        out: &mut Vec<u8>,
        code: Option<CloseCode>,
        reason: &str,
        mask: Option<[u8; 4]>,
    ) -> bool {
        if self.close_sent {
            return false;
        }
        frame_encode::close(out, code, reason, mask);
        self.close_sent = true;
        true
    }
}

/// A close frame's payload: empty, or a valid code then a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Close<'_>, ProtocolError> {
    let (code, reason) = match payload {
        [] => {
            return Ok(Close {
                code: None,
                reason: "",
            })
        }
        [_] => return Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => (CloseCode(u16::from_be_bytes([*hi, *lo])), reason),
    };
    if !code.is_valid_on_wire() {
        return Err(ProtocolError::InvalidCloseCode { code: code.0 });
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
    Ok(Close {
        code: Some(code),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fin: bool, opcode: Opcode, payload_len: usize) -> FrameHead {
        FrameHead {
            fin,
            opcode,
            mask: None,
            header_len: 2,
            payload_len,
        }
    }

    fn deliver_text() -> Config {
        Config {
            text: TextPolicy::Deliver,
            ..Config::server()
        }
    }

    #[test]
    fn is_eight_bytes_and_copy() {
        assert_eq!(std::mem::size_of::<Assembler>(), 8);
        let a = Assembler::new();
        let b = a;
        assert_eq!(a, b);
    }

    #[test]
    fn a_single_frame_message_completes_at_once() {
        let mut a = Assembler::new();
        let h = head(true, Opcode::Binary, 3);
        a.admit(&Config::server(), &h).unwrap();
        assert_eq!(a.data(&h, b"abc", 0), Ok(Some(Complete::Binary)));
        assert_eq!((a.held(), a.in_message()), (0, false));
    }

    #[test]
    fn fragments_accumulate_until_fin() {
        let config = Config::server();
        let mut a = Assembler::new();
        let first = head(false, Opcode::Binary, 3);
        a.admit(&config, &first).unwrap();
        assert_eq!(a.data(&first, b"Hel", 0), Ok(None));
        assert_eq!((a.held(), a.in_message()), (3, true));
        // A ping between fragments is fine.
        let ping = head(true, Opcode::Ping, 1);
        a.admit(&config, &ping).unwrap();
        assert_eq!(a.control(&ping, b"p"), Ok(Event::Ping(b"p")));
        let last = head(true, Opcode::Continuation, 2);
        a.admit(&config, &last).unwrap();
        assert_eq!(a.data(&last, b"Hello", 3), Ok(Some(Complete::Binary)));
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn sequencing_errors() {
        let config = Config::server();
        let a = Assembler::new();
        assert_eq!(
            a.admit(&config, &head(true, Opcode::Continuation, 0)),
            Err(ProtocolError::ContinuationWithoutStart)
        );
        let mut a = Assembler::new();
        let first = head(false, Opcode::Binary, 1);
        a.data(&first, b"x", 0).unwrap();
        for opcode in [Opcode::Binary, Opcode::Text] {
            assert_eq!(
                a.admit(&deliver_text(), &head(true, opcode, 0)),
                Err(ProtocolError::DataWhileFragmented { opcode })
            );
        }
    }

    #[test]
    fn text_is_refused_from_its_header_or_validated() {
        let a = Assembler::new();
        let h = head(true, Opcode::Text, 2);
        assert_eq!(
            a.admit(&Config::server(), &h),
            Err(ProtocolError::TextRefused)
        );
        let mut a = Assembler::new();
        a.admit(&deliver_text(), &h).unwrap();
        assert_eq!(a.data(&h, "é".as_bytes(), 0), Ok(Some(Complete::Text)));
        let mut a = Assembler::new();
        assert_eq!(a.data(&h, b"\xc3\x28", 0), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn utf8_is_checked_across_fragments() {
        let mut a = Assembler::new();
        let mut joined = b"a\xf0\x9d".to_vec();
        assert_eq!(a.data(&head(false, Opcode::Text, 3), &joined, 0), Ok(None));
        joined.push(0x84);
        assert_eq!(
            a.data(&head(false, Opcode::Continuation, 1), &joined, 3),
            Ok(None)
        );
        joined.push(0x28); // not a continuation byte: invalid mid-character
        assert_eq!(
            a.data(&head(true, Opcode::Continuation, 1), &joined, 4),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn the_message_limit_counts_every_fragment() {
        let config = Config {
            max_message: 10,
            ..Config::server()
        };
        let mut a = Assembler::new();
        assert!(matches!(
            a.admit(&config, &head(true, Opcode::Binary, 11)),
            Err(ProtocolError::MessageTooBig { len: 11, max: 10 })
        ));
        a.data(&head(false, Opcode::Binary, 6), &[0; 6], 0).unwrap();
        a.admit(&config, &head(false, Opcode::Continuation, 4))
            .unwrap();
        assert_eq!(
            a.admit(&config, &head(true, Opcode::Continuation, 5)),
            Err(ProtocolError::MessageTooBig { len: 11, max: 10 })
        );
    }

    #[test]
    fn close_payloads() {
        let h = head(true, Opcode::Close, 0);
        let mut a = Assembler::new();
        assert_eq!(
            a.control(&h, b""),
            Ok(Event::Close(Close {
                code: None,
                reason: ""
            }))
        );
        assert!(a.close_received());
        let mut a = Assembler::new();
        assert_eq!(
            a.control(&h, b"\x03\xe8bye"),
            Ok(Event::Close(Close {
                code: Some(CloseCode::NORMAL),
                reason: "bye"
            }))
        );
        assert_eq!(
            Assembler::new().control(&h, b"\x03"),
            Err(ProtocolError::CloseTooShort)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                Assembler::new().control(&h, &code.to_be_bytes()),
                Err(ProtocolError::InvalidCloseCode { code })
            );
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(Assembler::new().control(&h, &code.to_be_bytes()).is_ok());
        }
        assert_eq!(
            Assembler::new().control(&h, b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidCloseReason)
        );
    }

    #[test]
    fn close_is_sent_once() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        assert!(a.close(&mut out, Some(CloseCode::GOING_AWAY), "drain", None));
        assert!(!a.close(&mut out, Some(CloseCode::NORMAL), "", None));
        assert_eq!(out, [0x88, 7, 0x03, 0xe9, b'd', b'r', b'a', b'i', b'n']);
        assert!(a.close_sent());
    }
}
