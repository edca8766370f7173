#!/usr/bin/env python3
"""The machine a fault bench runs on, read from /proc: what it is, whether it is quiet, and
how much CPU went to processes outside the run.

    machine.py describe                 one line: cores, CPU model, memory, kernel
    machine.py quiet LIMIT SECONDS      waits (at most SECONDS) until the machine uses less
                                        than LIMIT % of one core over 1 s; prints that %
    machine.py cpu ROOT                 a CPU snapshot as JSON: {"t", "task", "ours",
                                        "kthreads"} — clock ticks of all tasks (from
                                        /proc/stat), of ROOT and its descendants (with
                                        what their reaped children used), and of kernel
                                        threads
    machine.py others SNAP1 SNAP2       % of one core that went to other processes between
                                        two snapshots (task − ours − kernel threads)
    machine.py rss PID                  VmRSS of PID in KiB (0 when it is gone)

Reads /proc only; never signals anything.
"""
import json
import os
import platform
import sys
import time

from procmon import descendants, read_rss_kb, scan

HZ = os.sysconf("SC_CLK_TCK")


def task_ticks():
    """user + nice + system + steal over all cores, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    v = [int(x) for x in parts[1:]] + [0] * 8
    return v[0] + v[1] + v[2] + v[7]


def busy_pct(seconds):
    before = task_ticks()
    time.sleep(seconds)
    return 100.0 * (task_ticks() - before) / HZ / seconds


def describe():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1048576
    return f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB, {platform.system()} {platform.release()}"


def reaped_ticks(pid):
    """cutime + cstime of pid: what its children that exited and were reaped used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[13]) + int(rest[14])
    except (OSError, IndexError, ValueError):
        return 0


def snapshot(root):
    procs = scan()
    ours = descendants([root], procs)
    # A process of ours that exited moves its ticks to its parent's cutime/cstime.
    mine = sum(t + reaped_ticks(pid) for pid, (_, t) in procs.items() if pid in ours)
    kthreads = sum(t for pid, (ppid, t) in procs.items() if pid == 2 or ppid == 2)
    return {"t": time.time(), "task": task_ticks(), "ours": mine, "kthreads": kthreads}


def others(a, b):
    """% of one core used outside ROOT's tree between snapshots a and b. A process of ours
    that exited in between without being reaped by one of ours makes it an overestimate."""
    dt = max(b["t"] - a["t"], 1e-3)
    ticks = (b["task"] - a["task"]) - max(0, b["ours"] - a["ours"]) - max(0, b["kthreads"] - a["kthreads"])
    return max(0.0, 100.0 * ticks / HZ / dt)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    cmd = args[0]
    if cmd == "describe":
        print(describe())
    elif cmd == "quiet":
        limit, budget = float(args[1]), float(args[2])
        deadline = time.time() + budget
        busy = busy_pct(1.0)
        while busy >= limit and time.time() < deadline:
            busy = busy_pct(1.0)
        print(f"{busy:.0f}")
    elif cmd == "cpu":
        print(json.dumps(snapshot(int(args[1]))))
    elif cmd == "others":
        print(f"{others(json.loads(args[1]), json.loads(args[2])):.0f}")
    elif cmd == "rss":
        print(read_rss_kb(int(args[1])))
    else:
        sys.exit(f"machine.py: unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main()
