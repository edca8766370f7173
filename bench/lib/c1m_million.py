#!/usr/bin/env python3
"""Timeline sampler and report for `bench/c1m.sh --million` (bench/lib/c1m_million.sh).

    c1m_million.py sample OUT_DIR T0   every second until killed (t counted from the Unix
                                       time T0, the script's own start), one JSON line appended to
                                       OUT_DIR/timeline.jsonl: the gateways' summed
                                       connections_open, the state daemon's sessions online,
                                       logins and resumes so far, CPU ticks of the gateways,
                                       the state daemon and the load generator, from /proc
    c1m_million.py memory OUT_DIR      one JSON object: RSS and PSS of every gateway and of
                                       the state daemon (PSS shares the binary's pages among
                                       the 61 processes that map them; RSS counts them in
                                       each), kernel slab caches, sockstat, /proc/meminfo
    c1m_million.py report OUT_DIR SVG  Markdown for doc/c1m.md; draws SVG (the timeline)

OUT_DIR/pids.json (written by the script) names the processes: {"gateways": [[pid,
admin_port], ...], "state": [pid, metrics_port], "loadgen_pattern": "..."}. Plain Python.
"""
import glob
import json
import os
import sys
import time
import urllib.request

from c1m_report import kernel_sample, rss_kb, slab_bytes


def metrics(port):
    """Prometheus text of 127.0.0.1:PORT/metrics as {series: value}; {} if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def ticks(pid):
    """utime + stime + reaped children's, in clock ticks; 0 for a process gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            p = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in p[11:15])
    except (OSError, IndexError, ValueError):
        return 0


def loadgen_pids(pattern):
    """Processes whose command line holds every string of `pattern`."""
    pids = []
    for d in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(d, "rb") as f:
                line = f.read()
                if all(p.encode() in line for p in pattern):
                    pids.append(int(d.split("/")[2]))
        except OSError:
            pass
    return pids


def sample(out, t0):
    pids = json.load(open(os.path.join(out, "pids.json")))
    with open(os.path.join(out, "timeline.jsonl"), "a") as f:
        while True:
            st = metrics(pids["state"][1])
            row = {
                "t": round(time.time() - t0, 2),
                "open": sum(metrics(port).get("tether_gateway_connections_open", 0)
                            for _, port in pids["gateways"]),
                "online": st.get('tether_state_sessions{state="online"}', 0),
                "logins": st.get('tether_state_logins_total{result="ok"}', 0),
                "resumes": st.get('tether_state_resumes_total{result="ok"}', 0),
                "gw_ticks": sum(ticks(pid) for pid, _ in pids["gateways"]),
                "st_ticks": ticks(pids["state"][0]),
                "lg_ticks": sum(ticks(p) for p in loadgen_pids(pids["loadgen_pattern"])),
            }
            f.write(json.dumps(row) + "\n")
            f.flush()
            time.sleep(max(0.0, 1.0 - (time.time() - t0 - row["t"])))


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(out):
    pids = json.load(open(os.path.join(out, "pids.json")))
    print(json.dumps(kernel_sample({
        "gateway_rss_kb": [rss_kb(pid) for pid, _ in pids["gateways"]],
        "gateway_pss_kb": [pss_kb(pid) for pid, _ in pids["gateways"]],
        "state_rss_kb": rss_kb(pids["state"][0]),
        "state_pss_kb": pss_kb(pids["state"][0])})))


def fmt(n):
    return f"{n:,.0f}"


