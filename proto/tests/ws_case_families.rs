//! The case families of the Autobahn WebSocket testsuite (which needs Python 2 and cannot run
//! here), as table-driven checks of the server-side codec: framing (1), pings and pongs (2),
//! reserved bits (3), opcodes (4), fragmentation (5), UTF-8 (6), close handling (7) and
//! limits (9). Each case is a stream of client frames and what the receiver must make of
//! it: the events in order, and the close code that fails the connection, if any. Every
//! stream is also fed one byte at a time, which must give the same answer.

use tether_proto::ws::{encode, feed, Assembler, Config, Event, Opcode, TextPolicy};

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

/// What the receiver made of a stream: its events, and the close code it failed with.
fn run(config: &Config, stream: &[u8], chunk: usize) -> (Vec<String>, Option<u16>) {
    let mut state = Assembler::new();
    let mut partial = Vec::new();
    let mut events = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        let mut data = piece.to_vec();
        let fed = feed(config, &mut state, &mut partial, &mut data, |event| {
            events.push(match event {
                Event::Binary(m) => format!("binary {}", m.len()),
                Event::Text(t) => format!("text {t}"),
                Event::Ping(p) => format!("ping {}", p.len()),
                Event::Pong(p) => format!("pong {}", p.len()),
                Event::Close(c) => format!("close {:?} {}", c.code.map(|c| c.0), c.reason),
            });
            true
        });
        if let Err(e) = fed {
            return (events, Some(e.close_code().0));
        }
    }
    (events, None)
}

fn check(config: &Config, name: &str, stream: &[u8], events: &[&str], fails_with: Option<u16>) {
    let want = (events.iter().map(|e| e.to_string()).collect(), fails_with);
    assert_eq!(run(config, stream, stream.len()), want, "{name}, whole");
    assert_eq!(run(config, stream, 1), want, "{name}, byte by byte");
}

fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode::frame(&mut out, fin, opcode, payload, KEY);
    out
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn deliver_text() -> Config {
    Config {
        text: TextPolicy::Deliver,
        ..Config::server()
    }
}

#[test]
fn family_1_framing_every_length_encoding() {
    let config = Config::server();
    for len in [0usize, 1, 125, 126, 127, 128, 65_535, 65_536, 65_550] {
        let stream = frame(true, Opcode::Binary, &vec![0xab; len]);
        check(
            &config,
            &format!("binary {len}"),
            &stream,
            &[&format!("binary {len}")],
            None,
        );
    }
    check(
        &config,
        "one past the limit",
        &frame(true, Opcode::Binary, &[0; 65_551]),
        &[],
        Some(1009),
    );
    let text = deliver_text();
    for len in [0usize, 125, 126, 65_535] {
        let body = "a".repeat(len);
        let stream = frame(true, Opcode::Text, body.as_bytes());
        check(
            &text,
            &format!("text {len}"),
            &stream,
            &[&format!("text {body}")],
            None,
        );
    }
}

#[test]
fn family_2_pings_and_pongs() {
    let config = Config::server();
    check(
        &config,
        "empty ping",
        &frame(true, Opcode::Ping, b""),
        &["ping 0"],
        None,
    );
    check(
        &config,
        "125-byte ping",
        &frame(true, Opcode::Ping, &[1; 125]),
        &["ping 125"],
        None,
    );
    let mut long = vec![0x89, 0x80 | 126, 0, 126];
    long.extend_from_slice(&KEY.unwrap());
    long.extend_from_slice(&[0; 126]);
    check(&config, "126-byte ping", &long, &[], Some(1002));
    check(
        &config,
        "binary ping payload",
        &frame(true, Opcode::Ping, &[0, 0xff, 0xfe]),
        &["ping 3"],
        None,
    );
    check(
        &config,
        "unsolicited pong",
        &frame(true, Opcode::Pong, b"hb"),
        &["pong 2"],
        None,
    );
    let ten = cat(&(0..10)
        .map(|_| frame(true, Opcode::Ping, b"x"))
        .collect::<Vec<_>>());
    check(&config, "ten pings", &ten, &["ping 1"; 10], None);
    let after_close = cat(&[
        frame(true, Opcode::Close, b"\x03\xe8"),
        frame(true, Opcode::Ping, b"x"),
    ]);
    check(
        &config,
        "ping after close",
        &after_close,
        &["close Some(1000) "],
        None,
    );
}

#[test]
fn family_3_reserved_bits() {
    let config = Config::server();
    for rsv in [0x40u8, 0x20, 0x10, 0x60, 0x70] {
        let mut stream = frame(true, Opcode::Binary, b"x");
        stream[0] |= rsv;
        check(
            &config,
            &format!("rsv {rsv:#x} on binary"),
            &stream,
            &[],
            Some(1002),
        );
        let mut ping = frame(true, Opcode::Ping, b"");
        ping[0] |= rsv;
        check(
            &config,
            &format!("rsv {rsv:#x} on ping"),
            &ping,
            &[],
            Some(1002),
        );
    }
    // The frames before the bad one are handed over.
    let mut bad = frame(true, Opcode::Binary, b"y");
    bad[0] |= 0x40;
    let stream = cat(&[frame(true, Opcode::Binary, b"x"), bad]);
    check(
        &config,
        "after a good frame",
        &stream,
        &["binary 1"],
        Some(1002),
    );
}

#[test]
fn family_4_opcodes() {
    let config = Config::server();
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        let stream = [0x80 | opcode, 0x80, 1, 2, 3, 4];
        check(
            &config,
            &format!("opcode {opcode:#x}"),
            &stream,
            &[],
            Some(1002),
        );
    }
}

