#!/usr/bin/env python3
"""Samples and report for bench/c1m.sh.

    c1m_report.py --sample GATEWAY_PID STATE_PID   one JSON object: both RSS, sockstat, slabs
    c1m_report.py OUT_DIR SVG_PATH                 Markdown for doc/c1m.md; draws SVG_PATH

OUT_DIR holds one N.json per step (what c1m.sh saw: samples before the load and while N
connections were held, CPU ticks over a window, the loadgen command) and N.loadgen.json
(the loadgen summary). Per connection = (while held − before) ÷ N; the slopes are least
squares over the steps. Kernel memory is counted for both ends of each connection (client
and gateway sockets live on this host); the server's share is taken as half: both ends
hold the same objects (TCP socket, socket inode, dentry, file, epoll entry). Plain Python.
"""
import glob
import json
import os
import sys

# Slab caches an idle TCP connection's descriptor holds, at each end.
CACHES = ["TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi", "eventpoll_pwq"]
ANCHORS = [
    ("Go, one goroutine per connection (1M connection pairs)", 19e9),
    ("Go, single epoll loop (1M connection pairs)", 10e9),
]
MIB = 1048576


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def kernel_sample(s):
    """Adds to `s` what the kernel holds for sockets: sockstat's TCP line, the slab caches of
    CACHES, and /proc/meminfo's Slab lines (bench/lib/c1m_million.py uses it too)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()[1:]
                s["tcp"] = {p[i]: int(p[i + 1]) for i in range(0, len(p) - 1, 2)}
    slabs = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in CACHES:
                    slabs[p[0]] = {"active": int(p[1]), "objsize": int(p[3])}
    except OSError:
        pass  # not root: the Slab line of /proc/meminfo still counts
    s["slabs"] = slabs
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            if k in ("Slab", "SUnreclaim", "SReclaimable"):
                s[k] = int(v.split()[0])
    return s


def sample(gw, st):
    print(json.dumps(kernel_sample({"gateway_rss_kb": rss_kb(gw), "state_rss_kb": rss_kb(st)})))


def fit(xs, ys):
    """Least squares y = a + b x; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return 0.0, (ys[0] / xs[0] if xs and xs[0] else 0.0)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def slab_bytes(s):
    return sum(c["active"] * c["objsize"] for c in s["slabs"].values())


def measure(path):
    r = json.load(open(path))
    b, a, n = r["before"], r["after"], r["n"]
    lg = json.load(open(path.replace(".json", ".loadgen.json")))
    cpu = r["cpu"]
    core = lambda t: 100.0 * t / cpu["clk_tck"] / cpu["seconds"]
    m = {
        "n": n, "step": r["step"], "procs": r["procs"], "hold_s": r["hold_s"], "command": r["command"],
        "gw_rss": a["gateway_rss_kb"] * 1024, "gw_delta": (a["gateway_rss_kb"] - b["gateway_rss_kb"]) * 1024,
        "st_rss": a["state_rss_kb"] * 1024, "st_delta": (a["state_rss_kb"] - b["state_rss_kb"]) * 1024,
        "tcp_inuse": a["tcp"]["inuse"] - b["tcp"]["inuse"],
        # A global counter that also moves with sockets still closing from the step before:
        # its delta only counts when positive.
        "sock_mem": max(0, a["tcp"]["mem"] - b["tcp"]["mem"]) * 4096,
        "sock_pages": a["tcp"]["mem"],
        "slab_named": slab_bytes(a) - slab_bytes(b) if a["slabs"] else None,
        "slab_all": (a["Slab"] - b["Slab"]) * 1024,
        "gw_cpu": core(cpu["gateway_ticks"]), "st_cpu": core(cpu["state_ticks"]),
        "per_cache": {k: (a["slabs"][k]["active"] - b["slabs"].get(k, {"active": 0})["active"]) * a["slabs"][k]["objsize"]
                      for k in a["slabs"]},
        "open_end": r["open_end"], "online_end": r["online_end"],
        "lg_ok": r["loadgen_status"] == 0, "lg": lg,
        "base_fds": r["gateway_base_fds"], "hard": r["hard_nofile"],
    }
    return m


