#!/usr/bin/env python3
"""Clients nobody in Tether wrote, against the gateway's TLS and WebSocket listeners:
Python's `ssl` module and the `websockets` library (`pip install websockets`).

Usage: python3 e2e/transport_clients.py MODE ARGS...

  session TRANSPORT TARGET CAFILE TOKEN PUSH_URL DEVICE
      TRANSPORT is tls (TARGET host:port), ws or wss (TARGET a URL). Logs in with TOKEN,
      echoes DATA, PINGs, asks the push API at PUSH_URL to push to DEVICE and ACKs the PUSH,
      then sends a kind a client may not send and expects ERROR UNKNOWN_KIND, then the close.
  tls-versions HOST:PORT CAFILE
      TLS 1.2 and TLS 1.3 each forced; each resumes its session on a second connection.
  ws-conformance URL CAFILE ORIGIN_OK
      Pings, fragmentation, text, a message past the limit, bad origins and subprotocols.
  hold HOST:PORT CAFILE
      One TLS connection: PING, print `ok first`, wait for a line on stdin, PING again on
      the same connection, print `ok second` (a certificate reload must not drop it).

The v1 header is packed here with `struct` (len u32 BE, kind u8, flags u8, id u64 BE). Every
check prints `ok NAME`; any failure raises. The last line is `ok`.
"""

import base64
import json
import socket
import ssl
import struct
import sys
import urllib.request

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

HEADER = struct.Struct(">IBBQ")
LOGIN, LOGIN_OK, PING, PONG, DATA, PUSH, ACK, GOAWAY, ERROR = 1, 2, 3, 4, 5, 6, 7, 9, 10
TIMEOUT = 10


def v1(kind, id, body=b""):
    return HEADER.pack(10 + len(body), kind, 0, id) + body


def parse(data):
    """Whole v1 frames in `data`: [(kind, id, body)] and the bytes left."""
    frames = []
    while len(data) >= 14:
        length, kind, _flags, id = HEADER.unpack_from(data)
        if len(data) < 4 + length:
            break
        frames.append((kind, id, data[14:4 + length]))
        data = data[4 + length:]
    return frames, data


class TlsStream:
    """v1 frames over an `ssl` socket."""

    def __init__(self, target, cafile):
        host, port = target.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        while True:
            frames, self.buf = parse(self.buf)
            if frames:
                # One at a time: put the rest back.
                first, rest = frames[0], frames[1:]
                self.buf = b"".join(v1(k, i, b) for k, i, b in rest) + self.buf
                return first
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def expect_closed(self):
        try:
            assert self.sock.recv(65536) == b"", "more data after the closing ERROR"
        except (ssl.SSLEOFError, ConnectionResetError):
            pass


class WsStream:
    """v1 frames in binary messages over `websockets`."""

    def __init__(self, url, cafile):
        kw = {}
        if url.startswith("wss:"):
            kw["ssl"] = ssl.create_default_context(cafile=cafile)
        self.ws = connect(url, subprotocols=["tether.v1"], proxy=None, open_timeout=TIMEOUT,
                          close_timeout=TIMEOUT, ping_interval=None, **kw)
        assert self.ws.subprotocol == "tether.v1", self.ws.subprotocol
        self.pending = []

    def send(self, data):
        self.ws.send(data)

    def recv(self):
        while not self.pending:
            message = self.ws.recv(timeout=TIMEOUT)
            assert isinstance(message, bytes), "v1 frames come in binary messages"
            frames, rest = parse(message)
            assert frames and rest == b"", "a message holds whole v1 frames"
            self.pending.extend(frames)
        return self.pending.pop(0)

    def expect_closed(self, code):
        try:
            extra = self.ws.recv(timeout=TIMEOUT)
            raise AssertionError(f"more data after the closing ERROR: {extra!r}")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == code, e


