#!/usr/bin/env python3
"""Writes the seed corpus of the `decode` fuzz target into corpus/decode/.

Each seed starts with the target's selector byte (0x05: max_body 65,536, never stop early;
see fuzz_targets/decode.rs), followed by a v1 byte stream. Run from anywhere:
    python3 fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")
SEL = b"\x05"  # max_body 65,536


def frame(kind, ident, body=b"", flags=0):
    return struct.pack(">IBBQ", 10 + len(body), kind, flags, ident) + body


def routed(kind, ident, route, payload):
    return frame(kind, ident, struct.pack(">Q", route) + payload)


def error(ident, code, reason):
    return frame(0x0A, ident, struct.pack(">H", code) + reason.encode())


def node_error(ident, route, code, reason):
    return frame(0x85, ident, struct.pack(">QH", route, code) + reason.encode())


SEEDS = {
    "data_hi": frame(0x05, 7, b"hi"),
    "data_empty": frame(0x05, 1),
    "ping": frame(0x03, 42),
    "pong_flags": frame(0x04, 42, flags=0xFF),
    "login": frame(0x01, 1, b"eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    "login_ok": frame(
        0x02, 1, b'{"session":"anon-1","resume_token":"","heartbeat_s":30}'
    ),
    "error_too_large": error(0, 2, "frame too large"),
    "request": routed(0x81, 5, 0x0000000100000002, b"abc"),
    "response": routed(0x82, 5, 0x0000000100000002, b"abc"),
    "node_ping": frame(0x83, 9),
    "node_error_overloaded": node_error(5, 0x0000000100000002, 6, "queue full"),
    "two_frames": frame(0x05, 1, b"one") + frame(0x03, 2),
    "partial_frame": frame(0x05, 3, b"three")[:17],
    "len_below_10": struct.pack(">I", 9) + b"\x05\x00" + b"\x00" * 7,
    "huge_len": struct.pack(">I", 0xFFFFFFFF) + b"\x05\x00",
    "unknown_kind": frame(0x7F, 1234, b"x"),
    "frame_then_bad": frame(0x05, 1, b"ok") + struct.pack(">I", 3),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, stream in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(SEL + stream)
    # One seed exercising the explicit max_body selector (7: bytes 1-2 are max_body = 4)
    # with a body of exactly 4 and one of 5 bytes.
    with open(os.path.join(OUT, "max_body_4"), "wb") as f:
        f.write(b"\x07" + struct.pack(">H", 4) + frame(0x05, 1, b"four") + frame(0x05, 2, b"fiver"))
    print(f"wrote {len(SEEDS) + 1} seeds to {OUT}")


if __name__ == "__main__":
    main()
