//! Fuzz target: arbitrary bytes through the v1 decoder and the body parsers.
//!
//! Input layout: byte 0 selects the decoder's `max_body` (low 3 bits) and after how many
//! frames the `drain_frames` callback asks to stop (high 5 bits, 0 = never); when the low
//! bits are 7, bytes 1–2 are a u16 BE `max_body`. The rest is the byte stream.
//!
//! Invariants checked:
//! - every frame uses at least 14 bytes and exactly 14 + body length;
//! - no body is longer than `max_body`;
//! - re-encoding a decoded frame gives back exactly the bytes it was decoded from;
//! - `drain_frames` agrees with a hand-written `Decoder::decode` loop (same frames, same
//!   error, same leftover bytes), and an error is the one the header bytes call for;
//! - every proper prefix of a decoded frame is "incomplete", never an error or a frame;
//! - the body parsers accept exactly the bodies long enough for their fixed part, return
//!   slices of the body, and re-encode to the same bytes; the route-list parser accepts
//!   exactly the bodies that are whole 8-byte routes; the room bodies (ROOM, JOIN, LEAVE,
//!   publish, MEMBERSHIP names) parse or are refused, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{
    drain_frames, encode, routes, BodyError, DecodeError, Decoder, ErrorBody, ErrorCode, Frame,
    Kind, NodeErrorBody, Routed, HEADER_LEN, MIN_LEN,
};

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let (max_body, stream) = match sel & 7 {
        0 => (0, rest),
        1 => (1, rest),
        2 => (16, rest),
        3 => (64, rest),
        4 => (1024, rest),
        5 => (65_536, rest),
        6 => (u32::MAX, rest),
        _ => match rest.split_first_chunk::<2>() {
            Some((m, s)) => (u32::from(u16::from_be_bytes(*m)), s),
            None => return,
        },
    };
    let stop_after = usize::from(sel >> 3);
    check_stream(Decoder::new(max_body), stream, stop_after);
});

fn check_stream(decoder: Decoder, stream: &[u8], stop_after: usize) {
    // Reference: decode frame by frame over the slice, checking each frame on the way.
    let mut offset = 0;
    let mut expected = Vec::new();
    let expected_result = loop {
        if stop_after != 0 && expected.len() == stop_after {
            break Ok(());
        }
        match decoder.decode(&stream[offset..]) {
            Ok(Some((frame, used))) => {
                check_frame(&decoder, frame, used, &stream[offset..offset + used]);
                expected.push((frame.kind, frame.flags, frame.id, offset + HEADER_LEN, used));
                offset += used;
            }
            Ok(None) => {
                check_incomplete(&decoder, &stream[offset..]);
                break Ok(());
            }
            Err(e) => {
                check_error(&decoder, &stream[offset..], e);
                break Err(e);
            }
        }
    };

    // drain_frames over an owned copy must see the same frames and leave the same tail.
    let mut buf = stream.to_vec();
    let mut seen = 0;
    let result = drain_frames(&decoder, &mut buf, |frame| {
        let (kind, flags, id, body_at, used) = expected[seen];
        assert_eq!((frame.kind, frame.flags, frame.id), (kind, flags, id));
        assert_eq!(frame.body, &stream[body_at..body_at + used - HEADER_LEN]);
        seen += 1;
        stop_after == 0 || seen < stop_after
    });
    assert_eq!(seen, expected.len());
    assert_eq!(result, expected_result);
    assert_eq!(buf, &stream[offset..]);
}

