//! Decode and encode throughput of the v1 codec, single-threaded, no I/O.
//!
//! Builds one buffer of many DATA frames, then for about `--seconds` decodes it over and
//! over with zero-copy `Decoder::decode` on a moving slice (no `drain_frames`, no copies),
//! and for as long again encodes the same frames into a reused `Vec`. Prints frames/s and
//! MB/s (10^6 bytes of wire bytes, header included) for both.
//!
//! ```text
//! cargo run --release -p tether-proto --example decode_throughput -- --body 64 --seconds 3
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use tether_proto::{encode, Decoder, Kind, HEADER_LEN};

/// Wire bytes per pass: big enough to amortise the loop, small enough to stay in L2.
const PASS_BYTES: usize = 256 * 1024;

struct Args {
    body: usize,
    seconds: f64,
}

fn parse_args() -> Args {
    let mut args = Args {
        body: 64,
        seconds: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match flag.as_str() {
            "--body" => {
                args.body = value("--body")
                    .parse()
                    .unwrap_or_else(|_| usage("--body takes a byte count"))
            }
            "--seconds" => {
                args.seconds = value("--seconds")
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage("--seconds takes a positive number"))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if args.body > tether_proto::DEFAULT_MAX_BODY as usize {
        usage("--body must not exceed the default max_body of 65536");
    }
    args
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("error: {why}");
    }
    eprintln!("usage: decode_throughput [--body BYTES (default 64)] [--seconds S (default 3)]");
    std::process::exit(if why.is_empty() { 0 } else { 2 });
}

/// Runs `pass` (which handles `frames_per_pass` frames) until `seconds` have gone by and
/// returns the frames handled and the time taken.
fn run_for(seconds: f64, frames_per_pass: usize, mut pass: impl FnMut()) -> (u64, Duration) {
    // Warm up caches and the branch predictor.
    for _ in 0..10 {
        pass();
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut frames = 0u64;
    loop {
        // Check the clock every few passes only.
        for _ in 0..8 {
            pass();
        }
        frames += 8 * frames_per_pass as u64;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return (frames, elapsed);
        }
    }
}

fn report(what: &str, frames: u64, elapsed: Duration, frame_bytes: usize) {
    let secs = elapsed.as_secs_f64();
    let fps = frames as f64 / secs;
    let mbps = fps * frame_bytes as f64 / 1e6;
    println!(
        "{what}: {:>7.2} M frames/s  {:>8.1} MB/s  ({frames} frames in {secs:.2} s)",
        fps / 1e6,
        mbps
    );
}

fn main() {
    let args = parse_args();
    let frame_bytes = HEADER_LEN + args.body;
    let count = (PASS_BYTES / frame_bytes).max(1);
    let body: Vec<u8> = (0..args.body).map(|i| i as u8).collect();

    let mut wire = Vec::with_capacity(count * frame_bytes);
    for id in 0..count as u64 {
        encode::frame(&mut wire, Kind::Data, id, &body);
    }
    let decoder = Decoder::default();

    // Check once, outside the timed loop, that the buffer decodes to what was encoded.
    {
        let mut rest = &wire[..];
        let mut n = 0u64;
        while let Some((frame, used)) = decoder.decode(rest).expect("valid stream") {
            assert_eq!(
                (frame.kind, frame.id, frame.body),
                (Kind::Data, n, &body[..])
            );
            rest = &rest[used..];
            n += 1;
        }
        assert!(rest.is_empty() && n == count as u64);
    }

    println!("MB/s counts wire bytes (header + body); zero-copy decode never reads the body");
    println!(
        "body {} bytes, frame {} bytes, {} frames ({} bytes) per pass, {} s each",
        args.body,
        frame_bytes,
        count,
        wire.len(),
        args.seconds
    );

    let (frames, elapsed) = run_for(args.seconds, count, || {
        let mut rest = black_box(&wire[..]);
        let mut sum = 0u64;
        while let Ok(Some((frame, used))) = decoder.decode(rest) {
            sum = sum.wrapping_add(frame.id ^ frame.body.len() as u64);
            rest = &rest[used..];
        }
        black_box((sum, rest.len()));
    });
    report("decode", frames, elapsed, frame_bytes);

    let mut out = Vec::with_capacity(wire.len());
    let (frames, elapsed) = run_for(args.seconds, count, || {
        out.clear();
        let body = black_box(&body[..]);
        for id in 0..count as u64 {
            encode::frame(&mut out, Kind::Data, black_box(id), body);
        }
        black_box(&out);
    });
    assert_eq!(out, wire);
    report("encode", frames, elapsed, frame_bytes);
}