def svg(rows, fits, path):
    """Memory against connections: measured points and fitted lines, one colour per part."""
    W, H, L, R, T, B = 720, 420, 70, 200, 30, 50
    xmax = max(r["n"] for r in rows) * 1.05
    series = [
        ("kernel, server half (slab)", "#d62728", lambda r: r["kernel"] / MIB, fits["kernel"]),
        ("tether-state RSS", "#1f77b4", lambda r: r["st_rss"] / MIB, fits["st"]),
        ("tether-gateway RSS", "#2ca02c", lambda r: r["gw_rss"] / MIB, fits["gw"]),
    ]
    ymax = max(f(r) for _, _, f, _ in series for r in rows) * 1.15
    X = lambda x: L + (W - L - R) * x / xmax
    Y = lambda y: H - B - (H - T - B) * y / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="18" font-size="14">Memory with N idle logged-in connections (bench/c1m.sh)</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    for i in range(6):
        x = xmax * i / 5
        out.append(f'<text x="{X(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x / 1000:.0f}k</text>')
        y = ymax * i / 5
        out.append(f'<line x1="{L}" y1="{Y(y):.1f}" x2="{W - R}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">connections</text>')
    out.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">MiB</text>')
    for i, (name, colour, f, (a, b)) in enumerate(series):
        out.append(f'<line x1="{X(0):.1f}" y1="{Y(a / MIB):.1f}" x2="{X(xmax):.1f}" y2="{Y((a + b * xmax) / MIB):.1f}" '
                   f'stroke="{colour}" stroke-dasharray="4 3"/>')
        for r in rows:
            out.append(f'<circle cx="{X(r["n"]):.1f}" cy="{Y(f(r)):.1f}" r="4" fill="{colour}"/>')
        ly = T + 20 + 36 * i
        out.append(f'<circle cx="{W - R + 16}" cy="{ly - 4}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{W - R + 26}" y="{ly}">{name}</text>')
        out.append(f'<text x="{W - R + 26}" y="{ly + 15}" fill="#555">{b:.0f} B per connection</text>')
    out.append(f'<text x="{W - R + 16}" y="{T + 20 + 36 * 3 + 10}" fill="#555">dots measured, dashes fitted</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def report(out, svg_path):
    rows = sorted((measure(p) for p in glob.glob(os.path.join(out, "*.json"))
                   if not p.endswith(".loadgen.json")), key=lambda r: r["n"])
    for r in rows:
        # The server's share of kernel memory: half of what both ends hold.
        k = r["slab_named"] if r["slab_named"] is not None else r["slab_all"]
        r["kernel"] = (k + r["sock_mem"]) / 2
    ns = [r["n"] for r in rows]
    fits = {"gw": fit(ns, [r["gw_delta"] for r in rows]), "st": fit(ns, [r["st_delta"] for r in rows]),
            "kernel": fit(ns, [r["kernel"] for r in rows]), "slab_all": fit(ns, [r["slab_all"] / 2 for r in rows])}
    # The lines drawn are of the absolute RSS: same slope, intercept at the RSS with no client.
    draw = dict(fits)
    draw["gw"] = (rows[0]["gw_rss"] - rows[0]["gw_delta"], fits["gw"][1])
    draw["st"] = (rows[0]["st_rss"] - rows[0]["st_delta"], fits["st"][1])
    svg(rows, draw, svg_path)
    setup = open(os.path.join(out, "setup.txt")).read().strip() if os.path.exists(os.path.join(out, "setup.txt")) else ""

    print(f"Run: {setup}\n")
    print("| connections | loadgen procs | gateway RSS MiB | gateway B/conn | state RSS MiB | state B/conn | TCP sockets (both ends) | kernel slab, both ends, MiB | kernel B/conn, server half | sockstat TCP mem pages | gateway CPU % | state CPU % | end check | open / online at the end |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    failed = []
    cpu = lambda pct: f"{pct:.1f}" if pct >= 0.1 else "< 0.1"
    for r in rows:
        lg = r["lg"]
        h = lg.get("hold") or {}
        check = f"{h.get('answered', 0):,}/{h.get('checked', 0):,} answered"
        ok = r["lg_ok"] and lg["conns"]["dropped"] == 0 and r["open_end"] == r["n"] and r["online_end"] == r["n"]
        if not ok:
            failed.append(str(r["n"]))
        k = r["slab_named"] if r["slab_named"] is not None else r["slab_all"]
        print(f"| {r['n']:,}{' (max)' if r['step'] == 'max' else ''} | {r['procs']} | {r['gw_rss'] / MIB:.1f} | {r['gw_delta'] / r['n']:.0f} | "
              f"{r['st_rss'] / MIB:.1f} | {r['st_delta'] / r['n']:.0f} | {r['tcp_inuse']:,} | {k / MIB:.1f} | {r['kernel'] / r['n']:,.0f} | "
              f"{r['sock_pages']} | {cpu(r['gw_cpu'])} | {cpu(r['st_cpu'])} | {check} | {r['open_end']:,} / {r['online_end']:,} |")
    last = rows[-1]
    print(f"\nKernel slab caches at {last['n']:,} connections (both ends), bytes per connection: " +
          ", ".join(f"{k} {v / last['n']:.0f}" for k, v in sorted(last["per_cache"].items(), key=lambda kv: -kv[1])) +
          f"; all slab (/proc/meminfo Slab, noisier: anything else on the machine moves it) {last['slab_all'] / last['n']:.0f}.")
    gw_b, st_b, k_b = fits["gw"][1], fits["st"][1], fits["kernel"][1]
    print("\nFitted slopes (least squares over the steps):\n")
    print(f"- tether-gateway: **{gw_b:.1f} B** per idle connection (user space, RSS)")
    print(f"- tether-state: **{st_b:.1f} B** per session (RSS)")
    print(f"- kernel, the server's half of both ends: **{k_b:,.0f} B** per connection "
          f"(all of /proc/meminfo Slab instead: {fits['slab_all'][1]:,.0f} B)")
    M = 1_000_000
    gw0 = rows[0]["gw_rss"] - rows[0]["gw_delta"]
    st0 = rows[0]["st_rss"] - rows[0]["st_delta"]
    proj = {"gw": gw0 + gw_b * M, "st": st0 + st_b * M, "kernel": k_b * M}
    total = sum(proj.values())
    print(f"\nProjection to 1,000,000 idle connections on one server (RSS with no client + slope × 1M):\n")
    print("| part | 1M projection |")
    print("|---|---:|")
    print(f"| tether-gateway RSS | {proj['gw'] / 1e9:.3f} GB |")
    print(f"| tether-state RSS | {proj['st'] / 1e9:.3f} GB |")
    print(f"| kernel (sockets, inodes, dentries, files, epoll entries) | {proj['kernel'] / 1e9:.2f} GB |")
    print(f"| **server side in total** | **{total / 1e9:.2f} GB** (target ≤ 4.5 GB) |")
    print("\nTargets: gateway ≤ 128 B per idle connection: " + ("met" if gw_b <= 128 else "NOT met") +
          f" ({gw_b:.0f} B); state ≤ 256 B per session: " + ("met" if st_b <= 256 else "NOT met") +
          f" ({st_b:.0f} B); 1M ≤ 4.5 GB server side: " + ("met" if total <= 4.5e9 else "NOT met") + f" ({total / 1e9:.2f} GB).")
    for name, bytes_ in ANCHORS:
        print(f"- vs {name} ≈ {bytes_ / 1e9:.0f} GB: tether {total / bytes_:.2f}× (theirs counts both ends of each pair)")
    print(f"\nChart: {svg_path}\n\nCommands (SECRET is a file holding the JWT key; the gateway's hard RLIMIT_NOFILE was "
          f"{last['hard']:,}, it held {last['base_fds']} descriptors with no client):\n\n```")
    for r in rows:
        print(r["command"])
    print("```")
    if failed:
        print(f"\nFAILED steps (loadgen failed, a connection dropped, or fewer open/online at the end): {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "--sample":
        sample(sys.argv[2], sys.argv[3])
    else:
        report(sys.argv[1], sys.argv[2])
