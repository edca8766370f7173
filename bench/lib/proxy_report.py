#!/usr/bin/env python3
"""Turns the raw results of bench/proxy.sh into the Markdown it prints.

    proxy_report.py OUT_DIR
    proxy_report.py --line LOADGEN.json     one-line summary of one run (progress output)
    proxy_report.py --other OUT_DIR NAME    % of one core used outside run NAME (integer)

OUT_DIR holds, per run NAME: NAME.json (the loadgen summary), NAME.meta.json (what proxy.sh
ran and saw: target, shape, times, commands, exit statuses) and NAME.procmon.jsonl (samples
from procmon.py), plus setup.json (the run's parameters and the machine). Prints one table
for the matrix, the ratio lines, the idle-memory table and the exact commands; exits 1 if
any run failed (loadgen exit status, verify failures, a proxy or node that died).
"""
import glob
import json
import os
import sys

TARGETS = ["node", "tether", "baseline", "nginx", "haproxy"]
LABEL = {"node": "echo node (direct)", "tether": "tether-gateway", "baseline": "tether-gateway (--against)",
         "nginx": "nginx stream", "haproxy": "HAProxy tcp"}
OTHER_CPU_WARN = 10.0  # % of one core used by processes outside the run


def load(path):
    with open(path) as f:
        return json.load(f)


def samples_of(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def ticks_at(samples, t):
    """proxy_ticks at wall-clock t, linearly interpolated between samples."""
    if not samples:
        return 0.0
    if t <= samples[0]["t"]:
        return samples[0]["proxy_ticks"]
    for a, b in zip(samples, samples[1:]):
        if a["t"] <= t <= b["t"]:
            span = b["t"] - a["t"]
            f = (t - a["t"]) / span if span > 0 else 1.0
            return a["proxy_ticks"] + f * (b["proxy_ticks"] - a["proxy_ticks"])
    return samples[-1]["proxy_ticks"]


def other_cpu(samples, s, hz):
    """(% of one core that something outside the run used while it ran, top visible culprits).

    Busy time on all cores (task + irq + softirq, from /proc/stat) minus what the run's own
    processes (proxy.sh's process tree, the loadgen's own CPU count) and kernel threads
    were charged, plus steal. Tick-based accounting makes it approximate to a few %.
    """
    first, last = samples[0], samples[-1]
    elapsed = last["t"] - first["t"]
    if elapsed <= 0:
        return 0.0, []
    busy = steal = 0
    for core, v in last["cores"].items():
        u = first["cores"].get(core, v)
        busy += (v[0] - u[0]) + (v[1] - u[1])
        steal += v[2] - u[2]
    ours = (last.get("ours_ticks", 0) - first.get("ours_ticks", 0)) + (last.get("kernel_ticks", 0) - first.get("kernel_ticks", 0))
    ours += (s["cpu"]["user_s"] + s["cpu"]["sys_s"]) * hz
    pct = 100.0 * (max(0.0, busy - ours) + steal) / hz / elapsed
    top = sorted(last.get("others", {}).items(), key=lambda kv: -kv[1])[:3]
    return pct, [(name, ticks) for name, ticks in top if ticks > 0]


def analyse(name, out, hz):
    meta = load(os.path.join(out, name + ".meta.json"))
    r = {"meta": meta, "name": name}
    try:
        s = load(os.path.join(out, name + ".json"))
    except (OSError, ValueError):
        s = None
    r["s"] = s
    samples = samples_of(os.path.join(out, name + ".procmon.jsonl"))
    measured = float(meta["duration"]) - float(meta["warmup"])
    # The measured window ends when the load stops: just before the loadgen exits (its
    # drain of in-flight replies takes milliseconds when the proxy keeps up).
    w_end = float(meta["t_end"]) - 0.05
    w_start = w_end - measured
    notes = []
    if samples and meta["target"] != "node":
        first, last = samples[0], samples[-1]
        r["cpu_run_s"] = (last["proxy_ticks"] - first["proxy_ticks"]) / hz
        r["cpu_win_s"] = (ticks_at(samples, w_end) - ticks_at(samples, w_start)) / hz
        r["core_pct"] = 100.0 * r["cpu_win_s"] / measured
        before_end = [x for x in samples if x["t"] <= w_end] or samples
        r["rss_end_mib"] = before_end[-1]["proxy_rss_kb"] / 1024
        r["rss_start_mib"] = first["proxy_rss_kb"] / 1024
        r["procs"] = before_end[-1]["proxy_procs"]
    if samples and s:
        r["elapsed"] = max(1e-9, samples[-1]["t"] - samples[0]["t"])
        r["other_pct"], r["other_top"] = other_cpu(samples, s, hz)
        if r["other_pct"] > OTHER_CPU_WARN:
            top = ", ".join(f"{name} {100 * ticks / hz / r['elapsed']:.0f}%" for name, ticks in r["other_top"])
            notes.append(f"machine busy: {r['other_pct']:.0f}% of a core used outside the run" + (f" (visible: {top})" if top else ""))
    if s is None:
        notes.append("no loadgen summary")
    else:
        c = s["conns"]
        if c["failed"] or c["dropped"]:
            notes.append(f"conns failed {c['failed']}, dropped {c['dropped']} of {c['requested']}")
    if meta.get("lg_status") not in (None, "0"):
        notes.append(f"loadgen exit {meta['lg_status']}")
    for key, what in (("proxy_alive", "proxy"), ("nodes_alive", "an echo node")):
        if meta.get(key) == "no":
            notes.append(f"{what} exited during the run")
    if meta.get("affinity") not in (None, "", "ok"):
        notes.append(f"affinity: {meta['affinity']}")
    r["notes"] = notes
    return r


def fmt_int(x):
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "—"


def fmt(x, digits=2):
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "—"


def ratio(a, b, digits=2):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.{digits}f}"
    return "n/a"


