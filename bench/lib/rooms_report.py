#!/usr/bin/env python3
"""The Markdown table of bench/rooms.sh: one row per system measured, from OUT/<system>.json
(CPU ticks and RSS of the server processes over the steady window) and
OUT/<system>.loadgen.json (the loadgen summary's `rooms` section)."""

import json
import os
import sys


def fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def main(out):
    rows = []
    for system in ("tether", "nats", "nchan"):
        path = os.path.join(out, f"{system}.json")
        lg_path = os.path.join(out, f"{system}.loadgen.json")
        if not os.path.exists(path):
            continue
        run = json.load(open(path))
        lg = json.load(open(lg_path)) if os.path.exists(lg_path) else {}
        rooms = lg.get("rooms") or {}
        per_s = rooms.get("deliveries_per_s") or 0.0
        window = run["window_s"] or 1.0
        cpu = []
        rss = []
        for group, g in run["groups"].items():
            cpu_s = g["ticks"] / run["clk_tck"]
            # CPU per delivery: the group's CPU rate over the window / the delivery rate.
            us = (cpu_s / window) / per_s * 1e6 if per_s > 0 else None
            cpu.append(f"{group} {fmt(us, '{:.2f}')} µs ({cpu_s / window * 100:.0f} %)")
            grown = (g["rss1_kib"] - g["rss0_kib"]) * 1024 / max(run["members"], 1)
            rss.append(f"{group} {grown:,.0f} B")
        lat = rooms.get("latency_us") or {}
        conns = lg.get("conns") or {}
        expected = run["members"] * run["rate"]
        # One room that every member follows: each publish is owed to every member.
        owed = (rooms.get("published") or 0) * run["members"]
        unique = (rooms.get("deliveries") or 0) - (rooms.get("duplicates") or 0)
        lg_cpu = lg.get("cpu") or {}
        lg_core = (lg_cpu.get("user_s", 0) + lg_cpu.get("sys_s", 0)) / max(lg.get("duration_s") or 1, 1)
        rows.append(
            [
                system,
                f"{conns.get('established', 0):,} / {run['members']:,}",
                f"{fmt(per_s)} ({per_s / expected * 100:.1f} %)" if expected else fmt(per_s),
                "; ".join(cpu),
                " / ".join(fmt(lat.get(k)) for k in ("p50", "p99", "p999", "max")),
                "; ".join(rss),
                fmt(rooms.get("messages_per_frame"), "{:.2f}"),
                f"{rooms.get('gaps', 0)} ({rooms.get('missing', 0)} missing)",
                str(rooms.get("duplicates", 0)),
                f"{rooms.get('published', 0)} ({rooms.get('publish_failed', 0)} failed)",
                f"{unique / owed * 100:.1f} %" if owed else "-",
                f"{lg_core * 100:.0f} %",
            ]
        )
    if not rows:
        print("no system was measured")
        return 1
    first = json.load(open(os.path.join(out, f"{rows[0][0]}.json")))
    print(
        f"\n{first['members']:,} members of one room, {first['rate']} publishes/s of "
        f"{first['size']} B (expected {first['members'] * first['rate']:,} deliveries/s), "
        f"Tether room_merge_ms {first['merge_ms']}, loadgen in {first['procs']} processes\n"
    )
    head = [
        "system",
        "members in",
        "deliveries/s",
        "server CPU per delivery (share of a core)",
        "publish→client µs p50 / p99 / p99.9 / max",
        "RSS per member",
        "msgs/frame",
        "gaps",
        "dups",
        "published",
        "delivered of owed",
        "loadgen CPU",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
