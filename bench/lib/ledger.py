#!/usr/bin/env python3
"""The soak's bookkeeping client: devices that log in through the gateways, send echo
requests, take pushes, and keep a ledger of every request and every push, so that at the end
each one is accounted for — or named as lost without a trace.

    ledger.py --gateways HOST:PORT[,…] --push-url http://HOST:PORT --secret-file FILE
              --seconds S --out FILE.json [--devices N] [--rate R] [--payload B]
              [--push-rate P] [--slow N] [--slow-payload B] [--slow-rate R]
              [--slow-read BYTES_PER_S] [--drain S] [--push-settle S] [--prefix P]

Devices (`--devices`, named PREFIX-dev-I): each logs in with an HS256 token (RESUME with its
token after a reconnect, LOGIN afresh when that is refused), sends `--rate` DATA requests a
second flagged resend-safe, PINGs every 5 s, ACKs every PUSH. When its connection ends it
reconnects to the next gateway (backing off on refusals). Slow readers (`--slow`, named
PREFIX-slow-I) do the same with `--slow-payload`-byte requests at `--slow-rate` a second but
read at most `--slow-read` bytes a second through a 4 KiB receive buffer, so the gateway
queues their replies (up to its max_queued_bytes, then SLOW_CONSUMER and close). A poster
thread POSTs `--push-rate` pushes a second to the devices through the push API.

A request ends in exactly one of: answered (DATA with its id; the echo is checked), errored
(ERROR with its id), lost (in flight when its connection ended: the client saw that), or
unanswered (still in flight after `--drain` at the end, on a live connection: silent).
A push the API answered `delivered` or `queued` must reach its device by the end (after
`--push-settle` seconds more of listening), or still be pending for it at the daemon
(`GET /v1/sessions/{device}`): otherwise it is missing (silent). Refused POSTs (the daemon
down, 429, 503) and `offline` answers are counted, not expected.

At the end writes the ledger as JSON to --out and exits 0 (the soak judges it).
Standard library only; one thread per connection.
"""
import argparse
import base64
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

import v1

PING_EVERY = 5.0
LOGIN_WAIT = 5.0