fn check_frame(decoder: &Decoder, frame: Frame<'_>, used: usize, bytes: &[u8]) {
    assert!(used >= HEADER_LEN);
    assert_eq!(used, HEADER_LEN + frame.body.len());
    assert_eq!(frame.encoded_len(), used);
    assert!(frame.body.len() as u64 <= u64::from(decoder.max_body()));
    assert_eq!(decoder.frame_len(bytes), Ok(Some(used)));
    assert_eq!(Kind::from_u8(frame.kind.as_u8()), Some(frame.kind));

    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(out, bytes, "re-encoding changed the bytes");
    if frame.flags == 0 {
        out.clear();
        encode::frame(&mut out, frame.kind, frame.id, frame.body);
        assert_eq!(out, bytes);
    }

    // Every proper prefix is incomplete. Checking them all is quadratic: check the first
    // 15 (through the whole header) and the one just short of the end.
    for cut in (0..used.min(HEADER_LEN + 1)).chain(std::iter::once(used - 1)) {
        assert_eq!(
            decoder.decode(&bytes[..cut]),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }

    check_bodies(frame, bytes);
}

fn check_bodies(frame: Frame<'_>, bytes: &[u8]) {
    let body = frame.body;
    let plain = frame.flags == 0;
    let mut out = Vec::new();

    match Routed::parse(body) {
        Ok(r) => {
            assert!(body.len() >= 8);
            assert_eq!(r.route.to_be_bytes(), body[..8]);
            assert_eq!(r.payload, &body[8..]);
            encode::routed(&mut out, frame.kind, frame.id, r.route, r.payload);
            if plain {
                assert_eq!(out, bytes);
            }
        }
        Err(e) => {
            assert!(body.len() < 8);
            assert_eq!(
                e,
                BodyError::TooShort {
                    len: body.len(),
                    need: 8
                }
            );
        }
    }

    match ErrorBody::parse(body) {
        Ok(eb) => {
            assert!(body.len() >= 2);
            assert_eq!(eb.code.to_be_bytes(), body[..2]);
            assert_eq!(eb.reason.as_bytes(), &body[2..]);
            if let (true, Kind::Error, Some(code)) =
                (plain, frame.kind, ErrorCode::from_u16(eb.code))
            {
                out.clear();
                encode::error(&mut out, frame.id, code, eb.reason);
                assert_eq!(out, bytes);
            }
        }
        Err(BodyError::TooShort { len, need }) => {
            assert_eq!((len, need), (body.len(), 2));
            assert!(body.len() < 2);
        }
        Err(BodyError::ReasonNotUtf8) => {
            assert!(body.len() >= 2 && std::str::from_utf8(&body[2..]).is_err());
        }
        Err(e @ (BodyError::PartialRoute { .. } | BodyError::BadRoomName)) => {
            panic!("ErrorBody::parse: {e}")
        }
    }

    match NodeErrorBody::parse(body) {
        Ok(ne) => {
            assert!(body.len() >= 10);
            assert_eq!(ne.route.to_be_bytes(), body[..8]);
            assert_eq!(ne.code.to_be_bytes(), body[8..10]);
            assert_eq!(ne.reason.as_bytes(), &body[10..]);
            if let (true, Kind::NodeError, Some(code)) =
                (plain, frame.kind, ErrorCode::from_u16(ne.code))
            {
                out.clear();
                encode::node_error(&mut out, frame.id, ne.route, code, ne.reason);
                assert_eq!(out, bytes);
            }
        }
        Err(BodyError::TooShort { len, need }) => {
            assert_eq!((len, need), (body.len(), 10));
            assert!(body.len() < 10);
        }
        Err(BodyError::ReasonNotUtf8) => {
            assert!(body.len() >= 10 && std::str::from_utf8(&body[10..]).is_err());
        }
        Err(e @ (BodyError::PartialRoute { .. } | BodyError::BadRoomName)) => {
            panic!("NodeErrorBody::parse: {e}")
        }
    }

    // Room bodies: any bytes parse or are refused, never a panic; what parses is whole.
    if let Ok(batch) = tether_proto::room::Batch::parse(body) {
        let _ = batch.entries().count();
    }
    let _ = tether_proto::room::Join::parse(body);
    let _ = tether_proto::room::Publish::parse(body);
    let _ = tether_proto::room::leave(body);
    let _ = tether_proto::room::names(body).count();

    match routes(body) {
        Ok(list) => {
            assert_eq!(body.len() % 8, 0);
            let list: Vec<u64> = list.collect();
            assert_eq!(list.len(), body.len() / 8);
            if plain && frame.id == 0 {
                out.clear();
                encode::routes(&mut out, frame.kind, &list);
                assert_eq!(out, bytes);
            }
        }
        Err(e) => {
            assert_ne!(body.len() % 8, 0);
            assert_eq!(e, BodyError::PartialRoute { len: body.len() });
        }
    }
}

/// `Ok(None)`: fewer than 4 bytes, or an acceptable length whose frame is not all here (and
/// whose kind is known if the header is in).
fn check_incomplete(decoder: &Decoder, buf: &[u8]) {
    let Some(len) = buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        assert_eq!(decoder.frame_len(buf), Ok(None));
        return;
    };
    assert!(len >= MIN_LEN && len - MIN_LEN <= decoder.max_body());
    assert!((buf.len() as u64) < 4 + u64::from(len));
    if buf.len() >= HEADER_LEN {
        assert!(Kind::from_u8(buf[4]).is_some());
    }
}

/// An error is exactly what the first bytes call for, and is decided as early as promised.
fn check_error(decoder: &Decoder, buf: &[u8], err: DecodeError) {
    let len = u32::from_be_bytes(*buf.first_chunk::<4>().expect("error before 4 bytes"));
    match err {
        DecodeError::BadFrame { len: l } => {
            assert_eq!(l, len);
            assert!(len < MIN_LEN);
            // Decided from the length field alone.
            assert_eq!(decoder.decode(&buf[..4]), Err(err));
            assert_eq!(err.code(), ErrorCode::BadFrame);
            assert_eq!(err.offending_id(), 0);
        }
        DecodeError::FrameTooLarge { body_len, max_body } => {
            assert!(len >= MIN_LEN);
            assert_eq!(body_len, len - MIN_LEN);
            assert_eq!(max_body, decoder.max_body());
            assert!(body_len > max_body);
            assert_eq!(decoder.decode(&buf[..4]), Err(err));
            assert_eq!(err.code(), ErrorCode::FrameTooLarge);
            assert_eq!(err.offending_id(), 0);
        }
        DecodeError::UnknownKind { kind, id } => {
            assert!(buf.len() >= HEADER_LEN);
            assert!(len >= MIN_LEN && len - MIN_LEN <= decoder.max_body());
            assert_eq!(kind, buf[4]);
            assert!(Kind::from_u8(kind).is_none());
            assert_eq!(id.to_be_bytes(), buf[6..14]);
            // Not before the header is whole, and without waiting for the body.
            assert_eq!(decoder.decode(&buf[..HEADER_LEN - 1]), Ok(None));
            assert_eq!(decoder.decode(&buf[..HEADER_LEN]), Err(err));
            assert_eq!(err.code(), ErrorCode::UnknownKind);
            assert_eq!(err.offending_id(), id);
        }
    }
}
