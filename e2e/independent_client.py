#!/usr/bin/env python3
"""An independent Tether v1 client, written from design.md alone, that checks an echo node.

Usage: python3 e2e/independent_client.py HOST:PORT

It shares no code with the Rust crates: the 14-byte header is packed and parsed here with
`struct`. Each check runs on a fresh TCP connection and prints `ok NAME` or
`FAIL NAME: WHY`; the last line is `N passed, M failed`, and the exit status is 0 only when
every check passed. Every socket operation has a 5 s timeout, so a silent peer fails a check
instead of hanging it.

Wire format (design.md, "Wire protocol (v1)"):
    offset size field
    0      4    len    u32 BE: bytes after this field = 10 + body length
    4      1    kind   u8
    5      1    flags  u8 (0 in v1)
    6      8    id     u64 BE
    14     ...  body   len - 10 bytes
"""

import json
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct(">IBBQ")  # len, kind, flags, id
HEADER_LEN = HEADER.size  # 14
MIN_LEN = 10
MAX_BODY = 65_536  # the default max_body
TIMEOUT = 5.0

# Client kinds.
LOGIN, LOGIN_OK, PING, PONG, DATA = 0x01, 0x02, 0x03, 0x04, 0x05
PUSH, ACK, RESUME, GOAWAY, ERROR = 0x06, 0x07, 0x08, 0x09, 0x0A
# Backend kinds.
REQUEST, RESPONSE, NODE_PING, NODE_PONG, NODE_ERROR = 0x81, 0x82, 0x83, 0x84, 0x85

KIND_NAMES = {
    LOGIN: "LOGIN", LOGIN_OK: "LOGIN_OK", PING: "PING", PONG: "PONG", DATA: "DATA",
    PUSH: "PUSH", ACK: "ACK", RESUME: "RESUME", GOAWAY: "GOAWAY", ERROR: "ERROR",
    REQUEST: "REQUEST", RESPONSE: "RESPONSE", NODE_PING: "NODE_PING",
    NODE_PONG: "NODE_PONG", NODE_ERROR: "NODE_ERROR",
}

# Error codes.
BAD_FRAME, FRAME_TOO_LARGE, UNKNOWN_KIND = 1, 2, 3

U64_MAX = (1 << 64) - 1


class CheckFailed(Exception):
    """A check's expectation was not met."""


def kind_name(kind):
    return KIND_NAMES.get(kind, "0x%02x" % kind)


def encode(kind, ident, body=b"", flags=0):
    """One v1 frame."""
    return HEADER.pack(MIN_LEN + len(body), kind, flags, ident) + body


def routed(kind, ident, route, payload):
    """A backend frame whose body is a u64 BE route key followed by the payload."""
    return encode(kind, ident, struct.pack(">Q", route) + payload)


def pattern(n, seed=0):
    """n bytes that are not all alike, so a misplaced byte shows."""
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


class Conn:
    """A client connection with deadline-bounded reads."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(TIMEOUT)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, n, deadline, what):
        chunks = []
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed("timed out after %.0f s waiting for %s (%d of %d bytes)"
                                  % (TIMEOUT, what, got, n))
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(min(n - got, 1 << 20))
            except socket.timeout:
                raise CheckFailed("timed out after %.0f s waiting for %s (%d of %d bytes)"
                                  % (TIMEOUT, what, got, n))
            except ConnectionResetError:
                raise CheckFailed("connection reset while waiting for %s (%d of %d bytes)"
                                  % (what, got, n))
            if not chunk:
                raise CheckFailed("connection closed while waiting for %s (%d of %d bytes)"
                                  % (what, got, n))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_frame(self, what="a frame"):
        """Returns (kind, flags, id, body) of the next frame, within 5 s."""
        deadline = time.monotonic() + TIMEOUT
        header = self._recv_exact(HEADER_LEN, deadline, what)
        length, kind, flags, ident = HEADER.unpack(header)
        if length < MIN_LEN:
            raise CheckFailed("peer sent a frame with len %d < 10" % length)
        if length - MIN_LEN > MAX_BODY:
            raise CheckFailed("peer sent a frame with a %d-byte body, above max_body"
                              % (length - MIN_LEN))
        body = self._recv_exact(length - MIN_LEN, deadline, what + " body")
        return kind, flags, ident, body

    def expect_closed(self):
        """The peer closes the connection (EOF or reset) within 5 s and sends nothing more."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed("connection still open %.0f s after the ERROR" % TIMEOUT)
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                raise CheckFailed("connection still open %.0f s after the ERROR" % TIMEOUT)
            except (ConnectionResetError, BrokenPipeError):
                return
            if not data:
                return
            raise CheckFailed("expected close after the ERROR, got %d more bytes: %s"
                              % (len(data), data[:32].hex()))


