#!/usr/bin/env python3
"""A "black hole" backend node for the fault benches: it speaks the v1 node link
(doc/protocol.md, "Backend kinds"), answers every NODE_PING with NODE_PONG at once, so
gateways' health checks see it up, and never answers a REQUEST. It reads everything (a node
that stopped reading would be reset by the gateway's stall check, which is another fault).

    blackhole_node.py --listen 127.0.0.1:PORT [--stats FILE]

On SIGTERM or SIGINT it writes its counts to FILE as JSON and exits 0:
{"connections", "pings", "requests", "request_bytes", "other_frames"}.
One thread, selectors; standard library only.
"""
import argparse
import json
import selectors
import signal
import socket
import sys

import v1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--stats", help="where to write the counts on exit (JSON)")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)

    counts = {"connections": 0, "pings": 0, "requests": 0, "request_bytes": 0,
              "other_frames": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    # Per connection: its decoder and the bytes not yet written (PONGs are tiny; a peer
    # that does not read them only delays its own pongs).
    conns = {}

    def close(sock):
        sel.unregister(sock)
        conns.pop(sock, None)
        sock.close()

    while not stop:
        try:
            events = sel.select(timeout=0.2)
        except InterruptedError:
            continue
        for key, mask in events:
            sock = key.fileobj
            if sock is listener:
                try:
                    peer, _ = listener.accept()
                except BlockingIOError:
                    continue
                peer.setblocking(False)
                peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[peer] = [v1.Decoder(), bytearray()]
                sel.register(peer, selectors.EVENT_READ, None)
                counts["connections"] += 1
                continue
            decoder, out = conns[sock]
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    close(sock)
                    continue
                if data == b"":
                    close(sock)
                    continue
                if data:
                    decoder.feed(data)
                    try:
                        frames = decoder.frames()
                    except ValueError:
                        close(sock)
                        continue
                    for kind, _flags, frame_id, body in frames:
                        if kind == v1.NODE_PING:
                            counts["pings"] += 1
                            out += v1.frame(v1.NODE_PONG, frame_id)
                        elif kind == v1.REQUEST:
                            counts["requests"] += 1
                            counts["request_bytes"] += len(body)
                        else:
                            counts["other_frames"] += 1
            if out:
                try:
                    sent = sock.send(out)
                    del out[:sent]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    close(sock)
                    continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            if sock in conns and key.events != want:
                sel.modify(sock, want, None)

    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(counts, f)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
