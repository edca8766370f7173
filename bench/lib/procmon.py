#!/usr/bin/env python3
"""Samples CPU time and RSS of the processes under test while bench/proxy.sh runs a load.

    procmon.py OUT.jsonl --proxy PID[,PID…] [--rig PID[,PID…]] [--interval S]
    procmon.py --tree PID        prints PID and all its live descendants, one line


Every --interval seconds (and once more on SIGTERM/SIGINT, then exit) appends one JSON line:

    {"t": wall-clock seconds,
     "proxy_ticks": utime+stime of the proxy processes and all their descendants (clock ticks),
     "proxy_rss_kb": VmRSS summed over the same processes,
     "proxy_procs": how many processes that was,
     "rig_ticks": utime+stime of the --rig processes (the echo nodes),
     "cores": {"cpu0": [task, irq, steal, total], …}}   from /proc/stat, in clock ticks

`task` is user+nice+system: CPU that some process was charged with. proxy.sh subtracts what
it can account for (proxy, nodes, loadgen) to estimate how busy the machine was with
anything else during a run. Descendants are re-scanned on every sample (nginx workers are
children of the master); a process that disappears keeps its last reading, so the sums never
go backwards. Reads /proc only; never signals anything.
"""
import json
import os
import signal
import sys
import time


def read_stat(pid):
    """(ppid, utime+stime) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def read_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(roots):
    """roots plus every live process whose ancestry leads to one of them."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                children.setdefault(st[0], []).append(int(name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def read_cores():
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                v = [int(x) for x in parts[1:]]
                v += [0] * (8 - len(v))
                user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
                cores[parts[0]] = [user + nice + system, irq + softirq, steal, sum(v[:8])]
    return cores


class Group:
    """A set of processes whose CPU ticks only ever add up (dead ones keep their last value)."""

    def __init__(self, roots, follow_children):
        self.roots = roots
        self.follow = follow_children
        self.last = {}

    def sample(self):
        pids = descendants(self.roots) if self.follow else set(self.roots)
        rss = 0
        live = 0
        for pid in pids:
            st = read_stat(pid)
            if st is None:
                continue
            self.last[pid] = st[1]
            rss += read_rss_kb(pid)
            live += 1
        return sum(self.last.values()), rss, live


def pids_arg(text):
    return [int(p) for p in text.split(",") if p]


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    out_path = args.pop(0)
    if out_path == "--tree":
        print(" ".join(str(p) for p in sorted(descendants([int(args[0])]))))
        return
    proxy, rig, interval = [], [], 0.25
    while args:
        flag = args.pop(0)
        value = args.pop(0)
        if flag == "--proxy":
            proxy = pids_arg(value)
        elif flag == "--rig":
            rig = pids_arg(value)
        elif flag == "--interval":
            interval = float(value)
        else:
            sys.exit(f"procmon.py: unknown flag {flag}")
    proxy_group = Group(proxy, follow_children=True)
    rig_group = Group(rig, follow_children=False)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(out_path, "w") as out:
        while True:
            ticks, rss, n = proxy_group.sample()
            rig_ticks, _, _ = rig_group.sample()
            out.write(json.dumps({"t": time.time(), "proxy_ticks": ticks, "proxy_rss_kb": rss,
                                  "proxy_procs": n, "rig_ticks": rig_ticks,
                                  "cores": read_cores()}) + "\n")
            out.flush()
            if stop:
                return
            time.sleep(interval)


if __name__ == "__main__":
    main()
