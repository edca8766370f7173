#!/usr/bin/env python3
"""The Markdown reports of the fault benches, from what each run left in its directory.

    faults_report.py blackhole OUT    bench/blackhole.sh
    faults_report.py storm OUT        bench/storm.sh
    faults_report.py soak OUT         bench/soak.sh

Prints the report on stdout; exits 1 when the run found what its script calls a failure
(each subcommand says which), 0 otherwise.
"""
import glob
import json
import os
import re
import sys

MIB = 1024


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        if default is not None:
            return default
        raise


def samples(path):
    """Prometheus text → {name-with-labels: value}."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                name, _, value = line.rpartition(" ")
                try:
                    out[name.strip()] = float(value)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def family(metrics, name):
    """{labels-text: value} of every sample of family `name`."""
    out = {}
    for key, value in metrics.items():
        base, _, labels = key.partition("{")
        if base == name:
            out["{" + labels if labels else ""] = value
    return out


def kib(n):
    return f"{n:,} KiB ({n / MIB:.1f} MiB)"


def footer(setup):
    return (f"\n{setup['machine']}; {setup['versions']}; git {setup['git']}; {setup['date']}.\n")


# ---- blackhole ------------------------------------------------------------------------------

def blackhole(out):
    """Fails when a request was never answered, the counts do not add up, or node_outstanding
    is not 0 after the clients left."""
    setup = load(f"{out}/setup.json")
    lg = load(f"{out}/loadgen.json")
    hole = load(f"{out}/blackhole.json", {})
    metrics = samples(f"{out}/metrics-after.txt")
    rss = [json.loads(line)["proxy_rss_kb"] for line in open(f"{out}/rss.jsonl") if line.strip()]
    start, after = int(setup["rss_start"]), int(setup["rss_after"])
    peak = max(rss + [start, after])
    q = lg["requests"]
    errors = lg["errors"]
    timeouts = errors.get("REQUEST_TIMEOUT", 0)
    other = {k: v for k, v in errors.items() if k not in ("REQUEST_TIMEOUT", "unanswered")}
    outstanding = family(metrics, "tether_gateway_node_outstanding")
    gw_timeouts = family(metrics, "tether_gateway_errors_total").get('{code="REQUEST_TIMEOUT"}', 0)
    balanced = q["sent"] == q["answered"] + q["errored"] + q["lost"] + q["unanswered"]
    delta = after - start
    met = delta <= 1024

    print(f"**Black-hole node** — `{setup['command']}`\n")
    print(f"{lg['conns']['requested']} clients, {lg['rate']:g} requests/s each for "
          f"{lg['duration_s']:g} s, {lg['payload']} B flagged resend-safe; gateway "
          f"request_timeout_ms {setup['request_timeout_ms']}, nodes: one echo node, one black hole.\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| requests sent | {q['sent']:,} |")
    print(f"| answered (echo node) | {q['answered']:,} |")
    print(f"| REQUEST_TIMEOUT (black hole) | {timeouts:,} |")
    print(f"| other errors | {', '.join(f'{k} {v:,}' for k, v in other.items()) or 'none'} |")
    print(f"| lost with a connection / never answered | {q['lost']:,} / {q['unanswered']:,} |")
    swallowed = f"{hole['requests']:,}" if "requests" in hole else "? (no count written)"
    print(f"| REQUESTs swallowed by the black hole (its own count) | {swallowed} |")
    print(f"| gateway `errors_total{{code=\"REQUEST_TIMEOUT\"}}` | {gw_timeouts:,.0f} |")
    print(f"| gateway `node_outstanding` {setup['settle']} s after the clients left | "
          f"{', '.join(f'{k} {v:.0f}' for k, v in outstanding.items()) or 'missing'} |")
    print(f"| gateway RSS at the start | {kib(start)} |")
    print(f"| gateway RSS peak under load | {kib(peak)} |")
    print(f"| gateway RSS {setup['settle']} s after the clients left | {kib(after)} "
          f"({delta:+,} KiB from the start) |")
    print(f"\nTarget: RSS back within 1 MiB of the start once the clients leave — "
          f"**{'met' if met else 'not met'}** ({delta / MIB:+.1f} MiB).")
    print(f"\n    {setup['gateway_cmd']}\n    {setup['loadgen_cmd']}")
    print(footer(setup))
    failures = []
    if q["unanswered"]:
        failures.append(f"{q['unanswered']} requests never answered")
    if not balanced:
        failures.append("the request counts do not add up")
    if not outstanding or any(v != 0 for v in outstanding.values()):
        failures.append("node_outstanding is not 0 after the clients left")
    if lg["verify_failures"]:
        failures.append(f"{lg['verify_failures']} replies failed verification")
    for f in failures:
        print(f"**FAILED: {f}.**")
    return 1 if failures else 0


# ---- storm ----------------------------------------------------------------------------------

def storm(out):
    """Fails when a login failed or a logged-in connection was dropped in the 1×, 2× or 4×
    storm (the capacity search overloads on purpose)."""
    setup = load(f"{out}/setup.json")
    capacity = int(setup["capacity"])
    rows = []
    for meta_path in sorted(glob.glob(f"{out}/storm-*.meta.json"),
                            key=lambda p: int(re.search(r"storm-(\d+)", os.path.basename(p)).group(1))):
        meta = load(meta_path)
        base = meta_path[: -len(".meta.json")]
        lg = load(base + ".json")
        gws = samples(base + ".gateways.txt")
        busy_at_gw = 0.0
        with open(base + ".gateways.txt") as f:
            for line in f:
                if line.startswith('tether_gateway_session_events_total{event="busy"}'):
                    busy_at_gw += float(line.split()[-1])
        c, lo = lg["conns"], lg["logins"]
        goodput = c["logged_in"] / c["setup_s"] if c["setup_s"] else 0.0
        rows.append({"name": meta["name"], "rate": int(meta["rate"]), "n": int(meta["conns"]),
                     "goodput": goodput, "setup": c["setup_s"], "ok": lo["ok"],
                     "failed": c["failed"], "dropped": c["dropped"],
                     "busy": lo.get("busy"), "busy_gw": busy_at_gw, "others": meta["others"],
                     "errors": lg["errors"]})
    one = next((r["goodput"] for r in rows if r["name"] == "1x"), 0.0)
    four = next((r["goodput"] for r in rows if r["name"] == "4x"), 0.0)

    print(f"**Login storms** — `{setup['command']}`\n")
    print(f"{setup['conns']} logins per storm over {setup['gateways']} gateway(s) (--reactors 1, "
          f"max_logins_inflight 512 each) and one tether-state; tether-loadgen in "
          f"{setup['procs']} process(es). Capacity C = **{capacity:,} logins/s**.\n")
    print("| storm | offered logins/s | logins | goodput logins/s | of the offer | of 1× | "
          "set-up s | BUSY answers (loadgen / gateways) | never logged in / dropped | errors | "
          "other processes' CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        of_one = f"{100 * r['goodput'] / one:.0f} %" if one and r["name"] in ("1x", "2x", "4x") else ""
        busy = "?" if r["busy"] is None else f"{r['busy']:,}"
        errors = ", ".join(f"{k} {v:,}" for k, v in r["errors"].items()) or "none"
        print(f"| {r['name']} | {r['rate']:,} | {r['n']:,} | **{r['goodput']:,.0f}** | "
              f"{100 * r['goodput'] / r['rate']:.0f} % | {of_one} | {r['setup']:.2f} | "
              f"{busy} / {r['busy_gw']:,.0f} | {r['failed']} / {r['dropped']} | {errors} | "
              f"{r['others']} % |")
    if one and four:
        ratio = four / one
        print(f"\nTarget: goodput at 4× ≥ 90 % of goodput at 1× — "
              f"**{'met' if ratio >= 0.9 else 'not met'}** ({100 * ratio:.0f} %).")
    print("\nThe last storm's commands:\n")
    print(f"    {setup['state_cmd']}\n    {setup['gateway_cmd']}\n    {setup['loadgen_cmd']}")
    print(footer(setup))
    bad = [r for r in rows if r["name"] in ("1x", "2x", "4x") and (r["failed"] or r["dropped"])]
    for r in bad:
        print(f"**FAILED: {r['name']}: {r['failed']} logins failed, {r['dropped']} connections dropped.**")
    return 1 if bad else 0


# ---- soak -----------------------------------------------------------------------------------

REQUEST_KEYS = ("sent", "answered", "errored", "lost", "unanswered")


def add_requests(total, q):
    for k in REQUEST_KEYS:
        total[k] = total.get(k, 0) + q.get(k, 0)


def imbalance(q):
    return q["sent"] - q["answered"] - q["errored"] - q["lost"] - q["unanswered"]


def rounds(out, name):
    """Every loadgen round of `name`, in order; a round without a JSON is reported."""
    paths = sorted(glob.glob(f"{out}/rounds/{name}-*.json"),
                   key=lambda p: int(re.search(r"-(\d+)\.json$", p).group(1)))
    runs = []
    for path in paths:
        try:
            runs.append(load(path))
        except (OSError, ValueError):
            runs.append(None)
    return runs


def soak(out):
    """Fails on a silent loss (a request never answered on a live connection, counts that do
    not add up, a push accepted and neither received nor pending), a wrong reply, a loadgen
    round that left no summary, or a daemon that ran the whole time and grew past the bound."""
    setup = load(f"{out}/setup.json")
    ledger = load(f"{out}/ledger.json")
    hole = load(f"{out}/blackhole.json", {})
    bound = float(setup["rss_bound"])
    failures = []

    # Faults.
    faults = [line.rstrip("\n").split("\t") for line in open(f"{out}/faults.tsv") if line.strip()]
    by_victim = {}
    for t, victim, _pid, down in faults:
        by_victim.setdefault(victim, []).append(f"{t} s")

    # Requests.
    echo = rounds(out, "echo")
    churn = rounds(out, "churn")
    echo_q, echo_err, verify = {}, {}, 0
    logins = {"ok": 0, "failed": 0, "busy": 0}
    conns = {"failed": 0, "dropped": 0}
    beats = {"sent": 0, "pongs": 0}
    for r in echo + churn:
        if r is None:
            continue
        verify += r["verify_failures"]
        for k in logins:
            logins[k] += r["logins"].get(k, 0)
        for k in conns:
            conns[k] += r["conns"][k]
        beats["sent"] += r["heartbeats"]["sent"]
        beats["pongs"] += r["heartbeats"]["pongs"]
    for r in echo:
        if r is None:
            continue
        add_requests(echo_q, r["requests"])
        # Only these two names are never a login's answer (a BUSY login is logins.busy).
        for k in ("REQUEST_TIMEOUT", "BUSY"):
            echo_err[k] = echo_err.get(k, 0) + r["errors"].get(k, 0)
    other = echo_q.get("errored", 0) - sum(echo_err.values())
    echo_err = {k: v for k, v in echo_err.items() if v}
    if other:
        echo_err["other"] = other
    missing_rounds = sum(1 for r in echo + churn if r is None)
    if missing_rounds:
        failures.append(f"{missing_rounds} loadgen round(s) left no summary")
    dev_q, slow_q = ledger["requests"], ledger["slow"]
    ledger_verify = sum(ledger["verify_failures"].values())

    print(f"**Soak under faults** — `{setup['command']}`\n")
    secs = int(setup["seconds"])
    length = f"{secs // 60} min" + (f" {secs % 60} s" if secs % 60 else "") if secs >= 60 else f"{secs} s"
    print(f"{length} of load (RSS baseline after a {setup['warmup']} s "
          f"warm-up), faults from seed {setup['seed']}"
          f"{', membership through etcd' if setup['etcd'] == '1' else ''}.\n")
    print(f"Faults (SIGKILL, then the same command again): {len(faults)} — " +
          "; ".join(f"{v} ×{len(ts)} (at {', '.join(ts)})" for v, ts in sorted(by_victim.items())) + ".\n")

    print("| requests | sent | answered | errored | lost with their connection | never answered (silent) | counts add up |")
    print("|---|---:|---:|---:|---:|---:|---|")

    def row(label, q, errored_detail=""):
        silent = q["unanswered"]
        gap = imbalance(q)
        if silent or gap:
            failures.append(f"{label}: {silent} never answered, {gap} unaccounted for")
        print(f"| {label} | {q['sent']:,} | {q['answered']:,} | {q['errored']:,}{errored_detail} | "
              f"{q['lost']:,} | **{silent:,}** | {'yes' if gap == 0 else f'no ({gap:+,})'} |")

    detail = " (" + ", ".join(f"{k} {v:,}" for k, v in echo_err.items()) + ")" if echo_err else ""
    row(f"tether-loadgen, {len(echo)} echo rounds", echo_q, detail)
    dev_detail = ", ".join(f"{k[len('errored_'):]} {v:,}" for k, v in dev_q.items() if k.startswith("errored_"))
    row(f"ledger, {ledger['devices']} devices", dev_q, f" ({dev_detail})" if dev_detail else "")
    slow_detail = ", ".join(f"{k[len('errored_'):]} {v:,}" for k, v in slow_q.items() if k.startswith("errored_"))
    gw_closed = {}
    for d in ("gw-a", "gw-b"):
        for labels, v in family(samples(f"{out}/metrics-{d}.txt"), "tether_gateway_connections_closed_total").items():
            gw_closed[labels] = gw_closed.get(labels, 0) + v
    slow_closes = gw_closed.get('{reason="slow_consumer"}', 0)
    if ledger["slow_readers"]:
        row(f"slow readers ({ledger['slow_readers']})", slow_q, f" ({slow_detail})" if slow_detail else "")
        print(f"\nThe gateways closed {slow_closes:,.0f} connections SLOW_CONSUMER (their counters since "
              f"their last start); the slow readers saw {slow_q.get('slow_consumer', 0):,} of those ERRORs "
              f"(the rest were cut off behind the full socket buffer: a reset) and lost the requests "
              f"queued with them.")

    p = ledger["pushes"]
    refused = {k: v for k, v in p.items() if k.startswith("refused_")}
    print("\n| pushes (ledger) | count |")
    print("|---|---:|")
    print(f"| POSTed | {p.get('posted', 0):,} |")
    print(f"| accepted: delivered / queued | {p.get('delivered', 0):,} / {p.get('queued', 0):,} |")
    print(f"| answered offline (no session: not expected) | {p.get('offline', 0):,} |")
    print(f"| refused (daemon down, 429, 503) | {sum(refused.values()):,}"
          f"{' (' + ', '.join(f'{k[8:]} {v:,}' for k, v in refused.items()) + ')' if refused else ''} |")
    print(f"| accepted and received by their device | {p['received']:,} |")
    print(f"| accepted, not received, still pending at the daemon | {p['pending_at_end']:,} |")
    print(f"| accepted and gone without a trace (silent) | **{p['missing']:,}** |")
    print(f"| redeliveries (at least once) | {p.get('duplicates', 0):,} |")
    if p["missing"] or p.get("unknown_pending"):
        failures.append(f"pushes: {p['missing']} missing, {p.get('unknown_pending', 0)} whose pending state could not be read")
    if p.get("payload_mismatch"):
        failures.append(f"pushes: {p['payload_mismatch']} delivered with a different payload")

    ev = ledger["events"]
    swallowed = f" The black hole swallowed {hole['requests']:,} REQUESTs." if "requests" in hole else ""
    print(f"\nSessions: tether-loadgen {logins['ok']:,} logins ({len(churn)} churn rounds and the echo rounds), "
          f"{logins['busy']:,} answered BUSY and retried, {logins['failed']:,} failed; connections "
          f"{conns['failed']:,} never up, {conns['dropped']:,} dropped (by the faults); heartbeats "
          f"{beats['sent']:,} PINGs, {beats['pongs']:,} PONGs. Ledger and slow readers: "
          f"{ev.get('login_ok', 0):,} logins, {ev.get('resume_ok', 0):,} resumes "
          f"({ev.get('resume_new_session', 0):,} got a new session), reconnects after: " +
          (", ".join(f"{k[7:]} {v:,}" for k, v in ev.items() if k.startswith("closed_")) or "none") +
          "." + swallowed)
    if verify or ledger_verify:
        failures.append(f"{verify + ledger_verify} replies failed verification")

    # RSS.
    rss = {}
    for line in open(f"{out}/rss.tsv"):
        phase, name, pid, restarts, kib_ = line.rstrip("\n").split("\t")
        rss.setdefault(name, {})[phase] = (pid, int(restarts), int(kib_ or 0))
    print(f"\n| daemon | restarts | RSS after the warm-up | RSS at the end of the load | growth | "
          f"5 s after the load | within {bound:g} % |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, phases in rss.items():
        if "start" not in phases or "end" not in phases:
            continue
        (p0, r0, k0), (p1, r1, k1) = phases["start"], phases["end"]
        after = phases.get("after", (p1, r1, 0))[2]
        if name == "hole":
            g = 100.0 * (k1 - k0) / k0 if k0 else 0.0
            verdict, growth = "the bench's own node: not judged", f"{g:+.1f} %"
        elif p0 != p1:
            verdict = "restarted since: not judged"
            growth = ""
        else:
            g = 100.0 * (k1 - k0) / k0 if k0 else 0.0
            growth = f"{g:+.1f} %"
            verdict = "yes" if g <= bound else "**no**"
            if g > bound and setup.get("smoke") != "1":
                failures.append(f"{name} grew {g:+.1f} % (bound {bound:g} %)")
        print(f"| {name} | {r1} | {k0:,} KiB | {k1:,} KiB | {growth} | {after:,} KiB | {verdict} |")

    if setup.get("smoke") == "1":
        print("\n(--smoke: seconds of load say nothing about growth; the RSS bound is not judged.)")
    print("\nCommands:\n")
    for line in open(f"{out}/commands.tsv"):
        name, cmd = line.rstrip("\n").split("\t", 1)
        print(f"    {cmd}")
    print(f"    {setup['echo_cmd']}\n    {setup['churn_cmd']}\n    {setup['ledger_cmd']}")
    print(footer(setup))
    if failures:
        for f in failures:
            print(f"**FAILED: {f}.**")
    else:
        print("Every request and every push accounted for; no daemon grew past the bound.")
    return 1 if failures else 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2]))


COMMANDS = {"blackhole": blackhole, "storm": storm, "soak": soak}

if __name__ == "__main__":
    main()
