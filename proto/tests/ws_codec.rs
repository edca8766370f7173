//! Property tests of the WebSocket codec: every frame shape round-trips, any chunking of a
//! stream yields the same events, and arbitrary bytes never panic.

use proptest::prelude::*;
use tether_proto::ws::{
    self, encode, feed, Assembler, Config, Event, ExpectedResponse, Opcode, ProtocolError, Role,
    ServerHandshake, TextPolicy,
};
use tether_proto::Decoder;

/// An owned copy of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Binary(Vec<u8>),
    Text(String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(event: Event<'_>) -> Seen {
    match event {
        Event::Binary(b) => Seen::Binary(b.to_vec()),
        Event::Text(t) => Seen::Text(t.to_string()),
        Event::Ping(p) => Seen::Ping(p.to_vec()),
        Event::Pong(p) => Seen::Pong(p.to_vec()),
        Event::Close(c) => Seen::Close(c.code.map(|c| c.0), c.reason.to_string()),
    }
}

/// Feeds `stream` cut at `cuts` (positions, any order, any value); returns the events, the
/// result, and whether `partial` was empty at the end.
fn run(
    config: &Config,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Seen>, Result<(), ProtocolError>, bool) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut state = Assembler::new();
    let mut partial = Vec::new();
    let mut seen = Vec::new();
    for pair in points.windows(2) {
        let mut piece = stream[pair[0]..pair[1]].to_vec();
        let result = feed(config, &mut state, &mut partial, &mut piece, |e| {
            seen.push(own(e));
            true
        });
        if result.is_err() {
            return (seen, result, partial.is_empty());
        }
    }
    (seen, Ok(()), partial.is_empty())
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=125,
        126usize..=300,
        65_530usize..=65_540,
        Just(70_000usize),
    ]
}

fn mask() -> impl Strategy<Value = Option<[u8; 4]>> {
    proptest::option::of(any::<[u8; 4]>())
}

/// One frame of a stream: control frames between the fragments of a message.
#[derive(Debug, Clone)]
enum Piece {
    Fragment {
        fin: bool,
        opcode: Opcode,
        payload: Vec<u8>,
    },
    Control {
        opcode: Opcode,
        payload: Vec<u8>,
    },
}

/// A message split into fragments at `splits`, with a ping or pong after some fragments.
fn message() -> impl Strategy<Value = (Vec<Piece>, Vec<Seen>)> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..200),
        "\\PC{0,40}",
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::collection::vec(
            proptest::option::of((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..20))),
            4,
        ),
    )
        .prop_map(|(is_text, bytes, text, splits, controls)| {
            let (opcode, payload) = if is_text {
                (Opcode::Text, text.clone().into_bytes())
            } else {
                (Opcode::Binary, bytes.clone())
            };
            let mut points: Vec<usize> = splits.iter().map(|s| s % (payload.len() + 1)).collect();
            points.push(0);
            points.push(payload.len());
            points.sort_unstable();
            points.dedup();
            if points.len() == 1 {
                points.push(0); // an empty message: one empty frame
            }
            let mut pieces = Vec::new();
            let mut seen = Vec::new();
            let count = points.len() - 1;
            for (i, pair) in points.windows(2).enumerate() {
                let first = i == 0;
                let fin = i + 1 == count;
                pieces.push(Piece::Fragment {
                    fin,
                    opcode: if first { opcode } else { Opcode::Continuation },
                    payload: payload[pair[0]..pair[1]].to_vec(),
                });
                if let (false, Some(Some((ping, body)))) = (fin, controls.get(i)) {
                    let opcode = if *ping { Opcode::Ping } else { Opcode::Pong };
                    pieces.push(Piece::Control {
                        opcode,
                        payload: body.clone(),
                    });
                    seen.push(if *ping {
                        Seen::Ping(body.clone())
                    } else {
                        Seen::Pong(body.clone())
                    });
                }
            }
            seen.push(if is_text {
                Seen::Text(text)
            } else {
                Seen::Binary(bytes)
            });
            (pieces, seen)
        })
}

fn encode_pieces(pieces: &[Piece], masks: &[[u8; 4]], out: &mut Vec<u8>) {
    for (i, piece) in pieces.iter().enumerate() {
        let key = Some(masks[i % masks.len()]);
        match piece {
            Piece::Fragment {
                fin,
                opcode,
                payload,
            } => encode::frame(out, *fin, *opcode, payload, key),
            Piece::Control { opcode, payload } => encode::frame(out, true, *opcode, payload, key),
        }
    }
}