def chart(rows, marks, path):
    """Open connections and sessions online over the run, with the events marked."""
    w, h, l, b = 760, 300, 70, 40
    tmax = max(r["t"] for r in rows) or 1
    ymax = max(max(r["open"], r["online"]) for r in rows) or 1
    x = lambda t: l + (w - l - 20) * t / tmax
    y = lambda v: h - b - (h - b - 20) * v / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{l}" y1="{h - b}" x2="{w - 20}" y2="{h - b}" stroke="black"/>',
           f'<line x1="{l}" y1="20" x2="{l}" y2="{h - b}" stroke="black"/>']
    for i in range(6):
        v = ymax * i / 5
        out.append(f'<text x="{l - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v / 1000:.0f}k</text>')
    for i in range(7):
        t = tmax * i / 6
        out.append(f'<text x="{x(t):.1f}" y="{h - b + 15}" text-anchor="middle">{t:.0f} s</text>')
    for key, colour in (("open", "#1f77b4"), ("online", "#d62728")):
        pts = " ".join(f"{x(r['t']):.1f},{y(r[key]):.1f}" for r in rows)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    for t, label in marks:
        out.append(f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{h - b}" '
                   f'stroke="#888" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{x(t) + 3:.1f}" y="30">{label}</text>')
    out.append(f'<text x="{l + 10}" y="{h - 8}" fill="#1f77b4">gateways: connections open</text>')
    out.append(f'<text x="{l + 220}" y="{h - 8}" fill="#d62728">tether-state: sessions online</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def back_text(rows, run):
    """How long the killed gateways' clients took to RESUME elsewhere, from the timeline (the
    daemon keeps a session online while its gateway link is away, so `online` does not
    show the loss: the resumes it counts do)."""
    t_kill, victims = run["events"]["kill"], run["kill"]["clients"]
    before = [r for r in rows if r["t"] <= t_kill]
    # Until the check: past it, the load generator closing its connections is not a loss.
    end = run["events"]["all_up"] + run["hold"]
    after = [r for r in rows if t_kill < r["t"] <= end]
    if not before or not after:
        return "no timeline"
    r0 = before[-1]["resumes"]
    back = next((r for r in after if r["resumes"] - r0 >= victims), None)
    if back is None:
        last = max(after, key=lambda r: r["resumes"])
        return (f"**{fmt(last['resumes'] - r0)} of {fmt(victims)} resumed** by the end of the "
                f"hold (the last {last['t'] - t_kill:.0f} s after the kill)")
    took = back["t"] - t_kill
    return (f"every one resumed {took:.1f} s after the kill (sampled each second), "
            f"{victims / took:,.0f} resumes/s; sessions online at the kill "
            f"{fmt(before[-1]['online'])}, at the end of the hold {fmt(after[-1]['online'])}")


def report(out, svg):
    run = json.load(open(os.path.join(out, "run.json")))
    lg = json.load(open(os.path.join(out, "loadgen.json")))
    rows = [json.loads(line) for line in open(os.path.join(out, "timeline.jsonl"))]
    before, held = run["memory_before"], run["memory_held"]
    n = run["conns"]
    tck = run["clk_tck"]
    t_of = lambda key: run["events"].get(key)
    marks = [(t_of(k), label) for k, label in
             (("all_up", "all up"), ("kill", "kill 10%"), ("back", "all back"), ("end", "end"))
             if t_of(k) is not None]
    chart(rows, marks, svg)

    # Connect and login rate over time: sessions online per 10 s of the ramp.
    rates = []
    for a, b in zip(rows, rows[10:]):
        if t_of("all_up") is not None and a["t"] >= t_of("all_up"):
            break
        if rows.index(a) % 10 == 0:
            rates.append((a["t"], (b["logins"] - a["logins"]) / (b["t"] - a["t"])))
    # PSS: the pages of the binary and of libc that all gateway processes map are counted
    # once in the sum, as the machine holds them once (summed RSS counts them 61 times).
    gw_held = sum(held["gateway_pss_kb"]) * 1024
    gw_before = sum(before["gateway_pss_kb"]) * 1024
    gw_rss = sum(held["gateway_rss_kb"]) * 1024
    st_held, st_before = held["state_pss_kb"] * 1024, before["state_pss_kb"] * 1024
    slab = (slab_bytes(held) - slab_bytes(before)) / 2
    sock = (held["tcp"].get("mem", 0) - before["tcp"].get("mem", 0)) * 4096 / 2
    server = gw_held + st_held + slab + sock
    idle = run["idle_cpu"]
    hb = lg["heartbeats"]
    hold = lg.get("hold") or {}
    push, api = lg.get("push", {}), lg.get("push_api") or {}
    rooms = lg.get("rooms") or {}
    lines = [
        f"Run {run['date']} on git {run['git']}: {run['machine']}; {run['gateways']} gateway "
        f"processes (1 reactor each, `reuse_port` on one port, `coalesce_ms` {run['coalesce_ms']}), "
        f"{run['loadgen_procs']} load generator processes (`--coalesce-ms` {run['coalesce_ms']}), "
        f"state `heartbeat_s` {run['heartbeat_s']}; kernel settings: {run['sysctl']}.",
        "",
        "| | measured | target |",
        "|---|---:|---|",
        f"| logged in | {fmt(lg['conns']['logged_in'])} of {fmt(n)} "
        f"({fmt(lg['logins']['busy'])} LOGINs answered BUSY and retried, "
        f"{fmt(lg['conns']['failed'])} failed) | 1,000,000 |",
        f"| login rate | {run['login_rate']:,.0f}/s mean over the ramp ({run['ramp_s']:.0f} s) | |",
        f"| held | {hold.get('seconds', 0):.0f} s; dropped {fmt(lg['conns']['dropped'])} | 5 min, 0 dropped |",
        f"| final check (paced {fmt(run['check_rate'])}/s) | {fmt(hold.get('answered', 0))} of "
        f"{fmt(hold.get('checked', 0))} answered | 100 % |",
        f"| heartbeats | {fmt(hb['sent'])} sent, {fmt(hb['pongs'])} answered | every one |",
        f"| server memory | {server / 1e9:.2f} GB: gateways {gw_held / 1e9:.3f} GB PSS "
        f"({(gw_held - gw_before) / n:.0f} B/conn; summed RSS {gw_rss / 1e9:.3f} GB), "
        f"state {st_held / 1e9:.3f} GB "
        f"({(st_held - st_before) / n:.0f} B/session), kernel (half of slab + socket buffers) "
        f"{(slab + sock) / 1e9:.2f} GB ({(slab + sock) / n:,.0f} B/conn) | ≤ 4.5 GB |",
        f"| CPU while idle ({idle['seconds']:.0f} s: heartbeats, {run['push_rate']} pushes/s) | gateways "
        f"{100 * idle['gw'] / tck / idle['seconds']:.1f} %, state "
        f"{100 * idle['st'] / tck / idle['seconds']:.1f} %, load generator "
        f"{100 * idle['lg'] / tck / idle['seconds']:.1f} % of a core; "
        f"{idle['heartbeats']:,.0f} heartbeats/s: "
        f"{1e6 * idle['gw'] / tck / max(1, idle['heartbeats'] * idle['seconds']):.1f} µs "
        f"gateway and {1e6 * idle['lg'] / tck / max(1, idle['heartbeats'] * idle['seconds']):.1f} µs "
        f"load generator CPU per heartbeat | |",
    ]
    if "kill" in run:
        k = run["kill"]
        lines.append(
            f"| {k['killed']} of {run['gateways']} gateways SIGKILLed ({fmt(k['clients'])} clients, "
            f"each back after a random 0-{run['spread']} s) | "
            f"{back_text(rows, run)}; the load generator counts {fmt(lg['resumes']['ok'])} resumes ok, "
            f"{fmt(lg['resumes']['failed'])} failed, {fmt(lg['resumes']['new_session'])} new session | ≤ 60 s |")
    if api:
        lines.append(
            f"| pushes during the run ({run['push_rate']}/s) | {fmt(api.get('posted', 0))} posted "
            f"({fmt(api.get('delivered', 0))} delivered, {fmt(api.get('queued', 0))} queued), "
            f"{fmt(push.get('unique', 0))} received | 0 lost |")
    if rooms:
        lat = rooms.get("latency_us", {})
        last = (lat.get("max") or 0) / 1e6
        lines.append(
            f"| one broadcast to all ({run['broadcast_at']} s into the hold) | {fmt(rooms.get('deliveries', 0))} "
            f"delivered, gaps {rooms.get('gaps', 0)}, duplicates {rooms.get('duplicates', 0)}; "
            f"last delivery {last:.2f} s after the POST "
            f"({rooms.get('deliveries', 0) / max(last, 1e-9):,.0f} deliveries/s), "
            f"p50 {(lat.get('p50') or 0) / 1e6:.2f} s | ≤ 5 s |")
    lines += ["", "Login rate over the ramp (sessions logged in per second, 10 s steps): " +
              ", ".join(f"{t:.0f} s: {r:,.0f}" for t, r in rates), "",
              "Command: `" + run["command"] + "`"]
    print("\n".join(lines))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "sample":
        sample(sys.argv[2], float(sys.argv[3]))
    elif cmd == "memory":
        memory(sys.argv[2])
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