class Counts:
    """A thread-safe bag of named counters."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}

    def add(self, name, k=1):
        if k:
            with self.lock:
                self.n[name] = self.n.get(name, 0) + k

    def get(self, name):
        with self.lock:
            return self.n.get(name, 0)

    def snapshot(self):
        with self.lock:
            return dict(sorted(self.n.items()))


class Run:
    """What every client thread shares: the flags, the clock, the stop events."""

    def __init__(self, args):
        self.args = args
        self.gateways = [g.strip() for g in args.gateways.split(",") if g.strip()]
        with open(args.secret_file, "rb") as f:
            self.secret = f.read().rstrip(b"\r\n")
        self.sending = threading.Event()   # set while requests and pushes are sent
        self.sending.set()
        self.done = threading.Event()      # set when every client must close
        self.requests = Counts()           # devices: sent, answered, errored, lost, unanswered
        self.slow = Counts()               # slow readers: the same, plus slow_consumer
        self.events = Counts()             # logins, resumes, refusals, errors by name
        self.received = {}                 # device -> {msg_id: payload}
        self.received_lock = threading.Lock()
        self.verify_failures = Counts()


class Client(threading.Thread):
    """One device (or slow reader): its connection, its session, its requests in flight."""

    def __init__(self, run, name, index, slow):
        super().__init__(name=name, daemon=True)
        self.run_ = run
        self.device = name
        self.index = index
        self.slow = slow
        a = run.args
        self.payload = a.slow_payload if slow else a.payload
        self.rate = a.slow_rate if slow else a.rate
        self.ledger = run.slow if slow else run.requests
        self.session = None      # resume token
        self.next_id = 1
        self.outstanding = {}    # id -> payload
        self.gateway = index     # which gateway to try next
        self.sock = None
        self.decoder = None

    # -- the connection ------------------------------------------------------------------
    def connect(self):
        gateways = self.run_.gateways
        addr = gateways[self.gateway % len(gateways)]
        self.gateway += 1
        host, port = addr.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2.0)
        try:
            sock.connect((host, int(port)))
        except OSError:
            sock.close()
            self.run_.events.add("connect_failed")
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.05)
        self.sock = sock
        self.decoder = v1.Decoder()
        return True

    def close(self, why):
        """The connection ended: whatever was in flight on it is lost (and seen to be)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.ledger.add("lost", len(self.outstanding))
        self.outstanding.clear()
        self.run_.events.add(f"closed_{why}")

    def send(self, data):
        self.sock.settimeout(2.0)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(0.05)

    def frames(self, budget=1 << 16):
        """Frames read within the socket timeout (at most `budget` bytes); raises on EOF."""
        try:
            data = self.sock.recv(budget)
        except (socket.timeout, BlockingIOError, InterruptedError):
            return []
        if not data:
            raise ConnectionError("eof")
        self.decoder.feed(data)
        return self.decoder.frames()

    # -- logging in ----------------------------------------------------------------------
    def login(self):
        """LOGIN or RESUME until LOGIN_OK; False when the connection must go."""
        run = self.run_
        while not run.done.is_set():
            resuming = self.session is not None
            req = self.take_id()
            if resuming:
                self.send(v1.frame(v1.RESUME, req, self.session.encode()))
            else:
                self.send(v1.frame(v1.LOGIN, req, v1.token(run.secret, self.device).encode()))
            answer = self.await_login(req)
            if answer is None:
                run.events.add("login_timeout")
                return False
            kind, body = answer
            if kind == v1.LOGIN_OK:
                ok = json.loads(body)
                token = ok.get("resume_token") or None
                if resuming:
                    same = token is not None and token.split(".")[0] == self.session.split(".")[0]
                    run.events.add("resume_ok" if same else "resume_new_session")
                else:
                    run.events.add("login_ok")
                self.session = token
                return True
            code, reason = v1.error_body(body)
            run.events.add(f"{'resume' if resuming else 'login'}_{v1.error_name(code)}")
            if code in (11, 14):   # UNAVAILABLE, BUSY: the connection stays; again later
                wait = 0.2
                if reason.startswith("retry_after_ms="):
                    digits = reason[len("retry_after_ms="):].split(";")[0]
                    wait = int(digits) / 1000 if digits.isdigit() else 0.2
                time.sleep(wait * random.uniform(0.5, 1.5))
                continue
            if resuming and code == 5:   # the window passed: log in afresh next time
                self.session = None
            return False
        return False

    def await_login(self, req):
        """(kind, body) of the LOGIN_OK or ERROR answering `req`, or None after LOGIN_WAIT."""
        deadline = time.time() + LOGIN_WAIT
        while time.time() < deadline and not self.run_.done.is_set():
            for kind, _flags, fid, body in self.frames():
                if kind in (v1.LOGIN_OK, v1.ERROR) and fid == req:
                    return kind, body
                if kind == v1.ERROR and v1.error_body(body)[0] in v1.CLOSING:
                    return kind, body
                if kind == v1.PUSH:
                    self.on_push(fid, body)
        return None

    def take_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    # -- the load ------------------------------------------------------------------------
    def request(self):
        rid = self.take_id()
        body = struct.pack(">IQ", self.index, rid) + os.urandom(8) * (max(0, self.payload - 12) // 8)
        body = body[: self.payload] if len(body) >= self.payload else body + b"\0" * (self.payload - len(body))
        self.outstanding[rid] = body
        self.ledger.add("sent")
        self.send(v1.frame(v1.DATA, rid, body, flags=v1.FLAG_RESEND_SAFE))

    def on_push(self, msg_id, body):
        self.send(v1.frame(v1.ACK, msg_id))
        with self.run_.received_lock:
            seen = self.run_.received.setdefault(self.device, {})
            if msg_id in seen:
                self.run_.events.add("push_duplicate")
            seen[msg_id] = body

    def on_frame(self, kind, fid, body):
        """Returns False when the frame ends the connection."""
        run = self.run_
        if kind == v1.DATA:
            sent = self.outstanding.pop(fid, None)
            if sent is None:
                run.verify_failures.add("unknown_id")
            else:
                self.ledger.add("answered")
                if body != sent:
                    run.verify_failures.add("payload")
        elif kind == v1.ERROR:
            code, _ = v1.error_body(body)
            name = v1.error_name(code)
            if self.outstanding.pop(fid, None) is not None:
                self.ledger.add("errored")
                self.ledger.add(f"errored_{name}")
            if code in v1.CLOSING:
                if code == 9:
                    self.ledger.add("slow_consumer")
                run.events.add(f"closed_by_{name}")
                return False
        elif kind == v1.PUSH:
            self.on_push(fid, body)
        elif kind == v1.GOAWAY:
            run.events.add("goaway")
            return False
        return True

    def serve(self):
        """One logged-in connection, until it ends or the run does."""
        run = self.run_
        interval = 1.0 / self.rate if self.rate > 0 else None
        next_send = time.time()
        next_ping = time.time() + PING_EVERY
        read_budget = self.run_.args.slow_read
        while not run.done.is_set():
            now = time.time()
            if run.sending.is_set() and interval:
                while next_send <= now:
                    self.request()
                    next_send += interval
                # A loop that fell far behind does not send a burst.
                next_send = max(next_send, now - 1.0)
            if now >= next_ping:
                self.send(v1.frame(v1.PING, self.take_id()))
                next_ping = now + PING_EVERY
            if not run.sending.is_set() and not self.outstanding and run.pushes_done.is_set():
                return "done"
            if self.slow and run.sending.is_set():
                # Read at most read_budget bytes a second: a tenth every 100 ms. Once the
                # sending is over, read at full speed: the replies queued are still due.
                got = self.frames(max(1, read_budget // 10))
                time.sleep(0.1)
            else:
                got = self.frames()
            for kind, _flags, fid, body in got:
                if not self.on_frame(kind, fid, body):
                    return "server"
        return "done"

    def run(self):
        run = self.run_
        backoff = 0.1
        while not run.done.is_set():
            if not run.sending.is_set() and not self.outstanding and run.pushes_done.is_set():
                break
            if not self.connect():
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            try:
                if not self.login():
                    self.close("login")
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                why = self.serve()
            except (OSError, ConnectionError, ValueError) as e:
                why = "reset" if not isinstance(e, ValueError) else "bad_frame"
            if why == "done":
                break
            self.close(why)
            time.sleep(0.05)
        # The end: what is still in flight on a live connection was never answered.
        self.ledger.add("unanswered", len(self.outstanding))
        self.outstanding.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Poster(threading.Thread):
    """POSTs pushes to the devices through the push API at --push-rate."""

    def __init__(self, run, devices):
        super().__init__(name="poster", daemon=True)
        self.run_ = run
        self.devices = devices
        url = urllib.parse.urlsplit(run.args.push_url)
        self.host, self.port = url.hostname, url.port or 80
        self.accepted = {}   # device -> {msg_id: payload}
        self.counts = Counts()
        self.conn = None

    def post(self, device, payload):
        body = json.dumps({"device_id": device, "payload": base64.b64encode(payload).decode(),
                           "ttl_s": 3600})
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            self.conn.request("POST", "/v1/push", body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            self.counts.add("refused_unreachable")
            return
        if resp.status != 200:
            self.counts.add(f"refused_{resp.status}")
            return
        answer = json.loads(data)
        status = answer.get("status")
        self.counts.add(status or "unknown")
        if status in ("delivered", "queued"):
            self.accepted.setdefault(device, {})[answer["msg_id"]] = payload

    def run(self):
        run = self.run_
        rate = run.args.push_rate
        if rate <= 0:
            return
        seq = 0
        next_at = time.time()
        while run.sending.is_set():
            now = time.time()
            if now < next_at:
                time.sleep(min(next_at - now, 0.05))
                continue
            device = self.devices[seq % len(self.devices)]
            seq += 1
            self.counts.add("posted")
            self.post(device, b"ledger push %d" % seq)
            next_at = max(next_at + 1.0 / rate, now - 1.0)

    def pending(self, device):
        """The session's unacknowledged pushes at the daemon, or None if it cannot say."""
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            conn.request("GET", f"/v1/sessions/{urllib.parse.quote(device)}")
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
        except (OSError, http.client.HTTPException):
            return None
        if resp.status == 404:
            return 0
        if resp.status != 200:
            return None
        return json.loads(data).get("pending")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", required=True)
    p.add_argument("--push-url", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default="ledger")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--payload", type=int, default=256)
    p.add_argument("--push-rate", type=float, default=50.0)
    p.add_argument("--slow", type=int, default=4)
    p.add_argument("--slow-payload", type=int, default=16384)
    p.add_argument("--slow-rate", type=float, default=12.0)
    p.add_argument("--slow-read", type=int, default=131072)
    p.add_argument("--drain", type=float, default=4.0)
    p.add_argument("--push-settle", type=float, default=10.0)
    args = p.parse_args()

    run = Run(args)
    run.pushes_done = threading.Event()
    devices = [Client(run, f"{args.prefix}-dev-{i}", i, slow=False) for i in range(args.devices)]
    slow = [Client(run, f"{args.prefix}-slow-{i}", args.devices + i, slow=True) for i in range(args.slow)]
    poster = Poster(run, [d.device for d in devices])
    stop = []

    def on_signal(*_):
        stop.append(1)

    import signal
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.time()
    for c in devices + slow:
        c.start()
    poster.start()
    while time.time() - started < args.seconds and not stop:
        time.sleep(0.2)
    run.sending.clear()           # no new requests, no new pushes
    poster.join(10)
    # Requests: up to --drain for the answers; pushes: --push-settle more of listening.
    settle_end = time.time() + max(args.drain, args.push_settle)
    while time.time() < settle_end and not stop:
        with run.received_lock:
            got = sum(1 for d, ids in poster.accepted.items() for m in ids if m in run.received.get(d, {}))
        expected = sum(len(ids) for ids in poster.accepted.values())
        in_flight = sum(len(c.outstanding) for c in devices + slow)
        if got == expected and in_flight == 0 and time.time() - started > args.seconds + args.drain:
            break
        time.sleep(0.2)
    run.pushes_done.set()
    run.done.set()
    for c in devices + slow:
        c.join(10)

    # The pushes' ledger.
    missing, pending_total, unknown_pending = 0, 0, 0
    mismatched = 0
    per_device = {}
    for c in devices:
        accepted = poster.accepted.get(c.device, {})
        got = run.received.get(c.device, {})
        lost_ids = [m for m in accepted if m not in got]
        mismatched += sum(1 for m, body in accepted.items() if m in got and got[m] != body)
        pending = poster.pending(c.device) if lost_ids else 0
        if pending is None:
            unknown_pending += len(lost_ids)
            pending = 0
        pending_total += min(pending, len(lost_ids))
        gone = max(0, len(lost_ids) - pending)
        missing += gone
        per_device[c.device] = {"accepted": len(accepted), "received": len([m for m in accepted if m in got]),
                                "pending_at_end": pending, "missing": gone}
    pushes = poster.counts.snapshot()
    pushes.update({
        "accepted": sum(len(v) for v in poster.accepted.values()),
        "received": sum(d["received"] for d in per_device.values()),
        "pending_at_end": pending_total,
        "unknown_pending": unknown_pending,
        "missing": missing,
        "payload_mismatch": mismatched,
        "duplicates": run.events.get("push_duplicate"),
    })
    ledger = {
        "seconds": args.seconds,
        "devices": args.devices,
        "slow_readers": args.slow,
        "requests": run.requests.snapshot(),
        "slow": run.slow.snapshot(),
        "pushes": pushes,
        "events": run.events.snapshot(),
        "verify_failures": run.verify_failures.snapshot(),
        "per_device": per_device,
    }
    for q in (ledger["requests"], ledger["slow"]):
        for k in ("sent", "answered", "errored", "lost", "unanswered"):
            q.setdefault(k, 0)
    with open(args.out, "w") as f:
        json.dump(ledger, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