def post_push(push_url, device, payload):
    body = json.dumps({"device_id": device, "payload": base64.b64encode(payload).decode()})
    request = urllib.request.Request(push_url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return json.loads(answer.read())


def session(transport, target, cafile, token, push_url, device):
    stream = TlsStream(target, cafile) if transport == "tls" else WsStream(target, cafile)
    stream.send(v1(LOGIN, 1, token.encode()))
    kind, id, body = stream.recv()
    assert (kind, id) == (LOGIN_OK, 1), (kind, id, body)
    assert len(json.loads(body)["session"]) == 16, body
    print("ok login")
    # Two requests in one write (one message over WebSocket), answered in order of the node.
    stream.send(v1(DATA, 2, b"echo me") + v1(PING, 3))
    replies = sorted([stream.recv(), stream.recv()])
    assert replies == [(PONG, 3, b""), (DATA, 2, b"echo me")], replies
    print("ok echo and ping")
    answer = post_push(push_url, device, b"pushed to " + transport.encode())
    assert answer["status"] == "delivered", answer
    kind, msg_id, body = stream.recv()
    assert (kind, msg_id, body) == (PUSH, answer["msg_id"], b"pushed to " + transport.encode())
    stream.send(v1(ACK, msg_id))
    stream.send(v1(PING, 4))
    assert stream.recv() == (PONG, 4, b"")
    print("ok push and ack")
    stream.send(v1(GOAWAY, 5))  # a kind only the gateway sends
    kind, id, body = stream.recv()
    assert (kind, id, struct.unpack(">H", body[:2])[0]) == (ERROR, 5, 3), (kind, id, body)
    if transport == "tls":
        stream.expect_closed()
    else:
        stream.expect_closed(1008)
    print("ok error closes")


def tls_versions(target, cafile):
    host, port = target.rsplit(":", 1)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ctx.maximum_version = version
        saved = None
        for attempt in range(2):
            raw = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=saved)
            assert s.version() == name, s.version()
            s.sendall(v1(PING, 7))
            data = b""
            while len(data) < 14:
                data += s.recv(100)
            assert parse(data)[0] == [(PONG, 7, b"")], data
            assert s.session_reused == (attempt == 1), (name, attempt, s.session_reused)
            saved = s.session
            s.close()
        print(f"ok {name} and its resumption")


def ws_conformance(url, cafile, origin_ok):
    stream = WsStream(url, cafile)
    ws = stream.ws
    assert ws.ping(b"tether").wait(TIMEOUT), "no pong"
    print("ok ping answered")
    frame = v1(PING, 1)
    ws.send([frame[:3], frame[3:9], frame[9:]])  # one message in three fragments
    assert stream.recv() == (PONG, 1, b"")
    print("ok fragmented message")
    ws.send(v1(PING, 2) + v1(PING, 3))
    assert [stream.recv(), stream.recv()] == [(PONG, 2, b""), (PONG, 3, b"")]
    print("ok several frames in one message")
    ws.close(4001, "bye é")
    assert ws.close_code == 4001, ws.close_code
    print("ok close echoed")

    stream = WsStream(url, cafile)
    stream.ws.send("text is not for Tether")
    stream.expect_closed(1003)
    print("ok text refused with 1003")

    stream = WsStream(url, cafile)
    stream.ws.send(v1(DATA, 9, b"x" * 70_000))
    stream.expect_closed(1009)
    print("ok message past the limit refused with 1009")

    kw = {"ssl": ssl.create_default_context(cafile=cafile)} if url.startswith("wss:") else {}
    for subprotocols, origin, status in (
        (["tether.v1"], "https://evil.example", 403),
        (None, None, 400),
        (["chat"], None, 400),
    ):
        try:
            connect(url, subprotocols=subprotocols, origin=origin, proxy=None,
                    open_timeout=TIMEOUT, **kw)
            raise AssertionError(f"accepted {subprotocols} {origin}")
        except InvalidStatus as e:
            assert e.response.status_code == status, e
    with connect(url, subprotocols=["tether.v1"], origin=origin_ok, proxy=None,
                 open_timeout=TIMEOUT, **kw) as ws:
        ws.send(v1(PING, 5))
        assert parse(ws.recv(timeout=TIMEOUT))[0] == [(PONG, 5, b"")]
    print("ok origins and subprotocols")


def hold(target, cafile):
    stream = TlsStream(target, cafile)
    for id, name in ((1, "first"), (2, "second")):
        if id == 2:
            sys.stdin.readline()
        stream.send(v1(PING, id))
        assert stream.recv() == (PONG, id, b"")
        print(f"ok {name}", flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    modes = {"session": session, "tls-versions": tls_versions, "ws-conformance": ws_conformance,
             "hold": hold}
    modes[mode](*args)
    print("ok")


if __name__ == "__main__":
    main()
