//! The NATS client protocol as the load generator needs it, sans-IO: the bytes a subscriber
//! and a publisher send (CONNECT, SUB, PING/PONG, PUB) and a parser for what the server
//! sends (INFO, MSG, PING, PONG, +OK, -ERR), one operation at a time from the front of a
//! buffer, whatever the chunking.
//!
//! ```text
//! MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
//! ```

use thiserror::Error;

/// The longest control line accepted (an INFO line is a few hundred bytes).
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// One operation from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Info,
    Msg { subject: &'a str, payload: &'a [u8] },
    Ping,
    Pong,
    Ok,
    Err(&'a str),
}

/// Bytes that are not the NATS protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum BadOp {
    #[error("a control line over {MAX_LINE} bytes")]
    LineTooLong,
    #[error("unknown operation {0:?}")]
    Unknown(String),
    #[error("a malformed MSG line")]
    BadMsg,
    #[error("a MSG payload over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a MSG payload not followed by CRLF")]
    NoTrailer,
}

/// What a subscriber sends first: CONNECT, SUB `subject` as sid 1, then PING — the PONG
/// answering it says the subscription is in place.
pub(crate) fn subscribe(out: &mut Vec<u8>, subject: &str) {
    connect(out);
    out.extend_from_slice(format!("SUB {subject} 1\r\nPING\r\n").as_bytes());
}

/// CONNECT without `+OK` acknowledgements.
pub(crate) fn connect(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"tether-loadgen\",\
          \"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":0}\r\n",
    );
}

/// A PUB of `payload` to `subject`.
pub(crate) fn publish(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The answer to the server's PING.
pub(crate) const PONG: &[u8] = b"PONG\r\n";

/// The operation at the front of `buf` and the bytes it takes; `Ok(None)`: incomplete.
pub(crate) fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(Op<'_>, usize)>, BadOp> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_LINE {
            Err(BadOp::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_LINE {
        return Err(BadOp::LineTooLong);
    }
    let line = buf.get(..end).unwrap_or_default();
    let after = end + 2;
    let (verb, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => (
            line.get(..at).unwrap_or_default(),
            line.get(at + 1..).unwrap_or_default(),
        ),
        None => (line, &[][..]),
    };
    let op = if verb.eq_ignore_ascii_case(b"MSG") {
        return msg(buf, args, after, max_payload);
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Op::Info
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        Op::Err(std::str::from_utf8(args).unwrap_or("-ERR").trim())
    } else {
        return Err(BadOp::Unknown(
            String::from_utf8_lossy(verb.get(..verb.len().min(16)).unwrap_or_default()).into(),
        ));
    };
    Ok(Some((op, after)))
}

/// A MSG whose arguments are `args` and whose payload starts at `at`.
fn msg<'a>(
    buf: &'a [u8],
    args: &'a [u8],
    at: usize,
    max_payload: usize,
) -> Result<Option<(Op<'a>, usize)>, BadOp> {
    let args = std::str::from_utf8(args).map_err(|_| BadOp::BadMsg)?;
    let fields: Vec<&str> = args.split_ascii_whitespace().collect();
    let (subject, len) = match fields.as_slice() {
        [subject, _sid, len] | [subject, _sid, _, len] => (*subject, *len),
        _ => return Err(BadOp::BadMsg),
    };
    let len: usize = len.parse().map_err(|_| BadOp::BadMsg)?;
    if len > max_payload {
        return Err(BadOp::PayloadTooLarge(max_payload));
    }
    let end = at + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if buf.get(end..end + 2) != Some(&b"\r\n"[..]) {
        return Err(BadOp::NoTrailer);
    }
    let payload = buf.get(at..end).unwrap_or_default();
    Ok(Some((Op::Msg { subject, payload }, end + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Op<'_>> {
        let mut ops = Vec::new();
        while let Some((op, n)) = parse(buf, 1 << 20).unwrap() {
            ops.push(op);
            buf = &buf[n..];
        }
        assert!(buf.is_empty(), "left {buf:?}");
        ops
    }

    #[test]
    fn server_operations_parse() {
        let wire = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nPING\r\n+OK\r\n\
                     MSG room-0 1 5\r\nhello\r\nmsg room-0 1 _INBOX.x 0\r\n\r\nPONG\r\n\
                     -ERR 'Unknown Protocol Operation'\r\n";
        assert_eq!(
            all(wire),
            vec![
                Op::Info,
                Op::Ping,
                Op::Ok,
                Op::Msg {
                    subject: "room-0",
                    payload: b"hello"
                },
                Op::Msg {
                    subject: "room-0",
                    payload: b""
                },
                Op::Pong,
                Op::Err("'Unknown Protocol Operation'"),
            ]
        );
    }

    #[test]
    fn any_chunking_parses_the_same() {
        let mut wire = Vec::new();
        for i in 0..5u8 {
            wire.extend_from_slice(b"MSG s 1 3\r\n");
            wire.extend_from_slice(&[b'a' + i, b'\r', b'\n']);
            wire.extend_from_slice(b"\r\n");
        }
        let whole = all(&wire).len();
        assert_eq!(whole, 5);
        for cut in 0..wire.len() {
            // Only the first `cut` bytes: whatever parses is a prefix, never an error.
            let mut buf = &wire[..cut];
            let mut n = 0;
            while let Some((_, used)) = parse(buf, 1 << 20).unwrap() {
                buf = &buf[used..];
                n += 1;
            }
            assert!(n <= whole);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(parse(b"HELLO\r\n", 10), Err(BadOp::Unknown(_))));
        assert_eq!(parse(b"MSG s\r\n", 10), Err(BadOp::BadMsg));
        assert_eq!(parse(b"MSG s 1 x\r\n", 10), Err(BadOp::BadMsg));
        assert_eq!(
            parse(b"MSG s 1 99\r\n", 10),
            Err(BadOp::PayloadTooLarge(10))
        );
        assert_eq!(parse(b"MSG s 1 2\r\nabXY", 10), Err(BadOp::NoTrailer));
        assert_eq!(parse(&[b'x'; MAX_LINE + 1], 10), Err(BadOp::LineTooLong));
        assert_eq!(parse(b"MSG s 1 2\r\na", 10), Ok(None));
    }

    #[test]
    fn client_bytes() {
        let mut out = Vec::new();
        subscribe(&mut out, "room-0");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("CONNECT {\"verbose\":false"));
        assert!(text.ends_with("\r\nSUB room-0 1\r\nPING\r\n"));
        let mut out = Vec::new();
        publish(&mut out, "room-0", b"abc");
        assert_eq!(out, b"PUB room-0 3\r\nabc\r\n");
    }
}