#[test]
fn family_5_fragmentation() {
    let config = Config::server();
    let three = cat(&[
        frame(false, Opcode::Binary, b"ab"),
        frame(false, Opcode::Continuation, b"cd"),
        frame(true, Opcode::Continuation, b"ef"),
    ]);
    check(&config, "three fragments", &three, &["binary 6"], None);
    let pinged = cat(&[
        frame(false, Opcode::Binary, b"ab"),
        frame(true, Opcode::Ping, b"p"),
        frame(true, Opcode::Pong, b""),
        frame(true, Opcode::Continuation, b"cd"),
    ]);
    check(
        &config,
        "control frames between fragments",
        &pinged,
        &["ping 1", "pong 0", "binary 4"],
        None,
    );
    check(
        &config,
        "fragmented ping",
        &frame(false, Opcode::Ping, b"p"),
        &[],
        Some(1002),
    );
    check(
        &config,
        "fragmented close",
        &frame(false, Opcode::Close, b""),
        &[],
        Some(1002),
    );
    check(
        &config,
        "continuation first",
        &frame(true, Opcode::Continuation, b"x"),
        &[],
        Some(1002),
    );
    let nested = cat(&[
        frame(false, Opcode::Binary, b"a"),
        frame(true, Opcode::Binary, b"b"),
    ]);
    check(&config, "new message inside one", &nested, &[], Some(1002));
    let empty = cat(&[
        frame(false, Opcode::Binary, b""),
        frame(false, Opcode::Continuation, b""),
        frame(true, Opcode::Continuation, b""),
    ]);
    check(&config, "empty fragments", &empty, &["binary 0"], None);
    let text = deliver_text();
    let split = "κόσμε".as_bytes();
    let utf8 = cat(&[
        frame(false, Opcode::Text, &split[..3]),
        frame(true, Opcode::Continuation, &split[3..]),
    ]);
    check(
        &text,
        "text split inside a character",
        &utf8,
        &["text κόσμε"],
        None,
    );
}

#[test]
fn family_6_utf8() {
    let text = deliver_text();
    check(
        &text,
        "valid",
        &frame(true, Opcode::Text, "Hello-µ@ßöäüàá-UTF-8!!".as_bytes()),
        &["text Hello-µ@ßöäüàá-UTF-8!!"],
        None,
    );
    for (name, bad) in [
        ("lone continuation", &b"\x80"[..]),
        ("overlong", b"\xc0\xaf"),
        ("surrogate", b"\xed\xa0\x80"),
        ("past U+10FFFF", b"\xf4\x90\x80\x80"),
        ("cut at the end", b"\xce\xba\xe1"),
    ] {
        check(
            &text,
            name,
            &frame(true, Opcode::Text, bad),
            &[],
            Some(1007),
        );
    }
    // Tether's server refuses text outright, from the header.
    check(
        &Config::server(),
        "text on the gateway",
        &frame(true, Opcode::Text, b"hi"),
        &[],
        Some(1003),
    );
}

#[test]
fn family_7_close_handling() {
    let config = Config::server();
    check(
        &config,
        "empty close",
        &frame(true, Opcode::Close, b""),
        &["close None "],
        None,
    );
    check(
        &config,
        "1-byte close",
        &frame(true, Opcode::Close, b"\x03"),
        &[],
        Some(1002),
    );
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye ✓".as_bytes());
    check(
        &config,
        "code and reason",
        &frame(true, Opcode::Close, &payload),
        &["close Some(1000) bye ✓"],
        None,
    );
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let stream = frame(true, Opcode::Close, &code.to_be_bytes());
        check(
            &config,
            &format!("code {code}"),
            &stream,
            &[&format!("close Some({code}) ")],
            None,
        );
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let stream = frame(true, Opcode::Close, &code.to_be_bytes());
        check(&config, &format!("code {code}"), &stream, &[], Some(1002));
    }
    check(
        &config,
        "reason not UTF-8",
        &frame(true, Opcode::Close, b"\x03\xe8\xce\xba\xe1"),
        &[],
        Some(1007),
    );
    let data_after = cat(&[
        frame(true, Opcode::Close, b""),
        frame(true, Opcode::Binary, b"late"),
    ]);
    check(
        &config,
        "data after close",
        &data_after,
        &["close None "],
        None,
    );
    let mid_message = cat(&[
        frame(false, Opcode::Binary, b"a"),
        frame(true, Opcode::Close, b"\x03\xe8"),
    ]);
    check(
        &config,
        "close inside a message",
        &mid_message,
        &["close Some(1000) "],
        None,
    );
}

#[test]
fn family_9_limits_from_the_header() {
    let config = Config {
        max_frame: 1 << 20,
        max_message: 1 << 20,
        ..Config::server()
    };
    for len in [64 * 1024usize, 256 * 1024, 1 << 20] {
        let stream = frame(true, Opcode::Binary, &vec![7; len]);
        assert_eq!(
            run(&config, &stream, 4096),
            (vec![format!("binary {len}")], None),
            "{len} in 4 KiB reads"
        );
    }
    // A header announcing 2^63 - 1 bytes fails before any payload.
    let huge = [
        0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ];
    assert_eq!(run(&config, &huge, 14), (vec![], Some(1009)));
    // A fragment that would take its message past the limit, likewise.
    let over = cat(&[
        frame(false, Opcode::Binary, &vec![0; 1 << 19]),
        frame(true, Opcode::Continuation, &vec![0; (1 << 19) + 1]),
    ]);
    assert_eq!(run(&config, &over, 65_536), (vec![], Some(1009)));
}