proptest! {
    #[test]
    fn every_frame_shape_round_trips(
        opcode in proptest::sample::select(Opcode::ALL.to_vec()),
        fin in any::<bool>(),
        len in payload_len(),
        key in mask(),
        fill in any::<u8>(),
    ) {
        let len = if opcode.is_control() { len % 126 } else { len };
        let fin = fin || opcode.is_control();
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(fill)).collect();
        let mut bytes = Vec::new();
        encode::frame(&mut bytes, fin, opcode, &payload, key);
        prop_assert_eq!(bytes.len(), encode::header_len(len, key.is_some()) + len);
        let config = Config {
            role: if key.is_some() { Role::Server } else { Role::Client },
            max_frame: u32::MAX,
            max_message: u32::MAX,
            text: TextPolicy::Deliver,
        };
        let frame = ws::decode_frame(&config, &mut bytes).unwrap().unwrap();
        prop_assert_eq!(frame.head.fin, fin);
        prop_assert_eq!(frame.head.opcode, opcode);
        prop_assert_eq!(frame.head.mask, key);
        prop_assert_eq!(frame.head.frame_len(), bytes.len());
        prop_assert_eq!(&bytes[frame.payload], &payload[..]);
    }

    #[test]
    fn non_minimal_lengths_decode_the_same(len in 0usize..300, wide in any::<bool>(), key in any::<[u8; 4]>()) {
        let payload = vec![0x5a; len];
        let mut bytes = vec![0x82];
        if wide {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        } else {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        bytes.extend_from_slice(&key);
        let start = bytes.len();
        bytes.extend_from_slice(&payload);
        ws::apply_mask(&mut bytes[start..], key, 0);
        let frame = ws::decode_frame(&Config::server(), &mut bytes).unwrap().unwrap();
        prop_assert_eq!(&bytes[frame.payload], &payload[..]);
    }

    #[test]
    fn any_chunking_of_a_stream_yields_the_same_messages(
        messages in proptest::collection::vec(message(), 1..6),
        masks in proptest::collection::vec(any::<[u8; 4]>(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let config = Config { text: TextPolicy::Deliver, ..Config::server() };
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (pieces, seen) in &messages {
            encode_pieces(pieces, &masks, &mut stream);
            expected.extend(seen.iter().cloned());
        }
        let (seen, result, empty) = run(&config, &stream, &cuts);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(seen, expected);
        prop_assert!(empty, "partial must be empty between messages");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        client in any::<bool>(),
        small in any::<bool>(),
        text in any::<bool>(),
    ) {
        let config = Config {
            role: if client { Role::Client } else { Role::Server },
            max_frame: if small { 40 } else { 1 << 16 },
            max_message: if small { 60 } else { 1 << 16 },
            text: if text { TextPolicy::Deliver } else { TextPolicy::Refuse },
        };
        let whole = run(&config, &bytes, &[]);
        let chunked = run(&config, &bytes, &cuts);
        prop_assert_eq!(whole.0, chunked.0);
        prop_assert_eq!(whole.1, chunked.1);
        let mut copy = bytes.clone();
        let _ = ws::decode_frame(&config, &mut copy);
        let _ = ws::v1_frames(&Decoder::default(), &bytes, |_| true);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_handshakes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in any::<bool>(),
    ) {
        // Start with a plausible request line and response status line half the time.
        let mut request = if prefix { b"GET /ws HTTP/1.1\r\nHost: h\r\n".to_vec() } else { Vec::new() };
        request.extend_from_slice(&bytes);
        let server = ServerHandshake { max_head: 300, ..ServerHandshake::default() };
        let _ = server.read(&request);
        let mut response = if prefix { b"HTTP/1.1 101 Switching Protocols\r\n".to_vec() } else { Vec::new() };
        response.extend_from_slice(&bytes);
        let client = ws::ClientHandshake { host: "h", path: "/ws", origin: None, protocol: Some("tether.v1") };
        let expected: ExpectedResponse<'_> = client.write_request(&[1; 16], &mut Vec::new()).unwrap();
        let _ = expected.read(&response);
    }
}

proptest! {
    /// Valid streams with a few bytes changed reach deep into the state machine (fragments,
    /// close frames, limits) where random bytes rarely go.
    #[test]
    fn damaged_streams_never_panic_and_chunking_does_not_matter(
        messages in proptest::collection::vec(message(), 1..5),
        close in proptest::option::of((any::<u16>(), "\\PC{0,10}")),
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        small in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for (pieces, _) in &messages {
            encode_pieces(pieces, &[[9, 8, 7, 6]], &mut stream);
        }
        if let Some((code, reason)) = close {
            encode::close(&mut stream, Some(ws::CloseCode(code)), &reason, Some([1, 2, 3, 4]));
        }
        for (at, byte) in damage {
            let at = at % stream.len();
            stream[at] ^= byte;
        }
        let config = Config {
            max_frame: if small { 50 } else { 1 << 16 },
            max_message: if small { 100 } else { 1 << 16 },
            text: TextPolicy::Deliver,
            ..Config::server()
        };
        let whole = run(&config, &stream, &[]);
        let chunked = run(&config, &stream, &cuts);
        prop_assert_eq!(whole.0, chunked.0);
        prop_assert_eq!(whole.1, chunked.1);
    }
}
