#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/decode/, corpus/journal/ and
corpus/token/.

decode: each seed starts with the target's selector byte (0x05: max_body 65,536, never stop
early; see fuzz_targets/decode.rs), followed by a v1 byte stream.

journal: each seed starts with the target's mode byte (see fuzz_targets/journal.rs): 0x00
and the bytes of a journal or snapshot file as the state daemon writes them (8-byte record
headers, CRC-32C), or 0x01 and a list of record payloads, each after a u8 length. The record
layouts are those of state/src/record.rs.

Run from anywhere:
    python3 fuzz/make_corpus.py
"""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")
SEL = b"\x05"  # max_body 65,536
JOURNAL_OUT = os.path.join(HERE, "corpus", "journal")


def frame(kind, ident, body=b"", flags=0):
    return struct.pack(">IBBQ", 10 + len(body), kind, flags, ident) + body


def routed(kind, ident, route, payload):
    return frame(kind, ident, struct.pack(">Q", route) + payload)


def error(ident, code, reason):
    return frame(0x0A, ident, struct.pack(">H", code) + reason.encode())


def node_error(ident, route, code, reason):
    return frame(0x85, ident, struct.pack(">QH", route, code) + reason.encode())


def route_list(kind, routes):
    return frame(kind, 0, b"".join(struct.pack(">Q", r) for r in routes))


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
    "heartbeat_routes": route_list(0x47, [0x0000000100000002, 0xFFFFFFFFFFFFFFFF, 7]),
    "announce_partial_route": frame(0x42, 0, b"\x00" * 9),
    "two_frames": frame(0x05, 1, b"one") + frame(0x03, 2),
    "partial_frame": frame(0x05, 3, b"three")[:17],
    "len_below_10": struct.pack(">I", 9) + b"\x05\x00" + b"\x00" * 7,
    "huge_len": struct.pack(">I", 0xFFFFFFFF) + b"\x05\x00",
    "unknown_kind": frame(0x7F, 1234, b"x"),
    "frame_then_bad": frame(0x05, 1, b"ok") + struct.pack(">I", 3),
}


# ---- journal ----------------------------------------------------------------------------


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected 0x82F63B78), as state/src/journal/crc32c.rs."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def journal_record(payload):
    """One on-disk record: len u32 LE, CRC-32C of the len bytes then the payload, payload."""
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", crc32c(length + payload)) + payload


SECRET = bytes(range(16))
COUNTERS = struct.pack("<BQQ", 1, 42, 7)
GATEWAY = struct.pack("<BH", 2, 0) + b"gw-bench-01"
LOGIN = struct.pack("<BQQHQQ", 3, 5, 0, 0, 0x0000000100000002, 1_800_000_000_000) + SECRET + b"phone-\xc3\xbc"
RELOGIN = struct.pack("<BQQHQQ", 3, 6, 5, 0, 0x0000000100000003, 1_800_000_000_500) + SECRET + b"phone-\xc3\xbc"
DETACH = struct.pack("<BQQ", 4, 6, 1_800_000_001_000)
ATTACH = struct.pack("<BQHQ", 5, 6, 0, 0x0000000100000004)
REMOVE = struct.pack("<BQ", 6, 6)
PUSH = struct.pack("<BQQQ", 7, 5, 3, 1_800_000_060_000) + b"\x00hello"
PUSH_EMPTY = struct.pack("<BQQQ", 7, 5, 4, 1_800_000_060_000)
ACK = struct.pack("<BQQ", 8, 5, 3)

JOURNAL = [GATEWAY, LOGIN, PUSH, PUSH_EMPTY, ACK, RELOGIN, DETACH, ATTACH, DETACH, REMOVE]
SNAPSHOT = [COUNTERS, GATEWAY, LOGIN, PUSH]


def journal_file(payloads):
    return b"".join(journal_record(p) for p in payloads)


def payload_list(payloads):
    return b"".join(bytes([len(p)]) + p for p in payloads)


def journal_seeds():
    journal = journal_file(JOURNAL)
    bad_crc = bytearray(journal_file([GATEWAY, LOGIN, ACK]))
    bad_crc[8 + len(GATEWAY) + 8 + 1] ^= 0x01  # a payload byte of LOGIN, more records after it
    files = {
        "journal": journal,
        "snapshot": journal_file(SNAPSHOT),
        "torn_tail": journal[:-5],
        "torn_header": journal + journal_record(ACK)[:6],
        "zero_tail": journal_file([GATEWAY, LOGIN]) + b"\x00" * 64,
        "crc_mismatch_inside": bytes(bad_crc),
        "length_too_large": journal_file([GATEWAY]) + struct.pack("<II", 0xFFFFFFFF, 0) + b"\x00" * 8,
        "empty_record": journal_record(b""),
    }
    lists = {
        "every_record": SNAPSHOT + JOURNAL,
        "unknown_tag": [b"\x2a", b"\x00\x01"],
        "too_short": [LOGIN[:40], PUSH[:20], b"\x06\x01\x02"],
        "not_utf8": [struct.pack("<BH", 2, 1) + b"gw-\xff", LOGIN[:51] + b"\xc3"],
        "trailing_bytes": [COUNTERS + b"x", ACK + b"\x00\x00", REMOVE + b"!"],
        "cut_last": [GATEWAY, LOGIN[:30]],
    }
    seeds = {f"file_{k}": b"\x00" + v for k, v in files.items()}
    seeds.update({f"records_{k}": b"\x01" + payload_list(v) for k, v in lists.items()})
    return seeds


TOKEN_OUT = os.path.join(HERE, "corpus", "token")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token_seeds():
    """Byte 0 even: a token as sent; odd: claims the target signs with its h1 key."""
    testdata = os.path.join(HERE, "..", "state", "src", "token", "testdata")
    with open(os.path.join(testdata, "openssl-tokens.txt"), "rb") as f:
        es256, rs256 = f.read().split()
    legacy = (b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkIiwiZXhwIjoyMDAwMDAwMDAwfQ."
              b"unWwgUvICyhkxZyCtOq1q_mQh4UL4LqdAvIDIjjhiq4")
    good = b'{"sub":"d","exp":2000000000,"iat":1999999000,"aud":["x","tether"],"iss":"iss"}'
    seeds = {
        "es256_openssl": b"\x00" + es256,
        "rs256_openssl": b"\x00" + rs256,
        "hs256_legacy": b"\x00" + legacy,
        "alg_none": b"\x00" + b64url(b'{"alg":"none"}') + b"." + b64url(good) + b".",
        "crit": b"\x00" + b64url(b'{"alg":"HS256","kid":"h1","crit":["exp"]}') + b"." + b64url(good) + b".AAAA",
        "confusion": b"\x00" + b64url(b'{"alg":"HS256","kid":"openssl-rsa"}') + b"." + b64url(good) + b".AAAA",
        "claims_good": b"\x01" + good,
        "claims_aud_string": b"\x01" + good.replace(b'["x","tether"]', b'"tether"'),
        "claims_no_iat": b"\x01" + b'{"sub":"d","exp":2000000000,"aud":"tether","iss":"iss"}',
        "claims_too_long_lived": b"\x01" + b'{"sub":"d","exp":1000000000000,"aud":"tether","iss":"iss"}',
        "claims_floats": b"\x01" + b'{"sub":"d","exp":2.0e9,"nbf":1.5e9,"iat":1999999999.9,"aud":"tether","iss":"iss"}',
        "claims_dup": b"\x01" + b'{"sub":"a","sub":"b","exp":2000000000}',
        "claims_not_json": b"\x01" + b"\xff\xfe{",
    }
    return seeds


def write(out, seeds):
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


def main():
    decode = {name: SEL + stream for name, stream in SEEDS.items()}
    # One seed exercising the explicit max_body selector (7: bytes 1-2 are max_body = 4)
    # with a body of exactly 4 and one of 5 bytes.
    decode["max_body_4"] = b"\x07" + struct.pack(">H", 4) + frame(0x05, 1, b"four") + frame(0x05, 2, b"fiver")
    write(OUT, decode)
    write(JOURNAL_OUT, journal_seeds())
    write(TOKEN_OUT, token_seeds())


if __name__ == "__main__":
    main()
