//! The receive path: newly read bytes in, [`Event`]s out, copying as little as possible.
//!
//! [`feed`] drives the frame decoder and the [`Assembler`] over the bytes of one read, in
//! the read buffer itself: a frame wholly inside it is unmasked there and, when it is a whole
//! message, handed over there (zero copy). Only two things are copied into the caller's
//! pooled `partial` buffer: the bytes a frame split across reads lacks (as
//! [`crate::feed`] does for v1 frames), and the payloads of a fragmented message, joined so
//! the message is handed over as one slice. Between calls `partial` holds
//! `[open message, joined: Assembler::held() bytes][the start of one incomplete frame]`, and
//! is empty — so it can go back to the pool — whenever no message is open and no frame is
//! cut.

use super::assembler::{Assembler, Complete};
use super::config::Config;
use super::event::Event;
use super::frame_decode::{decode_frame, decode_head, header_len, Frame};
use super::protocol_error::ProtocolError;

/// Decodes `data`, newly read (and changed: payloads are unmasked in place), which continues
/// the bytes pending in `partial`; hands each [`Event`] to `on_event`. Any chunking of a
/// stream yields the same events.
///
/// `on_event` returns `false` to stop (the caller is closing): the rest of `data` is
/// dropped. After [`Event::Close`] nothing more is read, now or in later calls. On an error
/// the events before it have been handed over; the caller sends a close with
/// [`ProtocolError::close_code`] (through [`Assembler::close`]) and closes the socket.
pub fn feed<F>(
    config: &Config,
    state: &mut Assembler,
    partial: &mut Vec<u8>,
    data: &mut [u8],
    mut on_event: F,
) -> Result<(), ProtocolError>
where
    F: FnMut(Event<'_>) -> bool,
{
    if state.close_received() {
        return Ok(());
    }
    let mut pos = 0;
    // First the frame cut at the end of the last read: complete it from `data`.
    while partial.len() > state.held() {
        let at = state.held();
        let tail = &partial[at..];
        let want = match decode_head(config, tail)? {
            Some(head) => {
                state.admit(config, &head)?;
                head.frame_len()
            }
            None => header_len(tail),
        };
        if tail.len() < want {
            let take = (want - tail.len()).min(data.len() - pos);
            if take == 0 {
                return Ok(());
            }
            partial.extend_from_slice(&data[pos..pos + take]);
            pos += take;
            continue;
        }
        let Some(frame) = decode_frame(config, &mut partial[at..])? else {
            return Ok(());
        };
        if !frame_in_partial(state, partial, at, frame, &mut on_event)? {
            return Ok(());
        }
    }
    // Then every frame wholly inside `data`, in place.
    while let Some(head) = decode_head(config, &data[pos..])? {
        state.admit(config, &head)?;
        if data.len() - pos < head.frame_len() {
            break;
        }
        let Some(frame) = decode_frame(config, &mut data[pos..])? else {
            break;
        };
        let payload = &data[pos + frame.payload.start..pos + frame.payload.end];
        pos += head.frame_len();
        let go = if head.opcode.is_control() {
            let event = state.control(&head, payload)?;
            report(state, event, &mut on_event)
        } else if head.fin && !state.in_message() {
            // A whole message in one frame: handed over where it lies.
            match state.data(&head, payload, 0)? {
                Some(kind) => deliver(state, kind, payload, &mut on_event)?,
                None => true,
            }
        } else {
            let from = partial.len();
            partial.extend_from_slice(payload);
            match state.data(&head, partial, from)? {
                Some(kind) => {
                    let go = deliver(state, kind, partial, &mut on_event)?;
                    partial.clear();
                    go
                }
                None => true,
            }
        };
        if !go || state.close_received() {
            return Ok(());
        }
    }
    partial.extend_from_slice(&data[pos..]);
    Ok(())
}

/// Handles the frame that was completed in `partial` at `at` (after the held message bytes)
/// and removes its bytes, joining a data payload to the open message. Returns whether to go
/// on.
fn frame_in_partial<F>(
    state: &mut Assembler,
    partial: &mut Vec<u8>,
    at: usize,
    frame: Frame,
    on_event: &mut F,
) -> Result<bool, ProtocolError>
where
    F: FnMut(Event<'_>) -> bool,
{
    let head = frame.head;
    let payload = at + frame.payload.start..at + frame.payload.end;
    if head.opcode.is_control() {
        let event = state.control(&head, &partial[payload])?;
        let go = report(state, event, on_event);
        partial.drain(at..at + head.frame_len());
        return Ok(go && !state.close_received());
    }
    let joined = at + head.payload_len;
    partial.copy_within(payload, at);
    partial.drain(joined..at + head.frame_len());
    match state.data(&head, &partial[..joined], at)? {
        Some(kind) => {
            let go = deliver(state, kind, &partial[..joined], on_event)?;
            partial.drain(..joined);
            Ok(go)
        }
        None => Ok(true),
    }
}

/// Hands a whole message over.
fn deliver<F>(
    state: &Assembler,
    kind: Complete,
    message: &[u8],
    on_event: &mut F,
) -> Result<bool, ProtocolError>
where
    F: FnMut(Event<'_>) -> bool,
{
    let event = match kind {
        Complete::Binary => Event::Binary(message),
        // Validated piece by piece already; this second pass yields the `&str`.
        Complete::Text => {
            Event::Text(std::str::from_utf8(message).map_err(|_| ProtocolError::InvalidUtf8)?)
        }
    };
    Ok(report(state, event, on_event))
}

/// Hands `event` over unless this side has sent its close, after which only the peer's
/// close matters.
fn report<F>(state: &Assembler, event: Event<'_>, on_event: &mut F) -> bool
where
    F: FnMut(Event<'_>) -> bool,
{
    if state.close_sent() && !matches!(event, Event::Close(_)) {
        return true;
    }
    on_event(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::close_code::CloseCode;
    use crate::ws::config::TextPolicy;
    use crate::ws::event::Close;
    use crate::ws::frame_encode;
    use crate::ws::opcode::Opcode;

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// An event as text, to compare after its borrow ends.
    fn own(event: Event<'_>) -> String {
        format!("{event:?}")
    }

    /// Feeds `stream` in pieces of `chunk` bytes.
    fn run(
        config: &Config,
        stream: &[u8],
        chunk: usize,
    ) -> (Vec<String>, Result<(), ProtocolError>, Vec<u8>) {
        let mut state = Assembler::new();
        let mut partial = Vec::new();
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            let mut piece = piece.to_vec();
            let result = feed(config, &mut state, &mut partial, &mut piece, |e| {
                seen.push(own(e));
                true
            });
            if result.is_err() {
                return (seen, result, partial);
            }
        }
        (seen, Ok(()), partial)
    }

    fn every_chunking(config: &Config, stream: &[u8]) -> (Vec<String>, Result<(), ProtocolError>) {
        let (seen, result, _) = run(config, stream, stream.len());
        for chunk in 1..stream.len().min(40) {
            let (s, r, _) = run(config, stream, chunk);
            assert_eq!((&s, &r), (&seen, &result), "chunk {chunk}");
        }
        (seen, result)
    }

    fn text() -> Config {
        Config {
            text: TextPolicy::Deliver,
            ..Config::server()
        }
    }

    #[test]
    fn a_masked_message_is_delivered_in_place_without_touching_partial() {
        let mut stream = Vec::new();
        frame_encode::binary(&mut stream, b"whole", KEY);
        let mut state = Assembler::new();
        let mut partial = Vec::new();
        let mut got = Vec::new();
        feed(
            &Config::server(),
            &mut state,
            &mut partial,
            &mut stream,
            |e| {
                if let Event::Binary(b) = e {
                    // The payload lies in the read buffer, right after the 6-byte header.
                    got.push(b.as_ptr() as usize);
                }
                true
            },
        )
        .unwrap();
        assert_eq!(got, vec![stream.as_ptr() as usize + 6]);
        assert_eq!(&stream[6..], b"whole");
        assert_eq!(partial.capacity(), 0);
    }

    #[test]
    fn fragmented_with_control_frames_between_fragments() {
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Binary, b"Hel", KEY);
        frame_encode::ping(&mut stream, b"are you there", KEY);
        frame_encode::frame(&mut stream, false, Opcode::Continuation, b"", KEY);
        frame_encode::pong(&mut stream, b"", KEY);
        frame_encode::frame(&mut stream, true, Opcode::Continuation, b"lo", KEY);
        frame_encode::binary(&mut stream, b"next", KEY);
        let (seen, result) = every_chunking(&Config::server(), &stream);
        result.unwrap();
        assert_eq!(
            seen,
            vec![
                own(Event::Ping(b"are you there")),
                own(Event::Pong(b"")),
                own(Event::Binary(b"Hello")),
                own(Event::Binary(b"next")),
            ]
        );
    }

    #[test]
    fn rfc_fragmented_text_and_utf8_split_across_fragments() {
        // RFC 6455 §5.7, seen by a client.
        let stream = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let config = Config {
            text: TextPolicy::Deliver,
            ..Config::client()
        };
        let (seen, result) = every_chunking(&config, &stream);
        result.unwrap();
        assert_eq!(seen, vec![own(Event::Text("Hello"))]);

        let word = "κόσμε".as_bytes();
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Text, &word[..3], KEY);
        frame_encode::frame(&mut stream, true, Opcode::Continuation, &word[3..], KEY);
        let (seen, result) = every_chunking(&text(), &stream);
        result.unwrap();
        assert_eq!(seen, vec![own(Event::Text("κόσμε"))]);
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_shows_it() {
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Text, b"ok\xed", KEY);
        frame_encode::frame(&mut stream, false, Opcode::Continuation, b"\xa0\x80", KEY);
        // The message never ends: the error does not wait for it.
        let (seen, result) = every_chunking(&text(), &stream);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
        assert_eq!(result.unwrap_err().close_code(), CloseCode(1007));
        assert!(seen.is_empty());
    }

    #[test]
    fn text_is_refused_by_default_from_its_header() {
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, true, Opcode::Text, &[b'a'; 100], KEY);
        // Only the header has arrived.
        let (_, result, _) = run(&Config::server(), &stream[..6], 100);
        assert_eq!(result, Err(ProtocolError::TextRefused));
        assert_eq!(ProtocolError::TextRefused.close_code(), CloseCode(1003));
    }

    #[test]
    fn a_too_big_fragment_is_refused_before_its_payload() {
        let config = Config {
            max_message: 100,
            ..Config::server()
        };
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Binary, &[0; 60], KEY);
        frame_encode::frame(&mut stream, true, Opcode::Continuation, &[0; 60], KEY);
        let second_header_end = 6 + 60 + 6;
        let (_, result, partial) = run(&config, &stream[..second_header_end], 7);
        assert_eq!(
            result,
            Err(ProtocolError::MessageTooBig { len: 120, max: 100 })
        );
        // Never more than the open message and one header were buffered.
        assert!(partial.len() <= 60 + 6, "{}", partial.len());
    }

    #[test]
    fn partial_is_empty_between_messages_and_holds_only_the_open_message() {
        let config = Config::server();
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Binary, &[1; 10], KEY);
        let first = stream.len();
        frame_encode::frame(&mut stream, true, Opcode::Continuation, &[2; 10], KEY);
        let mut state = Assembler::new();
        let mut partial = Vec::new();
        let mut first_bytes = stream[..first].to_vec();
        feed(&config, &mut state, &mut partial, &mut first_bytes, |_| {
            true
        })
        .unwrap();
        assert_eq!((partial.len(), state.held()), (10, 10));
        // Cut inside the second frame's header.
        let mut a = stream[first..first + 3].to_vec();
        feed(&config, &mut state, &mut partial, &mut a, |_| true).unwrap();
        assert_eq!((partial.len(), state.held()), (13, 10));
        let mut b = stream[first + 3..].to_vec();
        let mut got = Vec::new();
        feed(&config, &mut state, &mut partial, &mut b, |e| {
            got.push(own(e));
            true
        })
        .unwrap();
        let mut expected = vec![1; 10];
        expected.extend([2; 10]);
        assert_eq!(got, vec![own(Event::Binary(&expected))]);
        assert!(partial.is_empty());
        assert_eq!(state, Assembler::new());
    }

    #[test]
    fn nothing_is_read_after_the_peers_close() {
        let mut stream = Vec::new();
        frame_encode::close(&mut stream, Some(CloseCode::NORMAL), "done", KEY);
        frame_encode::binary(&mut stream, b"late", KEY);
        stream.extend_from_slice(&[0xff; 8]); // garbage after the close is never looked at
        let (seen, result) = every_chunking(&Config::server(), &stream);
        result.unwrap();
        assert_eq!(
            seen,
            vec![own(Event::Close(Close {
                code: Some(CloseCode::NORMAL),
                reason: "done"
            }))]
        );
    }

    #[test]
    fn a_close_payload_of_125_bytes_is_the_largest() {
        let reason = "r".repeat(123);
        let mut stream = Vec::new();
        frame_encode::close(&mut stream, Some(CloseCode(4000)), &reason, KEY);
        assert_eq!(stream[1] & 0x7f, 125);
        let (seen, result) = every_chunking(&Config::server(), &stream);
        result.unwrap();
        let close = Close {
            code: Some(CloseCode(4000)),
            reason: &reason,
        };
        assert_eq!(seen, vec![own(Event::Close(close))]);
        // One byte more needs the 16-bit length, which a control frame may not use for 126.
        let too_long = [0x88, 0xfe, 0, 126, 0, 0, 0, 0];
        let (_, result) = every_chunking(&Config::server(), &too_long);
        assert_eq!(result, Err(ProtocolError::ControlTooLong { len: 126 }));
    }

    #[test]
    fn after_sending_a_close_only_the_peers_close_is_reported() {
        let mut stream = Vec::new();
        frame_encode::binary(&mut stream, b"in flight", KEY);
        frame_encode::ping(&mut stream, b"p", KEY);
        frame_encode::close(&mut stream, Some(CloseCode::GOING_AWAY), "", KEY);
        let mut state = Assembler::new();
        let mut out = Vec::new();
        assert!(state.close(&mut out, Some(CloseCode::GOING_AWAY), "drain", None));
        let mut seen = Vec::new();
        feed(
            &Config::server(),
            &mut state,
            &mut Vec::new(),
            &mut stream,
            |e| {
                seen.push(own(e));
                true
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![own(Event::Close(Close {
                code: Some(CloseCode::GOING_AWAY),
                reason: ""
            }))]
        );
        // The answer to the peer's close was our close: nothing more to write.
        assert!(!state.close(&mut out, Some(CloseCode::GOING_AWAY), "", None));
    }

    #[test]
    fn stopping_drops_the_rest() {
        let mut stream = Vec::new();
        frame_encode::binary(&mut stream, b"one", KEY);
        frame_encode::binary(&mut stream, b"two", KEY);
        let mut state = Assembler::new();
        let mut partial = Vec::new();
        let mut n = 0;
        feed(
            &Config::server(),
            &mut state,
            &mut partial,
            &mut stream,
            |_| {
                n += 1;
                false
            },
        )
        .unwrap();
        assert_eq!(n, 1);
        assert!(partial.is_empty());
    }

    #[test]
    fn protocol_errors_surface_with_their_codes() {
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (
                vec![0x80, 0x80, 0, 0, 0, 0],
                ProtocolError::ContinuationWithoutStart,
            ),
            (vec![0xc2, 0x80], ProtocolError::ReservedBits { bits: 4 }),
            (vec![0x83, 0x80], ProtocolError::UnknownOpcode { opcode: 3 }),
            (vec![0x82, 0x00], ProtocolError::Unmasked),
            (
                vec![0x09, 0x80],
                ProtocolError::FragmentedControl {
                    opcode: Opcode::Ping,
                },
            ),
            (
                vec![0x88, 0x81, 0, 0, 0, 0, 3],
                ProtocolError::CloseTooShort,
            ),
        ];
        for (stream, expected) in cases {
            let (_, result) = every_chunking(&Config::server(), &stream);
            assert_eq!(result, Err(expected), "{stream:x?}");
        }
        let mut stream = Vec::new();
        frame_encode::frame(&mut stream, false, Opcode::Binary, b"a", KEY);
        frame_encode::binary(&mut stream, b"b", KEY);
        let (_, result) = every_chunking(&Config::server(), &stream);
        assert_eq!(
            result,
            Err(ProtocolError::DataWhileFragmented {
                opcode: Opcode::Binary
            })
        );
    }
}
