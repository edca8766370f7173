#!/usr/bin/env bash
# Loadgen straight at the echo cluster: one node vs four nodes, same load, same cores.
#
#   bench/echo.sh [CONNS] [SECONDS]      (defaults: 1000 connections, 10 s, 64-byte payloads)
#   bench/echo.sh --smoke                the CI check that the script still runs: 10
#                                        connections, 1 s runs after 0.2 s of warm-up; a
#                                        loadgen failure, verify failure or error fails it
#
# The nodes always share core 0 and tether-loadgen always has core 1 (taskset), so the two
# rows compare like with like on a 2-core machine. Runs a closed loop (--pipeline 8: the
# maximum throughput) and an open loop at a fixed rate (latency at a load both can carry).
# Prints a Markdown table for doc/bench.md. Ports 19890-19893 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

conns="${1:-1000}"
seconds="${2:-10}"
warmup=2 smoke=0
[[ $conns == --smoke ]] && conns=10 seconds=1 warmup=0.2 smoke=1
payload=64
rate=20   # frames/s per connection in the open-loop rows

command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
command -v taskset >/dev/null || { apt-get update -q && apt-get install -y -q util-linux; }
cargo build --release --quiet -p tether-echo-node -p tether-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
for port in 19890 19891 19892 19893; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use: stop what listens there" >&2; exit 1; fi
done
out=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

start_nodes() {   # start_nodes N  → targets in $targets
    targets=""
    for i in $(seq 0 $(($1 - 1))); do
        port=$((19890 + i))
        RUST_LOG=warn taskset -c 0 "$bin/tether-echo-node" --listen "127.0.0.1:$port" --reactors 1 &
        pids+=($!)
        targets="${targets:+$targets,}127.0.0.1:$port"
    done
    for t in ${targets//,/ }; do
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/${t%:*}/${t#*:}") 2>/dev/null && break; sleep 0.05; done
    done
}
stop_nodes() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

run() {   # run LABEL NODES MODE-FLAGS…
    local label=$1 nodes=$2; shift 2
    start_nodes "$nodes"
    local cmd=("$bin/tether-loadgen" --target "$targets" --conns "$conns" --payload "$payload"
               --duration "$seconds" --warmup "$warmup" --threads 1 --quiet "$@" --json "$out/$label.json")
    echo "== taskset -c 1 ${cmd[*]}" >&2
    taskset -c 1 "${cmd[@]}" >/dev/null || { echo "   (loadgen exit status $?)" >&2; ((!smoke)) || exit 1; }
    stop_nodes
}

run one-closed 1 --pipeline 8
run four-closed 4 --pipeline 8
run one-open 1 --rate "$rate"
run four-open 4 --rate "$rate"

python3 - "$out" "$conns" "$seconds" "$rate" "$warmup" "$smoke" <<'PY'
import json, sys, os
out, conns, seconds, rate, warmup, smoke = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1"
rows = [("1 node", "closed, pipeline 8", "one-closed"), ("4 nodes", "closed, pipeline 8", "four-closed"),
        ("1 node", f"open, {rate}/s per conn", "one-open"), ("4 nodes", f"open, {rate}/s per conn", "four-open")]
print(f"\n{conns} connections, 64-byte payloads, {seconds} s after {warmup} s warm-up; nodes on core 0, loadgen on core 1\n")
print("| target | mode | msgs/s | p50 µs | p99 µs | p99.9 µs | verify failures | errors | loadgen CPU µs/frame |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
base = None
bad = 0
for target, mode, name in rows:
    with open(os.path.join(out, name + ".json")) as f:
        s = json.load(f)
    lat = s["latency_us"]
    errors = sum(s["errors"].values())
    cpu = s.get("cpu", {}).get("us_per_frame", "")
    cpu = f"{cpu:.2f}" if isinstance(cpu, (int, float)) else cpu
    print(f"| {target} | {mode} | {s['throughput_per_s']:,.0f} | {lat['p50']} | {lat['p99']} | {lat['p999']} | {s['verify_failures']} | {errors} | {cpu} |")
    bad += s["verify_failures"] + errors
if smoke and bad:
    sys.exit(f"echo.sh --smoke: {bad} verify failures or errors")
PY
