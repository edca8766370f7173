"""Tether's v1 wire protocol for the bench helpers written in Python: the 14-byte header,
the kinds and error codes they use, a streaming decoder and HS256 login tokens.

Written from doc/protocol.md (header: u32 BE len = 10 + body, u8 kind, u8 flags, u64 BE id;
everything big-endian). Standard library only.
"""
import base64
import hashlib
import hmac
import json
import struct
import time

HEADER = struct.Struct(">IBBQ")
HEADER_LEN = HEADER.size  # 14
MIN_LEN = 10

# Client kinds.
LOGIN, LOGIN_OK, PING, PONG, DATA, PUSH, ACK, RESUME, GOAWAY, ERROR = range(0x01, 0x0B)
# Backend kinds.
REQUEST, RESPONSE, NODE_PING, NODE_PONG, NODE_ERROR = range(0x81, 0x86)

FLAG_RESEND_SAFE = 0x01

ERROR_NAMES = {
    1: "BAD_FRAME", 2: "FRAME_TOO_LARGE", 3: "UNKNOWN_KIND", 4: "NOT_LOGGED_IN",
    5: "AUTH_FAILED", 6: "OVERLOADED", 7: "NO_BACKEND", 8: "RATE_LIMITED",
    9: "SLOW_CONSUMER", 10: "TIMEOUT", 11: "UNAVAILABLE", 12: "KICKED", 13: "INTERNAL",
    14: "BUSY", 15: "REQUEST_TIMEOUT",
}
# Codes after which the sender closes the connection (doc/protocol.md, "Error codes").
CLOSING = {1, 2, 3, 4, 5, 6, 9, 10, 12}


def frame(kind, frame_id, body=b"", flags=0):
    """One encoded frame."""
    return HEADER.pack(MIN_LEN + len(body), kind, flags, frame_id) + body


class Decoder:
    """Feed bytes, take whole frames as (kind, flags, id, body)."""

    def __init__(self, max_body=1 << 21):
        self.buf = bytearray()
        self.max_body = max_body

    def feed(self, data):
        self.buf += data

    def frames(self):
        out = []
        at = 0
        buf = self.buf
        while len(buf) - at >= HEADER_LEN:
            length, kind, flags, frame_id = HEADER.unpack_from(buf, at)
            if length < MIN_LEN or length - MIN_LEN > self.max_body:
                raise ValueError(f"bad frame length {length}")
            end = at + 4 + length
            if end > len(buf):
                break
            out.append((kind, flags, frame_id, bytes(buf[at + HEADER_LEN:end])))
            at = end
        del buf[:at]
        return out


def error_body(body):
    """(code, reason) of an ERROR body."""
    code = struct.unpack_from(">H", body)[0] if len(body) >= 2 else 0
    return code, body[2:].decode("utf-8", "replace")


def error_name(code):
    return ERROR_NAMES.get(code, f"ERROR_{code}")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token(secret, device, lifetime_s=86400):
    """An HS256 JWT with sub = device and exp = now + lifetime_s, signed with secret (bytes)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"sub": device, "exp": int(time.time()) + lifetime_s},
                                separators=(",", ":")).encode())
    signing = header + b"." + claims
    signature = _b64url(hmac.new(secret, signing, hashlib.sha256).digest())
    return (signing + b"." + signature).decode()