def expect_frame(got, kind, ident, body=None):
    """Checks a (kind, flags, id, body) tuple against the expected kind, id and body."""
    g_kind, g_flags, g_id, g_body = got
    if g_kind != kind:
        extra = ""
        if g_kind == ERROR and len(g_body) >= 2:
            code = struct.unpack(">H", g_body[:2])[0]
            extra = " (code %d, %r)" % (code, g_body[2:].decode("utf-8", "replace"))
        raise CheckFailed("expected %s, got %s id %d%s"
                          % (kind_name(kind), kind_name(g_kind), g_id, extra))
    if g_id != ident:
        raise CheckFailed("expected %s id %d, got id %d" % (kind_name(kind), ident, g_id))
    if g_flags != 0:
        raise CheckFailed("%s id %d has flags 0x%02x, expected 0 in v1"
                          % (kind_name(kind), ident, g_flags))
    if body is not None and g_body != body:
        raise CheckFailed("%s id %d: body of %d bytes differs from the expected %d bytes%s"
                          % (kind_name(kind), ident, len(g_body), len(body),
                             first_difference(g_body, body)))


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return " (first difference at byte %d: 0x%02x vs 0x%02x)" % (i, x, y)
    return ""


def expect_error(got, code, ids):
    """Checks an ERROR frame: its code, and that its id is one of `ids`."""
    kind, flags, ident, body = got
    if kind != ERROR:
        raise CheckFailed("expected ERROR code %d, got %s id %d" % (code, kind_name(kind), ident))
    if len(body) < 2:
        raise CheckFailed("ERROR body of %d bytes is shorter than its u16 code" % len(body))
    got_code = struct.unpack(">H", body[:2])[0]
    try:
        reason = body[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise CheckFailed("ERROR reason is not valid UTF-8")
    if got_code != code:
        raise CheckFailed("expected ERROR code %d, got code %d (%r)" % (code, got_code, reason))
    if ident not in ids:
        raise CheckFailed("ERROR code %d has id %d, expected %s"
                          % (code, ident, " or ".join(str(i) for i in ids)))


# --- checks ------------------------------------------------------------------------------


def check_data_echo(addr):
    cases = [
        (1, b"hello"),
        (0, b""),
        (2, b""),
        (U64_MAX, b"max id"),
        (0x0102030405060708, pattern(256)),
        (42, "héllo wörld".encode("utf-8")),
        (60_000, pattern(60_000, seed=3)),
        (3, pattern(MAX_BODY, seed=5)),
    ]
    with Conn(addr) as c:
        for ident, body in cases:
            c.send(encode(DATA, ident, body))
            expect_frame(c.read_frame("DATA id %d" % ident), DATA, ident, body)


def check_data_pipelined(addr):
    """Many frames in one write; the replies are matched by id (order not required)."""
    frames = []
    expected = {}
    for i in range(200):
        ident = 1000 + i
        if i % 50 == 7:
            body = pattern(60_000, seed=i)
        elif i % 10 == 0:
            body = b""
        else:
            body = pattern(i % 97, seed=i)
        frames.append(encode(DATA, ident, body))
        expected[ident] = body
    blob = b"".join(frames)
    with Conn(addr) as c:
        # Write from a thread so that a peer which answers while we are still writing
        # cannot deadlock us on full socket buffers.
        errors = []

        def writer():
            try:
                c.sock.sendall(blob)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        seen = set()
        while len(seen) < len(expected):
            kind, flags, ident, body = c.read_frame(
                "pipelined reply %d of %d" % (len(seen) + 1, len(expected)))
            if ident not in expected or ident in seen:
                raise CheckFailed("unexpected or duplicate reply %s id %d" % (kind_name(kind), ident))
            expect_frame((kind, flags, ident, body), DATA, ident, expected[ident])
            seen.add(ident)
        t.join(TIMEOUT)
        if errors:
            raise CheckFailed("write failed: %s" % errors[0])


def check_ping(addr):
    with Conn(addr) as c:
        for ident in (0, 7, U64_MAX):
            c.send(encode(PING, ident))
            expect_frame(c.read_frame("PONG id %d" % ident), PONG, ident, b"")


def check_login(addr):
    with Conn(addr) as c:
        c.send(encode(LOGIN, 77, b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0."))
        got = c.read_frame("LOGIN_OK")
        expect_frame(got, LOGIN_OK, 77)
        try:
            doc = json.loads(got[3].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckFailed("LOGIN_OK body is not JSON (%s): %r" % (e, got[3][:100]))
        if not isinstance(doc, dict):
            raise CheckFailed("LOGIN_OK body is not a JSON object: %r" % doc)
        missing = [k for k in ("session", "resume_token", "heartbeat_s") if k not in doc]
        if missing:
            raise CheckFailed("LOGIN_OK JSON lacks %s: %r" % (", ".join(missing), doc))
        if not isinstance(doc["session"], str) or not doc["session"]:
            raise CheckFailed("session is not a non-empty string: %r" % doc)
        if not isinstance(doc["resume_token"], str):
            raise CheckFailed("resume_token is not a string: %r" % doc)
        hb = doc["heartbeat_s"]
        if isinstance(hb, bool) or not isinstance(hb, int) or hb <= 0:
            raise CheckFailed("heartbeat_s is not a positive integer: %r" % doc)


def check_request(addr):
    route = 0x0000000100000002
    cases = [
        (5, route, b"abc"),
        (6, route, b""),
        (U64_MAX, U64_MAX, pattern(1000)),
        (8, 0, pattern(60_000, seed=9)),
    ]
    with Conn(addr) as c:
        for ident, r, payload in cases:
            c.send(routed(REQUEST, ident, r, payload))
            want = struct.pack(">Q", r) + payload
            expect_frame(c.read_frame("RESPONSE id %d" % ident), RESPONSE, ident, want)


def check_node_ping(addr):
    with Conn(addr) as c:
        for ident in (9, 0, U64_MAX):
            c.send(encode(NODE_PING, ident))
            expect_frame(c.read_frame("NODE_PONG id %d" % ident), NODE_PONG, ident, b"")


def check_byte_at_a_time(addr):
    body = b"one byte at a time"
    frame = encode(DATA, 31337, body)
    with Conn(addr) as c:
        for i in range(len(frame)):
            c.send(frame[i:i + 1])
            time.sleep(0.005)
        expect_frame(c.read_frame("DATA id 31337"), DATA, 31337, body)


def bad_client(payload, code, ids):
    def check(addr):
        with Conn(addr) as c:
            c.send(payload)
            expect_error(c.read_frame("ERROR code %d" % code), code, ids)
            c.expect_closed()
    return check


def fresh_echo(addr):
    with Conn(addr) as c:
        c.send(encode(DATA, 4242, b"still alive"))
        expect_frame(c.read_frame("DATA id 4242"), DATA, 4242, b"still alive")


# len = 9 and the 9 bytes it announces: kind DATA, flags 0, and 7 bytes of a would-be id.
BAD_LEN_9 = struct.pack(">IBB", 9, DATA, 0) + b"\x00" * 7
# len = 0: nothing follows.
BAD_LEN_0 = struct.pack(">I", 0)
# A header announcing a 65,537-byte body; the body is never sent.
TOO_LARGE = HEADER.pack(MIN_LEN + MAX_BODY + 1, DATA, 0, 99)
# Kind 0x7f, id 1234, empty body.
UNKNOWN = encode(0x7F, 1234)

CHECKS = [
    ("data echo", check_data_echo),
    ("data pipelined in one write", check_data_pipelined),
    ("ping pong", check_ping),
    ("login login_ok", check_login),
    ("request response", check_request),
    ("node_ping node_pong", check_node_ping),
    ("frame written one byte at a time", check_byte_at_a_time),
    ("len 9 -> ERROR 1 and close", bad_client(BAD_LEN_9, BAD_FRAME, (0,))),
    ("fresh connection echoes after len 9", fresh_echo),
    ("len 0 -> ERROR 1 and close", bad_client(BAD_LEN_0, BAD_FRAME, (0,))),
    ("fresh connection echoes after len 0", fresh_echo),
    ("65537-byte body announced -> ERROR 2 and close",
     bad_client(TOO_LARGE, FRAME_TOO_LARGE, (0, 99))),
    ("fresh connection echoes after too large", fresh_echo),
    ("unknown kind 0x7f id 1234 -> ERROR 3 id 1234 and close",
     bad_client(UNKNOWN, UNKNOWN_KIND, (1234,))),
    ("fresh connection echoes after unknown kind", fresh_echo),
]


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected HOST:PORT, got %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def main(argv):
    if len(argv) != 2:
        print("usage: %s HOST:PORT" % argv[0], file=sys.stderr)
        return 2
    try:
        addr = parse_addr(argv[1])
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    passed = failed = 0
    for name, check in CHECKS:
        try:
            check(addr)
        except CheckFailed as e:
            print("FAIL %s: %s" % (name, e))
            failed += 1
        except (OSError, ValueError, struct.error) as e:
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            failed += 1
        else:
            print("ok %s" % name)
            passed += 1
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
