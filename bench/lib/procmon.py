#!/usr/bin/env python3
"""Samples CPU time and RSS of the processes under test while bench/proxy.sh runs a load.

    procmon.py OUT.jsonl --proxy PID[,PID…] [--rig PID[,PID…]] [--ours PID] [--interval S]
    procmon.py --tree PID        prints PID and all its live descendants, one line
    procmon.py --busy SECONDS    prints how busy the machine is, in % of one core, over SECONDS

Every --interval seconds (and once more on SIGTERM/SIGINT, then exit) appends one JSON line:

    {"t": wall-clock seconds,
     "proxy_ticks": utime+stime of the --proxy processes and all their descendants (nginx
                    workers are children of the master; re-scanned on every sample),
     "proxy_rss_kb": VmRSS summed over the same processes,
     "proxy_procs": how many processes that was,
     "rig_ticks": utime+stime of the --rig processes (the echo nodes),
     "ours_ticks": utime+stime since the first sample of --ours (bench/proxy.sh itself) and
                   everything under it, except tether-loadgen (its summary has its own CPU),
     "ours": {"comm/pid": ticks, …} the same per process, to see where it went,
     "kernel_ticks": utime+stime of kernel threads (ksoftirqd, kworkers, …),
     "others": {"comm": ticks, …} every other visible process, ticks since the first sample,
     "cores": {"cpu0": [task, irq, steal, total], …}}   from /proc/stat

All CPU figures are clock ticks (getconf CLK_TCK). A process that disappears keeps its last
reading, so no sum ever goes backwards. `task` is user+nice+system, `irq` is irq+softirq;
the report takes busy = task + irq over all cores, minus ours, the loadgen and kernel
threads, plus steal, as the CPU something outside the run took while it ran (processes that
came and went between samples included). Reads /proc only; never signals anything.
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


def read_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def scan():
    """{pid: (ppid, ticks)} for every visible process."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                procs[int(name)] = st
    return procs


def descendants(roots, procs=None):
    """roots plus every live process whose ancestry leads to one of them."""
    children = {}
    for pid, (ppid, _) in (procs if procs is not None else scan()).items():
        children.setdefault(ppid, []).append(pid)
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


def busy_pct(seconds):
    """CPU used on the whole machine over `seconds`, in % of one core (steal included)."""
    def total():
        busy = 0
        for task, irq, steal, _ in read_cores().values():
            busy += task + irq + steal
        return busy
    hz = os.sysconf("SC_CLK_TCK")
    before = total()
    time.sleep(seconds)
    return 100.0 * (total() - before) / hz / seconds


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
    if out_path == "--busy":
        print(f"{busy_pct(float(args[0])):.0f}")
        return
    proxy, rig, ours, interval = [], [], None, 0.25
    while args:
        flag = args.pop(0)
        value = args.pop(0)
        if flag == "--proxy":
            proxy = pids_arg(value)
        elif flag == "--rig":
            rig = pids_arg(value)
        elif flag == "--ours":
            ours = int(value)
        elif flag == "--interval":
            interval = float(value)
        else:
            sys.exit(f"procmon.py: unknown flag {flag}")
    proxy_group = Group(proxy, follow_children=True)
    rig_group = Group(rig, follow_children=False)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ours_first, ours_last, kernel_last, other_first, other_last, other_comm = {}, {}, {}, {}, {}, {}
    first = True
    with open(out_path, "w") as out:
        while True:
            ticks, rss, n = proxy_group.sample()
            rig_ticks, _, _ = rig_group.sample()
            procs = scan()
            mine = descendants([ours], procs) if ours else set()
            for pid, (ppid, t) in procs.items():
                if pid in mine:
                    # The loadgen reports its own CPU (exactly, to its exit); leave it out here.
                    if read_comm(pid) != "tether-loadgen":
                        ours_first.setdefault(pid, t if first else 0)
                        ours_last[pid] = t
                elif pid == 2 or ppid == 2:
                    kernel_last[pid] = t
                else:
                    # A process first seen after the first sample started during the run.
                    if pid not in other_first:
                        other_first[pid] = t if first else 0
                        other_comm[pid] = read_comm(pid)   # before it exits
                    other_last[pid] = t
            others = {}
            for pid, t in other_last.items():
                if t > other_first[pid]:
                    comm = other_comm[pid]
                    others[comm] = others.get(comm, 0) + t - other_first[pid]
            out.write(json.dumps({"t": time.time(), "proxy_ticks": ticks, "proxy_rss_kb": rss,
                                  "proxy_procs": n, "rig_ticks": rig_ticks,
                                  "ours_ticks": sum(ours_last[p] - ours_first[p] for p in ours_last),
                                  "ours": {f"{read_comm(p)}/{p}": ours_last[p] - ours_first[p]
                                           for p in ours_last if ours_last[p] > ours_first[p]},
                                  "kernel_ticks": sum(kernel_last.values()),
                                  "others": others, "cores": read_cores()}) + "\n")
            out.flush()
            first = False
            if stop:
                return
            time.sleep(interval)


if __name__ == "__main__":
    main()