def mode_label(meta):
    if meta["mode"] == "closed":
        return f"closed, pipeline {meta['pipeline']}"
    if meta["mode"] == "open":
        return f"open, {float(meta['rate']):g}/s/conn"
    return f"idle, {float(meta['rate']):g}/s/conn"


def one_line(path):
    s = load(path)
    lat = s["latency_us"]
    c = s["conns"]
    print(f"{s['throughput_per_s']:,.0f} msgs/s, p50 {lat['p50']} µs, p99 {lat['p99']} µs, p99.9 {lat['p999']} µs, "
          f"conns {c['established']}/{c['requested']} (dropped {c['dropped']}), verify failures {s['verify_failures']}, "
          f"errors {sum(s['errors'].values())}", end="")


def main():
    if sys.argv[1] == "--line":
        one_line(sys.argv[2])
        return
    if sys.argv[1] == "--other":
        out, name = sys.argv[2], sys.argv[3]
        hz = int(load(os.path.join(out, "setup.json"))["clk_tck"])
        r = analyse(name, out, hz)
        print(f"{r.get('other_pct', 0):.0f}")
        return
    out = sys.argv[1]
    setup = load(os.path.join(out, "setup.json"))
    hz = int(setup["clk_tck"])
    names = sorted(p[: -len(".meta.json")] for p in map(os.path.basename, glob.glob(os.path.join(out, "*.meta.json"))))
    runs = [analyse(n, out, hz) for n in names]
    order = {t: i for i, t in enumerate(TARGETS)}
    mode_order = {"closed": 0, "open": 1, "idle": 2}

    def key(r):
        m = r["meta"]
        return (mode_order[m["mode"]] == 2, int(m["conns"]), int(m["payload"]), mode_order[m["mode"]], order[m["target"]])

    runs.sort(key=key)
    load_runs = [r for r in runs if r["meta"]["mode"] != "idle"]
    idle_runs = [r for r in runs if r["meta"]["mode"] == "idle"]

    print(f"## Tether gateway vs nginx stream vs HAProxy (bench/proxy.sh)\n")
    print(f"- {setup['date']}, git {setup['git']}, {setup['machine']}")
    print(f"- {setup['versions']}")
    print(f"- Core layout (taskset): {setup['layout']}")
    print(f"- Connections: {setup['tier_note']}")
    print(f"- Each run: --duration {setup['duration']} --warmup {setup['warmup']} (measured {float(setup['duration']) - float(setup['warmup']):g} s), "
          f"loadgen --threads 1; closed loop --pipeline {setup['pipeline']}; open loop {setup['open_total']} msgs/s in total "
          f"(--rate = {setup['open_total']} / conns); big tier dialled at --connect-rate {setup['connect_rate']}.")
    print(f"- Every proxy and node is started fresh for each run; the four targets of a cell run back to back.")
    if setup.get("skipped"):
        print(f"- SKIPPED: {setup['skipped']}")
    print()
    print("proxy CPU s = utime+stime of the proxy's processes (nginx: master + worker) over the whole loadgen run "
          "(connect + warm-up + load); proxy core % and proxy CPU µs/msg = the same over the measured window only, "
          "as a share of its one core (about 100 = the proxy is the bottleneck) and per reply; "
          "proxy RSS = VmRSS summed over the proxy's processes at the end of the measured window, connections open; "
          "other CPU = % of one core used by anything outside the run (noise check). "
          "Closed-loop latencies are mostly queueing (conns × pipeline ÷ msgs/s in flight); compare latency in the open loop.\n")

    print("| target | conns | payload | mode | msgs/s | p50 µs | p99 µs | p99.9 µs | proxy CPU s | proxy core % | proxy CPU µs/msg | proxy RSS MiB | verify fail | errors | other CPU % | notes |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    cells = {}
    for r in load_runs:
        m, s = r["meta"], r["s"]
        cell = (int(m["conns"]), int(m["payload"]), m["mode"])
        cells.setdefault(cell, {})[m["target"]] = r
        if s:
            lat = s["latency_us"]
            tput, p50, p99, p999 = s["throughput_per_s"], lat["p50"], lat["p99"], lat["p999"]
            verify, errors = s["verify_failures"], sum(s["errors"].values())
            if errors:
                errors = f"{errors} ({', '.join(f'{k} {v}' for k, v in sorted(s['errors'].items()))})"
            r["tput"], r["p99"] = tput, p99
            if "cpu_win_s" in r and s["frames"]["received"]:
                r["us_per_msg"] = r["cpu_win_s"] * 1e6 / s["frames"]["received"]
        else:
            tput = p50 = p99 = p999 = verify = errors = None
        print(f"| {LABEL[m['target']]} | {int(m['conns']):,} | {m['payload']} | {mode_label(m)} | {fmt_int(tput)} | "
              f"{fmt_int(p50)} | {fmt_int(p99)} | {fmt_int(p999)} | {fmt(r.get('cpu_run_s'))} | {fmt(r.get('core_pct'), 0)} | {fmt(r.get('us_per_msg'))} | "
              f"{fmt(r.get('rss_end_mib'), 1)} | {verify if verify is not None else '—'} | {errors if errors is not None else '—'} | "
              f"{fmt(r.get('other_pct'), 0)} | {'; '.join(r['notes'])} |")

    noisy_dir = os.path.join(out, "noisy")
    noisy = sorted(os.path.basename(p)[: -len(".meta.json")] for p in glob.glob(os.path.join(noisy_dir, "*.meta.json")))
    if noisy:
        print("\nRe-run once because the machine was busy with other work during the first attempt "
              "(first attempts kept in noisy/): " + "; ".join(
                  f"{n} ({analyse(n, noisy_dir, hz).get('other_pct', 0):.0f}% of a core)" for n in noisy))

    print("\n### Ratios (tether ÷ peer; msgs/s > 1 and p99 < 1 favour tether; in the open loop msgs/s is fixed by the offered load, compare p99)\n")
    for (conns, payload, mode), by in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], mode_order[kv[0][2]])):
        t = by.get("tether", {})
        parts = []
        for peer in ("baseline", "nginx", "haproxy"):
            if peer == "baseline" and peer not in by:
                continue
            p = by.get(peer, {})
            parts.append(f"tether/{peer}: msgs/s {ratio(t.get('tput'), p.get('tput'))}, p99 {ratio(t.get('p99'), p.get('p99'))}, "
                         f"CPU/msg {ratio(t.get('us_per_msg'), p.get('us_per_msg'))}")
        node = by.get("node", {})
        parts.append(f"tether/direct node msgs/s {ratio(t.get('tput'), node.get('tput'))}")
        label = f"closed, pipeline {setup['pipeline']}" if mode == "closed" else "open"
        print(f"- {conns:,} conns, {payload} B, {label}: " + "; ".join(parts))

    if idle_runs:
        print(f"\n### Memory with {int(idle_runs[0]['meta']['conns']):,} nearly idle connections\n")
        print(f"Each proxy in front of the four nodes; the loadgen holds the connections for {idle_runs[0]['meta']['duration']} s "
              f"sending {float(idle_runs[0]['meta']['rate']):g} frames/s each. RSS before = after start-up and one probe connection; "
              f"per connection = (RSS with the connections open − before) ÷ connections. Kernel socket buffers are not in RSS.\n")
        print("| target | conns | RSS before MiB | RSS idle MiB | per connection bytes | verify fail | errors | notes |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in idle_runs:
            m, s = r["meta"], r["s"]
            per = None
            if "rss_end_mib" in r:
                per = (r["rss_end_mib"] - r["rss_start_mib"]) * 1048576 / int(m["conns"])
            errors = sum(s["errors"].values()) if s else "—"
            verify = s["verify_failures"] if s else "—"
            print(f"| {LABEL[m['target']]} | {int(m['conns']):,} | {fmt(r.get('rss_start_mib'), 1)} | {fmt(r.get('rss_end_mib'), 1)} | "
                  f"{fmt_int(per)} | {verify} | {errors} | {'; '.join(r['notes'])} |")

    print("\n### Exact commands\n")
    print("```")
    seen = set()
    for line in setup.get("preamble", "").splitlines():
        print(line)
    for r in runs:
        for k in ("node_cmd", "proxy_cmd"):
            for c in r["meta"].get(k, "").splitlines():
                if c and c not in seen:
                    seen.add(c)
                    print(c)
    for r in runs:
        print(r["meta"]["loadgen_cmd"])
    print("```")
    for conf in sorted(glob.glob(os.path.join(out, "configs", "*"))):
        print(f"\n{os.path.basename(conf)} (the run used a copy in a temp dir, the path in the commands above):\n")
        print("```")
        with open(conf) as f:
            print(f.read().rstrip())
        print("```")
    print(f"\nConfigs, raw loadgen JSON, /proc samples and logs: {out}")
    failed = [r["name"] for r in runs
              if r["s"] is None or r["meta"].get("lg_status") != "0" or r["s"]["verify_failures"]
              or "no" in (r["meta"].get("proxy_alive"), r["meta"].get("nodes_alive"))]
    if failed:
        print(f"\nFAILED runs (loadgen exit status not 0, verify failures, or a process died): {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
